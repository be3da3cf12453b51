#pragma once
// Row-wise primitives the routers are built from.
#include <cstdint>

namespace switchyard::kernels {

/// In-place softmax of each of `rows` rows of width `cols` (max-subtracted).
void softmax_rows(float* x, std::int64_t rows, std::int64_t cols);

/// In-place logistic sigmoid of `n` values.
void sigmoid(float* x, std::int64_t n);

/// Indices of the `k` largest of `n` values, largest first. Ties go to the
/// lower index, so results never depend on the sort implementation. Values
/// equal to -infinity are never chosen while a larger value remains.
void top_k(const float* values, std::int64_t n, std::int64_t k, std::int32_t* out_idx);

}  // namespace switchyard::kernels
