#pragma once
// Private: the per-token math of noisy top-k gating, shared by the forward
// (noise, statistics) and the backward.
#include <cstdint>

#include "switchyard/layers/noisy_gating.hpp"

namespace switchyard::layers::detail {

/// One token's noisy-gating inputs, [E] each: the clean logits, the noise
/// logits (x · W_noise), the standard normal draws and the noisy logits.
struct NoisyToken {
  const float *clean, *noise_logits, *eps, *noisy;
  std::int64_t num_experts, top_k;
};

/// The noisy logits: clean + eps * softplus(noise_logits), [E].
void noisy_logits(const float* clean, const float* noise_logits, const float* eps, std::int64_t E, float* out);

/// Adds to `load` ([E]) the probability, under fresh noise, that each expert
/// is among the token's top k: Phi((clean_e - threshold_e) / softplus(n_e)),
/// the threshold the k-th largest noisy logit of the other experts.
/// `top`: space for top_k + 1 indices.
void add_load(const NoisyToken& t, std::int32_t* top, double* load);

/// CV(v)^2 = var(v) / (mean(v)^2 + 1e-10) (unbiased variance, as the
/// paper's code), and its gradient into `grad` ([n]).
double cv_squared(const double* v, std::int64_t n, double* grad);

/// The load loss's gradient for one token: with g_e = dL/dLoad_e, adds to
/// dL/dclean (`d_clean`), dL/dnoisy (`d_noisy`, through the thresholds) and
/// dL/d(noise logits) (`d_noise`), [E] each.
void add_load_grads(const NoisyToken& t, const double* g, std::int32_t* top, float* d_clean, float* d_noisy,
                    float* d_noise);

/// dL/d(noise logits) += dL/dnoisy * eps * sigmoid(n) (the noisy logits' own
/// path), [E].
void add_noise_path(const NoisyToken& t, const float* d_noisy, float* d_noise);

}  // namespace switchyard::layers::detail
