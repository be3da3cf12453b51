// Node-limited and cost-aware routing: against a reference written from the
// definitions (float, the same operations, so equal bit for bit), exhaustive
// small cases that never exceed the node limit, DeepSeek-V3's group limit as
// a node limit, and the link penalty's effect on inter-node traffic.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../support/config_json.hpp"
#include "../support/random_values.hpp"
#include "switchyard/comm/topology.hpp"
#include "switchyard/formats/model_config.hpp"
#include "switchyard/kernels/routing_math.hpp"
#include "switchyard/layers/exchange_choice.hpp"
#include "switchyard/layers/router.hpp"
#include "switchyard/layers/topology_routing.hpp"
#include "switchyard/runtime/error.hpp"

namespace {

using switchyard::Error;
using switchyard::comm::LinkClass;
using switchyard::comm::LinkCost;
using switchyard::comm::Topology;
using namespace switchyard::layers;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------
// The reference, from the definitions: one token at a time, plain loops and
// stable sorts (ties to the lower index).

// Indices of v, largest first, ties to the lower index.
std::vector<int> by_value(const std::vector<float>& v) {
  std::vector<int> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return v[a] > v[b]; });
  return order;
}

// Keeps the `limit` groups whose best `s` values of `choice` sum highest.
void ref_limit(const std::vector<int>& group_of, int limit, int s, std::vector<float>* choice) {
  const int G = *std::max_element(group_of.begin(), group_of.end()) + 1;
  std::vector<float> group_score(G);
  for (int g = 0; g < G; ++g) {
    std::vector<float> members;
    for (std::size_t e = 0; e < group_of.size(); ++e)
      if (group_of[e] == g) members.push_back((*choice)[e]);
    std::sort(members.begin(), members.end(), std::greater<float>());
    float sum = members[0];
    for (int j = 1; j < s; ++j) sum += members[j];
    group_score[g] = sum;
  }
  std::vector<int> order = by_value(group_score);
  std::vector<bool> kept(G, false);
  for (int j = 0; j < limit; ++j) kept[order[j]] = true;
  for (std::size_t e = 0; e < group_of.size(); ++e)
    if (!kept[group_of[e]]) (*choice)[e] = kNegInf;
}

struct RefOut {
  std::vector<std::int32_t> idx;
  std::vector<float> w;
};

RefOut ref_route(const RouterConfig& c, const float* logits, const float* bias) {
  const int E = static_cast<int>(c.num_experts), K = static_cast<int>(c.top_k);
  std::vector<float> score(logits, logits + E), choice(E);
  if (c.score == ScoreFunction::kSoftmax) {
    switchyard::kernels::softmax_rows(score.data(), 1, E);
  } else {
    switchyard::kernels::sigmoid(score.data(), E);
  }
  for (int e = 0; e < E; ++e) {
    choice[e] = score[e] + (bias ? bias[e] : 0.0f);
    if (!c.selection_penalty.empty()) choice[e] -= c.selection_penalty[e];
  }
  if (c.n_group > 1) {
    std::vector<int> group_of(E);
    for (int e = 0; e < E; ++e) group_of[e] = e / (E / static_cast<int>(c.n_group));
    ref_limit(group_of, static_cast<int>(c.topk_group), 2, &choice);
  }
  if (c.max_nodes > 0) {
    const std::vector<int> node_of(c.expert_node.begin(), c.expert_node.end());
    ref_limit(node_of, static_cast<int>(c.max_nodes), static_cast<int>(c.node_score_experts), &choice);
  }
  RefOut r;
  std::vector<int> order = by_value(choice);
  float sum = 0.0f;
  for (int j = 0; j < K; ++j) {
    r.idx.push_back(order[j]);
    r.w.push_back(score[order[j]]);
    sum += score[order[j]];
  }
  for (float& w : r.w) {
    if (c.renormalize) w /= sum + c.renormalize_epsilon;
    w *= c.scaling;
  }
  return r;
}

