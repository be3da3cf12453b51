#include <cstdio>
#include <map>
#include <string>

#include "cli_runner.hpp"
#include "commands.hpp"
#include "switchyard/formats/checkpoint.hpp"
#include "switchyard/formats/moe_checkpoint.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::launch {

void add_inspect_options(CLI::App& sub, InspectOptions* o) {
  sub.add_option("--model", o->model_dir, "Checkpoint directory (config.json + safetensors)")->required();
}

namespace {

std::string describe(const formats::TensorView& t) { return formats::shape_string(t.shape) + " " + t.dtype_name; }

// "softmax scores, top-2 of 8 experts, renormalised, ...".
std::string routing_description(const formats::ModelConfig& c) {
  std::string out = std::string(c.score == layers::ScoreFunction::kSoftmax ? "softmax" : "sigmoid") + " scores, top-" +
                    std::to_string(c.top_k) + " of " + std::to_string(c.num_experts) + " experts";
  if (c.norm_topk_prob) out += ", renormalised";
  if (c.n_group > 1) out += ", " + std::to_string(c.topk_group) + " of " + std::to_string(c.n_group) + " groups";
  if (c.routed_scaling_factor != 1.0) out += ", scaling " + std::to_string(c.routed_scaling_factor);
  if (c.weight_scales_input) out += ", the weight scales the expert's input";
  return out;
}

void print_layer(formats::Checkpoint& ckpt, const formats::ModelConfig& c, std::int64_t layer) {
  const auto n = formats::moe_tensor_names(ckpt, c, layer);
  const bool fused = n.layout == formats::ExpertLayout::kFused;
  std::printf("layer %lld: MoE, %lld experts, top-%lld, %s layout\n", static_cast<long long>(layer),
              static_cast<long long>(c.num_experts), static_cast<long long>(c.top_k), fused ? "fused" : "per-expert");
  std::printf("  router %-60s %s\n", n.router.c_str(), describe(ckpt.tensor(n.router)).c_str());
  if (!n.selection_bias.empty())
    std::printf("  bias   %-60s %s\n", n.selection_bias.c_str(), describe(ckpt.tensor(n.selection_bias)).c_str());
  std::size_t expert_bytes = 0;
  if (fused) {
    for (const auto* name : {&n.fused_gate_up, &n.fused_down}) {
      const auto& t = ckpt.tensor(*name);
      std::printf("  expert %-60s %s\n", name->c_str(), describe(t).c_str());
      expert_bytes += t.nbytes / static_cast<std::size_t>(c.num_experts);
    }
  } else {
    for (const auto& name : {n.expert_gate(0), n.expert_up(0), n.expert_down(0)}) {
      const auto& t = ckpt.tensor(name);
      std::printf("  expert %-60s %s\n", name.c_str(), describe(t).c_str());
      expert_bytes += t.nbytes;
    }
  }
  std::printf("  bytes per expert: %zu (%.2f MiB), all experts: %.2f MiB\n", expert_bytes,
              static_cast<double>(expert_bytes) / (1 << 20),
              static_cast<double>(expert_bytes) * static_cast<double>(c.num_experts) / (1 << 20));
  for (const auto* name : {&n.shared_gate_proj, &n.shared_up_proj, &n.shared_down_proj, &n.shared_expert_gate})
    if (!name->empty()) std::printf("  shared %-60s %s\n", name->c_str(), describe(ckpt.tensor(*name)).c_str());
}

}  // namespace

void run_inspect(const InspectOptions& o, comm::Communicator& comm) {
  collective_step(comm, [&] {
    if (comm.rank() != 0) return;
    const auto c = formats::load_model_config(o.model_dir);
    formats::Checkpoint ckpt(o.model_dir);
    std::printf(
        "model: %s\narchitecture: %s\nlayers: %lld, hidden_size %lld, expert intermediate size %lld, "
        "hidden_act %s\n",
        o.model_dir.c_str(), formats::architecture_name(c.arch), static_cast<long long>(c.num_layers),
        static_cast<long long>(c.hidden_size), static_cast<long long>(c.expert_intermediate_size),
        c.hidden_act.c_str());
    std::printf("routing: %s\n", routing_description(c).c_str());
    if (c.shared_intermediate_size > 0)
      std::printf("shared expert: intermediate size %lld%s\n", static_cast<long long>(c.shared_intermediate_size),
                  c.shared_expert_gated ? ", sigmoid-gated" : "");
    std::string moe_layers;
    for (std::int64_t l = 0; l < c.num_layers; ++l)
      if (c.is_moe_layer(l)) moe_layers += (moe_layers.empty() ? "" : " ") + std::to_string(l);
    std::printf("MoE layers: %s\n", moe_layers.empty() ? "(none)" : moe_layers.c_str());
    for (std::int64_t l = 0; l < c.num_layers; ++l) {
      if (!c.is_moe_layer(l)) continue;
      const auto n = formats::moe_tensor_names(ckpt, c, l);
      if (!ckpt.contains(n.router)) {
        std::printf("layer %lld: MoE (tensors not in this checkpoint)\n", static_cast<long long>(l));
        continue;
      }
      print_layer(ckpt, c, l);
    }
  });
}

}  // namespace switchyard::launch
