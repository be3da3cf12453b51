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

}  // namespace switchyard::kernels
