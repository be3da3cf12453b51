#pragma once
// Private: the router's per-token math shared by the forward's statistics
// and the backward (routing weights -> scores -> logits, plus aux losses).
#include <cstdint>
#include <vector>

#include "switchyard/layers/router.hpp"

namespace switchyard::layers::detail {

/// Router probabilities for the auxiliary losses: softmax of the logits for
/// every router kind, as transformers' load_balancing_loss_func computes them.
void aux_probs(const float* logits, std::int64_t E, float* p);

double logsumexp(const float* x, std::int64_t n);

/// log p, and 0 for p = 0 (whose term p log p is 0).
double safe_log(double p);
/// -sum_e p_e log p_e of one token's probabilities.
double entropy_of(const float* p, std::int64_t E);

/// What the auxiliary losses add to dL/dlogits (zero coefficients: nothing).
struct AuxLossGrad {
  double aux_loss_coef = 0.0, z_loss_coef = 0.0, topology_loss_coef = 0.0;
  double entropy_loss_coef = 0.0;                      // the mean entropy of the router's probabilities
  const std::vector<double>* load_fraction = nullptr;  // [E] f_e over all ranks
  const std::vector<float>* link_cost = nullptr;       // [E] c_e from this rank (topology loss)
  std::int64_t global_tokens = 0;

  bool any() const {
    return aux_loss_coef != 0.0 || z_loss_coef != 0.0 || topology_loss_coef != 0.0 || entropy_loss_coef != 0.0;
  }
};

/// dL/dlogits ([rows, E]) of `rows` tokens from dL/d(routing weight)
/// (`grad_w`, [rows, K]), given their logits and routing. `scratch`: [3 * E].
void router_logits_grad(const RouterConfig& router, const float* logits, const RoutingPlan& routing,
                        const float* grad_w, const AuxLossGrad& aux, float* grad_logits, float* scratch);

}  // namespace switchyard::layers::detail
