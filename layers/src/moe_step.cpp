// A step of the MoE layer as a task graph: each token chunk is routed,
// exchanged, computed and combined as its own pieces, so that one chunk's
// exchange hides behind another's expert compute (docs/task-graph.md). The
// graphs are built once per chunk count and reused; their tasks work on the
// context of the step that runs them (step_).
#include <cstring>
#include <new>
#include <string>

#include "router_grad.hpp"
#include "step_graph.hpp"
#include "step_state.hpp"
#include "switchyard/kernels/packed_linear.hpp"
#include "switchyard/kernels/permute.hpp"
#include "switchyard/layers/moe_layer.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {

MoeLayer::~MoeLayer() = default;
MoeLayer::MoeLayer(MoeLayer&&) noexcept = default;

MoeLayer::StepGraph& MoeLayer::step_graph(int chunks, bool backward) {
  auto& slot = graphs_[{chunks, backward}];
  if (!slot) {
    slot = std::make_unique<StepGraph>();
    if (backward) {
      build_backward(*slot, chunks);
    } else {
      build_forward(*slot, chunks);
    }
  }
  return *slot;
}

void MoeLayer::dump_graph(std::ostream& out, int chunks, bool backward) {
  check_arg(chunks >= 1, "chunks must be at least 1, got " + std::to_string(chunks));
  step_graph(chunks, backward).graph.dump_dot(out);
}

void MoeLayer::run_step(comm::Communicator& comm, StepGraph& g, const StepSchedule& schedule, PhaseTimer* timer) {
  std::string error;
  int code = 0;
  try {
    if (schedule.overlap) {
      schedule.executor->run(g.graph);
    } else if (schedule.executor) {
      schedule.executor->run_in_sequence(g.graph);
    } else {
      run_in_sequence(g.graph);
    }
  } catch (const Error& e) {
    error = e.what();
    code = static_cast<int>(e.code());
  } catch (const std::bad_alloc&) {
    error = error_code_name(ErrorCode::kOutOfMemory);
    code = static_cast<int>(ErrorCode::kOutOfMemory);
  }
  // NOTE: a failed task still let the step's exchanges run (Executor::run),
  // so every rank gets here and agrees; then all throw the same error.
  comm::agree_on_errors(comm, error, code);
  if (!timer) return;
  for (std::size_t id = 0; id < g.phase.size(); ++id) timer->add(g.phase[id], g.graph.seconds(id));
}

// ---- forward pieces ----------------------------------------------------------

void MoeLayer::route_chunk(detail::MoeChunk& k) {
  check_arg(step_.failure.empty(), step_.failure);
  const std::int64_t H = config_.hidden_size, E = config_.num_experts;
  detail::MoeStepState& c = *step_.ctx;
  float* logits = c.logits.data() + k.begin * E;
  if (c.noisy) {
    noisy_route(k, logits);
  } else {
    router_linear_->run(c.x + k.begin * H, k.rows, logits);
  }
  route(router_, logits, selection_bias_.empty() ? nullptr : selection_bias_.data(), k.rows, &k.routing,
        &k.router_scratch);
  k.routed = true;
}

void MoeLayer::plan_chunk(detail::MoeChunk& k) {
  if (!k.routed) {
    // An earlier task failed: plan nothing, so the exchange peers expect still happens.
    k.routing.num_tokens = 0;
    k.routing.num_experts = config_.num_experts;
    k.routing.top_k = config_.top_k;
    k.routing.expert_idx.clear();
    k.routing.weights.clear();
    k.routing.expert_counts.assign(static_cast<std::size_t>(config_.num_experts), 0);
  }
  plan_dispatch(k.routing, placement_, options_.capacity, options_.exchange, *step_.comm, &k.plan, k.begin);
}

void MoeLayer::permute_chunk(detail::MoeChunk& k) {
  const std::int64_t H = config_.hidden_size;
  k.send.resize(static_cast<std::size_t>(k.plan.num_send() * H));
  kernels::gather_rows(step_.ctx->x + k.begin * H, k.plan.send_token.data(), k.plan.num_send(), H, k.send.data());
}

