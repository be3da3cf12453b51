#include "switchyard/kernels/permute.hpp"

#include <cstring>

namespace switchyard::kernels {

void gather_rows(const float* src, const std::int64_t* row_idx, std::int64_t num_rows, std::int64_t width, float* dst) {
  for (std::int64_t i = 0; i < num_rows; ++i)
    std::memcpy(dst + i * width, src + row_idx[i] * width, sizeof(float) * width);
}

void scatter_rows(const float* src, const std::int64_t* row_idx, std::int64_t num_rows, std::int64_t width,
                  float* dst) {
  for (std::int64_t i = 0; i < num_rows; ++i)
    std::memcpy(dst + row_idx[i] * width, src + i * width, sizeof(float) * width);
}

void unpermute_weighted_sum(const float* rows, const std::int64_t* slot_row, const float* weights,
                            std::int64_t num_tokens, std::int64_t k, std::int64_t width, float* out) {
  for (std::int64_t t = 0; t < num_tokens; ++t) {
    float* o = out + t * width;
    for (std::int64_t j = 0; j < k; ++j) {
      std::int64_t r = slot_row[t * k + j];
      if (r < 0) continue;
      const float w = weights[t * k + j];
      const float* y = rows + r * width;
      for (std::int64_t c = 0; c < width; ++c) o[c] += w * y[c];
    }
  }
}

}  // namespace switchyard::kernels
