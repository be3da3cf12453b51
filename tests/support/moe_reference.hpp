#pragma once
// A dense, single-process MoE layer in double precision, written from the
// architectures' definitions. It reads weights from plain arrays (the random
// checkpoint generator's), never through Switchyard's loader, router or
// dispatch, so tests can compare Switchyard against it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "switchyard/formats/moe_checkpoint.hpp"
#include "switchyard/formats/random_checkpoint.hpp"

namespace switchyard::test_support {

using Vec = std::vector<double>;
using formats::Architecture;

/// One MoE layer's parameters in double precision.
struct RefParams {
  Vec router, bias;
  std::vector<Vec> gate, up, down;  // per expert: [I*H], [I*H], [H*I]
  Vec shared_gate, shared_up, shared_down, shared_expert_gate;
  Vec router_noise;  // [E*H] noisy gating's W_noise; empty: none
};

inline Vec to_double(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

inline RefParams ref_params(const formats::MoeLayerArrays& a) {
  RefParams p{to_double(a.router),
              to_double(a.bias),
              {},
              {},
              {},
              to_double(a.shared_gate),
              to_double(a.shared_up),
              to_double(a.shared_down),
              to_double(a.shared_expert_gate),
              {}};
  for (std::size_t e = 0; e < a.gate.size(); ++e) {
    p.gate.push_back(to_double(a.gate[e]));
    p.up.push_back(to_double(a.up[e]));
    p.down.push_back(to_double(a.down[e]));
  }
  return p;
}

inline double ref_act(const std::string& name, double x) {
  if (name == "silu") return x / (1.0 + std::exp(-x));
  if (name == "gelu") return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  if (name == "relu") return x > 0 ? x : 0.0;
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));  // gelu tanh
}

// down · (act(gate · x) ⊙ (up · x)) for one token.
inline Vec ref_mlp(const Vec& gate, const Vec& up, const Vec& down, std::int64_t H, std::int64_t I, const double* x,
                   const std::string& act) {
  Vec h(I), y(H, 0.0);
  for (std::int64_t i = 0; i < I; ++i) {
    double g = 0, u = 0;
    for (std::int64_t c = 0; c < H; ++c) {
      g += gate[i * H + c] * x[c];
      u += up[i * H + c] * x[c];
    }
    h[i] = ref_act(act, g) * u;
  }
  for (std::int64_t c = 0; c < H; ++c)
    for (std::int64_t i = 0; i < I; ++i) y[c] += down[c * I + i] * h[i];
  return y;
}

// Indices of the k largest values, ties to the lower index.
inline std::vector<int> ref_largest(const Vec& v, int k) {
  std::vector<int> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return v[a] > v[b]; });
  idx.resize(k);
  return idx;
}

/// Node-limited and cost-aware selection (docs/topology.md): empty or zero
/// fields change nothing.
struct RefTopologyRouting {
  std::vector<int> expert_node{};  // [E]
  int max_nodes = 0;               // 0: no node limit
  int node_score_experts = 2;      // s: a node scores as the sum of its best s
  std::vector<Vec> penalty{};      // [T][E] subtracted from token t's selection values; empty: none
  std::vector<Vec> link_cost{};    // [T][E] the topology loss's price of each expert for token t; empty: none
  double top_p = 0;                // top-p routing: experts in order until their probabilities reach top_p (0: off)
  std::vector<Vec> noise_eps{};    // [T][E] noisy gating's standard normal draws; empty: no noise
};

// Excludes (-inf) the experts outside the `limit` groups whose best `s`
// values sum highest, ties to the lower group.
inline void ref_limit_groups(const std::vector<int>& group_of, int limit, int s, Vec* values) {
  const int G = *std::max_element(group_of.begin(), group_of.end()) + 1;
  Vec score(G);
  for (int g = 0; g < G; ++g) {
    Vec members;
    for (std::size_t e = 0; e < group_of.size(); ++e)
      if (group_of[e] == g) members.push_back((*values)[e]);
    std::sort(members.begin(), members.end(), std::greater<double>());
    for (int j = 0; j < s; ++j) score[g] += members[j];
  }
  std::vector<int> order(G);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return score[a] > score[b]; });
  std::vector<bool> kept(G, false);
  for (int j = 0; j < limit; ++j) kept[order[j]] = true;
  for (std::size_t e = 0; e < group_of.size(); ++e)
    if (!kept[group_of[e]]) (*values)[e] = -INFINITY;
}

