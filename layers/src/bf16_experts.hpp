#pragma once
// Experts that train in bf16 (bf16_experts.cpp), for make_expert_backend.
#include <cstdint>
#include <memory>
#include <vector>

#include "switchyard/layers/experts.hpp"

namespace switchyard::layers {

/// Experts with float32 master weights (Parameters named and shaped as the
/// float32 backend's: `experts.<id>.gate_up_proj` [2I, H] and
/// `experts.<id>.down_proj` [H, I]) whose GEMMs run in bf16 with float32
/// accumulation. Gradients are float32, added to Parameter::grad.
std::unique_ptr<ExpertBackend> make_bf16_training_experts(std::vector<MlpWeights> experts,
                                                          const std::vector<std::int64_t>& expert_ids,
                                                          kernels::Activation act);

}  // namespace switchyard::layers
