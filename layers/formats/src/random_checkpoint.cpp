#include "switchyard/formats/random_checkpoint.hpp"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "switchyard/kernels/number_conversion.hpp"
#include "switchyard/runtime/atomic_file.hpp"

namespace switchyard::formats {
namespace fs = std::filesystem;
using formats::Architecture;
using nlohmann::json;

std::vector<float> random_matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  for (auto& x : v) x = dist(rng);
  return v;
}

namespace {

// Rounds in place to what `dtype` can hold, so the arrays equal the file.
void round_to(formats::DType dtype, std::vector<float>* v) {
  if (dtype == formats::DType::kF32) return;
  for (auto& x : *v)
    x = dtype == formats::DType::kBF16 ? kernels::bf16_to_float(kernels::float_to_bf16(x))
                                       : kernels::f16_to_float(kernels::float_to_f16(x));
}

// Qwen2-MoE and Qwen3-MoE.
void add_qwen_fields(const RandomMoeSpec& s, json* out) {
  json& c = *out;
  const bool q2 = s.arch == Architecture::kQwen2Moe;
  c["model_type"] = q2 ? "qwen2_moe" : "qwen3_moe";
  c["architectures"] = {q2 ? "Qwen2MoeForCausalLM" : "Qwen3MoeForCausalLM"};
  c["moe_intermediate_size"] = s.inter;
  c["intermediate_size"] = s.inter * 2;
  c["num_experts"] = s.experts;
  c["norm_topk_prob"] = s.norm_topk_prob;
  c["decoder_sparse_step"] = s.decoder_sparse_step;
  c["mlp_only_layers"] = s.mlp_only_layers;
  if (q2) c["shared_expert_intermediate_size"] = s.shared_inter;
}

// DeepSeek-V3 and GLM-4.5: the same router and shared-expert fields.
void add_deepseek_style_fields(const RandomMoeSpec& s, json* out) {
  json& c = *out;
  const bool glm = s.arch == Architecture::kGlm4Moe;
  c["model_type"] = glm ? "glm4_moe" : "deepseek_v3";
  c["architectures"] = {glm ? "Glm4MoeForCausalLM" : "DeepseekV3ForCausalLM"};
  c["moe_intermediate_size"] = s.inter;
  c["intermediate_size"] = s.inter * 2;
  c["n_routed_experts"] = s.experts;
  c["n_shared_experts"] = s.n_shared_experts;
  c["n_group"] = s.n_group;
  c["topk_group"] = s.topk_group;
  c["routed_scaling_factor"] = s.routed_scaling_factor;
  c["norm_topk_prob"] = s.norm_topk_prob;
  c["first_k_dense_replace"] = s.first_k_dense_replace;
}

json config_json(const RandomMoeSpec& s) {
  json c = {{"hidden_size", s.hidden},
            {"num_hidden_layers", s.layers},
            {"num_experts_per_tok", s.top_k},
            {"hidden_act", s.hidden_act},
            {"vocab_size", 64},
            {"num_attention_heads", 2},
            {"num_key_value_heads", 2},
            {"rms_norm_eps", 1e-6},
            {"torch_dtype", "float32"}};
  switch (s.arch) {
    case Architecture::kMixtral:
      c["model_type"] = "mixtral";
      c["architectures"] = {"MixtralForCausalLM"};
      c["intermediate_size"] = s.inter;
      c["num_local_experts"] = s.experts;
      break;
    case Architecture::kQwen2Moe:
    case Architecture::kQwen3Moe: add_qwen_fields(s, &c); break;
    case Architecture::kDeepseekV3:
    case Architecture::kGlm4Moe: add_deepseek_style_fields(s, &c); break;
    case Architecture::kOlmoe:
      c["model_type"] = "olmoe";
      c["architectures"] = {"OlmoeForCausalLM"};
      c["intermediate_size"] = s.inter;
      c["num_experts"] = s.experts;
      c["norm_topk_prob"] = s.norm_topk_prob;
      break;
    case Architecture::kGraniteMoe:
      c["model_type"] = "granitemoe";
      c["architectures"] = {"GraniteMoeForCausalLM"};
      c["intermediate_size"] = s.inter;
      c["num_local_experts"] = s.experts;
      break;
    case Architecture::kLlama4:
      c["model_type"] = "llama4_text";
      c["architectures"] = {"Llama4ForCausalLM"};
      c["intermediate_size"] = s.inter;
      c["intermediate_size_mlp"] = s.inter * 2;
      c["num_local_experts"] = s.experts;
      break;
    case Architecture::kQwen3_5Moe:
      c["model_type"] = "qwen3_5_moe_text";
      c["architectures"] = {"Qwen3_5MoeForCausalLM"};
      c["moe_intermediate_size"] = s.inter;
      c["shared_expert_intermediate_size"] = s.shared_inter;
      c["num_experts"] = s.experts;
      break;
  }
  return c;
}

struct Named {
  std::string name;
  std::vector<std::int64_t> shape;
  std::vector<float> data;
};

// The checkpoint's tensors in file order, every random one drawn from one
// sequence of seeds and rounded to the file's dtype.
class TensorDraw {
 public:
  TensorDraw(std::uint64_t seed, formats::DType dtype) : seed_(seed), dtype_(dtype) {}

