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

int node_of(const NodeOfRank& node_of_rank, int rank) {
  return node_of_rank.empty() ? 0 : node_of_rank[static_cast<std::size_t>(rank)];
}

// The earlier choice of token t (slots [base, base + j)) that is kept and
// goes to the same rank as choice j, or -1: only a token's first slot on a
// rank opens a row.
std::int64_t same_rank_before(const DispatchPlan::Scratch& s, std::int64_t base, std::int64_t j) {
  for (std::int64_t i = 0; i < j; ++i)
    if (s.kept[base + i] && s.slot_rank[base + i] == s.slot_rank[base + j]) return i;
  return -1;
}

// Sender side, pass 1: each kept slot's destination, and rows (one per
// token and destination) and slots per destination.
void count_send(const RoutingPlan& routing, const ExpertPlacement& placement, DispatchPlan& plan) {
  DispatchPlan::Scratch& s = plan.scratch;
  const std::int64_t T = routing.num_tokens, K = routing.top_k;
  const int R = placement.num_ranks();
  s.slot_rank.assign(static_cast<std::size_t>(T * K), -1);
  plan.send_counts.assign(static_cast<std::size_t>(R), 0);
  plan.send_slot_counts.assign(static_cast<std::size_t>(R), 0);
  for (std::int64_t i = 0; i < T * K; ++i) {
    if (!s.kept[i]) continue;
    s.slot_rank[i] = placement.owner(routing.expert_idx[i]);
    ++plan.send_slot_counts[s.slot_rank[i]];
    if (same_rank_before(s, i - i % K, i % K) < 0) ++plan.send_counts[s.slot_rank[i]];
  }
  exclusive_scan(plan.send_counts, &plan.send_offsets);
}

// Sender side, pass 2: rows in send order (by destination rank, then
// token), each row's slot entries in choice order, and each slot's entry.
void fill_send(const RoutingPlan& routing, const ExpertPlacement& placement, DispatchPlan& plan) {
  DispatchPlan::Scratch& s = plan.scratch;
  const std::int64_t T = routing.num_tokens, K = routing.top_k;
  const std::int64_t num_send = plan.send_offsets.back() + plan.send_counts.back();
  plan.send_token.resize(static_cast<std::size_t>(num_send));
  plan.send_entries.assign(static_cast<std::size_t>(num_send * K), SlotEntry{});
  plan.slot_entry.assign(static_cast<std::size_t>(T * K), -1);
  s.rank_cursor.assign(plan.send_offsets.begin(), plan.send_offsets.end());
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t base = t * K;
    for (std::int64_t j = 0; j < K; ++j) {
      if (!s.kept[base + j]) continue;
      const int r = s.slot_rank[base + j];
      const std::int64_t first = same_rank_before(s, base, j);
      std::int64_t entry = 0;
      if (first < 0) {
        const std::int64_t row = s.rank_cursor[r]++;
        plan.send_token[row] = t;
        entry = row * K;
      } else {
        entry = plan.slot_entry[base + first] - plan.slot_entry[base + first] % K;
        while (plan.send_entries[entry].local_expert >= 0) ++entry;
      }
      plan.slot_entry[base + j] = entry;
      const std::int64_t e = routing.expert_idx[base + j];
      plan.send_entries[entry] = {static_cast<std::int32_t>(e - placement.first_expert(r)), routing.weights[base + j]};
    }
  }
}

// Sender side, pass 3: each token's rows by destination node, then rank.
void order_token_rows(const RoutingPlan& routing, const NodeOfRank& node_of_rank, DispatchPlan& plan) {
  const DispatchPlan::Scratch& s = plan.scratch;
  const std::int64_t T = routing.num_tokens, K = routing.top_k;
  plan.token_row_begin.assign(static_cast<std::size_t>(T + 1), 0);
  plan.token_rows.resize(plan.send_token.size());
  plan.token_row_node.resize(plan.send_token.size());
  std::int64_t n = 0;
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t begin = n;
    for (std::int64_t j = 0; j < K; ++j) {
      const std::int64_t i = t * K + j;
      if (!s.kept[i] || same_rank_before(s, t * K, j) >= 0) continue;
      const int node = node_of(node_of_rank, s.slot_rank[i]);
      // Insertion by (node, rank): at most K rows per token.
      std::int64_t at = n++;
      for (; at > begin; --at) {
        // NOTE: rows are in rank order, so row indices compare as ranks.
        const std::int64_t prev = plan.token_rows[at - 1];
        const int pn = plan.token_row_node[at - 1];
        if (pn < node || (pn == node && prev < plan.slot_entry[i] / K)) break;
        plan.token_rows[at] = prev;
        plan.token_row_node[at] = pn;
      }
      plan.token_rows[at] = plan.slot_entry[i] / K;
      plan.token_row_node[at] = node;
    }
    plan.token_row_begin[t + 1] = n;
  }
}

