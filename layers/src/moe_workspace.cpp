// The operator protocol's checking and sizing half: can_implement,
// workspace_size and initialize, and the context that holds the workspace.
#include <algorithm>
#include <cmath>
#include <string>

#include "step_state.hpp"
#include "switchyard/layers/moe_layer.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {

MoeForwardContext::MoeForwardContext() : state_(std::make_unique<detail::MoeStepState>()) {}
MoeForwardContext::~MoeForwardContext() = default;
MoeForwardContext::MoeForwardContext(MoeForwardContext&&) noexcept = default;
MoeForwardContext& MoeForwardContext::operator=(MoeForwardContext&&) noexcept = default;

std::int64_t MoeForwardContext::num_tokens() const { return state_->num_tokens; }

std::vector<std::int32_t> MoeForwardContext::expert_idx() const {
  std::vector<std::int32_t> out;
  for (const auto& k : state_->chunks) out.insert(out.end(), k.routing.expert_idx.begin(), k.routing.expert_idx.end());
  return out;
}

std::vector<float> MoeForwardContext::routing_weights() const {
  std::vector<float> out;
  for (const auto& k : state_->chunks) out.insert(out.end(), k.routing.weights.begin(), k.routing.weights.end());
  return out;
}

namespace {

void add_counts(std::vector<std::int64_t>& to, const std::vector<std::int64_t>& from) {
  to.resize(std::max(to.size(), from.size()), 0);
  for (std::size_t i = 0; i < from.size(); ++i) to[i] += from[i];
}

}  // namespace

StepTraffic& StepTraffic::operator+=(const StepTraffic& other) {
  add_counts(send_rows, other.send_rows);
  add_counts(send_slots, other.send_slots);
  add_counts(recv_rows, other.recv_rows);
  add_counts(local_expert_rows, other.local_expert_rows);
  add_counts(expert_slots, other.expert_slots);
  return *this;
}

StepTraffic MoeForwardContext::traffic() const {
  StepTraffic t;
  for (const auto& k : state_->chunks) {
    add_counts(t.send_rows, k.plan.send_counts);
    add_counts(t.send_slots, k.plan.send_slot_counts);
    if (k.plan.hierarchical()) {
      // The forwarder's rows inside its node count as this rank's too.
      add_counts(t.send_rows, k.plan.forward.out_counts);
      add_counts(t.recv_rows, k.plan.forward.in_counts);
    }
    add_counts(t.recv_rows, k.plan.recv_counts);
    add_counts(t.local_expert_rows, k.plan.local_expert_counts);
    add_counts(t.expert_slots, k.routing.expert_counts);
  }
  return t;
}

StepTraffic MoeLayer::traffic(const MoeForwardContext* context) const {
  return (context ? *context : inference_ctx_).traffic();
}

