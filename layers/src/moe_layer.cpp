#include "switchyard/layers/moe_layer.hpp"

#include <algorithm>
#include <cmath>

#include "pipeline_chunk.hpp"
#include "switchyard/kernels/permute.hpp"
#include "switchyard/kernels/routing_math.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {

MoeLayer::MoeLayer(const ModelConfig& config, MoeWeights weights, const ExpertPlacement& placement, int rank,
                   MoeLayerOptions options)
    : config_(config),
      router_(router_config(config)),
      placement_(placement),
      options_(options),
      first_expert_(weights.first_expert),
      selection_bias_(std::move(weights.selection_bias)),
      router_weight_("gate.weight", {config.num_experts, config.hidden_size}, std::move(weights.router), true) {
  check(static_cast<std::int64_t>(weights.experts.size()) == placement.num_local(rank) &&
            weights.first_expert == placement.first_expert(rank),
        ErrorCode::kInternal, "MoE weights do not match the expert placement");
  router_linear_ =
      std::make_unique<kernels::Linear>(router_weight_.value.data(), config.num_experts, config.hidden_size);
  experts_ = make_expert_backend(options.experts, std::move(weights.experts), first_expert_, config.activation);
  if (weights.shared.inter > 0) {
    shared_ = std::make_unique<GatedMlp>(std::move(weights.shared), config.activation, "shared", true);
  }
  if (!weights.shared_gate.empty()) {
    shared_gate_ =
        Parameter("shared_expert_gate.weight", {1, config.hidden_size}, std::move(weights.shared_gate), true);
  }
}

void MoeLayer::add_shared_experts(const float* x, std::int64_t rows, float* y, std::vector<float>* out,
                                  std::vector<float>* saved, std::vector<float>* scale) const {
  if (!shared_) return;
  const std::int64_t H = config_.hidden_size;
  out->resize(static_cast<std::size_t>(rows * H));
  saved->resize(static_cast<std::size_t>(rows * shared_->saved_per_row()));
  shared_->forward(x, rows, out->data(), saved->data());
  scale->assign(static_cast<std::size_t>(rows), 1.0f);
  for (std::int64_t i = 0; i < rows; ++i) {
    if (!shared_gate_.value.empty()) {
      float dot = 0.0f;
      for (std::int64_t h = 0; h < H; ++h) dot += x[i * H + h] * shared_gate_.value[h];
      (*scale)[i] = 1.0f / (1.0f + std::exp(-dot));
    }
    for (std::int64_t h = 0; h < H; ++h) y[i * H + h] += (*scale)[i] * (*out)[i * H + h];
  }
}

MoeLayer::~MoeLayer() = default;
MoeLayer::MoeLayer(MoeLayer&&) noexcept = default;

std::vector<float>& MoeLayer::buffer(Buffer which, std::int64_t floats) {
  auto& b = buffers_[static_cast<std::size_t>(which)];
  b.resize(static_cast<std::size_t>(floats));
  return b;
}

std::vector<Parameter*> MoeLayer::parameters() {
  std::vector<Parameter*> out = {&router_weight_};
  if (shared_) {
    out.push_back(&shared_->gate_up());
    out.push_back(&shared_->down());
  }
  if (!shared_gate_.value.empty()) out.push_back(&shared_gate_);
  for (auto* p : experts_->parameters()) out.push_back(p);
  return out;
}

namespace {

// Router probabilities for the auxiliary losses: softmax of the logits for
// every router kind, as transformers' load_balancing_loss_func computes them.
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

}  // namespace

