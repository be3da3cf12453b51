#include "switchyard/layers/router.hpp"

#include "switchyard/layers/moe_config.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "switchyard/kernels/routing_math.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {

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

RouterScratch::RouterScratch(const RouterConfig& config)
    : scores(static_cast<std::size_t>(config.num_experts)),
      choice(static_cast<std::size_t>(config.num_experts)),
      group_scores(static_cast<std::size_t>(config.n_group)),
      group_top(2),
      groups(static_cast<std::size_t>(config.topk_group)),
      keep(static_cast<std::size_t>(config.n_group)) {}

namespace {

// DeepSeek-V3's group limit: a group's score is the sum of its two best
// choice scores; experts outside the best `topk_group` groups get -inf.
void limit_to_groups(const RouterConfig& config, RouterScratch& s) {
  const std::int64_t group_size = config.num_experts / config.n_group;
  float* choice = s.choice.data();
  for (std::int64_t g = 0; g < config.n_group; ++g) {
    kernels::top_k(choice + g * group_size, group_size, 2, s.group_top.data());
    s.group_scores[g] = choice[g * group_size + s.group_top[0]] + choice[g * group_size + s.group_top[1]];
  }
  kernels::top_k(s.group_scores.data(), config.n_group, config.topk_group, s.groups.data());
  std::fill(s.keep.begin(), s.keep.end(), 0);
  for (auto g : s.groups) s.keep[g] = 1;
  for (std::int64_t e = 0; e < config.num_experts; ++e)
    if (!s.keep[e / group_size]) choice[e] = -std::numeric_limits<float>::infinity();
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
  for (std::int64_t t = 0; t < num_tokens; ++t) {
    std::copy(logits + t * E, logits + (t + 1) * E, scores);
    if (config.score == ScoreFunction::kSoftmax) {
      kernels::softmax_rows(scores, 1, E);
    } else {
      kernels::sigmoid(scores, E);
    }
    for (std::int64_t e = 0; e < E; ++e) choice[e] = scores[e] + (selection_bias ? selection_bias[e] : 0.0f);
    if (config.n_group > 1) limit_to_groups(config, *scratch);
    std::int32_t* idx = plan->expert_idx.data() + t * K;
    float* w = plan->weights.data() + t * K;
    kernels::top_k(choice, E, K, idx);
    float sum = 0.0f;
    for (std::int64_t j = 0; j < K; ++j) {
      w[j] = scores[idx[j]];
      sum += w[j];
    }
    for (std::int64_t j = 0; j < K; ++j) {
      // NOTE: divide, then scale, in the order the reference implementations use.
      if (config.renormalize) w[j] /= sum + config.renormalize_epsilon;
      w[j] *= config.scaling;
      ++plan->expert_counts[idx[j]];
    }
  }
}

void route(const RouterConfig& config, const float* logits, const float* selection_bias, std::int64_t num_tokens,
           RoutingPlan* plan) {
  RouterScratch scratch(config);
  route(config, logits, selection_bias, num_tokens, plan, &scratch);
}

}  // namespace switchyard::layers
