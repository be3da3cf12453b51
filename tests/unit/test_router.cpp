// Routing of every architecture against an independent double-precision
// reference written from the Hugging Face transformers semantics, the router
// configuration built from config.json, and expert placement.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../support/config_json.hpp"
#include "../support/random_values.hpp"
#include "switchyard/formats/model_config.hpp"
#include "switchyard/kernels/routing_math.hpp"
#include "switchyard/layers/dispatch.hpp"
#include "switchyard/layers/router.hpp"
#include "switchyard/runtime/error.hpp"

namespace {

using switchyard::Error;
using switchyard::ErrorCode;
using switchyard::test::config_json;
using namespace switchyard::layers;
using namespace switchyard::formats;

// ---------------------------------------------------------------------------
// The reference.

// What the reference needs to know, kept apart from RouterConfig so that a
// wrong RouterConfig is caught too.
struct RefSpec {
  bool sigmoid = false;  // deepseek_v3
  int num_experts = 0;
  int top_k = 0;
  bool renormalize = true;
  int n_group = 1;
  int topk_group = 1;
  double scaling = 1.0;
};

struct RefRoute {
  std::vector<int> idx;
  std::vector<double> w;
  // A near tie (values that differ by less than float noise) decides the
  // selection or its order, so float and double may legitimately disagree.
  bool ambiguous = false;
};

// Indices sorted by value, largest first; equal values keep the lower index first.
std::vector<int> sorted_desc(const std::vector<double>& v) {
  std::vector<int> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return v[a] > v[b]; });
  return order;
}

// True if v[a] and v[b] differ but by less than `tol` (a near, inexact tie).
bool near_tie(double a, double b, double tol) { return a != b && std::abs(a - b) < tol; }

RefRoute reference_route(const RefSpec& s, const float* logits, const float* bias) {
  const int E = s.num_experts;
  RefRoute r;
  const double kTol = 1e-5;
  if (!s.sigmoid) {
    // softmax over all experts (max-subtracted), top-k of the probabilities.
    double m = -std::numeric_limits<double>::infinity();
    for (int e = 0; e < E; ++e) m = std::max(m, static_cast<double>(logits[e]));
    std::vector<double> p(E);
    double sum = 0.0;
    for (int e = 0; e < E; ++e) sum += (p[e] = std::exp(static_cast<double>(logits[e]) - m));
    for (int e = 0; e < E; ++e) p[e] /= sum;
    std::vector<int> order = sorted_desc(p);
    for (int j = 0; j < s.top_k && j + 1 < E; ++j)
      if (near_tie(logits[order[j]], logits[order[j + 1]], kTol)) r.ambiguous = true;
    double wsum = 0.0;
    for (int j = 0; j < s.top_k; ++j) {
      r.idx.push_back(order[j]);
      r.w.push_back(p[order[j]]);
      wsum += p[order[j]];
    }
    if (s.renormalize)
      for (double& w : r.w) w /= wsum;
    return r;
  }
  // deepseek_v3: sigmoid scores; biased choice values for selection only.
  std::vector<double> score(E), choice(E);
  for (int e = 0; e < E; ++e) {
    score[e] = 1.0 / (1.0 + std::exp(-static_cast<double>(logits[e])));
    choice[e] = score[e] + (bias ? static_cast<double>(bias[e]) : 0.0);
  }
  const int per_group = E / s.n_group;
  std::vector<double> group_score(s.n_group);
  for (int g = 0; g < s.n_group; ++g) {
    std::vector<double> members(choice.begin() + g * per_group, choice.begin() + (g + 1) * per_group);
    std::sort(members.begin(), members.end(), std::greater<double>());
    group_score[g] = members[0] + members[1];
  }
  std::vector<int> group_order = sorted_desc(group_score);
  if (s.topk_group < s.n_group &&
      near_tie(group_score[group_order[s.topk_group - 1]], group_score[group_order[s.topk_group]], kTol))
    r.ambiguous = true;
  std::vector<double> masked(E, -std::numeric_limits<double>::infinity());
  for (int j = 0; j < s.topk_group; ++j) {
    const int g = group_order[j];
    for (int e = g * per_group; e < (g + 1) * per_group; ++e) masked[e] = choice[e];
  }
  std::vector<int> order = sorted_desc(masked);
  for (int j = 0; j < s.top_k && j + 1 < E; ++j)
    if (near_tie(masked[order[j]], masked[order[j + 1]], kTol)) r.ambiguous = true;
  double wsum = 0.0;
  for (int j = 0; j < s.top_k; ++j) {
    r.idx.push_back(order[j]);
    r.w.push_back(score[order[j]]);
    wsum += score[order[j]];
  }
  for (double& w : r.w) {
    if (s.renormalize) w /= (wsum + 1e-20);
    w *= s.scaling;
  }
  return r;
}

// ---------------------------------------------------------------------------
// Helpers.

RouterConfig router_from_json(const std::string& json) { return router_config(parse_model_config(json, "test")); }

bool weight_close(double got, double want) { return std::abs(got - want) <= 1e-6 * std::abs(want) + 1e-12; }