namespace {

// The most rows any chunk of a call with up to `tokens` tokens can have
// (MoeLayer::split_into_chunks; +1 covers the rounding of its boundaries).
std::int64_t chunk_rows_bound(std::int64_t tokens, int chunks) {
  const std::int64_t parts = chunks < 3 ? chunks : 2 * chunks - 2, share = chunks < 3 ? 1 : 2;
  return std::min(tokens, (share * tokens + parts - 1) / parts + 1);
}

// Every buffer of a step and the elements it may need, for one rank.
struct WorkspaceDims {
  std::int64_t H = 0, E = 0, K = 0, T = 0, chunk_rows = 0, chunk_recv = 0, step_recv = 0;
  std::int64_t forward_in = 0, forward_out = 0;  // a forwarder's rows (hierarchical): in, out
  std::int64_t expert_saved = 0, expert_grad_saved = 0, shared_saved = 0, shared_inter = 0, num_local = 0;
  bool scales_input = false;  // MoeConfig::weight_scales_input: the unscaled rows are kept for the backward
  bool noisy = false;         // noisy gating's buffers (a training workspace)
};

// Calls f(vector, elements) for every buffer of `s` that `shape` needs. One
// list for both reserving (initialize) and counting bytes (workspace_size,
// workspace_bytes), so the two cannot drift apart.
template <class F>
void for_each_buffer(detail::MoeStepState& s, const MoeWorkspaceShape& shape, const WorkspaceDims& d, F&& f) {
  const std::int64_t H = d.H, E = d.E, K = d.K, T = d.T, rows = d.chunk_rows, recv = d.chunk_recv;
  const bool train = shape.training, shared = d.shared_inter > 0;
  f(s.logits, T * E);
  f(s.shared_out, shared ? T * H : 0);
  f(s.shared_saved, shared ? T * d.shared_saved : 0);
  f(s.shared_scale, shared ? T : 0);
  f(s.load_fraction, E);
  f(s.stat_counts, E + 2 + K + 1);
  f(s.stat_sums, 2 * E + detail::kNumStatSums);
  f(s.stat_probs, E);
  f(s.stat_scores, E);
  f(s.stat_top, K);
  f(s.grad_logits, train ? T * E : 0);
  for (auto* v : {&s.clean_logits, &s.noise_logits, &s.noise_eps, &s.grad_noise}) f(*v, d.noisy ? T * E : 0);
  f(s.noisy_sums, d.noisy ? 2 * E : 0);
  f(s.noisy_grads, d.noisy ? 2 * E : 0);
  f(s.grad_shared, train && shared ? T * H : 0);
  f(s.shared_scratch, train && shared ? T * d.shared_inter : 0);
  const bool canon = train && shape.chunks > 1;
  f(s.canon_in, canon ? d.step_recv * H : 0);
  f(s.canon_grad_out, canon ? d.step_recv * H : 0);
  f(s.canon_saved, canon ? d.step_recv * d.expert_saved : 0);
  f(s.canon_grad_saved, canon ? d.step_recv * d.expert_grad_saved : 0);
  f(s.canon_counts, canon ? d.num_local : 0);
  f(s.canon_next, canon ? shape.chunks * d.num_local : 0);
  const std::int64_t send = rows * K, wire = shape.wire_bf16 ? std::max(send, recv) * H : 0;
  for (detail::MoeChunk& k : s.chunks) {
    f(k.token_scratch, train ? 3 * E : 0);
    f(k.noisy_scratch, d.noisy ? E : 0);
    f(k.noisy_top, d.noisy ? K + 1 : 0);
    f(k.send, send * H);
    f(k.combined, send * H);
    f(k.recv, recv * H);
    f(k.expert_in, recv * H);
    f(k.expert_x, train && d.scales_input ? recv * H : 0);
    f(k.expert_out, recv * H);
    f(k.saved, recv * d.expert_saved);
    f(k.grad_in, train ? recv * H : 0);
    f(k.grad_saved, train ? recv * d.expert_grad_saved : 0);
    f(k.grad_w, train ? rows * K : 0);
    f(k.entry_grad_w, train ? recv * K : 0);
    f(k.slot_grad_w, train ? send * K : 0);
    f(k.sum_scratch, H);
    f(k.node_in, d.forward_in * H);
    f(k.node_out, d.forward_out * H);
    f(k.node_in_w, train ? d.forward_in * K : 0);
    f(k.node_out_w, train ? d.forward_out * K : 0);
    f(k.wire_out, wire);
    f(k.wire_in, wire);
  }
}

template <class V>
void reserve_elements(V& v, std::int64_t n) {
  v.reserve(static_cast<std::size_t>(n));
}

}  // namespace

std::size_t MoeForwardContext::workspace_bytes() const {
  std::size_t bytes = 0;
  for_each_buffer(*state_, state_->shape, WorkspaceDims{},
                  [&](auto& v, std::int64_t) { bytes += v.capacity() * sizeof(v[0]); });
  return bytes;
}

ArgumentCheck MoeLayer::can_implement(const MoeForwardArguments& a) const {
  if (a.num_tokens < 0) return {"num_tokens", "must not be negative, got " + std::to_string(a.num_tokens)};
  if (a.num_tokens > 0 && !a.x) return {"x", "is null for " + std::to_string(a.num_tokens) + " tokens"};
  if (a.num_tokens > 0 && !a.y) return {"y", "is null for " + std::to_string(a.num_tokens) + " tokens"};
  if (a.schedule.chunks < 1) return {"schedule.chunks", "must be at least 1, got " + std::to_string(a.schedule.chunks)};
  if (a.schedule.overlap && !a.schedule.executor) return {"schedule.executor", "is required with schedule.overlap"};
  return {};
}

ArgumentCheck MoeLayer::can_implement(const MoeBackwardArguments& a) const {
  if (!a.context || !a.context->state_->forwarded)
    return {"context", "holds no forward: pass the forward's context to both calls"};
  const detail::MoeStepState& s = *a.context->state_;
  if (s.num_tokens > 0 && (!a.grad_y || !a.grad_x))
    return {a.grad_y ? "grad_x" : "grad_y", "is null for " + std::to_string(s.num_tokens) + " tokens"};
  if (a.schedule.chunks != static_cast<int>(s.chunks.size()))
    return {"schedule.chunks", "is " + std::to_string(a.schedule.chunks) + " but the forward ran " +
                                   std::to_string(s.chunks.size()) + " chunks"};
  if (a.schedule.overlap && !a.schedule.executor) return {"schedule.executor", "is required with schedule.overlap"};
  if (!s.shape.training) return {"context", "was initialized without training: no backward buffers"};
  return {};
}

