#include "switchyard/layers/router.hpp"

#include "switchyard/layers/moe_config.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "switchyard/kernels/routing_math.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {

namespace {

std::string str(std::int64_t v) { return std::to_string(v); }

// Experts per node, from expert_node: ids must be 0..num_nodes-1, each used.
std::vector<std::int64_t> node_sizes(const RouterConfig& c) {
  check_arg(static_cast<std::int64_t>(c.expert_node.size()) == c.num_experts,
            "router: expert_node must hold num_experts (" + str(c.num_experts) + ") node ids, got " +
                str(static_cast<std::int64_t>(c.expert_node.size())));
  std::vector<std::int64_t> sizes;
  for (std::int64_t e = 0; e < c.num_experts; ++e) {
    const std::int32_t n = c.expert_node[e];
    check_arg(n >= 0, "router: expert_node[" + str(e) + "] must not be negative, got " + str(n));
    if (n >= static_cast<std::int32_t>(sizes.size())) sizes.resize(static_cast<std::size_t>(n) + 1, 0);
    ++sizes[n];
  }
  for (std::size_t n = 0; n < sizes.size(); ++n)
    check_arg(sizes[n] > 0, "router: expert_node names no expert on node " + str(static_cast<std::int64_t>(n)) +
                                " of 0.." + str(static_cast<std::int64_t>(sizes.size()) - 1));
  return sizes;
}

// A per-expert vector: empty, or num_experts finite values (>= 0 when
// `non_negative`).
void check_per_expert(const std::vector<float>& v, std::int64_t num_experts, const char* name, bool non_negative) {
  check_arg(v.empty() || static_cast<std::int64_t>(v.size()) == num_experts,
            std::string("router: ") + name + " must be empty or hold num_experts (" + str(num_experts) +
                ") values, got " + str(static_cast<std::int64_t>(v.size())));
  for (std::size_t e = 0; e < v.size(); ++e)
    check_arg(std::isfinite(v[e]) && (!non_negative || v[e] >= 0.0f),
              std::string("router: ") + name + "[" + str(static_cast<std::int64_t>(e)) + "] must be finite" +
                  (non_negative ? " and >= 0" : ""));
}

// The node limit's invariants: with groups, each group on one node; enough
// experts in any max_nodes selected nodes for top_k.
void validate_node_limit(const RouterConfig& c) {
  std::vector<std::int64_t> sizes = node_sizes(c);
  const auto num_nodes = static_cast<std::int64_t>(sizes.size());
  check_arg(c.max_nodes >= 1 && c.max_nodes <= num_nodes,
            "router: max_nodes must be in [1, " + str(num_nodes) + "] (the nodes), got " + str(c.max_nodes));
  std::sort(sizes.begin(), sizes.end());
  check_arg(c.node_score_experts >= 1 && c.node_score_experts <= sizes.front(),
            "router: node_score_experts must be in [1, " + str(sizes.front()) +
                "] (the experts of the smallest node), got " + str(c.node_score_experts));
  std::int64_t reachable = 0;
  for (std::int64_t n = 0; n < c.max_nodes; ++n) reachable += sizes[n];
  if (c.n_group > 1) {
    const std::int64_t group_size = c.num_experts / c.n_group;
    for (std::int64_t e = 0; e < c.num_experts; ++e)
      check_arg(c.expert_node[e] == c.expert_node[e - e % group_size],
                "router: group " + str(e / group_size) + " spans nodes " + str(c.expert_node[e - e % group_size]) +
                    " and " + str(c.expert_node[e]) + "; with n_group > 1 each group must lie on one node");
    check_arg(c.node_score_experts <= group_size, "router: node_score_experts " + str(c.node_score_experts) +
                                                      " exceeds the " + str(group_size) + " experts of a group");
    reachable = group_size * std::min(c.max_nodes, c.topk_group);
  }
  check_arg(c.top_k <= reachable, "router: top_k " + str(c.top_k) + " exceeds the " + str(reachable) +
                                      " experts that max_nodes " + str(c.max_nodes) + " nodes surely hold");
}

}  // namespace

