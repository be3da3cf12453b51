#pragma once
// Small dense pieces of the character language model, forward and backward:
// linear layers on kernels::gemm, RMSNorm, and softmax cross-entropy.
#include <cstdint>

namespace switchyard::train::detail {

/// y[T, N] = x[T, K] · W[N, K]ᵀ (+ b[N] when b is not null).
void linear_forward(const float* x, std::int64_t T, std::int64_t K, const float* w, const float* b, std::int64_t N,
                    float* y);

/// Where linear_backward writes: dW[N, K] (accumulated), db[N] (accumulated;
/// may be null) and dx[T, K] (overwritten; may be null).
struct LinearGrads {
  float* dw = nullptr;
  float* db = nullptr;
  float* dx = nullptr;
};

/// Given dy[T, N]: dW += dyᵀ · x, db += column sums of dy (when db is not
/// null), and dx = dy · W (when dx is not null).
void linear_backward(const float* x, std::int64_t T, std::int64_t K, const float* w, std::int64_t N, const float* dy,
                     const LinearGrads& grads);

/// y = x / sqrt(mean(x²) + eps) * g per row of width H; keeps 1/rms per row.
void rmsnorm_forward(const float* x, std::int64_t T, std::int64_t H, const float* g, double eps, float* y,
                     float* inv_rms);

/// Adds dL/dx into dx and dL/dg into dg, given dy.
void rmsnorm_backward(const float* x, std::int64_t T, std::int64_t H, const float* g, const float* inv_rms,
                      const float* dy, float* dx, float* dg);

/// Softmax cross-entropy of each row of logits[T, V] against targets; turns
/// `logits` into scale * (softmax - onehot) (the gradient of scale * sum of
/// losses) and returns the sum of losses (nats) in double.
double softmax_xent(float* logits, std::int64_t T, std::int64_t V, const std::int32_t* targets, float scale);

}  // namespace switchyard::train::detail
