// The exchange plan: each token crosses to each destination rank once and is
// expanded to its slots there. A hand-worked two-rank fixture fixes every
// field; rank-encoded payloads (each row carries its sender and token) go
// through the dispatch and the combine at every rank count with one and two
// nodes, against the expectation every rank can derive for every other.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/kernels/permute.hpp"
#include "switchyard/layers/dispatch.hpp"

namespace {

using switchyard::comm::MpiCommunicator;
using switchyard::layers::CapacityPolicy;
using switchyard::layers::DispatchPlan;
using switchyard::layers::ExchangeKind;
using switchyard::layers::ExchangeLayout;
using switchyard::layers::ExpertPlacement;
using switchyard::layers::NodeOfRank;
using switchyard::layers::RoutingPlan;
using switchyard::layers::SlotEntry;

RoutingPlan routing_of(std::int64_t num_experts, std::int64_t top_k, const std::vector<std::int32_t>& experts,
                       const std::vector<float>& weights) {
  RoutingPlan r;
  r.num_experts = num_experts;
  r.top_k = top_k;
  r.num_tokens = static_cast<std::int64_t>(experts.size()) / top_k;
  r.expert_idx = experts;
  r.weights = weights;
  r.expert_counts.assign(static_cast<std::size_t>(num_experts), 0);
  for (auto e : experts) ++r.expert_counts[e];
  return r;
}

std::vector<std::int32_t> locals(const std::vector<SlotEntry>& entries) {
  std::vector<std::int32_t> out;
  for (const SlotEntry& e : entries) out.push_back(e.local_expert);
  return out;
}

using V = std::vector<std::int64_t>;

// Rank 0 holds experts 0 and 1, rank 1 experts 2 and 3; top-2.
// Rank 0: t0 -> {0, 1} (one row to rank 0), t1 -> {2, 0} (one row to each),
//         t2 -> {3, 2} (one row to rank 1).
// Rank 1: t0 -> {3, 1} (one row to each), t1 -> {2, 3} (one row to rank 1).
TEST(DispatchPlan, TwoRankFixtureSendsEachTokenOncePerRank) {
  MpiCommunicator comm(MPI_COMM_WORLD);
  if (comm.size() != 2) GTEST_SKIP() << "the fixture is worked out for 2 ranks";
  const int me = comm.rank();
  const ExpertPlacement placement(4, 2);
  const RoutingPlan routing = me == 0 ? routing_of(4, 2, {0, 1, 2, 0, 3, 2}, {0.5f, 0.25f, 0.75f, 0.125f, 1, 2})
                                      : routing_of(4, 2, {3, 1, 2, 3}, {0.5f, 0.5f, 0.25f, 0.75f});
  DispatchPlan p;
  switchyard::layers::plan_dispatch(routing, placement, CapacityPolicy{}, ExchangeLayout{}, comm, &p);
  if (me == 0) {
    EXPECT_EQ(p.send_counts, (V{2, 2}));
    EXPECT_EQ(p.send_slot_counts, (V{3, 3}));
    EXPECT_EQ(p.send_token, (V{0, 1, 1, 2}));
    EXPECT_EQ(locals(p.send_entries), (std::vector<std::int32_t>{0, 1, 0, -1, 0, -1, 1, 0}));
    EXPECT_EQ(p.send_entries[1].weight, 0.25f);
    EXPECT_EQ(p.send_entries[7].weight, 2.0f);
    EXPECT_EQ(p.slot_entry, (V{0, 1, 4, 2, 6, 7}));
    EXPECT_EQ(p.token_row_begin, (V{0, 1, 3, 4}));
    EXPECT_EQ(p.token_rows, (V{0, 1, 2, 3}));
    // Received: rank 0's t0 (experts 0, 1) and t1 (expert 0), rank 1's t0 (expert 1).
    EXPECT_EQ(p.recv_counts, (V{2, 1}));
    EXPECT_EQ(p.recv_table, (V{2, 1, 0, 1}));  // [source][local expert]
    EXPECT_EQ(p.local_expert_counts, (V{2, 2}));
    // Expert rows: expert 0 (r0 t0, r0 t1), expert 1 (r0 t0, r1 t0).
    EXPECT_EQ(p.grouped_source, (V{0, 1, 0, 2}));
    EXPECT_EQ(p.grouped_weight, (std::vector<float>{0.5f, 0.125f, 0.25f, 0.5f}));
    EXPECT_EQ(p.entry_grouped, (V{0, 2, 1, -1, 3, -1}));
  } else {
    EXPECT_EQ(p.send_counts, (V{1, 2}));
    EXPECT_EQ(p.send_slot_counts, (V{1, 3}));
    EXPECT_EQ(p.send_token, (V{0, 0, 1}));
    EXPECT_EQ(p.slot_entry, (V{2, 0, 4, 5}));
    EXPECT_EQ(p.token_rows, (V{0, 1, 2}));
    // Received: rank 0's t1 (expert 2) and t2 (experts 3, 2); rank 1's t0
    // (expert 3) and t1 (experts 2, 3).
    EXPECT_EQ(p.recv_counts, (V{2, 2}));
    EXPECT_EQ(p.recv_table, (V{2, 1, 1, 2}));
    EXPECT_EQ(p.local_expert_counts, (V{3, 3}));
    // Expert 2: r0 t1, r0 t2, r1 t1; expert 3: r0 t2, r1 t0, r1 t1.
    EXPECT_EQ(p.grouped_source, (V{0, 1, 3, 1, 2, 3}));
    EXPECT_EQ(p.entry_grouped, (V{0, -1, 3, 1, 4, -1, 2, 5}));
  }
  EXPECT_EQ(p.num_dropped, 0);
}

// A deterministic routing every rank can rebuild for every other rank.
constexpr std::int64_t kExperts = 7, kTopK = 3, kHidden = 3;

std::int64_t tokens_of(int rank) { return 5 + 3 * rank; }

RoutingPlan payload_routing(int rank) {
  std::vector<std::int32_t> experts;
  std::vector<float> weights;
  for (std::int64_t t = 0; t < tokens_of(rank); ++t) {
    std::uint64_t state = 2654435761u * static_cast<std::uint64_t>(rank * 131 + t + 1);
    std::vector<char> used(kExperts, 0);
    for (std::int64_t j = 0; j < kTopK; ++j) {
      std::int32_t e = 0;
      do {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        e = static_cast<std::int32_t>((state >> 33) % kExperts);
      } while (used[e]);
      used[e] = 1;
      experts.push_back(e);
      weights.push_back(static_cast<float>(1 + (t + j) % 4) / 8.0f);  // exact in binary
    }
  }
  return routing_of(kExperts, kTopK, experts, weights);
}

// An expert's output for a row that carries (sender, token): small integers,
// so every weighted sum of them is exact and any order gives the same bits.
float expert_value(std::int64_t expert, float sender, float token, std::int64_t h) {
  return static_cast<float>(expert + 1) * 16.0f + sender * 4.0f + token + static_cast<float>(h);
}

// Rows along one hop: out by (counts, offsets), in by (counts, offsets).
std::vector<float> hop(MpiCommunicator& comm, const std::vector<float>& rows, const V& out_counts, const V& out_offsets,
                       const V& in_counts, const V& in_offsets) {
  std::vector<float> in(static_cast<std::size_t>((in_offsets.back() + in_counts.back()) * kHidden));
  comm.alltoallv(rows.data(), out_counts.data(), out_offsets.data(), in.data(), in_counts.data(), in_offsets.data(),
                 kHidden * sizeof(float));
  return in;
}

// The dispatch: straight (flat) or through the node's forwarder.
std::vector<float> dispatch(MpiCommunicator& comm, const DispatchPlan& p, const std::vector<float>& send) {
  if (!p.hierarchical()) return hop(comm, send, p.send_counts, p.send_offsets, p.recv_counts, p.recv_offsets);
  const auto& f = p.forward;
  const std::vector<float> in = hop(comm, send, p.send_counts, p.send_offsets, f.in_counts, f.in_offsets);
  std::vector<float> out(static_cast<std::size_t>(f.num_out() * kHidden));
  switchyard::kernels::gather_rows(in.data(), f.out_source.data(), f.num_out(), kHidden, out.data());
  return hop(comm, out, f.out_counts, f.out_offsets, p.recv_counts, p.recv_offsets);
}

// The combine: partial sums back, summed in the node first when forwarded.
std::vector<float> combine(MpiCommunicator& comm, const DispatchPlan& p, const std::vector<float>& partial) {
  if (!p.hierarchical()) return hop(comm, partial, p.recv_counts, p.recv_offsets, p.send_counts, p.send_offsets);
  const auto& f = p.forward;
  const std::vector<float> out = hop(comm, partial, p.recv_counts, p.recv_offsets, f.out_counts, f.out_offsets);
  std::vector<float> in(static_cast<std::size_t>(f.num_in() * kHidden));
  switchyard::kernels::sum_entry_rows(out.data(), f.in_parts.data(), nullptr, f.num_in(), kTopK, kHidden, in.data());
  return hop(comm, in, f.in_counts, f.in_offsets, p.send_counts, p.send_offsets);
}

void check_round_trip(const ExchangeLayout& layout) {
  MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  const ExpertPlacement placement(kExperts, R);
  const RoutingPlan routing = payload_routing(me);
  DispatchPlan p;
  switchyard::layers::plan_dispatch(routing, placement, CapacityPolicy{}, layout, comm, &p);
  // Dispatch rows that name their sender and token.
  const std::int64_t H = kHidden;
  std::vector<float> send(static_cast<std::size_t>(p.num_send() * H));
  for (std::int64_t row = 0; row < p.num_send(); ++row) {
    send[row * H] = static_cast<float>(me);
    send[row * H + 1] = static_cast<float>(p.send_token[row]);
    send[row * H + 2] = -1.0f;
  }
  std::vector<float> recv = dispatch(comm, p, send);
  // Expected expert rows: by local expert, then sender, then token.
  std::int64_t g = 0;
  std::vector<float> out(static_cast<std::size_t>(p.num_slots() * H));
  for (std::int64_t e = placement.first_expert(me); e < placement.first_expert(me) + placement.num_local(me); ++e)
    for (int s = 0; s < R; ++s) {
      const RoutingPlan theirs = payload_routing(s);
      for (std::int64_t t = 0; t < theirs.num_tokens; ++t)
        for (std::int64_t j = 0; j < kTopK; ++j) {
          if (theirs.expert_idx[t * kTopK + j] != e) continue;
          ASSERT_LT(g, p.num_slots()) << "rank " << me << " expects more expert rows";
          const float* row = &recv[p.grouped_source[g] * H];
          ASSERT_EQ(row[0], static_cast<float>(s)) << "expert row " << g << " of expert " << e << " should carry rank "
                                                   << s << " token " << t << ", got rank " << row[0];
          ASSERT_EQ(row[1], static_cast<float>(t)) << "expert row " << g << " of expert " << e << " from rank " << s
                                                   << " should carry token " << t << ", got token " << row[1];
          EXPECT_EQ(p.grouped_weight[g], theirs.weights[t * kTopK + j]) << "expert row " << g;
          for (std::int64_t h = 0; h < H; ++h) out[g * H + h] = expert_value(e, row[0], row[1], h);
          ++g;
        }
    }
  ASSERT_EQ(g, p.num_slots()) << "rank " << me << " got expert rows nobody sent";
  // Combine: partial sums back, then each token's sum; exact by construction.
  std::vector<float> y(static_cast<std::size_t>(routing.num_tokens * H)), scratch(H);
  switchyard::kernels::sum_entry_rows(out.data(), p.entry_grouped.data(), p.grouped_weight.data(), p.num_recv(), kTopK,
                                      H, recv.data());
  const std::vector<float> back = combine(comm, p, recv);
  switchyard::kernels::sum_token_rows(
      back.data(), {.begin = p.token_row_begin.data(), .rows = p.token_rows.data(), .group = p.token_row_node.data()},
      routing.num_tokens, H, scratch.data(), y.data());
  for (std::int64_t t = 0; t < routing.num_tokens; ++t)
    for (std::int64_t h = 0; h < H; ++h) {
      float want = 0.0f;
      for (std::int64_t j = 0; j < kTopK; ++j)
        want += routing.weights[t * kTopK + j] *
                expert_value(routing.expert_idx[t * kTopK + j], static_cast<float>(me), static_cast<float>(t), h);
      ASSERT_EQ(y[t * H + h], want) << "rank " << me << " token " << t << " column " << h;
    }
}

NodeOfRank interleaved_nodes(int nodes) {
  const int R = MpiCommunicator(MPI_COMM_WORLD).size();
  NodeOfRank out;
  // Interleaved (a node's ranks are not contiguous), ids in order of their lowest rank.
  for (int r = 0; r < R; ++r) out.push_back(r % std::min(nodes, R));
  return out;
}

TEST(DispatchPlan, RankEncodedRowsReachTheirExpertsAndComeBackOneNode) { check_round_trip(ExchangeLayout{}); }

TEST(DispatchPlan, RankEncodedRowsReachTheirExpertsAndComeBackTwoNodes) {
  check_round_trip({.kind = ExchangeKind::kFlat, .node_of_rank = interleaved_nodes(2)});
}

TEST(DispatchPlan, HierarchicalRowsGoThroughTheNodesForwarder) {
  for (int nodes = 1; nodes <= 3; ++nodes) {
    SCOPED_TRACE("nodes " + std::to_string(nodes));
    check_round_trip({.kind = ExchangeKind::kHierarchical, .node_of_rank = interleaved_nodes(nodes)});
  }
}

// Each token crosses to each node at most once: the first hop's rows to
// other nodes are exactly the token's distinct other nodes.
TEST(DispatchPlan, HierarchicalSendsATokenOncePerNode) {
  MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  const NodeOfRank nodes = interleaved_nodes(2);
  const ExpertPlacement placement(kExperts, R);
  const RoutingPlan routing = payload_routing(me);
  DispatchPlan p;
  switchyard::layers::plan_dispatch(routing, placement, CapacityPolicy{},
                                    {.kind = ExchangeKind::kHierarchical, .node_of_rank = nodes}, comm, &p);
  std::int64_t want = 0;
  for (std::int64_t t = 0; t < routing.num_tokens; ++t) {
    std::vector<char> seen(static_cast<std::size_t>(R), 0);
    for (std::int64_t j = 0; j < kTopK; ++j) {
      const int node = nodes[placement.owner(routing.expert_idx[t * kTopK + j])];
      want += seen[node] ? 0 : 1;
      seen[node] = 1;
    }
  }
  EXPECT_EQ(p.num_send(), want);
  for (int r = 0; r < R; ++r)
    if (p.send_counts[r] > 0 && r % 2 == me % 2) {
      EXPECT_EQ(r, me) << "rows to rank " << r << " of this node: the first hop inside the node is to itself";
    }
}

}  // namespace
