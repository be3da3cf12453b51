#include "switchyard/kernels/number_conversion.hpp"

#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SY_X86 1
#else
#define SY_X86 0
#endif

namespace switchyard::kernels {
namespace {

// ---------------------------------------------------------------------------
// Scalar definitions on raw bits. Everything else must match these bit for bit.

constexpr std::uint32_t kF32Inf = 0x7f800000u;    // exponent all ones, mantissa 0
constexpr std::uint32_t kF32Quiet = 0x00400000u;  // leading mantissa bit of a float32
constexpr std::uint32_t kAbs = 0x7fffffffu;

std::uint32_t bits_of(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

float float_of(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// NOTE: written without branches so that the vector loop below can use the
// same expressions; a NaN (|b| > Inf) keeps its sign and top payload bits and
// gets the quiet bit (0x40 in bf16), every other value rounds to nearest even
// (adding 0x7fff plus the lowest kept bit carries exactly when the dropped
// half is above the tie, or at the tie with an odd kept half; a carry out of
// the mantissa moves into the exponent, and the largest finite floats carry
// into Inf, as IEEE rounding says).
constexpr std::uint16_t bf16_from_bits(std::uint32_t b) {
  const std::uint32_t rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
  const std::uint32_t nan = (b >> 16) | 0x40u;
  return static_cast<std::uint16_t>((b & kAbs) > kF32Inf ? nan : rounded);
}

constexpr std::uint32_t bits_from_bf16(std::uint16_t h) {
  const std::uint32_t b = static_cast<std::uint32_t>(h) << 16;
  return (b & kAbs) > kF32Inf ? b | kF32Quiet : b;
}

constexpr std::uint16_t f16_from_bits(std::uint32_t b) {
  const auto sign = static_cast<std::uint16_t>((b >> 16) & 0x8000u);
  const std::uint32_t x = b & kAbs;
  if (x > kF32Inf) return static_cast<std::uint16_t>(sign | 0x7e00u | ((x >> 13) & 0x3ffu));  // quiet NaN
  if (x >= 0x477ff000u) return sign | 0x7c00u;  // 65520 = (65504 + 65536) / 2 and above: Inf
  if (x < 0x38800000u) {                        // below 2^-14: subnormal or zero
    if (x < 0x33000000u) return sign;           // below 2^-25 (half the smallest subnormal): zero
    const std::uint32_t mant = (x & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(x >> 23);  // 14..24
    const std::uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
    std::uint32_t half = mant >> shift;
    if (rem > mid || (rem == mid && (half & 1u))) ++half;  // may carry into the smallest normal
    return static_cast<std::uint16_t>(sign | half);
  }
  // Normal: rebias the exponent (127 -> 15), keep 10 mantissa bits, round on the 13 dropped.
  std::uint32_t h = (x >> 13) - (112u << 10);
  const std::uint32_t rem = x & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<std::uint16_t>(sign | h);
}

constexpr std::uint32_t bits_from_f16(std::uint16_t h) {
  const std::uint32_t sign = (h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0x1f) return sign | kF32Inf | (mant << 13) | (mant ? kF32Quiet : 0u);  // Inf, quiet NaN
  if (exp != 0) return sign | ((exp + 112) << 23) | (mant << 13);
  if (mant == 0) return sign;
  exp = 113;  // subnormal: normalise
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    --exp;
  }
  return sign | (exp << 23) | ((mant & 0x3ffu) << 13);
}

// ---------------------------------------------------------------------------
// bf16 arrays: the scalar expressions on 8 lanes (GCC vector extensions),
// compiled once for the baseline ISA and once for AVX2.

using U32x8 = std::uint32_t __attribute__((vector_size(32)));
using I32x8 = std::int32_t __attribute__((vector_size(32)));
using U16x8 = std::uint16_t __attribute__((vector_size(16)));

__attribute__((always_inline)) inline void to_bf16_lanes(const float* x, std::int64_t n, std::uint16_t* out) {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    U32x8 b;
    std::memcpy(&b, x + i, sizeof b);
    const U32x8 rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
    const U32x8 nan = (b >> 16) | 0x40u;
    // |b| < 2^31, so the signed compare is the unsigned one of the scalar code.
    const I32x8 is_nan = (I32x8)(b & kAbs) > static_cast<std::int32_t>(kF32Inf);
    const U16x8 h = __builtin_convertvector(is_nan ? nan : rounded, U16x8);
    std::memcpy(out + i, &h, sizeof h);
  }
  for (; i < n; ++i) out[i] = bf16_from_bits(bits_of(x[i]));
}

__attribute__((always_inline)) inline void from_bf16_lanes(const std::uint16_t* x, std::int64_t n, float* out) {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    U16x8 h;
    std::memcpy(&h, x + i, sizeof h);
    const U32x8 b = __builtin_convertvector(h, U32x8) << 16;
    const I32x8 is_nan = (I32x8)(b & kAbs) > static_cast<std::int32_t>(kF32Inf);
    const U32x8 f = is_nan ? (b | kF32Quiet) : b;
    std::memcpy(out + i, &f, sizeof f);
  }
  for (; i < n; ++i) out[i] = float_of(bits_from_bf16(x[i]));
}

void to_bf16_baseline(const float* x, std::int64_t n, std::uint16_t* out) { to_bf16_lanes(x, n, out); }
void from_bf16_baseline(const std::uint16_t* x, std::int64_t n, float* out) { from_bf16_lanes(x, n, out); }

#if SY_X86
__attribute__((target("avx2"))) void to_bf16_avx2(const float* x, std::int64_t n, std::uint16_t* out) {
  to_bf16_lanes(x, n, out);
}
__attribute__((target("avx2"))) void from_bf16_avx2(const std::uint16_t* x, std::int64_t n, float* out) {
  from_bf16_lanes(x, n, out);
}

// f16 arrays through F16C: vcvtps2ph with an explicit round-to-nearest-even
// immediate (MXCSR is not consulted) and vcvtph2ps, whose results, NaNs
// included, are those of the scalar definitions above.
__attribute__((target("avx,f16c"))) void to_f16_f16c(const float* x, std::int64_t n, std::uint16_t* out) {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), h);
  }
  for (; i < n; ++i) out[i] = f16_from_bits(bits_of(x[i]));
}

