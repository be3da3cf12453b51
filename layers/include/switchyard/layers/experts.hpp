#pragma once
// This rank's experts behind a device-neutral interface: the MoE layer hands
// over rows grouped by local expert and gets the expert outputs back.
#include <cstdint>
#include <memory>
#include <vector>

#include "switchyard/kernels/activation.hpp"
#include "switchyard/kernels/matmul.hpp"
#include "switchyard/layers/moe_weights.hpp"
#include "switchyard/runtime/device.hpp"

namespace switchyard::layers {

/// A gated MLP, down(act(gate(x)) * up(x)), on oneDNN linears.
class GatedMlp {
 public:
  GatedMlp(MlpWeights weights, kernels::Activation act);
  /// y[rows, H] = MLP(x[rows, H]); `scratch` is resized as needed.
  void run(const float* x, std::int64_t rows, float* y, std::vector<float>* scratch) const;

 private:
  MlpWeights w_;
  kernels::Activation act_;
  kernels::Linear gate_up_, down_;
};

class ExpertBackend {
 public:
  virtual ~ExpertBackend() = default;
  virtual DeviceKind device() const = 0;
  virtual std::int64_t num_local() const = 0;
  /// Runs expert j on `counts[j]` consecutive rows of `rows` ([sum(counts), H]),
  /// writing the same positions of `out`. Blocking; not thread-safe.
  virtual void run(const float* rows, const std::int64_t* counts, float* out) = 0;
};

/// The backend for `device` holding `experts`. Throws Error(kInvalidArgument)
/// if that device's backend is not part of this build.
std::unique_ptr<ExpertBackend> make_expert_backend(DeviceKind device, std::vector<MlpWeights> experts,
                                                   kernels::Activation act);

}  // namespace switchyard::layers
