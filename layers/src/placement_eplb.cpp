// The EPLB-style balancer: DeepSeek's expert-parallelism load balancer as
// its description reads (docs/placement.md), on the load per expert alone.
#include <algorithm>
#include <numeric>
#include <string>

#include "switchyard/layers/placement_plan.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {
namespace {

// Packs weighted items into `num_packs` packs of at most `capacity` items:
// heaviest first (ties: lower index), each into the lightest pack with room
// that holds no item of its group (ties: fewer items, then lower index). The
// pack of each item, or -1 where no pack can take it.
std::vector<int> balanced_packing(std::span<const double> weight, std::span<const std::size_t> group, int num_packs,
                                  std::int64_t capacity) {
  std::vector<std::size_t> order(weight.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return weight[a] > weight[b]; });
  std::vector<double> pack_weight(static_cast<std::size_t>(num_packs), 0.0);
  std::vector<std::vector<std::size_t>> pack_groups(static_cast<std::size_t>(num_packs));
  std::vector<int> pack_of(weight.size(), -1);
  for (std::size_t item : order) {
    int best = -1;
    for (int p = 0; p < num_packs; ++p) {
      const auto i = static_cast<std::size_t>(p);
      const std::vector<std::size_t>& held = pack_groups[i];
      if (static_cast<std::int64_t>(held.size()) >= capacity ||
          std::find(held.begin(), held.end(), group[item]) != held.end())
        continue;
      const auto b = static_cast<std::size_t>(best);
      if (best < 0 || pack_weight[i] < pack_weight[b] ||
          (pack_weight[i] == pack_weight[b] && held.size() < pack_groups[b].size()))
        best = p;
    }
    if (best < 0) continue;
    pack_of[item] = best;
    pack_weight[static_cast<std::size_t>(best)] += weight[item];
    pack_groups[static_cast<std::size_t>(best)].push_back(group[item]);
  }
  return pack_of;
}

// Copies per expert: one each, then `extra` more, each to the expert with the
// highest load per copy (ties: lower index) that has fewer than `max_each`.
std::vector<std::int64_t> replicate(std::span<const double> loads, std::int64_t extra, std::int64_t max_each) {
  std::vector<std::int64_t> count(loads.size(), 1);
  for (std::int64_t k = 0; k < extra; ++k) {
    std::size_t best = loads.size();
    for (std::size_t e = 0; e < loads.size(); ++e) {
      if (count[e] >= max_each) continue;
      if (best == loads.size() ||
          loads[e] / static_cast<double>(count[e]) > loads[best] / static_cast<double>(count[best]))
        best = e;
    }
    if (best == loads.size()) break;  // every expert on every rank of the pool
    ++count[best];
  }
  return count;
}

// Replicates `experts` (ascending) to `num_copies` copies within the pool of
// `ranks` and packs the copies to those ranks, into `out`.
void place_in_pool(std::span<const double> all_loads, const std::vector<std::int64_t>& experts,
                   const std::vector<int>& ranks, std::int64_t num_copies, ExpertHolders* out) {
  std::vector<double> loads;
  for (std::int64_t e : experts) loads.push_back(all_loads[static_cast<std::size_t>(e)]);
  const auto pool_ranks = static_cast<std::int64_t>(ranks.size());
  const std::vector<std::int64_t> count =
      replicate(loads, num_copies - static_cast<std::int64_t>(experts.size()), pool_ranks);
  // Copies listed first copies first, then each expert's replicas, in expert order.
  std::vector<std::size_t> copy_expert;
  std::vector<double> copy_load;
  for (std::int64_t c = 0; c < *std::max_element(count.begin(), count.end()); ++c)
    for (std::size_t i = 0; i < experts.size(); ++i)
      if (c < count[i]) {
        copy_expert.push_back(i);
        copy_load.push_back(loads[i] / static_cast<double>(count[i]));
      }
  const auto total = static_cast<std::int64_t>(copy_expert.size());
  const std::int64_t capacity = (total + pool_ranks - 1) / pool_ranks;
  // Unlike EPLB, a rank holds an expert once (the copies of an expert are
  // one group): a second copy there would add nothing.
  const std::vector<int> pack_of = balanced_packing(copy_load, copy_expert, static_cast<int>(ranks.size()), capacity);
  for (std::size_t copy = 0; copy < copy_expert.size(); ++copy) {
    if (pack_of[copy] < 0) continue;
    const std::int64_t e = experts[copy_expert[copy]];
    out->ranks_of_expert[static_cast<std::size_t>(e)].push_back(ranks[static_cast<std::size_t>(pack_of[copy])]);
  }
}

}  // namespace

ExpertHolders eplb_placement(std::span<const double> expert_loads, std::span<const int> node_of_rank,
                             std::int64_t replicas) {
  const auto E = static_cast<std::int64_t>(expert_loads.size());
  const int R = static_cast<int>(node_of_rank.size());
  check_arg(E >= 1 && R >= 1, "eplb placement: " + std::to_string(E) + " experts on " + std::to_string(R) +
                                  " ranks; expected at least one of each");
  check_replicas(E, R, replicas);
  const int num_nodes = *std::max_element(node_of_rank.begin(), node_of_rank.end()) + 1;
  std::vector<std::vector<int>> ranks_on_node(static_cast<std::size_t>(num_nodes));
  for (int r = 0; r < R; ++r) {
    check_arg(node_of_rank[static_cast<std::size_t>(r)] >= 0, "node_of_rank[" + std::to_string(r) + "] is negative");
    ranks_on_node[static_cast<std::size_t>(node_of_rank[static_cast<std::size_t>(r)])].push_back(r);
  }
  bool equal_nodes = true;
  for (const std::vector<int>& ranks : ranks_on_node)
    equal_nodes = equal_nodes && ranks.size() == ranks_on_node[0].size();
  const bool hierarchical = equal_nodes && E % num_nodes == 0 && (E + replicas) % num_nodes == 0;
  if (!hierarchical)
    ranks_on_node = {[R] {
      std::vector<int> all(static_cast<std::size_t>(R));
      std::iota(all.begin(), all.end(), 0);
      return all;
    }()};
  const auto pools = static_cast<std::int64_t>(ranks_on_node.size());
  // Step 1: experts to nodes, an equal number each, node loads balanced.
  std::vector<std::size_t> own_group(static_cast<std::size_t>(E));
  std::iota(own_group.begin(), own_group.end(), std::size_t{0});
  const std::vector<int> node_of_expert = balanced_packing(expert_loads, own_group, static_cast<int>(pools), E / pools);
  ExpertHolders out{.num_ranks = R, .num_experts = E, .ranks_of_expert = std::vector<std::vector<int>>(E)};
  // Steps 2 and 3, per node: replicas of the hottest load per copy, copies packed to its ranks.
  for (std::int64_t pool = 0; pool < pools; ++pool) {
    std::vector<std::int64_t> experts;
    for (std::int64_t e = 0; e < E; ++e)
      if (node_of_expert[static_cast<std::size_t>(e)] == pool) experts.push_back(e);
    place_in_pool(expert_loads, experts, ranks_on_node[static_cast<std::size_t>(pool)], (E + replicas) / pools, &out);
  }
  for (std::vector<int>& ranks : out.ranks_of_expert) std::sort(ranks.begin(), ranks.end());
  check_expert_holders(out, "eplb placement");
  return out;
}

}  // namespace switchyard::layers
