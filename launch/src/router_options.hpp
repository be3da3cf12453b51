#pragma once
// The router flags of train and forward: --router, --top-p and --max-k, and
// the experts-per-token fields their JSON lines share (docs/routing.md).
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/layers/moe_config.hpp"

namespace switchyard::launch {

/// As given; empty or negative: not given.
struct RouterOptions {
  std::string router;  // top-k | top-p | noisy-top-k (train only)
  double top_p = -1.0;
  std::int64_t max_k = -1;
};

/// Adds --router, --top-p and --max-k to `sub`. `training`: noisy-top-k too,
/// and the help says which configuration field each flag overrides.
void add_router_options(CLI::App& sub, RouterOptions* o, bool training);

/// Throws Error(kInvalidArgument) naming --max-k when it exceeds the experts.
void check_max_k(std::int64_t max_k, std::int64_t num_experts);

/// For a layer read from a checkpoint (forward): top-p routing with its cap
/// when --router top-p asks for it. Throws Error(kInvalidArgument) naming the
/// flag (a top-p router needs softmax scores; the cap at most the experts).
void apply_router_options(const RouterOptions& o, layers::MoeConfig* moe);

/// Tokens by the experts they used ([top_k + 1], summed over ranks and
/// blocks) as JSON fields: "experts_per_token" (the mean),
/// "experts_per_token_histogram", and "expert_compute_vs_top_k" (the expert
/// compute against a fixed top-k router's: 1 unless top-p).
template <class Json>
void add_expert_count_fields(Json& line, const std::vector<std::int64_t>& histogram, std::int64_t top_k) {
  std::int64_t slots = 0, tokens = 0;
  for (std::size_t k = 0; k < histogram.size(); ++k) {
    slots += static_cast<std::int64_t>(k) * histogram[k];
    tokens += histogram[k];
  }
  const double mean = tokens ? static_cast<double>(slots) / static_cast<double>(tokens) : 0.0;
  line["experts_per_token"] = mean;
  line["expert_compute_vs_top_k"] = mean / static_cast<double>(top_k);
  line["experts_per_token_histogram"] = histogram;
}

}  // namespace switchyard::launch
