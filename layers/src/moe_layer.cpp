#include "switchyard/layers/moe_layer.hpp"

#include <cmath>

#include "switchyard/kernels/permute.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {

MoeLayer::MoeLayer(const ModelConfig& config, MoeWeights weights, const ExpertPlacement& placement, int rank,
                   MoeLayerOptions options)
    : config_(config), router_(router_config(config)), placement_(placement), options_(options) {
  check(static_cast<std::int64_t>(weights.experts.size()) == placement.num_local(rank) &&
            weights.first_expert == placement.first_expert(rank),
        ErrorCode::kInternal, "MoE weights do not match the expert placement");
  selection_bias_ = std::move(weights.selection_bias);
  router_weights_ = std::move(weights.router);
  router_linear_ = std::make_unique<kernels::Linear>(router_weights_.data(), config.num_experts, config.hidden_size);
  experts_ = make_expert_backend(options.device, std::move(weights.experts), config.activation);
  if (weights.shared.inter > 0) shared_ = std::make_unique<GatedMlp>(std::move(weights.shared), config.activation);
  shared_gate_ = std::move(weights.shared_gate);
}

void MoeLayer::forward(comm::Communicator& comm, const float* x, std::int64_t num_tokens, float* y, ForwardStats* stats,
                       PhaseTimer* timer) {
  PhaseTimer local_timer;
  PhaseTimer& t = timer ? *timer : local_timer;
  t.restart();
  const std::int64_t H = config_.hidden_size, E = config_.num_experts, K = config_.top_k;

  // 1. Route.
  std::vector<float> logits(static_cast<std::size_t>(num_tokens * E));
  router_linear_->run(x, num_tokens, logits.data());
  RoutingPlan routing;
  route(router_, logits.data(), selection_bias_.empty() ? nullptr : selection_bias_.data(), num_tokens, &routing);
  t.mark("route");

  // 2. Plan.
  DispatchPlan plan = plan_dispatch(routing, placement_, options_.capacity, comm);
  t.mark("plan");

  // 3. Permute token rows into send order, then dispatch.
  std::vector<float> send(static_cast<std::size_t>(plan.num_send() * H));
  kernels::gather_rows(x, plan.send_token.data(), plan.num_send(), H, send.data());
  t.mark("permute");
  std::vector<float> recv(static_cast<std::size_t>(plan.num_recv() * H));
  comm.alltoallv(send.data(), plan.send_counts.data(), plan.send_offsets.data(), recv.data(), plan.recv_counts.data(),
                 plan.recv_offsets.data(), H * sizeof(float));
  t.mark("dispatch");

  // 4. Experts on rows grouped by local expert.
  std::vector<float> grouped(recv.size()), grouped_out(recv.size()), scratch;
  kernels::scatter_rows(recv.data(), plan.recv_to_grouped.data(), plan.num_recv(), H, grouped.data());
  experts_->run(grouped.data(), plan.local_expert_counts.data(), grouped_out.data());
  kernels::gather_rows(grouped_out.data(), plan.recv_to_grouped.data(), plan.num_recv(), H, recv.data());
  t.mark("experts");

  // 5. Combine: the reverse exchange, back into send order.
  comm.alltoallv(recv.data(), plan.recv_counts.data(), plan.recv_offsets.data(), send.data(), plan.send_counts.data(),
                 plan.send_offsets.data(), H * sizeof(float));
  t.mark("combine");

  // 6. Unpermute with routing weights, plus shared experts.
  std::fill(y, y + num_tokens * H, 0.0f);
  kernels::unpermute_weighted_sum(send.data(), plan.slot_row.data(), routing.weights.data(), num_tokens, K, H, y);
  if (shared_) {
    std::vector<float> shared_out(static_cast<std::size_t>(num_tokens * H));
    shared_->run(x, num_tokens, shared_out.data(), &scratch);
    for (std::int64_t i = 0; i < num_tokens; ++i) {
      float scale = 1.0f;
      if (!shared_gate_.empty()) {
        float dot = 0.0f;
        for (std::int64_t c = 0; c < H; ++c) dot += x[i * H + c] * shared_gate_[c];
        scale = 1.0f / (1.0f + std::exp(-dot));
      }
      for (std::int64_t c = 0; c < H; ++c) y[i * H + c] += scale * shared_out[i * H + c];
    }
  }
  t.mark("unpermute");

  if (stats) {
    std::vector<std::int64_t> counts = routing.expert_counts;
    counts.push_back(num_tokens);
    counts.push_back(plan.num_dropped);
    comm.allreduce_sum(counts.data(), counts.size());
    stats->num_dropped = counts.back();
    counts.pop_back();
    stats->num_tokens = counts.back();
    counts.pop_back();
    stats->expert_load = std::move(counts);
  }
}

}  // namespace switchyard::layers
