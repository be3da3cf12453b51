#pragma once
// Counter-based random numbers for training: a value depends only on a key
// (seed, tensor name, step, rank, ...) and a position, never on how many
// numbers were drawn before it, so initial weights and batches are the same
// whatever the rank count or the point a run was resumed from.
#include <cmath>
#include <cstdint>
#include <string_view>

namespace switchyard::train::detail {

/// SplitMix64's finaliser: a bijective 64-bit mix.
inline std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// FNV-1a of a string, for keying streams by tensor name.
inline std::uint64_t hash_name(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

/// Combines keys into one stream key.
inline std::uint64_t combine(std::uint64_t a, std::uint64_t b) { return mix64(a ^ (mix64(b) + 0x632be59bd9b4e019ULL)); }

/// A SplitMix64 stream started at `key`.
class SeededRng {
 public:
  explicit SeededRng(std::uint64_t key) : state_(mix64(key)) {}
  std::uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    std::uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  /// Uniform integer in [0, n) (n > 0); the modulo bias is below 2^-40 for the
  /// corpus sizes used here and, more to the point, fixed.
  std::uint64_t below(std::uint64_t n) { return next() % n; }

 private:
  std::uint64_t state_;
};

}  // namespace switchyard::train::detail
