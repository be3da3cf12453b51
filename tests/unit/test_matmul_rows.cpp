// Every matmul here gives a row the same bits whatever batch it arrives in
// (its position, the batch's size, strides, accumulation): the step's bitwise
// schedule independence rests on it (docs/task-graph.md). Checked on this
// machine's kernels, whichever they are (AVX2 or AVX-512, all run in fixed
// row blocks), with batches past the fixed block size and its tails.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "switchyard/kernels/bf16_matmul.hpp"
#include "switchyard/kernels/matmul.hpp"
#include "switchyard/kernels/number_conversion.hpp"
#include "switchyard/kernels/packed_linear.hpp"

namespace {

using namespace switchyard::kernels;

std::vector<float> random_values(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

constexpr std::int64_t kRows = 300;
// Windows [begin, begin + count) of the kRows rows, run as batches of their own.
const std::vector<std::pair<std::int64_t, std::int64_t>> kWindows = {
    {0, 1}, {126, 2}, {127, 1}, {5, 95}, {1, 96}, {3, 97}, {40, 150}, {100, 200}, {0, 299}, {299, 1}};

struct Shape {
  std::int64_t in, out;
};

class MatmulRows : public ::testing::TestWithParam<Shape> {};

// `run(x, rows, y)` on all kRows rows, then on every window: each window's
// rows must equal the whole batch's bit for bit.
template <typename Run>
void expect_row_invariant(std::int64_t in, std::int64_t out, const std::vector<float>& x, Run run) {
  std::vector<float> whole(kRows * out);
  run(x.data(), kRows, whole.data());
  for (auto [begin, count] : kWindows) {
    std::vector<float> part(count * out);
    run(x.data() + begin * in, count, part.data());
    for (std::int64_t r = 0; r < count; ++r)
      ASSERT_EQ(std::memcmp(part.data() + r * out, whole.data() + (begin + r) * out, out * sizeof(float)), 0)
          << "row " << begin + r << " in a batch of " << count << " at " << begin;
  }
}

TEST_P(MatmulRows, LinearBothLayoutsStridesAndAccumulate) {
  const auto [in, out] = GetParam();
  const auto w = random_values(in * out, 1), x = random_values(kRows * in, 2);
  for (WeightLayout layout : {WeightLayout::kOutIn, WeightLayout::kInOut}) {
    const Linear lin(w.data(), out, in, layout);
    expect_row_invariant(in, out, x, [&](const float* xs, std::int64_t rows, float* y) { lin.run(xs, rows, y); });
    // Strided output with accumulation into a known base.
    expect_row_invariant(in, out, x, [&](const float* xs, std::int64_t rows, float* y) {
      std::vector<float> wide(rows * (out + 3), 0.5f);
      lin.run(xs, rows, wide.data(), 0, out + 3, true);
      for (std::int64_t r = 0; r < rows; ++r) std::memcpy(y + r * out, wide.data() + r * (out + 3), out * 4);
    });
  }
}

TEST_P(MatmulRows, PackedLinearF32AndBf16) {
  const auto [in, out] = GetParam();
  const auto w = random_values(in * out, 3), x = random_values(kRows * in, 4);
  for (WeightType type : {WeightType::kF32, WeightType::kBF16}) {
    PackedLinear lin(w.data(), out, in, type, Epilogue::kActivation, Activation::kSilu);
    expect_row_invariant(in, out, x, [&](const float* xs, std::int64_t rows, float* y) { lin.run(xs, rows, y); });
  }
}

TEST_P(MatmulRows, Bf16Linear) {
  const auto [in, out] = GetParam();
  const auto w = random_values(in * out, 5), x = random_values(kRows * in, 6);
  std::vector<std::uint16_t> wb(w.size());
  convert_to_bf16(w.data(), static_cast<std::int64_t>(w.size()), wb.data());
  const Bf16Linear lin(wb.data(), out, in);
  expect_row_invariant(in, out, x, [&](const float* xs, std::int64_t rows, float* y) {
    std::vector<std::uint16_t> xb(rows * in);
    convert_to_bf16(xs, rows * in, xb.data());
    lin.run(xb.data(), rows, y);
  });
}

// A router (8 outputs), small expert shapes with odd sizes, and a larger one.
INSTANTIATE_TEST_SUITE_P(Shapes, MatmulRows,
                         ::testing::Values(Shape{32, 8}, Shape{32, 48}, Shape{24, 32}, Shape{96, 160}, Shape{512, 256}),
                         [](const auto& info) {
                           std::string name = "in";
                           name += std::to_string(info.param.in) + "_out" + std::to_string(info.param.out);
                           return name;
                         });

}  // namespace