  // Draws a [rows, cols] matrix that is not (yet) in the file.
  std::vector<float> draw(std::int64_t rows, std::int64_t cols, float scale) {
    auto v = random_matrix(rows, cols, ++seed_, scale);
    round_to(dtype_, &v);
    return v;
  }
  // Draws a tensor into the file; returns its values.
  std::vector<float>& add(std::string name, std::vector<std::int64_t> shape, float scale) {
    std::vector<float> v = draw(1, formats::numel_of(shape), scale);
    tensors.push_back({std::move(name), std::move(shape), std::move(v)});
    return tensors.back().data;
  }

  std::vector<Named> tensors;

 private:
  std::uint64_t seed_;
  formats::DType dtype_;
};

// Adds the expert tensors of one MoE layer (prefix `m`), fused or one
// tensor per expert and projection, from the arrays in `a`.
void add_expert_tensors(const RandomMoeSpec& s, const std::string& m, const MoeLayerArrays& a, TensorDraw* t) {
  const std::int64_t H = s.hidden, I = s.inter, E = s.experts;
  const bool granite = s.arch == Architecture::kGraniteMoe;
  if (s.arch == Architecture::kLlama4) {  // always fused, each expert's matrices transposed
    std::vector<float> gate_up(static_cast<std::size_t>(E * H * 2 * I)), down(static_cast<std::size_t>(E * I * H));
    for (std::int64_t e = 0; e < E; ++e)
      for (std::int64_t i = 0; i < I; ++i)
        for (std::int64_t h = 0; h < H; ++h) {
          gate_up[(e * H + h) * 2 * I + i] = a.gate[e][i * H + h];
          gate_up[(e * H + h) * 2 * I + I + i] = a.up[e][i * H + h];
          down[(e * I + i) * H + h] = a.down[e][h * I + i];
        }
    t->tensors.push_back({m + "experts.gate_up_proj", {E, H, 2 * I}, std::move(gate_up)});
    t->tensors.push_back({m + "experts.down_proj", {E, I, H}, std::move(down)});
    return;
  }
  if (s.fused || granite) {
    std::vector<float> gate_up, down;
    for (std::int64_t e = 0; e < E; ++e) {
      gate_up.insert(gate_up.end(), a.gate[e].begin(), a.gate[e].end());
      gate_up.insert(gate_up.end(), a.up[e].begin(), a.up[e].end());
      down.insert(down.end(), a.down[e].begin(), a.down[e].end());
    }
    // Granite's own files name the fused tensors input_linear/output_linear.
    const bool on_disk = granite && !s.fused;
    t->tensors.push_back(
        {m + (on_disk ? "input_linear.weight" : "experts.gate_up_proj"), {E, 2 * I, H}, std::move(gate_up)});
    t->tensors.push_back({m + (on_disk ? "output_linear.weight" : "experts.down_proj"), {E, H, I}, std::move(down)});
    return;
  }
  const bool mixtral = s.arch == Architecture::kMixtral;
  const char* g = mixtral ? "w1" : "gate_proj";
  const char* u = mixtral ? "w3" : "up_proj";
  const char* d = mixtral ? "w2" : "down_proj";
  for (std::int64_t e = 0; e < E; ++e) {
    const std::string x = m + "experts." + std::to_string(e) + ".";
    t->tensors.push_back({x + g + ".weight", {I, H}, a.gate[e]});
    t->tensors.push_back({x + u + ".weight", {I, H}, a.up[e]});
    t->tensors.push_back({x + d + ".weight", {H, I}, a.down[e]});
  }
}

// Draws the tensors of MoE layer `p` (its name prefix) into `t`; returns them.
MoeLayerArrays add_moe_layer(const RandomMoeSpec& s, const ModelConfig& cfg, const std::string& p, TensorDraw* t) {
  const std::int64_t H = s.hidden, I = s.inter, E = s.experts;
  MoeLayerArrays a;
  const bool mixtral = s.arch == Architecture::kMixtral;
  const bool granite = s.arch == Architecture::kGraniteMoe;
  const bool llama4 = s.arch == Architecture::kLlama4;
  const std::string m = p + (llama4                             ? "feed_forward."
                             : (mixtral && !s.fused) || granite ? "block_sparse_moe."
                                                                : "mlp.");
  const std::string router = llama4 || (granite && s.fused) ? "router.weight"
                             : granite                      ? "router.layer.weight"
                                                            : "gate.weight";
  a.router = t->add(m + router, {E, H}, s.scale * 4);
  if (cfg.has_selection_bias) a.bias = t->add(m + "gate.e_score_correction_bias", {E}, 0.05f);
  for (std::int64_t e = 0; e < E; ++e) {
    a.gate.push_back(t->draw(I, H, s.scale));
    a.up.push_back(t->draw(I, H, s.scale));
    a.down.push_back(t->draw(H, I, s.scale));
  }
  add_expert_tensors(s, m, a, t);
  const std::int64_t Is = cfg.shared_intermediate_size;
  if (Is > 0) {
    const std::string sh = m + (cfg.deepseek_routing ? "shared_experts." : "shared_expert.");
    a.shared_gate = t->add(sh + "gate_proj.weight", {Is, H}, s.scale);
    a.shared_up = t->add(sh + "up_proj.weight", {Is, H}, s.scale);
    a.shared_down = t->add(sh + "down_proj.weight", {H, Is}, s.scale);
    if (cfg.shared_expert_gated) a.shared_expert_gate = t->add(m + "shared_expert_gate.weight", {1, H}, s.scale * 4);
  }
  return a;
}

// Writes `tensors` into `num_shards` safetensors files of consecutive
// tensors, with an index that maps names to files when there are several.
void write_shards(const std::string& dir, const std::vector<Named>& tensors, int num_shards, formats::DType dtype) {
  const int n = num_shards;
  json weight_map = json::object();
  for (int k = 0; k < n; ++k) {
    const std::string file =
        n == 1 ? "model.safetensors" : "model-" + std::to_string(k + 1) + "-of-" + std::to_string(n) + ".safetensors";
    std::vector<formats::TensorToWrite> part;
    for (std::size_t i = k * tensors.size() / n; i < (k + 1) * tensors.size() / n; ++i) {
      part.push_back({tensors[i].name, tensors[i].shape, tensors[i].data.data(), dtype});
      weight_map[tensors[i].name] = file;
    }
    formats::write_safetensors((fs::path(dir) / file).string(), part, {{"format", "pt"}});
  }
  if (n > 1) {
    const std::string index = json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump(2);
    write_file_atomically((fs::path(dir) / "model.safetensors.index.json").string(), index.data(), index.size());
  }
}

}  // namespace

