#pragma once
// The shape and routing of one MoE block, as the operator needs them. Built
// from a file format's configuration by that format's module (formats/).
#include <cstdint>

#include "switchyard/kernels/activation.hpp"
#include "switchyard/layers/router.hpp"

namespace switchyard::layers {

struct MoeConfig {
  std::int64_t hidden_size = 0;
  std::int64_t expert_intermediate_size = 0;  // per routed expert
  std::int64_t num_experts = 0;
  std::int64_t top_k = 0;
  kernels::Activation activation = kernels::Activation::kSilu;
  RouterConfig router;                        // num_experts and top_k as above
  std::int64_t shared_intermediate_size = 0;  // 0: no shared expert
  bool shared_expert_gated = false;           // sigmoid gate on the shared expert's output
  // Llama 4: a slot's routing weight scales the row going into its expert,
  // E(w x), instead of the expert's output, w E(x).
  bool weight_scales_input = false;

  /// Throws Error(kInvalidArgument) naming the offending field.
  void validate() const;
};

}  // namespace switchyard::layers
