// float32 <-> bfloat16 / IEEE half (kernels/number_conversion.hpp) against
// hand-derived bit patterns and an independent reference: the table of every
// finite narrow value, decoded with std::ldexp, searched for the nearest one
// (ties to the even bit pattern) in double arithmetic.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "switchyard/kernels/number_conversion.hpp"

namespace {

using namespace switchyard::kernels;

float f32_bits(std::uint32_t u) { return std::bit_cast<float>(u); }
std::uint32_t bits_of(float f) { return std::bit_cast<std::uint32_t>(f); }

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr std::int64_t kReported = 10;  // mismatches printed per sweep; all are counted

// ---------------------------------------------------------------------------
// The reference.

/// A narrow format: `man_bits` stored mantissa bits, `exp_bits` exponent bits.
struct Format {
  int man_bits, exp_bits;
  int bias() const { return (1 << (exp_bits - 1)) - 1; }
  std::uint16_t sign_bit() const { return static_cast<std::uint16_t>(1u << (man_bits + exp_bits)); }
  std::uint16_t inf_bits() const { return static_cast<std::uint16_t>(((1u << exp_bits) - 1) << man_bits); }
  /// The value of non-negative finite bits, from the definition of the format.
  double value(std::uint32_t h) const {
    const int exp = static_cast<int>(h >> man_bits), man = static_cast<int>(h & ((1u << man_bits) - 1));
    if (exp == 0) return std::ldexp(man, 1 - bias() - man_bits);
    return std::ldexp((1 << man_bits) + man, exp - bias() - man_bits);
  }
};
constexpr Format kBf16{7, 8}, kF16{10, 5};

/// Every non-negative finite value of a format in bit order (= value order),
/// followed by the first value past the largest, which the format spells Inf:
/// rounding past the largest finite value behaves as if that value existed.
struct Table {
  Format format;
  std::vector<double> values;
  explicit Table(Format f) : format(f) {
    for (std::uint32_t h = 0; h < f.inf_bits(); ++h) values.push_back(f.value(h));
    values.push_back(std::ldexp(1.0, (1 << (f.exp_bits - 1))));  // 2^(emax + 1)
  }
  /// The bits nearest to finite `f`, ties to the even bit pattern.
  std::uint16_t nearest(float f) const {
    const double a = std::fabs(static_cast<double>(f));
    const std::uint16_t sign = std::signbit(f) ? format.sign_bit() : 0;
    auto hi = std::lower_bound(values.begin(), values.end(), a);  // first >= a
    if (hi == values.end()) return sign | format.inf_bits();
    if (*hi == a || hi == values.begin()) return sign | static_cast<std::uint16_t>(hi - values.begin());
    auto lo = hi - 1;
    const double below = a - *lo, above = *hi - a;  // exact: both operands fit a double's 53 bits
    auto idx = static_cast<std::uint16_t>(lo - values.begin());
    if (above < below || (above == below && (idx & 1u))) ++idx;
    return sign | idx;
  }
};

const Table& bf16_table() {
  static const Table t(kBf16);
  return t;
}
const Table& f16_table() {
  static const Table t(kF16);
  return t;
}

/// Every `stride`-th float32 bit pattern, starting at `offset`.
template <typename Fn>
void sweep_floats(std::uint64_t stride, std::uint64_t offset, Fn&& fn) {
  for (std::uint64_t u = offset; u <= 0xFFFFFFFFull; u += stride) fn(static_cast<std::uint32_t>(u));
}

/// Floats at and around each narrow value and each midpoint between
/// neighbours (where ties are decided), both signs.
template <typename Fn>
void boundary_floats(const Table& t, Fn&& fn) {
  for (std::size_t i = 0; i + 1 < t.values.size(); ++i) {
    const auto v = static_cast<float>(t.values[i]);
    const auto mid = static_cast<float>((t.values[i] + t.values[i + 1]) / 2);  // exact: one more bit
    for (float c : {v, mid}) {
      for (float x : {c, std::nextafter(c, 0.0f), std::nextafter(c, kInf)}) {
        fn(x);
        fn(-x);
      }
    }
  }
}

bool is_nan16(Format f, std::uint16_t h) {
  return (h & f.inf_bits()) == f.inf_bits() && (h & ((1u << f.man_bits) - 1)) != 0;
}

// ---------------------------------------------------------------------------
// bfloat16, by hand.

TEST(NumberConversion, Bf16RoundsToNearestEvenOnHandDerivedCases) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(float_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(float_to_bf16(1.5f), 0x3FC0);
  EXPECT_EQ(float_to_bf16(0.0f), 0x0000);
  EXPECT_EQ(float_to_bf16(-0.0f), 0x8000);
  // bf16 keeps the top 16 bits; the low 16 bits decide the rounding.
  EXPECT_EQ(float_to_bf16(f32_bits(0x3F807FFF)), 0x3F80);               // below half: down
  EXPECT_EQ(float_to_bf16(f32_bits(0x3F808000)), 0x3F80);               // exactly half, 0x3F80 even: down
  EXPECT_EQ(float_to_bf16(f32_bits(0x3F808001)), 0x3F81);               // above half: up
  EXPECT_EQ(float_to_bf16(f32_bits(0x3F818000)), 0x3F82);               // exactly half, 0x3F81 odd: up to even
  EXPECT_EQ(float_to_bf16(f32_bits(0xBF818000)), 0xBF82);               // same, negative
  EXPECT_EQ(float_to_bf16(f32_bits(0x3FFF8000)), 0x4000);               // half, odd, carries into the exponent
  EXPECT_EQ(float_to_bf16(f32_bits(0x00008000)), 0x0000);               // subnormal half, even: down
  EXPECT_EQ(float_to_bf16(f32_bits(0x00018000)), 0x0002);               // subnormal half, odd: up
  EXPECT_EQ(float_to_bf16(f32_bits(0x00000001)), 0x0000);               // smallest float subnormal
  EXPECT_EQ(float_to_bf16(f32_bits(0x80000001)), 0x8000);               // ... negative: -0
  EXPECT_EQ(float_to_bf16(f32_bits(0x007FFFFF)), 0x0080);               // largest float subnormal -> smallest normal
  EXPECT_EQ(float_to_bf16(f32_bits(0x7F7F7FFF)), 0x7F7F);               // large, below half
  EXPECT_EQ(float_to_bf16(f32_bits(0x7F7F8000)), 0x7F80);               // half past the largest (odd 0x7F7F): Inf
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7F80);  // 0x7F7FFFFF rounds up to Inf
  EXPECT_EQ(float_to_bf16(-std::numeric_limits<float>::max()), 0xFF80);
  EXPECT_EQ(float_to_bf16(kInf), 0x7F80);
  EXPECT_EQ(float_to_bf16(-kInf), 0xFF80);
}