namespace {

// One hop of rows: they leave by out counts and offsets per peer and land
// by in counts and offsets.
struct Hop {
  const std::vector<std::int64_t>*out_counts, *out_offsets, *in_counts, *in_offsets;
  std::int64_t out_rows() const { return out_offsets->back() + out_counts->back(); }
  std::int64_t in_rows() const { return in_offsets->back() + in_counts->back(); }
  Hop reversed() const { return {in_counts, in_offsets, out_counts, out_offsets}; }
};

// From the token's rank to its node's forwarder (hierarchical) or straight
// to the experts' rank (flat).
Hop first_hop(const DispatchPlan& p) {
  if (p.hierarchical()) return {&p.send_counts, &p.send_offsets, &p.forward.in_counts, &p.forward.in_offsets};
  return {&p.send_counts, &p.send_offsets, &p.recv_counts, &p.recv_offsets};
}

// From the forwarder to the experts' ranks of its node.
Hop second_hop(const DispatchPlan& p) {
  return {&p.forward.out_counts, &p.forward.out_offsets, &p.recv_counts, &p.recv_offsets};
}

// One alltoallv of whole rows of `width` floats along `hop`; with `wire`
// given, the rows travel as bf16 through its buffers.
std::size_t move_rows(comm::Communicator& comm, const Hop& hop, std::int64_t width, std::vector<float>& from,
                      std::vector<float>& to, detail::MoeChunk* wire) {
  const std::int64_t out_rows = hop.out_rows(), in_rows = hop.in_rows();
  // NOTE: sizes are set here too, so that after a failed compute task the
  // exchange still runs with the sizes peers expect.
  from.resize(static_cast<std::size_t>(out_rows * width));
  to.resize(static_cast<std::size_t>(in_rows * width));
  if (!wire) {
    comm.alltoallv(from.data(), hop.out_counts->data(), hop.out_offsets->data(), to.data(), hop.in_counts->data(),
                   hop.in_offsets->data(), width * sizeof(float));
    return static_cast<std::size_t>(out_rows * width) * sizeof(float);
  }
  wire->wire_out.resize(from.size());
  wire->wire_in.resize(to.size());
  kernels::convert_to_bf16(from.data(), out_rows * width, wire->wire_out.data());
  comm.alltoallv(wire->wire_out.data(), hop.out_counts->data(), hop.out_offsets->data(), wire->wire_in.data(),
                 hop.in_counts->data(), hop.in_offsets->data(), width * sizeof(std::uint16_t));
  kernels::convert_from_bf16(wire->wire_in.data(), in_rows * width, to.data());
  return static_cast<std::size_t>(out_rows * width) * sizeof(std::uint16_t);
}

// Token rows to the experts' ranks: the dispatch, and dy in the backward.
std::size_t to_experts(comm::Communicator& comm, const DispatchPlan& p, std::int64_t H, std::vector<float>& from,
                       std::vector<float>& to, detail::MoeChunk& k, detail::MoeChunk* wire) {
  if (!p.hierarchical()) return move_rows(comm, first_hop(p), H, from, to, wire);
  std::size_t bytes = move_rows(comm, first_hop(p), H, from, k.node_in, wire);
  const NodeForward& f = p.forward;
  k.node_out.resize(static_cast<std::size_t>(f.num_out() * H));
  kernels::gather_rows(k.node_in.data(), f.out_source.data(), f.num_out(), H, k.node_out.data());
  return bytes + move_rows(comm, second_hop(p), H, k.node_out, to, wire);
}

// Each rank's partial sums back to the tokens' ranks (the combine, and dL/dx
// in the backward), summed inside the node first when hierarchical; with
// `weights`, also each slot's f32 dL/dw from entry order to slot-entry order.
std::size_t to_tokens(comm::Communicator& comm, const DispatchPlan& p, std::int64_t H, std::vector<float>& from,
                      std::vector<float>& to, detail::MoeChunk& k, detail::MoeChunk* wire, bool weights) {
  const std::int64_t K = p.top_k;
  if (!p.hierarchical()) {
    std::size_t bytes = move_rows(comm, first_hop(p).reversed(), H, from, to, wire);
    if (weights) bytes += move_rows(comm, first_hop(p).reversed(), K, k.entry_grad_w, k.slot_grad_w, nullptr);
    return bytes;
  }
  const NodeForward& f = p.forward;
  std::size_t bytes = move_rows(comm, second_hop(p).reversed(), H, from, k.node_out, wire);
  k.node_in.resize(static_cast<std::size_t>(f.num_in() * H));
  kernels::sum_entry_rows(k.node_out.data(), f.in_parts.data(), nullptr, f.num_in(), K, H, k.node_in.data());
  bytes += move_rows(comm, first_hop(p).reversed(), H, k.node_in, to, wire);
  if (!weights) return bytes;
  bytes += move_rows(comm, second_hop(p).reversed(), K, k.entry_grad_w, k.node_out_w, nullptr);
  k.node_in_w.assign(static_cast<std::size_t>(f.num_in() * K), 0.0f);
  for (std::size_t e = 0; e < k.node_in_w.size(); ++e)
    if (f.in_entry_part[e] >= 0) k.node_in_w[e] = k.node_out_w[f.in_entry_part[e]];
  return bytes + move_rows(comm, first_hop(p).reversed(), K, k.node_in_w, k.slot_grad_w, nullptr);
}

kernels::TokenRows token_rows(const DispatchPlan& p) {
  return {.begin = p.token_row_begin.data(), .rows = p.token_rows.data(), .group = p.token_row_node.data()};
}

}  // namespace

