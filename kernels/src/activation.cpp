#include "switchyard/kernels/activation.hpp"

#include <cmath>

namespace switchyard::kernels {
namespace {

template <typename F>
void apply(const float* gate_up, std::int64_t rows, std::int64_t inter, float* out, F act) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* g = gate_up + r * 2 * inter;
    const float* u = g + inter;
    float* o = out + r * inter;
    for (std::int64_t i = 0; i < inter; ++i) o[i] = act(g[i]) * u[i];
  }
}

}  // namespace

bool parse_activation(const std::string& name, Activation* out) {
  if (name == "silu" || name == "swish")
    *out = Activation::kSilu;
  else if (name == "gelu")
    *out = Activation::kGelu;
  else if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast")
    *out = Activation::kGeluTanh;
  else if (name == "relu")
    *out = Activation::kRelu;
  else
    return false;
  return true;
}

void gated_activation(Activation act, const float* gate_up, std::int64_t rows, std::int64_t inter, float* out) {
  switch (act) {
    case Activation::kSilu: apply(gate_up, rows, inter, out, [](float x) { return x / (1.0f + std::exp(-x)); }); break;
    case Activation::kGelu:
      apply(gate_up, rows, inter, out, [](float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); });
      break;
    case Activation::kGeluTanh:
      apply(gate_up, rows, inter, out,
            [](float x) { return 0.5f * x * (1.0f + std::tanh(0.79788456080286536f * (x + 0.044715f * x * x * x))); });
      break;
    case Activation::kRelu: apply(gate_up, rows, inter, out, [](float x) { return x > 0.0f ? x : 0.0f; }); break;
  }
}

}  // namespace switchyard::kernels
