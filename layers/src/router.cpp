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

void route(const RouterConfig& config, const float* logits, const float* selection_bias, std::int64_t num_tokens,
           RoutingPlan* plan) {
  const std::int64_t E = config.num_experts, K = config.top_k;
  plan->num_tokens = num_tokens;
  plan->top_k = K;
  plan->num_experts = E;
  plan->expert_idx.resize(static_cast<std::size_t>(num_tokens * K));
  plan->weights.resize(static_cast<std::size_t>(num_tokens * K));
  plan->expert_counts.assign(static_cast<std::size_t>(E), 0);

  std::vector<float> scores(static_cast<std::size_t>(E)), choice(static_cast<std::size_t>(E));
  const std::int64_t group_size = E / config.n_group;
  std::vector<float> group_scores(static_cast<std::size_t>(config.n_group));
  std::vector<std::int32_t> top2(2), groups(static_cast<std::size_t>(config.topk_group));
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  for (std::int64_t t = 0; t < num_tokens; ++t) {
    std::copy(logits + t * E, logits + (t + 1) * E, scores.begin());
    if (config.score == ScoreFunction::kSoftmax) {
      kernels::softmax_rows(scores.data(), 1, E);
    } else {
      kernels::sigmoid(scores.data(), E);
    }
    for (std::int64_t e = 0; e < E; ++e) choice[e] = scores[e] + (selection_bias ? selection_bias[e] : 0.0f);
    if (config.n_group > 1) {
      for (std::int64_t g = 0; g < config.n_group; ++g) {
        kernels::top_k(choice.data() + g * group_size, group_size, 2, top2.data());
        group_scores[g] = choice[g * group_size + top2[0]] + choice[g * group_size + top2[1]];
      }
      kernels::top_k(group_scores.data(), config.n_group, config.topk_group, groups.data());
      std::vector<bool> keep(static_cast<std::size_t>(config.n_group), false);
      for (auto g : groups) keep[g] = true;
      for (std::int64_t e = 0; e < E; ++e)
        if (!keep[e / group_size]) choice[e] = kNegInf;
    }
    std::int32_t* idx = plan->expert_idx.data() + t * K;
    float* w = plan->weights.data() + t * K;
    kernels::top_k(choice.data(), E, K, idx);
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

}  // namespace switchyard::layers
