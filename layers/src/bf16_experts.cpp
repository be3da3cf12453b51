// Experts that train in bf16: float32 master weights that optimizers and
// checkpoints see, a bf16 copy of them that every GEMM reads, float32
// accumulation, activations and gradients.
#include "bf16_experts.hpp"

#include "expert_groups.hpp"

#include <cstring>
#include <string>

#include "switchyard/kernels/bf16_matmul.hpp"

namespace switchyard::layers {
namespace {

// Scratch of one backend call, reused across experts and calls.
struct Scratch {
  std::vector<std::uint16_t> x, h, grad_y, grad_gate_up;  // bf16 GEMM operands
  std::vector<float> gate_up, grad_h;                     // float32 GEMM results
};

template <typename T>
T* sized(std::vector<T>* v, std::int64_t n) {
  v->resize(static_cast<std::size_t>(n));
  return v->data();
}

// One expert's gated MLP, down(act(gate(x)) * up(x)), as GatedMlp computes it
// but with bf16 GEMM operands.
class Bf16Expert {
 public:
  Bf16Expert(MlpWeights w, kernels::Activation act, const std::string& name)
      : hidden_(w.hidden),
        inter_(w.inter),
        act_(act),
        gate_up_(std::make_unique<Parameter>(name + ".gate_up_proj", std::vector<std::int64_t>{2 * inter_, hidden_},
                                             std::move(w.gate_up), false)),
        down_(std::make_unique<Parameter>(name + ".down_proj", std::vector<std::int64_t>{hidden_, inter_},
                                          std::move(w.down), false)),
        gate_up_bf16_(gate_up_->value.size()),
        down_bf16_(down_->value.size()),
        gate_up_linear_(gate_up_bf16_.data(), 2 * inter_, hidden_),
        down_linear_(down_bf16_.data(), hidden_, inter_),
        down_grad_(down_bf16_.data(), inter_, hidden_, kernels::WeightLayout::kInOut),
        gate_up_grad_(gate_up_bf16_.data(), hidden_, 2 * inter_, kernels::WeightLayout::kInOut),
        down_weight_grad_(hidden_, inter_),
        gate_up_weight_grad_(2 * inter_, hidden_) {}

  /// gate_up (2I) then h = act(gate) * up (I), as GatedMlp saves them.
  std::int64_t saved_per_row() const { return 3 * inter_; }
  /// dL/d(gate_up).
  std::int64_t grad_saved_per_row() const { return 2 * inter_; }

  /// Rounds the current float32 weights into the bf16 copy.
  void refresh_bf16_weights() {
    kernels::convert_to_bf16(gate_up_->value.data(), gate_up_->numel(), gate_up_bf16_.data());
    kernels::convert_to_bf16(down_->value.data(), down_->numel(), down_bf16_.data());
    has_bf16_weights_ = true;
  }
  void ensure_bf16_weights() {
    if (!has_bf16_weights_) refresh_bf16_weights();
  }
  /// The float32 weights may have changed: refresh before their next use.
  void mark_stale() { has_bf16_weights_ = false; }

  void forward(const float* x, std::int64_t rows, float* y, float* saved, Scratch* s) const {
    const std::int64_t H = hidden_, I = inter_, ld = saved_per_row();
    kernels::convert_to_bf16(x, rows * H, sized(&s->x, rows * H));
    float* gate_up = sized(&s->gate_up, rows * 2 * I);
    gate_up_linear_.run(s->x.data(), rows, gate_up);
    // NOTE: the matmul writes dense rows (Bf16Linear::run says why), so they
    // are copied into `saved` here: ~2% of the forward at H 1024, I 2048.
    for (std::int64_t r = 0; r < rows; ++r)
      std::memcpy(saved + r * ld, gate_up + r * 2 * I, static_cast<std::size_t>(2 * I) * sizeof(float));
    kernels::gated_activation(act_, gate_up, rows, I, saved + 2 * I, 2 * I, ld);
    kernels::convert_rows_to_bf16(saved + 2 * I, rows, I, ld, sized(&s->h, rows * I));
    down_linear_.run(s->h.data(), rows, y);
  }

  void backward_data(const float* saved, const float* grad_y, std::int64_t rows, float* grad_x, float* grad_saved,
                     Scratch* s) const {
    const std::int64_t H = hidden_, I = inter_;
    kernels::convert_to_bf16(grad_y, rows * H, sized(&s->grad_y, rows * H));
    float* grad_h = sized(&s->grad_h, rows * I);
    down_grad_.run(s->grad_y.data(), rows, grad_h);
    kernels::gated_activation_backward(act_, saved, grad_h, rows, I, grad_saved, saved_per_row());
    kernels::convert_to_bf16(grad_saved, rows * 2 * I, sized(&s->grad_gate_up, rows * 2 * I));
    gate_up_grad_.run(s->grad_gate_up.data(), rows, grad_x);
  }

