#pragma once
// The tensors of one MoE block, by checkpoint name, and loading the part of
// them one rank needs.
#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/layers/checkpoint.hpp"
#include "switchyard/layers/model_config.hpp"

namespace switchyard::layers {

/// Per-expert tensors (Hub checkpoints) or one fused tensor per projection
/// (transformers v5 modules).
enum class ExpertLayout { kPerExpert, kFused };

/// Checkpoint names of the tensors of one MoE block.
struct MoeTensorNames {
  ExpertLayout layout = ExpertLayout::kPerExpert;
  std::string prefix;  // e.g. "model.layers.3.mlp."
  std::string router;
  std::string selection_bias;  // empty unless DeepSeek-V3
  // Per-expert layout: expert e's projections.
  std::string expert_gate(std::int64_t e) const;
  std::string expert_up(std::int64_t e) const;
  std::string expert_down(std::int64_t e) const;
  // Fused layout.
  std::string fused_gate_up, fused_down;
  // Shared expert(s); empty names when the architecture has none.
  std::string shared_gate_proj, shared_up_proj, shared_down_proj, shared_expert_gate;

  std::string gate_name, up_name, down_name;  // per-expert projection names (w1/w3/w2 or *_proj)
};

/// Works out the names for `layer`, detecting the layout from what `ckpt`
/// lists. Does not read tensor data.
MoeTensorNames moe_tensor_names(const Checkpoint& ckpt, const ModelConfig& config, std::int64_t layer);

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
  std::int64_t first_expert = 0;
  std::vector<MlpWeights> experts;  // this rank's experts
  MlpWeights shared;                // inter == 0 if none
  std::vector<float> shared_gate;   // [H], empty unless gated
};

/// Reads the router, the shared experts and experts [first, first + count) of
/// `layer` as float32, checking every shape. Throws Error(kInvalidArgument)
/// naming the tensor on a missing tensor, wrong shape or unsupported dtype,
/// and naming the layer if it is out of range or not an MoE layer.
MoeWeights load_moe_weights(Checkpoint& ckpt, const ModelConfig& config, std::int64_t layer, std::int64_t first,
                            std::int64_t count);

/// Throws Error(kInvalidArgument) unless `layer` is an MoE layer of `config`.
void check_moe_layer(const ModelConfig& config, std::int64_t layer);

}  // namespace switchyard::layers
