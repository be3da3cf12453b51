#include "switchyard/formats/model_config.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "switchyard/runtime/error.hpp"

namespace switchyard::formats {
namespace {

using nlohmann::json;

// Reads typed fields of one config object, naming the source and field in errors.
class Fields {
 public:
  Fields(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  std::int64_t integer(const char* key, std::int64_t fallback) const {
    if (absent(key)) return fallback;
    const json& v = j_.at(key);
    check_arg(v.is_number_integer(), where(key) + " expected an integer, got " + v.dump());
    return v.get<std::int64_t>();
  }
  // A field the transformers config class also accepts under another name
  // (its attribute_map), e.g. Qwen3MoeConfig saves num_experts as num_local_experts.
  std::int64_t integer_or_alias(const char* key, const char* alias, std::int64_t fallback) const {
    return absent(key) ? integer(alias, fallback) : integer(key, fallback);
  }
  double number(const char* key, double fallback) const {
    if (absent(key)) return fallback;
    const json& v = j_.at(key);
    check_arg(v.is_number(), where(key) + " expected a number, got " + v.dump());
    return v.get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    if (absent(key)) return fallback;
    const json& v = j_.at(key);
    check_arg(v.is_boolean(), where(key) + " expected true or false, got " + v.dump());
    return v.get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    if (absent(key)) return fallback;
    const json& v = j_.at(key);
    check_arg(v.is_string(), where(key) + " expected a string, got " + v.dump());
    return v.get<std::string>();
  }
  std::vector<std::int64_t> integers(const char* key) const {
    std::vector<std::int64_t> out;
    if (absent(key)) return out;
    const json& v = j_.at(key);
    check_arg(v.is_array(), where(key) + " expected a list of integers, got " + v.dump());
    for (auto& e : v) {
      check_arg(e.is_number_integer(), where(key) + " expected a list of integers, got " + v.dump());
      out.push_back(e.get<std::int64_t>());
    }
    return out;
  }
  void positive(const char* key, std::int64_t value) const {
    check_arg(value > 0, where(key) + " must be positive, got " + std::to_string(value));
  }
  std::string where(const char* key) const { return source_ + ": field '" + key + "'"; }
  bool present(const char* key) const { return !absent(key); }

 private:
  // NOTE: transformers treats an explicit null like an absent field.
  bool absent(const char* key) const { return !j_.contains(key) || j_.at(key).is_null(); }
  const json& j_;
  std::string source_;
};

}  // namespace

const char* architecture_name(Architecture arch) {
  switch (arch) {
    case Architecture::kMixtral: return "mixtral";
    case Architecture::kQwen2Moe: return "qwen2_moe";
    case Architecture::kQwen3Moe: return "qwen3_moe";
    case Architecture::kDeepseekV3: return "deepseek_v3";
    case Architecture::kOlmoe: return "olmoe";
    case Architecture::kGraniteMoe: return "granitemoe";
    case Architecture::kGlm4Moe: return "glm4_moe";
    case Architecture::kQwen3_5Moe: return "qwen3_5_moe_text";
    case Architecture::kLlama4: return "llama4_text";
  }
  return "unknown";
}

bool ModelConfig::is_moe_layer(std::int64_t layer) const {
  if (layer < 0 || layer >= num_layers) return false;
  switch (arch) {
    case Architecture::kMixtral:
    case Architecture::kOlmoe:
    case Architecture::kGraniteMoe:
    case Architecture::kQwen3_5Moe: return true;
    case Architecture::kQwen2Moe:
    case Architecture::kQwen3Moe:
      return std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) == mlp_only_layers.end() &&
             num_experts > 0 && (layer + 1) % decoder_sparse_step == 0;
    case Architecture::kDeepseekV3:
    case Architecture::kGlm4Moe: return layer >= first_k_dense_replace;
    case Architecture::kLlama4: return std::find(moe_layers.begin(), moe_layers.end(), layer) != moe_layers.end();
  }
  return false;
}

namespace {

// Defaults in the read_* functions are those of each architecture's
// transformers config class.
void read_mixtral(const Fields& f, ModelConfig* c) {
  c->arch = Architecture::kMixtral;
  c->hidden_size = f.integer("hidden_size", 4096);
  c->expert_intermediate_size = f.integer("intermediate_size", 14336);
  c->num_experts = f.integer_or_alias("num_local_experts", "num_experts", 8);
  c->top_k = f.integer("num_experts_per_tok", 2);
  c->num_layers = f.integer("num_hidden_layers", 32);
  c->norm_topk_prob = true;
}

void read_qwen_moe(const Fields& f, bool qwen2, ModelConfig* c) {
  c->arch = qwen2 ? Architecture::kQwen2Moe : Architecture::kQwen3Moe;
  c->hidden_size = f.integer("hidden_size", 2048);
  c->expert_intermediate_size = f.integer("moe_intermediate_size", qwen2 ? 1408 : 768);
  c->num_experts = qwen2 ? f.integer("num_experts", 60) : f.integer_or_alias("num_experts", "num_local_experts", 128);
  c->top_k = f.integer("num_experts_per_tok", qwen2 ? 4 : 8);
  c->num_layers = f.integer("num_hidden_layers", 24);
  c->norm_topk_prob = f.boolean("norm_topk_prob", false);
  c->decoder_sparse_step = f.integer("decoder_sparse_step", 1);
  f.positive("decoder_sparse_step", c->decoder_sparse_step);
  c->mlp_only_layers = f.integers("mlp_only_layers");
  if (qwen2) {
    c->shared_intermediate_size = f.integer("shared_expert_intermediate_size", 5632);
    c->shared_expert_gated = true;
  }
}

// DeepSeek-V3 and GLM-4.5 (Glm4MoeConfig): the same router and shared
// experts; `d` holds the config class's defaults.
struct DeepseekDefaults {
  std::int64_t hidden, inter, experts, layers, n_group, topk_group, first_dense;
  double scaling;
};

void read_deepseek_style(const Fields& f, const DeepseekDefaults& d, ModelConfig* c) {
  c->hidden_size = f.integer("hidden_size", d.hidden);
  c->expert_intermediate_size = f.integer("moe_intermediate_size", d.inter);
  c->num_experts = f.integer_or_alias("n_routed_experts", "num_local_experts", d.experts);
  c->top_k = f.integer("num_experts_per_tok", 8);
  c->num_layers = f.integer("num_hidden_layers", d.layers);
  c->norm_topk_prob = f.boolean("norm_topk_prob", true);
  c->score = ScoreFunction::kSigmoid;
  c->has_selection_bias = true;
  c->deepseek_routing = true;
  c->n_group = f.integer("n_group", d.n_group);
  c->topk_group = f.integer("topk_group", d.topk_group);
  c->routed_scaling_factor = f.number("routed_scaling_factor", d.scaling);
  c->first_k_dense_replace = f.integer("first_k_dense_replace", d.first_dense);
  c->shared_intermediate_size = c->expert_intermediate_size * f.integer("n_shared_experts", 1);
}

void read_olmoe(const Fields& f, ModelConfig* c) {
  c->arch = Architecture::kOlmoe;
  c->hidden_size = f.integer("hidden_size", 2048);
  c->expert_intermediate_size = f.integer("intermediate_size", 2048);
  c->num_experts = f.integer_or_alias("num_experts", "num_local_experts", 64);
  c->top_k = f.integer("num_experts_per_tok", 8);
  c->num_layers = f.integer("num_hidden_layers", 16);
  c->norm_topk_prob = f.boolean("norm_topk_prob", false);
}

// GraniteMoeTopKRouter takes the top-k logits and a softmax over them alone:
// the renormalised top-k of a softmax over all experts, the same function.
void read_granitemoe(const Fields& f, ModelConfig* c) {
  c->arch = Architecture::kGraniteMoe;
  c->hidden_size = f.integer("hidden_size", 4096);
  c->expert_intermediate_size = f.integer("intermediate_size", 11008);
  c->num_experts = f.integer("num_local_experts", 8);
  c->top_k = f.integer("num_experts_per_tok", 2);
  c->num_layers = f.integer("num_hidden_layers", 32);
  c->norm_topk_prob = true;
  c->select_on_logits = true;
}

// Qwen3_5MoeTopKRouter renormalises always; the config has no norm_topk_prob.
void read_qwen3_5_moe(const Fields& f, ModelConfig* c) {
  c->arch = Architecture::kQwen3_5Moe;
  c->hidden_size = f.integer("hidden_size", 2048);
  c->expert_intermediate_size = f.integer("moe_intermediate_size", 512);
  c->num_experts = f.integer("num_experts", 256);
  c->top_k = f.integer("num_experts_per_tok", 8);
  c->num_layers = f.integer("num_hidden_layers", 40);
  c->norm_topk_prob = true;
  c->shared_intermediate_size = f.integer("shared_expert_intermediate_size", 512);
  c->shared_expert_gated = true;
}

// The fields every architecture shares: the activation, and the sizes read by
// the architecture's reader.
void read_common_fields(const Fields& f, const std::string& source, ModelConfig* c) {
  c->hidden_act = f.string("hidden_act", "silu");
  check_arg(
      parse_activation(c->hidden_act, &c->activation),
      f.where("hidden_act") + " is '" + c->hidden_act + "'; expected silu, gelu, gelu_new, gelu_pytorch_tanh or relu");
  f.positive("hidden_size", c->hidden_size);
  f.positive("num_hidden_layers", c->num_layers);
  check_arg(c->num_experts > 0,
            source + ": the number of experts must be positive, got " + std::to_string(c->num_experts));
  check_arg(c->expert_intermediate_size > 0, source + ": the expert intermediate size must be positive");
  check_arg(c->top_k > 0 && c->top_k <= c->num_experts, f.where("num_experts_per_tok") + " must be in [1, " +
                                                            std::to_string(c->num_experts) + "], got " +
                                                            std::to_string(c->top_k));
  check_arg(c->shared_intermediate_size >= 0, source + ": the shared expert size must not be negative");
}

// NOTE: the routing rules (group-limited routing among them) are checked
// once, by RouterConfig::validate; its message names the router's fields,
// so the file and the config.json fields with their values go in front.
void check_routing_fields(const ModelConfig& c, const std::string& source) {
  try {
    router_config(c);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) throw;
    const std::string fields = c.deepseek_routing
                                   ? "n_routed_experts " + std::to_string(c.num_experts) + ", n_group " +
                                         std::to_string(c.n_group) + ", topk_group " + std::to_string(c.topk_group) +
                                         ", num_experts_per_tok " + std::to_string(c.top_k)
                                   : "num_experts_per_tok " + std::to_string(c.top_k);
    throw Error(e.code(), source + ": " + fields + ": " + e.what());
  }
}

// Llama4TextMoe: the top-k logits' sigmoids, not renormalised, scale the
// experts' input; one shared expert of the routed experts' width, ungated.
// The MoE layers are `moe_layers`, or every interleave_moe_layer_step-th.
void read_llama4(const Fields& f, ModelConfig* c) {
  c->arch = Architecture::kLlama4;
  c->hidden_size = f.integer("hidden_size", 5120);
  c->expert_intermediate_size = f.integer("intermediate_size", 8192);
  c->num_experts = f.integer("num_local_experts", 16);
  c->top_k = f.integer("num_experts_per_tok", 1);
  c->num_layers = f.integer("num_hidden_layers", 48);
  c->score = ScoreFunction::kSigmoid;
  c->norm_topk_prob = false;
  c->weight_scales_input = true;
  c->select_on_logits = true;
  c->shared_intermediate_size = c->expert_intermediate_size;
  c->moe_layers = f.integers("moe_layers");  // an empty list: no MoE layer
  if (!f.present("moe_layers")) {            // then (only) the step is read
    const std::int64_t step = f.integer("interleave_moe_layer_step", 1);
    f.positive("interleave_moe_layer_step", step);
    for (std::int64_t l = step - 1; l < c->num_layers; l += step) c->moe_layers.push_back(l);
  }
}

constexpr const char* kKnownTypes =
    "mixtral, qwen2_moe, qwen3_moe, deepseek_v3, olmoe, granitemoe, glm4_moe, qwen3_5_moe, qwen3_5_moe_text, llama4, "
    "llama4_text";

// Multimodal wrappers and the model_type of their text_config.
const char* text_model_type(const std::string& type) {
  if (type == "qwen3_5_moe") return "qwen3_5_moe_text";
  if (type == "llama4") return "llama4_text";
  return nullptr;
}

// Reads the decoder's MoE fields of one (text) config object by model_type.
// Returns false for an unknown type.
bool read_architecture(const std::string& type, const Fields& f, ModelConfig* c) {
  if (type == "mixtral") {
    read_mixtral(f, c);
  } else if (type == "qwen2_moe" || type == "qwen3_moe") {
    read_qwen_moe(f, type == "qwen2_moe", c);
  } else if (type == "deepseek_v3") {
    c->arch = Architecture::kDeepseekV3;
    read_deepseek_style(f, {7168, 2048, 256, 61, 8, 4, 3, 2.5}, c);
  } else if (type == "glm4_moe") {
    c->arch = Architecture::kGlm4Moe;
    read_deepseek_style(f, {4096, 1408, 128, 46, 1, 1, 1, 1.0}, c);
  } else if (type == "olmoe") {
    read_olmoe(f, c);
  } else if (type == "granitemoe") {
    read_granitemoe(f, c);
  } else if (type == "qwen3_5_moe_text") {
    read_qwen3_5_moe(f, c);
  } else if (type == "llama4_text") {
    read_llama4(f, c);
  } else {
    return false;
  }
  return true;
}

}  // namespace

