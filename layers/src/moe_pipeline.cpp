// The MoE forward cut into token chunks and run as a task graph, so that the
// exchange of one chunk hides behind the expert compute of another.
#include <algorithm>
#include <cmath>

#include "pipeline_chunk.hpp"
#include "switchyard/kernels/permute.hpp"
#include "switchyard/layers/moe_layer.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {
void MoeLayer::forward_pipelined(comm::Communicator& comm, const float* x, std::int64_t num_tokens, float* y,
                                 ForwardStats* stats, const PipelineOptions& options) {
  check_arg(options.chunks >= 1, "--chunks must be at least 1, got " + std::to_string(options.chunks));
  check(!options.overlap || options.executor != nullptr, ErrorCode::kInternal, "overlap needs an executor");
  const std::int64_t H = config_.hidden_size, E = config_.num_experts, K = config_.top_k;
  const int C = options.chunks;
  while (static_cast<int>(pipeline_.size()) < C) pipeline_.push_back(std::make_unique<PipelineChunk>());
  std::vector<PipelineChunk*> chunks;
  for (int c = 0; c < C; ++c) chunks.push_back(pipeline_[c].get());
  for (int c = 0; c < C; ++c) {
    chunks[c]->begin = c * (num_tokens / C) + std::min<std::int64_t>(c, num_tokens % C);
    chunks[c]->rows = num_tokens / C + (c < num_tokens % C ? 1 : 0);
  }
  // The pieces of one chunk, in data-flow order.
  auto route_chunk = [&](PipelineChunk& k) {
    k.logits.resize(static_cast<std::size_t>(k.rows * E));
    router_linear_->run(x + k.begin * H, k.rows, k.logits.data());
    route(router_, k.logits.data(), selection_bias_.empty() ? nullptr : selection_bias_.data(), k.rows, &k.routing);
  };
  auto plan_chunk = [&](PipelineChunk& k) { k.plan = plan_dispatch(k.routing, placement_, options_.capacity, comm); };
  auto permute_chunk = [&](PipelineChunk& k) {
    k.send.resize(static_cast<std::size_t>(k.plan.num_send() * H));
    kernels::gather_rows(x + k.begin * H, k.plan.send_token.data(), k.plan.num_send(), H, k.send.data());
  };
  auto dispatch_chunk = [&](PipelineChunk& k) {
    k.recv.resize(static_cast<std::size_t>(k.plan.num_recv() * H));
    comm.alltoallv(k.send.data(), k.plan.send_counts.data(), k.plan.send_offsets.data(), k.recv.data(),
                   k.plan.recv_counts.data(), k.plan.recv_offsets.data(), H * sizeof(float));
  };
  auto experts_chunk = [&](PipelineChunk& k) {
    const std::int64_t n = k.plan.num_recv();
    k.grouped.resize(static_cast<std::size_t>(n * H));
    k.grouped_out.resize(static_cast<std::size_t>(n * H));
    k.saved.resize(static_cast<std::size_t>(n * experts_->saved_per_row()));
    kernels::scatter_rows(k.recv.data(), k.plan.recv_to_grouped.data(), n, H, k.grouped.data());
    experts_->forward(k.grouped.data(), k.plan.local_expert_counts.data(), k.grouped_out.data(), k.saved.data());
    kernels::gather_rows(k.grouped_out.data(), k.plan.recv_to_grouped.data(), n, H, k.recv.data());
  };
  auto combine_chunk = [&](PipelineChunk& k) {
    k.combined.resize(k.send.size());
    comm.alltoallv(k.recv.data(), k.plan.recv_counts.data(), k.plan.recv_offsets.data(), k.combined.data(),
                   k.plan.send_counts.data(), k.plan.send_offsets.data(), H * sizeof(float));
  };
  auto unpermute_chunk = [&](PipelineChunk& k) {
    float* out = y + k.begin * H;
    std::fill(out, out + k.rows * H, 0.0f);
    kernels::unpermute_weighted_sum(k.combined.data(), k.plan.slot_row.data(), k.routing.weights.data(), k.rows, K, H,
                                    out);
    add_shared_experts(x + k.begin * H, k.rows, out, &k.shared_out, &k.shared_saved, &k.shared_scale);
  };

  if (!options.overlap) {
    for (auto* chunk : chunks) {
      PipelineChunk& k = *chunk;
      route_chunk(k);
      plan_chunk(k);
      permute_chunk(k);
      dispatch_chunk(k);
      experts_chunk(k);
      combine_chunk(k);
      unpermute_chunk(k);
    }
  } else {
    // NOTE: communication tasks run on one thread in id order, the same on
    // every rank; emplacing all plans, then all dispatches, then all combines
    // lets chunk c+1's dispatch go out while chunk c's experts compute.
    TaskGraph g;
    std::vector<Task> route(C), plan(C), permute(C), dispatch(C), experts(C), combine(C), unpermute(C);
    auto name = [](const char* what, int c) { return std::string(what) + "[" + std::to_string(c) + "]"; };
    for (int c = 0; c < C; ++c) route[c] = g.emplace(name("route", c), [&, c] { route_chunk(*chunks[c]); });
    for (int c = 0; c < C; ++c)
      plan[c] = g.emplace(
          name("plan", c), [&, c] { plan_chunk(*chunks[c]); }, TaskKind::kComm);
    for (int c = 0; c < C; ++c) permute[c] = g.emplace(name("permute", c), [&, c] { permute_chunk(*chunks[c]); });
    for (int c = 0; c < C; ++c)
      dispatch[c] = g.emplace(
          name("dispatch", c), [&, c] { dispatch_chunk(*chunks[c]); }, TaskKind::kComm);
    for (int c = 0; c < C; ++c) experts[c] = g.emplace(name("experts", c), [&, c] { experts_chunk(*chunks[c]); });
    for (int c = 0; c < C; ++c)
      combine[c] = g.emplace(
          name("combine", c), [&, c] { combine_chunk(*chunks[c]); }, TaskKind::kComm);
    for (int c = 0; c < C; ++c) unpermute[c] = g.emplace(name("unpermute", c), [&, c] { unpermute_chunk(*chunks[c]); });
    for (int c = 0; c < C; ++c) {
      route[c].precede(plan[c]);
      plan[c].precede(permute[c]);
      permute[c].precede(dispatch[c]);
      dispatch[c].precede(experts[c]);
      experts[c].precede(combine[c]);
      combine[c].precede(unpermute[c]);
      // The expert backend keeps scratch per call: one chunk's experts at a time.
      if (c > 0) experts[c - 1].precede(experts[c]);
    }
    options.executor->run(g);
  }

  if (!stats) return;
  std::vector<std::int64_t> counts(static_cast<std::size_t>(E + 2), 0);
  for (auto* k : chunks) {
    for (std::int64_t e = 0; e < E; ++e) counts[e] += k->routing.expert_counts[e];
    counts[E] += k->rows;
    counts[E + 1] += k->plan.num_dropped;
  }
  comm.allreduce_sum(counts.data(), counts.size());
  stats->expert_load.assign(counts.begin(), counts.begin() + E);
  stats->num_tokens = counts[E];
  stats->num_dropped = counts[E + 1];
}

}  // namespace switchyard::layers