// Checks the basic shape of a plan and that expert_counts is the histogram of
// expert_idx.
void expect_plan_consistent(const RoutingPlan& plan, std::int64_t T, std::int64_t k, std::int64_t E) {
  EXPECT_EQ(plan.num_tokens, T);
  EXPECT_EQ(plan.top_k, k);
  EXPECT_EQ(plan.num_experts, E);
  ASSERT_EQ(plan.expert_idx.size(), static_cast<std::size_t>(T * k));
  ASSERT_EQ(plan.weights.size(), static_cast<std::size_t>(T * k));
  ASSERT_EQ(plan.expert_counts.size(), static_cast<std::size_t>(E));
  std::vector<std::int64_t> hist(E, 0);
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int32_t e = plan.expert_idx[t * k + j];
      if (j > 0 && e < 0) {  // a top-p token's unused slots: after the used ones, weight 0
        EXPECT_EQ(e, -1);
        EXPECT_EQ(plan.weights[t * k + j], 0.0f);
        if (j + 1 < k) EXPECT_LT(plan.expert_idx[t * k + j + 1], 0) << "token " << t << ": used slot after unused";
        continue;
      }
      ASSERT_GE(e, 0);
      ASSERT_LT(e, E);
      ++hist[e];
      for (std::int64_t j2 = 0; j2 < j; ++j2) EXPECT_NE(plan.expert_idx[t * k + j2], e) << "token " << t;
    }
  }
  EXPECT_EQ(plan.expert_counts, hist);
}

// Routes and compares every token with the reference. Returns the number of
// tokens skipped as ambiguous.
int route_and_compare(const RouterConfig& cfg, const RefSpec& spec, const std::vector<float>& logits, const float* bias,
                      std::int64_t T) {
  RoutingPlan plan;
  route(cfg, logits.data(), bias, T, &plan);
  expect_plan_consistent(plan, T, spec.top_k, spec.num_experts);
  const int k = spec.top_k;
  int ambiguous = 0, failures = 0;
  for (std::int64_t t = 0; t < T && failures < 10; ++t) {
    const RefRoute ref = reference_route(spec, logits.data() + t * spec.num_experts, bias);
    if (ref.ambiguous) {
      ++ambiguous;
      continue;
    }
    for (int j = 0; j < k; ++j) {
      const std::int32_t got_e = plan.expert_idx[t * k + j];
      const float got_w = plan.weights[t * k + j];
      if (got_e != ref.idx[j] || !weight_close(got_w, ref.w[j])) {
        ++failures;
        ADD_FAILURE() << "token " << t << " choice " << j << ": got expert " << got_e << " weight " << got_w
                      << ", want expert " << ref.idx[j] << " weight " << ref.w[j];
        break;
      }
    }
  }
  return ambiguous;
}

using switchyard::test_support::uniform;

// The logit whose sigmoid is p.
float logit_of(double p) { return static_cast<float>(std::log(p / (1.0 - p))); }

struct Expected {
  std::vector<std::int32_t> idx;
  std::vector<double> w;
};

// Routes the rows of `logits` and checks them against hand-derived answers.
void expect_routing(const RouterConfig& cfg, const std::vector<float>& logits, const float* bias,
                    const std::vector<Expected>& want, const std::vector<std::int64_t>& want_counts = {}) {
  const auto T = static_cast<std::int64_t>(want.size());
  RoutingPlan plan;
  route(cfg, logits.data(), bias, T, &plan);
  expect_plan_consistent(plan, T, cfg.top_k, cfg.num_experts);
  for (std::int64_t t = 0; t < T; ++t) {
    ASSERT_EQ(want[t].idx.size(), static_cast<std::size_t>(cfg.top_k));
    for (std::int64_t j = 0; j < cfg.top_k; ++j) {
      EXPECT_EQ(plan.expert_idx[t * cfg.top_k + j], want[t].idx[j]) << "token " << t << " choice " << j;
      EXPECT_NEAR(plan.weights[t * cfg.top_k + j], want[t].w[j], 1e-6 * std::abs(want[t].w[j]) + 1e-7)
          << "token " << t << " choice " << j;
    }
  }
  if (!want_counts.empty()) {
    EXPECT_EQ(plan.expert_counts, want_counts);
  }
}

// ---------------------------------------------------------------------------
// Random logits against the reference.

struct RandomCase {
  std::string name;
  std::string json;
  RefSpec spec;
  bool with_bias = false;
  std::int64_t tokens = 0;
};

