#include "switchyard/formats/moe_checkpoint.hpp"

#include <algorithm>
#include <map>
#include <set>

#include "switchyard/runtime/error.hpp"

namespace switchyard::formats {

std::string MoeTensorNames::expert_gate(std::int64_t e) const {
  return prefix + "experts." + std::to_string(e) + "." + gate_name + ".weight";
}
std::string MoeTensorNames::expert_up(std::int64_t e) const {
  return prefix + "experts." + std::to_string(e) + "." + up_name + ".weight";
}
std::string MoeTensorNames::expert_down(std::int64_t e) const {
  return prefix + "experts." + std::to_string(e) + "." + down_name + ".weight";
}

void check_moe_layer(const ModelConfig& config, std::int64_t layer) {
  check_arg(layer >= 0 && layer < config.num_layers,
            "layer " + std::to_string(layer) + " is out of range: the model has " + std::to_string(config.num_layers) +
                " layers (num_hidden_layers)");
  std::string fields;  // the config.json fields that say which layers are MoE
  switch (config.arch) {
    case Architecture::kQwen2Moe:
    case Architecture::kQwen3Moe: fields = "mlp_only_layers / decoder_sparse_step"; break;
    case Architecture::kDeepseekV3:
    case Architecture::kGlm4Moe: fields = "first_k_dense_replace"; break;
    case Architecture::kLlama4: fields = "moe_layers / interleave_moe_layer_step"; break;
    default: fields = "num_hidden_layers";
  }
  check_arg(config.is_moe_layer(layer),
            "layer " + std::to_string(layer) + " is not an MoE layer of this " + architecture_name(config.arch) +
                " model (see " + fields +
                (config.from_text_config ? " in config.json's text_config)" : " in config.json)"));
}

namespace {

// Granite MoE keeps its experts fused: input_linear [E, 2I, H] (gate rows
// first) and output_linear [E, H, I] on disk; transformers 5.x renames them
// in memory to experts.gate_up_proj / experts.down_proj and the router from
// router.layer.weight to router.weight.
void granite_names(const Checkpoint& ckpt, MoeTensorNames* n) {
  n->layout = ExpertLayout::kFused;
  if (ckpt.contains(n->prefix + "experts.gate_up_proj")) {
    n->router = n->prefix + "router.weight";
  } else {
    n->fused_gate_up = n->prefix + "input_linear.weight";
    n->fused_down = n->prefix + "output_linear.weight";
    n->router = n->prefix + "router.layer.weight";
  }
}

// Llama4TextMoe under feed_forward.: router.weight, fused transposed experts,
// an ungated shared_expert.
void llama4_names(MoeTensorNames* n) {
  n->layout = ExpertLayout::kFused;
  n->transposed_experts = true;
  n->router = n->prefix + "router.weight";
}

// The names under one decoder-layer prefix ("model.layers.3."), before the
// sizes are filled in.
MoeTensorNames names_under(const Checkpoint& ckpt, const ModelConfig& config, const std::string& layer_prefix) {
  MoeTensorNames n;
  const Architecture arch = config.arch;
  const bool mixtral = arch == Architecture::kMixtral;
  const bool granite = arch == Architecture::kGraniteMoe;
  const bool llama4 = arch == Architecture::kLlama4;
  n.prefix = layer_prefix + (granite ? "block_sparse_moe." : llama4 ? "feed_forward." : "mlp.");
  if (ckpt.contains(n.prefix + "experts.gate_up_proj")) {
    n.layout = ExpertLayout::kFused;
  } else if (mixtral && !ckpt.contains(n.prefix + "gate.weight")) {
    n.prefix = layer_prefix + "block_sparse_moe.";
  }
  n.fused_gate_up = n.prefix + "experts.gate_up_proj";
  n.fused_down = n.prefix + "experts.down_proj";
  n.router = n.prefix + "gate.weight";
  if (granite) granite_names(ckpt, &n);
  if (llama4) llama4_names(&n);
  if (mixtral) {
    n.gate_name = "w1", n.up_name = "w3", n.down_name = "w2";
  } else {
    n.gate_name = "gate_proj", n.up_name = "up_proj", n.down_name = "down_proj";
  }
  if (config.has_selection_bias) n.selection_bias = n.prefix + "gate.e_score_correction_bias";
  if (config.shared_intermediate_size > 0) {
    const std::string shared = n.prefix + (config.deepseek_routing ? "shared_experts." : "shared_expert.");
    n.shared_gate_proj = shared + "gate_proj.weight";
    n.shared_up_proj = shared + "up_proj.weight";
    n.shared_down_proj = shared + "down_proj.weight";
    if (config.shared_expert_gated) n.shared_expert_gate = n.prefix + "shared_expert_gate.weight";
  }
  return n;
}

}  // namespace

MoeTensorNames moe_tensor_names(const Checkpoint& ckpt, const ModelConfig& config, std::int64_t layer) {
  // A text model names its decoder "model."; a multimodal one's language
  // model sits under "model.language_model." (transformers 5.x) or
  // "language_model.model." (earlier releases). The first prefix whose
  // router the checkpoint holds is the one; with none, the text model's
  // names (so a missing tensor is reported under them).
  const std::string layers = "layers." + std::to_string(layer) + ".";
  const std::vector<std::string> prefixes =
      config.from_text_config ? std::vector<std::string>{"model.language_model.", "language_model.model.", "model."}
                              : std::vector<std::string>{"model.", "model.language_model.", "language_model.model."};
  MoeTensorNames n = names_under(ckpt, config, prefixes.front() + layers);
  for (std::size_t i = 1; i < prefixes.size() && !ckpt.contains(n.router); ++i) {
    MoeTensorNames candidate = names_under(ckpt, config, prefixes[i] + layers);
    if (ckpt.contains(candidate.router)) n = std::move(candidate);
  }
  n.hidden_size = config.hidden_size;
  n.expert_intermediate_size = config.expert_intermediate_size;
  n.num_experts = config.num_experts;
  n.shared_intermediate_size = config.shared_intermediate_size;
  return n;
}

std::vector<std::int64_t> operator_shape(const MoeTensorNames& n, MoeParam param) {
  const std::int64_t H = n.hidden_size, I = n.expert_intermediate_size, Is = n.shared_intermediate_size;
  switch (param) {
    case MoeParam::kRouter: return {n.num_experts, H};
    case MoeParam::kSelectionBias: return {n.num_experts};
    case MoeParam::kSharedGateUp: return {2 * Is, H};
    case MoeParam::kSharedDown: return {H, Is};
    case MoeParam::kSharedGate: return {1, H};
    case MoeParam::kExpertGateUp: return {2 * I, H};
    case MoeParam::kExpertDown: return {H, I};
  }
  throw Error(ErrorCode::kInternal, "operator_shape: unknown MoeParam");
}

std::string layer_parameter_name(MoeParam param, std::int64_t expert) {
  // NOTE: these spell MoeLayer's own names (moe_layer.cpp, GatedMlp); the
  // layer exports no constants for them.
  switch (param) {
    case MoeParam::kRouter: return "gate.weight";
    case MoeParam::kSelectionBias: return "";
    case MoeParam::kSharedGateUp: return "shared.gate_up_proj";
    case MoeParam::kSharedDown: return "shared.down_proj";
    case MoeParam::kSharedGate: return "shared_expert_gate.weight";
    case MoeParam::kExpertGateUp: return "experts." + std::to_string(expert) + ".gate_up_proj";
    case MoeParam::kExpertDown: return "experts." + std::to_string(expert) + ".down_proj";
  }
  throw Error(ErrorCode::kInternal, "layer_parameter_name: unknown MoeParam");
}

std::vector<MoeTensor> moe_tensors(const MoeTensorNames& n) {
  const std::int64_t H = n.hidden_size, I = n.expert_intermediate_size, E = n.num_experts;
  const std::int64_t Is = n.shared_intermediate_size;
  std::vector<MoeTensor> t;
  t.push_back({.name = n.router, .shape = {E, H}, .param = MoeParam::kRouter, .num_rows = E});
  if (!n.selection_bias.empty())
    t.push_back({.name = n.selection_bias, .shape = {E}, .param = MoeParam::kSelectionBias, .num_rows = 1});
  if (n.transposed_experts) {
    t.push_back({.name = n.fused_gate_up,
                 .shape = {E, H, 2 * I},
                 .param = MoeParam::kExpertGateUp,
                 .num_experts = E,
                 .num_rows = 2 * I,
                 .transposed = true});
    t.push_back({.name = n.fused_down,
                 .shape = {E, I, H},
                 .param = MoeParam::kExpertDown,
                 .num_experts = E,
                 .num_rows = H,
                 .transposed = true});
  } else if (n.layout == ExpertLayout::kFused) {
    t.push_back({.name = n.fused_gate_up,
                 .shape = {E, 2 * I, H},
                 .param = MoeParam::kExpertGateUp,
                 .num_experts = E,
                 .num_rows = 2 * I});
    t.push_back(
        {.name = n.fused_down, .shape = {E, H, I}, .param = MoeParam::kExpertDown, .num_experts = E, .num_rows = H});
  } else {
    for (std::int64_t e = 0; e < E; ++e) {
      t.push_back(
          {.name = n.expert_gate(e), .shape = {I, H}, .param = MoeParam::kExpertGateUp, .expert = e, .num_rows = I});
      t.push_back({.name = n.expert_up(e),
                   .shape = {I, H},
                   .param = MoeParam::kExpertGateUp,
                   .expert = e,
                   .first_row = I,
                   .num_rows = I});
      t.push_back(
          {.name = n.expert_down(e), .shape = {H, I}, .param = MoeParam::kExpertDown, .expert = e, .num_rows = H});
    }
  }
  if (Is > 0) {
    t.push_back({.name = n.shared_gate_proj, .shape = {Is, H}, .param = MoeParam::kSharedGateUp, .num_rows = Is});
    t.push_back({.name = n.shared_up_proj,
                 .shape = {Is, H},
                 .param = MoeParam::kSharedGateUp,
                 .first_row = Is,
                 .num_rows = Is});
    t.push_back({.name = n.shared_down_proj, .shape = {H, Is}, .param = MoeParam::kSharedDown, .num_rows = H});
    if (!n.shared_expert_gate.empty())
      t.push_back({.name = n.shared_expert_gate, .shape = {1, H}, .param = MoeParam::kSharedGate, .num_rows = 1});
  }
  return t;
}

namespace {

bool is_expert(MoeParam p) { return p == MoeParam::kExpertGateUp || p == MoeParam::kExpertDown; }

// Floats in one expert's share of `t`, and where they start in the operator tensor.
std::int64_t slice_floats(const MoeTensor& t) {
  return t.transposed ? t.shape[1] * t.shape[2] : t.num_rows * t.shape.back();
}
std::int64_t slice_offset(const MoeTensor& t) { return t.first_row * t.shape.back(); }

// One expert's (or the block's) slice of `t` from the file's order `src`
// into the operator tensor `op`, and back (appended to `out`).
void store_slice(const MoeTensor& t, const float* src, float* op) {
  if (!t.transposed) {
    std::copy(src, src + slice_floats(t), op + slice_offset(t));
    return;
  }
  const std::int64_t rows = t.shape[1], cols = t.shape[2];  // the file's; the operator's are [cols, rows]
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) op[c * rows + r] = src[r * cols + c];
}
void append_slice(const MoeTensor& t, const float* op, std::vector<float>* out) {
  if (!t.transposed) {
    out->insert(out->end(), op + slice_offset(t), op + slice_offset(t) + slice_floats(t));
    return;
  }
  const std::int64_t rows = t.shape[1], cols = t.shape[2];
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) out->push_back(op[c * rows + r]);
}