// The penalty and node limit on one token's selection values.
inline void ref_topology_select(const RefTopologyRouting& topo, std::int64_t token, Vec* values) {
  if (!topo.penalty.empty())
    for (std::size_t e = 0; e < values->size(); ++e) (*values)[e] -= topo.penalty[token][e];
}

inline void ref_node_limit(const RefTopologyRouting& topo, Vec* values) {
  if (topo.max_nodes > 0) ref_limit_groups(topo.expert_node, topo.max_nodes, topo.node_score_experts, values);
}

struct RefChoice {
  std::vector<int> experts;
  Vec weights;
  Vec logits;            // the noisy logits with noisy gating
  Vec clean, noise_std;  // noisy gating: the clean logits and softplus(x · W_noise)
};

// Noisy gating: logits += eps * softplus(x · W_noise), keeping the clean
// logits and the noise scale.
inline void ref_add_noise(const RefParams& a, const double* x, const Vec& eps, std::int64_t H, RefChoice* ch) {
  ch->clean = ch->logits;
  for (std::size_t e = 0; e < eps.size(); ++e) {
    double n = 0;
    for (std::int64_t c = 0; c < H; ++c) n += a.router_noise[e * H + c] * x[c];
    ch->noise_std.push_back(std::log1p(std::exp(n)));
    ch->logits[e] += eps[e] * ch->noise_std[e];
  }
}

inline RefChoice ref_route(const formats::RandomMoeSpec& s, const RefParams& a, const double* x,
                           const RefTopologyRouting& topo = {}, std::int64_t token = 0) {
  const std::int64_t H = s.hidden, E = s.experts;
  RefChoice ch;
  ch.logits.assign(E, 0.0);
  for (std::int64_t e = 0; e < E; ++e)
    for (std::int64_t c = 0; c < H; ++c) ch.logits[e] += a.router[e * H + c] * x[c];
  if (!topo.noise_eps.empty()) ref_add_noise(a, x, topo.noise_eps[token], H, &ch);
  const Vec& logits = ch.logits;
  if (s.arch == Architecture::kDeepseekV3) {
    Vec score(E), biased(E);
    for (std::int64_t e = 0; e < E; ++e) {
      score[e] = 1.0 / (1.0 + std::exp(-logits[e]));
      biased[e] = score[e] + a.bias[e];
    }
    ref_topology_select(topo, token, &biased);
    const std::int64_t per = E / s.n_group;
    Vec group(s.n_group);
    for (std::int64_t g = 0; g < s.n_group; ++g) {
      Vec members(biased.begin() + g * per, biased.begin() + (g + 1) * per);
      auto top2 = ref_largest(members, 2);
      group[g] = members[top2[0]] + members[top2[1]];
    }
    Vec masked(E, -INFINITY);
    for (int g : ref_largest(group, static_cast<int>(s.topk_group)))
      for (std::int64_t e = g * per; e < (g + 1) * per; ++e) masked[e] = biased[e];
    ref_node_limit(topo, &masked);
    ch.experts = ref_largest(masked, static_cast<int>(s.top_k));
    double sum = 0;
    for (int e : ch.experts) sum += score[e];
    for (int e : ch.experts)
      ch.weights.push_back((s.norm_topk_prob ? score[e] / (sum + 1e-20) : score[e]) * s.routed_scaling_factor);
    return ch;
  }
  const double mx = *std::max_element(logits.begin(), logits.end());
  Vec p(E);
  double z = 0;
  for (std::int64_t e = 0; e < E; ++e) z += (p[e] = std::exp(logits[e] - mx));
  for (auto& v : p) v /= z;
  Vec select = p;
  ref_topology_select(topo, token, &select);
  ref_node_limit(topo, &select);
  ch.experts = ref_largest(select, static_cast<int>(s.top_k));
  if (topo.top_p > 0) {  // the shortest prefix whose probability mass reaches top_p
    double mass = 0;
    std::size_t used = 0;
    while (used < ch.experts.size() && mass < topo.top_p) mass += p[ch.experts[used++]];
    ch.experts.resize(used);
  }
  const bool renorm = s.arch == Architecture::kMixtral || s.norm_topk_prob;
  double sum = 0;
  for (int e : ch.experts) sum += p[e];
  for (int e : ch.experts) ch.weights.push_back(renorm ? p[e] / sum : p[e]);
  return ch;
}

