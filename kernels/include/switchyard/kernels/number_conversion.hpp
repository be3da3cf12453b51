#pragma once
// The one home for float32 <-> bfloat16 / IEEE half conversion. bf16 and
// f16 values travel as their raw bits in std::uint16_t.
//
// Semantics, the same for the scalar and the array functions (the array
// ones use vector instructions where the CPU has them; their results are
// bit-identical to the scalar ones for every input):
// - Narrowing rounds to nearest, ties to even, as IEEE 754 does: values past
//   the largest finite number by half an ulp or more become ±Inf; f16
//   results below its normal range are subnormal or ±0, correctly rounded.
// - ±Inf stays ±Inf and ±0 stays ±0.
// - NaN stays NaN of the same sign, always quiet: the leading payload bits
//   are kept (truncated when narrowing) and the quiet bit is set, as the
//   x86 conversion instructions (vcvtps2ph, vcvtph2ps, vcvtneps2bf16) do.
// - Widening is exact for every other value.
//
// All functions are pure and thread-safe; the array ones allow n == 0 and
// need non-overlapping input and output.
#include <cstdint>

namespace switchyard::kernels {

/// Rounds a float32 to the nearest bfloat16 (ties to even); returns its bits.
std::uint16_t float_to_bf16(float f);
/// Widens bfloat16 bits to float32 (exact; a NaN comes back quiet).
float bf16_to_float(std::uint16_t h);
/// Rounds a float32 to the nearest IEEE half (ties to even); returns its bits.
std::uint16_t float_to_f16(float f);
/// Widens IEEE half bits to float32 (exact; a NaN comes back quiet).
float f16_to_float(std::uint16_t h);

/// out[i] = float_to_bf16(x[i]) for i < n.
void convert_to_bf16(const float* x, std::int64_t n, std::uint16_t* out);
/// out[i] = bf16_to_float(x[i]) for i < n.
void convert_from_bf16(const std::uint16_t* x, std::int64_t n, float* out);
/// out[i] = float_to_f16(x[i]) for i < n.
void convert_to_f16(const float* x, std::int64_t n, std::uint16_t* out);
/// out[i] = f16_to_float(x[i]) for i < n.
void convert_from_f16(const std::uint16_t* x, std::int64_t n, float* out);

}  // namespace switchyard::kernels
