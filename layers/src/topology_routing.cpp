#include "switchyard/layers/topology_routing.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {

std::vector<std::int32_t> expert_nodes(const ExpertPlacement& placement, std::span<const int> node_of_rank) {
  check_arg(static_cast<std::int64_t>(node_of_rank.size()) == placement.num_ranks(),
            "expert_nodes: node_of_rank must hold one node per rank (" + std::to_string(placement.num_ranks()) +
                "), got " + std::to_string(node_of_rank.size()));
  std::vector<std::int32_t> out(static_cast<std::size_t>(placement.num_experts()));
  for (std::int64_t e = 0; e < placement.num_experts(); ++e) out[e] = node_of_rank[placement.owner(e)];
  return out;
}

NodeOfRank node_of_rank(const comm::Topology& topology) {
  NodeOfRank out;
  for (const comm::RankPlacement& r : topology.ranks) out.push_back(r.node);
  return out;
}

std::vector<std::int32_t> expert_nodes(const ExpertPlacement& placement, const comm::Topology& topology) {
  std::vector<int> node_of_rank;
  for (const comm::RankPlacement& r : topology.ranks) node_of_rank.push_back(r.node);
  return expert_nodes(placement, node_of_rank);
}

namespace {

// link_penalty's prices, with `what` ("link penalty", "topology loss") at
// the front of every message.
std::vector<float> link_prices(const ExpertPlacement& placement, const comm::Topology& topology, int rank,
                               std::int64_t row_bytes, double lambda, const std::string& what) {
  check_arg(std::isfinite(lambda) && lambda >= 0.0,
            what + ": the scale must be finite and >= 0, got " + std::to_string(lambda));
  check_arg(row_bytes >= 1, what + ": row_bytes must be positive, got " + std::to_string(row_bytes));
  check_arg(topology.num_ranks() == placement.num_ranks(),
            what + ": the topology has " + std::to_string(topology.num_ranks()) + " ranks, the job " +
                std::to_string(placement.num_ranks()));
  check_arg(rank >= 0 && rank < placement.num_ranks(),
            what + ": rank " + std::to_string(rank) + " is outside 0.." + std::to_string(placement.num_ranks() - 1));
  double dearest = 0.0;
  for (const auto& cost : topology.costs)
    if (cost) dearest = std::max(dearest, cost->seconds(row_bytes));
  std::vector<float> out(static_cast<std::size_t>(placement.num_experts()));
  for (std::int64_t e = 0; e < placement.num_experts(); ++e) {
    const comm::LinkClass link = comm::link_class(topology, rank, placement.owner(e));
    const auto& cost = topology.cost(link);
    check_arg(cost.has_value(), what + ": the topology has no cost for the " + comm::link_class_name(link) +
                                    " link; give a topology file with link costs or measure them");
    out[e] = static_cast<float>(lambda * cost->seconds(row_bytes) / dearest);
  }
  return out;
}

}  // namespace

std::vector<float> link_penalty(const ExpertPlacement& placement, const comm::Topology& topology, int rank,
                                std::int64_t row_bytes, double lambda) {
  return link_prices(placement, topology, rank, row_bytes, lambda, "link penalty");
}

void apply_topology_routing(const TopologyRouting& want, const ExpertPlacement& placement,
                            const comm::Topology& topology, int rank, std::int64_t row_bytes, RouterConfig* router) {
  if (want.max_nodes > 0) {
    router->expert_node = expert_nodes(placement, topology);
    router->max_nodes = want.max_nodes;
    router->node_score_experts = want.node_score_experts;
  }
  if (want.link_penalty != 0.0) {
    router->selection_penalty = link_penalty(placement, topology, rank, row_bytes, want.link_penalty);
  }
  if (want.topology_loss != 0.0) {
    check_arg(std::isfinite(want.topology_loss) && want.topology_loss >= 0.0,
              "topology loss: the coefficient must be finite and >= 0, got " + std::to_string(want.topology_loss));
    router->link_cost = link_prices(placement, topology, rank, row_bytes, 1.0, "topology loss");
  }
  router->validate();
}

}  // namespace switchyard::layers
