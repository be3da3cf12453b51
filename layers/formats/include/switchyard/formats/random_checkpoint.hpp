#pragma once
// Random MoE checkpoints in the real Hugging Face formats, for the demo, the
// tests and the benchmarks. The weights stay available in memory as plain
// arrays, so a reference can be computed without Switchyard's loader.
#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/formats/model_config.hpp"
#include "switchyard/formats/safetensors.hpp"

namespace switchyard::formats {

struct RandomMoeSpec {
  formats::Architecture arch = formats::Architecture::kMixtral;
  std::int64_t hidden = 32;
  std::int64_t inter = 48;  // routed expert width
  std::int64_t experts = 8;
  std::int64_t top_k = 2;
  std::int64_t layers = 2;
  std::int64_t shared_inter = 40;             // qwen2_moe, qwen3_5_moe shared expert width
  std::int64_t n_shared_experts = 1;          // deepseek_v3, glm4_moe (and the next three)
  std::int64_t n_group = 4, topk_group = 2;   // deepseek_v3
  double routed_scaling_factor = 2.5;         // deepseek_v3
  bool norm_topk_prob = true;                 // qwen/deepseek
  std::int64_t first_k_dense_replace = 1;     // deepseek_v3
  std::vector<std::int64_t> mlp_only_layers;  // qwen
  std::int64_t decoder_sparse_step = 1;       // qwen
  std::string hidden_act = "silu";
  bool fused = false;  // transformers v5 fused expert tensors (granitemoe: its in-memory names)
  int shards = 1;      // >1: model-0000i-of-0000n.safetensors + index
  formats::DType dtype = formats::DType::kF32;
  std::uint64_t seed = 1;
  float scale = 0.2f;  // weights ~ U(-scale, scale)
};

/// One MoE layer's weights as plain row-major arrays (values exactly as stored).
struct MoeLayerArrays {
  std::vector<float> router;                               // [E, H]
  std::vector<float> bias;                                 // [E] (deepseek_v3)
  std::vector<std::vector<float>> gate, up, down;          // [E][I*H], [E][I*H], [E][H*I]
  std::vector<float> shared_gate, shared_up, shared_down;  // [Is*H], [Is*H], [H*Is]
  std::vector<float> shared_expert_gate;                   // [H] (qwen2_moe)
};

/// Writes config.json and safetensors into `dir` (created if needed) and
/// returns the weights of every layer (empty arrays for dense layers).
std::vector<MoeLayerArrays> write_random_moe_checkpoint(const RandomMoeSpec& spec, const std::string& dir);

/// Uniform random float32 matrix with a seed, for inputs.
std::vector<float> random_matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed, float scale = 1.0f);

}  // namespace switchyard::formats
