// Noisy top-k gating inside the MoE layer's step: the noisy logits a chunk
// routes on, the global importance and load, and their gradients.
#include "noisy_gating.hpp"
#include "step_state.hpp"
#include "switchyard/kernels/matmul.hpp"
#include "switchyard/layers/moe_layer.hpp"

namespace switchyard::layers {

namespace {

detail::NoisyToken token(const detail::MoeStepState& c, std::int64_t i, std::int64_t E, std::int64_t K) {
  const std::size_t at = static_cast<std::size_t>(i * E);
  return {c.clean_logits.data() + at, c.noise_logits.data() + at, c.noise_eps.data() + at, c.logits.data() + at, E, K};
}

}  // namespace

// The clean and noise logits of chunk `k`, this step's draws, and the noisy
// logits (into `logits`) that routing then uses.
void MoeLayer::noisy_route(detail::MoeChunk& k, float* logits) {
  detail::MoeStepState& c = *step_.ctx;
  const std::int64_t H = config_.hidden_size, E = config_.num_experts;
  const std::size_t at = static_cast<std::size_t>(k.begin * E);
  router_linear_->run(c.x + k.begin * H, k.rows, c.clean_logits.data() + at);
  noise_linear_->run(c.x + k.begin * H, k.rows, c.noise_logits.data() + at);
  for (std::int64_t i = k.begin; i < k.begin + k.rows; ++i) {
    float* eps = c.noise_eps.data() + i * E;
    for (std::int64_t e = 0; e < E; ++e) eps[e] = gating_noise(c.noise_key, rank_, i, e);
    detail::noisy_logits(c.clean_logits.data() + i * E, c.noise_logits.data() + i * E, eps, E,
                         logits + (i - k.begin) * E);
  }
}

// Importance (the routing weights' sum per expert) and load (the
// probabilities of being chosen) over all ranks, their CV^2 losses, and the
// losses' gradients with the coefficients applied. Collective.
void MoeLayer::noisy_stats(comm::Communicator& comm, detail::MoeStepState& c) {
  const std::int64_t E = config_.num_experts, K = config_.top_k;
  std::vector<double>& sums = c.stat_sums;  // borrowed: token_stat_sums fills it afterwards
  sums.assign(static_cast<std::size_t>(2 * E), 0.0);
  for (detail::MoeChunk& k : c.chunks) {
    k.noisy_top.resize(static_cast<std::size_t>(K + 1));
    for (std::int64_t t = 0; t < k.rows; ++t) {
      for (std::int64_t j = 0; j < K; ++j) sums[k.routing.expert_idx[t * K + j]] += k.routing.weights[t * K + j];
      detail::add_load(token(c, k.begin + t, E, K), k.noisy_top.data(), sums.data() + E);
    }
  }
  comm.allreduce_sum(sums.data(), sums.size());
  c.noisy_grads.resize(static_cast<std::size_t>(2 * E));
  c.noisy_sums.resize(2);
  c.noisy_sums[0] = detail::cv_squared(sums.data(), E, c.noisy_grads.data());
  c.noisy_sums[1] = detail::cv_squared(sums.data() + E, E, c.noisy_grads.data() + E);
  const NoisyGating& n = options_.noisy_gating;
  for (std::int64_t e = 0; e < E; ++e) {
    c.noisy_grads[e] *= n.importance_coef;
    c.noisy_grads[E + e] *= n.load_coef;
  }
}

// Importance_e sums the routing weights: its loss adds to each slot's dL/dw.
void MoeLayer::noisy_importance_grads(detail::MoeChunk& k) {
  const detail::MoeStepState& c = *step_.ctx;
  const std::int64_t K = config_.top_k;
  for (std::int64_t s = 0; s < k.rows * K; ++s)
    k.grad_w[s] += static_cast<float>(c.noisy_grads[k.routing.expert_idx[s]]);
}

// After the router's gradient: grad_logits holds dL/d(noisy logits). Adds
// the load loss's terms, sends the noisy logits' gradient into the noise
// logits (through eps * softplus), and leaves dL/d(clean logits) in
// grad_logits, as the router weight's gradient expects.
void MoeLayer::noisy_load_grads(detail::MoeChunk& k) {
  detail::MoeStepState& c = *step_.ctx;
  const std::int64_t E = config_.num_experts, K = config_.top_k;
  k.noisy_scratch.resize(static_cast<std::size_t>(E));
  k.noisy_top.resize(static_cast<std::size_t>(K + 1));
  float* d_clean = k.noisy_scratch.data();
  for (std::int64_t i = k.begin; i < k.begin + k.rows; ++i) {
    const detail::NoisyToken t = token(c, i, E, K);
    float* d_noisy = c.grad_logits.data() + i * E;
    float* d_noise = c.grad_noise.data() + i * E;
    std::fill(d_clean, d_clean + E, 0.0f);
    std::fill(d_noise, d_noise + E, 0.0f);
    detail::add_load_grads(t, c.noisy_grads.data() + E, k.noisy_top.data(), d_clean, d_noisy, d_noise);
    detail::add_noise_path(t, d_noisy, d_noise);
    for (std::int64_t e = 0; e < E; ++e) d_noisy[e] += d_clean[e];
  }
}

}  // namespace switchyard::layers