// Routes `logits` ([T, E]) and expects the reference's experts and weights,
// bit for bit. Returns the plan.
RoutingPlan expect_matches_reference(const RouterConfig& c, const std::vector<float>& logits, const float* bias) {
  const std::int64_t E = c.num_experts, K = c.top_k, T = static_cast<std::int64_t>(logits.size()) / E;
  RoutingPlan plan;
  route(c, logits.data(), bias, T, &plan);
  int failures = 0;
  for (std::int64_t t = 0; t < T && failures < 5; ++t) {
    const RefOut ref = ref_route(c, logits.data() + t * E, bias);
    for (std::int64_t j = 0; j < K; ++j) {
      if (plan.expert_idx[t * K + j] != ref.idx[j] || plan.weights[t * K + j] != ref.w[j]) {
        ADD_FAILURE() << "token " << t << " choice " << j << ": got expert " << plan.expert_idx[t * K + j] << " weight "
                      << plan.weights[t * K + j] << ", want " << ref.idx[j] << " weight " << ref.w[j];
        ++failures;
        break;
      }
    }
  }
  return plan;
}

using switchyard::test_support::uniform;

// Under a sanitizer the exhaustive test takes every 7th ordering: the same
// code paths at a seventh of a cost the instrumentation multiplies by six.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr std::int64_t kOrderingStride = 7;
#else
constexpr std::int64_t kOrderingStride = 1;
#endif

// Every ordering of `pattern` (every kOrderingStride-th one), one token per ordering.
std::vector<float> all_orderings(std::vector<float> pattern) {
  std::sort(pattern.begin(), pattern.end());
  std::vector<float> out;
  std::int64_t n = 0;
  do {
    if (n++ % kOrderingStride == 0) out.insert(out.end(), pattern.begin(), pattern.end());
  } while (std::next_permutation(pattern.begin(), pattern.end()));
  return out;
}

Topology priced_nodes(int num_ranks, int ranks_per_node) {
  Topology t = switchyard::comm::virtual_nodes(num_ranks, ranks_per_node);
  t.cost(LinkClass::kSelf) = LinkCost{.latency_s = 0.0, .bandwidth_bytes_per_s = 1e10, .probe = {}};
  t.cost(LinkClass::kSameNode) = LinkCost{.latency_s = 1e-6, .bandwidth_bytes_per_s = 5e9, .probe = {}};
  if (t.num_nodes() > 1)
    t.cost(LinkClass::kOtherNode) = LinkCost{.latency_s = 1e-5, .bandwidth_bytes_per_s = 1e9, .probe = {}};
  return t;
}

// ---------------------------------------------------------------------------
// Node-limited routing.

// E = 8 experts on R = 4 ranks (2 each), on 2 or 4 nodes: every ordering of
// three logit patterns (distinct, with ties, with a dominant expert), every
// feasible M, s and top_k, softmax and sigmoid, with and without bias and
// renormalisation. Never more than M nodes, and bit for bit the reference.
TEST(NodeLimited, ExhaustiveSmallCasesStayWithinMaxNodes) {
  const ExpertPlacement placement(8, 4);
  const std::vector<std::vector<float>> patterns = {{-1.5f, -0.75f, -0.25f, 0.0f, 0.5f, 1.0f, 1.25f, 2.0f},
                                                    {-1.0f, -1.0f, 0.0f, 0.0f, 0.5f, 0.5f, 2.0f, 2.0f},
                                                    {-2.0f, -2.0f, -2.0f, -1.0f, -1.0f, 0.0f, 0.0f, 4.0f}};
  const std::vector<float> bias = {0.05f, -0.1f, 0.0f, 0.2f, -0.05f, 0.1f, 0.0f, -0.2f};
  int configs = 0;
  for (int ranks_per_node : {2, 1}) {
    const std::vector<std::int32_t> nodes = expert_nodes(placement, priced_nodes(4, ranks_per_node));
    const int num_nodes = 4 / ranks_per_node, node_size = 8 / num_nodes;
    for (const auto& pattern : patterns) {
      const std::vector<float> logits = all_orderings(pattern);
      for (int M = 1; M <= num_nodes; ++M)
        for (int s = 1; s <= 2; ++s)
          for (int K = 1; K <= std::min(4, M * node_size); ++K)
            for (auto score : {ScoreFunction::kSoftmax, ScoreFunction::kSigmoid})
              for (bool renormalize : {true, false})
                for (const float* b : {static_cast<const float*>(nullptr), bias.data()}) {
                  RouterConfig c{.score = score, .num_experts = 8, .top_k = K, .renormalize = renormalize};
                  c.expert_node = nodes;
                  c.max_nodes = M;
                  c.node_score_experts = s;
                  c.validate();
                  SCOPED_TRACE("nodes " + std::to_string(num_nodes) + " M " + std::to_string(M) + " s " +
                               std::to_string(s) + " K " + std::to_string(K));
                  const RoutingPlan plan = expect_matches_reference(c, logits, b);
                  for (std::int64_t t = 0; t < plan.num_tokens; ++t) {
                    std::set<int> used;
                    for (std::int64_t j = 0; j < K; ++j) used.insert(nodes[plan.expert_idx[t * K + j]]);
                    ASSERT_LE(static_cast<int>(used.size()), M) << "token " << t;
                  }
                  ++configs;
                }
    }
  }
  EXPECT_GT(configs, 300);
}

