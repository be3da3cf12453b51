#include "noisy_gating.hpp"

#include <algorithm>
#include <cmath>

#include "switchyard/kernels/routing_math.hpp"

namespace switchyard::layers {
namespace {

std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A uniform in (0, 1) from 53 bits.
double unit(std::uint64_t bits) { return (static_cast<double>(bits >> 11) + 0.5) * 0x1.0p-53; }

}  // namespace

float gating_noise(std::uint64_t key, int rank, std::int64_t token, std::int64_t expert) {
  std::uint64_t h = splitmix(key);
  h = splitmix(h ^ static_cast<std::uint64_t>(rank));
  h = splitmix(h ^ static_cast<std::uint64_t>(token));
  h = splitmix(h ^ static_cast<std::uint64_t>(expert));
  // Box-Muller from two independent uniforms.
  const double u1 = unit(h), u2 = unit(splitmix(h));
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

namespace detail {
namespace {

double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }
double normal_pdf(double z) { return std::exp(-0.5 * z * z) / std::sqrt(2.0 * M_PI); }

// The experts holding the k-th and (k+1)-th largest noisy logits (k+1 <= E
// by validation): an expert among the top k competes with the (k+1)-th, any
// other with the k-th.
struct Thresholds {
  std::int32_t kth, next;
};

Thresholds thresholds(const NoisyToken& t, std::int32_t* idx) {
  kernels::top_k(t.noisy, t.num_experts, t.top_k + 1, idx);
  return {idx[t.top_k - 1], idx[t.top_k]};
}

// The expert whose noisy logit is expert e's threshold.
std::int32_t threshold_of(const NoisyToken& t, const Thresholds& th, std::int64_t e) {
  const bool in = t.noisy[e] > t.noisy[th.next] || (t.noisy[e] == t.noisy[th.next] && e < th.next);
  return in && e != th.next ? th.next : th.kth;
}

}  // namespace

void noisy_logits(const float* clean, const float* noise_logits, const float* eps, std::int64_t E, float* out) {
  for (std::int64_t e = 0; e < E; ++e) out[e] = static_cast<float>(clean[e] + eps[e] * softplus(noise_logits[e]));
}

void add_load(const NoisyToken& t, std::int32_t* top, double* load) {
  const Thresholds th = thresholds(t, top);
  for (std::int64_t e = 0; e < t.num_experts; ++e) {
    const double thr = t.noisy[threshold_of(t, th, e)];
    load[e] += normal_cdf((t.clean[e] - thr) / softplus(t.noise_logits[e]));
  }
}

double cv_squared(const double* v, std::int64_t n, double* grad) {
  double mean = 0.0;
  for (std::int64_t i = 0; i < n; ++i) mean += v[i];
  mean /= static_cast<double>(n);
  double var = 0.0;
  for (std::int64_t i = 0; i < n; ++i) var += (v[i] - mean) * (v[i] - mean);
  var /= static_cast<double>(n - 1);
  const double den = mean * mean + 1e-10;
  // d var/dv_i = 2 (v_i - mean) / (n - 1); d den/dv_i = 2 mean / n.
  for (std::int64_t i = 0; i < n; ++i)
    grad[i] = 2.0 * (v[i] - mean) / static_cast<double>(n - 1) / den -
              var * 2.0 * mean / static_cast<double>(n) / (den * den);
  return var / den;
}

void add_load_grads(const NoisyToken& t, const double* g, std::int32_t* top, float* d_clean, float* d_noisy,
                    float* d_noise) {
  const Thresholds th = thresholds(t, top);
  for (std::int64_t e = 0; e < t.num_experts; ++e) {
    const std::int32_t j = threshold_of(t, th, e);
    const double sigma = softplus(t.noise_logits[e]);
    const double z = (t.clean[e] - t.noisy[j]) / sigma;
    const double d = g[e] * normal_pdf(z) / sigma;  // dL/dz / sigma
    d_clean[e] += static_cast<float>(d);
    d_noisy[j] -= static_cast<float>(d);
    d_noise[e] -= static_cast<float>(d * z * sigmoid(t.noise_logits[e]));
  }
}

void add_noise_path(const NoisyToken& t, const float* d_noisy, float* d_noise) {
  for (std::int64_t e = 0; e < t.num_experts; ++e)
    d_noise[e] += static_cast<float>(d_noisy[e] * t.eps[e] * sigmoid(t.noise_logits[e]));
}

}  // namespace detail
}  // namespace switchyard::layers