TEST(RouterRandom, EveryArchitectureMatchesReference) {
  std::vector<RandomCase> cases = {
      {"mixtral default (8 experts, top-2)", config_json("mixtral"), {false, 8, 2, true, 1, 1, 1.0}, false, 2000},
      {"mixtral 32 experts top-4",
       config_json("mixtral", "\"num_local_experts\": 32, \"num_experts_per_tok\": 4"),
       {false, 32, 4, true, 1, 1, 1.0},
       false,
       1000},
      {"qwen2_moe default (60 experts, top-4, no norm)",
       config_json("qwen2_moe"),
       {false, 60, 4, false, 1, 1, 1.0},
       false,
       1000},
      {"qwen2_moe norm_topk_prob",
       config_json("qwen2_moe", "\"norm_topk_prob\": true"),
       {false, 60, 4, true, 1, 1, 1.0},
       false,
       1000},
      {"qwen3_moe default (128 experts, top-8, no norm)",
       config_json("qwen3_moe"),
       {false, 128, 8, false, 1, 1, 1.0},
       false,
       500},
      {"qwen3_moe norm_topk_prob",
       config_json("qwen3_moe", "\"norm_topk_prob\": true"),
       {false, 128, 8, true, 1, 1, 1.0},
       false,
       500},
      {"qwen3_moe top-1",
       config_json("qwen3_moe", "\"num_experts\": 16, \"num_experts_per_tok\": 1"),
       {false, 16, 1, false, 1, 1, 1.0},
       false,
       1000},
      {"deepseek_v3 default (256 experts, 8 groups, top-4 groups, top-8)",
       config_json("deepseek_v3"),
       {true, 256, 8, true, 8, 4, 2.5},
       true,
       500},
      {"deepseek_v3 no norm",
       config_json("deepseek_v3", "\"norm_topk_prob\": false"),
       {true, 256, 8, false, 8, 4, 2.5},
       true,
       500},
      {"deepseek_v3 small",
       config_json("deepseek_v3",
                   "\"n_routed_experts\": 16, \"n_group\": 4, \"topk_group\": 2, \"num_experts_per_tok\": 3, "
                   "\"routed_scaling_factor\": 1.0"),
       {true, 16, 3, true, 4, 2, 1.0},
       true,
       2000},
      {"deepseek_v3 small, no bias",
       config_json("deepseek_v3",
                   "\"n_routed_experts\": 16, \"n_group\": 4, \"topk_group\": 2, \"num_experts_per_tok\": 3"),
       {true, 16, 3, true, 4, 2, 2.5},
       false,
       2000},
      {"deepseek_v3 one group, scaling 1.7, no norm",
       config_json("deepseek_v3",
                   "\"n_routed_experts\": 12, \"n_group\": 1, \"topk_group\": 1, \"num_experts_per_tok\": 5, "
                   "\"routed_scaling_factor\": 1.7, \"norm_topk_prob\": false"),
       {true, 12, 5, false, 1, 1, 1.7},
       true,
       2000},
      {"deepseek_v3 every group kept",
       config_json("deepseek_v3",
                   "\"n_routed_experts\": 24, \"n_group\": 3, \"topk_group\": 3, \"num_experts_per_tok\": 6"),
       {true, 24, 6, true, 3, 3, 2.5},
       true,
       1000},
  };
  for (const RandomCase& c : cases) {
    SCOPED_TRACE(c.name);
    const RouterConfig cfg = router_from_json(c.json);
    ASSERT_EQ(cfg.num_experts, c.spec.num_experts);
    ASSERT_EQ(cfg.top_k, c.spec.top_k);
    for (std::uint64_t seed : {1u, 2u, 3u}) {
      SCOPED_TRACE("seed " + std::to_string(seed));
      const std::vector<float> logits =
          uniform(static_cast<std::size_t>(c.tokens * c.spec.num_experts), -4.0f, 4.0f, seed);
      const std::vector<float> bias = uniform(static_cast<std::size_t>(c.spec.num_experts), -0.3f, 0.3f, seed + 100);
      const int ambiguous = route_and_compare(cfg, c.spec, logits, c.with_bias ? bias.data() : nullptr, c.tokens);
      EXPECT_LE(ambiguous, c.tokens / 100) << "too many near ties to be a meaningful comparison";
    }
  }
}

// Logits drawn from a handful of values, so most tokens hold exact ties
// (equal logits give bit-identical scores): the tie rule is exercised at
// random, for experts and for groups.
TEST(RouterRandom, ManyExactTies) {
  struct TieCase {
    std::string json;
    RefSpec spec;
    bool with_bias;
  };
  const std::vector<TieCase> cases = {
      {config_json("mixtral"), {false, 8, 2, true, 1, 1, 1.0}, false},
      {config_json("qwen3_moe", "\"num_experts\": 10, \"num_experts_per_tok\": 3"),
       {false, 10, 3, false, 1, 1, 1.0},
       false},
      {config_json("qwen2_moe", "\"num_experts\": 6, \"num_experts_per_tok\": 4, \"norm_topk_prob\": true"),
       {false, 6, 4, true, 1, 1, 1.0},
       false},
      {config_json("deepseek_v3",
                   "\"n_routed_experts\": 16, \"n_group\": 4, \"topk_group\": 2, \"num_experts_per_tok\": 3"),
       {true, 16, 3, true, 4, 2, 2.5},
       true},
      {config_json("deepseek_v3",
                   "\"n_routed_experts\": 12, \"n_group\": 6, \"topk_group\": 3, \"num_experts_per_tok\": 4"),
       {true, 12, 4, true, 6, 3, 2.5},
       false},
  };
  for (const TieCase& c : cases) {
    SCOPED_TRACE(c.json);
    const RouterConfig cfg = router_from_json(c.json);
    const std::int64_t T = 2000;
    const int E = c.spec.num_experts;
    std::mt19937_64 rng(42);
    std::uniform_int_distribution<int> level(-2, 2), coin(0, 1);
    std::vector<float> logits(static_cast<std::size_t>(T * E));
    for (float& x : logits) x = 0.5f * static_cast<float>(level(rng));
    std::vector<float> bias(static_cast<std::size_t>(E));
    for (float& b : bias) b = 0.125f * static_cast<float>(coin(rng));
    const int ambiguous = route_and_compare(cfg, c.spec, logits, c.with_bias ? bias.data() : nullptr, T);
    EXPECT_LE(ambiguous, T / 100) << "too many near ties to be a meaningful comparison";
  }
}

TEST(RouterRandom, DeepseekNullBiasEqualsZeroBias) {
  const RouterConfig cfg = router_from_json(config_json(
      "deepseek_v3", "\"n_routed_experts\": 32, \"n_group\": 4, \"topk_group\": 2, \"num_experts_per_tok\": 4"));
  const std::int64_t T = 300;
  const std::vector<float> logits = uniform(static_cast<std::size_t>(T * 32), -3.0f, 3.0f, 7);
  const std::vector<float> zeros(32, 0.0f);
  RoutingPlan a, b;
  route(cfg, logits.data(), nullptr, T, &a);
  route(cfg, logits.data(), zeros.data(), T, &b);
  EXPECT_EQ(a.expert_idx, b.expert_idx);
  EXPECT_EQ(a.weights, b.weights);
  EXPECT_EQ(a.expert_counts, b.expert_counts);
}