  void backward_weights(const float* x, std::int64_t rows, const float* saved, const float* grad_y,
                        const float* grad_saved, Scratch* s) {
    const std::int64_t H = hidden_, I = inter_;
    // The forward rounded h to bf16 for the down matmul: the same rounding here.
    kernels::convert_rows_to_bf16(saved + 2 * I, rows, I, saved_per_row(), sized(&s->h, rows * I));
    kernels::convert_to_bf16(grad_y, rows * H, sized(&s->grad_y, rows * H));
    down_weight_grad_.run(s->grad_y.data(), s->h.data(), rows, down_->grad.data());
    kernels::convert_to_bf16(x, rows * H, sized(&s->x, rows * H));
    kernels::convert_to_bf16(grad_saved, rows * 2 * I, sized(&s->grad_gate_up, rows * 2 * I));
    gate_up_weight_grad_.run(s->grad_gate_up.data(), s->x.data(), rows, gate_up_->grad.data());
  }

  Parameter& gate_up() { return *gate_up_; }
  Parameter& down() { return *down_; }

 private:
  std::int64_t hidden_, inter_;
  kernels::Activation act_;
  // NOTE: Parameters on the heap so parameters() pointers survive moves; the
  // bf16 buffers are never resized, so the Linears' pointers survive too.
  std::unique_ptr<Parameter> gate_up_, down_;
  std::vector<std::uint16_t> gate_up_bf16_, down_bf16_;
  bool has_bf16_weights_ = false;
  kernels::Bf16Linear gate_up_linear_, down_linear_;  // forward: x · Wᵀ
  kernels::Bf16Linear down_grad_, gate_up_grad_;      // backward: dy · W
  kernels::Bf16WeightGradient down_weight_grad_, gate_up_weight_grad_;
};

class Bf16TrainingExperts final : public ExpertBackend {
 public:
  Bf16TrainingExperts(std::vector<MlpWeights> experts, const std::vector<std::int64_t>& ids, kernels::Activation act) {
    for (std::size_t j = 0; j < experts.size(); ++j) {
      hidden_ = experts[j].hidden;
      experts_.emplace_back(std::move(experts[j]), act, "experts." + std::to_string(ids[j]));
    }
  }
  std::int64_t num_local() const override { return static_cast<std::int64_t>(experts_.size()); }
  std::int64_t saved_per_row() const override { return experts_.empty() ? 0 : experts_.front().saved_per_row(); }
  std::int64_t grad_saved_per_row() const override {
    return experts_.empty() ? 0 : experts_.front().grad_saved_per_row();
  }

  void begin_step() override {
    for (auto& e : experts_) e.mark_stale();
  }

  void forward(const float* rows, const std::int64_t* counts, float* out, float* saved) override {
    const std::int64_t H = hidden_, S = saved_per_row();
    detail::for_each_group(counts, experts_.size(), [&](std::size_t j, std::int64_t r, std::int64_t m) {
      // NOTE: the bf16 copy is rebuilt once per step (begin_step) rather
      // than when the weights change: optimizers write Parameter::value in
      // place and Parameter has no version to compare, and checking for a
      // change would read all the float32 weights just as the conversion
      // does (~2 ms per expert at H 1024, I 2048, against ~55 ms of
      // forward GEMMs on 2048 rows). Experts without rows skip it.
      experts_[j].ensure_bf16_weights();
      experts_[j].forward(rows + r * H, m, out + r * H, saved + r * S, &scratch_);
    });
  }

  void backward_data(const float*, const std::int64_t* counts, const float* saved, const float* grad_out,
                     float* grad_rows, float* grad_saved) override {
    const std::int64_t H = hidden_, S = saved_per_row(), G = grad_saved_per_row();
    detail::for_each_group(counts, experts_.size(), [&](std::size_t j, std::int64_t r, std::int64_t m) {
      // The weights the forward used: they do not change before its backward.
      experts_[j].ensure_bf16_weights();
      experts_[j].backward_data(saved + r * S, grad_out + r * H, m, grad_rows + r * H, grad_saved + r * G, &scratch_);
    });
  }

  void backward_weights(const float* rows, const std::int64_t* counts, const float* saved, const float* grad_out,
                        const float* grad_saved) override {
    const std::int64_t H = hidden_, S = saved_per_row(), G = grad_saved_per_row();
    detail::for_each_group(counts, experts_.size(), [&](std::size_t j, std::int64_t r, std::int64_t m) {
      experts_[j].backward_weights(rows + r * H, m, saved + r * S, grad_out + r * H, grad_saved + r * G, &scratch_);
    });
  }

  std::vector<Parameter*> parameters() override { return detail::gate_up_and_down(experts_); }

 private:
  std::vector<Bf16Expert> experts_;
  std::int64_t hidden_ = 0;
  Scratch scratch_;
};

}  // namespace

std::unique_ptr<ExpertBackend> make_bf16_training_experts(std::vector<MlpWeights> experts,
                                                          const std::vector<std::int64_t>& expert_ids,
                                                          kernels::Activation act) {
  return std::make_unique<Bf16TrainingExperts>(std::move(experts), expert_ids, act);
}

}  // namespace switchyard::layers
