#pragma once
// Comparing results within rounding: ||a - b|| / ||b||.
#include <algorithm>
#include <cmath>
#include <vector>

namespace switchyard::test_support {

/// ||a - b|| / ||b|| in double precision over b's elements (a at least as long).
inline double rel_norm_error(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    norm += double(b[i]) * b[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

}  // namespace switchyard::test_support