TEST(RouterRandom, PlanIsReusedWithoutStaleState) {
  const RouterConfig cfg = router_from_json(config_json("mixtral"));
  const std::vector<float> logits = uniform(100 * 8, -2.0f, 2.0f, 11);
  RoutingPlan plan;
  route(cfg, logits.data(), nullptr, 100, &plan);
  expect_plan_consistent(plan, 100, 2, 8);
  route(cfg, logits.data(), nullptr, 3, &plan);
  expect_plan_consistent(plan, 3, 2, 8);
  route(cfg, logits.data(), nullptr, 0, &plan);
  expect_plan_consistent(plan, 0, 2, 8);
  EXPECT_EQ(plan.expert_counts, std::vector<std::int64_t>(8, 0));
}

// ---------------------------------------------------------------------------
// Hand-derived fixtures.

TEST(RouterFixture, MixtralSmall) {
  const RouterConfig cfg = router_from_json(config_json("mixtral", "\"num_local_experts\": 4"));
  const double e = std::exp(1.0);
  // t0: logits log{1,4,2,3} -> probs {.1,.4,.2,.3}: top-2 = 1 (.4), 3 (.3); renormalised 4/7, 3/7.
  // t1: all equal -> experts 0, 1 (lower index wins), 1/2 each.
  // t2: {0,2,2,1}: 1 and 2 tie for best -> 1, 2; 1/2 each.
  // t3: {3,1,3,3}: 0, 2, 3 tie -> 0, 2; 1/2 each.
  // t4: {1000,1001,-1000,999} (needs a max-subtracted softmax): 1 then 0,
  //     weights 1/(1+e^-1) and e^-1/(1+e^-1).
  // counts: expert 0: t1,t3,t4 = 3; expert 1: t0,t1,t2,t4 = 4; expert 2: t2,t3 = 2; expert 3: t0 = 1.
  const std::vector<float> logits = {
      0.0f,
      static_cast<float>(std::log(4.0)),
      static_cast<float>(std::log(2.0)),
      static_cast<float>(std::log(3.0)),
      5.0f,
      5.0f,
      5.0f,
      5.0f,
      0.0f,
      2.0f,
      2.0f,
      1.0f,
      3.0f,
      1.0f,
      3.0f,
      3.0f,
      1000.0f,
      1001.0f,
      -1000.0f,
      999.0f,
  };
  expect_routing(cfg, logits, nullptr,
                 {{{1, 3}, {4.0 / 7, 3.0 / 7}},
                  {{0, 1}, {0.5, 0.5}},
                  {{1, 2}, {0.5, 0.5}},
                  {{0, 2}, {0.5, 0.5}},
                  {{1, 0}, {1.0 / (1.0 + 1.0 / e), (1.0 / e) / (1.0 + 1.0 / e)}}},
                 {3, 4, 2, 1});
}

TEST(RouterFixture, QwenNormTopkProb) {
  // probs {.1,.4,.2,.3}: top-2 = 1, 3. Without norm_topk_prob the weights are
  // the probabilities .4 and .3; with it, 4/7 and 3/7.
  // Second token: all equal -> 0, 1 with 1/4 each (1/2 each when normalised).
  const std::vector<float> logits = {0.0f,
                                     static_cast<float>(std::log(4.0)),
                                     static_cast<float>(std::log(2.0)),
                                     static_cast<float>(std::log(3.0)),
                                     -1.5f,
                                     -1.5f,
                                     -1.5f,
                                     -1.5f};
  for (const char* type : {"qwen2_moe", "qwen3_moe"}) {
    SCOPED_TRACE(type);
    const std::string base = "\"num_experts\": 4, \"num_experts_per_tok\": 2";
    const RouterConfig off = router_from_json(config_json(type, base));
    const RouterConfig off_explicit = router_from_json(config_json(type, base + ", \"norm_topk_prob\": false"));
    const RouterConfig on = router_from_json(config_json(type, base + ", \"norm_topk_prob\": true"));
    EXPECT_FALSE(off.renormalize);
    EXPECT_FALSE(off_explicit.renormalize);
    EXPECT_TRUE(on.renormalize);
    expect_routing(off, logits, nullptr, {{{1, 3}, {0.4, 0.3}}, {{0, 1}, {0.25, 0.25}}}, {1, 2, 0, 1});
    expect_routing(off_explicit, logits, nullptr, {{{1, 3}, {0.4, 0.3}}, {{0, 1}, {0.25, 0.25}}});
    expect_routing(on, logits, nullptr, {{{1, 3}, {4.0 / 7, 3.0 / 7}}, {{0, 1}, {0.5, 0.5}}}, {1, 2, 0, 1});
  }
}

TEST(RouterFixture, QwenTopOne) {
  // {0,0,1,0}: expert 2 with e/(e+3); normalised: 1.
  const double e = std::exp(1.0);
  const std::vector<float> logits = {0.0f, 0.0f, 1.0f, 0.0f};
  const std::string base = "\"num_experts\": 4, \"num_experts_per_tok\": 1";
  expect_routing(router_from_json(config_json("qwen3_moe", base)), logits, nullptr, {{{2}, {e / (e + 3)}}});
  expect_routing(router_from_json(config_json("qwen3_moe", base + ", \"norm_topk_prob\": true")), logits, nullptr,
                 {{{2}, {1.0}}});
}