void RouterConfig::validate() const {
  check_arg(num_experts > 0, "router: num_experts must be positive, got " + std::to_string(num_experts));
  check_arg(top_k > 0 && top_k <= num_experts,
            "router: top_k must be in [1, num_experts], got " + std::to_string(top_k));
  check_arg(
      n_group > 0 && num_experts % n_group == 0,
      "router: n_group must divide num_experts (" + std::to_string(num_experts) + "), got " + std::to_string(n_group));
  check_arg(topk_group > 0 && topk_group <= n_group, "router: topk_group must be in [1, n_group] = [1, " +
                                                         std::to_string(n_group) + "], got " +
                                                         std::to_string(topk_group));
  check_arg(n_group == 1 || num_experts / n_group >= 2,
            "router: n_group " + std::to_string(n_group) + " leaves fewer than 2 of the " +
                std::to_string(num_experts) + " experts (num_experts) in each group");
  check_arg(top_k <= topk_group * (num_experts / n_group), "router: top_k " + std::to_string(top_k) + " exceeds the " +
                                                               std::to_string(topk_group * (num_experts / n_group)) +
                                                               " experts of the topk_group " +
                                                               std::to_string(topk_group) + " selected groups");
  check_arg(max_nodes >= 0, "router: max_nodes must not be negative, got " + str(max_nodes));
  if (max_nodes > 0) validate_node_limit(*this);
  check_arg(top_p >= 0.0f && top_p <= 1.0f,
            "router: top_p must be in [0, 1] (0: fixed top_k), got " + std::to_string(top_p));
  check_arg(top_p == 0.0f || score == ScoreFunction::kSoftmax,
            "router: top_p needs softmax scores (a probability mass to reach); this router uses sigmoid scores");
  check_per_expert(selection_penalty, num_experts, "selection_penalty", false);
  check_per_expert(link_cost, num_experts, "link_cost", true);
}

void MoeConfig::validate() const {
  check_arg(hidden_size > 0, "MoE config: hidden_size must be positive, got " + std::to_string(hidden_size));
  check_arg(expert_intermediate_size > 0,
            "MoE config: expert_intermediate_size must be positive, got " + std::to_string(expert_intermediate_size));
  check_arg(router.num_experts == num_experts && router.top_k == top_k,
            "MoE config: the router's num_experts/top_k differ from the block's");
  check_arg(shared_intermediate_size >= 0, "MoE config: shared_intermediate_size must not be negative");
  router.validate();
}

void RoutingPlan::reserve(std::int64_t max_tokens, std::int64_t k, std::int64_t experts) {
  expert_idx.reserve(static_cast<std::size_t>(max_tokens * k));
  weights.reserve(static_cast<std::size_t>(max_tokens * k));
  expert_counts.reserve(static_cast<std::size_t>(experts));
}

namespace {

// The limit that keeps `limit` of the groups `group_of` names (0..G-1).
GroupLimit make_group_limit(std::vector<std::int32_t> group_of, std::int64_t limit, std::int64_t score_experts) {
  GroupLimit g;
  const auto E = static_cast<std::int64_t>(group_of.size());
  const std::int32_t num_groups = E ? *std::max_element(group_of.begin(), group_of.end()) + 1 : 0;
  g.begin.assign(static_cast<std::size_t>(num_groups) + 1, 0);
  for (auto n : group_of) ++g.begin[n + 1];
  for (std::int32_t n = 0; n < num_groups; ++n) g.begin[n + 1] += g.begin[n];
  g.members.resize(static_cast<std::size_t>(E));
  std::vector<std::int32_t> next(g.begin.begin(), g.begin.end() - 1);
  for (std::int32_t e = 0; e < E; ++e) g.members[next[group_of[e]]++] = e;
  g.group_of = std::move(group_of);
  g.limit = limit;
  g.score_experts = score_experts;
  return g;
}

// Grows `v` to at least `n` elements.
template <class T>
void at_least(std::vector<T>& v, std::int64_t n) {
  if (static_cast<std::int64_t>(v.size()) < n) v.resize(static_cast<std::size_t>(n));
}

}  // namespace

RouterScratch::RouterScratch(const RouterConfig& config)
    : scores(static_cast<std::size_t>(config.num_experts)), choice(static_cast<std::size_t>(config.num_experts)) {
  if (config.n_group > 1) {
    std::vector<std::int32_t> group_of(static_cast<std::size_t>(config.num_experts));
    for (std::int64_t e = 0; e < config.num_experts; ++e)
      group_of[e] = static_cast<std::int32_t>(e / (config.num_experts / config.n_group));
    group_limit = make_group_limit(std::move(group_of), config.topk_group, 2);
  }
  if (config.max_nodes > 0)
    node_limit = make_group_limit(config.expert_node, config.max_nodes, config.node_score_experts);
  for (const GroupLimit* g : {&group_limit, &node_limit}) {
    if (g->limit == 0) continue;
    at_least(group_scores, g->num_groups());
    at_least(keep, g->num_groups());
    at_least(group_top, g->score_experts);
    at_least(groups, g->limit);
    for (std::int64_t n = 0; n < g->num_groups(); ++n) at_least(group_values, g->begin[n + 1] - g->begin[n]);
  }
}

