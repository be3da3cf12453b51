#pragma once
// Routing: router logits -> each token's experts and weights.
#include <cstdint>
#include <vector>

namespace switchyard::layers {

/// How router scores are turned into expert choices and weights.
enum class ScoreFunction { kSoftmax, kSigmoid };

/// How a router scores, selects and weights experts. Invariants are checked
/// by `validate`.
struct RouterConfig {
  ScoreFunction score = ScoreFunction::kSoftmax;
  std::int64_t num_experts = 0;
  std::int64_t top_k = 0;
  bool renormalize = true;
  float renormalize_epsilon = 0.0f;  // DeepSeek-V3 adds 1e-20 to the sum
  std::int64_t n_group = 1;          // group-limited top-k (1: no groups)
  std::int64_t topk_group = 1;
  float scaling = 1.0f;  // routed_scaling_factor

  /// Throws Error(kInvalidArgument) naming the offending field.
  void validate() const;
};

/// Each token's chosen experts and their weights, plus per-expert counts.
/// Slot `t * top_k + j` is the j-th choice of token t.
struct RoutingPlan {
  std::int64_t num_tokens = 0;
  std::int64_t top_k = 0;
  std::int64_t num_experts = 0;
  std::vector<std::int32_t> expert_idx;     // [num_tokens * top_k]
  std::vector<float> weights;               // [num_tokens * top_k]
  std::vector<std::int64_t> expert_counts;  // [num_experts], this rank's tokens

  /// Sizes the vectors for up to `max_tokens` tokens, so routing into this
  /// plan allocates nothing.
  void reserve(std::int64_t max_tokens, std::int64_t top_k, std::int64_t num_experts);
};

/// route()'s per-token working space, sized once for a router.
struct RouterScratch {
  std::vector<float> scores, choice, group_scores;  // [E], [E], [n_group]
  std::vector<std::int32_t> group_top, groups;      // [2], [topk_group]
  std::vector<char> keep;                           // [n_group]

  RouterScratch() = default;
  explicit RouterScratch(const RouterConfig& config);
};

/// Routes `num_tokens` rows of `logits` ([num_tokens, num_experts]).
/// `selection_bias` ([num_experts] or nullptr) is added to the scores for
/// selection only (DeepSeek-V3's e_score_correction_bias). Experts of groups
/// that are not selected are excluded with -inf, as DeepSeek's reference does.
/// Ties are broken toward the lower expert (and group) index.
/// Allocates nothing when `plan` is reserved for `num_tokens` and `scratch`
/// was made for `config`; the overload without scratch makes its own.
void route(const RouterConfig& config, const float* logits, const float* selection_bias, std::int64_t num_tokens,
           RoutingPlan* plan, RouterScratch* scratch);
void route(const RouterConfig& config, const float* logits, const float* selection_bias, std::int64_t num_tokens,
           RoutingPlan* plan);

}  // namespace switchyard::layers
