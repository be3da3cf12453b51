#include "switchyard/layers/exchange_choice.hpp"

#include <cmath>
#include <string>
#include <vector>

#include "switchyard/layers/topology_routing.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {

ExchangeKind ExchangeForecast::better() const {
  if (!flat_s || !hierarchical_s) return ExchangeKind::kFlat;
  return *hierarchical_s < *flat_s ? ExchangeKind::kHierarchical : ExchangeKind::kFlat;
}

ExchangeLayout exchange_layout(ExchangeKind kind, const comm::Topology& topology) {
  return {.kind = kind, .node_of_rank = node_of_rank(topology)};
}

namespace {

// The chance that none of a token's k distinct uniform experts (of e) is
// among `held` given ones: C(e - held, k) / C(e, k).
double miss_chance(std::int64_t e, std::int64_t held, std::int64_t k) {
  double p = 1.0;
  for (std::int64_t i = 0; i < k; ++i) p *= static_cast<double>(e - held - i) / static_cast<double>(e - i);
  return held + k > e ? 0.0 : p;
}

// Predicted seconds of an all-to-all, or nothing when a class lacks a cost.
std::optional<double> predict(const comm::Topology& topology, const std::vector<std::int64_t>& bytes) {
  try {
    return comm::predict_all_to_all_seconds(topology, bytes);
  } catch (const Error&) {
    return std::nullopt;
  }
}

}  // namespace

ExchangeForecast forecast_exchange(const comm::Topology& topology, const ExpertPlacement& placement,
                                   std::int64_t tokens, std::int64_t top_k, std::int64_t row_bytes) {
  const int R = topology.num_ranks();
  const std::int64_t E = placement.num_experts();
  check_arg(R == placement.num_ranks(), "forecast_exchange: the topology has " + std::to_string(R) +
                                            " ranks, the placement " + std::to_string(placement.num_ranks()));
  check_arg(tokens >= 0 && top_k >= 1 && top_k <= E && row_bytes >= 1,
            "forecast_exchange: expected tokens >= 0, 1 <= top_k <= experts and row_bytes >= 1");
  const NodeOfRank nodes = node_of_rank(topology);
  const int N = topology.num_nodes();
  std::vector<std::int64_t> node_experts(static_cast<std::size_t>(N), 0), node_size(static_cast<std::size_t>(N), 0);
  std::vector<std::int64_t> index(static_cast<std::size_t>(R));  // each rank's index in its node
  for (int r = 0; r < R; ++r) {
    node_experts[nodes[r]] += placement.num_local(r);
    index[r] = node_size[nodes[r]]++;
  }
  auto rows = [&](double chance) { return static_cast<std::int64_t>(std::llround(chance * tokens)) * row_bytes; };
  const auto RR = static_cast<std::size_t>(R) * R;
  std::vector<std::int64_t> flat(RR, 0), first(RR, 0), second(RR, 0);
  for (int s = 0; s < R; ++s)
    for (int r = 0; r < R; ++r) flat[s * R + r] = rows(1.0 - miss_chance(E, placement.num_local(r), top_k));
  for (int s = 0; s < R; ++s)
    for (int r = 0; r < R; ++r) {
      // r forwards s's tokens in its node: the first hop's row to r, then
      // r passes each rank d of its node its share.
      if (index[r] != index[s] % node_size[nodes[r]]) continue;
      first[s * R + r] = rows(1.0 - miss_chance(E, node_experts[nodes[r]], top_k));
      for (int d = 0; d < R; ++d)
        if (nodes[d] == nodes[r]) second[r * R + d] += flat[s * R + d];
    }
  // One all-to-all round for flat, two for hierarchical (when probed).
  const double round = topology.round_s.value_or(0.0);
  ExchangeForecast out;
  out.flat_s = predict(topology, flat);
  if (out.flat_s) *out.flat_s += round;
  const std::optional<double> a = predict(topology, first), b = predict(topology, second);
  if (a && b) out.hierarchical_s = *a + *b + 2 * round;
  return out;
}

}  // namespace switchyard::layers