namespace {

// Excludes, with -inf, the experts outside the `g.limit` groups whose best
// `g.score_experts` choice scores sum highest (DeepSeek-V3's group limit with
// its top-2 sum, and the node limit).
void limit_to_groups(const GroupLimit& g, RouterScratch& s) {
  float* choice = s.choice.data();
  const std::int64_t G = g.num_groups();
  for (std::int64_t n = 0; n < G; ++n) {
    const std::int64_t first = g.begin[n], size = g.begin[n + 1] - first;
    for (std::int64_t i = 0; i < size; ++i) s.group_values[i] = choice[g.members[first + i]];
    kernels::top_k(s.group_values.data(), size, g.score_experts, s.group_top.data());
    float sum = s.group_values[s.group_top[0]];
    for (std::int64_t j = 1; j < g.score_experts; ++j) sum += s.group_values[s.group_top[j]];
    s.group_scores[n] = sum;
  }
  kernels::top_k(s.group_scores.data(), G, g.limit, s.groups.data());
  std::fill(s.keep.begin(), s.keep.begin() + G, 0);
  for (std::int64_t j = 0; j < g.limit; ++j) s.keep[s.groups[j]] = 1;
  for (std::size_t e = 0; e < g.group_of.size(); ++e)
    if (!s.keep[g.group_of[e]]) choice[e] = -std::numeric_limits<float>::infinity();
}

// Top-p: how many of the chosen experts `idx` (in selection order) a token
// uses: the fewest whose scores reach top_p, at least one.
std::int64_t experts_used(const RouterConfig& config, const float* scores, const std::int32_t* idx) {
  // NOTE: P = 1 means every allowed expert: a float softmax can round one
  // probability up to 1 and would otherwise stop early.
  if (config.top_p <= 0.0f || config.top_p >= 1.0f) return config.top_k;
  double mass = 0.0;  // NOTE: in double, so the cut does not depend on summation rounding
  for (std::int64_t j = 0; j < config.top_k; ++j) {
    mass += scores[idx[j]];
    if (mass >= config.top_p) return j + 1;
  }
  return config.top_k;
}

// Weights of the first `K` experts of `idx`: the unbiased, unpenalised
// scores, renormalised and scaled.
void weigh(const RouterConfig& config, const float* scores, const std::int32_t* idx, std::int64_t K, float* w) {
  float sum = 0.0f;
  for (std::int64_t j = 0; j < K; ++j) {
    w[j] = scores[idx[j]];
    sum += w[j];
  }
  for (std::int64_t j = 0; j < K; ++j) {
    // NOTE: divide, then scale, in the order the reference implementations use.
    if (config.renormalize) w[j] /= sum + config.renormalize_epsilon;
    w[j] *= config.scaling;
  }
}

}  // namespace

void route(const RouterConfig& config, const float* logits, const float* selection_bias, std::int64_t num_tokens,
           RoutingPlan* plan, RouterScratch* scratch) {
  const std::int64_t E = config.num_experts, K = config.top_k;
  plan->num_tokens = num_tokens;
  plan->top_k = K;
  plan->num_experts = E;
  plan->expert_idx.resize(static_cast<std::size_t>(num_tokens * K));
  plan->weights.resize(static_cast<std::size_t>(num_tokens * K));
  plan->expert_counts.assign(static_cast<std::size_t>(E), 0);
  float* scores = scratch->scores.data();
  float* choice = scratch->choice.data();
  const float* penalty = config.selection_penalty.empty() ? nullptr : config.selection_penalty.data();
  // NOTE: on the logits only where nothing is added to the scores: the
  // selection bias, the link penalty and the group and node limits are in
  // units of scores (docs/topology.md).
  const bool on_logits = config.select_on_logits && !selection_bias && !penalty && scratch->group_limit.limit == 0 &&
                         scratch->node_limit.limit == 0;
  for (std::int64_t t = 0; t < num_tokens; ++t) {
    std::copy(logits + t * E, logits + (t + 1) * E, scores);
    if (config.score == ScoreFunction::kSoftmax) {
      kernels::softmax_rows(scores, 1, E);
    } else {
      kernels::sigmoid(scores, E);
    }
    const float* base = on_logits ? logits + t * E : scores;
    for (std::int64_t e = 0; e < E; ++e) choice[e] = base[e] + (selection_bias ? selection_bias[e] : 0.0f);
    if (penalty)
      for (std::int64_t e = 0; e < E; ++e) choice[e] -= penalty[e];
    if (scratch->group_limit.limit > 0) limit_to_groups(scratch->group_limit, *scratch);
    if (scratch->node_limit.limit > 0) limit_to_groups(scratch->node_limit, *scratch);
    std::int32_t* idx = plan->expert_idx.data() + t * K;
    kernels::top_k(choice, E, K, idx);
    const std::int64_t used = experts_used(config, scores, idx);
    float* w = plan->weights.data() + t * K;
    weigh(config, scores, idx, used, w);
    for (std::int64_t j = 0; j < used; ++j) ++plan->expert_counts[idx[j]];
    std::fill(idx + used, idx + K, -1);
    std::fill(w + used, w + K, 0.0f);
  }
}

void route(const RouterConfig& config, const float* logits, const float* selection_bias, std::int64_t num_tokens,
           RoutingPlan* plan) {
  RouterScratch scratch(config);
  route(config, logits, selection_bias, num_tokens, plan, &scratch);
}

}  // namespace switchyard::layers