// Llama4Router and GraniteMoeTopKRouter take torch.topk of the logits. Where
// the float scores tie (sigmoid(19) and sigmoid(20) both round to 1.0f; the
// softmax of -200 and -199 beside 100 both underflow to 0), the logits still
// decide: a router choosing on the scores would take the lower index.
TEST(RouterFixture, Llama4AndGraniteChooseOnTheLogits) {
  const float s20 = 1.0f / (1.0f + std::exp(-20.0f));
  ASSERT_EQ(s20, 1.0f / (1.0f + std::exp(-19.0f)));
  expect_routing(router_from_json(config_json("llama4_text", "\"num_local_experts\": 4")), {19.0f, 20.0f, 0.0f, 0.0f},
                 nullptr, {{{1}, {1.0}}});
  // Llama 4 does not renormalise: the weight is the sigmoid itself.
  expect_routing(router_from_json(config_json("llama4_text", "\"num_local_experts\": 4, \"num_experts_per_tok\": 2")),
                 {0.0f, 1.0f, -1.0f, 0.5f}, nullptr,
                 {{{1, 3}, {1.0 / (1.0 + std::exp(-1.0)), 1.0 / (1.0 + std::exp(-0.5))}}});
  // A link penalty is in units of scores: with one (even zero) the scores decide, and tie.
  RouterConfig penalised = router_from_json(config_json("llama4_text", "\"num_local_experts\": 4"));
  penalised.selection_penalty.assign(4, 0.0f);
  expect_routing(penalised, {19.0f, 20.0f, 0.0f, 0.0f}, nullptr, {{{0}, {1.0}}});
  expect_routing(router_from_json(config_json("granitemoe", "\"num_local_experts\": 3, \"num_experts_per_tok\": 2")),
                 {100.0f, -200.0f, -199.0f}, nullptr, {{{0, 2}, {1.0, 0.0}}});
}

TEST(RouterFixture, DeepseekMaskedGroupDropsBestExpert) {
  // 8 experts in 2 groups of 4, keep 1 group, top-2, no bias, scaling 1.
  // scores: group 0 {.9,.1,.1,.1} -> group score .9+.1 = 1.0
  //         group 1 {.6,.55,.1,.1} -> group score .6+.55 = 1.15  (kept)
  // The best expert (0, score .9) is in the dropped group: choose 4, 5 with
  // weights .6/1.15 and .55/1.15.
  const RouterConfig cfg = router_from_json(
      config_json("deepseek_v3",
                  "\"n_routed_experts\": 8, \"n_group\": 2, \"topk_group\": 1, \"num_experts_per_tok\": 2, "
                  "\"routed_scaling_factor\": 1.0"));
  std::vector<float> logits;
  for (double p : {0.9, 0.1, 0.1, 0.1, 0.6, 0.55, 0.1, 0.1}) logits.push_back(logit_of(p));
  const std::vector<float> bias(8, 0.0f);
  expect_routing(cfg, logits, bias.data(), {{{4, 5}, {0.6 / 1.15, 0.55 / 1.15}}}, {0, 0, 0, 0, 1, 1, 0, 0});
}

TEST(RouterFixture, DeepseekNegativeChoiceValuesNeverPickMaskedExperts) {
  // 8 experts in 4 groups of 2, keep 2 groups; every bias is -1, so every
  // choice value is negative:
  //   group 0 scores {.3,.2}  choice {-.7,-.8}  group score -1.5
  //   group 1 scores {.8,.7}  choice {-.2,-.3}  group score -0.5   (kept)
  //   group 2 scores {.1,.05} choice {-.9,-.95} group score -1.85
  //   group 3 scores {.6,.5}  choice {-.4,-.5}  group score -0.9   (kept)
  // With -inf masking: top-2 = 2, 3 (weights .8/1.5, .7/1.5, times 2.5);
  // top-4 = 2, 3, 6, 7 (weights .8, .7, .6, .5 over 2.6, times 2.5).
  // Filling the masked experts with 0.0 instead would choose 0, 1 (0 > -.2).
  std::vector<float> logits;
  for (double p : {0.3, 0.2, 0.8, 0.7, 0.1, 0.05, 0.6, 0.5}) logits.push_back(logit_of(p));
  const std::vector<float> bias(8, -1.0f);
  const std::string base = "\"n_routed_experts\": 8, \"n_group\": 4, \"topk_group\": 2";
  expect_routing(router_from_json(config_json("deepseek_v3", base + ", \"num_experts_per_tok\": 2")), logits,
                 bias.data(), {{{2, 3}, {2.5 * 0.8 / 1.5, 2.5 * 0.7 / 1.5}}}, {0, 0, 1, 1, 0, 0, 0, 0});
  expect_routing(router_from_json(config_json("deepseek_v3", base + ", \"num_experts_per_tok\": 4")), logits,
                 bias.data(), {{{2, 3, 6, 7}, {2.5 * 0.8 / 2.6, 2.5 * 0.7 / 2.6, 2.5 * 0.6 / 2.6, 2.5 * 0.5 / 2.6}}},
                 {0, 0, 1, 1, 0, 0, 1, 1});
}

