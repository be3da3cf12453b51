#pragma once
// Linear layers on oneDNN: y[M, N] = x[M, K] · Wᵀ with W stored [N, K]
// row-major, as Hugging Face checkpoints store nn.Linear weights.
#include <cstdint>
#include <memory>

namespace switchyard::kernels {

/// How a Linear's weight matrix is stored.
enum class WeightLayout {
  kOutIn,  // [out, in] row-major, y = x · Wᵀ (nn.Linear)
  kInOut,  // [in, out] row-major, y = x · W (the backward's dL/dx = dL/dy · W)
};

class Linear {
 public:
  /// A oneDNN matmul on weights `w` (float32, not copied: it must outlive
  /// this object, and may change between runs).
  Linear(const float* w, std::int64_t out_features, std::int64_t in_features,
         WeightLayout layout = WeightLayout::kOutIn);
  ~Linear();
  Linear(Linear&&) noexcept;
  Linear& operator=(Linear&&) noexcept;

  /// y[rows, out] = x[rows, in] · W (as `layout` says), or y += that if
  /// `accumulate`. Row strides default (0) to the widths. Every row's result
  /// depends only on that row, never on `rows` or on its position: a
  /// primitive is built per (row count, strides) and cached, because
  /// oneDNN's run-time row count picks kernels by size and so changes the
  /// rounding when the same rows arrive in other batches (docs/task-graph.md).
  /// Blocking; thread-safe. Throws Error(kDnnl).
  void run(const float* x, std::int64_t rows, float* y, std::int64_t ldx = 0, std::int64_t ldy = 0,
           bool accumulate = false) const;

  std::int64_t out_features() const { return out_; }
  std::int64_t in_features() const { return in_; }

 private:
  void execute(const float* x, std::int64_t rows, float* y, std::int64_t ldx, std::int64_t ldy, bool accumulate) const;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::int64_t out_ = 0, in_ = 0;
};

/// The operands of gemm(), in BLAS order, for designated initializers:
/// `gemm({.trans_a = true, .m = ..., .a = ..., .lda = ..., ...})`.
struct GemmArgs {
  bool trans_a = false;  // op(A) = Aᵀ: A is stored [k, m]
  bool trans_b = false;  // op(B) = Bᵀ: B is stored [n, k]
  std::int64_t m = 0, n = 0, k = 0;
  float alpha = 1.0f;
  const float* a = nullptr;
  std::int64_t lda = 0;  // row stride of the stored A
  const float* b = nullptr;
  std::int64_t ldb = 0;  // row stride of the stored B
  float beta = 0.0f;
  float* c = nullptr;
  std::int64_t ldc = 0;  // row stride of C
};

/// Row-major GEMM on oneDNN: C = alpha * op(A) · op(B) + beta * C, op(A) is
/// [m, k], op(B) is [k, n], C is [m, n]. With k == 0, C = beta * C (0 where
/// beta is 0). Blocking. Throws Error(kDnnl).
void gemm(const GemmArgs& args);

}  // namespace switchyard::kernels
