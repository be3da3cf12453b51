#pragma once
// The command-line side of the topology, shared by every command that runs
// ranks: --topology auto|FILE and --ranks-per-node N, resolved once per run
// into a comm::Topology (docs/topology.md), and the traffic per link class
// that forward, bench and train report.
#include <CLI/CLI.hpp>
#include <string>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/comm/topology.hpp"
#include "switchyard/layers/link_traffic.hpp"

namespace switchyard::launch {

struct TopologyOptions {
  std::string topology = "auto";  // auto: discover; otherwise a topology file
  int ranks_per_node = 0;         // > 0: virtual nodes of this many consecutive ranks
};

/// Adds --topology and --ranks-per-node to `sub`.
void add_topology_options(CLI::App& sub, TopologyOptions* o);

/// How resolve_topology got its topology, in words ("MPI shared-memory
/// nodes", "virtual nodes of 2 ranks", "file t.json").
std::string topology_source(const TopologyOptions& o);

/// The job's topology, the same on every rank. Collective; errors are agreed
/// (collective_step): each ends every rank with one line. From the file of
/// --topology FILE (rank 0 reads it; its rank count must be the job's), else
/// discovered (comm::discover_topology; virtual nodes with
/// --ranks-per-node), with link costs measured by the probe when `probe`.
comm::Topology resolve_topology(const TopologyOptions& o, comm::Communicator& comm, bool probe);

/// Token copies and bytes per link class as JSON fields of a command's line:
/// "nodes", "link_copies" and "link_bytes" (objects keyed by class name).
template <class Json>
void add_link_traffic_fields(Json& line, const comm::Topology& topology, const layers::LinkTraffic& traffic) {
  Json copies = Json::object(), bytes = Json::object();
  for (const comm::LinkClass c : comm::kAllLinkClasses) {
    copies[comm::link_class_name(c)] = traffic.copies_on(c);
    bytes[comm::link_class_name(c)] = traffic.bytes_on(c);
  }
  line["nodes"] = topology.num_nodes();
  line["link_copies"] = copies;
  line["link_bytes"] = bytes;
}

/// One line for a printed summary: "token copies: N on rank, N in node, N
/// across nodes (x% across); bytes: self B, same node B, other node B".
std::string link_traffic_summary(const layers::LinkTraffic& traffic);

}  // namespace switchyard::launch
