// Every gradient of the distributed MoE layer against central finite
// differences of the float64 reference layer (support/moe_reference.hpp), for
// every architecture, at any rank count, with and without auxiliary losses,
// node-limited and cost-aware routing and the topology loss.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "../support/finite_diff.hpp"
#include "../support/moe_reference.hpp"
#include "../support/mpi_support.hpp"
#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/formats/checkpoint.hpp"
#include "switchyard/formats/random_checkpoint.hpp"
#include "switchyard/layers/moe_layer.hpp"

namespace {

using namespace switchyard;
using formats::Architecture;
using test_support::finite_diff;
using test_support::RefParams;
using test_support::Vec;

struct GradCase {
  std::string name;
  formats::RandomMoeSpec spec;
  double aux_coef = 0.0, z_coef = 0.0;
  std::vector<int> expert_node{};  // node-limited routing: each expert's node
  int max_nodes = 0, node_score_experts = 2;
  double lambda = 0.0;     // cost-aware routing: penalty scale
  double topo_coef = 0.0;  // the topology loss's coefficient
  double top_p = 0.0;      // top-p routing (top_k experts at most)
  double entropy_coef = 0.0;
  bool noisy = false;  // noisy top-k gating, with these loss coefficients
  double importance_coef = 0.0, load_coef = 0.0;
};

constexpr std::uint64_t kNoiseKey = 17;

void PrintTo(const GradCase& c, std::ostream* os) { *os << c.name; }

constexpr std::int64_t kTokens = 7;

// A made-up link penalty that differs between ranks and experts.
std::vector<float> rank_penalty(const GradCase& c, int rank) {
  std::vector<float> p(static_cast<std::size_t>(c.spec.experts));
  for (std::size_t e = 0; e < p.size(); ++e)
    p[e] = static_cast<float>(c.lambda * static_cast<double>((e + rank) % 3) / 2);
  return p;
}

// A made-up link cost in [0, 1] that differs between ranks and experts.
std::vector<float> rank_link_cost(const GradCase& c, int rank) {
  std::vector<float> p(static_cast<std::size_t>(c.spec.experts));
  for (std::size_t e = 0; e < p.size(); ++e) p[e] = static_cast<float>((e + 2 * rank) % 4) / 3.0f;
  return p;
}

// The case's routing options for the layer on `rank`.
layers::MoeConfig with_topology_routing(const GradCase& c, layers::MoeConfig config, int rank) {
  config.router.expert_node.assign(c.expert_node.begin(), c.expert_node.end());
  config.router.max_nodes = c.max_nodes;
  config.router.node_score_experts = c.node_score_experts;
  if (c.lambda != 0.0) config.router.selection_penalty = rank_penalty(c, rank);
  if (c.topo_coef != 0.0) config.router.link_cost = rank_link_cost(c, rank);
  config.router.top_p = static_cast<float>(c.top_p);
  config.validate();
  return config;
}

// The same for the reference, whose tokens come from every rank.
test_support::RefTopologyRouting ref_topology_routing(const GradCase& c, int num_ranks) {
  test_support::RefTopologyRouting t{.expert_node = c.expert_node,
                                     .max_nodes = c.max_nodes,
                                     .node_score_experts = c.node_score_experts,
                                     .top_p = c.top_p};
  const BlockPartition tokens(kTokens, num_ranks);
  for (std::int64_t i = 0; i < kTokens; ++i) {
    if (c.noisy) {  // the layer's draws: a pure function of (key, rank, local token, expert)
      const int r = tokens.owner(i);
      Vec eps;
      for (std::int64_t e = 0; e < c.spec.experts; ++e)
        eps.push_back(layers::gating_noise(kNoiseKey, r, i - test_support::block_begin(kTokens, num_ranks, r), e));
      t.noise_eps.push_back(eps);
    }
    if (c.lambda != 0.0) {
      const auto p = rank_penalty(c, tokens.owner(i));
      t.penalty.emplace_back(p.begin(), p.end());
    }
    if (c.topo_coef != 0.0) {
      const auto cost = rank_link_cost(c, tokens.owner(i));
      t.link_cost.emplace_back(cost.begin(), cost.end());
    }
  }
  return t;
}

// The tokens whose experts the routing options change.
int tokens_rerouted(const GradCase& c, const RefParams& ref, const Vec& x,
                    const test_support::RefTopologyRouting& topo) {
  int changed = 0;
  for (std::int64_t t = 0; t < kTokens; ++t)
    changed += test_support::ref_route(c.spec, ref, &x[t * c.spec.hidden]).experts !=
               test_support::ref_route(c.spec, ref, &x[t * c.spec.hidden], topo, t).experts;
  return changed;
}

// L = sum(g ⊙ y) + aux_coef * aux + z_coef * z + topo_coef * topology, in float64.
double ref_loss(const GradCase& c, const RefParams& p, const Vec& x, const Vec& g,
                const test_support::RefTopologyRouting& topo) {
  const auto out = test_support::ref_forward(c.spec, p, x, kTokens, 0.0, 1, topo);
  double l = 0;
  for (std::size_t i = 0; i < g.size(); ++i) l += g[i] * out.y[i];
  return l + c.aux_coef * out.aux_loss + c.z_coef * out.z_loss + c.topo_coef * out.topology_loss +
         c.entropy_coef * out.entropy_loss + c.importance_coef * out.importance_loss + c.load_coef * out.load_loss;
}

// max |got - want| / max |want|, with a floor so an all-zero gradient fails loudly elsewhere.
double rel_error(const float* got, const Vec& want) {
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return err / std::max(scale, 1e-12);
}

class MoeGradients : public ::testing::TestWithParam<GradCase> {};

TEST_P(MoeGradients, MatchFiniteDifferences) {
  const GradCase& c = GetParam();
  comm::MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  const std::string dir = test_support::shared_temp_dir(me);
  ASSERT_FALSE(dir.empty());
  // Every rank writes its own copy, so every rank also has the arrays.
  const std::string mine = dir + "/rank" + std::to_string(me);
  const auto arrays = formats::write_random_moe_checkpoint(c.spec, mine);
  const std::int64_t layer = c.spec.layers - 1;

  const auto config = formats::load_model_config(mine);
  formats::Checkpoint ckpt(mine);
  layers::ExpertPlacement placement(config.num_experts, R);
  layers::MoeLayerOptions options{.aux_loss_coef = c.aux_coef,
                                  .z_loss_coef = c.z_coef,
                                  .topology_loss_coef = c.topo_coef,
                                  .entropy_loss_coef = c.entropy_coef,
                                  .noisy_gating = {c.noisy, c.importance_coef, c.load_coef}};
  layers::MoeWeights weights =
      formats::load_moe_weights(ckpt, config, layer, placement.first_expert(me), placement.num_local(me));
  const std::vector<float> noise_weight = formats::random_matrix(c.spec.experts, c.spec.hidden, 9 + c.spec.seed);
  if (c.noisy) weights.router_noise = noise_weight;
  layers::MoeLayer moe(with_topology_routing(c, formats::moe_config(config), me), std::move(weights), placement, me,
                       options);

  const std::int64_t H = c.spec.hidden, T = kTokens;
  const auto x = formats::random_matrix(T, H, 5 + c.spec.seed);
  const auto g = formats::random_matrix(T, H, 6 + c.spec.seed);
  const std::int64_t begin = test_support::block_begin(T, R, me), rows = test_support::block_rows(T, R, me);
  std::vector<float> y(rows * H), dx(rows * H);
  layers::ForwardStats stats;
  layers::MoeForwardContext ctx;
  moe.initialize(comm, {.max_tokens = rows, .training = true}, &ctx);
  moe.run(comm, {.x = x.data() + begin * H,
                 .num_tokens = rows,
                 .y = y.data(),
                 .context = &ctx,
                 .stats = &stats,
                 .gating_noise = c.noisy,
                 .noise_key = kNoiseKey});
  moe.run(comm, layers::MoeBackwardArguments{.context = &ctx, .grad_y = g.data() + begin * H, .grad_x = dx.data()});

  auto params = moe.parameters();
  for (auto* p : params)
    if (p->replicated) comm.allreduce_sum(p->grad.data(), p->grad.size());

  // The reference gradient, by finite differences of the float64 layer.
  RefParams ref = test_support::ref_params(arrays[layer]);
  if (c.noisy) ref.router_noise = test_support::to_double(noise_weight);
  Vec xd = test_support::to_double(x), gd = test_support::to_double(g);
  const test_support::RefTopologyRouting topo = ref_topology_routing(c, R);
  auto loss = [&] { return ref_loss(c, ref, xd, gd, topo); };
  const auto ref_out = test_support::ref_forward(c.spec, ref, xd, T, 0.0, 1, topo);
  if (c.max_nodes > 0 || c.lambda != 0.0) {
    EXPECT_GT(tokens_rerouted(c, ref, xd, topo), 0) << "the routing options change no token's experts: vacuous";
  }
  EXPECT_NEAR(stats.aux_loss, ref_out.aux_loss, 1e-5 * std::abs(ref_out.aux_loss));
  EXPECT_NEAR(stats.z_loss, ref_out.z_loss, 1e-5 * std::abs(ref_out.z_loss));
  EXPECT_NEAR(stats.topology_loss, ref_out.topology_loss, 1e-5 * std::abs(ref_out.topology_loss));
  if (c.topo_coef != 0.0) {
    EXPECT_GT(ref_out.topology_loss, 0.01) << "the topology loss is zero: vacuous";
  }
  EXPECT_NEAR(stats.entropy_loss, ref_out.entropy_loss, 1e-5 * ref_out.entropy_loss);
  EXPECT_NEAR(stats.importance_loss, ref_out.importance_loss, 1e-5 * ref_out.importance_loss);
  EXPECT_NEAR(stats.load_loss, ref_out.load_loss, 1e-5 * ref_out.load_loss);
  if (c.noisy) {
    EXPECT_GT(ref_out.load_loss, 1e-4) << "the load loss is zero: vacuous";
    EXPECT_GT(tokens_rerouted(c, ref, xd, topo), 0) << "the noise changes no token's experts: vacuous";
  }
  std::vector<std::int64_t> used(static_cast<std::size_t>(c.spec.top_k + 1), 0);
  for (std::int64_t t = 0; t < T; ++t) ++used[test_support::ref_route(c.spec, ref, &xd[t * H], topo, t).experts.size()];
  EXPECT_EQ(stats.experts_per_token, used);
  if (c.top_p > 0) {
    EXPECT_GT(used[1] + used[2], 0) << "every token uses top_k experts: top-p is vacuous";
    EXPECT_GT(used[c.spec.top_k], 0) << "no token reaches the cap top_k: " << ::testing::PrintToString(used);
  }
  EXPECT_NEAR(stats.gate_mass, ref_out.gate_mass, 1e-5 * ref_out.gate_mass);
  EXPECT_NEAR(stats.gate_mass_top_k, ref_out.gate_mass_top_k, 1e-5 * ref_out.gate_mass_top_k);
  if (c.max_nodes > 0 || c.lambda != 0.0) {
    EXPECT_LT(stats.gate_mass_kept(), 1.0) << "no gate mass lost: vacuous";
  }

  constexpr double kTol = 1e-5;  // observed: ~3e-7 (float32 compute vs float64 differences)
  const Vec grad_x = finite_diff(loss, &xd);
  EXPECT_LE(rel_error(dx.data(), Vec(grad_x.begin() + begin * H, grad_x.begin() + (begin + rows) * H)), kTol)
      << "dL/dx";
  for (auto* p : params) {
    const std::string& n = p->name;
    const Vec want = test_support::reference_gradient(n, loss, &ref);
    ASSERT_EQ(want.size(), p->grad.size()) << n;
    double scale = 0;
    for (double v : want) scale = std::max(scale, std::abs(v));
    if (n == "gate.weight" || n == "gate.noise_weight" || n.starts_with("experts.")) {
      EXPECT_GT(scale, 1e-6) << n << ": reference gradient is zero; the check would be vacuous";
    }
    EXPECT_LE(rel_error(p->grad.data(), want), kTol) << n << " on rank " << me;
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (me == 0) std::filesystem::remove_all(dir);
}

formats::RandomMoeSpec small(Architecture arch, std::uint64_t seed) {
  formats::RandomMoeSpec s;
  s.arch = arch;
  s.seed = seed;
  s.hidden = 6;
  s.inter = 4;
  s.shared_inter = 5;
  s.experts = 4;
  s.top_k = 2;
  s.layers = 2;
  s.n_group = 2;
  s.topk_group = 1;
  s.scale = 0.5f;
  if (arch == Architecture::kQwen2Moe) s.norm_topk_prob = false;
  return s;
}

// Node-limited and cost-aware routing, with softmax and sigmoid routers,
// renormalised or not, with groups, bias and auxiliary losses.
std::vector<GradCase> with_topology_cases(std::vector<GradCase> out) {
  GradCase mixtral{"mixtral_max_nodes_1", small(Architecture::kMixtral, 70)};
  mixtral.expert_node = {0, 1, 0, 1};
  mixtral.max_nodes = 1;
  out.push_back(mixtral);
  GradCase qwen2{"qwen2_moe_max_nodes_1_best_expert", small(Architecture::kQwen2Moe, 71)};
  qwen2.expert_node = {1, 0, 0, 1};
  qwen2.max_nodes = 1;
  qwen2.node_score_experts = 1;
  out.push_back(qwen2);
  // A seed whose 7 tokens reach all 8 experts, so no expert's gradient is trivially zero.
  GradCase deepseek{"deepseek_v3_max_nodes_1_groups", small(Architecture::kDeepseekV3, 100)};
  deepseek.spec.experts = 8;
  deepseek.spec.n_group = 4;
  deepseek.spec.topk_group = 2;
  deepseek.expert_node = {0, 0, 1, 1, 0, 0, 1, 1};
  deepseek.max_nodes = 1;
  out.push_back(deepseek);
  GradCase mixtral_cost{"mixtral_link_penalty", small(Architecture::kMixtral, 73)};
  mixtral_cost.lambda = 0.3;
  out.push_back(mixtral_cost);
  GradCase deepseek_cost{"deepseek_v3_link_penalty", small(Architecture::kDeepseekV3, 74)};
  deepseek_cost.lambda = 0.3;
  out.push_back(deepseek_cost);
  GradCase mixtral_topo{"mixtral_topology_loss", small(Architecture::kMixtral, 76)};
  mixtral_topo.topo_coef = 0.7;
  out.push_back(mixtral_topo);
  GradCase deepseek_topo{"deepseek_v3_topology_loss_aux_z_loss", small(Architecture::kDeepseekV3, 78), 0.3, 0.05};
  deepseek_topo.topo_coef = 0.7;
  out.push_back(deepseek_topo);
  GradCase both{"qwen3_moe_max_nodes_link_penalty_aux_z_loss", small(Architecture::kQwen3Moe, 75), 0.3, 0.05};
  both.expert_node = {0, 1, 0, 1};
  both.max_nodes = 1;
  both.lambda = 0.2;
  both.topo_coef = 0.4;
  out.push_back(both);
  return out;
}

std::vector<GradCase> grad_cases() {
  std::vector<GradCase> out;
  const std::pair<Architecture, const char*> archs[] = {{Architecture::kMixtral, "mixtral"},
                                                        {Architecture::kQwen2Moe, "qwen2_moe"},
                                                        {Architecture::kQwen3Moe, "qwen3_moe"},
                                                        {Architecture::kDeepseekV3, "deepseek_v3"}};
  std::uint64_t seed = 40;
  for (auto [arch, name] : archs) {
    out.push_back({name, small(arch, seed++)});
    out.push_back({std::string(name) + "_aux_z_loss", small(arch, seed++), 0.3, 0.05});
  }
  GradCase gelu{"qwen3_moe_gelu_top3", small(Architecture::kQwen3Moe, 60)};
  gelu.spec.hidden_act = "gelu";
  gelu.spec.top_k = 3;
  out.push_back(gelu);
  // Top-p with up to 3 experts, renormalised (Mixtral) and not (Qwen2-MoE),
  // with the entropy loss and capacity-free auxiliary losses.
  GradCase top_p{"mixtral_top_p_entropy_loss", small(Architecture::kMixtral, 80), 0.3, 0.05};
  top_p.spec.top_k = 3;
  top_p.top_p = 0.85;
  top_p.entropy_coef = 0.2;
  out.push_back(top_p);
  GradCase top_p_raw{"qwen2_moe_top_p", small(Architecture::kQwen2Moe, 81)};
  top_p_raw.spec.top_k = 3;
  top_p_raw.top_p = 0.9;
  out.push_back(top_p_raw);
  // Noisy top-k gating with its importance and load losses (the noise
  // weights' gradient among the parameters).
  GradCase noisy{"mixtral_noisy_top_k", small(Architecture::kMixtral, 82), 0.3, 0.05};
  noisy.noisy = true;
  noisy.importance_coef = 0.4;
  noisy.load_coef = 0.6;
  out.push_back(noisy);
  GradCase noisy_top3{"qwen3_moe_noisy_top_3", small(Architecture::kQwen3Moe, 83)};
  noisy_top3.spec.top_k = 3;
  noisy_top3.noisy = true;
  noisy_top3.load_coef = 1.0;
  out.push_back(noisy_top3);
  return with_topology_cases(out);
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, MoeGradients, ::testing::ValuesIn(grad_cases()),
                         [](const auto& info) { return info.param.name; });

// DeepSeek-V3's auxiliary-loss-free balancing moves load toward balance.
TEST(SelectionBias, UpdateBalancesSkewedLoad) {
  comm::MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  const std::string dir = test_support::shared_temp_dir(me);
  formats::RandomMoeSpec s = small(Architecture::kDeepseekV3, 77);
  s.experts = 8;
  s.n_group = 4;
  s.topk_group = 2;
  s.hidden = 16;
  const std::string mine = dir + "/rank" + std::to_string(me);
  formats::write_random_moe_checkpoint(s, mine);
  const auto config = formats::load_model_config(mine);
  formats::Checkpoint ckpt(mine);
  layers::ExpertPlacement placement(config.num_experts, R);
  layers::MoeLayer moe(formats::moe_config(config),
                       formats::load_moe_weights(ckpt, config, 1, placement.first_expert(me), placement.num_local(me)),
                       placement, me);
  // Skewed input: every token leans the same way, so few experts win.
  auto x = formats::random_matrix(64, s.hidden, 3 + me, 0.3f);
  for (std::int64_t t = 0; t < 64; ++t) x[t * s.hidden] += 3.0f;
  std::vector<float> y(x.size());
  moe.initialize(comm, {.max_tokens = 64});
  auto imbalance = [&] {
    layers::ForwardStats st;
    moe.run(comm, {.x = x.data(), .num_tokens = 64, .y = y.data(), .stats = &st});
    const auto mx = *std::max_element(st.expert_load.begin(), st.expert_load.end());
    const double mean = std::accumulate(st.expert_load.begin(), st.expert_load.end(), 0.0) / st.expert_load.size();
    moe.update_selection_bias(st, 0.01);
    return mx / mean;
  };
  const double before = imbalance();
  double after = before;
  for (int i = 0; i < 60; ++i) after = imbalance();
  EXPECT_GT(before, 2.0) << "the input should start skewed";
  EXPECT_LT(after, 0.6 * before) << "bias updates should move load toward balance";
  MPI_Barrier(MPI_COMM_WORLD);
  if (me == 0) std::filesystem::remove_all(dir);
}

}  // namespace