// NaN stays NaN: sign and the top payload bits kept, quiet bit (0x0040) set.
// (Adding 0x7FFF and shifting would turn 0x7FFFFFFF into -0 and 0x7F800001
// into Inf.)
TEST(NumberConversion, Bf16KeepsNaNQuietWithSignAndPayload) {
  EXPECT_EQ(float_to_bf16(f32_bits(0x7FC00000)), 0x7FC0);
  EXPECT_EQ(float_to_bf16(f32_bits(0x7FFFFFFF)), 0x7FFF);
  EXPECT_EQ(float_to_bf16(f32_bits(0x7F800001)), 0x7FC0);  // signalling, payload below bf16's bits
  EXPECT_EQ(float_to_bf16(f32_bits(0x7FA00000)), 0x7FE0);  // signalling, payload 0x20 kept
  EXPECT_EQ(float_to_bf16(f32_bits(0xFF800001)), 0xFFC0);
  EXPECT_EQ(float_to_bf16(f32_bits(0xFFC00000)), 0xFFC0);
  EXPECT_EQ(float_to_bf16(f32_bits(0xFFFFFFFF)), 0xFFFF);
  EXPECT_EQ(float_to_bf16(f32_bits(0x7FC18000)), 0x7FC1);  // no rounding on NaN payloads

  EXPECT_EQ(bits_of(bf16_to_float(0x7F80)), 0x7F800000u);
  EXPECT_EQ(bits_of(bf16_to_float(0xFF80)), 0xFF800000u);
  EXPECT_EQ(bits_of(bf16_to_float(0x7FC1)), 0x7FC10000u);
  EXPECT_EQ(bits_of(bf16_to_float(0x7F81)), 0x7FC10000u);  // signalling comes back quiet
  EXPECT_EQ(bits_of(bf16_to_float(0xFFA0)), 0xFFE00000u);
  EXPECT_EQ(bits_of(bf16_to_float(0x8000)), 0x80000000u);
  EXPECT_EQ(bits_of(bf16_to_float(0x0001)), 0x00010000u);  // bf16 subnormal
}

