// The backward's token-side end: router (with auxiliary losses) and shared
// experts, over all of this rank's tokens at once.
#include <algorithm>
#include <cmath>

#include "router_grad.hpp"
#include "step_state.hpp"
#include "switchyard/kernels/matmul.hpp"
#include "switchyard/kernels/routing_math.hpp"
#include "switchyard/layers/moe_layer.hpp"

namespace switchyard::layers {
namespace detail {

void aux_probs(const float* logits, std::int64_t E, float* p) {
  std::copy(logits, logits + E, p);
  kernels::softmax_rows(p, 1, E);
}

double logsumexp(const float* x, std::int64_t n) {
  const float mx = *std::max_element(x, x + n);
  double s = 0;
  for (std::int64_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - mx);
  return mx + std::log(s);
}

double safe_log(double p) { return p > 0.0 ? std::log(p) : 0.0; }

double entropy_of(const float* p, std::int64_t E) {
  double h = 0.0;
  for (std::int64_t e = 0; e < E; ++e) h -= p[e] * safe_log(p[e]);
  return h;
}

namespace {

// Adds the auxiliary losses' dL/dlogits of one token to `dl`. Each is
// linear in the softmax probabilities p: d(sum_e a_e p_e)/dlogit_e =
// p_e (a_e - sum_e' a_e' p_e').
void add_aux_loss_grads(const AuxLossGrad& aux, const float* logits, std::int64_t E, double inv_t, float* p,
                        float* dl) {
  aux_probs(logits, E, p);
  // Balancing: a_e = coef * E * f_e / T.
  const std::vector<double>& f = *aux.load_fraction;
  double dot_f = 0.0, dot_c = 0.0;
  for (std::int64_t e = 0; e < E; ++e) dot_f += p[e] * f[e];
  // Topology: a_e = coef * c_e / T.
  const bool topo = aux.topology_loss_coef != 0.0;
  if (topo)
    for (std::int64_t e = 0; e < E; ++e) dot_c += p[e] * (*aux.link_cost)[e];
  const double a = aux.aux_loss_coef * static_cast<double>(E) * inv_t;
  const double t = aux.topology_loss_coef * inv_t;
  // z-loss: d(coef * lse^2 / T)/dlogit_e = coef * 2 lse p_e / T.
  const double z = aux.z_loss_coef * 2.0 * logsumexp(logits, E) * inv_t;
  // Entropy H = -sum_e p_e log p_e: dH/dlogit_e = -p_e (log p_e + H).
  const double h = aux.entropy_loss_coef * inv_t;
  const double entropy = h != 0.0 ? entropy_of(p, E) : 0.0;
  for (std::int64_t e = 0; e < E; ++e) {
    const double c = topo ? t * ((*aux.link_cost)[e] - dot_c) : 0.0;
    const double d = h != 0.0 ? -h * p[e] * (safe_log(p[e]) + entropy) : 0.0;
    dl[e] += static_cast<float>(a * p[e] * (f[e] - dot_f) + c * p[e] + z * p[e] + d);
  }
}

}  // namespace

void router_logits_grad(const RouterConfig& router, const float* all_logits, const RoutingPlan& routing,
                        const float* grad_w, const AuxLossGrad& aux, float* grad_logits, float* scratch) {
  const std::int64_t E = routing.num_experts, K = routing.top_k;
  float* score = scratch;
  float* ds = scratch + E;
  float* p = scratch + 2 * E;
  const double inv_t = aux.global_tokens ? 1.0 / static_cast<double>(aux.global_tokens) : 0.0;
  const float scaling = router.scaling, eps = router.renormalize_epsilon;
  for (std::int64_t i = 0; i < routing.num_tokens; ++i) {
    const float* logits = all_logits + i * E;
    float* dl = grad_logits + i * E;
    std::copy(logits, logits + E, score);
    if (router.score == ScoreFunction::kSoftmax) {
      kernels::softmax_rows(score, 1, E);
    } else {
      kernels::sigmoid(score, E);
    }
    // w_j = c * s_j / (S + eps) when renormalised, else c * s_j.
    std::fill(ds, ds + E, 0.0f);
    const std::int32_t* idx = &routing.expert_idx[i * K];
    const float* w = &routing.weights[i * K];
    const float* dw = grad_w + i * K;
    // Top-p: the token's used slots come first; its unused ones hold -1.
    std::int64_t used = 0;
    while (used < K && idx[used] >= 0) ++used;
    if (router.renormalize) {
      float sum = 0.0f, dot = 0.0f;
      for (std::int64_t j = 0; j < used; ++j) {
        sum += score[idx[j]];
        dot += dw[j] * w[j];
      }
      for (std::int64_t j = 0; j < used; ++j) ds[idx[j]] = (scaling * dw[j] - dot) / (sum + eps);
    } else {
      for (std::int64_t j = 0; j < used; ++j) ds[idx[j]] = scaling * dw[j];
    }
    if (router.score == ScoreFunction::kSoftmax) {
      float dot = 0.0f;
      for (std::int64_t e = 0; e < E; ++e) dot += score[e] * ds[e];
      for (std::int64_t e = 0; e < E; ++e) dl[e] = score[e] * (ds[e] - dot);
    } else {
      for (std::int64_t e = 0; e < E; ++e) dl[e] = ds[e] * score[e] * (1.0f - score[e]);
    }
    if (aux.any()) add_aux_loss_grads(aux, logits, E, inv_t, p, dl);
  }
}

}  // namespace detail

void MoeLayer::router_and_shared_grads() {
  detail::MoeStepState& c = *step_.ctx;
  const std::int64_t H = config_.hidden_size, E = config_.num_experts, T = c.num_tokens;
  const float* x = c.x;
  const float* grad_y = step_.grad_y;
  float* grad_x = step_.grad_x;
  // A linear router, logits = x · Wᵀ: dL/dW += dlᵀ · x, dL/dx += dl · W.
  const auto linear_grads = [&](const float* dl, Parameter& w) {
    kernels::gemm({.trans_a = true,
                   .m = E,
                   .n = H,
                   .k = T,
                   .a = dl,
                   .lda = E,
                   .b = x,
                   .ldb = H,
                   .beta = 1.0f,
                   .c = w.grad.data(),
                   .ldc = H});
    kernels::gemm({.m = T,
                   .n = H,
                   .k = E,
                   .a = dl,
                   .lda = E,
                   .b = w.value.data(),
                   .ldb = H,
                   .beta = 1.0f,
                   .c = grad_x,
                   .ldc = H});
  };
  linear_grads(c.grad_logits.data(), router_weight_);
  if (c.noisy) linear_grads(c.grad_noise.data(), router_noise_);
  if (!shared_) return;
  // Shared experts: y += scale_t * S(x_t), scale_t = sigmoid(x_t · g) or 1.
  c.grad_shared.resize(static_cast<std::size_t>(T * H));
  const bool gated = !shared_gate_.value.empty();
  for (std::int64_t i = 0; i < T; ++i) {
    const float scale = c.shared_scale[i];
    float dscale = 0.0f;
    for (std::int64_t h = 0; h < H; ++h) {
      c.grad_shared[i * H + h] = scale * grad_y[i * H + h];
      dscale += grad_y[i * H + h] * c.shared_out[i * H + h];
    }
    if (gated) {
      const float dz = dscale * scale * (1.0f - scale);
      for (std::int64_t h = 0; h < H; ++h) {
        shared_gate_.grad[h] += dz * x[i * H + h];
        grad_x[i * H + h] += dz * shared_gate_.value[h];
      }
    }
  }
  shared_->backward(x, T, c.shared_saved.data(), c.grad_shared.data(), grad_x, true, &c.shared_scratch);
}

}  // namespace switchyard::layers