// s = 1 scores a node by its best expert, s = 2 by its best two: a node with
// one strong expert wins the first, a node with two good ones the second.
TEST(NodeLimited, ScoreExpertsChoosesTheNodeByHand) {
  // Sigmoid scores, no bias: node 0 = {0.9, 0.1}, node 1 = {0.6, 0.6}.
  auto logit = [](double p) { return static_cast<float>(std::log(p / (1.0 - p))); };
  const std::vector<float> logits = {logit(0.9), logit(0.1), logit(0.6), logit(0.6)};
  RouterConfig c{.score = ScoreFunction::kSigmoid, .num_experts = 4, .top_k = 2, .renormalize = false};
  c.expert_node = {0, 0, 1, 1};
  c.max_nodes = 1;
  c.node_score_experts = 1;
  RoutingPlan plan;
  route(c, logits.data(), nullptr, 1, &plan);
  EXPECT_EQ(plan.expert_idx, (std::vector<std::int32_t>{0, 1}));  // 0.9 > 0.6
  c.node_score_experts = 2;
  route(c, logits.data(), nullptr, 1, &plan);
  EXPECT_EQ(plan.expert_idx, (std::vector<std::int32_t>{2, 3}));  // 1.2 > 1.0
  EXPECT_NEAR(plan.weights[0], 0.6, 1e-6);                        // weights stay the scores
}

// Node ids need not follow expert order: a scattered map matches the reference.
TEST(NodeLimited, ScatteredNodesMatchReference) {
  RouterConfig c{.score = ScoreFunction::kSoftmax, .num_experts = 12, .top_k = 4};
  c.expert_node = {2, 0, 1, 2, 0, 1, 1, 2, 0, 0, 2, 1};
  c.max_nodes = 2;
  c.node_score_experts = 3;
  c.validate();
  expect_matches_reference(c, uniform(12 * 3000, -3.0f, 3.0f, 7), nullptr);
}

