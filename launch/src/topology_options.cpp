#include "topology_options.hpp"

#include <cstdint>
#include <cstdio>
#include <string>

#include "cli_runner.hpp"
#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/comm/topology_probe.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::launch {

void add_topology_options(CLI::App& sub, TopologyOptions* o) {
  sub.add_option("--topology", o->topology,
                 "auto (default): discover nodes, placement and link costs; or a topology file (JSON, as "
                 "`switchyard topo --json` writes it)");
  sub.add_option("--ranks-per-node", o->ranks_per_node,
                 "Virtual nodes of N consecutive ranks instead of the nodes MPI reports")
      ->check(CLI::PositiveNumber);
}

std::string topology_source(const TopologyOptions& o) {
  if (o.topology != "auto") return "file " + o.topology;
  if (o.ranks_per_node > 0)
    return "virtual nodes of " + std::to_string(o.ranks_per_node) + " rank" + (o.ranks_per_node == 1 ? "" : "s");
  return "MPI shared-memory nodes";
}

namespace {

// Rank 0 reads the file; every rank gets the same topology. Collective.
comm::Topology topology_from_file(const std::string& path, comm::Communicator& comm) {
  std::string text;
  collective_step(comm, [&] {
    if (comm.rank() != 0) return;
    const comm::Topology topology = comm::read_topology_file(path);
    check_arg(topology.num_ranks() == comm.size(),
              path + ": the topology file describes " + std::to_string(topology.num_ranks()) + " rank" +
                  (topology.num_ranks() == 1 ? "" : "s") + "; expected the job's " + std::to_string(comm.size()));
    text = comm::write_topology_json(topology);  // reads back equal, bit for bit
  });
  std::int64_t size = static_cast<std::int64_t>(text.size());
  comm.broadcast(&size, sizeof(size), 0);
  text.resize(static_cast<std::size_t>(size));
  comm.broadcast(text.data(), text.size(), 0);
  comm::Topology topology;
  collective_step(comm, [&] { topology = comm::parse_topology_json(text, path); });
  return topology;
}

}  // namespace

comm::Topology resolve_topology(const TopologyOptions& o, comm::Communicator& comm, bool probe) {
  collective_step(comm, [&] {
    check_arg(o.topology == "auto" || o.ranks_per_node == 0,
              "--ranks-per-node and --topology FILE: give one (the file says which node each rank is on)");
  });
  if (o.topology != "auto") return topology_from_file(o.topology, comm);
  comm::Topology topology;
  collective_step(comm, [&] {
    const auto* mpi = dynamic_cast<const comm::MpiCommunicator*>(&comm);
    if (mpi == nullptr) {  // not an MPI job: nothing to discover
      topology = comm::virtual_nodes(comm.size(), o.ranks_per_node > 0 ? o.ranks_per_node : comm.size());
      return;
    }
    comm::DiscoveryOptions options;
    options.ranks_per_node = o.ranks_per_node;
    options.probe = probe;
    topology = comm::discover_topology(mpi->handle(), options);
  });
  return topology;
}

namespace {

std::string bytes_text(std::int64_t bytes) {
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (bytes >= (std::int64_t{1} << 30))
    std::snprintf(buf, sizeof(buf), "%.2f GiB", b / (1 << 30));
  else if (bytes >= (1 << 20))
    std::snprintf(buf, sizeof(buf), "%.2f MiB", b / (1 << 20));
  else if (bytes >= (1 << 10))
    std::snprintf(buf, sizeof(buf), "%.1f KiB", b / (1 << 10));
  else
    std::snprintf(buf, sizeof(buf), "%lld B", static_cast<long long>(bytes));
  return buf;
}

}  // namespace

std::string link_traffic_summary(const layers::LinkTraffic& t) {
  using comm::LinkClass;
  const std::int64_t total = t.total_copies(), across = t.copies_on(LinkClass::kOtherNode);
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "token copies: %lld on rank, %lld in node, %lld across nodes (%.1f%% across); bytes: self %s, same "
                "node %s, other node %s",
                static_cast<long long>(t.copies_on(LinkClass::kSelf)),
                static_cast<long long>(t.copies_on(LinkClass::kSameNode)), static_cast<long long>(across),
                total > 0 ? 100.0 * static_cast<double>(across) / static_cast<double>(total) : 0.0,
                bytes_text(t.bytes_on(LinkClass::kSelf)).c_str(), bytes_text(t.bytes_on(LinkClass::kSameNode)).c_str(),
                bytes_text(t.bytes_on(LinkClass::kOtherNode)).c_str());
  return buf;
}

}  // namespace switchyard::launch
