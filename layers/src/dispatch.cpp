#include "switchyard/layers/dispatch.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {

namespace {

// Marks slots beyond each expert's capacity as dropped (0 in `kept`). A
// top-p token's unused slots (expert -1) are not kept and not dropped.
std::int64_t apply_capacity(const RoutingPlan& routing, const CapacityPolicy& capacity, DispatchPlan::Scratch& s) {
  s.kept.resize(routing.expert_idx.size());
  for (std::size_t i = 0; i < s.kept.size(); ++i) s.kept[i] = routing.expert_idx[i] >= 0;
  if (capacity.capacity_factor <= 0.0) return 0;
  const std::int64_t T = routing.num_tokens, K = routing.top_k;
  const auto cap = static_cast<std::int64_t>(
      std::ceil(capacity.capacity_factor * static_cast<double>(T * K) / static_cast<double>(routing.num_experts)));
  s.used.assign(static_cast<std::size_t>(routing.num_experts), 0);
  std::int64_t dropped = 0;
  for (std::int64_t j = 0; j < K; ++j) {
    for (std::int64_t t = 0; t < T; ++t) {
      const auto e = routing.expert_idx[t * K + j];
      if (e < 0) continue;
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
// goes to the same first-hop destination as choice j, or -1: only a token's
// first slot for a destination opens a row.
std::int64_t same_dest_before(const DispatchPlan::Scratch& s, std::int64_t base, std::int64_t j) {
  for (std::int64_t i = 0; i < j; ++i)
    if (s.kept[base + i] && s.slot_dest[base + i] == s.slot_dest[base + j]) return i;
  return -1;
}

// Hierarchical: the rank of each node that forwards this rank's tokens
// there (the one whose index in that node is this rank's index in its own,
// modulo the node's size), in s.rank_cursor[2R + node]. Node ids lie in [0, R).
void forwarders(const NodeOfRank& nodes, int me, int R, DispatchPlan::Scratch& s) {
  s.rank_cursor.assign(static_cast<std::size_t>(3 * R), 0);
  std::int64_t* size = s.rank_cursor.data();
  std::int64_t* want = size + R;  // the index still to skip to, per node
  std::int64_t* forwarder = size + 2 * R;
  std::int64_t my_index = 0;
  for (int r = 0; r < R; ++r) {
    check(nodes[r] >= 0 && nodes[r] < R, ErrorCode::kInternal, "node ids must lie in [0, ranks)");
    if (r < me && nodes[r] == nodes[me]) ++my_index;
    ++size[nodes[r]];
  }
  for (int n = 0; n < R; ++n) {
    want[n] = size[n] > 0 ? my_index % size[n] : -1;
    forwarder[n] = -1;
  }
  for (int r = 0; r < R; ++r) {
    if (want[nodes[r]] == 0) forwarder[nodes[r]] = r;
    --want[nodes[r]];
  }
}

// Sender side, pass 1: each kept slot's expert rank and first-hop
// destination, and rows (one per token and destination) per destination.
void count_send(const RoutingPlan& routing, const ExpertPlacement& placement, const ExchangeLayout& layout,
                std::int64_t first_token, int me, DispatchPlan& plan) {
  DispatchPlan::Scratch& s = plan.scratch;
  const std::int64_t T = routing.num_tokens, K = routing.top_k;
  const int R = placement.num_ranks();
  const bool hier = layout.hierarchical();
  if (hier) forwarders(layout.node_of_rank, me, R, s);
  s.slot_rank.assign(static_cast<std::size_t>(T * K), -1);
  s.slot_dest.assign(static_cast<std::size_t>(T * K), -1);
  plan.send_counts.assign(static_cast<std::size_t>(R), 0);
  plan.send_slot_counts.assign(static_cast<std::size_t>(R), 0);
  for (std::int64_t i = 0; i < T * K; ++i) {
    if (!s.kept[i]) continue;
    // The replica choice rule (placement_plan.hpp).
    const int r = pick_holder(placement.holders(routing.expert_idx[i]), me, first_token + i / K, layout.node_of_rank);
    s.slot_rank[i] = r;
    s.slot_dest[i] = hier ? static_cast<std::int32_t>(s.rank_cursor[2 * R + layout.node_of_rank[r]]) : r;
    ++plan.send_slot_counts[r];
    if (same_dest_before(s, i - i % K, i % K) < 0) ++plan.send_counts[s.slot_dest[i]];
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
      const std::int64_t first = same_dest_before(s, base, j);
      std::int64_t entry = 0;
      if (first < 0) {
        const std::int64_t row = s.rank_cursor[s.slot_dest[base + j]]++;
        plan.send_token[row] = t;
        entry = row * K;
      } else {
        entry = plan.slot_entry[base + first] - plan.slot_entry[base + first] % K;
        while (plan.send_entries[entry].local_expert >= 0) ++entry;
      }
      plan.slot_entry[base + j] = entry;
      const int r = s.slot_rank[base + j];
      const std::int64_t e = routing.expert_idx[base + j];
      plan.send_entries[entry] = {r, placement.local_index(r, e), routing.weights[base + j]};
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
      if (!s.kept[i] || same_dest_before(s, t * K, j) >= 0) continue;
      const int node = node_of(node_of_rank, s.slot_dest[i]);
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

// The lowest rank above `after` among a row's K entries, or -1.
std::int32_t next_rank(const SlotEntry* entries, std::int64_t K, std::int32_t after) {
  std::int32_t best = -1;
  for (std::int64_t k = 0; k < K; ++k)
    if (entries[k].local_expert >= 0 && entries[k].rank > after && (best < 0 || entries[k].rank < best))
      best = entries[k].rank;
  return best;
}

// Forwarder: each node row becomes one row per rank of the node that holds
// its slots, to that rank in the order the node rows came (sender, token).
void plan_forward(int R, DispatchPlan& plan) {
  NodeForward& f = plan.forward;
  const std::int64_t K = f.top_k, num_in = f.num_in();
  f.out_counts.assign(static_cast<std::size_t>(R), 0);
  for (std::int64_t i = 0; i < num_in; ++i)
    for (std::int32_t d = next_rank(&f.in_entries[i * K], K, -1); d >= 0; d = next_rank(&f.in_entries[i * K], K, d))
      ++f.out_counts[d];
  exclusive_scan(f.out_counts, &f.out_offsets);
  const std::int64_t num_out = f.out_offsets.back() + f.out_counts.back();
  f.out_source.resize(static_cast<std::size_t>(num_out));
  f.out_origin.resize(static_cast<std::size_t>(num_out));
  f.out_entries.assign(static_cast<std::size_t>(num_out * K), SlotEntry{});
  f.in_parts.assign(static_cast<std::size_t>(num_in * K), -1);
  f.in_entry_part.assign(static_cast<std::size_t>(num_in * K), -1);
  std::vector<std::int64_t>& cursor = plan.scratch.rank_cursor;
  cursor.assign(f.out_offsets.begin(), f.out_offsets.end());
  for (int sender = 0; sender < R; ++sender)
    for (std::int64_t i = f.in_offsets[sender]; i < f.in_offsets[sender] + f.in_counts[sender]; ++i) {
      const SlotEntry* in = &f.in_entries[i * K];
      std::int64_t part = 0;
      for (std::int32_t d = next_rank(in, K, -1); d >= 0; d = next_rank(in, K, d)) {
        const std::int64_t row = cursor[d]++;
        f.out_source[row] = i;
        f.out_origin[row] = sender;
        f.in_parts[i * K + part++] = row;
        std::int64_t at = row * K;
        for (std::int64_t k = 0; k < K; ++k)
          if (in[k].local_expert >= 0 && in[k].rank == d) {
            f.out_entries[at] = in[k];
            f.in_entry_part[i * K + k] = at++;
          }
      }
    }
}

// Receiver side: every received entry gets an expert row, grouped by local
// expert, then token rank, then token (a token rank's rows all come the
// same way, in token order).
void plan_recv(const ExpertPlacement& placement, int me, DispatchPlan& plan) {
  DispatchPlan::Scratch& s = plan.scratch;
  const std::int64_t L = placement.num_local(me), K = plan.top_k, n = plan.num_recv();
  const int R = placement.num_ranks();
  plan.recv_table.assign(static_cast<std::size_t>(R * L), 0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t k = 0; k < K; ++k) {
      const SlotEntry& e = plan.recv_entries[i * K + k];
      if (e.local_expert < 0) continue;
      // NOTE: the message is built only on failure: this loop must not allocate.
      if (e.local_expert >= L || e.rank != me)
        check(false, ErrorCode::kInternal, "a received slot names local expert " + std::to_string(e.local_expert));
      ++plan.recv_table[plan.recv_origin[i] * L + e.local_expert];
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
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t k = 0; k < K; ++k) {
      const SlotEntry& e = plan.recv_entries[i * K + k];
      if (e.local_expert < 0) continue;
      const std::int64_t g = s.grouped_cursor[plan.recv_origin[i] * L + e.local_expert]++;
      plan.entry_grouped[i * K + k] = g;
      plan.grouped_source[g] = i;
      plan.grouped_weight[g] = e.weight;
    }
}

// One hop's counts and slot entries: counts first, then the entries (and
// origins) of that many rows.
template <class T>
void exchange_rows(comm::Communicator& comm, const std::vector<T>& send, const std::vector<std::int64_t>& send_counts,
                   const std::vector<std::int64_t>& send_offsets, std::int64_t width, std::vector<T>* recv,
                   const std::vector<std::int64_t>& recv_counts, const std::vector<std::int64_t>& recv_offsets) {
  const std::int64_t rows = recv_offsets.back() + recv_counts.back();
  recv->resize(static_cast<std::size_t>(rows * width));
  comm.alltoallv(send.data(), send_counts.data(), send_offsets.data(), recv->data(), recv_counts.data(),
                 recv_offsets.data(), static_cast<std::size_t>(width) * sizeof(T));
}

void exchange_counts(comm::Communicator& comm, const std::vector<std::int64_t>& send, std::vector<std::int64_t>* counts,
                     std::vector<std::int64_t>* offsets) {
  counts->resize(send.size());
  comm.alltoall(send.data(), counts->data(), 1);
  exclusive_scan(*counts, offsets);
}

}  // namespace

void DispatchPlan::reserve(std::int64_t max_tokens, std::int64_t max_recv, std::int64_t max_forward,
                           const ExpertPlacement& placement, int rank, std::int64_t k) {
  const auto R = static_cast<std::size_t>(placement.num_ranks());
  const auto E = static_cast<std::size_t>(placement.num_experts());
  const auto K = static_cast<std::size_t>(k);
  const auto slots = static_cast<std::size_t>(max_tokens * k);
  const auto recv = static_cast<std::size_t>(max_recv), in = static_cast<std::size_t>(max_forward);
  const auto num_local = static_cast<std::size_t>(placement.num_local(rank));
  for (auto* v : {&send_counts, &send_offsets, &send_slot_counts, &recv_counts, &recv_offsets, &forward.in_counts,
                  &forward.in_offsets, &forward.out_counts, &forward.out_offsets})
    v->reserve(R);
  for (auto* v : {&send_token, &token_rows, &slot_entry}) v->reserve(slots);
  token_row_node.reserve(slots);
  token_row_begin.reserve(static_cast<std::size_t>(max_tokens + 1));
  send_entries.reserve(slots * K);
  // NOTE: a received row holds at least one slot, so rows <= slots.
  recv_origin.reserve(recv);
  recv_entries.reserve(recv * K);
  entry_grouped.reserve(recv * K);
  grouped_source.reserve(recv);
  grouped_weight.reserve(recv);
  local_expert_counts.reserve(num_local);
  recv_table.reserve(R * num_local);
  forward.in_entries.reserve(in * K);
  forward.in_parts.reserve(in * K);
  forward.in_entry_part.reserve(in * K);
  forward.out_source.reserve(in * K);
  forward.out_origin.reserve(in * K);
  forward.out_entries.reserve(in * K * K);
  scratch.kept.reserve(slots);
  scratch.slot_rank.reserve(slots);
  scratch.slot_dest.reserve(slots);
  scratch.rank_cursor.reserve(3 * R);
  scratch.used.reserve(E);
  scratch.grouped_cursor.reserve(R * num_local);
}

void plan_dispatch(const RoutingPlan& routing, const ExpertPlacement& placement, const CapacityPolicy& capacity,
                   const ExchangeLayout& layout, comm::Communicator& comm, DispatchPlan* plan,
                   std::int64_t first_token) {
  const int R = comm.size(), me = comm.rank();
  check(placement.num_ranks() == R, ErrorCode::kInternal, "placement was made for another rank count");
  check(layout.node_of_rank.empty() || static_cast<int>(layout.node_of_rank.size()) == R, ErrorCode::kInternal,
        "node_of_rank was made for another rank count");
  const std::int64_t K = routing.top_k;
  plan->kind = layout.hierarchical() ? ExchangeKind::kHierarchical : ExchangeKind::kFlat;
  plan->top_k = plan->forward.top_k = K;
  plan->num_dropped = apply_capacity(routing, capacity, plan->scratch);
  count_send(routing, placement, layout, first_token, me, *plan);
  fill_send(routing, placement, *plan);
  order_token_rows(routing, layout.node_of_rank, *plan);
  if (plan->hierarchical()) {
    NodeForward& f = plan->forward;
    exchange_counts(comm, plan->send_counts, &f.in_counts, &f.in_offsets);
    exchange_rows(comm, plan->send_entries, plan->send_counts, plan->send_offsets, K, &f.in_entries, f.in_counts,
                  f.in_offsets);
    plan_forward(R, *plan);
    exchange_counts(comm, f.out_counts, &plan->recv_counts, &plan->recv_offsets);
    exchange_rows(comm, f.out_entries, f.out_counts, f.out_offsets, K, &plan->recv_entries, plan->recv_counts,
                  plan->recv_offsets);
    exchange_rows(comm, f.out_origin, f.out_counts, f.out_offsets, 1, &plan->recv_origin, plan->recv_counts,
                  plan->recv_offsets);
  } else {
    exchange_counts(comm, plan->send_counts, &plan->recv_counts, &plan->recv_offsets);
    exchange_rows(comm, plan->send_entries, plan->send_counts, plan->send_offsets, K, &plan->recv_entries,
                  plan->recv_counts, plan->recv_offsets);
    plan->recv_origin.resize(plan->recv_entries.size() / static_cast<std::size_t>(std::max<std::int64_t>(K, 1)));
    for (int r = 0; r < R; ++r) std::fill_n(plan->recv_origin.begin() + plan->recv_offsets[r], plan->recv_counts[r], r);
  }
  plan_recv(placement, me, *plan);
}

DispatchPlan plan_dispatch(const RoutingPlan& routing, const ExpertPlacement& placement, const CapacityPolicy& capacity,
                           comm::Communicator& comm) {
  DispatchPlan plan;
  plan_dispatch(routing, placement, capacity, ExchangeLayout{}, comm, &plan);
  return plan;
}

}  // namespace switchyard::layers