namespace {

WorkspaceDims workspace_dims(const MoeConfig& config, const ExpertPlacement& placement, int rank,
                             const ExpertBackend& experts, const GatedMlp* shared, const MoeWorkspaceShape& shape,
                             const std::vector<std::int64_t>& tokens_per_rank, const MoeLayerOptions& options) {
  const double capacity_factor = options.capacity.capacity_factor;
  const bool hierarchical = options.exchange.hierarchical();
  WorkspaceDims d;
  d.H = config.hidden_size;
  d.scales_input = config.weight_scales_input;
  d.noisy = options.noisy_gating.enabled && shape.training;
  d.E = config.num_experts;
  d.K = config.top_k;
  d.T = shape.max_tokens;
  d.chunk_rows = chunk_rows_bound(shape.max_tokens, shape.chunks);
  d.num_local = placement.num_local(rank);
  // The worst routing: every slot of every rank that can reach this rank's
  // experts does (at most min(K, num_local) per token), or, with a capacity,
  // each local expert full from every rank.
  const std::int64_t per_token = std::min(d.K, d.num_local);
  for (const std::int64_t t : tokens_per_rank) {
    std::int64_t chunk = chunk_rows_bound(t, shape.chunks) * per_token, step = t * per_token;
    if (capacity_factor > 0.0) {
      const auto cap = [&](std::int64_t rows) {
        return d.num_local * static_cast<std::int64_t>(std::ceil(capacity_factor * static_cast<double>(rows * d.K) /
                                                                 static_cast<double>(d.E)));
      };
      chunk = std::min(chunk, cap(chunk_rows_bound(t, shape.chunks)));
      step = std::min(step, shape.chunks * cap(chunk_rows_bound(t, shape.chunks)));
    }
    d.chunk_recv += chunk;
    d.step_recv += step;
    // A forwarder takes at most one row per token of each sender and passes
    // it on to at most min(K, R) ranks.
    if (hierarchical) d.forward_in += chunk_rows_bound(t, shape.chunks);
  }
  d.forward_out = d.forward_in * std::min<std::int64_t>(d.K, static_cast<std::int64_t>(tokens_per_rank.size()));
  d.expert_saved = experts.saved_per_row();
  d.expert_grad_saved = experts.grad_saved_per_row();
  d.shared_saved = shared ? shared->saved_per_row() : 0;
  d.shared_inter = shared ? shared->inter() : 0;
  return d;
}

void check_shape(const MoeWorkspaceShape& shape) {
  check_arg(shape.max_tokens >= 0, "shape.max_tokens must not be negative, got " + std::to_string(shape.max_tokens));
  check_arg(shape.chunks >= 1, "shape.chunks must be at least 1, got " + std::to_string(shape.chunks));
}

}  // namespace

std::size_t MoeLayer::workspace_size(const MoeWorkspaceShape& shape,
                                     const std::vector<std::int64_t>& tokens_per_rank) const {
  check_shape(shape);
  detail::MoeStepState s;
  s.chunks.resize(static_cast<std::size_t>(shape.chunks));
  const WorkspaceDims d =
      workspace_dims(config_, placement_, rank_, *experts_, shared_.get(), shape, tokens_per_rank, options_);
  std::size_t bytes = 0;
  for_each_buffer(s, shape, d, [&](auto& v, std::int64_t n) { bytes += static_cast<std::size_t>(n) * sizeof(v[0]); });
  return bytes;
}

void MoeLayer::initialize(comm::Communicator& comm, const MoeWorkspaceShape& shape, MoeForwardContext* context) {
  check_shape(shape);
  // NOTE: the one collective: the worst routing on this rank depends on how
  // many tokens every other rank may send.
  std::vector<std::int64_t> tokens(static_cast<std::size_t>(comm.size()), 0);
  tokens[static_cast<std::size_t>(comm.rank())] = shape.max_tokens;
  comm.allreduce_sum(tokens.data(), tokens.size());
  detail::MoeStepState& s = state_of(context);
  s.chunks.resize(static_cast<std::size_t>(shape.chunks));
  const WorkspaceDims d = workspace_dims(config_, placement_, rank_, *experts_, shared_.get(), shape, tokens, options_);
  for_each_buffer(s, shape, d, [](auto& v, std::int64_t n) { reserve_elements(v, n); });
  for (detail::MoeChunk& k : s.chunks) {
    k.routing.reserve(d.chunk_rows, d.K, d.E);
    k.plan.reserve(d.chunk_rows, d.chunk_recv, d.forward_in, placement_, rank_, d.K);
    k.router_scratch = RouterScratch(router_);
  }
  s.shape = shape;
  s.initialized = true;
  s.warned_growth = false;
}

}  // namespace switchyard::layers
