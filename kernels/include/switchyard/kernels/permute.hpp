#pragma once
// Moving token rows between the token order and the expert-grouped order.
#include <cstdint>

namespace switchyard::kernels {

/// dst[i, :] = src[row_idx[i], :] for i in [0, num_rows); rows of `width` floats.
void gather_rows(const float* src, const std::int64_t* row_idx, std::int64_t num_rows, std::int64_t width, float* dst);

/// dst[row_idx[i], :] = src[i, :] for i in [0, num_rows).
void scatter_rows(const float* src, const std::int64_t* row_idx, std::int64_t num_rows, std::int64_t width, float* dst);

/// Sums of entries into rows: out[i, :] = sum_j w(r) * rows[r, :] over
/// r = entry_row[i*k + j], j = 0..k-1 in order, starting from zero; a
/// negative entry_row is skipped. w(r) = row_weight[r], or 1 when
/// row_weight is null. The expert side's sum of one token's slots.
void sum_entry_rows(const float* rows, const std::int64_t* entry_row, const float* row_weight, std::int64_t num_out,
                    std::int64_t k, std::int64_t width, float* out);

/// Which rows belong to which token: token t's rows are rows[begin[t] ..
/// begin[t + 1]), listed group by group; group[i] names row i's group.
struct TokenRows {
  const std::int64_t* begin = nullptr;
  const std::int64_t* rows = nullptr;
  const std::int32_t* group = nullptr;
};

/// One token's rows summed in groups: out[t, :] = sum over groups g (in the
/// order listed) of (sum of its rows of `values` in group g, in order), each
/// sum starting from zero. `scratch` holds `width` floats. A token without
/// rows gets zeros. With `round_groups_to_bf16`, each group's sum is
/// rounded to bf16 (nearest even) before it is added: what a group summed
/// elsewhere and sent as bf16 rows would be.
void sum_token_rows(const float* values, const TokenRows& tokens, std::int64_t num_tokens, std::int64_t width,
                    float* scratch, float* out, bool round_groups_to_bf16 = false);

}  // namespace switchyard::kernels