std::vector<MoeLayerArrays> write_random_moe_checkpoint(const RandomMoeSpec& s, const std::string& dir) {
  fs::create_directories(dir);
  const json cfg_json = config_json(s);
  const auto cfg = formats::parse_model_config(cfg_json.dump(), "random config");
  const std::int64_t H = s.hidden, I = s.inter;
  TensorDraw t(s.seed * 1000003u, s.dtype);
  t.add("model.embed_tokens.weight", {64, H}, s.scale);
  std::vector<MoeLayerArrays> out(static_cast<std::size_t>(s.layers));
  for (std::int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.add(p + "input_layernorm.weight", {H}, 1.0f);
    t.add(p + "self_attn.q_proj.weight", {H, H}, s.scale);
    if (cfg.is_moe_layer(l))
      out[l] = add_moe_layer(s, cfg, p, &t);
    else
      t.add(p + "mlp.gate_proj.weight", {I, H}, s.scale);
  }
  t.add("model.norm.weight", {H}, 1.0f);
  write_shards(dir, t.tensors, std::max(1, s.shards), s.dtype);
  const std::string text = cfg_json.dump(2);
  write_file_atomically((fs::path(dir) / "config.json").string(), text.data(), text.size());
  return out;
}

}  // namespace switchyard::formats