inline std::int64_t ref_shared_inter(const formats::RandomMoeSpec& s) {
  return s.arch == Architecture::kQwen2Moe     ? s.shared_inter
         : s.arch == Architecture::kDeepseekV3 ? s.inter * s.n_shared_experts
                                               : 0;
}

struct RefOutput {
  Vec y;  // [T*H]
  std::int64_t dropped = 0;
  double aux_loss = 0;       // E * sum_e f_e * P_e (softmax probabilities)
  double z_loss = 0;         // mean_t logsumexp(logits_t)^2
  double topology_loss = 0;  // mean_t sum_e softmax_te * link_cost_te
  double entropy_loss = 0;   // mean_t -sum_e softmax_te log softmax_te
  // Noisy gating: CV^2 (unbiased variance over mean^2 + 1e-10) of the
  // experts' summed routing weights and of their summed probabilities of
  // being chosen under fresh noise.
  double importance_loss = 0, load_loss = 0;
  // Router scores (softmax, or sigmoid for DeepSeek-V3) summed over the
  // chosen experts, and over each token's k largest.
  double gate_mass = 0, gate_mass_top_k = 0;
};

/// Token t's share of the topology loss and gate mass, given its softmax
/// probabilities.
inline void ref_gate_and_topology(const formats::RandomMoeSpec& s, const RefTopologyRouting& topo, std::int64_t t,
                                  std::int64_t T, const RefChoice& ch, const Vec& probs, RefOutput* out) {
  if (!topo.link_cost.empty())
    for (std::size_t e = 0; e < probs.size(); ++e) out->topology_loss += probs[e] * topo.link_cost[t][e] / double(T);
  Vec score = probs;
  if (s.arch == Architecture::kDeepseekV3)
    for (std::size_t e = 0; e < score.size(); ++e) score[e] = 1.0 / (1.0 + std::exp(-ch.logits[e]));
  // The unconstrained choice: the top k, or (top-p) its prefix reaching top_p.
  double mass = 0;
  for (int e : ref_largest(score, static_cast<int>(s.top_k)))
    if (topo.top_p <= 0 || mass < topo.top_p) mass += score[e];
  out->gate_mass_top_k += mass;
  for (int e : ch.experts) out->gate_mass += score[e];
}

inline double ref_cv_squared(const Vec& v) {
  const double n = double(v.size());
  double mean = 0, var = 0;
  for (double x : v) mean += x / n;
  for (double x : v) var += (x - mean) * (x - mean) / (n - 1);
  return var / (mean * mean + 1e-10);
}

// The importance and load losses of noisy top-k gating (Shazeer et al. 2017):
// P(expert e chosen) = Phi((clean_e - threshold) / noise_std_e), the
// threshold the k-th largest noisy logit of the other experts.
inline void ref_noisy_losses(const std::vector<RefChoice>& choices, int K, RefOutput* out) {
  const std::size_t E = choices.front().logits.size();
  Vec importance(E, 0.0), load(E, 0.0);
  for (const RefChoice& ch : choices) {
    for (std::size_t j = 0; j < ch.experts.size(); ++j) importance[ch.experts[j]] += ch.weights[j];
    const std::vector<int> top = ref_largest(ch.logits, K + 1);
    for (std::size_t e = 0; e < E; ++e) {
      const bool in = std::find(ch.experts.begin(), ch.experts.end(), int(e)) != ch.experts.end();
      const double threshold = ch.logits[top[in ? K : K - 1]];
      load[e] += 0.5 * std::erfc(-(ch.clean[e] - threshold) / ch.noise_std[e] / std::sqrt(2.0));
    }
  }
  out->importance_loss = ref_cv_squared(importance);
  out->load_loss = ref_cv_squared(load);
}

