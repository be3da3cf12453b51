#pragma once
// Dispatch planning: which token rows go to which rank, in what order, and
// where every row lands on the way there and back.
#include <cstdint>
#include <vector>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/layers/router.hpp"
#include "switchyard/runtime/partition.hpp"

namespace switchyard::layers {

/// Experts in contiguous blocks over ranks (a BlockPartition); the first
/// E % R ranks hold one expert more than the others.
class ExpertPlacement {
 public:
  /// Throws Error(kInvalidArgument) if num_ranks > num_experts.
  ExpertPlacement(std::int64_t num_experts, int num_ranks);

  std::int64_t num_experts() const { return blocks_.total(); }
  int num_ranks() const { return blocks_.num_parts(); }
  std::int64_t first_expert(int rank) const { return blocks_.first(rank); }
  std::int64_t num_local(int rank) const { return blocks_.count(rank); }
  /// The most experts any rank holds.
  std::int64_t max_local() const { return blocks_.max_count(); }
  int owner(std::int64_t expert) const { return blocks_.owner(expert); }

 private:
  BlockPartition blocks_;
};

/// Capacity: 0 means dropless. Otherwise each expert accepts at most
/// ceil(capacity_factor * T_local * top_k / num_experts) slots from each rank;
/// slots are admitted first choices first (all tokens' j = 0, then j = 1, ...),
/// within a choice rank in token order, and the rest are dropped (weight lost,
/// not renormalised), as in GShard and Switch Transformer.
struct CapacityPolicy {
  double capacity_factor = 0.0;
};

/// The result of planning one exchange. Row counts and offsets are per peer
/// rank. The combine uses the same plan with send and receive swapped.
struct DispatchPlan {
  // Sender side (this rank's tokens).
  std::vector<std::int64_t> send_counts, send_offsets;  // [R]
  std::vector<std::int64_t> send_token;                 // [num_send] token of each sent row, in send order
  std::vector<std::int64_t> slot_row;                   // [T * top_k] row in send order, -1 if dropped
  // Receiver side (this rank's experts).
  std::vector<std::int64_t> recv_counts, recv_offsets;  // [R]
  std::vector<std::int64_t> recv_to_grouped;            // [num_recv] received row -> row grouped by local expert
  std::vector<std::int64_t> local_expert_counts;        // [num_local] rows per local expert
  std::vector<std::int64_t> recv_table;                 // [R * num_local] rows from source rank s for local expert j
  std::int64_t num_dropped = 0;                         // this rank's dropped slots

  std::int64_t num_send() const { return static_cast<std::int64_t>(send_token.size()); }
  std::int64_t num_recv() const { return static_cast<std::int64_t>(recv_to_grouped.size()); }

  /// Sizes every vector for up to `max_tokens` tokens of this rank and
  /// `max_recv` received rows, so planning into this plan allocates nothing.
  void reserve(std::int64_t max_tokens, std::int64_t max_recv, const ExpertPlacement& placement, int rank,
               std::int64_t top_k);

  // plan_dispatch()'s working space, kept with the plan so it is sized once.
  struct Scratch {
    std::vector<char> kept;                               // [T * top_k]
    std::vector<std::int64_t> per_expert, expert_cursor;  // [E]
    std::vector<std::int64_t> send_table, recv_table;     // [R * max_local]
    std::vector<std::int64_t> grouped_cursor, used;       // [num_local], [E]
  } scratch;
};

/// Plans the exchange for `routing` into `plan`, reusing its vectors.
/// Collective (exchanges per-expert counts). Rows to one rank are ordered by
/// expert, then token, then choice.
void plan_dispatch(const RoutingPlan& routing, const ExpertPlacement& placement, const CapacityPolicy& capacity,
                   comm::Communicator& comm, DispatchPlan* plan);
DispatchPlan plan_dispatch(const RoutingPlan& routing, const ExpertPlacement& placement, const CapacityPolicy& capacity,
                           comm::Communicator& comm);

}  // namespace switchyard::layers