// ---------------------------------------------------------------------------
// IEEE half, by hand.

TEST(NumberConversion, F16RoundsToNearestEvenOnHandDerivedCases) {
  EXPECT_EQ(float_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(float_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(float_to_f16(0.0f), 0x0000);
  EXPECT_EQ(float_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(float_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(float_to_f16(0.333251953125f), 0x3555);
  // Half has 10 mantissa bits: ulp(1) = 2^-10, half an ulp = 2^-11.
  EXPECT_EQ(float_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie, even: down
  EXPECT_EQ(float_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie, odd 0x3C01: up
  EXPECT_EQ(float_to_f16(f32_bits(0x3F801001)), 0x3C01);              // just above the tie: up
  EXPECT_EQ(float_to_f16(f32_bits(0x3F800FFF)), 0x3C00);              // just below the tie: down
  EXPECT_EQ(float_to_f16(-(1.0f + 3 * std::ldexp(1.0f, -11))), 0xBC02);
  EXPECT_EQ(float_to_f16(f32_bits(0x3FFFF000)), 0x4000);  // tie, odd 0x3FFF: carries into the exponent
  // Overflow: 65520 is halfway between 65504 (0x7BFF, odd) and 65536 -> Inf.
  EXPECT_EQ(float_to_f16(65519.0f), 0x7BFF);
  EXPECT_EQ(float_to_f16(std::nextafter(65520.0f, 0.0f)), 0x7BFF);
  EXPECT_EQ(float_to_f16(65520.0f), 0x7C00);
  EXPECT_EQ(float_to_f16(-65520.0f), 0xFC00);
  EXPECT_EQ(float_to_f16(1e6f), 0x7C00);
  EXPECT_EQ(float_to_f16(-1e6f), 0xFC00);
  EXPECT_EQ(float_to_f16(std::numeric_limits<float>::max()), 0x7C00);
  EXPECT_EQ(float_to_f16(kInf), 0x7C00);
  EXPECT_EQ(float_to_f16(-kInf), 0xFC00);
  // Subnormals: 2^-24 is the smallest; 2^-25 is a tie between 0 and 2^-24.
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie, even: 0
  EXPECT_EQ(float_to_f16(-std::ldexp(1.0f, -25)), 0x8000);
  EXPECT_EQ(float_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);  // above the tie
  EXPECT_EQ(float_to_f16(3 * std::ldexp(1.0f, -25)), 0x0002);                    // 1.5 * 2^-24: tie, odd: up
  EXPECT_EQ(float_to_f16(5 * std::ldexp(1.0f, -25)), 0x0002);                    // 2.5 * 2^-24: tie, even: down
  EXPECT_EQ(float_to_f16(1023 * std::ldexp(1.0f, -24)), 0x03FF);                 // largest subnormal
  EXPECT_EQ(float_to_f16(1023.5f * std::ldexp(1.0f, -24)), 0x0400);              // tie into the smallest normal
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -14)), 0x0400);
  EXPECT_EQ(float_to_f16(1e-10f), 0x0000);
  EXPECT_EQ(float_to_f16(-1e-10f), 0x8000);
  EXPECT_EQ(float_to_f16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(float_to_f16(std::numeric_limits<float>::min()), 0x0000);  // 2^-126

  EXPECT_EQ(bits_of(f16_to_float(0x0001)), 0x33800000u);  // 2^-24
  EXPECT_EQ(bits_of(f16_to_float(0x8001)), 0xB3800000u);
  EXPECT_EQ(bits_of(f16_to_float(0x03FF)), 0x387FC000u);  // 1023 * 2^-24
  EXPECT_EQ(bits_of(f16_to_float(0x0400)), 0x38800000u);  // 2^-14
  EXPECT_EQ(bits_of(f16_to_float(0x7BFF)), 0x477FE000u);  // 65504
  EXPECT_EQ(bits_of(f16_to_float(0x8000)), 0x80000000u);
  EXPECT_EQ(bits_of(f16_to_float(0x7C00)), 0x7F800000u);
  EXPECT_EQ(bits_of(f16_to_float(0xFC00)), 0xFF800000u);
}

// NaN stays NaN: sign and the top payload bits kept, quiet bit (0x0200) set,
// as vcvtps2ph / vcvtph2ps do.
TEST(NumberConversion, F16KeepsNaNQuietWithSignAndPayload) {
  EXPECT_EQ(float_to_f16(f32_bits(0x7FC00000)), 0x7E00);
  EXPECT_EQ(float_to_f16(f32_bits(0x7FFFFFFF)), 0x7FFF);
  EXPECT_EQ(float_to_f16(f32_bits(0x7F800001)), 0x7E00);  // payload below f16's bits: still NaN
  EXPECT_EQ(float_to_f16(f32_bits(0x7FA00000)), 0x7F00);
  EXPECT_EQ(float_to_f16(f32_bits(0xFF800001)), 0xFE00);
  EXPECT_EQ(float_to_f16(f32_bits(0xFFC00000)), 0xFE00);
  EXPECT_EQ(float_to_f16(f32_bits(0x7FC01FFF)), 0x7E00);  // no rounding on NaN payloads

  EXPECT_EQ(bits_of(f16_to_float(0x7C01)), 0x7FC02000u);  // signalling comes back quiet
  EXPECT_EQ(bits_of(f16_to_float(0x7D00)), 0x7FE00000u);
  EXPECT_EQ(bits_of(f16_to_float(0xFC01)), 0xFFC02000u);
  EXPECT_EQ(bits_of(f16_to_float(0x7E00)), 0x7FC00000u);
  EXPECT_EQ(bits_of(f16_to_float(0x7FFF)), 0x7FFFE000u);
  EXPECT_EQ(bits_of(f16_to_float(0xFDFF)), 0xFFFFE000u);
}

// ---------------------------------------------------------------------------
// Against the reference.

/// The expected narrowing of any float: the reference for finite values,
/// Inf for Inf, and for NaN the same sign, quiet, top payload bits kept.
std::uint16_t expected_narrow(const Table& t, std::uint32_t u) {
  const Format f = t.format;
  const std::uint16_t sign = (u >> 31) ? f.sign_bit() : 0;
  if ((u & 0x7FFFFFFFu) == 0x7F800000u) return sign | f.inf_bits();
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
    const std::uint32_t payload = (u & 0x7FFFFFu) >> (23 - f.man_bits);
    return static_cast<std::uint16_t>(sign | f.inf_bits() | payload | (1u << (f.man_bits - 1)));
  }
  return t.nearest(f32_bits(u));
}

TEST(NumberConversion, Bf16MatchesReferenceOnBoundariesAndSweep) {
  const Table& t = bf16_table();
  std::int64_t checked = 0, wrong = 0;
  auto check = [&](std::uint32_t u) {
    ++checked;
    const std::uint16_t want = expected_narrow(t, u), got = float_to_bf16(f32_bits(u));
    if (got != want && ++wrong <= kReported)
      ADD_FAILURE() << std::hex << "float 0x" << u << ": got 0x" << got << ", want 0x" << want;
  };
  boundary_floats(t, [&](float x) { check(bits_of(x)); });
  sweep_floats(97, 0, check);
  EXPECT_EQ(wrong, 0) << "of " << checked << " floats checked";
  EXPECT_GT(checked, 44'000'000);
}

TEST(NumberConversion, F16MatchesReferenceOnBoundariesAndSweep) {
  const Table& t = f16_table();
  std::int64_t checked = 0, wrong = 0;
  auto check = [&](std::uint32_t u) {
    ++checked;
    const std::uint16_t want = expected_narrow(t, u), got = float_to_f16(f32_bits(u));
    if (got != want && ++wrong <= kReported)
      ADD_FAILURE() << std::hex << "float 0x" << u << ": got 0x" << got << ", want 0x" << want;
  };
  boundary_floats(t, [&](float x) { check(bits_of(x)); });
  // Floats in and around f16's range (2^-27 <= |x| < 2^17) densely, then a sweep of all.
  for (std::uint32_t u = 0x32000000u; u < 0x48000000u; u += 31) {
    check(u);
    check(u | 0x80000000u);
  }
  sweep_floats(97, 0, check);
  EXPECT_EQ(wrong, 0) << "of " << checked << " floats checked";
  EXPECT_GT(checked, 44'000'000);
}

/// Widening against the definition of the format, every one of the 65536 patterns.
void check_widening(Format f, float (*widen)(std::uint16_t)) {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const auto b = static_cast<std::uint16_t>(h);
    const std::uint32_t got = bits_of(widen(b));
    const bool negative = (b & f.sign_bit()) != 0;
    const std::uint16_t mag = b & static_cast<std::uint16_t>(f.sign_bit() - 1);
    std::uint32_t want;
    if (is_nan16(f, b)) {
      want = 0x7FC00000u | ((mag & ((1u << f.man_bits) - 1)) << (23 - f.man_bits));
    } else if (mag == f.inf_bits()) {
      want = 0x7F800000u;
    } else {
      want = bits_of(static_cast<float>(f.value(mag)));
    }
    want |= negative ? 0x80000000u : 0u;
    ASSERT_EQ(got, want) << std::hex << "bits 0x" << h;
  }
}

TEST(NumberConversion, WideningIsExactForAllPatterns) {
  check_widening(kBf16, bf16_to_float);
  check_widening(kF16, f16_to_float);
}

// Every bf16 and f16 pattern survives float32 and back; signalling NaNs come
// back as the same NaN with the quiet bit set.
TEST(NumberConversion, AllNarrowPatternsRoundTrip) {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const auto b = static_cast<std::uint16_t>(h);
    const auto want_f16 = static_cast<std::uint16_t>(is_nan16(kF16, b) ? b | 0x0200 : b);
    ASSERT_EQ(float_to_f16(f16_to_float(b)), want_f16) << std::hex << "f16 0x" << h;
    const auto want_bf16 = static_cast<std::uint16_t>(is_nan16(kBf16, b) ? b | 0x0040 : b);
    ASSERT_EQ(float_to_bf16(bf16_to_float(b)), want_bf16) << std::hex << "bf16 0x" << h;
  }
}

// ---------------------------------------------------------------------------
// Array versions: bit-identical to the scalar ones, every length and offset
// (vector bodies and tails), inputs of every class.

std::vector<std::uint32_t> mixed_floats(std::size_t n, std::uint64_t seed) {
  const std::uint32_t specials[] = {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0x7F800001u,
                                    0xFFFFFFFFu, 0x7F7FFFFFu, 0x00000001u, 0x3F808000u, 0x3F818000u, 0x477FF000u,
                                    0x33000000u, 0x387FC000u, 0x3FFFF000u, 0xC77FF000u};
  std::mt19937_64 rng(seed);
  std::vector<std::uint32_t> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t r = rng();
    v[i] = (r & 3) == 0 ? specials[(r >> 2) % std::size(specials)] : static_cast<std::uint32_t>(r >> 32);
  }
  return v;
}