void MoeLayer::forward(comm::Communicator& comm, const float* x, std::int64_t num_tokens, float* y, ForwardStats* stats,
                       PhaseTimer* timer, MoeForwardContext* ctx) {
  PhaseTimer local_timer;
  PhaseTimer& t = timer ? *timer : local_timer;
  t.restart();
  const std::int64_t H = config_.hidden_size, E = config_.num_experts, K = config_.top_k;
  MoeForwardContext& c = ctx ? *ctx : inference_ctx_;
  c.x = x;
  c.num_tokens = num_tokens;

  // 1. Route.
  c.logits.resize(static_cast<std::size_t>(num_tokens * E));
  router_linear_->run(x, num_tokens, c.logits.data());
  route(router_, c.logits.data(), selection_bias_.empty() ? nullptr : selection_bias_.data(), num_tokens, &c.routing);
  t.mark("route");

  // 2. Plan.
  c.plan = plan_dispatch(c.routing, placement_, options_.capacity, comm);
  const DispatchPlan& plan = c.plan;
  t.mark("plan");

  // 3. Permute token rows into send order, then dispatch.
  // NOTE: buffers live in the layer and only grow: fresh multi-megabyte
  // allocations every step cost more in page faults than the copies into them.
  std::vector<float>& send = buffer(Buffer::kSend, plan.num_send() * H);
  kernels::gather_rows(x, plan.send_token.data(), plan.num_send(), H, send.data());
  t.mark("permute");
  std::vector<float> recv(static_cast<std::size_t>(plan.num_recv() * H));
  comm.alltoallv(send.data(), plan.send_counts.data(), plan.send_offsets.data(), recv.data(), plan.recv_counts.data(),
                 plan.recv_offsets.data(), H * sizeof(float));
  t.mark("dispatch");

  // 4. Experts on rows grouped by local expert.
  c.expert_in.resize(recv.size());
  std::vector<float>& grouped_out = buffer(Buffer::kGroupedOut, plan.num_recv() * H);
  c.expert_saved.resize(static_cast<std::size_t>(plan.num_recv() * experts_->saved_per_row()));
  kernels::scatter_rows(recv.data(), plan.recv_to_grouped.data(), plan.num_recv(), H, c.expert_in.data());
  experts_->forward(c.expert_in.data(), plan.local_expert_counts.data(), grouped_out.data(), c.expert_saved.data());
  kernels::gather_rows(grouped_out.data(), plan.recv_to_grouped.data(), plan.num_recv(), H, recv.data());
  t.mark("experts");

  // 5. Combine: the reverse exchange, back into send order.
  c.combined.resize(send.size());
  comm.alltoallv(recv.data(), plan.recv_counts.data(), plan.recv_offsets.data(), c.combined.data(),
                 plan.send_counts.data(), plan.send_offsets.data(), H * sizeof(float));
  t.mark("combine");

  // 6. Unpermute with routing weights, plus shared experts.
  std::fill(y, y + num_tokens * H, 0.0f);
  kernels::unpermute_weighted_sum(c.combined.data(), plan.slot_row.data(), c.routing.weights.data(), num_tokens, K, H,
                                  y);
  add_shared_experts(x, num_tokens, y, &c.shared_out, &c.shared_saved, &c.shared_scale);
  t.mark("unpermute");

  if (!stats && !ctx) return;
  // Global statistics: loads, token count, drops, and the auxiliary losses'
  // sums (mean router probability per expert, sum of squared logsumexp).
  std::vector<std::int64_t> counts = c.routing.expert_counts;
  counts.push_back(num_tokens);
  counts.push_back(plan.num_dropped);
  comm.allreduce_sum(counts.data(), counts.size());
  // sums: [0, E) mean-probability sums, [E, 2E) top-k counts of those
  // probabilities (f; for softmax routers the routing itself), 2E: sum lse².
  std::vector<double> sums(static_cast<std::size_t>(2 * E + 1), 0.0);
  std::vector<float> p(static_cast<std::size_t>(E));
  std::vector<std::int32_t> top(static_cast<std::size_t>(K));
  for (std::int64_t i = 0; i < num_tokens; ++i) {
    aux_probs(&c.logits[i * E], E, p.data());
    for (std::int64_t e = 0; e < E; ++e) sums[e] += p[e];
    kernels::top_k(p.data(), E, K, top.data());
    for (auto e : top) sums[E + e] += 1.0;
    const double lse = logsumexp(&c.logits[i * E], E);
    sums[2 * E] += lse * lse;
  }
  comm.allreduce_sum(sums.data(), sums.size());
  const std::int64_t T = counts[E];
  c.global_tokens = T;
  c.load_fraction.assign(static_cast<std::size_t>(E), 0.0);
  double aux = 0;
  for (std::int64_t e = 0; e < E; ++e) {
    c.load_fraction[e] = T ? sums[E + e] / static_cast<double>(T) : 0.0;
    aux += c.load_fraction[e] * (T ? sums[e] / static_cast<double>(T) : 0.0);
  }
  if (stats) {
    stats->num_tokens = T;
    stats->num_dropped = counts[E + 1];
    stats->expert_load.assign(counts.begin(), counts.begin() + E);
    stats->aux_loss = static_cast<double>(E) * aux;
    stats->z_loss = T ? sums[2 * E] / static_cast<double>(T) : 0.0;
  }
}