// DeepSeek-V3: 8 groups of 32 experts on 8 virtual nodes of one rank each, M =
// topk_group = 4, s = 2: the node limit reproduces the group limit bit for bit.
TEST(NodeLimited, ReproducesDeepSeekV3GroupLimit) {
  using switchyard::test::config_json;
  for (const std::string extra :
       {"", "\"norm_topk_prob\": false",
        "\"n_routed_experts\": 16, \"n_group\": 4, \"topk_group\": 2, \"num_experts_per_tok\": 3"}) {
    SCOPED_TRACE(extra);
    const RouterConfig groups = switchyard::formats::router_config(
        switchyard::formats::parse_model_config(config_json("deepseek_v3", extra), "test"));
    ASSERT_GT(groups.n_group, 1);
    const int R = static_cast<int>(groups.n_group);
    RouterConfig nodes = groups;
    nodes.n_group = 1;
    nodes.topk_group = 1;
    apply_topology_routing({.max_nodes = groups.topk_group, .node_score_experts = 2},
                           ExpertPlacement(groups.num_experts, R), switchyard::comm::virtual_nodes(R, 1), 0, 64,
                           &nodes);
    RouterConfig unlimited = nodes;
    unlimited.max_nodes = 0;
    const std::int64_t E = groups.num_experts, T = 2000;
    const std::vector<float> logits = uniform(static_cast<std::size_t>(T * E), -4.0f, 4.0f, 11 + E);
    const std::vector<float> bias = uniform(static_cast<std::size_t>(E), -0.1f, 0.1f, 12);
    for (const float* b : {static_cast<const float*>(nullptr), bias.data()}) {
      RoutingPlan a, n, u;
      route(groups, logits.data(), b, T, &a);
      route(nodes, logits.data(), b, T, &n);
      route(unlimited, logits.data(), b, T, &u);
      EXPECT_EQ(a.expert_idx, n.expert_idx);
      EXPECT_EQ(a.weights, n.weights);  // bitwise: float == float
      EXPECT_EQ(a.expert_counts, n.expert_counts);
      EXPECT_NE(a.expert_idx, u.expert_idx) << "the limit should change some token's experts";
    }
    expect_matches_reference(nodes, logits, bias.data());
  }
}

// Groups and nodes together: groups nested in nodes, the group limit first.
TEST(NodeLimited, CombinesWithNestedGroups) {
  RouterConfig c{.score = ScoreFunction::kSigmoid,
                 .num_experts = 16,
                 .top_k = 3,
                 .renormalize_epsilon = 1e-20f,
                 .n_group = 8,
                 .topk_group = 4,
                 .scaling = 2.5f};
  c.expert_node = expert_nodes(ExpertPlacement(16, 4), switchyard::comm::virtual_nodes(4, 1));
  c.max_nodes = 2;
  c.validate();
  const std::vector<float> logits = uniform(16 * 3000, -3.0f, 3.0f, 21);
  const std::vector<float> bias = uniform(16, -0.1f, 0.1f, 22);
  const RoutingPlan plan = expect_matches_reference(c, logits, bias.data());
  for (std::int64_t t = 0; t < plan.num_tokens; ++t) {
    std::set<int> nodes, groups;
    for (std::int64_t j = 0; j < 3; ++j) {
      nodes.insert(c.expert_node[plan.expert_idx[t * 3 + j]]);
      groups.insert(plan.expert_idx[t * 3 + j] / 2);
    }
    ASSERT_LE(nodes.size(), 2u);
    ASSERT_LE(groups.size(), 4u);
  }
}

TEST(NodeLimited, RefusesBadConfigurations) {
  auto base = [] {
    RouterConfig c{.score = ScoreFunction::kSoftmax, .num_experts = 8, .top_k = 2};
    c.expert_node = {0, 0, 0, 0, 1, 1, 1, 1};
    c.max_nodes = 1;
    return c;
  };
  auto refused = [](const RouterConfig& c, const std::string& field) {
    try {
      c.validate();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
      return true;
    }
    return false;
  };
  EXPECT_NO_THROW(base().validate());
  RouterConfig c = base();
  c.max_nodes = 3;
  EXPECT_TRUE(refused(c, "max_nodes"));
  c = base();
  c.expert_node.pop_back();
  EXPECT_TRUE(refused(c, "expert_node"));
  c = base();
  c.expert_node = {0, 0, 0, 0, 2, 2, 2, 2};
  EXPECT_TRUE(refused(c, "expert_node"));
  c = base();
  c.node_score_experts = 5;
  EXPECT_TRUE(refused(c, "node_score_experts"));
  c = base();
  c.top_k = 5;
  EXPECT_TRUE(refused(c, "top_k"));
  c = base();
  c.expert_node = {0, 1, 0, 1, 0, 1, 0, 1};
  c.n_group = 4;
  c.topk_group = 2;
  EXPECT_TRUE(refused(c, "group 0 spans nodes"));
  c = base();
  c.selection_penalty = {1.0f};
  EXPECT_TRUE(refused(c, "selection_penalty"));
  c = base();
  c.link_cost.assign(static_cast<std::size_t>(c.num_experts), 0.5f);
  c.link_cost[3] = -0.1f;
  EXPECT_TRUE(refused(c, "link_cost[3] must be finite and >= 0"));
}

