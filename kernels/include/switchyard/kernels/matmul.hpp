#pragma once
// Linear layers on oneDNN: y[M, N] = x[M, K] · Wᵀ with W stored [N, K]
// row-major, as Hugging Face checkpoints store nn.Linear weights.
#include <cstdint>
#include <memory>

namespace switchyard::kernels {

class Linear {
 public:
  /// Builds a oneDNN matmul for weights `w` ([out_features, in_features],
  /// float32, not copied: it must outlive this object). M is a run-time
  /// dimension so one primitive serves every token count. Throws Error(kDnnl).
  Linear(const float* w, std::int64_t out_features, std::int64_t in_features);
  ~Linear();
  Linear(Linear&&) noexcept;
  Linear& operator=(Linear&&) noexcept;

  /// y[rows, out] = x[rows, in] · Wᵀ. Blocking; not thread-safe per object.
  void run(const float* x, std::int64_t rows, float* y) const;

  std::int64_t out_features() const { return out_; }
  std::int64_t in_features() const { return in_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::int64_t out_ = 0, in_ = 0;
};

/// Row-major GEMM on oneDNN: C = alpha * op(A) · op(B) + beta * C, op(A) is
/// [M, K], op(B) is [K, N]; `trans_*` reads the stored matrix transposed.
/// Leading dimensions are row strides of the stored matrices. Blocking.
void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* A,
          std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc);

}  // namespace switchyard::kernels
