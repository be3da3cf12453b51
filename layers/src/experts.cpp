#include "switchyard/layers/experts.hpp"

#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {

GatedMlp::GatedMlp(MlpWeights weights, kernels::Activation act)
    : w_(std::move(weights)),
      act_(act),
      gate_up_(w_.gate_up.data(), 2 * w_.inter, w_.hidden),
      down_(w_.down.data(), w_.hidden, w_.inter) {}

void GatedMlp::run(const float* x, std::int64_t rows, float* y, std::vector<float>* scratch) const {
  if (rows == 0) return;
  scratch->resize(static_cast<std::size_t>(rows * 3 * w_.inter));
  float* gate_up = scratch->data();
  float* act = gate_up + rows * 2 * w_.inter;
  gate_up_.run(x, rows, gate_up);
  kernels::gated_activation(act_, gate_up, rows, w_.inter, act);
  down_.run(act, rows, y);
}

namespace {

// Experts as a loop of oneDNN matmuls, one gate/up and one down per expert.
class CpuExpertBackend final : public ExpertBackend {
 public:
  CpuExpertBackend(std::vector<MlpWeights> experts, kernels::Activation act) {
    for (auto& e : experts) {
      hidden_ = e.hidden;
      mlps_.emplace_back(std::move(e), act);
    }
  }
  DeviceKind device() const override { return DeviceKind::kCpu; }
  std::int64_t num_local() const override { return static_cast<std::int64_t>(mlps_.size()); }
  void run(const float* rows, const std::int64_t* counts, float* out) override {
    std::int64_t offset = 0;
    for (std::size_t j = 0; j < mlps_.size(); ++j) {
      mlps_[j].run(rows + offset * hidden_, counts[j], out + offset * hidden_, &scratch_);
      offset += counts[j];
    }
  }

 private:
  std::vector<GatedMlp> mlps_;
  std::int64_t hidden_ = 0;
  std::vector<float> scratch_;
};

}  // namespace

std::unique_ptr<ExpertBackend> make_expert_backend(DeviceKind device, std::vector<MlpWeights> experts,
                                                   kernels::Activation act) {
  check_arg(device == DeviceKind::kCpu,
            std::string("device '") + device_name(device) + "' is not available in this build (expected cpu)");
  return std::make_unique<CpuExpertBackend>(std::move(experts), act);
}

}  // namespace switchyard::layers