/// The layer over all T tokens. With a capacity factor, each rank's block of
/// tokens admits at most ceil(cf * T_r * k / E) slots per expert, first choices
/// first, then in token order.
inline RefOutput ref_forward(const formats::RandomMoeSpec& s, const RefParams& a, const Vec& x, std::int64_t T,
                             double capacity_factor = 0.0, int ranks = 1, const RefTopologyRouting& topo = {}) {
  const std::int64_t H = s.hidden, K = s.top_k, E = s.experts;
  std::vector<RefChoice> choices;
  for (std::int64_t t = 0; t < T; ++t) choices.push_back(ref_route(s, a, &x[t * H], topo, t));
  RefOutput out;
  std::vector<std::vector<bool>> kept(T, std::vector<bool>(K, true));
  if (capacity_factor > 0) {
    for (int r = 0; r < ranks; ++r) {
      const std::int64_t b = r * (T / ranks) + std::min<std::int64_t>(r, T % ranks);
      const std::int64_t n = T / ranks + (r < T % ranks ? 1 : 0);
      const auto cap = static_cast<std::int64_t>(std::ceil(capacity_factor * double(n * K) / double(E)));
      std::vector<std::int64_t> used(E, 0);
      for (std::int64_t j = 0; j < K; ++j)
        for (std::int64_t t = b; t < b + n; ++t)
          if (j < std::ssize(choices[t].experts) && used[choices[t].experts[j]]++ >= cap)
            kept[t][j] = false, ++out.dropped;
    }
  }
  out.y.assign(T * H, 0.0);
  const std::int64_t Is = ref_shared_inter(s);
  Vec f(E, 0.0), P(E, 0.0);
  for (std::int64_t t = 0; t < T; ++t) {
    const RefChoice& ch = choices[t];
    for (std::int64_t j = 0; j < std::ssize(ch.experts); ++j) {
      if (!kept[t][j]) continue;
      const int e = ch.experts[j];
      Vec o = ref_mlp(a.gate[e], a.up[e], a.down[e], H, s.inter, &x[t * H], s.hidden_act);
      for (std::int64_t h = 0; h < H; ++h) out.y[t * H + h] += ch.weights[j] * o[h];
    }
    const double mx = *std::max_element(ch.logits.begin(), ch.logits.end());
    double z = 0;
    for (double l : ch.logits) z += std::exp(l - mx);
    Vec probs(E);
    for (std::int64_t e = 0; e < E; ++e) P[e] += (probs[e] = std::exp(ch.logits[e] - mx) / z) / double(T);
    // f: top-k of the softmax probabilities, as load_balancing_loss_func;
    // with top-p the experts used.
    for (int e : topo.top_p > 0 ? ch.experts : ref_largest(probs, static_cast<int>(K))) f[e] += 1.0 / double(T);
    for (double pe : probs)
      if (pe > 0) out.entropy_loss -= pe * std::log(pe) / double(T);
    const double lse = mx + std::log(z);
    out.z_loss += lse * lse / double(T);
    ref_gate_and_topology(s, topo, t, T, ch, probs, &out);
    if (Is > 0) {
      Vec o = ref_mlp(a.shared_gate, a.shared_up, a.shared_down, H, Is, &x[t * H], s.hidden_act);
      double scale = 1.0;
      if (!a.shared_expert_gate.empty()) {
        double dot = 0;
        for (std::int64_t h = 0; h < H; ++h) dot += a.shared_expert_gate[h] * x[t * H + h];
        scale = 1.0 / (1.0 + std::exp(-dot));
      }
      for (std::int64_t h = 0; h < H; ++h) out.y[t * H + h] += scale * o[h];
    }
  }
  for (std::int64_t e = 0; e < E; ++e) out.aux_loss += double(E) * f[e] * P[e];
  if (!topo.noise_eps.empty()) ref_noisy_losses(choices, static_cast<int>(K), &out);
  return out;
}

}  // namespace switchyard::test_support
