#pragma once
// The command-line side of the topology, shared by every command that runs
// ranks: --topology auto|FILE and --ranks-per-node N, resolved once per run
// into a comm::Topology (docs/topology.md); the topology-aware routing flags
// of forward, bench and train; and the traffic per link class they report.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/comm/topology.hpp"
#include "switchyard/layers/dispatch.hpp"
#include "switchyard/layers/exchange_choice.hpp"
#include "switchyard/layers/link_traffic.hpp"
#include "switchyard/layers/topology_routing.hpp"

namespace switchyard::launch {

struct TopologyOptions {
  std::string topology = "auto";            // auto: discover; otherwise a topology file
  int ranks_per_node = 0;                   // > 0: virtual nodes of this many consecutive ranks
  std::vector<std::int64_t> probe_bytes{};  // empty: comm::DiscoveryOptions' default sizes
  std::string exchange = "flat";            // flat, hierarchical or auto
};

/// Adds --topology, --ranks-per-node, --probe-bytes and --exchange to `sub`.
void add_topology_options(CLI::App& sub, TopologyOptions* o);

/// The exchange --exchange names; auto: the one layers::forecast_exchange
/// predicts faster for `tokens` tokens per rank (flat without link costs).
layers::ExchangeKind resolve_exchange(const TopologyOptions& o, const comm::Topology& topology,
                                      const layers::ExpertPlacement& placement, std::int64_t tokens, std::int64_t top_k,
                                      std::int64_t row_bytes);

/// "flat" or "hierarchical".
const char* exchange_name(layers::ExchangeKind kind);

/// How resolve_topology got its topology, in words ("MPI shared-memory
/// nodes", "virtual nodes of 2 ranks", "file t.json").
std::string topology_source(const TopologyOptions& o);

/// The job's topology, the same on every rank. Collective; errors are agreed
/// (collective_step): each ends every rank with one line. From the file of
/// --topology FILE (rank 0 reads it; its rank count must be the job's), else
/// discovered (comm::discover_topology; virtual nodes with
/// --ranks-per-node), with link costs measured by the probe when `probe`.
comm::Topology resolve_topology(const TopologyOptions& o, comm::Communicator& comm, bool probe);

/// --max-nodes, --node-score-experts, --link-penalty and --topology-loss as
/// given; a flag
/// not given is empty (train then keeps its configuration file's value).
struct RoutingOptions {
  std::optional<std::int64_t> max_nodes, node_score_experts;
  std::optional<double> link_penalty, topology_loss;

  /// `base` (the defaults, or a configuration file's routing) with every
  /// given flag over it.
  layers::TopologyRouting over(layers::TopologyRouting base = {}) const;
};

/// Adds --max-nodes (>= 0), --node-score-experts (>= 1), --link-penalty
/// (>= 0) and --topology-loss (>= 0) to `sub`.
void add_routing_options(CLI::App& sub, RoutingOptions* o);

/// Where each field of a layers::TopologyRouting was set, for messages: its
/// flag by default, or a configuration file's field.
struct RoutingLabels {
  std::string max_nodes = "--max-nodes";
  std::string node_score_experts = "--node-score-experts";
  std::string link_penalty = "--link-penalty";
  std::string topology_loss = "--topology-loss";
};

/// Runs `fn`; an Error(kInvalidArgument) whose message is about a field of
/// topology-aware routing (max_nodes, node_score_experts, the link penalty)
/// comes back with that field's label in front ("--max-nodes: router:
/// max_nodes must be in [1, 2] ..."), as with_flag does for one flag. A
/// missing link cost also names `topology_source` (topology_source()).
void with_routing_labels(const RoutingLabels& labels, const std::string& topology_source,
                         const std::function<void()>& fn);

/// layers::apply_topology_routing for this rank with the labels of the
/// flags: sets `router` (of a layer whose experts are placed as `placement`
/// and whose rows are `row_bytes` on the wire) and validates it. Not
/// collective; call it inside an agreed step.
void apply_routing_flags(const layers::TopologyRouting& routing, const layers::ExpertPlacement& placement,
                         const comm::Topology& topology, const TopologyOptions& source, int rank,
                         std::int64_t row_bytes, layers::RouterConfig* router);

/// The routing a command used as JSON fields of its line: "max_nodes",
/// "node_score_experts", "link_penalty" and "topology_loss_coef".
template <class Json>
void add_routing_fields(Json& line, const layers::TopologyRouting& routing) {
  line["max_nodes"] = routing.max_nodes;
  line["node_score_experts"] = routing.node_score_experts;
  line["link_penalty"] = routing.link_penalty;
  line["topology_loss_coef"] = routing.topology_loss;
}

/// Whether `routing` prices links, so that the job's link costs must be
/// measured or given (cost-aware routing or the topology loss).
inline bool needs_link_costs(const layers::TopologyRouting& routing) {
  return routing.link_penalty > 0 || routing.topology_loss > 0;
}

/// One line for a printed summary: "routing: each token's experts on at
/// most M nodes (a node scores as its best S experts); link penalty L", or
/// "no node limit" when max_nodes is 0.
std::string routing_summary(const layers::TopologyRouting& routing);

/// Token copies and bytes per link class as JSON fields of a command's line:
/// "nodes", "link_copies", "link_slots" and "link_bytes" (objects keyed by
/// class name).
template <class Json>
void add_link_traffic_fields(Json& line, const comm::Topology& topology, const layers::LinkTraffic& traffic) {
  Json copies = Json::object(), slots = Json::object(), bytes = Json::object();
  for (const comm::LinkClass c : comm::kAllLinkClasses) {
    copies[comm::link_class_name(c)] = traffic.copies_on(c);
    slots[comm::link_class_name(c)] = traffic.slots_on(c);
    bytes[comm::link_class_name(c)] = traffic.bytes_on(c);
  }
  line["nodes"] = topology.num_nodes();
  line["link_copies"] = copies;
  line["link_slots"] = slots;
  line["link_bytes"] = bytes;
}

/// One line for a printed summary: "token copies: N on rank, N in node, N
/// across nodes (x% across); bytes: self B, same node B, other node B".
std::string link_traffic_summary(const layers::LinkTraffic& traffic);

}  // namespace switchyard::launch
