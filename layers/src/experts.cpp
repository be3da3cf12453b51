#include "switchyard/layers/experts.hpp"

#include "expert_groups.hpp"

#include "bf16_experts.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {

GatedMlp::GatedMlp(MlpWeights weights, kernels::Activation act, const std::string& name, bool replicated)
    : hidden_(weights.hidden),
      inter_(weights.inter),
      act_(act),
      gate_up_(std::make_unique<Parameter>(name + ".gate_up_proj", std::vector<std::int64_t>{2 * inter_, hidden_},
                                           std::move(weights.gate_up), replicated)),
      down_(std::make_unique<Parameter>(name + ".down_proj", std::vector<std::int64_t>{hidden_, inter_},
                                        std::move(weights.down), replicated)),
      gate_up_linear_(gate_up_->value.data(), 2 * inter_, hidden_),
      down_linear_(down_->value.data(), hidden_, inter_),
      down_grad_(down_->value.data(), inter_, hidden_, kernels::WeightLayout::kInOut),
      gate_up_grad_(gate_up_->value.data(), hidden_, 2 * inter_, kernels::WeightLayout::kInOut) {}

namespace {

// Per-thread scratch for h = act(gate) * up: shared experts of different
// chunks may run on different workers at once.
std::vector<float>& h_scratch(std::int64_t floats) {
  thread_local std::vector<float> h;
  h.resize(static_cast<std::size_t>(floats));
  return h;
}

}  // namespace

// NOTE: only gate_up is saved, in its own contiguous rows; h is recomputed
// where needed. oneDNN's kernels for strided rows batch them differently by
// row count, which would make results depend on the schedule.
void GatedMlp::forward(const float* x, std::int64_t rows, float* y, float* saved) const {
  if (rows == 0) return;
  std::vector<float>& h = h_scratch(rows * inter_);
  gate_up_linear_.run(x, rows, saved);
  kernels::gated_activation(act_, saved, rows, inter_, h.data());
  down_linear_.run(h.data(), rows, y);
}

void GatedMlp::backward_data(const float* saved, const float* grad_y, std::int64_t rows, float* grad_x, bool accumulate,
                             float* grad_saved, std::vector<float>* scratch) const {
  if (rows == 0) return;
  scratch->resize(static_cast<std::size_t>(rows * inter_));
  down_grad_.run(grad_y, rows, scratch->data());  // dL/dh
  kernels::gated_activation_backward(act_, saved, scratch->data(), rows, inter_, grad_saved);
  gate_up_grad_.run(grad_saved, rows, grad_x, 0, 0, accumulate);
}

void GatedMlp::backward_weights(const float* x, std::int64_t rows, const float* saved, const float* grad_y,
                                const float* grad_saved) {
  if (rows == 0) return;
  const std::int64_t H = hidden_, I = inter_;
  std::vector<float>& h = h_scratch(rows * I);
  kernels::gated_activation(act_, saved, rows, I, h.data());
  // dL/dW_down += dL/dyᵀ · h, dL/dW_gate_up += dL/d(gate, up)ᵀ · x
  kernels::gemm({.trans_a = true,
                 .m = H,
                 .n = I,
                 .k = rows,
                 .a = grad_y,
                 .lda = H,
                 .b = h.data(),
                 .ldb = I,
                 .beta = 1.0f,
                 .c = down_->grad.data(),
                 .ldc = I});
  kernels::gemm({.trans_a = true,
                 .m = 2 * I,
                 .n = H,
                 .k = rows,
                 .a = grad_saved,
                 .lda = 2 * I,
                 .b = x,
                 .ldb = H,
                 .beta = 1.0f,
                 .c = gate_up_->grad.data(),
                 .ldc = H});
}

void GatedMlp::backward(const float* x, std::int64_t rows, const float* saved, const float* grad_y, float* grad_x,
                        bool accumulate, std::vector<float>* scratch) {
  grad_saved_.resize(static_cast<std::size_t>(rows * grad_saved_per_row()));
  backward_data(saved, grad_y, rows, grad_x, accumulate, grad_saved_.data(), scratch);
  backward_weights(x, rows, saved, grad_y, grad_saved_.data());
}

namespace {

// Experts as a loop of oneDNN matmuls, one gate/up and one down per expert.
class CpuExpertBackend final : public ExpertBackend {
 public:
  CpuExpertBackend(std::vector<MlpWeights> experts, const std::vector<std::int64_t>& ids, kernels::Activation act) {
    for (std::size_t j = 0; j < experts.size(); ++j) {
      hidden_ = experts[j].hidden;
      mlps_.emplace_back(std::move(experts[j]), act, "experts." + std::to_string(ids[j]), false);
    }
  }
  std::int64_t num_local() const override { return static_cast<std::int64_t>(mlps_.size()); }
  std::int64_t saved_per_row() const override { return mlps_.empty() ? 0 : mlps_.front().saved_per_row(); }
  std::int64_t grad_saved_per_row() const override { return mlps_.empty() ? 0 : mlps_.front().grad_saved_per_row(); }

  void forward(const float* rows, const std::int64_t* counts, float* out, float* saved) override {
    const std::int64_t H = hidden_, S = saved_per_row();
    detail::for_each_group(counts, mlps_.size(), [&](std::size_t j, std::int64_t r, std::int64_t m) {
      mlps_[j].forward(rows + r * H, m, out + r * H, saved + r * S);
    });
  }

