#pragma once
// Dispatch planning: which token rows go to which rank, in what order, and
// where every row lands on the way there and back.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/layers/expert_placement.hpp"
#include "switchyard/layers/router.hpp"

namespace switchyard::layers {

/// Capacity: 0 means dropless. Otherwise each expert accepts at most
/// ceil(capacity_factor * T_local * top_k / num_experts) slots from each rank;
/// slots are admitted first choices first (all tokens' j = 0, then j = 1, ...),
/// within a choice rank in token order, and the rest are dropped (weight lost,
/// not renormalised), as in GShard and Switch Transformer.
struct CapacityPolicy {
  double capacity_factor = 0.0;
};

/// Where one of a token's slots goes: the rank of its expert, the expert's
/// index there (-1: no slot in this entry) and its routing weight. Travels
/// with the token rows' plan; the experts' side weights and sums a token's
/// slots itself (the combine sends one row back per token and rank).
struct SlotEntry {
  std::int32_t rank = -1;
  std::int32_t local_expert = -1;
  float weight = 0.0f;
};

/// How rows travel. kFlat: each token once to each rank that holds any of
/// its slots. kHierarchical: each token once to each node that does, to the
/// rank of that node whose index in it is the sender's index in its own node
/// (modulo the node's size; in its own node, the sender itself), which
/// forwards it to the node's ranks; the combine sums inside the node before
/// crossing back. Both give the same bits (docs/exchange.md).
enum class ExchangeKind { kFlat, kHierarchical };

/// The nodes of the job's ranks: rank r is on node_of_rank[r]; empty means
/// one node.
using NodeOfRank = std::vector<int>;

/// How to exchange: the kind, and the nodes (which hierarchical needs, and
/// both use for the order of a token's sums).
struct ExchangeLayout {
  ExchangeKind kind = ExchangeKind::kFlat;
  NodeOfRank node_of_rank;

  /// Hierarchical asked for, with nodes to forward in (without, flat).
  bool hierarchical() const { return kind == ExchangeKind::kHierarchical && !node_of_rank.empty(); }
};

/// A rank's part as the forwarder of its node (hierarchical only): node rows
/// in, rank rows out, and the way back.
struct NodeForward {
  std::vector<std::int64_t> in_counts, in_offsets;    // [R] node rows from each sender
  std::vector<SlotEntry> in_entries;                  // [num_in * K] their slots
  std::vector<std::int64_t> out_counts, out_offsets;  // [R] rows forwarded to each rank of this node
  std::vector<std::int64_t> out_source;               // [num_out] the node row each forwarded row copies
  std::vector<std::int64_t> out_origin;               // [num_out] the rank the token came from
  std::vector<SlotEntry> out_entries;                 // [num_out * K]
  std::vector<std::int64_t> in_parts;                 // [num_in * K] a node row's forwarded rows by rank, -1 after
  std::vector<std::int64_t> in_entry_part;            // [num_in * K] each node-row entry's forwarded entry, -1 if none
  std::int64_t top_k = 0;

  std::int64_t num_in() const {
    return static_cast<std::int64_t>(in_entries.size()) / std::max<std::int64_t>(top_k, 1);
  }
  std::int64_t num_out() const { return static_cast<std::int64_t>(out_source.size()); }
};

/// The result of planning one exchange. Each token crosses to each
/// destination rank (flat) or node (hierarchical) once, whatever number of
/// its slots live there; its experts' rank expands it to its slots. Row
/// counts and offsets are per peer rank. The combine uses the same plan with
/// send and receive swapped.
struct DispatchPlan {
  ExchangeKind kind = ExchangeKind::kFlat;
  // Sender side (this rank's tokens): the first hop.
  std::vector<std::int64_t> send_counts, send_offsets;  // [R] rows to each rank
  std::vector<std::int64_t> send_slot_counts;           // [R] kept slots for each rank's experts
  std::vector<std::int64_t> send_token;                 // [num_send] token of each sent row, in send order
  std::vector<SlotEntry> send_entries;                  // [num_send * K] each row's slots, in choice order
  std::vector<std::int64_t> slot_entry;                 // [T * K] the entry (row * K + i) of a slot, -1 if dropped
  // Each token's rows by destination node, then rank: the order its partial
  // results are summed in (rank partials within a node first, then nodes).
  std::vector<std::int64_t> token_row_begin;  // [T + 1]
  std::vector<std::int64_t> token_rows;       // [num_send]
  std::vector<std::int32_t> token_row_node;   // [num_send] the node of each of those rows' destination
  NodeForward forward;                        // hierarchical only
  // Receiver side (this rank's experts): the last hop.
  std::vector<std::int64_t> recv_counts, recv_offsets;  // [R] rows from each rank
  std::vector<std::int64_t> recv_origin;                // [num_recv] the rank each row's token came from
  std::vector<SlotEntry> recv_entries;                  // [num_recv * K]
  std::vector<std::int64_t> entry_grouped;              // [num_recv * K] the expert row of each entry, -1 if none
  std::vector<std::int64_t> grouped_source;             // [num_slots] received row of each expert row
  std::vector<float> grouped_weight;                    // [num_slots] routing weight of each expert row
  std::vector<std::int64_t> local_expert_counts;        // [num_local] expert rows per local expert
  std::vector<std::int64_t> recv_table;  // [R * num_local] expert rows from token rank s for local expert j
  std::int64_t num_dropped = 0;          // this rank's dropped slots
  std::int64_t top_k = 0;

  bool hierarchical() const { return kind == ExchangeKind::kHierarchical; }
  std::int64_t num_send() const { return static_cast<std::int64_t>(send_token.size()); }
  std::int64_t num_recv() const { return static_cast<std::int64_t>(recv_origin.size()); }
  /// Expert rows on this rank: one per received slot, grouped by local
  /// expert, then token rank, then token.
  std::int64_t num_slots() const { return static_cast<std::int64_t>(grouped_source.size()); }

  /// Sizes every vector for up to `max_tokens` tokens of this rank and
  /// `max_recv` received slots (and, forwarding, `max_forward` node rows in),
  /// so planning into this plan allocates nothing.
  void reserve(std::int64_t max_tokens, std::int64_t max_recv, std::int64_t max_forward,
               const ExpertPlacement& placement, int rank, std::int64_t top_k);

  // plan_dispatch()'s working space, kept with the plan so it is sized once.
  struct Scratch {
    std::vector<char> kept;                    // [T * top_k]
    std::vector<std::int32_t> slot_rank;       // [T * top_k] the expert's rank of each kept slot
    std::vector<std::int32_t> slot_dest;       // [T * top_k] the first hop's destination of each kept slot
    std::vector<std::int64_t> rank_cursor;     // [R]
    std::vector<std::int64_t> used;            // [E]
    std::vector<std::int64_t> grouped_cursor;  // [R * num_local]
  } scratch;
};

/// Plans the exchange for `routing` into `plan`, reusing its vectors.
/// Collective (exchanges row counts, then each row's slot entries; twice
/// for hierarchical). Rows to one rank are in token order. A slot of a
/// replicated expert goes to the holder the replica choice rule picks
/// (placement_plan.hpp) for token first_token + t of this rank's step.
void plan_dispatch(const RoutingPlan& routing, const ExpertPlacement& placement, const CapacityPolicy& capacity,
                   const ExchangeLayout& layout, comm::Communicator& comm, DispatchPlan* plan,
                   std::int64_t first_token = 0);
DispatchPlan plan_dispatch(const RoutingPlan& routing, const ExpertPlacement& placement, const CapacityPolicy& capacity,
                           comm::Communicator& comm);

}  // namespace switchyard::layers
