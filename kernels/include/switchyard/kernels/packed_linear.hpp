#pragma once
// Inference linears on oneDNN with weights prepacked once into the blocked
// layout the matmul kernel reads fastest, in float32 or bfloat16, with an
// optional fused epilogue. One primitive is built (and cached) per row count:
// a run-time row count would fall back to a slow reference kernel with
// prepacked weights in this oneDNN, and primitive creation (~0.3 ms) is paid
// once per distinct count.
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "switchyard/kernels/activation.hpp"
// The bf16 operands of run_bf16 and the bf16 weight constructor come from
// convert_to_bf16 (and go back through convert_from_bf16), declared there.
#include "switchyard/kernels/number_conversion.hpp"

namespace switchyard::kernels {

enum class WeightType { kF32, kBF16 };

/// What runs on the matmul's output inside the kernel.
enum class Epilogue {
  kNone,
  kActivation,  // y = act(x·Wᵀ)
  kMultiply,    // y = (x·Wᵀ) ⊙ m, m given to run()
};

class PackedLinear {
 public:
  /// Packs `w` ([out, in] row-major float32) as `type`; the source is not kept.
  PackedLinear(const float* w, std::int64_t out_features, std::int64_t in_features, WeightType type,
               Epilogue epilogue = Epilogue::kNone, Activation act = Activation::kSilu);
  /// Packs bfloat16 weights given as raw bits ([out, in] row-major).
  PackedLinear(const std::uint16_t* w_bf16, std::int64_t out_features, std::int64_t in_features,
               Epilogue epilogue = Epilogue::kNone, Activation act = Activation::kSilu);
  ~PackedLinear();
  PackedLinear(PackedLinear&&) noexcept;

  /// y[rows, out] = epilogue(x[rows, in] · Wᵀ); `mul` ([rows, out]) for
  /// Epilogue::kMultiply. x is float32; with bf16 weights it is rounded to
  /// bf16 on the way in and products accumulate in float32. Blocking; not
  /// thread-safe per object (it caches primitives and a conversion buffer).
  void run(const float* x, std::int64_t rows, float* y, const float* mul = nullptr);
  /// As run(), for bf16 weights with x already in bf16; y is bf16 if
  /// `y_bf16` (rounded inside the kernel, after the epilogue), else float32.
  void run_bf16(const std::uint16_t* x, std::int64_t rows, void* y, bool y_bf16, const float* mul = nullptr);

  /// Bytes of packed weights (what a small batch must stream from memory).
  std::size_t weight_bytes() const;
  std::int64_t out_features() const { return out_; }
  std::int64_t in_features() const { return in_; }

 private:
  void pack_bf16(const std::uint16_t* w);
  void execute(const void* x, std::int64_t rows, void* y, bool y_bf16, const float* mul);
  void execute_rows(const void* x, std::int64_t rows, void* y, bool y_bf16, const float* mul);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::int64_t out_ = 0, in_ = 0;
};

}  // namespace switchyard::kernels