detail::MoeChunk* MoeLayer::wire(detail::MoeChunk& k) const { return step_.wire_bf16 ? &k : nullptr; }

// NOTE: flat sums a token's rank rows per node on the token's rank; with
// bf16 rows, rounding each node's sum as a forwarder's bf16 row would be
// keeps flat and hierarchical bitwise equal.
bool MoeLayer::round_node_sums(const detail::MoeChunk& k) const { return step_.wire_bf16 && !k.plan.hierarchical(); }

std::size_t MoeLayer::dispatch_chunk(detail::MoeChunk& k) {
  return to_experts(*step_.comm, k.plan, config_.hidden_size, k.send, k.recv, k, wire(k));
}

// A received row becomes one expert row per slot it carries; each row
// goes back as the weighted sum of its slots' outputs.
void MoeLayer::experts_chunk(detail::MoeChunk& k) {
  const DispatchPlan& p = k.plan;
  const std::int64_t H = config_.hidden_size, n = p.num_slots();
  k.expert_in.resize(static_cast<std::size_t>(n * H));
  k.expert_out.resize(static_cast<std::size_t>(n * H));
  k.saved.resize(static_cast<std::size_t>(n * experts_->saved_per_row()));
  kernels::gather_rows(k.recv.data(), p.grouped_source.data(), n, H, k.expert_in.data());
  const bool scale_input = config_.weight_scales_input;
  if (scale_input) {  // E(w x): a backward needs x for dL/dw
    if (step_.ctx->for_backward) k.expert_x.assign(k.expert_in.begin(), k.expert_in.end());
    for (std::int64_t g = 0; g < n; ++g)
      for (std::int64_t h = 0; h < H; ++h) k.expert_in[g * H + h] *= p.grouped_weight[g];
  }
  experts_->forward(k.expert_in.data(), p.local_expert_counts.data(), k.expert_out.data(), k.saved.data());
  kernels::sum_entry_rows(k.expert_out.data(), p.entry_grouped.data(), scale_input ? nullptr : p.grouped_weight.data(),
                          p.num_recv(), p.top_k, H, k.recv.data());
}

std::size_t MoeLayer::combine_chunk(detail::MoeChunk& k) {
  return to_tokens(*step_.comm, k.plan, config_.hidden_size, k.recv, k.combined, k, wire(k), false);
}

void MoeLayer::unpermute_chunk(detail::MoeChunk& k) {
  const std::int64_t H = config_.hidden_size;
  detail::MoeStepState& c = *step_.ctx;
  float* y = step_.y + k.begin * H;
  k.sum_scratch.resize(static_cast<std::size_t>(H));
  kernels::sum_token_rows(k.combined.data(), token_rows(k.plan), k.rows, H, k.sum_scratch.data(), y,
                          round_node_sums(k));
  if (shared_)
    add_shared_experts(c.x + k.begin * H, k.rows, y, c.shared_out.data() + k.begin * H,
                       c.shared_saved.data() + k.begin * shared_->saved_per_row(), c.shared_scale.data() + k.begin);
}

