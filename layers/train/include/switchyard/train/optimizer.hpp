#pragma once
// Training-side numerics: the learning-rate schedule, gradient all-reduce and
// global-norm clipping across expert-parallel ranks, and AdamW / SGD with
// momentum over switchyard::Parameter.
#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/runtime/parameter.hpp"

namespace switchyard::train {

enum class OptimizerKind { kAdamW, kSgd };

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kAdamW;
  double lr = 1e-3;     // peak learning rate
  double min_lr = 0.0;  // reached at the last step by the cosine decay
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // AdamW
  double momentum = 0.9;                          // SGD
  // AdamW: decoupled (p -= lr * wd * p); SGD: L2 (g += wd * p). Applied only
  // to matrices (rank >= 2): norm gains and biases are not decayed.
  double weight_decay = 0.0;
};

/// Learning rate of 0-based `step`: linear warm-up lr * (step + 1) / warmup for
/// step < warmup, then cosine decay from lr to min_lr over the remaining
/// steps (min_lr at step total_steps - 1 and after).
double learning_rate(const OptimizerConfig& config, std::int64_t step);

/// Sums replicated parameters' gradients over all ranks, in place. Converts
/// through double so every rank ends with the same float bits. Collective.
void allreduce_replicated_grads(comm::Communicator& comm, const std::vector<Parameter*>& params);

/// The L2 norm of all gradients of the model: replicated parameters counted
/// once (their gradients must already be all-reduced), expert parameters
/// summed over their owners. Same value on every rank. Collective.
double global_grad_norm(comm::Communicator& comm, const std::vector<Parameter*>& params);

/// Scales every gradient by max_norm / (norm + 1e-6) when `norm` exceeds
/// `max_norm` (> 0), as torch.nn.utils.clip_grad_norm_. Returns the factor.
double clip_grads(const std::vector<Parameter*>& params, double norm, double max_norm);

/// AdamW or SGD with momentum over a fixed list of parameters. Not collective:
/// each rank updates its own copies (replicated ones identically).
class Optimizer {
 public:
  Optimizer(const OptimizerConfig& config, std::vector<Parameter*> params);

  /// One update with learning rate `lr` from the current gradients.
  void step(double lr);
  /// Updates taken so far (AdamW's bias correction uses it).
  std::int64_t num_steps() const { return num_steps_; }
  void set_num_steps(std::int64_t n) { num_steps_ = n; }

  /// Per-parameter state tensors, for checkpoints: AdamW "exp_avg" and
  /// "exp_avg_sq", SGD "momentum_buffer"; `values` is parallel to params().
  struct Slot {
    std::string name;
    std::vector<std::vector<float>>* values;
  };
  std::vector<Slot> slots();
  const std::vector<Parameter*>& params() const { return params_; }
  const OptimizerConfig& config() const { return config_; }

 private:
  OptimizerConfig config_;
  std::vector<Parameter*> params_;
  std::vector<std::vector<float>> m_, v_;  // AdamW moments, or SGD momentum in m_
  std::int64_t num_steps_ = 0;
};

}  // namespace switchyard::train
