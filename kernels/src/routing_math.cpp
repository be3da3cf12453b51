#include "switchyard/kernels/routing_math.hpp"

#include <algorithm>
#include <cmath>

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
  // NOTE: an insertion into the k best so far: k is small (the experts a
  // token picks), it allocates nothing, and because candidates arrive in
  // index order, a value equal to one already kept goes behind it, which is
  // the lower-index tie rule.
  std::int64_t kept = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = values[i];
    if (kept == k && !(v > values[out_idx[k - 1]])) continue;
    std::int64_t pos = kept < k ? kept++ : k - 1;
    while (pos > 0 && v > values[out_idx[pos - 1]]) {
      out_idx[pos] = out_idx[pos - 1];
      --pos;
    }
    out_idx[pos] = static_cast<std::int32_t>(i);
  }
}

}  // namespace switchyard::kernels
