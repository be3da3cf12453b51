#pragma once
// Moving token rows between the token order and the expert-grouped order.
#include <cstdint>

namespace switchyard::kernels {

/// dst[i, :] = src[row_idx[i], :] for i in [0, num_rows); rows of `width` floats.
void gather_rows(const float* src, const std::int64_t* row_idx, std::int64_t num_rows, std::int64_t width, float* dst);

/// dst[row_idx[i], :] = src[i, :] for i in [0, num_rows).
void scatter_rows(const float* src, const std::int64_t* row_idx, std::int64_t num_rows, std::int64_t width, float* dst);

/// Weighted sum of expert outputs back into token order:
/// out[t, :] += sum_j weights[t*k + j] * rows[slot_row[t*k + j], :], j = 0..k-1
/// in slot order (a fixed order, so results are schedule independent).
/// A negative slot_row marks a dropped slot, which contributes nothing.
void unpermute_weighted_sum(const float* rows, const std::int64_t* slot_row, const float* weights,
                            std::int64_t num_tokens, std::int64_t k, std::int64_t width, float* out);

}  // namespace switchyard::kernels