ModelConfig parse_model_config(const std::string& json_text, const std::string& source) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  check_arg(!j.is_discarded(), source + ": not valid JSON");
  check_arg(j.is_object(), source + ": expected a JSON object");
  check_arg(j.contains("model_type"), source + ": missing field 'model_type' (expected one of " + kKnownTypes + ")");
  const std::string type = Fields(j, source).string("model_type", "");
  ModelConfig c;
  // A multimodal model keeps its language model's settings in text_config,
  // whose own model_type (when written) must be the text one; absent fields
  // take the text config class's defaults, as transformers does.
  const json empty = json::object();
  const json* text = &j;
  std::string text_type = type;
  std::string text_source = source;
  if (const char* want = text_model_type(type)) {
    const bool has = j.contains("text_config") && !j.at("text_config").is_null();
    text = has ? &j.at("text_config") : &empty;
    text_source = source + ": text_config";
    check_arg(text->is_object(), text_source + " expected a JSON object, got " + text->dump());
    text_type = Fields(*text, text_source).string("model_type", want);
    check_arg(text_type == want, text_source + ": field 'model_type' is '" + text_type + "'; expected " + want);
    c.from_text_config = true;
  }
  const Fields f(*text, text_source);
  check_arg(read_architecture(text_type, f, &c),
            source + ": field 'model_type' is '" + type + "'; expected one of " + kKnownTypes);
  read_common_fields(f, text_source, &c);
  check_routing_fields(c, text_source);
  return c;
}