  void backward_data(const float*, const std::int64_t* counts, const float* saved, const float* grad_out,
                     float* grad_rows, float* grad_saved) override {
    const std::int64_t H = hidden_, S = saved_per_row(), G = grad_saved_per_row();
    detail::for_each_group(counts, mlps_.size(), [&](std::size_t j, std::int64_t r, std::int64_t m) {
      mlps_[j].backward_data(saved + r * S, grad_out + r * H, m, grad_rows + r * H, false, grad_saved + r * G,
                             &scratch_);
    });
  }

  void backward_weights(const float* rows, const std::int64_t* counts, const float* saved, const float* grad_out,
                        const float* grad_saved) override {
    const std::int64_t H = hidden_, S = saved_per_row(), G = grad_saved_per_row();
    detail::for_each_group(counts, mlps_.size(), [&](std::size_t j, std::int64_t r, std::int64_t m) {
      mlps_[j].backward_weights(rows + r * H, m, saved + r * S, grad_out + r * H, grad_saved + r * G);
    });
  }

  std::vector<Parameter*> parameters() override { return detail::gate_up_and_down(mlps_); }

 private:
  std::vector<GatedMlp> mlps_;
  std::int64_t hidden_ = 0;
  std::vector<float> scratch_;
};

// Inference experts: gate with the activation fused, up with the product
// fused, down; weights prepacked (float32 or bf16), no float32 copy kept.
class PackedExpertBackend final : public ExpertBackend {
 public:
  PackedExpertBackend(std::vector<MlpWeights> experts, kernels::WeightType type, kernels::Activation act)
      : type_(type) {
    using kernels::Epilogue;
    for (auto& e : experts) {
      hidden_ = e.hidden;
      inter_ = e.inter;
      const float* up = e.gate_up.data() + e.inter * e.hidden;
      experts_.push_back({kernels::PackedLinear(e.gate_up.data(), e.inter, e.hidden, type, Epilogue::kActivation, act),
                          kernels::PackedLinear(up, e.inter, e.hidden, type, Epilogue::kMultiply),
                          kernels::PackedLinear(e.down.data(), e.hidden, e.inter, type)});
      e = MlpWeights{};  // release the float32 source now that it is packed
    }
  }
  std::int64_t num_local() const override { return static_cast<std::int64_t>(experts_.size()); }
  std::int64_t saved_per_row() const override { return 0; }
  std::int64_t grad_saved_per_row() const override { return 0; }

  void forward(const float* rows, const std::int64_t* counts, float* out, float*) override {
    detail::for_each_group(counts, experts_.size(), [&](std::size_t j, std::int64_t offset, std::int64_t m) {
      scratch_.resize(static_cast<std::size_t>(m * inter_));
      float* gate = scratch_.data();
      const float* x = rows + offset * hidden_;
      if (type_ == kernels::WeightType::kBF16) {
        // NOTE: x is rounded once for both gate and up, and the gated
        // product leaves the up matmul already in bf16 for down.
        x_bf16_.resize(static_cast<std::size_t>(m * hidden_));
        h_bf16_.resize(static_cast<std::size_t>(m * inter_));
        kernels::convert_to_bf16(x, m * hidden_, x_bf16_.data());
        experts_[j].gate.run_bf16(x_bf16_.data(), m, gate, false);
        experts_[j].up.run_bf16(x_bf16_.data(), m, h_bf16_.data(), true, gate);
        experts_[j].down.run_bf16(h_bf16_.data(), m, out + offset * hidden_, false);
      } else {
        h_.resize(static_cast<std::size_t>(m * inter_));
        experts_[j].gate.run(x, m, gate);
        experts_[j].up.run(x, m, h_.data(), gate);
        experts_[j].down.run(h_.data(), m, out + offset * hidden_);
      }
    });
  }
  void backward_data(const float*, const std::int64_t*, const float*, const float*, float*, float*) override {
    inference_only();
  }
  void backward_weights(const float*, const std::int64_t*, const float*, const float*, const float*) override {
    inference_only();
  }
  std::vector<Parameter*> parameters() override { return {}; }

 private:
  [[noreturn]] static void inference_only() {
    throw Error(ErrorCode::kInternal, "experts were built for inference only; backward is not available");
  }
  struct Packed {
    kernels::PackedLinear gate, up, down;
  };
  std::vector<Packed> experts_;
  kernels::WeightType type_;
  std::int64_t hidden_ = 0, inter_ = 0;
  std::vector<float> scratch_, h_;
  std::vector<std::uint16_t> x_bf16_, h_bf16_;
};

}  // namespace

std::unique_ptr<ExpertBackend> make_expert_backend(const ExpertBackendOptions& options, std::vector<MlpWeights> experts,
                                                   const std::vector<std::int64_t>& expert_ids,
                                                   kernels::Activation act) {
  check(expert_ids.size() == experts.size(), ErrorCode::kInternal, "one global id per expert expected");
  check_arg(options.device == DeviceKind::kCpu,
            std::string("device '") + device_name(options.device) + "' is not available in this build (expected cpu)");
  if (options.inference_only)
    return std::make_unique<PackedExpertBackend>(std::move(experts), options.weight_type, act);
  if (options.weight_type == kernels::WeightType::kBF16)
    return make_bf16_training_experts(std::move(experts), expert_ids, act);
  return std::make_unique<CpuExpertBackend>(std::move(experts), expert_ids, act);
}

}  // namespace switchyard::layers
