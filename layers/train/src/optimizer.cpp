#include "switchyard/train/optimizer.hpp"

#include <cmath>
#include <numbers>

#include "switchyard/runtime/error.hpp"

namespace switchyard::train {

double learning_rate(const OptimizerConfig& c, std::int64_t step) {
  if (step < c.warmup_steps) return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  const std::int64_t decay_steps = c.total_steps - 1 - c.warmup_steps;
  if (decay_steps <= 0) return c.lr;
  const double progress = std::min(1.0, static_cast<double>(step - c.warmup_steps) / static_cast<double>(decay_steps));
  return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

void allreduce_replicated_grads(comm::Communicator& comm, const std::vector<Parameter*>& params) {
  if (comm.size() == 1) return;
  std::size_t total = 0;
  for (const Parameter* p : params)
    if (p->replicated) total += p->grad.size();
  // NOTE: one buffer, one collective: the reduction order of a single
  // all-reduce is fixed for a given size and rank count, so every rank gets
  // the same sum and a rerun gets the same bits.
  std::vector<double> buf(total);
  std::size_t off = 0;
  for (const Parameter* p : params)
    if (p->replicated)
      for (float g : p->grad) buf[off++] = g;
  comm.allreduce_sum(buf.data(), buf.size());
  off = 0;
  for (Parameter* p : params)
    if (p->replicated)
      for (float& g : p->grad) g = static_cast<float>(buf[off++]);
}

double global_grad_norm(comm::Communicator& comm, const std::vector<Parameter*>& params) {
  double replicated = 0.0, local = 0.0;
  for (const Parameter* p : params) {
    double s = 0.0;
    for (float g : p->grad) s += static_cast<double>(g) * g;
    (p->replicated ? replicated : local) += s;
  }
  comm.allreduce_sum(&local, 1);
  return std::sqrt(replicated + local);
}

double clip_grads(const std::vector<Parameter*>& params, double norm, double max_norm) {
  if (max_norm <= 0.0 || norm <= max_norm) return 1.0;
  const double factor = max_norm / (norm + 1e-6);
  const auto f = static_cast<float>(factor);
  for (Parameter* p : params)
    for (float& g : p->grad) g *= f;
  return factor;
}

Optimizer::Optimizer(const OptimizerConfig& config, std::vector<Parameter*> params)
    : config_(config), params_(std::move(params)) {
  for (const Parameter* p : params_) {
    check(p->grad.size() == p->value.size(), ErrorCode::kInternal, "parameter " + p->name + ": grad size mismatch");
    m_.emplace_back(p->value.size(), 0.0f);
    if (config_.kind == OptimizerKind::kAdamW) v_.emplace_back(p->value.size(), 0.0f);
  }
}

std::vector<Optimizer::Slot> Optimizer::slots() {
  if (config_.kind == OptimizerKind::kAdamW) return {{"exp_avg", &m_}, {"exp_avg_sq", &v_}};
  return {{"momentum_buffer", &m_}};
}

void Optimizer::step(double lr) {
  ++num_steps_;
  const OptimizerConfig& c = config_;
  // NOTE: element updates are computed in double and stored as float, in a
  // fixed order, so replicated copies stay bit-identical across ranks.
  const double bc1 = 1.0 - std::pow(c.beta1, static_cast<double>(num_steps_));
  const double bc2 = 1.0 - std::pow(c.beta2, static_cast<double>(num_steps_));
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Parameter& p = *params_[i];
    const double wd = p.shape.size() >= 2 ? c.weight_decay : 0.0;
    float* m = m_[i].data();
    if (c.kind == OptimizerKind::kAdamW) {
      float* v = v_[i].data();
      for (std::size_t j = 0; j < p.value.size(); ++j) {
        const double g = p.grad[j];
        double w = p.value[j];
        w -= lr * wd * w;
        const double mj = c.beta1 * m[j] + (1.0 - c.beta1) * g;
        const double vj = c.beta2 * v[j] + (1.0 - c.beta2) * g * g;
        m[j] = static_cast<float>(mj);
        v[j] = static_cast<float>(vj);
        w -= lr * (mj / bc1) / (std::sqrt(vj / bc2) + c.eps);
        p.value[j] = static_cast<float>(w);
      }
    } else {
      for (std::size_t j = 0; j < p.value.size(); ++j) {
        const double w = p.value[j];
        const double g = p.grad[j] + wd * w;
        const double buf = c.momentum * m[j] + g;
        m[j] = static_cast<float>(buf);
        p.value[j] = static_cast<float>(w - lr * buf);
      }
    }
  }
}

}  // namespace switchyard::train
