#include "dense_ops.hpp"

#include <algorithm>
#include <cmath>

#include "switchyard/kernels/matmul.hpp"

namespace switchyard::train::detail {

void linear_forward(const float* x, std::int64_t T, std::int64_t K, const float* w, const float* b, std::int64_t N,
                    float* y) {
  if (T == 0) return;
  if (b)
    for (std::int64_t t = 0; t < T; ++t) std::copy(b, b + N, y + t * N);
  kernels::gemm({.trans_b = true,
                 .m = T,
                 .n = N,
                 .k = K,
                 .a = x,
                 .lda = K,
                 .b = w,
                 .ldb = K,
                 .beta = b ? 1.0f : 0.0f,
                 .c = y,
                 .ldc = N});
}

void linear_backward(const float* x, std::int64_t T, std::int64_t K, const float* w, std::int64_t N, const float* dy,
                     const LinearGrads& grads) {
  if (T == 0) return;
  const auto [dw, db, dx] = grads;
  kernels::gemm(
      {.trans_a = true, .m = N, .n = K, .k = T, .a = dy, .lda = N, .b = x, .ldb = K, .beta = 1.0f, .c = dw, .ldc = K});
  if (db)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t n = 0; n < N; ++n) db[n] += dy[t * N + n];
  if (dx) kernels::gemm({.m = T, .n = K, .k = N, .a = dy, .lda = N, .b = w, .ldb = K, .beta = 0.0f, .c = dx, .ldc = K});
}

void rmsnorm_forward(const float* x, std::int64_t T, std::int64_t H, const float* g, double eps, float* y,
                     float* inv_rms) {
  for (std::int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * H;
    double ss = 0.0;
    for (std::int64_t c = 0; c < H; ++c) ss += static_cast<double>(xr[c]) * xr[c];
    const auto r = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(H) + eps));
    inv_rms[t] = r;
    for (std::int64_t c = 0; c < H; ++c) y[t * H + c] = xr[c] * r * g[c];
  }
}

void rmsnorm_backward(const float* x, std::int64_t T, std::int64_t H, const float* g, const float* inv_rms,
                      const float* dy, float* dx, float* dg) {
  // y_c = x_c r g_c with r = (mean x² + eps)^-1/2, so
  // dx_c = r g_c dy_c - x_c r³ / H · Σ_k dy_k g_k x_k.
  for (std::int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * H;
    const float* dyr = dy + t * H;
    const double r = inv_rms[t];
    double dot = 0.0;
    for (std::int64_t c = 0; c < H; ++c) {
      dot += static_cast<double>(dyr[c]) * g[c] * xr[c];
      dg[c] += static_cast<float>(static_cast<double>(dyr[c]) * xr[c] * r);
    }
    const double k = r * r * r * dot / static_cast<double>(H);
    for (std::int64_t c = 0; c < H; ++c) dx[t * H + c] += static_cast<float>(r * g[c] * dyr[c] - k * xr[c]);
  }
}

double softmax_xent(float* logits, std::int64_t T, std::int64_t V, const std::int32_t* targets, float scale) {
  double total = 0.0;
  for (std::int64_t t = 0; t < T; ++t) {
    float* row = logits + t * V;
    const float mx = *std::max_element(row, row + V);
    double sum = 0.0;
    for (std::int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
    const double lse = mx + std::log(sum);
    total += lse - row[targets[t]];
    for (std::int64_t v = 0; v < V; ++v)
      row[v] = static_cast<float>(scale * std::exp(static_cast<double>(row[v]) - lse));
    row[targets[t]] -= scale;
  }
  return total;
}

}  // namespace switchyard::train::detail