// Task ids set the communication thread's order (the same on every rank):
// plans, then dispatch 0 and 1, then combine c right after dispatch c + 1,
// so that while chunk c's experts compute, the link carries chunk c + 1's
// dispatch and chunk c - 1's combine. Compute tasks are also taken in id order.
void MoeLayer::build_forward(StepGraph& g, int C) {
  std::vector<Task> route(C), plan(C), permute(C), dispatch(C), experts(C), combine(C), unpermute(C);
  auto chunk = [this](int c) -> detail::MoeChunk& { return step_.ctx->chunks[c]; };
  auto add_dispatch = [&](int c) {
    if (c < C) dispatch[c] = g.add_comm("dispatch", c, [=, this] { return dispatch_chunk(chunk(c)); });
  };
  for (int c = 0; c < C; ++c) route[c] = g.add("route", c, [=, this] { route_chunk(chunk(c)); });
  for (int c = 0; c < C; ++c)
    plan[c] = g.add_comm("plan", c, [=, this] {
      plan_chunk(chunk(c));
      return std::size_t{0};
    });
  for (int c = 0; c < C; ++c) permute[c] = g.add("permute", c, [=, this] { permute_chunk(chunk(c)); });
  add_dispatch(0);
  add_dispatch(1);
  for (int c = 0; c < C; ++c) {
    experts[c] = g.add("experts", c, [=, this] { experts_chunk(chunk(c)); });
    combine[c] = g.add_comm("combine", c, [=, this] { return combine_chunk(chunk(c)); });
    add_dispatch(c + 2);
    unpermute[c] = g.add("unpermute", c, [=, this] { unpermute_chunk(chunk(c)); });
  }
  for (int c = 0; c < C; ++c) {
    route[c].precede(plan[c]);
    plan[c].precede(permute[c]);
    permute[c].precede(dispatch[c]);
    dispatch[c].precede(experts[c]);
    experts[c].precede(combine[c]);
    combine[c].precede(unpermute[c]);
    // The expert backend is not thread-safe: one chunk's experts at a time.
    if (c > 0) experts[c - 1].precede(experts[c]);
  }
}

// ---- backward pieces ---------------------------------------------------------

void MoeLayer::unpermute_grad_chunk(detail::MoeChunk& k) {
  // Combine backward: dy goes once to each rank that holds the token's
  // slots; that side weights it per slot and computes the weights' gradient.
  check_arg(step_.failure.empty(), step_.failure);
  const std::int64_t H = config_.hidden_size;
  k.send.resize(static_cast<std::size_t>(k.plan.num_send() * H));
  kernels::gather_rows(step_.grad_y + k.begin * H, k.plan.send_token.data(), k.plan.num_send(), H, k.send.data());
}

std::size_t MoeLayer::combine_grad_chunk(detail::MoeChunk& k) {
  // The forward's exchanges with roles swapped: gradients travel to the
  // experts along the dispatch route and come back along the combine route.
  return to_experts(*step_.comm, k.plan, config_.hidden_size, k.send, k.recv, k, wire(k));
}

void MoeLayer::experts_grad_chunk(detail::MoeChunk& k) {
  const DispatchPlan& p = k.plan;
  const std::int64_t H = config_.hidden_size, K = p.top_k, n = p.num_slots();
  const bool scale_input = config_.weight_scales_input;
  k.entry_grad_w.assign(static_cast<std::size_t>(p.num_recv() * K), 0.0f);
  // Each slot of w E(x): dL/dw = dy · (expert output), dL/d(expert output) = w dy.
  // Of E(w x) (Llama 4): dL/d(expert output) = dy, and dL/dw after the expert's backward.
  for (std::int64_t e = 0; e < p.num_recv() * K; ++e) {
    const std::int64_t g = p.entry_grouped[e];
    if (g < 0) continue;
    const float* dy = &k.recv[(e / K) * H];
    float* o = &k.expert_out[g * H];
    if (scale_input) {
      std::copy_n(dy, H, o);
      continue;
    }
    const float w = p.grouped_weight[g];
    float dot = 0.0f;
    for (std::int64_t h = 0; h < H; ++h) {
      dot += dy[h] * o[h];
      o[h] = w * dy[h];
    }
    k.entry_grad_w[e] = dot;
  }
  k.grad_in.resize(static_cast<std::size_t>(n * H));
  k.grad_saved.resize(static_cast<std::size_t>(n * experts_->grad_saved_per_row()));
  experts_->backward_data(k.expert_in.data(), p.local_expert_counts.data(), k.saved.data(), k.expert_out.data(),
                          k.grad_in.data(), k.grad_saved.data());
  if (scale_input) scaled_input_grads(k);
  kernels::sum_entry_rows(k.grad_in.data(), p.entry_grouped.data(), nullptr, p.num_recv(), K, H, k.recv.data());
}

