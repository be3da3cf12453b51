#include "layer_grads.hpp"

#include <map>

#include "switchyard/comm/gather.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::launch {
namespace {

std::vector<float> rows_of(const std::vector<float>& v, std::int64_t first_row, std::int64_t num_rows,
                           std::int64_t width) {
  return {v.begin() + first_row * width, v.begin() + (first_row + num_rows) * width};
}

}  // namespace

std::vector<NamedTensor> collect_layer_gradients(comm::Communicator& comm, layers::MoeLayer& layer,
                                                 const formats::MoeTensorNames& names) {
  const auto& c = layer.config();
  const std::int64_t H = c.hidden_size, I = c.expert_intermediate_size, E = c.num_experts;
  std::map<std::string, Parameter*> by_name;
  std::vector<float> local_experts;  // this rank's expert grads: per expert gate_up then down
  for (auto* p : layer.parameters()) {
    if (p->replicated) {
      comm.allreduce_sum(p->grad.data(), p->grad.size());
      by_name[p->name] = p;
    } else {
      local_experts.insert(local_experts.end(), p->grad.begin(), p->grad.end());
    }
  }
  const std::int64_t per_expert = 3 * I * H;
  // Experts sit in rank order (contiguous blocks), so rank order is expert order.
  const std::vector<float> experts = comm::gather_rows_to_root(comm, local_experts, 0);
  if (comm.rank() != 0) return {};
  check(static_cast<std::int64_t>(experts.size()) == E * per_expert, ErrorCode::kInternal,
        "expert gradients: gathered " + std::to_string(experts.size()) + " floats, expected " +
            std::to_string(E * per_expert));

  std::vector<NamedTensor> out;
  out.push_back({names.router, {E, H}, by_name.at("gate.weight")->grad});
  auto expert_part = [&](std::int64_t e, std::int64_t first_row, std::int64_t num_rows) {
    return rows_of(experts, e * 3 * I + first_row, num_rows, H);  // gate_up is [2I, H]; down [H, I] = I*H floats
  };
  if (names.layout == formats::ExpertLayout::kFused) {
    std::vector<float> gate_up, down;
    for (std::int64_t e = 0; e < E; ++e) {
      auto gu = expert_part(e, 0, 2 * I);
      gate_up.insert(gate_up.end(), gu.begin(), gu.end());
      const auto* d = experts.data() + e * per_expert + 2 * I * H;
      down.insert(down.end(), d, d + H * I);
    }
    out.push_back({names.fused_gate_up, {E, 2 * I, H}, std::move(gate_up)});
    out.push_back({names.fused_down, {E, H, I}, std::move(down)});
  } else {
    for (std::int64_t e = 0; e < E; ++e) {
      out.push_back({names.expert_gate(e), {I, H}, expert_part(e, 0, I)});
      out.push_back({names.expert_up(e), {I, H}, expert_part(e, I, I)});
      const auto* d = experts.data() + e * per_expert + 2 * I * H;
      out.push_back({names.expert_down(e), {H, I}, std::vector<float>(d, d + H * I)});
    }
  }
  if (by_name.count("shared.gate_up_proj")) {
    const std::int64_t Is = c.shared_intermediate_size;
    const auto& gu = by_name.at("shared.gate_up_proj")->grad;
    out.push_back({names.shared_gate_proj, {Is, H}, rows_of(gu, 0, Is, H)});
    out.push_back({names.shared_up_proj, {Is, H}, rows_of(gu, Is, Is, H)});
    out.push_back({names.shared_down_proj, {H, Is}, by_name.at("shared.down_proj")->grad});
  }
  if (by_name.count("shared_expert_gate.weight"))
    out.push_back({names.shared_expert_gate, {1, H}, by_name.at("shared_expert_gate.weight")->grad});
  return out;
}

}  // namespace switchyard::launch
