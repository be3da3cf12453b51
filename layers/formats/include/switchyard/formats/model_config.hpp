#pragma once
// The MoE-relevant part of a Hugging Face config.json, with each
// architecture's transformers defaults for absent fields.
#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/kernels/activation.hpp"
#include "switchyard/layers/moe_config.hpp"
#include "switchyard/layers/router.hpp"

namespace switchyard::formats {

enum class Architecture {
  kMixtral,
  kQwen2Moe,
  kQwen3Moe,
  kDeepseekV3,
  kOlmoe,       // olmoe: Qwen3-MoE's block without shared experts
  kGraniteMoe,  // granitemoe: fused experts (input_linear, output_linear), softmax over the top-k logits
  kGlm4Moe,     // glm4_moe (GLM-4.5): DeepSeek-V3's router and shared experts, other defaults
  kQwen3_5Moe,  // qwen3_5_moe(_text): Qwen2-MoE's block, top-k always renormalised
  kLlama4,      // llama4(_text): sigmoid of the top-k logits scales the experts' input; a shared expert
};

/// The `model_type` string of an architecture, e.g. "qwen2_moe" (the
/// text-only one where a multimodal wrapper exists: "qwen3_5_moe_text").
const char* architecture_name(Architecture arch);

using layers::ScoreFunction;

struct ModelConfig {
  Architecture arch = Architecture::kMixtral;
  std::int64_t hidden_size = 0;
  std::int64_t expert_intermediate_size = 0;  // per routed expert
  std::int64_t num_experts = 0;
  std::int64_t top_k = 0;
  std::int64_t num_layers = 0;
  std::string hidden_act;
  kernels::Activation activation = kernels::Activation::kSilu;

  ScoreFunction score = ScoreFunction::kSoftmax;
  bool norm_topk_prob = true;
  std::int64_t n_group = 1;  // DeepSeek-V3 group-limited routing
  std::int64_t topk_group = 1;
  double routed_scaling_factor = 1.0;
  bool has_selection_bias = false;  // DeepSeek-V3 e_score_correction_bias
  // DeepSeek-V3-style routing (sigmoid, groups, selection bias, scaling;
  // DeepSeek-V3 and GLM-4.5): config.json names its fields n_routed_experts,
  // n_group, topk_group.
  bool deepseek_routing = false;

  std::int64_t shared_intermediate_size = 0;  // 0: no shared expert
  bool shared_expert_gated = false;           // Qwen2-MoE sigmoid gate
  // Where the decoder's MoE settings were read: the top level, or a
  // multimodal config's `text_config` (whose checkpoint names the language
  // model's tensors with a prefix such as "model.language_model.").
  bool from_text_config = false;

  // Which layers are MoE.
  std::int64_t decoder_sparse_step = 1;
  std::vector<std::int64_t> mlp_only_layers;
  std::int64_t first_k_dense_replace = 0;
  std::vector<std::int64_t> moe_layers;  // Llama 4: the MoE layers, listed

  bool weight_scales_input = false;  // Llama 4 (MoeConfig::weight_scales_input)
  bool select_on_logits = false;     // Llama 4, Granite MoE (RouterConfig::select_on_logits)

  /// True if decoder layer `layer` has an MoE block.
  bool is_moe_layer(std::int64_t layer) const;
};

/// Reads `dir`/config.json: a text model's config, or a multimodal one
/// (model_type qwen3_5_moe, llama4) whose `text_config` holds the decoder's. Throws Error(kInvalidArgument) naming the
/// file and the field for a missing file, invalid JSON, a missing or unknown model_type, a field of the wrong type or
/// an inconsistent value.
ModelConfig load_model_config(const std::string& dir);

/// Parses config JSON text; `source` names it in messages.
ModelConfig parse_model_config(const std::string& json_text, const std::string& source);

/// Maps a Hugging Face `hidden_act` string ("silu"/"swish", "gelu",
/// "gelu_new"/"gelu_pytorch_tanh"/"gelu_fast", "relu") to an Activation.
/// Returns false if the name is not supported.
bool parse_activation(const std::string& name, kernels::Activation* out);

/// The router of an MoE block of `config` (validated).
layers::RouterConfig router_config(const ModelConfig& config);

/// The operator's view of an MoE block of `config` (validated).
layers::MoeConfig moe_config(const ModelConfig& config);

}  // namespace switchyard::formats
