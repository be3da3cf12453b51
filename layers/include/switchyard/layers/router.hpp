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
  // Select on the logits rather than the scores (Llama 4, Granite MoE take
  // the top-k logits); the same choice but where float scores tie. Only
  // without a selection bias, link penalty, group or node limit, which are
  // in units of scores.
  bool select_on_logits = false;
  // Adaptive expert counts (top-p): each token takes experts in selection
  // order until their scores sum to at least top_p, at most top_k of them
  // (top_k is then the most a token may use). Needs softmax scores, which
  // are a probability distribution. 0: always top_k experts.
  float top_p = 0.0f;
  bool renormalize = true;
  float renormalize_epsilon = 0.0f;  // DeepSeek-V3 adds 1e-20 to the sum
  std::int64_t n_group = 1;          // group-limited top-k (1: no groups)
  std::int64_t topk_group = 1;
  float scaling = 1.0f;  // routed_scaling_factor
  // Node-limited routing (docs/topology.md): each token's experts come from
  // at most `max_nodes` nodes, the nodes whose best `node_score_experts`
  // selection scores sum highest. Applied after the group limit, whose groups
  // must then each lie on one node. max_nodes = 0: no node limit.
  std::vector<std::int32_t> expert_node{};  // [num_experts] the node holding each expert (expert_nodes())
  std::int64_t max_nodes = 0;
  std::int64_t node_score_experts = 2;  // s; 1: a node scores as its best expert
  // Cost-aware routing: subtracted from each expert's selection score (after
  // the selection bias), never from its weight. [num_experts] or empty. It
  // prices links from one rank, so it differs between ranks
  // (link_penalty()).
  std::vector<float> selection_penalty{};
  // The topology loss's price of each expert from this rank ([num_experts]
  // in [0, 1], link_cost()): the modelled time of one row to the expert's
  // owner over that on the dearest link. Used only by the topology loss
  // (MoeLayerOptions::topology_loss_coef), never by selection. Empty: none.
  std::vector<float> link_cost{};

  /// Throws Error(kInvalidArgument) naming the offending field.
  void validate() const;
};

/// Each token's chosen experts and their weights, plus per-expert counts.
/// Slot `t * top_k + j` is the j-th choice of token t. With top-p routing a
/// token may use fewer than top_k slots: its unused ones hold expert -1 and
/// weight 0, after the used ones.
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

/// One limit on the groups a token's experts may come from: DeepSeek-V3's
/// expert groups or the nodes of node-limited routing. A group scores as the
/// sum of its best `score_experts` selection scores; experts outside the best
/// `limit` groups (ties toward the lower group index) are excluded.
struct GroupLimit {
  std::vector<std::int32_t> group_of;  // [E]
  std::vector<std::int32_t> members;   // [E] experts by group, ascending within one
  std::vector<std::int32_t> begin;     // [num_groups + 1] each group's first place in members
  std::int64_t limit = 0;              // 0: this limit is off
  std::int64_t score_experts = 0;

  std::int64_t num_groups() const { return static_cast<std::int64_t>(begin.size()) - 1; }
};

/// route()'s per-token working space, sized once for a router, and the
/// router's group and node limits in the form route() applies them.
struct RouterScratch {
  std::vector<float> scores, choice, group_scores;  // [E], [E], [most groups]
  std::vector<std::int32_t> group_top, groups;      // [most score_experts], [most limit]
  std::vector<char> keep;                           // [most groups]
  std::vector<float> group_values;                  // [largest group]
  GroupLimit group_limit, node_limit;               // n_group/topk_group; expert_node/max_nodes

  RouterScratch() = default;
  explicit RouterScratch(const RouterConfig& config);
};

/// Routes `num_tokens` rows of `logits` ([num_tokens, num_experts]).
/// `selection_bias` ([num_experts] or nullptr) is added to the scores for
/// selection only (DeepSeek-V3's e_score_correction_bias), and
/// `config.selection_penalty` subtracted. Experts of groups (then nodes) that
/// are not selected are excluded with -inf, as DeepSeek's reference does.
/// Ties are broken toward the lower expert (group, node) index.
/// Allocates nothing when `plan` is reserved for `num_tokens` and `scratch`
/// was made for `config`; the overload without scratch makes its own.
void route(const RouterConfig& config, const float* logits, const float* selection_bias, std::int64_t num_tokens,
           RoutingPlan* plan, RouterScratch* scratch);
void route(const RouterConfig& config, const float* logits, const float* selection_bias, std::int64_t num_tokens,
           RoutingPlan* plan);

}  // namespace switchyard::layers