// The MoeWeights field that holds `param` (of local expert `local`).
std::vector<float>& field(MoeWeights& w, MoeParam param, std::int64_t local) {
  switch (param) {
    case MoeParam::kRouter: return w.router;
    case MoeParam::kSelectionBias: return w.selection_bias;
    case MoeParam::kSharedGateUp: return w.shared.gate_up;
    case MoeParam::kSharedDown: return w.shared.down;
    case MoeParam::kSharedGate: return w.shared_gate;
    case MoeParam::kExpertGateUp: return w.experts[static_cast<std::size_t>(local)].gate_up;
    case MoeParam::kExpertDown: return w.experts[static_cast<std::size_t>(local)].down;
  }
  throw Error(ErrorCode::kInternal, "MoeWeights field: unknown MoeParam");
}

enum class Part { kValue, kGrad };

std::vector<NamedTensor> name_layer_tensors(const MoeTensorNames& names, const std::vector<const Parameter*>& params,
                                            Part part) {
  std::map<std::string, const Parameter*> by_name;
  for (const Parameter* p : params)
    check(by_name.emplace(p->name, p).second, ErrorCode::kInvalidArgument,
          "layer parameter " + p->name + " is given twice");
  std::set<std::string> used;
  std::vector<NamedTensor> out;
  for (const MoeTensor& t : moe_tensors(names)) {
    if (t.param == MoeParam::kSelectionBias) continue;  // not trained by gradient
    NamedTensor nt{t.name, t.shape, {}};
    nt.data.reserve(static_cast<std::size_t>(numel_of(t.shape)));
    const std::vector<std::int64_t> want = operator_shape(names, t.param);
    for (std::int64_t e = t.expert; e < t.expert + t.num_experts; ++e) {
      const std::string pname = layer_parameter_name(t.param, e);
      const auto it = by_name.find(pname);
      check_arg(it != by_name.end(), "layer parameter " + pname + " (for checkpoint tensor " + t.name + ") is missing");
      const Parameter& p = *it->second;
      const std::vector<float>& src = part == Part::kGrad ? p.grad : p.value;
      check_arg(p.shape == want && static_cast<std::int64_t>(src.size()) == numel_of(want),
                "layer parameter " + pname + " has shape " + shape_string(p.shape) + " and " +
                    std::to_string(src.size()) + " values; checkpoint tensor " + t.name + " needs " +
                    shape_string(want));
      append_slice(t, src.data(), &nt.data);
      used.insert(pname);
    }
    out.push_back(std::move(nt));
  }
  for (const auto& [pname, p] : by_name)
    check_arg(used.count(pname) != 0, "layer parameter " + pname + " has no tensor in the checkpoint layout");
  return out;
}

}  // namespace