TEST(RouterFixture, DeepseekBiasSelectsButDoesNotWeigh) {
  // One group of 4, top-2. scores {.9,.8,.3,.2}, bias {0,0,.55,0}
  // -> choice {.9,.8,.85,.2}: choose 0 (.9) then 2 (.85).
  // Weights use the unbiased scores: .9/1.2 and .3/1.2, times 2.5 = 1.875, .625.
  // Without norm_topk_prob: .9*2.5 = 2.25 and .3*2.5 = .75.
  // Without the bias: 0, 1 with .9/1.7 and .8/1.7 (times 2.5).
  std::vector<float> logits;
  for (double p : {0.9, 0.8, 0.3, 0.2}) logits.push_back(logit_of(p));
  const std::vector<float> bias = {0.0f, 0.0f, 0.55f, 0.0f};
  const std::string base = "\"n_routed_experts\": 4, \"n_group\": 1, \"topk_group\": 1, \"num_experts_per_tok\": 2";
  const RouterConfig norm = router_from_json(config_json("deepseek_v3", base));
  const RouterConfig no_norm = router_from_json(config_json("deepseek_v3", base + ", \"norm_topk_prob\": false"));
  expect_routing(norm, logits, bias.data(), {{{0, 2}, {1.875, 0.625}}}, {1, 0, 1, 0});
  expect_routing(no_norm, logits, bias.data(), {{{0, 2}, {2.25, 0.75}}});
  expect_routing(norm, logits, nullptr, {{{0, 1}, {2.5 * 0.9 / 1.7, 2.5 * 0.8 / 1.7}}}, {1, 1, 0, 0});
}

TEST(RouterFixture, DeepseekGroupScoreUsesBiasedChoice) {
  // 2 groups of 2, keep 1, top-2, scaling 1.
  // scores group 0 {.9,.8} (sum 1.7), group 1 {.7,.6} + bias .5 -> {1.2,1.1} (sum 2.3):
  // group 1 is kept although its raw scores are lower: 2, 3 with .7/1.3, .6/1.3.
  std::vector<float> logits;
  for (double p : {0.9, 0.8, 0.7, 0.6}) logits.push_back(logit_of(p));
  const std::vector<float> bias = {0.0f, 0.0f, 0.5f, 0.5f};
  const RouterConfig cfg = router_from_json(
      config_json("deepseek_v3",
                  "\"n_routed_experts\": 4, \"n_group\": 2, \"topk_group\": 1, \"num_experts_per_tok\": 2, "
                  "\"routed_scaling_factor\": 1.0"));
  expect_routing(cfg, logits, bias.data(), {{{2, 3}, {0.7 / 1.3, 0.6 / 1.3}}}, {0, 0, 1, 1});
}

TEST(RouterFixture, DeepseekTies) {
  // t0: 8 experts, 4 groups of 2, keep 2, top-3, every logit 0 (score .5):
  //     all groups tie -> groups 0, 1 -> experts 0, 1, 2; weights 1/3 * 2.5.
  const RouterConfig cfg = router_from_json(config_json(
      "deepseek_v3", "\"n_routed_experts\": 8, \"n_group\": 4, \"topk_group\": 2, \"num_experts_per_tok\": 3"));
  expect_routing(cfg, std::vector<float>(8, 0.0f), nullptr, {{{0, 1, 2}, {2.5 / 3, 2.5 / 3, 2.5 / 3}}},
                 {1, 1, 1, 0, 0, 0, 0, 0});

  // t0: keep 1 group, top-2. scores group 0 {.2,.1}, group 1 {.6,.4}, group 2
  //     {.4,.6}, group 3 {.1,.1}: groups 1 and 2 tie (1.0) -> group 1 -> 2, 3
  //     with .6, .4 (normalised by 1.0), times 2.5.
  // t1: scores {.3,.7,.7,.7, .1,.1,.1,.1}: group score of 0 is 1.4 -> group 0...
  //     (group of 2: {.3,.7} = 1.0, {.7,.7} = 1.4, {.1,.1}, {.1,.1}) -> group 1
  //     -> experts 2, 3 tie -> 2, 3 with .5 each, times 2.5.
  const RouterConfig one_group = router_from_json(config_json(
      "deepseek_v3", "\"n_routed_experts\": 8, \"n_group\": 4, \"topk_group\": 1, \"num_experts_per_tok\": 2"));
  std::vector<float> logits;
  for (double p : {0.2, 0.1, 0.6, 0.4, 0.4, 0.6, 0.1, 0.1, 0.3, 0.7, 0.7, 0.7, 0.1, 0.1, 0.1, 0.1})
    logits.push_back(logit_of(p));
  expect_routing(one_group, logits, nullptr, {{{2, 3}, {2.5 * 0.6, 2.5 * 0.4}}, {{2, 3}, {1.25, 1.25}}},
                 {0, 0, 2, 2, 0, 0, 0, 0});

  // One group of 4, top-2, scores {.3,.7,.7,.7}: 1, 2 (lower indices of the tie).
  const RouterConfig flat = router_from_json(
      config_json("deepseek_v3",
                  "\"n_routed_experts\": 4, \"n_group\": 1, \"topk_group\": 1, \"num_experts_per_tok\": 2, "
                  "\"routed_scaling_factor\": 1.0"));
  std::vector<float> flat_logits;
  for (double p : {0.3, 0.7, 0.7, 0.7}) flat_logits.push_back(logit_of(p));
  expect_routing(flat, flat_logits, nullptr, {{{1, 2}, {0.5, 0.5}}}, {0, 1, 1, 0});
}

