#pragma once
// Routing that knows the machine: the node of every expert for node-limited
// routing, and the per-expert link penalty of cost-aware routing, derived
// from a comm::Topology and the expert placement (docs/topology.md).
#include <cstdint>
#include <span>
#include <vector>

#include "switchyard/comm/topology.hpp"
#include "switchyard/layers/dispatch.hpp"
#include "switchyard/layers/router.hpp"

namespace switchyard::layers {

/// The node of each rank, for MoeLayerOptions::node_of_rank.
NodeOfRank node_of_rank(const comm::Topology& topology);

/// The node of each expert: expert e lives on rank placement.owner(e), which
/// runs on node_of_rank[owner] ([num_ranks]). Throws Error(kInvalidArgument)
/// when node_of_rank does not hold one node per rank of the placement.
std::vector<std::int32_t> expert_nodes(const ExpertPlacement& placement, std::span<const int> node_of_rank);
/// As above, with each rank's node from `topology.ranks[r].node`.
std::vector<std::int32_t> expert_nodes(const ExpertPlacement& placement, const comm::Topology& topology);

/// The selection penalty of cost-aware routing on `rank` ([num_experts]):
/// lambda × (the modelled time of one `row_bytes` message from `rank` to the
/// owner of e) / (the time of that message on the dearest link class the
/// topology has a cost for). Dividing by the dearest link puts lambda in
/// units of router score: an expert behind the dearest link loses lambda.
/// Throws Error(kInvalidArgument) for lambda < 0 or not finite, row_bytes
/// < 1, a topology whose ranks differ from the placement's, or a link class
/// this rank needs without a cost.
std::vector<float> link_penalty(const ExpertPlacement& placement, const comm::Topology& topology, int rank,
                                std::int64_t row_bytes, double lambda);

/// What a command asks of topology-aware routing.
struct TopologyRouting {
  std::int64_t max_nodes = 0;           // 0: no node limit
  std::int64_t node_score_experts = 2;  // s: a node scores as the sum of its best s experts
  double link_penalty = 0.0;            // lambda; 0: no penalty
  double topology_loss = 0.0;           // the topology loss's coefficient; 0: none (needs link costs)
};

/// Sets `router`'s expert_node, max_nodes, node_score_experts,
/// selection_penalty and link_cost (link_penalty with lambda 1, for the
/// topology loss) for `rank` from `want` (leaving them unset where `want`
/// asks for nothing), then validates it. The topology loss's coefficient is
/// the layer's (MoeLayerOptions::topology_loss_coef). `row_bytes` is the size of one
/// token row as the dispatch sends it.
void apply_topology_routing(const TopologyRouting& want, const ExpertPlacement& placement,
                            const comm::Topology& topology, int rank, std::int64_t row_bytes, RouterConfig* router);

}  // namespace switchyard::layers
