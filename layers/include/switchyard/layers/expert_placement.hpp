#pragma once
// Which ranks hold which experts: contiguous blocks by default, or any
// placement with replicas (a placement file, docs/placement.md).
#include <cstdint>
#include <vector>

#include "switchyard/layers/placement_plan.hpp"

namespace switchyard::layers {

/// The experts each rank holds and the ranks each expert is on. By default
/// contiguous blocks (a BlockPartition: the first E % R ranks hold one
/// expert more); from ExpertHolders, any placement where every rank holds
/// at least one expert, possibly several copies of hot ones (replicas).
class ExpertPlacement {
 public:
  /// Contiguous blocks. Throws Error(kInvalidArgument) if num_ranks >
  /// num_experts.
  ExpertPlacement(std::int64_t num_experts, int num_ranks);
  /// Throws Error(kInvalidArgument), starting with `what`, unless `holders`
  /// is well formed (check_expert_holders) and every rank holds an expert.
  explicit ExpertPlacement(const ExpertHolders& holders, const std::string& what = "placement");

  std::int64_t num_experts() const { return static_cast<std::int64_t>(holders_.size()); }
  int num_ranks() const { return static_cast<int>(local_.size()); }
  /// The experts `rank` holds, ascending.
  const std::vector<std::int64_t>& local_experts(int rank) const { return local_[static_cast<std::size_t>(rank)]; }
  std::int64_t num_local(int rank) const { return static_cast<std::int64_t>(local_experts(rank).size()); }
  /// The lowest expert `rank` holds (for contiguous blocks, the first of its block).
  std::int64_t first_expert(int rank) const { return local_experts(rank).front(); }
  /// The most experts any rank holds.
  std::int64_t max_local() const { return max_local_; }
  /// The ranks holding `expert`, ascending; the first is its owner (which
  /// reports it, e.g. in gradient files).
  const std::vector<int>& holders(std::int64_t expert) const { return holders_[static_cast<std::size_t>(expert)]; }
  int owner(std::int64_t expert) const { return holders(expert).front(); }
  /// `expert`'s index among `rank`'s local experts, or -1.
  std::int32_t local_index(int rank, std::int64_t expert) const {
    return index_[static_cast<std::size_t>(rank * num_experts() + expert)];
  }
  /// Some expert has more than one holder.
  bool replicated() const { return replicated_; }

 private:
  void index();

  std::vector<std::vector<int>> holders_;         // [E]
  std::vector<std::vector<std::int64_t>> local_;  // [R]
  std::vector<std::int32_t> index_;               // [R * E]
  std::int64_t max_local_ = 0;
  bool replicated_ = false;
};

}  // namespace switchyard::layers
