#pragma once
// Finite-difference gradients of the float64 reference layer, by parameter
// name: the independent side of the gradient tests.
#include <functional>
#include <string>
#include <vector>

#include "moe_reference.hpp"

namespace switchyard::test_support {

/// Central differences of `loss` with respect to every element of `v`.
inline std::vector<double> finite_diff(const std::function<double()>& loss, std::vector<double>* v) {
  constexpr double h = 1e-6;
  std::vector<double> grad(v->size());
  for (std::size_t i = 0; i < v->size(); ++i) {
    const double keep = (*v)[i];
    (*v)[i] = keep + h;
    const double up = loss();
    (*v)[i] = keep - h;
    const double down = loss();
    (*v)[i] = keep;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

inline std::vector<double> concat(std::vector<double> a, const std::vector<double>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

/// The finite-difference gradient of the parameter Switchyard names `name`
/// (`gate.weight`, `shared.*`, `shared_expert_gate.weight`,
/// `experts.<e>.gate_up_proj` / `down_proj`), laid out as that parameter.
inline std::vector<double> reference_gradient(const std::string& name, const std::function<double()>& loss,
                                              RefParams* ref) {
  if (name == "gate.weight") return finite_diff(loss, &ref->router);
  if (name == "gate.noise_weight") return finite_diff(loss, &ref->router_noise);
  if (name == "shared.gate_up_proj")
    return concat(finite_diff(loss, &ref->shared_gate), finite_diff(loss, &ref->shared_up));
  if (name == "shared.down_proj") return finite_diff(loss, &ref->shared_down);
  if (name == "shared_expert_gate.weight") return finite_diff(loss, &ref->shared_expert_gate);
  const auto e = std::stoll(name.substr(name.find('.') + 1));
  return name.ends_with("gate_up_proj") ? concat(finite_diff(loss, &ref->gate[e]), finite_diff(loss, &ref->up[e]))
                                        : finite_diff(loss, &ref->down[e]);
}

}  // namespace switchyard::test_support
