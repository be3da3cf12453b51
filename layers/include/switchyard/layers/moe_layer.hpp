#pragma once
// One expert-parallel MoE layer: route, plan, dispatch, experts, combine,
// unpermute (+ shared experts), following DESIGN.md's data flow.
#include <cstdint>
#include <memory>
#include <vector>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/kernels/matmul.hpp"
#include "switchyard/layers/dispatch.hpp"
#include "switchyard/layers/experts.hpp"
#include "switchyard/layers/moe_weights.hpp"
#include "switchyard/layers/router.hpp"
#include "switchyard/runtime/phase_timer.hpp"

namespace switchyard::layers {

struct MoeLayerOptions {
  CapacityPolicy capacity;
  DeviceKind device = DeviceKind::kCpu;
};

/// What one forward call saw, summed over all ranks.
struct ForwardStats {
  std::int64_t num_tokens = 0;            // all ranks
  std::vector<std::int64_t> expert_load;  // [E] slots routed to each expert
  std::int64_t num_dropped = 0;           // slots dropped by capacity
};

class MoeLayer {
 public:
  /// `weights` must hold the experts `placement` gives to `rank`.
  MoeLayer(const ModelConfig& config, MoeWeights weights, const ExpertPlacement& placement, int rank,
           MoeLayerOptions options = {});

  /// y[T, H] = MoE(x[T, H]) for this rank's `num_tokens` rows. Collective:
  /// every rank of `comm` must call it (with its own tokens; zero is fine).
  /// Phase times are added to `timer` if given.
  void forward(comm::Communicator& comm, const float* x, std::int64_t num_tokens, float* y, ForwardStats* stats,
               PhaseTimer* timer = nullptr);

 private:
  ModelConfig config_;
  RouterConfig router_;
  ExpertPlacement placement_;
  MoeLayerOptions options_;
  std::vector<float> selection_bias_;
  std::vector<float> router_weights_;
  std::unique_ptr<kernels::Linear> router_linear_;
  std::unique_ptr<ExpertBackend> experts_;
  std::unique_ptr<GatedMlp> shared_;
  std::vector<float> shared_gate_;
};

}  // namespace switchyard::layers