TEST(NumberConversion, ArraysMatchScalarForEveryLengthAndOffset) {
  constexpr std::uint16_t kGuard16 = 0xA5A5;
  const std::uint32_t kGuard32 = 0xDEADBEEFu;
  for (std::int64_t n = 0; n <= 67; ++n) {
    for (std::int64_t off = 0; off < 4; ++off) {
      const auto in_bits = mixed_floats(static_cast<std::size_t>(n + off), static_cast<std::uint64_t>(n * 4 + off));
      std::vector<float> in(in_bits.size());
      for (std::size_t i = 0; i < in.size(); ++i) in[i] = f32_bits(in_bits[i]);
      std::vector<std::uint16_t> narrow(static_cast<std::size_t>(n + off + 1), kGuard16);
      std::vector<float> wide(static_cast<std::size_t>(n + off + 1), f32_bits(kGuard32));
      const std::string where = "n=" + std::to_string(n) + " offset=" + std::to_string(off);

      convert_to_bf16(in.data() + off, n, narrow.data() + off);
      for (std::int64_t i = 0; i < n; ++i)
        ASSERT_EQ(narrow[off + i], float_to_bf16(in[off + i])) << where << " i=" << i;
      EXPECT_EQ(narrow[n + off], kGuard16) << where;
      convert_from_bf16(narrow.data() + off, n, wide.data() + off);
      for (std::int64_t i = 0; i < n; ++i)
        ASSERT_EQ(bits_of(wide[off + i]), bits_of(bf16_to_float(narrow[off + i]))) << where << " i=" << i;
      EXPECT_EQ(bits_of(wide[n + off]), kGuard32) << where;

      convert_to_f16(in.data() + off, n, narrow.data() + off);
      for (std::int64_t i = 0; i < n; ++i) ASSERT_EQ(narrow[off + i], float_to_f16(in[off + i])) << where << " i=" << i;
      EXPECT_EQ(narrow[n + off], kGuard16) << where;
      convert_from_f16(narrow.data() + off, n, wide.data() + off);
      for (std::int64_t i = 0; i < n; ++i)
        ASSERT_EQ(bits_of(wide[off + i]), bits_of(f16_to_float(narrow[off + i]))) << where << " i=" << i;
      EXPECT_EQ(bits_of(wide[n + off]), kGuard32) << where;
    }
  }
}

