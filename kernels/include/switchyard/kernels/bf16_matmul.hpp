#pragma once
// Training matmuls in bfloat16 on oneDNN: operands are bf16, products
// accumulate in float32 and results are float32. Weights are raw bf16 bits
// that the caller converts from its float32 master copy (convert_to_bf16).
#include <cstdint>
#include <memory>

#include "switchyard/kernels/matmul.hpp"

namespace switchyard::kernels {

class Bf16Linear {
 public:
  /// A oneDNN matmul on bf16 weights `w` (not copied: it must outlive this
  /// object, and may change between runs), stored as `layout` says.
  Bf16Linear(const std::uint16_t* w, std::int64_t out_features, std::int64_t in_features,
             WeightLayout layout = WeightLayout::kOutIn);
  ~Bf16Linear();
  Bf16Linear(Bf16Linear&&) noexcept;
  Bf16Linear& operator=(Bf16Linear&&) noexcept;

  /// y[rows, out] = x[rows, in] · W (as `layout` says), x bf16 and y float32,
  /// both dense row-major. Every row's result depends only on that row: one
  /// primitive per row count, cached (see Linear::run). Blocking;
  /// thread-safe. Throws Error(kDnnl).
  void run(const std::uint16_t* x, std::int64_t rows, float* y) const;

  std::int64_t out_features() const { return out_; }
  std::int64_t in_features() const { return in_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::int64_t out_ = 0, in_ = 0;
};

/// The weight gradient of a Linear with weights [out, in]: grad += dyᵀ · x.
class Bf16WeightGradient {
 public:
  Bf16WeightGradient(std::int64_t out_features, std::int64_t in_features);
  ~Bf16WeightGradient();
  Bf16WeightGradient(Bf16WeightGradient&&) noexcept;
  Bf16WeightGradient& operator=(Bf16WeightGradient&&) noexcept;

  /// grad[out, in] += Σ_r dy[r]ᵀ x[r] over `rows` rows; dy [rows, out] and
  /// x [rows, in] dense row-major bf16, grad float32 row-major. One primitive
  /// per row count, cached. Blocking; thread-safe. Throws Error(kDnnl).
  void run(const std::uint16_t* dy, const std::uint16_t* x, std::int64_t rows, float* grad) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::int64_t out_ = 0, in_ = 0;
};

/// Rounds `rows` rows of `cols` float32 values, `ld` apart, to dense bf16
/// rows (nearest even, as convert_to_bf16).
void convert_rows_to_bf16(const float* x, std::int64_t rows, std::int64_t cols, std::int64_t ld, std::uint16_t* out);

}  // namespace switchyard::kernels