// E(w x): with u = dL/d(w x) from the expert's backward (in grad_in),
// dL/dw = u · x (the kept unscaled rows) and the row's gradient is w u.
void MoeLayer::scaled_input_grads(detail::MoeChunk& k) {
  const DispatchPlan& p = k.plan;
  const std::int64_t H = config_.hidden_size, K = p.top_k;
  for (std::int64_t e = 0; e < p.num_recv() * K; ++e) {
    const std::int64_t g = p.entry_grouped[e];
    if (g < 0) continue;
    float* u = &k.grad_in[g * H];
    const float* x = &k.expert_x[g * H];
    const float w = p.grouped_weight[g];
    float dot = 0.0f;
    for (std::int64_t h = 0; h < H; ++h) {
      dot += u[h] * x[h];
      u[h] *= w;
    }
    k.entry_grad_w[e] = dot;
  }
}

std::size_t MoeLayer::dispatch_grad_chunk(detail::MoeChunk& k) {
  // The routing weights' gradients travel in f32 whatever the rows' precision.
  return to_tokens(*step_.comm, k.plan, config_.hidden_size, k.recv, k.send, k, wire(k), true);
}

// Token side: dL/dx sums the ranks' partial rows; the router's per-token
// part needs every slot's dL/dw, which came back with them.
void MoeLayer::permute_grad_chunk(detail::MoeChunk& k) {
  const std::int64_t H = config_.hidden_size, K = config_.top_k, E = config_.num_experts;
  detail::MoeStepState& c = *step_.ctx;
  const DispatchPlan& p = k.plan;
  k.sum_scratch.resize(static_cast<std::size_t>(H));
  kernels::sum_token_rows(k.send.data(), token_rows(p), k.rows, H, k.sum_scratch.data(), step_.grad_x + k.begin * H,
                          round_node_sums(k));
  k.grad_w.assign(static_cast<std::size_t>(k.rows * K), 0.0f);
  for (std::int64_t s = 0; s < k.rows * K; ++s)
    if (p.slot_entry[s] >= 0) k.grad_w[s] = k.slot_grad_w[p.slot_entry[s]];
  const detail::AuxLossGrad aux{.aux_loss_coef = options_.aux_loss_coef,
                                .z_loss_coef = options_.z_loss_coef,
                                .topology_loss_coef = options_.topology_loss_coef,
                                .entropy_loss_coef = options_.entropy_loss_coef,
                                .load_fraction = &c.load_fraction,
                                .link_cost = &router_.link_cost,
                                .global_tokens = c.global_tokens};
  k.token_scratch.resize(static_cast<std::size_t>(3 * E));
  if (c.noisy) noisy_importance_grads(k);
  detail::router_logits_grad(router_, c.logits.data() + k.begin * E, k.routing, k.grad_w.data(), aux,
                             c.grad_logits.data() + k.begin * E, k.token_scratch.data());
  if (c.noisy) noisy_load_grads(k);
}

