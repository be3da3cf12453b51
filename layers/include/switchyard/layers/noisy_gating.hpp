#pragma once
// Noisy top-k gating (Shazeer et al., "Outrageously Large Neural Networks",
// 2017): in training, each router logit gets Gaussian noise whose scale is
// learned, softplus(x · W_noise); the importance and load losses balance
// the experts. See docs/routing.md.
#include <cstdint>

namespace switchyard::layers {

/// The noisy router's options (MoeLayerOptions::noisy_gating).
struct NoisyGating {
  bool enabled = false;
  // Coefficients of CV(importance)^2 and CV(load)^2 over the global batch
  // (the paper's w_importance and w_load).
  double importance_coef = 0.0, load_coef = 0.0;
};

/// The standard normal noise of router logit `expert` of token `token` (this
/// rank's index) on `rank` in the step `key`: a pure function, so a step's
/// noise does not depend on chunks, threads or schedule, and a test can
/// recompute it.
float gating_noise(std::uint64_t key, int rank, std::int64_t token, std::int64_t expert);

}  // namespace switchyard::layers