// ---------------------------------------------------------------------------
// The helpers that read a topology.

TEST(TopologyRouting, ExpertNodesFollowTheOwnerRank) {
  // 10 experts on 4 ranks: 3, 3, 2, 2; ranks 0-1 on node 0, 2-3 on node 1.
  const ExpertPlacement placement(10, 4);
  EXPECT_EQ(expert_nodes(placement, switchyard::comm::virtual_nodes(4, 2)),
            (std::vector<std::int32_t>{0, 0, 0, 0, 0, 0, 1, 1, 1, 1}));
  const std::vector<int> node_of_rank = {1, 0, 1, 0};
  EXPECT_EQ(expert_nodes(placement, node_of_rank), (std::vector<std::int32_t>{1, 1, 1, 0, 0, 0, 1, 1, 0, 0}));
  EXPECT_THROW(expert_nodes(placement, std::vector<int>{0, 0}), Error);
}

TEST(TopologyRouting, LinkPenaltyByHand) {
  // Row of 1000 bytes: self 1e-7 s, same node 1e-6 + 2e-7 s, other node 1e-5 + 1e-6 s.
  const ExpertPlacement placement(8, 4);
  const Topology t = priced_nodes(4, 2);
  const std::vector<float> p = link_penalty(placement, t, 1, 1000, 2.0);
  const double self = 2.0 * 1e-7 / 1.1e-5, same = 2.0 * 1.2e-6 / 1.1e-5;
  const std::vector<double> want = {same, same, self, self, 2.0, 2.0, 2.0, 2.0};
  for (int e = 0; e < 8; ++e) EXPECT_NEAR(p[e], want[e], 1e-6) << "expert " << e;
  EXPECT_THROW(link_penalty(placement, t, 0, 1000, -1.0), Error);
  EXPECT_THROW(link_penalty(placement, t, 4, 1000, 1.0), Error);
  EXPECT_THROW(link_penalty(placement, switchyard::comm::virtual_nodes(4, 2), 0, 1000, 1.0), Error);  // no costs
}

TEST(TopologyRouting, TopologyLossPricesEveryExpertFromThisRank) {
  // link_cost is the penalty of lambda 1, whatever the link penalty; only the
  // topology loss sets it.
  const ExpertPlacement placement(8, 4);
  const Topology t = priced_nodes(4, 2);
  const auto base = [] { return RouterConfig{.score = ScoreFunction::kSoftmax, .num_experts = 8, .top_k = 2}; };
  RouterConfig plain = base();
  apply_topology_routing({.link_penalty = 0.5}, placement, t, 1, 1000, &plain);
  EXPECT_TRUE(plain.link_cost.empty());
  RouterConfig c = base();
  apply_topology_routing({.link_penalty = 0.5, .topology_loss = 0.2}, placement, t, 1, 1000, &c);
  const double self = 1e-7 / 1.1e-5, same = 1.2e-6 / 1.1e-5;
  const std::vector<double> want = {same, same, self, self, 1.0, 1.0, 1.0, 1.0};
  ASSERT_EQ(c.link_cost.size(), want.size());
  for (int e = 0; e < 8; ++e) {
    EXPECT_NEAR(c.link_cost[e], want[e], 1e-6) << "expert " << e;
    EXPECT_NEAR(c.selection_penalty[e], 0.5 * want[e], 1e-6) << "expert " << e;
  }
  RouterConfig no_costs = base();
  try {
    apply_topology_routing({.topology_loss = 0.2}, placement, switchyard::comm::virtual_nodes(4, 2), 0, 1000,
                           &no_costs);
    ADD_FAILURE() << "a topology without link costs was accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(std::string(e.what()).starts_with("topology loss: the topology has no cost for the")) << e.what();
  }
  EXPECT_THROW(apply_topology_routing({.topology_loss = -1.0}, placement, t, 0, 1000, &no_costs), Error);
}

