#pragma once
// Reproducible random inputs for tests.
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace switchyard::test_support {

/// `n` floats drawn uniformly from [lo, hi) by a generator seeded with `seed`.
inline std::vector<float> uniform(std::size_t n, float lo, float hi, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

}  // namespace switchyard::test_support