MoeWeights load_moe_weights(Checkpoint& ckpt, const ModelConfig& config, std::int64_t layer,
                            const std::vector<std::int64_t>& experts) {
  check_arg(!experts.empty() && std::is_sorted(experts.begin(), experts.end()),
            "load_moe_weights: expected a non-empty ascending list of experts");
  MoeWeights out;
  // One read per run of consecutive experts.
  for (std::size_t i = 0; i < experts.size();) {
    std::size_t j = i + 1;
    while (j < experts.size() && experts[j] == experts[j - 1] + 1) ++j;
    MoeWeights part = load_moe_weights(ckpt, config, layer, experts[i], static_cast<std::int64_t>(j - i));
    if (i == 0) {
      out = std::move(part);
    } else {
      for (auto& e : part.experts) out.experts.push_back(std::move(e));
    }
    i = j;
  }
  out.first_expert = experts.front();
  out.expert_ids = experts;
  return out;
}

MoeWeights load_moe_weights(Checkpoint& ckpt, const ModelConfig& config, std::int64_t layer, std::int64_t first,
                            std::int64_t count) {
  check_moe_layer(config, layer);
  const MoeTensorNames n = moe_tensor_names(ckpt, config, layer);
  MoeWeights w;
  w.first_expert = first;
  const auto sized = [&](MoeParam p) {
    return std::vector<float>(static_cast<std::size_t>(numel_of(operator_shape(n, p))));
  };
  for (std::int64_t e = 0; e < count; ++e)
    w.experts.push_back({.hidden = n.hidden_size,
                         .inter = n.expert_intermediate_size,
                         .gate_up = sized(MoeParam::kExpertGateUp),
                         .down = sized(MoeParam::kExpertDown)});
  for (const MoeTensor& t : moe_tensors(n)) {
    // Experts of this tensor that this rank holds: [lo, hi).
    std::int64_t lo = t.expert, hi = t.expert + t.num_experts;
    if (is_expert(t.param)) {
      lo = std::max(lo, first);
      hi = std::min(hi, first + count);
      if (lo >= hi) continue;
    } else {
      std::vector<float>& f = field(w, t.param, 0);
      if (f.empty()) f = sized(t.param);
    }
    // NOTE: of a fused tensor only this rank's slices are converted, so the
    // other experts' pages are never touched.
    const std::vector<float> data = t.num_experts > 1 ? ckpt.read_f32_slices(t.name, t.shape, lo - t.expert, hi - lo)
                                                      : ckpt.read_f32(t.name, t.shape);
    for (std::int64_t e = lo; e < hi; ++e) {
      store_slice(t, data.data() + (e - lo) * slice_floats(t), field(w, t.param, e - first).data());
    }
  }
  if (n.shared_intermediate_size > 0) w.shared.hidden = n.hidden_size, w.shared.inter = n.shared_intermediate_size;
  return w;
}

std::vector<NamedTensor> name_layer_gradients(const MoeTensorNames& names,
                                              const std::vector<const Parameter*>& params) {
  return name_layer_tensors(names, params, Part::kGrad);
}

std::vector<NamedTensor> name_layer_values(const MoeTensorNames& names, const std::vector<const Parameter*>& params) {
  return name_layer_tensors(names, params, Part::kValue);
}

}  // namespace switchyard::formats