TEST(RouterFixture, DeepseekScalingFactor) {
  // scores {.8,.2,.6,.4} in one group, top-2 -> 0 (.8), 2 (.6).
  // norm: .8/1.4, .6/1.4 times the factor; no norm: .8, .6 times the factor.
  std::vector<float> logits;
  for (double p : {0.8, 0.2, 0.6, 0.4}) logits.push_back(logit_of(p));
  const std::string base = "\"n_routed_experts\": 4, \"n_group\": 1, \"topk_group\": 1, \"num_experts_per_tok\": 2";
  for (double f : {1.0, 2.5, 0.5, 16.0}) {
    SCOPED_TRACE(f);
    const std::string factor = ", \"routed_scaling_factor\": " + std::to_string(f);
    const RouterConfig norm = router_from_json(config_json("deepseek_v3", base + factor));
    const RouterConfig no_norm =
        router_from_json(config_json("deepseek_v3", base + factor + ", \"norm_topk_prob\": false"));
    EXPECT_FLOAT_EQ(norm.scaling, static_cast<float>(f));
    expect_routing(norm, logits, nullptr, {{{0, 2}, {f * 0.8 / 1.4, f * 0.6 / 1.4}}});
    expect_routing(no_norm, logits, nullptr, {{{0, 2}, {f * 0.8, f * 0.6}}});
  }
  // An integer factor in the JSON is a number too.
  EXPECT_FLOAT_EQ(router_from_json(config_json("deepseek_v3", base + ", \"routed_scaling_factor\": 3")).scaling, 3.0f);
}

TEST(RouterFixture, TopPUsesTheFewestExpertsThatReachP) {
  // Up to 3 experts until their probabilities reach 0.55:
  // t0 {.1,.4,.2,.3}: 1 (.4), 3 (.7) -> 2 experts, 4/7 and 3/7 (renormalised) or .4 and .3.
  // t1 all .25: .25, .5, .75 -> 3 experts (0, 1, 2), 1/3 (or 1/4) each.
  // t2 {.7,.1,.1,.1}: expert 0 alone, 1 (or .7).
  // t3 {.3,.3,.3,.1}: a three-way tie, 0 then 1 (.6) -> 2 experts, 1/2 (or .3) each.
  const auto log = [](double v) { return static_cast<float>(std::log(v)); };
  const std::vector<float> logits = {0.0f,   log(4), log(2), log(3), 1.0f,   1.0f,   1.0f,   1.0f,
                                     log(7), 0.0f,   0.0f,   0.0f,   log(3), log(3), log(3), 0.0f};
  RouterConfig cfg = router_from_json(config_json("mixtral", "\"num_local_experts\": 4, \"num_experts_per_tok\": 3"));
  cfg.top_p = 0.55f;
  cfg.validate();
  const std::vector<std::int64_t> counts = {3, 3, 1, 1};
  expect_routing(cfg, logits, nullptr,
                 {{{1, 3, -1}, {4.0 / 7, 3.0 / 7, 0}},
                  {{0, 1, 2}, {1.0 / 3, 1.0 / 3, 1.0 / 3}},
                  {{0, -1, -1}, {1, 0, 0}},
                  {{0, 1, -1}, {0.5, 0.5, 0}}},
                 counts);
  cfg.renormalize = false;
  expect_routing(cfg, logits, nullptr,
                 {{{1, 3, -1}, {0.4, 0.3, 0}},
                  {{0, 1, 2}, {0.25, 0.25, 0.25}},
                  {{0, -1, -1}, {0.7, 0, 0}},
                  {{0, 1, -1}, {0.3, 0.3, 0}}},
                 counts);
  cfg.top_p = 1.0f;  // the whole mass: always the cap
  expect_routing(cfg, logits, nullptr,
                 {{{1, 3, 2}, {0.4, 0.3, 0.2}},
                  {{0, 1, 2}, {0.25, 0.25, 0.25}},
                  {{0, 1, 2}, {0.7, 0.1, 0.1}},
                  {{0, 1, 2}, {0.3, 0.3, 0.3}}});
}

TEST(RouterFixture, TopPIsRefusedWhereItCannotApply) {
  RouterConfig cfg = router_from_json(config_json("mixtral", "\"num_local_experts\": 4"));
  cfg.top_p = 1.5f;
  EXPECT_THROW(
      try { cfg.validate(); } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("top_p must be in [0, 1]"), std::string::npos) << e.what();
        throw;
      },
      Error);
  RouterConfig sig = router_from_json(config_json("deepseek_v3"));
  sig.top_p = 0.5f;
  EXPECT_THROW(
      try { sig.validate(); } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("top_p needs softmax scores"), std::string::npos) << e.what();
        throw;
      },
      Error);
}

TEST(RouterFixture, ZeroTokens) {
  const RouterConfig cfg = router_from_json(config_json("qwen3_moe"));
  RoutingPlan plan;
  const float dummy = 0.0f;
  route(cfg, &dummy, nullptr, 0, &plan);
  expect_plan_consistent(plan, 0, 8, 128);
}

// ---------------------------------------------------------------------------
// RouterConfig from ModelConfig, and its validation.

