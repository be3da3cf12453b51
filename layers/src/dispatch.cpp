#include "switchyard/layers/dispatch.hpp"

#include <cmath>
#include <numeric>
#include <string>

#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {

namespace {

// NOTE: checked before the partition is built, so the user sees this message
// rather than the partition's own.
BlockPartition checked_blocks(std::int64_t num_experts, int num_ranks) {
  check_arg(num_ranks >= 1 && num_ranks <= num_experts, "more ranks than experts: " + std::to_string(num_ranks) +
                                                            " ranks for " + std::to_string(num_experts) +
                                                            " experts (every rank must own at least one expert)");
  return BlockPartition(num_experts, num_ranks);
}

}  // namespace

ExpertPlacement::ExpertPlacement(std::int64_t num_experts, int num_ranks)
    : blocks_(checked_blocks(num_experts, num_ranks)) {}

namespace {

// Marks slots beyond each expert's capacity as dropped (0 in `kept`).
std::int64_t apply_capacity(const RoutingPlan& routing, const CapacityPolicy& capacity, DispatchPlan::Scratch& s) {
  s.kept.assign(routing.expert_idx.size(), 1);
  if (capacity.capacity_factor <= 0.0) return 0;
  const std::int64_t T = routing.num_tokens, K = routing.top_k;
  const auto cap = static_cast<std::int64_t>(
      std::ceil(capacity.capacity_factor * static_cast<double>(T * K) / static_cast<double>(routing.num_experts)));
  s.used.assign(static_cast<std::size_t>(routing.num_experts), 0);
  std::int64_t dropped = 0;
  for (std::int64_t j = 0; j < K; ++j) {
    for (std::int64_t t = 0; t < T; ++t) {
      const auto e = routing.expert_idx[t * K + j];
      if (s.used[e] < cap) {
        ++s.used[e];
      } else {
        s.kept[t * K + j] = 0;
        ++dropped;
      }
    }
  }
  return dropped;
}

// out = exclusive prefix sums of v, in out's own storage.
void exclusive_scan(const std::vector<std::int64_t>& v, std::vector<std::int64_t>* out) {
  out->resize(v.size());
  std::exclusive_scan(v.begin(), v.end(), out->begin(), std::int64_t{0});
}

// Sender side: each kept slot's row in send order (by expert id, which is
// also by destination rank since placement is contiguous), and the counts
// per (destination rank, its local expert) padded to max_local per rank.
void plan_send(const RoutingPlan& routing, const ExpertPlacement& placement, DispatchPlan& plan) {
  DispatchPlan::Scratch& s = plan.scratch;
  const std::int64_t T = routing.num_tokens, K = routing.top_k, E = routing.num_experts;
  const std::int64_t L = placement.max_local();
  const int R = placement.num_ranks();
  s.per_expert.assign(static_cast<std::size_t>(E), 0);
  for (std::size_t i = 0; i < s.kept.size(); ++i)
    if (s.kept[i]) ++s.per_expert[routing.expert_idx[i]];
  exclusive_scan(s.per_expert, &s.expert_cursor);
  plan.send_token.resize(static_cast<std::size_t>(s.expert_cursor.back() + s.per_expert.back()));
  plan.slot_row.assign(static_cast<std::size_t>(T * K), -1);
  for (std::int64_t i = 0; i < T * K; ++i) {
    if (!s.kept[i]) continue;
    const std::int64_t row = s.expert_cursor[routing.expert_idx[i]]++;
    plan.slot_row[i] = row;
    plan.send_token[row] = i / K;
  }
  s.send_table.assign(static_cast<std::size_t>(R * L), 0);
  plan.send_counts.assign(static_cast<std::size_t>(R), 0);
  for (std::int64_t e = 0; e < E; ++e) {
    const int r = placement.owner(e);
    s.send_table[r * L + (e - placement.first_expert(r))] = s.per_expert[e];
    plan.send_counts[r] += s.per_expert[e];
  }
  exclusive_scan(plan.send_counts, &plan.send_offsets);
}

// Receiver side: received rows arrive by source rank, then local expert; the
// experts want them grouped by local expert, then source rank.
void plan_recv(const ExpertPlacement& placement, int me, DispatchPlan& plan) {
  DispatchPlan::Scratch& s = plan.scratch;
  const std::int64_t L = placement.max_local(), num_local = placement.num_local(me);
  const int R = placement.num_ranks();
  plan.recv_counts.assign(static_cast<std::size_t>(R), 0);
  plan.local_expert_counts.assign(static_cast<std::size_t>(num_local), 0);
  plan.recv_table.resize(static_cast<std::size_t>(R * num_local));
  for (int r = 0; r < R; ++r)
    for (std::int64_t j = 0; j < num_local; ++j) {
      const std::int64_t rows = s.recv_table[r * L + j];
      plan.recv_table[r * num_local + j] = rows;
      plan.recv_counts[r] += rows;
      plan.local_expert_counts[j] += rows;
    }
  exclusive_scan(plan.recv_counts, &plan.recv_offsets);
  exclusive_scan(plan.local_expert_counts, &s.grouped_cursor);
  plan.recv_to_grouped.resize(static_cast<std::size_t>(plan.recv_offsets.back() + plan.recv_counts.back()));
  std::int64_t row = 0;
  for (int r = 0; r < R; ++r)
    for (std::int64_t j = 0; j < num_local; ++j)
      for (std::int64_t i = 0; i < s.recv_table[r * L + j]; ++i) plan.recv_to_grouped[row++] = s.grouped_cursor[j]++;
}

}  // namespace

