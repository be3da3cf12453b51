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
/// [2I, H] weight, on oneDNN. Every per-row result depends on that row only
/// (not on how rows are batched), so chunked and whole steps agree bit for bit.
class GatedMlp {
 public:
  /// Parameters are named `<name>.gate_up_proj` and `<name>.down_proj`.
  GatedMlp(MlpWeights weights, kernels::Activation act, const std::string& name, bool replicated);
  GatedMlp(GatedMlp&&) = default;

  std::int64_t hidden() const { return hidden_; }
  std::int64_t inter() const { return inter_; }
  /// Floats saved per row by forward(): the gate/up projection (2I).
  std::int64_t saved_per_row() const { return 2 * inter_; }
  /// Floats per row backward_data() keeps for backward_weights(): dL/d(gate_up).
  std::int64_t grad_saved_per_row() const { return 2 * inter_; }

  /// y[rows, H] = MLP(x[rows, H]); `saved` ([rows, saved_per_row()]) gets
  /// what the backward needs. Thread-safe (const, per-thread scratch).
  void forward(const float* x, std::int64_t rows, float* y, float* saved) const;
  /// Writes dL/dx (adds it, if `accumulate`) and dL/d(gate_up) into
  /// `grad_saved` ([rows, grad_saved_per_row()]). Row-wise, like forward().
  void backward_data(const float* saved, const float* grad_y, std::int64_t rows, float* grad_x, bool accumulate,
                     float* grad_saved, std::vector<float>* scratch) const;
  /// Adds the weight gradients, a sum over the rows in the order given.
  void backward_weights(const float* x, std::int64_t rows, const float* saved, const float* grad_y,
                        const float* grad_saved);
  /// backward_data then backward_weights.
  void backward(const float* x, std::int64_t rows, const float* saved, const float* grad_y, float* grad_x,
                bool accumulate, std::vector<float>* scratch);

  Parameter& gate_up() { return *gate_up_; }
  Parameter& down() { return *down_; }

 private:
  std::int64_t hidden_, inter_;
  kernels::Activation act_;
  // NOTE: heap-allocated so the Linears' weight pointers survive moves.
  std::unique_ptr<Parameter> gate_up_, down_;
  kernels::Linear gate_up_linear_, down_linear_;  // forward: x · Wᵀ
  kernels::Linear down_grad_, gate_up_grad_;      // backward: dy · W
  std::vector<float> grad_saved_;                 // backward()'s dL/d(gate_up), reused
};

/// This rank's experts. Rows come grouped by local expert: expert j gets
/// `counts[j]` consecutive rows. Every per-row array is row-major with the
/// width its name says (H for rows and outputs, saved_per_row(),
/// grad_saved_per_row()), so the layer can move rows between batches; each
/// row's results must depend only on that row. Blocking; not thread-safe.
class ExpertBackend {
 public:
  virtual ~ExpertBackend() = default;
  virtual std::int64_t num_local() const = 0;
  /// Floats of saved activations per row (forward -> backward).
  virtual std::int64_t saved_per_row() const = 0;
  /// Floats per row backward_data() keeps for backward_weights().
  virtual std::int64_t grad_saved_per_row() const = 0;
  /// Called once per forward step, before its pieces: the weights may have
  /// changed since the last step (an optimizer update).
  virtual void begin_step() {}
  virtual void forward(const float* rows, const std::int64_t* counts, float* out, float* saved) = 0;
  /// dL/d(rows) from dL/d(out), row by row; fills `grad_saved`.
  virtual void backward_data(const float* rows, const std::int64_t* counts, const float* saved, const float* grad_out,
                             float* grad_rows, float* grad_saved) = 0;
  /// Adds the expert weight gradients: sums over the rows in the order given.
  virtual void backward_weights(const float* rows, const std::int64_t* counts, const float* saved,
                                const float* grad_out, const float* grad_saved) = 0;
  /// Per local expert j: gate_up then down (names `experts.<global id>.*`).
  virtual std::vector<Parameter*> parameters() = 0;
};

struct ExpertBackendOptions {
  DeviceKind device = DeviceKind::kCpu;
  // Inference only: weights prepacked for the fastest kernels (in
  // `weight_type`), activation fused into the gate matmul, no backward and no
  // float32 weight copy kept. Otherwise float32 weights that backward and
  // optimizers update in place; with bf16, GEMMs on a bf16 copy of them
  // (float32 accumulation and gradients).
  bool inference_only = false;
  kernels::WeightType weight_type = kernels::WeightType::kF32;
};

/// The backend holding `experts`, whose global ids are `expert_ids` (one
/// each; they name the parameters). Throws Error(kInvalidArgument) if the
/// device's backend is not in this build.
std::unique_ptr<ExpertBackend> make_expert_backend(const ExpertBackendOptions& options, std::vector<MlpWeights> experts,
                                                   const std::vector<std::int64_t>& expert_ids,
                                                   kernels::Activation act);

}  // namespace switchyard::layers
