#include "switchyard/kernels/permute.hpp"

#include <algorithm>
#include <cstring>

#include "switchyard/kernels/number_conversion.hpp"

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

void sum_entry_rows(const float* rows, const std::int64_t* entry_row, const float* row_weight, std::int64_t num_out,
                    std::int64_t k, std::int64_t width, float* out) {
  for (std::int64_t i = 0; i < num_out; ++i) {
    float* o = out + i * width;
    std::fill(o, o + width, 0.0f);
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t r = entry_row[i * k + j];
      if (r < 0) continue;
      const float* y = rows + r * width;
      if (row_weight) {
        const float w = row_weight[r];
        for (std::int64_t c = 0; c < width; ++c) o[c] += w * y[c];
      } else {
        for (std::int64_t c = 0; c < width; ++c) o[c] += y[c];
      }
    }
  }
}

void sum_token_rows(const float* values, const TokenRows& tokens, std::int64_t num_tokens, std::int64_t width,
                    float* scratch, float* out, bool round_groups_to_bf16) {
  const std::int64_t* row_begin = tokens.begin;
  const std::int32_t* row_group = tokens.group;
  for (std::int64_t t = 0; t < num_tokens; ++t) {
    float* o = out + t * width;
    std::fill(o, o + width, 0.0f);
    for (std::int64_t i = row_begin[t]; i < row_begin[t + 1];) {
      // One group: its rows' sum first, then into the token's.
      std::fill(scratch, scratch + width, 0.0f);
      const std::int32_t group = row_group[i];
      for (; i < row_begin[t + 1] && row_group[i] == group; ++i) {
        const float* y = values + tokens.rows[i] * width;
        for (std::int64_t c = 0; c < width; ++c) scratch[c] += y[c];
      }
      if (round_groups_to_bf16)
        for (std::int64_t c = 0; c < width; ++c) scratch[c] = bf16_to_float(float_to_bf16(scratch[c]));
      for (std::int64_t c = 0; c < width; ++c) o[c] += scratch[c];
    }
  }
}

}  // namespace switchyard::kernels
