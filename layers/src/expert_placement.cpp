#include "switchyard/layers/expert_placement.hpp"

#include <algorithm>
#include <string>

#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/partition.hpp"

namespace switchyard::layers {

ExpertPlacement::ExpertPlacement(std::int64_t num_experts, int num_ranks) {
  // NOTE: checked before the partition is built, so the user sees this
  // message rather than the partition's own.
  check_arg(num_ranks >= 1 && num_ranks <= num_experts, "more ranks than experts: " + std::to_string(num_ranks) +
                                                            " ranks for " + std::to_string(num_experts) +
                                                            " experts (every rank must own at least one expert)");
  const BlockPartition blocks(num_experts, num_ranks);
  holders_.resize(static_cast<std::size_t>(num_experts));
  for (std::int64_t e = 0; e < num_experts; ++e) holders_[static_cast<std::size_t>(e)] = {blocks.owner(e)};
  local_.resize(static_cast<std::size_t>(num_ranks));
  index();
}

ExpertPlacement::ExpertPlacement(const ExpertHolders& holders, const std::string& what) {
  check_expert_holders(holders, what);
  holders_ = holders.ranks_of_expert;
  local_.resize(static_cast<std::size_t>(holders.num_ranks));
  index();
  for (int r = 0; r < num_ranks(); ++r)
    check_arg(!local_[static_cast<std::size_t>(r)].empty(),
              what + ": rank " + std::to_string(r) + " holds no expert (every rank must hold at least one)");
}

void ExpertPlacement::index() {
  const std::int64_t E = num_experts();
  index_.assign(static_cast<std::size_t>(num_ranks() * E), -1);
  for (auto& l : local_) l.clear();
  replicated_ = false;
  for (std::int64_t e = 0; e < E; ++e) {
    replicated_ = replicated_ || holders(e).size() > 1;
    for (int r : holders(e)) {
      auto& mine = local_[static_cast<std::size_t>(r)];
      index_[static_cast<std::size_t>(r * E + e)] = static_cast<std::int32_t>(mine.size());
      mine.push_back(e);
    }
  }
  max_local_ = 0;
  for (const auto& l : local_) max_local_ = std::max<std::int64_t>(max_local_, static_cast<std::int64_t>(l.size()));
}

}  // namespace switchyard::layers
