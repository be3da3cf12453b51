#pragma once
// This rank's experts behind a device-neutral interface: the MoE layer hands
// over rows grouped by local expert and gets the expert outputs back.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/kernels/activation.hpp"
#include "switchyard/kernels/matmul.hpp"
#include "switchyard/kernels/packed_linear.hpp"
#include "switchyard/layers/moe_weights.hpp"
#include "switchyard/runtime/device.hpp"
#include "switchyard/runtime/parameter.hpp"

namespace switchyard::layers {

/// A gated MLP, down(act(gate(x)) * up(x)), with gate and up fused into one
/// [2I, H] weight, on oneDNN.
class GatedMlp {
 public:
  /// Parameters are named `<name>.gate_up_proj` and `<name>.down_proj`.
  GatedMlp(MlpWeights weights, kernels::Activation act, const std::string& name, bool replicated);
  GatedMlp(GatedMlp&&) = default;

  std::int64_t inter() const { return inter_; }
  /// Floats of saved activations per row (for backward).
  std::int64_t saved_per_row() const { return 3 * inter_; }

  /// y[rows, H] = MLP(x[rows, H]). `saved` holds rows * saved_per_row() floats:
  /// the activations backward() needs (also used as scratch for inference).
  void forward(const float* x, std::int64_t rows, float* y, float* saved) const;
  /// Writes dL/dx (or adds it, if `accumulate`) and adds the weight gradients.
  void backward(const float* x, std::int64_t rows, const float* saved, const float* grad_y, float* grad_x,
                bool accumulate, std::vector<float>* scratch);

  Parameter& gate_up() { return *gate_up_; }
  Parameter& down() { return *down_; }

 private:
  std::int64_t hidden_, inter_;
  kernels::Activation act_;
  // NOTE: heap-allocated so the Linears' weight pointers survive moves.
  std::unique_ptr<Parameter> gate_up_, down_;
  kernels::Linear gate_up_linear_, down_linear_;
};

class ExpertBackend {
 public:
  virtual ~ExpertBackend() = default;
  virtual DeviceKind device() const = 0;
  virtual std::int64_t num_local() const = 0;
  /// Floats of saved activations per row.
  virtual std::int64_t saved_per_row() const = 0;
  /// Runs expert j on `counts[j]` consecutive rows of `rows` ([sum(counts), H]),
  /// writing the same positions of `out`; `saved` gets sum(counts) *
  /// saved_per_row() floats for backward. Blocking; not thread-safe.
  virtual void forward(const float* rows, const std::int64_t* counts, float* out, float* saved) = 0;
  /// dL/d(rows) from dL/d(out); adds the expert weight gradients.
  virtual void backward(const float* rows, const std::int64_t* counts, const float* saved, const float* grad_out,
                        float* grad_rows) = 0;
  /// Per local expert j: gate_up then down (names `experts.<global id>.*`).
  virtual std::vector<Parameter*> parameters() = 0;
};

struct ExpertBackendOptions {
  DeviceKind device = DeviceKind::kCpu;
  // Inference only: weights prepacked for the fastest kernels (in
  // `weight_type`), activation fused into the gate matmul, no backward and no
  // float32 weight copy kept. Otherwise float32 weights that backward and
  // optimizers update in place.
  bool inference_only = false;
  kernels::WeightType weight_type = kernels::WeightType::kF32;
};

/// The backend holding experts first_expert, first_expert + 1, ... Throws
/// Error(kInvalidArgument) if the device's backend is not in this build or
/// the combination (e.g. bf16 training) is not supported.
std::unique_ptr<ExpertBackend> make_expert_backend(const ExpertBackendOptions& options, std::vector<MlpWeights> experts,
                                                   std::int64_t first_expert, kernels::Activation act);

}  // namespace switchyard::layers
