#pragma once
// Gated activations of expert MLPs: out = act(gate) * up.
#include <cstdint>

namespace switchyard::kernels {

enum class Activation { kSilu, kGelu, kGeluTanh, kRelu };

/// For each of `rows` rows of `gate_up` (width 2*inter: gate columns first,
/// then up columns), writes act(gate) * up into `out` (width inter). Row
/// strides default (0) to the widths.
void gated_activation(Activation act, const float* gate_up, std::int64_t rows, std::int64_t inter, float* out,
                      std::int64_t ld_gate_up = 0, std::int64_t ld_out = 0);

/// Backward of gated_activation: given the forward input `gate_up` and
/// dL/d(out) `grad_out` ([rows, inter]), writes dL/d(gate_up) ([rows, 2*inter]).
/// `gate_up`'s row stride defaults (0) to 2*inter.
void gated_activation_backward(Activation act, const float* gate_up, const float* grad_out, std::int64_t rows,
                               std::int64_t inter, float* grad_gate_up, std::int64_t ld_gate_up = 0);

}  // namespace switchyard::kernels
