#include "switchyard/kernels/activation.hpp"

#include <cmath>

namespace switchyard::kernels {
namespace {

template <typename F>
void apply(const float* gate_up, std::int64_t rows, std::int64_t inter, float* out, std::int64_t ld_gate_up,
           std::int64_t ld_out, F act) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* g = gate_up + r * ld_gate_up;
    const float* u = g + inter;
    float* o = out + r * ld_out;
    for (std::int64_t i = 0; i < inter; ++i) o[i] = act(g[i]) * u[i];
  }
}

// Calls f(x) -> {act(x), act'(x)} for every gate value.
template <typename F>
void apply_backward(const float* gate_up, const float* grad_out, std::int64_t rows, std::int64_t inter, float* grad,
                    std::int64_t ld_gate_up, F act_and_slope) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* g = gate_up + r * ld_gate_up;
    const float* u = g + inter;
    const float* d = grad_out + r * inter;
    float* dg = grad + r * 2 * inter;
    float* du = dg + inter;
    for (std::int64_t i = 0; i < inter; ++i) {
      const auto [a, slope] = act_and_slope(g[i]);
      dg[i] = d[i] * u[i] * slope;
      du[i] = d[i] * a;
    }
  }
}

struct ActSlope {
  float act, slope;
};

}  // namespace

void gated_activation_backward(Activation act, const float* gate_up, const float* grad_out, std::int64_t rows,
                               std::int64_t inter, float* grad_gate_up, std::int64_t ld_gate_up) {
  if (ld_gate_up == 0) ld_gate_up = 2 * inter;
  switch (act) {
    case Activation::kSilu:
      apply_backward(gate_up, grad_out, rows, inter, grad_gate_up, ld_gate_up, [](float x) {
        const float s = 1.0f / (1.0f + std::exp(-x));
        return ActSlope{x * s, s * (1.0f + x * (1.0f - s))};
      });
      break;
    case Activation::kGelu:
      apply_backward(gate_up, grad_out, rows, inter, grad_gate_up, ld_gate_up, [](float x) {
        const float cdf = 0.5f * (1.0f + std::erf(x * 0.70710678118654752f));
        const float pdf = 0.39894228040143268f * std::exp(-0.5f * x * x);
        return ActSlope{x * cdf, cdf + x * pdf};
      });
      break;
    case Activation::kGeluTanh:
      apply_backward(gate_up, grad_out, rows, inter, grad_gate_up, ld_gate_up, [](float x) {
        constexpr float c = 0.79788456080286536f, k = 0.044715f;
        const float t = std::tanh(c * (x + k * x * x * x));
        return ActSlope{0.5f * x * (1.0f + t),
                        0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * c * (1.0f + 3.0f * k * x * x)};
      });
      break;
    case Activation::kRelu:
      apply_backward(gate_up, grad_out, rows, inter, grad_gate_up, ld_gate_up, [](float x) {
        return ActSlope{x > 0.0f ? x : 0.0f, x > 0.0f ? 1.0f : 0.0f};
      });
      break;
  }
}

void gated_activation(Activation act, const float* gate_up, std::int64_t rows, std::int64_t inter, float* out,
                      std::int64_t ld_gate_up, std::int64_t ld_out) {
  if (ld_gate_up == 0) ld_gate_up = 2 * inter;
  if (ld_out == 0) ld_out = inter;
  switch (act) {
    case Activation::kSilu:
      apply(gate_up, rows, inter, out, ld_gate_up, ld_out, [](float x) { return x / (1.0f + std::exp(-x)); });
      break;
    case Activation::kGelu:
      apply(gate_up, rows, inter, out, ld_gate_up, ld_out,
            [](float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); });
      break;
    case Activation::kGeluTanh:
      apply(gate_up, rows, inter, out, ld_gate_up, ld_out,
            [](float x) { return 0.5f * x * (1.0f + std::tanh(0.79788456080286536f * (x + 0.044715f * x * x * x))); });
      break;
    case Activation::kRelu:
      apply(gate_up, rows, inter, out, ld_gate_up, ld_out, [](float x) { return x > 0.0f ? x : 0.0f; });
      break;
  }
}

}  // namespace switchyard::kernels