TEST(NumberConversion, ArraysMatchScalarOnSweep) {
  // All 65536 narrow patterns through the widening arrays.
  std::vector<std::uint16_t> all(0x10000);
  for (std::uint32_t h = 0; h < 0x10000; ++h) all[h] = static_cast<std::uint16_t>(h);
  std::vector<float> wide(all.size());
  convert_from_bf16(all.data(), static_cast<std::int64_t>(all.size()), wide.data());
  for (std::uint32_t h = 0; h < 0x10000; ++h)
    ASSERT_EQ(bits_of(wide[h]), bits_of(bf16_to_float(all[h]))) << std::hex << h;
  convert_from_f16(all.data(), static_cast<std::int64_t>(all.size()), wide.data());
  for (std::uint32_t h = 0; h < 0x10000; ++h)
    ASSERT_EQ(bits_of(wide[h]), bits_of(f16_to_float(all[h]))) << std::hex << h;

  // Every 101st float pattern through the narrowing arrays, in blocks.
  constexpr std::size_t kBlock = 1 << 16;
  std::vector<float> in;
  std::vector<std::uint16_t> bf(kBlock), h16(kBlock);
  in.reserve(kBlock);
  auto flush = [&] {
    const auto n = static_cast<std::int64_t>(in.size());
    convert_to_bf16(in.data(), n, bf.data());
    convert_to_f16(in.data(), n, h16.data());
    for (std::size_t i = 0; i < in.size(); ++i) {
      ASSERT_EQ(bf[i], float_to_bf16(in[i])) << std::hex << bits_of(in[i]);
      ASSERT_EQ(h16[i], float_to_f16(in[i])) << std::hex << bits_of(in[i]);
    }
    in.clear();
  };
  for (std::uint64_t u = 13; u <= 0xFFFFFFFFull; u += 101) {
    in.push_back(f32_bits(static_cast<std::uint32_t>(u)));
    if (in.size() == kBlock) {
      flush();
      ASSERT_FALSE(HasFailure());
    }
  }
  flush();
}

}  // namespace