// ---------------------------------------------------------------------------
// Cost-aware routing.

TEST(CostAware, ZeroLambdaIsPlainRouting) {
  const ExpertPlacement placement(16, 4);
  const std::vector<float> logits = uniform(16 * 1000, -3.0f, 3.0f, 31);
  const std::vector<float> bias = uniform(16, -0.1f, 0.1f, 32);
  for (auto score : {ScoreFunction::kSoftmax, ScoreFunction::kSigmoid}) {
    const RouterConfig plain{.score = score, .num_experts = 16, .top_k = 4};
    RouterConfig priced = plain;
    priced.selection_penalty = link_penalty(placement, priced_nodes(4, 2), 2, 4096, 0.0);
    RouterConfig applied = plain;
    apply_topology_routing({}, placement, priced_nodes(4, 2), 2, 4096, &applied);
    EXPECT_TRUE(applied.selection_penalty.empty() && applied.max_nodes == 0);
    RoutingPlan a, b;
    route(plain, logits.data(), bias.data(), 1000, &a);
    route(priced, logits.data(), bias.data(), 1000, &b);
    EXPECT_EQ(a.expert_idx, b.expert_idx);
    EXPECT_EQ(a.weights, b.weights);
  }
}

// On a fixed input, the token copies that leave the node never grow with
// lambda, and a large lambda keeps every copy on the node; the weights stay
// the unpenalised scores (the reference weighs with the scores).
TEST(CostAware, InterNodeCopiesNonIncreasingInLambda) {
  const ExpertPlacement placement(16, 4);
  const Topology topology = priced_nodes(4, 2);
  const std::vector<std::int32_t> nodes = expert_nodes(placement, topology);
  const std::vector<float> logits = uniform(16 * 2000, -3.0f, 3.0f, 41);
  const std::vector<float> bias = uniform(16, -0.1f, 0.1f, 42);
  for (auto score : {ScoreFunction::kSoftmax, ScoreFunction::kSigmoid})
    for (int rank = 0; rank < 4; ++rank) {
      const int my_node = topology.ranks[rank].node;
      std::int64_t previous = std::numeric_limits<std::int64_t>::max(), first = -1, last = -1;
      for (double lambda : {0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.5, 1.0, 2.0}) {
        RouterConfig c{.score = score, .num_experts = 16, .top_k = 4, .renormalize = score == ScoreFunction::kSigmoid};
        c.selection_penalty = link_penalty(placement, topology, rank, 4096, lambda);
        const RoutingPlan plan =
            expect_matches_reference(c, logits, score == ScoreFunction::kSigmoid ? bias.data() : nullptr);
        std::int64_t inter_node = 0;
        for (auto e : plan.expert_idx) inter_node += nodes[e] != my_node;
        EXPECT_LE(inter_node, previous) << "rank " << rank << " lambda " << lambda;
        previous = inter_node;
        if (first < 0) first = inter_node;
        last = inter_node;
      }
      EXPECT_GT(first, 0);
      EXPECT_EQ(last, 0) << "lambda 2 should keep all 4 choices among the node's 8 experts";
    }
}

TEST(CostAware, WeightsAreTheUnpenalisedScores) {
  // Sigmoid, no renormalisation, scaling 1: each weight is its expert's sigmoid.
  RouterConfig c{.score = ScoreFunction::kSigmoid, .num_experts = 8, .top_k = 2, .renormalize = false};
  c.selection_penalty = {0.0f, 0.0f, 0.0f, 0.0f, 0.5f, 0.5f, 0.5f, 0.5f};
  const std::vector<float> logits = {0.1f, 0.2f, 0.3f, 0.4f, 2.0f, 3.0f, 0.0f, 0.0f};
  RoutingPlan plan;
  route(c, logits.data(), nullptr, 1, &plan);
  // Penalised: 0.5 + ... experts 4, 5 score 0.881 and 0.953, less 0.5 each:
  // below expert 3's 0.599 and expert 2's 0.574.
  EXPECT_EQ(plan.expert_idx, (std::vector<std::int32_t>{3, 2}));
  EXPECT_NEAR(plan.weights[0], 1.0 / (1.0 + std::exp(-0.4)), 1e-7);
  EXPECT_NEAR(plan.weights[1], 1.0 / (1.0 + std::exp(-0.3)), 1e-7);
  c.selection_penalty[5] = 0.1f;  // 0.953 - 0.1 = 0.853 wins, weighted 0.953
  route(c, logits.data(), nullptr, 1, &plan);
  EXPECT_EQ(plan.expert_idx[0], 5);
  EXPECT_NEAR(plan.weights[0], 1.0 / (1.0 + std::exp(-3.0)), 1e-7);
}

