#pragma once
// The tensors of one MoE block, by checkpoint name, and loading the part of
// them one rank needs. The one home of the mapping between checkpoint tensor
// names and the operator's parameters.
#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/formats/checkpoint.hpp"
#include "switchyard/formats/model_config.hpp"
#include "switchyard/layers/moe_weights.hpp"

namespace switchyard::formats {

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

using layers::MlpWeights;
using layers::MoeWeights;

/// Reads the router, the shared experts and experts [first, first + count) of
/// `layer` as float32, checking every shape. Throws Error(kInvalidArgument)
/// naming the tensor on a missing tensor, wrong shape or unsupported dtype,
/// and naming the layer if it is out of range or not an MoE layer.
MoeWeights load_moe_weights(Checkpoint& ckpt, const ModelConfig& config, std::int64_t layer, std::int64_t first,
                            std::int64_t count);

/// Throws Error(kInvalidArgument) unless `layer` is an MoE layer of `config`.
void check_moe_layer(const ModelConfig& config, std::int64_t layer);

}  // namespace switchyard::formats
