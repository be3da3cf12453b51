#include "switchyard/train/train_config.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "switchyard/runtime/error.hpp"

namespace switchyard::train {
namespace {

using nlohmann::json;

// Typed access to one object of the config, naming "SOURCE: field 'path.key'"
// in every message; reject_unknown() catches misspelt keys, which would
// otherwise silently fall back to defaults.
class Section {
 public:
  Section(const json& j, std::string source, std::string path)
      : j_(j), source_(std::move(source)), path_(std::move(path)) {
    check_arg(j_.is_object(), where_self() + " expected a JSON object, got " + j_.dump());
  }

  std::string where(const std::string& key) const {
    return source_ + ": field '" + (path_.empty() ? key : path_ + "." + key) + "'";
  }
  bool has(const std::string& key) {
    known_.insert(key);
    return j_.contains(key) && !j_.at(key).is_null();
  }
  const json& at(const std::string& key) { return j_.at(key); }

  std::int64_t integer(const std::string& key, std::int64_t fallback, std::int64_t min) {
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    check_arg(v.is_number_integer(), where(key) + " expected an integer, got " + v.dump());
    const auto x = v.get<std::int64_t>();
    check_arg(x >= min, where(key) + " must be at least " + std::to_string(min) + ", got " + std::to_string(x));
    return x;
  }
  std::int64_t required_integer(const std::string& key, std::int64_t min) {
    check_arg(has(key), where(key) + " is required");
    return integer(key, 0, min);
  }
  double number(const std::string& key, double fallback, double lo, double hi, bool lo_open = false) {
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    check_arg(v.is_number(), where(key) + " expected a number, got " + v.dump());
    const double x = v.get<double>();
    const bool ok = (lo_open ? x > lo : x >= lo) && x <= hi;
    std::ostringstream range;
    range << (lo_open ? "(" : "[") << lo << ", " << hi << "]";
    check_arg(ok, where(key) + " must be in " + range.str() + ", got " + v.dump());
    return x;
  }
  bool boolean(const std::string& key, bool fallback) {
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    check_arg(v.is_boolean(), where(key) + " expected true or false, got " + v.dump());
    return v.get<bool>();
  }
  std::string string(const std::string& key, const std::string& fallback) {
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    check_arg(v.is_string(), where(key) + " expected a string, got " + v.dump());
    return v.get<std::string>();
  }
  Section section(const std::string& key) {
    static const json kEmpty = json::object();
    known_.insert(key);
    return Section(has(key) ? j_.at(key) : kEmpty, source_, path_.empty() ? key : path_ + "." + key);
  }
  void reject_unknown() const {
    for (auto it = j_.begin(); it != j_.end(); ++it)
      check_arg(known_.count(it.key()) > 0, where(it.key()) + " is not a known field");
  }

