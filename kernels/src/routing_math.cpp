#include "switchyard/kernels/routing_math.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace switchyard::kernels {

void softmax_rows(float* x, std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = x + r * cols;
    float mx = *std::max_element(row, row + cols);
    double sum = 0;
    for (std::int64_t c = 0; c < cols; ++c) {
      row[c] = std::exp(row[c] - mx);
      sum += row[c];
    }
    float inv = static_cast<float>(1.0 / sum);
    for (std::int64_t c = 0; c < cols; ++c) row[c] *= inv;
  }
}

void sigmoid(float* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) x[i] = 1.0f / (1.0f + std::exp(-x[i]));
}

void top_k(const float* values, std::int64_t n, std::int64_t k, std::int32_t* out_idx) {
  // NOTE: n is the number of experts (tens to hundreds), so a partial sort of
  // indices is cheap and its comparator makes the tie rule explicit.
  std::vector<std::int32_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [values](std::int32_t a, std::int32_t b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  std::copy(idx.begin(), idx.begin() + k, out_idx);
}

}  // namespace switchyard::kernels
