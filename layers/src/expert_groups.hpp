#pragma once
// Private: what every expert backend does with rows grouped by local expert.
#include <cstdint>
#include <vector>

#include "switchyard/runtime/parameter.hpp"

namespace switchyard::layers::detail {

/// Calls fn(j, first_row, rows) for each local expert j that has rows;
/// `counts[j]` consecutive rows belong to expert j.
template <typename F>
void for_each_group(const std::int64_t* counts, std::size_t num_experts, F fn) {
  std::int64_t first = 0;
  for (std::size_t j = 0; j < num_experts; ++j) {
    if (counts[j] > 0) fn(j, first, counts[j]);
    first += counts[j];
  }
}

/// Per expert: gate_up then down, the order ExpertBackend::parameters() promises.
template <typename Expert>
std::vector<Parameter*> gate_up_and_down(std::vector<Expert>& experts) {
  std::vector<Parameter*> out;
  for (auto& e : experts) {
    out.push_back(&e.gate_up());
    out.push_back(&e.down());
  }
  return out;
}

}  // namespace switchyard::layers::detail