void MoeLayer::expert_weight_grads() {
  detail::MoeStepState& st = *step_.ctx;
  std::vector<detail::MoeChunk>& chunks = st.chunks;
  const detail::MoeChunk& first = chunks.front();
  if (chunks.size() == 1) {
    experts_->backward_weights(first.expert_in.data(), first.plan.local_expert_counts.data(), first.saved.data(),
                               first.expert_out.data(), first.grad_saved.data());
    return;
  }
  // Weight gradients are sums over rows, so their rounding depends on the
  // order of the rows: put them in the one-chunk order (by local expert, then
  // source rank, then token; chunks are token ranges in order) first.
  const std::int64_t H = config_.hidden_size, S = experts_->saved_per_row(), G = experts_->grad_saved_per_row();
  const std::int64_t L = static_cast<std::int64_t>(first.plan.local_expert_counts.size());
  const std::int64_t R = static_cast<std::int64_t>(first.plan.recv_counts.size());
  const auto C = static_cast<std::int64_t>(chunks.size());
  std::vector<std::int64_t>& counts = st.canon_counts;
  counts.assign(static_cast<std::size_t>(L), 0);
  std::int64_t n = 0;
  for (const detail::MoeChunk& k : chunks)
    for (std::int64_t j = 0; j < L; ++j) counts[j] += k.plan.local_expert_counts[j];
  for (auto v : counts) n += v;
  st.canon_in.resize(static_cast<std::size_t>(n * H));
  st.canon_grad_out.resize(static_cast<std::size_t>(n * H));
  st.canon_saved.resize(static_cast<std::size_t>(n * S));
  st.canon_grad_saved.resize(static_cast<std::size_t>(n * G));
  // next[c * L + j]: the next row of chunk c's group j to take.
  std::vector<std::int64_t>& next = st.canon_next;
  next.resize(static_cast<std::size_t>(C * L));
  for (std::int64_t c = 0; c < C; ++c) {
    std::int64_t start = 0;
    for (std::int64_t j = 0; j < L; ++j) {
      next[c * L + j] = start;
      start += chunks[c].plan.local_expert_counts[j];
    }
  }
  auto copy = [](std::vector<float>& to, std::int64_t to_row, const std::vector<float>& from, std::int64_t from_row,
                 std::int64_t rows, std::int64_t width) {
    if (rows * width > 0)
      std::memcpy(to.data() + to_row * width, from.data() + from_row * width,
                  static_cast<std::size_t>(rows * width) * sizeof(float));
  };
  std::int64_t row = 0;
  for (std::int64_t j = 0; j < L; ++j)
    for (std::int64_t s = 0; s < R; ++s)
      for (std::int64_t c = 0; c < C; ++c) {
        const detail::MoeChunk& k = chunks[c];
        const std::int64_t rows = k.plan.recv_table[s * L + j], from = next[c * L + j];
        copy(st.canon_in, row, k.expert_in, from, rows, H);
        copy(st.canon_grad_out, row, k.expert_out, from, rows, H);
        copy(st.canon_saved, row, k.saved, from, rows, S);
        copy(st.canon_grad_saved, row, k.grad_saved, from, rows, G);
        next[c * L + j] += rows;
        row += rows;
      }
  experts_->backward_weights(st.canon_in.data(), counts.data(), st.canon_saved.data(), st.canon_grad_out.data(),
                             st.canon_grad_saved.data());
}

// The forward's order with roles swapped: gradients go to the experts
// (combine_grad) two chunks ahead of coming back (dispatch_grad).
void MoeLayer::build_backward(StepGraph& g, int C) {
  std::vector<Task> unpermute(C), combine(C), experts(C), dispatch(C), permute(C);
  auto chunk = [this](int c) -> detail::MoeChunk& { return step_.ctx->chunks[c]; };
  auto add_combine = [&](int c) {
    if (c < C) combine[c] = g.add_comm("combine_grad", c, [=, this] { return combine_grad_chunk(chunk(c)); });
  };
  for (int c = 0; c < C; ++c) unpermute[c] = g.add("unpermute_grad", c, [=, this] { unpermute_grad_chunk(chunk(c)); });
  add_combine(0);
  add_combine(1);
  for (int c = 0; c < C; ++c) {
    experts[c] = g.add("experts_grad", c, [=, this] { experts_grad_chunk(chunk(c)); });
    dispatch[c] = g.add_comm("dispatch_grad", c, [=, this] { return dispatch_grad_chunk(chunk(c)); });
    add_combine(c + 2);
    permute[c] = g.add("permute_grad", c, [=, this] { permute_grad_chunk(chunk(c)); });
  }
  // Once every chunk's rows are back: the weight gradients (in a fixed row
  // order) and the token side (router, shared experts) over all tokens.
  Task weights = g.add("expert_weights_grad", -1, [this] { expert_weight_grads(); });
  Task router = g.add("route_grad", -1, [this] { router_and_shared_grads(); });
  for (int c = 0; c < C; ++c) {
    unpermute[c].precede(combine[c]);
    combine[c].precede(experts[c]);
    experts[c].precede(dispatch[c], weights);
    dispatch[c].precede(permute[c]);
    permute[c].precede(router);
    if (c > 0) experts[c - 1].precede(experts[c]);
  }
}

}  // namespace switchyard::layers