void DispatchPlan::reserve(std::int64_t max_tokens, std::int64_t max_recv, const ExpertPlacement& placement, int rank,
                           std::int64_t top_k) {
  const auto R = static_cast<std::size_t>(placement.num_ranks());
  const auto E = static_cast<std::size_t>(placement.num_experts());
  const auto slots = static_cast<std::size_t>(max_tokens * top_k);
  const auto num_local = static_cast<std::size_t>(placement.num_local(rank));
  for (auto* v : {&send_counts, &send_offsets, &recv_counts, &recv_offsets}) v->reserve(R);
  send_token.reserve(slots);
  slot_row.reserve(slots);
  recv_to_grouped.reserve(static_cast<std::size_t>(max_recv));
  local_expert_counts.reserve(num_local);
  recv_table.reserve(R * num_local);
  scratch.kept.reserve(slots);
  for (auto* v : {&scratch.per_expert, &scratch.expert_cursor, &scratch.used}) v->reserve(E);
  scratch.send_table.reserve(R * static_cast<std::size_t>(placement.max_local()));
  scratch.recv_table.reserve(R * static_cast<std::size_t>(placement.max_local()));
  scratch.grouped_cursor.reserve(num_local);
}

void plan_dispatch(const RoutingPlan& routing, const ExpertPlacement& placement, const CapacityPolicy& capacity,
                   comm::Communicator& comm, DispatchPlan* plan) {
  check(placement.num_ranks() == comm.size(), ErrorCode::kInternal, "placement was made for another rank count");
  plan->num_dropped = apply_capacity(routing, capacity, plan->scratch);
  plan_send(routing, placement, *plan);
  plan->scratch.recv_table.resize(plan->scratch.send_table.size());
  comm.alltoall(plan->scratch.send_table.data(), plan->scratch.recv_table.data(),
                static_cast<std::size_t>(placement.max_local()));
  plan_recv(placement, comm.rank(), *plan);
}

DispatchPlan plan_dispatch(const RoutingPlan& routing, const ExpertPlacement& placement, const CapacityPolicy& capacity,
                           comm::Communicator& comm) {
  DispatchPlan plan;
  plan_dispatch(routing, placement, capacity, comm, &plan);
  return plan;
}

}  // namespace switchyard::layers