// Receiver side: every received entry gets an expert row, grouped by local
// expert, then source rank, then token (rows from a source arrive in token order).
void plan_recv(const ExpertPlacement& placement, int me, DispatchPlan& plan) {
  DispatchPlan::Scratch& s = plan.scratch;
  const std::int64_t L = placement.num_local(me), K = plan.top_k;
  const int R = placement.num_ranks();
  plan.recv_table.assign(static_cast<std::size_t>(R * L), 0);
  for (int r = 0; r < R; ++r)
    for (std::int64_t i = plan.recv_offsets[r]; i < plan.recv_offsets[r] + plan.recv_counts[r]; ++i)
      for (std::int64_t k = 0; k < K; ++k) {
        const std::int32_t j = plan.recv_entries[i * K + k].local_expert;
        if (j < 0) continue;
        // NOTE: the message is built only on failure: this loop must not allocate.
        if (j >= L) check(false, ErrorCode::kInternal, "a received slot names local expert " + std::to_string(j));
        ++plan.recv_table[r * L + j];
      }
  plan.local_expert_counts.assign(static_cast<std::size_t>(L), 0);
  s.grouped_cursor.resize(static_cast<std::size_t>(R * L));
  std::int64_t next = 0;
  for (std::int64_t j = 0; j < L; ++j)
    for (int r = 0; r < R; ++r) {
      s.grouped_cursor[r * L + j] = next;
      next += plan.recv_table[r * L + j];
      plan.local_expert_counts[j] += plan.recv_table[r * L + j];
    }
  plan.grouped_source.resize(static_cast<std::size_t>(next));
  plan.grouped_weight.resize(static_cast<std::size_t>(next));
  plan.entry_grouped.assign(plan.recv_entries.size(), -1);
  for (int r = 0; r < R; ++r)
    for (std::int64_t i = plan.recv_offsets[r]; i < plan.recv_offsets[r] + plan.recv_counts[r]; ++i)
      for (std::int64_t k = 0; k < K; ++k) {
        const SlotEntry& e = plan.recv_entries[i * K + k];
        if (e.local_expert < 0) continue;
        const std::int64_t g = s.grouped_cursor[r * L + e.local_expert]++;
        plan.entry_grouped[i * K + k] = g;
        plan.grouped_source[g] = i;
        plan.grouped_weight[g] = e.weight;
      }
}

}  // namespace

void DispatchPlan::reserve(std::int64_t max_tokens, std::int64_t max_recv, const ExpertPlacement& placement, int rank,
                           std::int64_t k) {
  const auto R = static_cast<std::size_t>(placement.num_ranks());
  const auto E = static_cast<std::size_t>(placement.num_experts());
  const auto slots = static_cast<std::size_t>(max_tokens * k);
  const auto recv = static_cast<std::size_t>(max_recv);
  const auto num_local = static_cast<std::size_t>(placement.num_local(rank));
  for (auto* v : {&send_counts, &send_offsets, &send_slot_counts, &recv_counts, &recv_offsets}) v->reserve(R);
  for (auto* v : {&send_token, &token_rows, &slot_entry}) v->reserve(slots);
  token_row_node.reserve(slots);
  token_row_begin.reserve(static_cast<std::size_t>(max_tokens + 1));
  send_entries.reserve(slots * static_cast<std::size_t>(k));
  // NOTE: a received row holds at least one slot, so rows <= slots.
  recv_entries.reserve(recv * static_cast<std::size_t>(k));
  entry_grouped.reserve(recv * static_cast<std::size_t>(k));
  grouped_source.reserve(recv);
  grouped_weight.reserve(recv);
  local_expert_counts.reserve(num_local);
  recv_table.reserve(R * num_local);
  scratch.kept.reserve(slots);
  scratch.slot_rank.reserve(slots);
  scratch.rank_cursor.reserve(R);
  scratch.used.reserve(E);
  scratch.grouped_cursor.reserve(R * num_local);
}

void plan_dispatch(const RoutingPlan& routing, const ExpertPlacement& placement, const CapacityPolicy& capacity,
                   const NodeOfRank& node_of_rank, comm::Communicator& comm, DispatchPlan* plan) {
  check(placement.num_ranks() == comm.size(), ErrorCode::kInternal, "placement was made for another rank count");
  check(node_of_rank.empty() || static_cast<int>(node_of_rank.size()) == comm.size(), ErrorCode::kInternal,
        "node_of_rank was made for another rank count");
  const std::int64_t K = routing.top_k;
  plan->top_k = K;
  plan->num_dropped = apply_capacity(routing, capacity, plan->scratch);
  count_send(routing, placement, *plan);
  fill_send(routing, placement, *plan);
  order_token_rows(routing, node_of_rank, *plan);
  plan->recv_counts.resize(plan->send_counts.size());
  comm.alltoall(plan->send_counts.data(), plan->recv_counts.data(), 1);
  exclusive_scan(plan->recv_counts, &plan->recv_offsets);
  const std::int64_t num_recv = plan->recv_offsets.back() + plan->recv_counts.back();
  plan->recv_entries.resize(static_cast<std::size_t>(num_recv * K));
  comm.alltoallv(plan->send_entries.data(), plan->send_counts.data(), plan->send_offsets.data(),
                 plan->recv_entries.data(), plan->recv_counts.data(), plan->recv_offsets.data(),
                 static_cast<std::size_t>(K) * sizeof(SlotEntry));
  plan_recv(placement, comm.rank(), *plan);
}

DispatchPlan plan_dispatch(const RoutingPlan& routing, const ExpertPlacement& placement, const CapacityPolicy& capacity,
                           comm::Communicator& comm) {
  DispatchPlan plan;
  plan_dispatch(routing, placement, capacity, NodeOfRank{}, comm, &plan);
  return plan;
}

}  // namespace switchyard::layers
