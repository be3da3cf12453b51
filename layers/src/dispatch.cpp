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

// Marks slots beyond each expert's capacity as dropped (-1 in `kept`).
std::int64_t apply_capacity(const RoutingPlan& routing, const CapacityPolicy& capacity, std::vector<char>* kept) {
  kept->assign(routing.expert_idx.size(), 1);
  if (capacity.capacity_factor <= 0.0) return 0;
  const std::int64_t T = routing.num_tokens, K = routing.top_k;
  const auto cap = static_cast<std::int64_t>(
      std::ceil(capacity.capacity_factor * static_cast<double>(T * K) / static_cast<double>(routing.num_experts)));
  std::vector<std::int64_t> used(static_cast<std::size_t>(routing.num_experts), 0);
  std::int64_t dropped = 0;
  for (std::int64_t j = 0; j < K; ++j) {
    for (std::int64_t t = 0; t < T; ++t) {
      const auto e = routing.expert_idx[t * K + j];
      if (used[e] < cap) {
        ++used[e];
      } else {
        (*kept)[t * K + j] = 0;
        ++dropped;
      }
    }
  }
  return dropped;
}

std::vector<std::int64_t> exclusive_scan(const std::vector<std::int64_t>& v) {
  std::vector<std::int64_t> out(v.size(), 0);
  std::exclusive_scan(v.begin(), v.end(), out.begin(), std::int64_t{0});
  return out;
}

}  // namespace

DispatchPlan plan_dispatch(const RoutingPlan& routing, const ExpertPlacement& placement, const CapacityPolicy& capacity,
                           comm::Communicator& comm) {
  const int R = comm.size(), me = comm.rank();
  check(placement.num_ranks() == R, ErrorCode::kInternal, "placement was made for another rank count");
  const std::int64_t T = routing.num_tokens, K = routing.top_k, E = routing.num_experts;
  const std::int64_t L = placement.max_local();
  DispatchPlan plan;
  std::vector<char> kept;
  plan.num_dropped = apply_capacity(routing, capacity, &kept);

  // Rows per expert from this rank, then positions in send order (by expert
  // id, which is also by destination rank since placement is contiguous).
  std::vector<std::int64_t> per_expert(static_cast<std::size_t>(E), 0);
  for (std::size_t s = 0; s < kept.size(); ++s)
    if (kept[s]) ++per_expert[routing.expert_idx[s]];
  std::vector<std::int64_t> expert_offset = exclusive_scan(per_expert);
  const std::int64_t num_send = expert_offset.back() + per_expert.back();
  plan.send_token.resize(static_cast<std::size_t>(num_send));
  plan.slot_row.assign(static_cast<std::size_t>(T * K), -1);
  std::vector<std::int64_t> cursor = expert_offset;
  for (std::int64_t s = 0; s < T * K; ++s) {
    if (!kept[s]) continue;
    const std::int64_t row = cursor[routing.expert_idx[s]]++;
    plan.slot_row[s] = row;
    plan.send_token[row] = s / K;
  }

  // Counts per (destination rank, its local expert), padded to L per rank.
  std::vector<std::int64_t> send_table(static_cast<std::size_t>(R * L), 0), recv_table(send_table.size());
  plan.send_counts.assign(R, 0);
  for (std::int64_t e = 0; e < E; ++e) {
    const int r = placement.owner(e);
    send_table[r * L + (e - placement.first_expert(r))] = per_expert[e];
    plan.send_counts[r] += per_expert[e];
  }
  plan.send_offsets = exclusive_scan(plan.send_counts);
  comm.alltoall(send_table.data(), recv_table.data(), static_cast<std::size_t>(L));

  // Received rows arrive by source rank, then local expert; the experts want
  // them grouped by local expert, then source rank.
  const std::int64_t num_local = placement.num_local(me);
  plan.recv_counts.assign(R, 0);
  plan.local_expert_counts.assign(static_cast<std::size_t>(num_local), 0);
  plan.recv_table.resize(static_cast<std::size_t>(R * num_local));
  for (int s = 0; s < R; ++s)
    for (std::int64_t j = 0; j < num_local; ++j) {
      plan.recv_table[s * num_local + j] = recv_table[s * L + j];
      plan.recv_counts[s] += recv_table[s * L + j];
      plan.local_expert_counts[j] += recv_table[s * L + j];
    }
  plan.recv_offsets = exclusive_scan(plan.recv_counts);
  std::vector<std::int64_t> grouped_cursor = exclusive_scan(plan.local_expert_counts);
  plan.recv_to_grouped.resize(static_cast<std::size_t>(plan.recv_offsets.back() + plan.recv_counts.back()));
  std::int64_t row = 0;
  for (int s = 0; s < R; ++s)
    for (std::int64_t j = 0; j < num_local; ++j)
      for (std::int64_t i = 0; i < recv_table[s * L + j]; ++i) plan.recv_to_grouped[row++] = grouped_cursor[j]++;
  return plan;
}

}  // namespace switchyard::layers