// Scratch made for the router: routing with node limit and penalty allocates
// nothing beyond the plan's reserved vectors (their capacity does not move).
TEST(CostAware, ReservedRoutingKeepsItsBuffers) {
  RouterConfig c{.score = ScoreFunction::kSigmoid, .num_experts = 16, .top_k = 3, .n_group = 8, .topk_group = 4};
  apply_topology_routing({.max_nodes = 2, .node_score_experts = 2, .link_penalty = 0.3}, ExpertPlacement(16, 4),
                         priced_nodes(4, 1), 1, 1024, &c);
  RouterScratch scratch(c);
  RoutingPlan plan;
  plan.reserve(100, 3, 16);
  const std::int32_t* data = plan.expert_idx.data();
  const std::vector<float> logits = uniform(16 * 100, -3.0f, 3.0f, 51);
  route(c, logits.data(), nullptr, 100, &plan, &scratch);
  EXPECT_EQ(plan.expert_idx.data(), data);
  expect_matches_reference(c, logits, nullptr);
}

}  // namespace

// The exchange forecast on 2 nodes of 2 ranks, one expert a rank, top-2, 100
// tokens a rank of 1000-byte rows, crossing nodes at 1e8 B/s, within at 1e9:
// a token reaches a given rank with chance 1/2 (50 rows a peer) and a given
// node with 5/6 (83 rows). Flat: 2 × 50 kB across + 50 kB within = 1.05 ms.
// Hierarchical: 83 kB across (0.83 ms), then each forwarder passes its own
// and one other sender's rows to its node mate: 100 kB within (0.1 ms).
TEST(ExchangeForecast, HierarchicalSavesBytesUntilRoundsCostMore) {
  using switchyard::comm::LinkClass;
  switchyard::comm::Topology t = switchyard::comm::virtual_nodes(4, 2);
  t.cost(LinkClass::kSelf) = switchyard::comm::LinkCost{0.0, 1e15, {}};
  t.cost(LinkClass::kSameNode) = switchyard::comm::LinkCost{0.0, 1e9, {}};
  t.cost(LinkClass::kOtherNode) = switchyard::comm::LinkCost{0.0, 1e8, {}};
  const ExpertPlacement placement(4, 4);
  const switchyard::layers::ExchangeForecast f = switchyard::layers::forecast_exchange(t, placement, 100, 2, 1000);
  ASSERT_TRUE(f.flat_s && f.hierarchical_s);
  EXPECT_NEAR(*f.flat_s, 1.05e-3, 1e-6);
  EXPECT_NEAR(*f.hierarchical_s, 0.93e-3, 1e-6);
  EXPECT_EQ(f.better(), switchyard::layers::ExchangeKind::kHierarchical);
  // A round costs 0.2 ms: flat pays one, hierarchical two.
  t.round_s = 2e-4;
  const switchyard::layers::ExchangeForecast g = switchyard::layers::forecast_exchange(t, placement, 100, 2, 1000);
  EXPECT_NEAR(*g.flat_s, 1.25e-3, 1e-6);
  EXPECT_NEAR(*g.hierarchical_s, 1.33e-3, 1e-6);
  EXPECT_EQ(g.better(), switchyard::layers::ExchangeKind::kFlat);
  // Without link costs there is nothing to compare: flat.
  EXPECT_EQ(
      switchyard::layers::forecast_exchange(switchyard::comm::virtual_nodes(4, 2), placement, 100, 2, 1000).better(),
      switchyard::layers::ExchangeKind::kFlat);
}
