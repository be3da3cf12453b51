#include "switchyard/layers/moe_layer.hpp"

#include <algorithm>
#include <cmath>

#include "router_grad.hpp"
#include "step_graph.hpp"
#include "step_state.hpp"
#include "switchyard/kernels/permute.hpp"
#include "switchyard/kernels/routing_math.hpp"
#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/log.hpp"

namespace switchyard::layers {

MoeLayer::MoeLayer(const MoeConfig& config, MoeWeights weights, const ExpertPlacement& placement, int rank,
                   MoeLayerOptions options)
    : config_(config),
      router_(config.router),
      placement_(placement),
      rank_(rank),
      options_(options),
      selection_bias_(std::move(weights.selection_bias)),
      router_weight_("gate.weight", {config.num_experts, config.hidden_size}, std::move(weights.router), true) {
  check(weights.ids() == placement.local_experts(rank), ErrorCode::kInternal,
        "MoE weights do not match the expert placement");
  check_arg(std::isfinite(options.topology_loss_coef) && options.topology_loss_coef >= 0.0,
            "MoE layer: topology_loss_coef must be finite and >= 0, got " + std::to_string(options.topology_loss_coef));
  check_arg(options.topology_loss_coef == 0.0 || !config.router.link_cost.empty(),
            "MoE layer: topology_loss_coef needs the router's link_cost (the price of each expert from this rank)");
  config.router.validate();  // link_cost and the penalty hold one value per expert
  router_linear_ =
      std::make_unique<kernels::Linear>(router_weight_.value.data(), config.num_experts, config.hidden_size);
  if (options.noisy_gating.enabled) {
    const RouterConfig& r = config.router;
    check_arg(r.score == ScoreFunction::kSoftmax && selection_bias_.empty() && r.n_group == 1 && r.max_nodes == 0 &&
                  r.selection_penalty.empty() && r.top_p == 0.0f,
              "MoE layer: noisy gating needs a plain softmax top-k router (no selection bias, groups, node limit, "
              "link penalty or top-p)");
    check_arg(config.top_k < config.num_experts,
              "MoE layer: noisy gating needs top_k below num_experts (the load loss compares with the (k+1)-th)");
    const auto EH = static_cast<std::size_t>(config.num_experts * config.hidden_size);
    if (weights.router_noise.empty()) weights.router_noise.assign(EH, 0.0f);
    check_arg(weights.router_noise.size() == EH, "MoE layer: router_noise must hold num_experts x hidden_size values");
    router_noise_ =
        Parameter("gate.noise_weight", {config.num_experts, config.hidden_size}, std::move(weights.router_noise), true);
    noise_linear_ =
        std::make_unique<kernels::Linear>(router_noise_.value.data(), config.num_experts, config.hidden_size);
  }
  const std::vector<std::int64_t> ids = weights.ids();
  experts_ = make_expert_backend(options.experts, std::move(weights.experts), ids, config.activation);
  if (weights.shared.inter > 0) {
    shared_ = std::make_unique<GatedMlp>(std::move(weights.shared), config.activation, "shared", true);
  }
  if (!weights.shared_gate.empty()) {
    shared_gate_ =
        Parameter("shared_expert_gate.weight", {1, config.hidden_size}, std::move(weights.shared_gate), true);
  }
}

void MoeLayer::add_shared_experts(const float* x, std::int64_t rows, float* y, float* out, float* saved,
                                  float* scale) const {
  if (!shared_) return;
  const std::int64_t H = config_.hidden_size;
  shared_->forward(x, rows, out, saved);
  for (std::int64_t i = 0; i < rows; ++i) {
    scale[i] = 1.0f;
    if (!shared_gate_.value.empty()) {
      float dot = 0.0f;
      for (std::int64_t h = 0; h < H; ++h) dot += x[i * H + h] * shared_gate_.value[h];
      scale[i] = 1.0f / (1.0f + std::exp(-dot));
    }
    for (std::int64_t h = 0; h < H; ++h) y[i * H + h] += scale[i] * out[i * H + h];
  }
}

std::vector<Parameter*> MoeLayer::parameters() {
  std::vector<Parameter*> out = {&router_weight_};
  if (noise_linear_) out.push_back(&router_noise_);
  if (shared_) {
    out.push_back(&shared_->gate_up());
    out.push_back(&shared_->down());
  }
  if (!shared_gate_.value.empty()) out.push_back(&shared_gate_);
  for (auto* p : experts_->parameters()) out.push_back(p);
  return out;
}

std::vector<Parameter*> MoeLayer::reported_parameters() {
  std::vector<Parameter*> out = parameters();
  const std::vector<Parameter*> experts = experts_->parameters();  // gate_up, down per local expert
  const std::vector<std::int64_t>& local = placement_.local_experts(rank_);
  for (std::size_t j = 0; j < local.size(); ++j)
    if (placement_.owner(local[j]) != rank_)
      for (Parameter* p : {experts[2 * j], experts[2 * j + 1]}) out.erase(std::find(out.begin(), out.end(), p));
  return out;
}

// Each copy of a replicated expert saw only its own rows: sum what this
// backward added to their gradients over the holders (the other ranks add
// zeros), so that every copy holds the gradient a single copy would, and
// optimizers keep the copies equal. `before`: the gradients before this
// backward, in the same layout (empty: take them now and return). Collective.
void MoeLayer::sum_replica_grads(comm::Communicator& comm, std::vector<float>& before) {
  if (!placement_.replicated()) return;
  const bool snapshot = before.empty();
  const std::vector<Parameter*> experts = experts_->parameters();
  const std::size_t up = experts[0]->grad.size(), down = experts[1]->grad.size();
  std::vector<std::int64_t> replicated;
  for (std::int64_t e = 0; e < placement_.num_experts(); ++e)
    if (placement_.holders(e).size() > 1) replicated.push_back(e);
  std::vector<float> sums(replicated.size() * (up + down), 0.0f);
  auto each = [&](auto&& f) {
    for (std::size_t i = 0; i < replicated.size(); ++i) {
      const std::int32_t j = placement_.local_index(rank_, replicated[i]);
      if (j < 0) continue;
      f(experts[2 * j]->grad, sums.data() + i * (up + down));
      f(experts[2 * j + 1]->grad, sums.data() + i * (up + down) + up);
    }
  };
  each([](const std::vector<float>& g, float* at) { std::copy(g.begin(), g.end(), at); });
  if (snapshot) {
    before = std::move(sums);
    return;
  }
  for (std::size_t i = 0; i < sums.size(); ++i) sums[i] -= before[i];
  comm.allreduce_sum(sums.data(), sums.size());
  for (std::size_t i = 0; i < sums.size(); ++i) sums[i] += before[i];
  each([](std::vector<float>& g, const float* at) { std::copy(at, at + g.size(), g.begin()); });
}

detail::MoeStepState& MoeLayer::state_of(MoeForwardContext* context) {
  return *(context ? context : &inference_ctx_)->state_;
}

// The first and last chunks are half the size of the others: nothing hides
// the first dispatch and the last combine, so they should be short, while
// the middle chunks keep the expert GEMMs large.
void MoeLayer::split_into_chunks(detail::MoeStepState& c, std::int64_t num_tokens, int C) const {
  auto boundary = [&](int i) -> std::int64_t {
    if (C < 3) return num_tokens * i / C;
    const std::int64_t halves = i == 0 ? 0 : (i == C ? 2 * C - 2 : 2 * i - 1);
    return num_tokens * halves / (2 * C - 2);
  };
  c.chunks.resize(static_cast<std::size_t>(C));
  for (int i = 0; i < C; ++i) {
    detail::MoeChunk& k = c.chunks[i];
    k.begin = boundary(i);
    k.rows = boundary(i + 1) - k.begin;
    k.routed = false;
    if (k.router_scratch.scores.empty()) k.router_scratch = RouterScratch(router_);
  }
}

namespace {

// Logs once per workspace that a call outgrew the shape it was sized for.
void note_growth(detail::MoeStepState& c, std::int64_t num_tokens, int chunks, bool training) {
  const MoeWorkspaceShape& s = c.shape;
  if (c.warned_growth || (num_tokens <= s.max_tokens && chunks == s.chunks && (!training || s.training))) return;
  c.warned_growth = true;
  SY_WARN(kGraph,
          "MoE call (%lld tokens, %d chunks%s) outgrows the workspace initialized for %lld tokens, %d chunks%s: "
          "buffers grow during the step",
          static_cast<long long>(num_tokens), chunks, training ? ", training" : "",
          static_cast<long long>(s.max_tokens), s.chunks, s.training ? ", training" : "");
}

}  // namespace

void MoeLayer::run(comm::Communicator& comm, const MoeForwardArguments& args) {
  detail::MoeStepState& c = state_of(args.context);
  check_arg(c.initialized, std::string(args.context ? "context" : "the layer's inference workspace") +
                               " was not initialized: call initialize() before run()");
  const ArgumentCheck verdict = can_implement(args);
  // NOTE: bad arguments on one rank must not hang the others: that rank runs
  // the step with no tokens and fails its first task, and the step's error
  // agreement makes every rank throw the message.
  const bool ok = verdict.ok();
  const std::int64_t T = ok ? args.num_tokens : 0, H = config_.hidden_size, E = config_.num_experts;
  StepSchedule schedule = args.schedule;
  if (!ok) {
    // NOTE: the same pieces in the same order as on the other ranks, as far
    // as the bad arguments allow.
    schedule.chunks = std::max(1, schedule.chunks);
    schedule.overlap = schedule.overlap && schedule.executor != nullptr;
  }
  note_growth(c, T, schedule.chunks, args.context != nullptr);
  c.x = ok ? args.x : nullptr;
  c.num_tokens = T;
  c.forwarded = true;
  c.for_backward = args.context != nullptr;
  split_into_chunks(c, T, schedule.chunks);
  c.logits.resize(static_cast<std::size_t>(T * E));
  c.noisy = noise_linear_ && args.gating_noise;
  c.noise_key = args.noise_key;
  if (c.noisy)
    for (auto* v : {&c.clean_logits, &c.noise_logits, &c.noise_eps}) v->resize(static_cast<std::size_t>(T * E));
  if (shared_) {
    c.shared_out.resize(static_cast<std::size_t>(T * H));
    c.shared_saved.resize(static_cast<std::size_t>(T * shared_->saved_per_row()));
    c.shared_scale.resize(static_cast<std::size_t>(T));
  }
  step_ = Step{&comm, &c, ok ? args.y : nullptr, nullptr, nullptr, schedule.wire_bf16, ok ? "" : verdict.message()};
  experts_->begin_step();
  run_step(comm, step_graph(schedule.chunks, false), schedule, args.timer);
  if (args.stats || args.context) global_stats(comm, c, args.stats);
}

void MoeLayer::run(comm::Communicator& comm, const MoeBackwardArguments& args) {
  const ArgumentCheck verdict = can_implement(args);
  check_arg(args.context && args.context->state_->forwarded, verdict.message());
  detail::MoeStepState& c = *args.context->state_;
  const bool ok = verdict.ok();
  const int C = static_cast<int>(c.chunks.size());
  const std::int64_t T = c.num_tokens, E = config_.num_experts;
  c.grad_logits.resize(static_cast<std::size_t>(T * E));
  if (c.noisy) c.grad_noise.resize(static_cast<std::size_t>(T * E));  // NOTE: before the chunks' tasks share it
  StepSchedule schedule = args.schedule;
  if (!ok) {
    schedule.chunks = C;
    schedule.overlap = schedule.overlap && schedule.executor != nullptr;
  }
  step_ = Step{&comm, &c, nullptr, args.grad_y, args.grad_x, schedule.wire_bf16, ok ? "" : verdict.message()};
  std::vector<float> before;
  sum_replica_grads(comm, before);
  run_step(comm, step_graph(C, true), schedule, args.timer);
  sum_replica_grads(comm, before);
}

void MoeLayer::token_stat_sums(detail::MoeStepState& c) const {
  // Per token: the aux losses' softmax probabilities p (their sum, and
  // their top-k counts f: for softmax routers the routing itself), lse²,
  // the link cost of p, and the router scores' chosen and top-k mass.
  const std::int64_t E = config_.num_experts, K = config_.top_k;
  std::vector<double>& sums = c.stat_sums;
  sums.assign(static_cast<std::size_t>(2 * E + detail::kNumStatSums), 0.0);
  double* tail = sums.data() + 2 * E;
  std::vector<float>& p = c.stat_probs;
  std::vector<float>& score = c.stat_scores;
  std::vector<std::int32_t>& top = c.stat_top;
  p.resize(static_cast<std::size_t>(E));
  score.resize(static_cast<std::size_t>(E));
  top.resize(static_cast<std::size_t>(K));
  const bool softmax = router_.score == ScoreFunction::kSoftmax;
  const bool top_p = router_.top_p > 0.0f;
  for (const detail::MoeChunk& k : c.chunks) {
    for (std::int64_t i = k.begin; i < k.begin + k.rows; ++i) {
      const float* logits = &c.logits[i * E];
      const std::int32_t* chosen = &k.routing.expert_idx[(i - k.begin) * K];
      detail::aux_probs(logits, E, p.data());
      for (std::int64_t e = 0; e < E; ++e) sums[e] += p[e];
      kernels::top_k(p.data(), E, K, top.data());
      if (top_p) {  // f counts the slots a top-p router used
        for (std::int64_t j = 0; j < K && chosen[j] >= 0; ++j) sums[E + chosen[j]] += 1.0;
      } else {
        for (auto e : top) sums[E + e] += 1.0;
      }
      tail[detail::kEntropy] += detail::entropy_of(p.data(), E);
      const double lse = detail::logsumexp(logits, E);
      tail[detail::kLseSquared] += lse * lse;
      for (std::size_t e = 0; e < router_.link_cost.size(); ++e)
        tail[detail::kTopologyLoss] += p[e] * router_.link_cost[e];
      if (!softmax) {
        std::copy(logits, logits + E, score.data());
        kernels::sigmoid(score.data(), E);
        kernels::top_k(score.data(), E, K, top.data());
      }
      const std::vector<float>& s = softmax ? p : score;
      // The unconstrained choice: the top k, or (top-p) its prefix reaching top_p.
      double mass = 0.0;
      for (std::int64_t j = 0; j < K && !(top_p && mass >= router_.top_p); ++j) mass += s[top[j]];
      tail[detail::kGateMassTopK] += mass;
      for (std::int64_t j = 0; j < K && chosen[j] >= 0; ++j) tail[detail::kGateMass] += s[chosen[j]];
    }
  }
}

void MoeLayer::global_stats(comm::Communicator& comm, detail::MoeStepState& c, ForwardStats* stats) {
  // Loads, token count, drops, and the per-token sums, over all ranks.
  const std::int64_t E = config_.num_experts, K = config_.top_k;
  std::vector<std::int64_t>& counts = c.stat_counts;
  counts.assign(static_cast<std::size_t>(E + 2 + K + 1), 0);
  std::int64_t* used_hist = counts.data() + E + 2;
  for (const detail::MoeChunk& k : c.chunks) {
    for (std::int64_t e = 0; e < E; ++e) counts[e] += k.routing.expert_counts[e];
    counts[E + 1] += k.plan.num_dropped;
    for (std::int64_t t = 0; t < k.rows; ++t) {
      std::int64_t used = 0;
      while (used < K && k.routing.expert_idx[t * K + used] >= 0) ++used;
      ++used_hist[used];
    }
  }
  counts[E] = c.num_tokens;
  comm.allreduce_sum(counts.data(), counts.size());
  if (c.noisy) noisy_stats(comm, c);
  token_stat_sums(c);
  std::vector<double>& sums = c.stat_sums;
  comm.allreduce_sum(sums.data(), sums.size());
  const std::int64_t T = counts[E];
  const double inv_t = T ? 1.0 / static_cast<double>(T) : 0.0;
  c.global_tokens = T;
  c.load_fraction.assign(static_cast<std::size_t>(E), 0.0);
  double aux = 0;
  for (std::int64_t e = 0; e < E; ++e) {
    c.load_fraction[e] = sums[E + e] * inv_t;
    aux += c.load_fraction[e] * sums[e] * inv_t;
  }
  if (!stats) return;
  const double* tail = sums.data() + 2 * E;
  stats->num_tokens = T;
  stats->num_dropped = counts[E + 1];
  stats->expert_load.assign(counts.begin(), counts.begin() + E);
  stats->aux_loss = static_cast<double>(E) * aux;
  stats->z_loss = tail[detail::kLseSquared] * inv_t;
  stats->topology_loss = tail[detail::kTopologyLoss] * inv_t;
  stats->entropy_loss = tail[detail::kEntropy] * inv_t;
  stats->experts_per_token.assign(used_hist, used_hist + K + 1);
  stats->importance_loss = c.noisy ? c.noisy_sums[0] : 0.0;
  stats->load_loss = c.noisy ? c.noisy_sums[1] : 0.0;
  stats->gate_mass = tail[detail::kGateMass];
  stats->gate_mass_top_k = tail[detail::kGateMassTopK];
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