TEST(RouterConfig, FromModelConfig) {
  const RouterConfig mix = router_from_json(config_json("mixtral"));
  EXPECT_EQ(mix.score, ScoreFunction::kSoftmax);
  EXPECT_EQ(mix.num_experts, 8);
  EXPECT_EQ(mix.top_k, 2);
  EXPECT_TRUE(mix.renormalize);
  EXPECT_EQ(mix.renormalize_epsilon, 0.0f);
  EXPECT_EQ(mix.n_group, 1);
  EXPECT_EQ(mix.scaling, 1.0f);

  const RouterConfig q2 = router_from_json(config_json("qwen2_moe"));
  EXPECT_EQ(q2.score, ScoreFunction::kSoftmax);
  EXPECT_EQ(q2.num_experts, 60);
  EXPECT_EQ(q2.top_k, 4);
  EXPECT_FALSE(q2.renormalize);
  EXPECT_EQ(q2.n_group, 1);
  EXPECT_EQ(q2.scaling, 1.0f);

  const RouterConfig q3 = router_from_json(config_json("qwen3_moe"));
  EXPECT_EQ(q3.num_experts, 128);
  EXPECT_EQ(q3.top_k, 8);
  EXPECT_FALSE(q3.renormalize);

  const RouterConfig ds = router_from_json(config_json("deepseek_v3"));
  EXPECT_EQ(ds.score, ScoreFunction::kSigmoid);
  EXPECT_EQ(ds.num_experts, 256);
  EXPECT_EQ(ds.top_k, 8);
  EXPECT_TRUE(ds.renormalize);
  EXPECT_EQ(ds.renormalize_epsilon, 1e-20f);
  EXPECT_EQ(ds.n_group, 8);
  EXPECT_EQ(ds.topk_group, 4);
  EXPECT_EQ(ds.scaling, 2.5f);
  EXPECT_NO_THROW(ds.validate());
  EXPECT_NO_THROW(mix.validate());
}

TEST(RouterConfig, ValidateRejectsInconsistentFields) {
  RouterConfig good = router_from_json(config_json(
      "deepseek_v3", "\"n_routed_experts\": 16, \"n_group\": 4, \"topk_group\": 2, \"num_experts_per_tok\": 3"));
  EXPECT_NO_THROW(good.validate());
  auto expect_invalid = [](const RouterConfig& c, const std::string& field) {
    try {
      c.validate();
      ADD_FAILURE() << "validate() accepted a bad " << field;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  RouterConfig c = good;
  c.num_experts = 0;
  expect_invalid(c, "num_experts");
  c = good;
  c.top_k = 0;
  expect_invalid(c, "top_k");
  c = good;
  c.top_k = 17;
  expect_invalid(c, "top_k");
  c = good;
  c.n_group = 3;  // does not divide 16
  expect_invalid(c, "n_group");
  c = good;
  c.topk_group = 5;  // more than n_group
  expect_invalid(c, "topk_group");
  c = good;
  c.topk_group = 0;
  expect_invalid(c, "topk_group");
}

// ---------------------------------------------------------------------------
// ExpertPlacement.

TEST(ExpertPlacement, ContiguousBlocks) {
  for (std::int64_t E = 1; E <= 40; ++E) {
    for (int R = 1; R <= E; ++R) {
      SCOPED_TRACE("E=" + std::to_string(E) + " R=" + std::to_string(R));
      const ExpertPlacement p(E, R);
      EXPECT_EQ(p.num_experts(), E);
      EXPECT_EQ(p.num_ranks(), R);
      const std::int64_t base = E / R, extra = E % R;
      std::int64_t next = 0;
      for (int r = 0; r < R; ++r) {
        const std::int64_t want_local = base + (r < extra ? 1 : 0);
        ASSERT_EQ(p.first_expert(r), next) << "rank " << r;
        ASSERT_EQ(p.num_local(r), want_local) << "rank " << r;
        for (std::int64_t j = 0; j < want_local; ++j) ASSERT_EQ(p.owner(next + j), r) << "expert " << next + j;
        next += want_local;
      }
      EXPECT_EQ(next, E);
      EXPECT_EQ(p.max_local(), (E + R - 1) / R);
    }
  }
  // A hand-checked case: 10 experts over 4 ranks -> 3, 3, 2, 2 from 0, 3, 6, 8.
  const ExpertPlacement p(10, 4);
  EXPECT_EQ(p.first_expert(2), 6);
  EXPECT_EQ(p.first_expert(3), 8);
  EXPECT_EQ(p.owner(5), 1);
  EXPECT_EQ(p.owner(6), 2);
  EXPECT_EQ(p.owner(9), 3);
}

TEST(ExpertPlacement, MoreRanksThanExpertsThrows) {
  EXPECT_THROW(ExpertPlacement(4, 5), Error);
  EXPECT_THROW(ExpertPlacement(1, 2), Error);
  try {
    ExpertPlacement(3, 8);
    ADD_FAILURE() << "accepted 8 ranks for 3 experts";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
}

}  // namespace

namespace {

// top_k against the definition: indices stably sorted by value, largest
// first (so ties keep index order), the first k kept. Values are drawn from
// a handful of levels, -inf included, so ties are the common case.
TEST(TopK, MatchesAStableSortWithTiesAndMinusInfinity) {
  std::mt19937 rng(12);
  const float levels[] = {-std::numeric_limits<float>::infinity(), -1.0f, 0.0f, 0.25f, 3.0f};
  for (int trial = 0; trial < 500; ++trial) {
    const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 40), k = 1 + static_cast<std::int64_t>(rng() % n);
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = levels[rng() % 5];
    std::vector<std::int32_t> want(static_cast<std::size_t>(n));
    std::iota(want.begin(), want.end(), 0);
    std::stable_sort(want.begin(), want.end(), [&](std::int32_t a, std::int32_t b) { return v[a] > v[b]; });
    want.resize(static_cast<std::size_t>(k));
    std::vector<std::int32_t> got(static_cast<std::size_t>(k), -1);
    switchyard::kernels::top_k(v.data(), n, k, got.data());
    ASSERT_EQ(got, want) << "trial " << trial << ", n " << n << ", k " << k;
  }
}

}  // namespace