void MoeLayer::backward(comm::Communicator& comm, const MoeForwardContext& c, const float* grad_y, float* grad_x,
                        PhaseTimer* timer) {
  PhaseTimer local_timer;
  PhaseTimer& t = timer ? *timer : local_timer;
  t.restart();
  const std::int64_t H = config_.hidden_size, E = config_.num_experts, K = config_.top_k, T = c.num_tokens;
  const DispatchPlan& plan = c.plan;
  const float* x = c.x;

  // Combine backward: each kept slot's expert output gets w * dy, and the
  // routing weight gets dy · (expert output).
  std::vector<float>& grad_send = buffer(Buffer::kSend, plan.num_send() * H);
  std::vector<float> grad_w(static_cast<std::size_t>(T * K), 0.0f);
  for (std::int64_t s = 0; s < T * K; ++s) {
    const std::int64_t r = plan.slot_row[s];
    if (r < 0) continue;
    const float* dy = grad_y + (s / K) * H;
    const float* o = &c.combined[r * H];
    const float w = c.routing.weights[s];
    float dot = 0.0f;
    for (std::int64_t h = 0; h < H; ++h) {
      grad_send[r * H + h] = w * dy[h];
      dot += dy[h] * o[h];
    }
    grad_w[s] = dot;
  }
  t.mark("unpermute_grad");

  // The forward's exchanges with roles swapped: gradients travel to the
  // experts along the dispatch route and come back along the combine route.
  std::vector<float>& recv = buffer(Buffer::kRecv, plan.num_recv() * H);
  comm.alltoallv(grad_send.data(), plan.send_counts.data(), plan.send_offsets.data(), recv.data(),
                 plan.recv_counts.data(), plan.recv_offsets.data(), H * sizeof(float));
  t.mark("combine_grad");
  std::vector<float>& grouped = buffer(Buffer::kGroupedOut, plan.num_recv() * H);
  std::vector<float>& grouped_dx = buffer(Buffer::kGroupedGrad, plan.num_recv() * H);
  kernels::scatter_rows(recv.data(), plan.recv_to_grouped.data(), plan.num_recv(), H, grouped.data());
  experts_->backward(c.expert_in.data(), plan.local_expert_counts.data(), c.expert_saved.data(), grouped.data(),
                     grouped_dx.data());
  kernels::gather_rows(grouped_dx.data(), plan.recv_to_grouped.data(), plan.num_recv(), H, recv.data());
  t.mark("experts_grad");
  comm.alltoallv(recv.data(), plan.recv_counts.data(), plan.recv_offsets.data(), grad_send.data(),
                 plan.send_counts.data(), plan.send_offsets.data(), H * sizeof(float));
  t.mark("dispatch_grad");
  std::fill(grad_x, grad_x + T * H, 0.0f);
  const std::vector<float> ones(static_cast<std::size_t>(T * K), 1.0f);
  kernels::unpermute_weighted_sum(grad_send.data(), plan.slot_row.data(), ones.data(), T, K, H, grad_x);
  t.mark("permute_grad");

  // Router backward: routing weights -> scores -> logits, plus aux losses.
  std::vector<float> grad_logits(static_cast<std::size_t>(T * E), 0.0f);
  std::vector<float> score(static_cast<std::size_t>(E)), ds(static_cast<std::size_t>(E)),
      p(static_cast<std::size_t>(E));
  const double inv_t = c.global_tokens ? 1.0 / static_cast<double>(c.global_tokens) : 0.0;
  const float scaling = router_.scaling, eps = router_.renormalize_epsilon;
  for (std::int64_t i = 0; i < T; ++i) {
    const float* logits = &c.logits[i * E];
    float* dl = &grad_logits[i * E];
    std::copy(logits, logits + E, score.begin());
    if (router_.score == ScoreFunction::kSoftmax) {
      kernels::softmax_rows(score.data(), 1, E);
    } else {
      kernels::sigmoid(score.data(), E);
    }
    // w_j = c * s_j / (S + eps) when renormalised, else c * s_j.
    std::fill(ds.begin(), ds.end(), 0.0f);
    const std::int32_t* idx = &c.routing.expert_idx[i * K];
    const float* w = &c.routing.weights[i * K];
    const float* dw = &grad_w[i * K];
    if (router_.renormalize) {
      float sum = 0.0f, dot = 0.0f;
      for (std::int64_t j = 0; j < K; ++j) {
        sum += score[idx[j]];
        dot += dw[j] * w[j];
      }
      for (std::int64_t j = 0; j < K; ++j) ds[idx[j]] = (scaling * dw[j] - dot) / (sum + eps);
    } else {
      for (std::int64_t j = 0; j < K; ++j) ds[idx[j]] = scaling * dw[j];
    }
    if (router_.score == ScoreFunction::kSoftmax) {
      float dot = 0.0f;
      for (std::int64_t e = 0; e < E; ++e) dot += score[e] * ds[e];
      for (std::int64_t e = 0; e < E; ++e) dl[e] = score[e] * (ds[e] - dot);
    } else {
      for (std::int64_t e = 0; e < E; ++e) dl[e] = ds[e] * score[e] * (1.0f - score[e]);
    }
    if (options_.aux_loss_coef != 0.0 || options_.z_loss_coef != 0.0) {
      aux_probs(logits, E, p.data());
      // d(coef * E * sum_e f_e * mean_t p_te)/dp_te = coef * E * f_e / T.
      double dot = 0.0;
      for (std::int64_t e = 0; e < E; ++e) dot += p[e] * c.load_fraction[e];
      const double a = options_.aux_loss_coef * static_cast<double>(E) * inv_t;
      const double z = options_.z_loss_coef * 2.0 * logsumexp(logits, E) * inv_t;
      for (std::int64_t e = 0; e < E; ++e)
        dl[e] += static_cast<float>(a * p[e] * (c.load_fraction[e] - dot) + z * p[e]);
    }
  }
  kernels::gemm(true, false, E, H, T, 1.0f, grad_logits.data(), E, x, H, 1.0f, router_weight_.grad.data(), H);
  kernels::gemm(false, false, T, H, E, 1.0f, grad_logits.data(), E, router_weight_.value.data(), H, 1.0f, grad_x, H);
  t.mark("route_grad");

  // Shared experts: y += scale_t * S(x_t), scale_t = sigmoid(x_t · g) or 1.
  if (shared_) {
    std::vector<float> grad_shared(static_cast<std::size_t>(T * H)), scratch;
    const bool gated = !shared_gate_.value.empty();
    for (std::int64_t i = 0; i < T; ++i) {
      const float scale = c.shared_scale[i];
      float dscale = 0.0f;
      for (std::int64_t h = 0; h < H; ++h) {
        grad_shared[i * H + h] = scale * grad_y[i * H + h];
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
    shared_->backward(x, T, c.shared_saved.data(), grad_shared.data(), grad_x, true, &scratch);
    t.mark("shared_grad");
  }
}

void MoeLayer::update_selection_bias(const ForwardStats& stats, double speed) {
  if (selection_bias_.empty() || stats.expert_load.empty()) return;
  double mean = 0;
  for (auto l : stats.expert_load) mean += static_cast<double>(l);
  mean /= static_cast<double>(stats.expert_load.size());
  for (std::size_t e = 0; e < selection_bias_.size(); ++e) {
    const double err = mean - static_cast<double>(stats.expert_load[e]);
    selection_bias_[e] += static_cast<float>(speed * ((err > 0) - (err < 0)));
  }
}

}  // namespace switchyard::layers
