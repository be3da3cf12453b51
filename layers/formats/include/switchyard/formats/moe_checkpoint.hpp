#pragma once
// The tensors of one MoE block, by checkpoint name, and loading the part of
// them one rank needs. The one home of the mapping between checkpoint tensor
// names and the operator's parameters, in both directions: one table
// (moe_tensors) says which checkpoint tensor holds which rows of which of the
// operator's tensors; load_moe_weights reads through it and
// name_layer_gradients writes a layer's gradients back through it.
//
// NOTE: the gradient direction takes the parameters, not a communicator.
// Gathering expert gradients from their owners and all-reducing replicated
// ones is a property of Parameter (`replicated`), not of any file layout, so
// it stays with the caller (launch/ does it in a few generic lines); formats
// keeps to names, shapes and slices, and its round trip is testable in one
// process.
#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/formats/checkpoint.hpp"
#include "switchyard/formats/model_config.hpp"
#include "switchyard/layers/moe_weights.hpp"
#include "switchyard/runtime/parameter.hpp"

namespace switchyard::formats {

/// Per-expert tensors (Hub checkpoints) or one fused tensor per projection
/// (transformers v5 modules).
enum class ExpertLayout { kPerExpert, kFused };

/// Checkpoint names of the tensors of one MoE block, and the sizes their
/// shapes follow.
struct MoeTensorNames {
  ExpertLayout layout = ExpertLayout::kPerExpert;
  std::string prefix;  // e.g. "model.layers.3.mlp."
  std::string router;
  std::string selection_bias;  // empty unless DeepSeek-V3 or GLM-4.5
  // Per-expert layout: expert e's projections.
  std::string expert_gate(std::int64_t e) const;
  std::string expert_up(std::int64_t e) const;
  std::string expert_down(std::int64_t e) const;
  // Fused layout.
  std::string fused_gate_up, fused_down;
  // Llama 4 stores them transposed: gate_up_proj [E, H, 2I] (gate columns
  // first) and down_proj [E, I, H].
  bool transposed_experts = false;
  // Shared expert(s); empty names when the architecture has none.
  std::string shared_gate_proj, shared_up_proj, shared_down_proj, shared_expert_gate;

  std::string gate_name, up_name, down_name;  // per-expert projection names (w1/w3/w2 or *_proj)

  // Sizes (config.json): H, I, E and the shared experts' total width (0: none).
  std::int64_t hidden_size = 0, expert_intermediate_size = 0, num_experts = 0, shared_intermediate_size = 0;
};

/// Works out the names for `layer`, detecting the layout from what `ckpt`
/// lists. Does not read tensor data.
MoeTensorNames moe_tensor_names(const Checkpoint& ckpt, const ModelConfig& config, std::int64_t layer);

using layers::MlpWeights;
using layers::MoeWeights;

/// The operator's tensors of an MoE block: the fields of MoeWeights and the
/// MoeLayer parameters built from them (row-major, the operator's layout).
enum class MoeParam {
  kRouter,         // [E, H]             MoeWeights::router, parameter "gate.weight"
  kSelectionBias,  // [E]                MoeWeights::selection_bias; not a parameter
  kSharedGateUp,   // [2 Is, H]          shared.gate_up (gate rows, then up rows), "shared.gate_up_proj"
  kSharedDown,     // [H, Is]            shared.down, "shared.down_proj"
  kSharedGate,     // [1, H]             shared_gate, "shared_expert_gate.weight"
  kExpertGateUp,   // [2I, H] per expert experts[e].gate_up, "experts.<e>.gate_up_proj"
  kExpertDown,     // [H, I] per expert  experts[e].down, "experts.<e>.down_proj"
};

/// One checkpoint tensor of an MoE block and where its values sit: for each
/// of `num_experts` experts from `expert` (stacked along the checkpoint
/// tensor's first dimension when more than one), rows [first_row, first_row +
/// num_rows) of that expert's `param`. Rows are `shape.back()` floats wide.
struct MoeTensor {
  std::string name;                 // checkpoint name
  std::vector<std::int64_t> shape;  // checkpoint shape
  MoeParam param = MoeParam::kRouter;
  std::int64_t expert = 0;       // expert tensors: the first expert held; 0 otherwise
  std::int64_t num_experts = 1;  // experts stacked in the tensor (fused layout: all E)
  std::int64_t first_row = 0;
  std::int64_t num_rows = 0;
  // Each expert's matrix in the file is the operator tensor transposed
  // (whole: first_row 0, num_rows the operator's rows).
  bool transposed = false;
};

/// The table: every tensor of the block that `names` describes, in the order
/// they are loaded (router, selection bias, experts 0..E-1, shared experts,
/// shared gate). Per-expert layout: gate_proj [I, H] = rows [0, I) and
/// up_proj [I, H] = rows [I, 2I) of expert e's gate_up, down_proj [H, I] =
/// its down. Fused: gate_up_proj [E, 2I, H] and down_proj [E, H, I] stack
/// all experts whole.
std::vector<MoeTensor> moe_tensors(const MoeTensorNames& names);

/// Shape of one expert's (or the block's) operator tensor `param`.
std::vector<std::int64_t> operator_shape(const MoeTensorNames& names, MoeParam param);

/// Name of the MoeLayer parameter for `param` (of expert `expert` for expert
/// tensors); empty for the selection bias, which is not a parameter.
std::string layer_parameter_name(MoeParam param, std::int64_t expert);

/// Reads the router, the shared experts and experts [first, first + count) of
/// `layer` as float32, checking every shape. Throws Error(kInvalidArgument)
/// naming the tensor on a missing tensor, wrong shape or unsupported dtype,
/// and naming the layer if it is out of range or not an MoE layer.
MoeWeights load_moe_weights(Checkpoint& ckpt, const ModelConfig& config, std::int64_t layer, std::int64_t first,
                            std::int64_t count);
/// The same for the experts `experts` (global ids, ascending; any set, as a
/// placement with replicas gives a rank).
MoeWeights load_moe_weights(Checkpoint& ckpt, const ModelConfig& config, std::int64_t layer,
                            const std::vector<std::int64_t>& experts);

/// A named float32 tensor that owns its data.
struct NamedTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  std::vector<float> data;
};

/// The inverse of load_moe_weights: the gradients of `params` (MoeLayer
/// parameters of every expert, as MoeLayer::parameters() names and shapes
/// them) under the checkpoint names and shapes of `names`, per-expert or
/// fused, in moe_tensors() order. The selection bias has no gradient and is
/// left out. Gradients are taken as they are: replicated ones must already
/// be summed over ranks. Not collective; thread-compatible. Throws
/// Error(kInvalidArgument) naming the parameter if one the table needs is
/// missing or has another shape, or if one of `params` has no checkpoint
/// tensor.
std::vector<NamedTensor> name_layer_gradients(const MoeTensorNames& names, const std::vector<const Parameter*>& params);

/// As name_layer_gradients, for the parameters' values: after loading every
/// expert, these are the checkpoint's tensors (as float32).
std::vector<NamedTensor> name_layer_values(const MoeTensorNames& names, const std::vector<const Parameter*>& params);

/// Throws Error(kInvalidArgument) unless `layer` is an MoE layer of `config`.
void check_moe_layer(const ModelConfig& config, std::int64_t layer);

}  // namespace switchyard::formats
