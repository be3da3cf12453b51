#pragma once
// Flat or hierarchical: the choice `--exchange auto` makes for a layer, from
// the topology's link costs and the exchange a uniform router would cause.
#include <cstdint>
#include <optional>

#include "switchyard/comm/topology.hpp"
#include "switchyard/layers/dispatch.hpp"

namespace switchyard::layers {

/// What the two exchanges are predicted to take for one dispatch (the
/// combine mirrors it), in seconds; unset when a link class they use has no
/// cost in the topology.
struct ExchangeForecast {
  std::optional<double> flat_s, hierarchical_s;
  /// The faster one; flat when either is unknown or they tie.
  ExchangeKind better() const;
};

/// Predicts both exchanges for `tokens` tokens on every rank, each routed
/// to `top_k` distinct experts drawn uniformly (the chance that a rank or a
/// node holds any of a token's experts follows from the placement), rows of
/// `row_bytes` bytes, with comm::predict_all_to_all_seconds on each hop,
/// plus the topology's round cost (Topology::round_s) once per hop.
/// Throws Error(kInvalidArgument) for a topology of another rank count, or
/// tokens < 0, top_k < 1 or above the experts, or row_bytes < 1.
ExchangeForecast forecast_exchange(const comm::Topology& topology, const ExpertPlacement& placement,
                                   std::int64_t tokens, std::int64_t top_k, std::int64_t row_bytes);

/// The layout for `kind` on `topology`'s nodes.
ExchangeLayout exchange_layout(ExchangeKind kind, const comm::Topology& topology);

}  // namespace switchyard::layers