 private:
  std::string where_self() const {
    return source_ + (path_.empty() ? ": the configuration" : ": field '" + path_ + "'");
  }
  const json& j_;
  std::string source_, path_;
  std::set<std::string> known_;
};

// The architecture's names for the sizes and its own routing fields.
void add_architecture_fields(const std::string& arch, Section& m, std::int64_t ffn, std::int64_t experts, json* out) {
  json& j = *out;
  j["model_type"] = arch;
  if (arch == "mixtral" || arch == "granitemoe" || arch == "llama4_text") {
    j["intermediate_size"] = ffn;
    j["num_local_experts"] = experts;
  } else if (arch == "qwen2_moe" || arch == "qwen3_moe" || arch == "olmoe" || arch == "qwen3_5_moe_text") {
    j[arch == "olmoe" ? "intermediate_size" : "moe_intermediate_size"] = ffn;
    j["num_experts"] = experts;
    if (arch != "qwen3_5_moe_text") j["norm_topk_prob"] = m.boolean("norm_topk_prob", true);
    j["decoder_sparse_step"] = 1;
    if (arch == "qwen2_moe" || arch == "qwen3_5_moe_text")
      j["shared_expert_intermediate_size"] = m.integer("shared_ffn", ffn, 0);
  } else if (arch == "deepseek_v3" || arch == "glm4_moe") {
    j["moe_intermediate_size"] = ffn;
    j["n_routed_experts"] = experts;
    j["norm_topk_prob"] = m.boolean("norm_topk_prob", true);
    j["n_group"] = m.integer("n_group", 1, 1);
    j["topk_group"] = m.integer("topk_group", 1, 1);
    j["routed_scaling_factor"] = m.number("routed_scaling_factor", 1.0, 0.0, 1e6, true);
    j["n_shared_experts"] = m.integer("shared_experts", 1, 0);
    j["first_k_dense_replace"] = 0;
  } else {
    throw Error(ErrorCode::kInvalidArgument, m.where("arch") + " is '" + arch +
                                                 "'; expected one of mixtral, qwen2_moe, qwen3_moe, deepseek_v3, "
                                                 "olmoe, granitemoe, glm4_moe, qwen3_5_moe_text, llama4_text");
  }
}

// The Hugging Face-style config of the MoE blocks, so formats::parse_model_config sets
// every architecture's routing (score function, groups, shared experts).
json hf_model_json(Section& m, TrainConfig* c) {
  const std::string arch = m.string("arch", "mixtral");
  const std::int64_t hidden = m.required_integer("hidden", 1);
  const std::int64_t ffn = m.required_integer("ffn", 1);
  const std::int64_t experts = m.required_integer("experts", 1);
  const std::int64_t top_k = m.required_integer("top_k", 1);
  const std::int64_t layers = m.required_integer("layers", 1);
  check_arg(top_k <= experts, m.where("top_k") + " must be at most model.experts (" + std::to_string(experts) +
                                  "), got " + std::to_string(top_k));
  json j = {{"hidden_size", hidden},
            {"num_experts_per_tok", top_k},
            {"num_hidden_layers", layers},
            {"hidden_act", m.string("activation", "silu")}};
  add_architecture_fields(arch, m, ffn, experts, &j);
  c->context = m.integer("context", c->context, 1);
  c->embed_dim = m.integer("embed", c->embed_dim, 1);
  c->capacity_factor = m.number("capacity_factor", 0.0, 0.0, 1e6);
  c->dtype = m.string("dtype", "f32");
  check_arg(c->dtype == "f32" || c->dtype == "bf16",
            m.where("dtype") + " must be \"f32\" or \"bf16\", got \"" + c->dtype + "\"");
  c->router = m.string("router", "top-k");
  check_arg(c->router == "top-k" || c->router == "top-p" || c->router == "noisy-top-k",
            m.where("router") + " must be \"top-k\", \"top-p\" or \"noisy-top-k\", got \"" + c->router + "\"");
  const bool top_p = c->router == "top-p";
  check_arg(top_p || !m.has("top_p"), m.where("top_p") + " needs model.router \"top-p\"");
  check_arg(!top_p || m.has("top_p"), m.where("top_p") + " is required with model.router \"top-p\"");
  c->top_p = m.number("top_p", 0.0, 0.0, 1.0, true);
  m.reject_unknown();
  return j;
}

// "optimizer": its kind and hyperparameters (the schedule comes from
// "schedule" and "steps").
OptimizerConfig parse_optimizer(Section& opt) {
  const std::string type = opt.string("type", "adamw");
  check_arg(type == "adamw" || type == "sgd", opt.where("type") + " is '" + type + "'; expected adamw or sgd");
  OptimizerConfig o;
  o.kind = type == "adamw" ? OptimizerKind::kAdamW : OptimizerKind::kSgd;
  o.lr = opt.number("lr", 1e-3, 0.0, 1e3, true);
  if (opt.has("betas")) {
    const json& b = opt.at("betas");
    check_arg(b.is_array() && b.size() == 2 && b[0].is_number() && b[1].is_number(),
              opt.where("betas") + " expected [beta1, beta2], got " + b.dump());
    o.beta1 = b[0].get<double>();
    o.beta2 = b[1].get<double>();
    check_arg(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1,
              opt.where("betas") + " must be in [0, 1), got " + b.dump());
  }
  o.eps = opt.number("eps", 1e-8, 0.0, 1.0, true);
  o.weight_decay = opt.number("weight_decay", 0.0, 0.0, 1e3);
  o.momentum = opt.number("momentum", 0.9, 0.0, 1.0);
  check_arg(o.momentum < 1.0, opt.where("momentum") + " must be below 1");
  opt.reject_unknown();
  return o;
}

// "routing": checked here for range; whether it fits the nodes is checked
// where the model meets the job's topology (layers::apply_topology_routing).
layers::TopologyRouting parse_routing(Section& r) {
  layers::TopologyRouting out;
  out.max_nodes = r.integer("max_nodes", out.max_nodes, 0);
  out.node_score_experts = r.integer("node_score_experts", out.node_score_experts, 1);
  out.link_penalty = r.number("link_penalty", out.link_penalty, 0.0, 1e6);
  out.topology_loss = r.number("topology_loss", out.topology_loss, 0.0, 1e6);
  r.reject_unknown();
  return out;
}

}  // namespace

void check_router(const TrainConfig& c) {
  check_arg(c.top_p == 0.0 || c.model.score == layers::ScoreFunction::kSoftmax,
            c.source + ": model.router \"top-p\" needs softmax router probabilities; model.arch " +
                formats::architecture_name(c.model.arch) + " scores experts with a sigmoid");
  for (const auto& [key, value] :
       {std::pair{"importance_loss_coef", c.importance_loss_coef}, std::pair{"load_loss_coef", c.load_loss_coef}})
    check_arg(c.router == "noisy-top-k" || value == 0.0,
              c.source + ": field '" + key + "' needs model.router \"noisy-top-k\" (or --router noisy-top-k)");
  if (c.router != "noisy-top-k") return;
  check_arg(c.model.score == layers::ScoreFunction::kSoftmax && !c.model.has_selection_bias,
            c.source + ": model.router \"noisy-top-k\" needs a softmax router without a selection bias; model.arch " +
                formats::architecture_name(c.model.arch) +
                (c.model.has_selection_bias ? " has a selection bias" : " scores experts with a sigmoid"));
  check_arg(c.model.top_k < c.model.num_experts, c.source +
                                                     ": model.router \"noisy-top-k\" needs model.top_k below "
                                                     "model.experts (its load loss compares with the (k+1)-th)");
  check_arg(
      c.routing.max_nodes == 0 && c.routing.link_penalty == 0.0,
      c.source + ": model.router \"noisy-top-k\" does not combine with routing.max_nodes or routing.link_penalty");
}

TrainConfig parse_train_config(const std::string& json_text, const std::string& source) {
  const json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  check_arg(!root.is_discarded(), source + ": not valid JSON");
  TrainConfig c;
  c.source = source;
  Section top(root, source, "");

  Section data = top.section("data");
  c.data_dir = data.string("dir", c.data_dir);
  c.val_fraction = data.number("val_fraction", c.val_fraction, 0.0, 0.5, true);
  c.min_bytes = data.integer("min_bytes", c.min_bytes, 1);
  data.reject_unknown();

  check_arg(top.has("model"), source + ": field 'model' is required");
  Section model = top.section("model");
  const json hf = hf_model_json(model, &c);
  c.model = formats::parse_model_config(hf.dump(), source + " (model)");
  c.model_json = root.at("model").dump();

  Section opt = top.section("optimizer");
  OptimizerConfig& o = c.optimizer;
  o = parse_optimizer(opt);

  Section sched = top.section("schedule");
  o.warmup_steps = sched.integer("warmup_steps", 0, 0);
  o.min_lr = sched.number("min_lr", 0.1 * o.lr, 0.0, 1e3);
  check_arg(o.min_lr <= o.lr, sched.where("min_lr") + " must not exceed optimizer.lr");
  sched.reject_unknown();

  Section routing = top.section("routing");
  c.routing = parse_routing(routing);

  c.grad_clip = top.number("grad_clip", c.grad_clip, 0.0, 1e9);
  c.batch_tokens = top.integer("batch_tokens", c.batch_tokens, 1);
  c.steps = top.integer("steps", c.steps, 1);
  o.total_steps = c.steps;
  c.seed = static_cast<std::uint64_t>(top.integer("seed", 0, 0));
  c.log_interval = top.integer("log_interval", c.log_interval, 1);
  c.eval_interval = top.integer("eval_interval", c.eval_interval, 0);
  c.eval_tokens = top.integer("eval_tokens", c.eval_tokens, 1);
  c.final_eval_tokens = top.integer("final_eval_tokens", c.final_eval_tokens, 0);
  c.aux_loss_coef = top.number("aux_loss_coef", 0.0, 0.0, 1e3);
  c.z_loss_coef = top.number("z_loss_coef", 0.0, 0.0, 1e3);
  c.entropy_loss_coef = top.number("entropy_loss_coef", 0.0, 0.0, 1e3);
  c.importance_loss_coef = top.number("importance_loss_coef", 0.0, 0.0, 1e3);
  c.load_loss_coef = top.number("load_loss_coef", 0.0, 0.0, 1e3);
  c.bias_update_speed = top.number("bias_update_speed", 0.0, 0.0, 1e3);
  check_arg(c.bias_update_speed == 0.0 || c.model.has_selection_bias,
            top.where("bias_update_speed") +
                " needs a router with a selection bias (model.arch deepseek_v3 or glm4_moe), got " + "model.arch " +
                formats::architecture_name(c.model.arch));
  top.reject_unknown();
  c.text = root.dump(2);
  return c;
}

TrainConfig load_train_config(const std::string& path) {
  std::ifstream in(path);
  check_arg(in.good(), path + ": cannot open the training configuration");
  std::stringstream text;
  text << in.rdbuf();
  return parse_train_config(text.str(), path);
}

}  // namespace switchyard::train
