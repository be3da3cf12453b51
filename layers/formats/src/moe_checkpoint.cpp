#include "switchyard/formats/moe_checkpoint.hpp"

#include <algorithm>

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
  check_arg(config.is_moe_layer(layer), "layer " + std::to_string(layer) + " is not an MoE layer of this " +
                                            architecture_name(config.arch) +
                                            " model (see first_k_dense_replace / mlp_only_layers / "
                                            "decoder_sparse_step in config.json)");
}

MoeTensorNames moe_tensor_names(const Checkpoint& ckpt, const ModelConfig& config, std::int64_t layer) {
  MoeTensorNames n;
  const std::string layer_prefix = "model.layers." + std::to_string(layer) + ".";
  n.prefix = layer_prefix + "mlp.";
  const bool mixtral = config.arch == Architecture::kMixtral;
  if (ckpt.contains(n.prefix + "experts.gate_up_proj")) {
    n.layout = ExpertLayout::kFused;
  } else if (mixtral && !ckpt.contains(n.prefix + "gate.weight")) {
    n.prefix = layer_prefix + "block_sparse_moe.";
  }
  n.fused_gate_up = n.prefix + "experts.gate_up_proj";
  n.fused_down = n.prefix + "experts.down_proj";
  n.router = n.prefix + "gate.weight";
  if (mixtral) {
    n.gate_name = "w1", n.up_name = "w3", n.down_name = "w2";
  } else {
    n.gate_name = "gate_proj", n.up_name = "up_proj", n.down_name = "down_proj";
  }
  if (config.has_selection_bias) n.selection_bias = n.prefix + "gate.e_score_correction_bias";
  if (config.shared_intermediate_size > 0) {
    const std::string shared =
        n.prefix + (config.arch == Architecture::kDeepseekV3 ? "shared_experts." : "shared_expert.");
    n.shared_gate_proj = shared + "gate_proj.weight";
    n.shared_up_proj = shared + "up_proj.weight";
    n.shared_down_proj = shared + "down_proj.weight";
    if (config.shared_expert_gated) n.shared_expert_gate = n.prefix + "shared_expert_gate.weight";
  }
  return n;
}

namespace {

MlpWeights read_mlp(Checkpoint& ckpt, const std::string& gate, const std::string& up, const std::string& down,
                    std::int64_t H, std::int64_t I) {
  MlpWeights w{.hidden = H, .inter = I, .gate_up = ckpt.read_f32(gate, {I, H}), .down = ckpt.read_f32(down, {H, I})};
  auto u = ckpt.read_f32(up, {I, H});
  w.gate_up.insert(w.gate_up.end(), u.begin(), u.end());
  return w;
}

}  // namespace

MoeWeights load_moe_weights(Checkpoint& ckpt, const ModelConfig& config, std::int64_t layer, std::int64_t first,
                            std::int64_t count) {
  check_moe_layer(config, layer);
  const std::int64_t H = config.hidden_size, I = config.expert_intermediate_size, E = config.num_experts;
  const MoeTensorNames n = moe_tensor_names(ckpt, config, layer);
  MoeWeights w;
  w.router = ckpt.read_f32(n.router, {E, H});
  if (!n.selection_bias.empty()) w.selection_bias = ckpt.read_f32(n.selection_bias, {E});
  w.first_expert = first;
  if (n.layout == ExpertLayout::kFused) {
    // NOTE: only this rank's slices of the fused tensors are converted, so the
    // other experts' pages are never touched.
    auto gate_up = ckpt.read_f32_slices(n.fused_gate_up, {E, 2 * I, H}, first, count);
    auto down = ckpt.read_f32_slices(n.fused_down, {E, H, I}, first, count);
    for (std::int64_t e = 0; e < count; ++e) {
      MlpWeights m;
      m.hidden = H;
      m.inter = I;
      m.gate_up.assign(gate_up.begin() + e * 2 * I * H, gate_up.begin() + (e + 1) * 2 * I * H);
      m.down.assign(down.begin() + e * H * I, down.begin() + (e + 1) * H * I);
      w.experts.push_back(std::move(m));
    }
  } else {
    for (std::int64_t e = first; e < first + count; ++e)
      w.experts.push_back(read_mlp(ckpt, n.expert_gate(e), n.expert_up(e), n.expert_down(e), H, I));
  }
  if (config.shared_intermediate_size > 0) {
    w.shared =
        read_mlp(ckpt, n.shared_gate_proj, n.shared_up_proj, n.shared_down_proj, H, config.shared_intermediate_size);
    if (!n.shared_expert_gate.empty()) w.shared_gate = ckpt.read_f32(n.shared_expert_gate, {1, H});
  }
  return w;
}

}  // namespace switchyard::formats