__attribute__((target("avx,f16c"))) void from_f16_f16c(const std::uint16_t* x, std::int64_t n, float* out) {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
  for (; i < n; ++i) out[i] = float_of(bits_from_f16(x[i]));
}

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}
bool has_f16c() {
  static const bool yes = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return yes;
}
#endif

}  // namespace

std::uint16_t float_to_bf16(float f) { return bf16_from_bits(bits_of(f)); }
float bf16_to_float(std::uint16_t h) { return float_of(bits_from_bf16(h)); }
std::uint16_t float_to_f16(float f) { return f16_from_bits(bits_of(f)); }
float f16_to_float(std::uint16_t h) { return float_of(bits_from_f16(h)); }

void convert_to_bf16(const float* x, std::int64_t n, std::uint16_t* out) {
#if SY_X86
  if (has_avx2()) return to_bf16_avx2(x, n, out);
#endif
  to_bf16_baseline(x, n, out);
}

void convert_from_bf16(const std::uint16_t* x, std::int64_t n, float* out) {
#if SY_X86
  if (has_avx2()) return from_bf16_avx2(x, n, out);
#endif
  from_bf16_baseline(x, n, out);
}

void convert_to_f16(const float* x, std::int64_t n, std::uint16_t* out) {
#if SY_X86
  if (has_f16c()) return to_f16_f16c(x, n, out);
#endif
  for (std::int64_t i = 0; i < n; ++i) out[i] = f16_from_bits(bits_of(x[i]));
}

void convert_from_f16(const std::uint16_t* x, std::int64_t n, float* out) {
#if SY_X86
  if (has_f16c()) return from_f16_f16c(x, n, out);
#endif
  for (std::int64_t i = 0; i < n; ++i) out[i] = float_of(bits_from_f16(x[i]));
}

}  // namespace switchyard::kernels
