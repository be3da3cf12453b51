#pragma once
// The weights of one MoE block as the operator holds them, in memory and in
// its own layout, whatever file they came from (formats/ reads checkpoints).
#include <cstdint>
#include <vector>

namespace switchyard::layers {

/// An expert MLP's weights: gate rows then up rows ([2I, H]) and down ([H, I]).
struct MlpWeights {
  std::int64_t hidden = 0, inter = 0;
  std::vector<float> gate_up;
  std::vector<float> down;
};

/// What one rank holds of an MoE block.
struct MoeWeights {
  std::vector<float> router;          // [E, H]
  std::vector<float> selection_bias;  // [E], empty if none
  std::vector<float> router_noise;    // [E, H] noisy gating's noise weights; empty: zeros
  std::int64_t first_expert = 0;
  std::vector<std::int64_t> expert_ids;  // each of `experts`' global id; empty: first_expert, first_expert + 1, ...
  std::vector<MlpWeights> experts;       // this rank's experts

  /// The global id of each of `experts`.
  std::vector<std::int64_t> ids() const {
    if (!expert_ids.empty()) return expert_ids;
    std::vector<std::int64_t> out;
    for (std::size_t j = 0; j < experts.size(); ++j) out.push_back(first_expert + static_cast<std::int64_t>(j));
    return out;
  }
  MlpWeights shared;               // inter == 0 if none
  std::vector<float> shared_gate;  // [H], empty unless gated
};

}  // namespace switchyard::layers