ModelConfig load_model_config(const std::string& dir) {
  const auto path = (std::filesystem::path(dir) / "config.json").string();
  check_arg(std::filesystem::is_directory(dir), dir + ": model directory does not exist");
  std::ifstream in(path);
  check_arg(in.good(), path + ": missing config.json (expected a Hugging Face config in the model directory)");
  std::stringstream text;
  text << in.rdbuf();
  return parse_model_config(text.str(), path);
}

bool parse_activation(const std::string& name, kernels::Activation* out) {
  if (name == "silu" || name == "swish")
    *out = kernels::Activation::kSilu;
  else if (name == "gelu")
    *out = kernels::Activation::kGelu;
  else if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast")
    *out = kernels::Activation::kGeluTanh;
  else if (name == "relu")
    *out = kernels::Activation::kRelu;
  else
    return false;
  return true;
}

layers::RouterConfig router_config(const ModelConfig& c) {
  layers::RouterConfig r;
  r.score = c.score;
  r.num_experts = c.num_experts;
  r.top_k = c.top_k;
  r.renormalize = c.norm_topk_prob;
  r.select_on_logits = c.select_on_logits;
  if (c.deepseek_routing) {
    r.renormalize_epsilon = 1e-20f;
    r.n_group = c.n_group;
    r.topk_group = c.topk_group;
    r.scaling = static_cast<float>(c.routed_scaling_factor);
  }
  r.validate();
  return r;
}

layers::MoeConfig moe_config(const ModelConfig& c) {
  layers::MoeConfig m{.hidden_size = c.hidden_size,
                      .expert_intermediate_size = c.expert_intermediate_size,
                      .num_experts = c.num_experts,
                      .top_k = c.top_k,
                      .activation = c.activation,
                      .router = router_config(c),
                      .shared_intermediate_size = c.shared_intermediate_size,
                      .shared_expert_gated = c.shared_expert_gated,
                      .weight_scales_input = c.weight_scales_input};
  m.validate();
  return m;
}

}  // namespace switchyard::formats
