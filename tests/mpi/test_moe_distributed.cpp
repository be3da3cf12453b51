// The distributed MoE forward equals a dense single-process computation of the
// same layer, for every architecture and layout, at any rank count.
//
// The reference below is written from the architectures' definitions in
// double precision and reads the weights from the generator's arrays, not
// through Switchyard's checkpoint loader, router or dispatch.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "random_moe_checkpoint.hpp"
#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/layers/checkpoint.hpp"
#include "switchyard/layers/moe_layer.hpp"

namespace {

using namespace switchyard;
using layers::Architecture;
using Vec = std::vector<double>;

struct Case {
  std::string name;
  examples::RandomMoeSpec spec;
  std::int64_t layer = 1;
  std::int64_t tokens = 29;
  double capacity_factor = 0.0;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

double act(const std::string& name, double x) {
  if (name == "silu") return x / (1.0 + std::exp(-x));
  if (name == "gelu") return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  if (name == "relu") return x > 0 ? x : 0.0;
  // gelu_pytorch_tanh
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

// down · (act(gate · x) ⊙ (up · x)) for one token.
Vec mlp(const std::vector<float>& gate, const std::vector<float>& up, const std::vector<float>& down, std::int64_t H,
        std::int64_t I, const float* x, const std::string& act_name) {
  Vec h(I), y(H, 0.0);
  for (std::int64_t i = 0; i < I; ++i) {
    double g = 0, u = 0;
    for (std::int64_t c = 0; c < H; ++c) {
      g += double(gate[i * H + c]) * x[c];
      u += double(up[i * H + c]) * x[c];
    }
    h[i] = act(act_name, g) * u;
  }
  for (std::int64_t c = 0; c < H; ++c)
    for (std::int64_t i = 0; i < I; ++i) y[c] += double(down[c * I + i]) * h[i];
  return y;
}

// Indices of the k largest values, ties to the lower index.
std::vector<int> largest(const Vec& v, int k) {
  std::vector<int> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return v[a] > v[b]; });
  idx.resize(k);
  return idx;
}

struct Choice {
  std::vector<int> experts;
  Vec weights;
};

Choice reference_route(const examples::RandomMoeSpec& s, const examples::MoeLayerArrays& a, const float* x) {
  const std::int64_t H = s.hidden, E = s.experts;
  Vec logits(E, 0.0);
  for (std::int64_t e = 0; e < E; ++e)
    for (std::int64_t c = 0; c < H; ++c) logits[e] += double(a.router[e * H + c]) * x[c];
  Choice ch;
  if (s.arch == Architecture::kDeepseekV3) {
    Vec score(E), biased(E);
    for (std::int64_t e = 0; e < E; ++e) {
      score[e] = 1.0 / (1.0 + std::exp(-logits[e]));
      biased[e] = score[e] + a.bias[e];
    }
    const std::int64_t per = E / s.n_group;
    Vec group(s.n_group);
    for (std::int64_t g = 0; g < s.n_group; ++g) {
      Vec members(biased.begin() + g * per, biased.begin() + (g + 1) * per);
      auto top2 = largest(members, 2);
      group[g] = members[top2[0]] + members[top2[1]];
    }
    auto keep = largest(group, static_cast<int>(s.topk_group));
    Vec masked(E, -INFINITY);
    for (int g : keep)
      for (std::int64_t e = g * per; e < (g + 1) * per; ++e) masked[e] = biased[e];
    ch.experts = largest(masked, static_cast<int>(s.top_k));
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
  ch.experts = largest(p, static_cast<int>(s.top_k));
  const bool renorm = s.arch == Architecture::kMixtral || s.norm_topk_prob;
  double sum = 0;
  for (int e : ch.experts) sum += p[e];
  for (int e : ch.experts) ch.weights.push_back(renorm ? p[e] / sum : p[e]);
  return ch;
}

// Dense reference over all tokens. With a capacity factor, each rank's block of
// tokens admits at most ceil(cf * T_r * k / E) slots per expert, first
// choices first, then in token order.
std::vector<double> reference_forward(const Case& c, const examples::MoeLayerArrays& a, const std::vector<float>& x,
                                      int ranks, std::int64_t* dropped) {
  const auto& s = c.spec;
  const std::int64_t H = s.hidden, T = c.tokens, K = s.top_k, E = s.experts;
  std::vector<Choice> choices;
  for (std::int64_t t = 0; t < T; ++t) choices.push_back(reference_route(s, a, &x[t * H]));
  std::vector<std::vector<bool>> kept(T, std::vector<bool>(K, true));
  *dropped = 0;
  if (c.capacity_factor > 0) {
    for (int r = 0; r < ranks; ++r) {
      const std::int64_t b = r * (T / ranks) + std::min<std::int64_t>(r, T % ranks);
      const std::int64_t n = T / ranks + (r < T % ranks ? 1 : 0);
      const auto cap = static_cast<std::int64_t>(std::ceil(c.capacity_factor * double(n * K) / double(E)));
      std::vector<std::int64_t> used(E, 0);
      for (std::int64_t j = 0; j < K; ++j)
        for (std::int64_t t = b; t < b + n; ++t)
          if (used[choices[t].experts[j]]++ >= cap) kept[t][j] = false, ++*dropped;
    }
  }
  std::vector<double> y(T * H, 0.0);
  const std::int64_t Is = s.arch == Architecture::kQwen2Moe     ? s.shared_inter
                          : s.arch == Architecture::kDeepseekV3 ? s.inter * s.n_shared_experts
                                                                : 0;
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t j = 0; j < K; ++j) {
      if (!kept[t][j]) continue;
      const int e = choices[t].experts[j];
      Vec o = mlp(a.gate[e], a.up[e], a.down[e], H, s.inter, &x[t * H], s.hidden_act);
      for (std::int64_t h = 0; h < H; ++h) y[t * H + h] += choices[t].weights[j] * o[h];
    }
    if (Is > 0) {
      Vec o = mlp(a.shared_gate, a.shared_up, a.shared_down, H, Is, &x[t * H], s.hidden_act);
      double scale = 1.0;
      if (!a.shared_expert_gate.empty()) {
        double dot = 0;
        for (std::int64_t h = 0; h < H; ++h) dot += double(a.shared_expert_gate[h]) * x[t * H + h];
        scale = 1.0 / (1.0 + std::exp(-dot));
      }
      for (std::int64_t h = 0; h < H; ++h) y[t * H + h] += scale * o[h];
    }
  }
  return y;
}

std::string shared_temp_dir(int rank) {
  char path[256] = {0};
  if (rank == 0) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "sy_moe_XXXXXX").string();
    std::copy(tmpl.begin(), tmpl.end(), path);
    if (mkdtemp(path) == nullptr) path[0] = 0;
  }
  MPI_Bcast(path, sizeof(path), MPI_CHAR, 0, MPI_COMM_WORLD);
  return path;
}

class MoeDistributed : public ::testing::TestWithParam<Case> {};

TEST_P(MoeDistributed, MatchesDenseReference) {
  const Case& c = GetParam();
  comm::MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  const std::string dir = shared_temp_dir(me);
  ASSERT_FALSE(dir.empty());
  std::vector<examples::MoeLayerArrays> arrays;
  if (me == 0) arrays = examples::write_random_moe_checkpoint(c.spec, dir);
  MPI_Barrier(MPI_COMM_WORLD);

  const auto config = layers::load_model_config(dir);
  layers::Checkpoint ckpt(dir);
  layers::ExpertPlacement placement(config.num_experts, R);
  auto weights = layers::load_moe_weights(ckpt, config, c.layer, placement.first_expert(me), placement.num_local(me));
  layers::MoeLayer layer(config, std::move(weights), placement, me,
                         layers::MoeLayerOptions{.capacity = {c.capacity_factor}});

  const std::int64_t H = c.spec.hidden, T = c.tokens;
  const auto x = examples::random_matrix(T, H, 99 + c.spec.seed);
  const std::int64_t begin = me * (T / R) + std::min<std::int64_t>(me, T % R);
  const std::int64_t rows = T / R + (me < T % R ? 1 : 0);
  std::vector<float> y(rows * H);
  layers::ForwardStats stats;
  layer.forward(comm, x.data() + begin * H, rows, y.data(), &stats);

  std::vector<int> counts(R), displs(R);
  for (int r = 0; r < R; ++r) {
    displs[r] = static_cast<int>((r * (T / R) + std::min<std::int64_t>(r, T % R)) * H);
    counts[r] = static_cast<int>((T / R + (r < T % R ? 1 : 0)) * H);
  }
  std::vector<float> all(me == 0 ? T * H : 0);
  MPI_Gatherv(y.data(), static_cast<int>(y.size()), MPI_FLOAT, all.data(), counts.data(), displs.data(), MPI_FLOAT, 0,
              MPI_COMM_WORLD);
  EXPECT_EQ(stats.num_tokens, T);
  EXPECT_EQ(std::accumulate(stats.expert_load.begin(), stats.expert_load.end(), std::int64_t{0}), T * c.spec.top_k);
  if (me == 0) {
    std::int64_t dropped = 0;
    const auto ref = reference_forward(c, arrays[c.layer], x, R, &dropped);
    EXPECT_EQ(stats.num_dropped, dropped);
    if (c.capacity_factor > 0) {
      EXPECT_GT(dropped, 0) << "the capacity case should drop something";
    }
    double max_err = 0, max_ref = 0;
    for (std::int64_t i = 0; i < T * H; ++i) {
      max_err = std::max(max_err, std::abs(all[i] - ref[i]));
      max_ref = std::max(max_ref, std::abs(ref[i]));
    }
    EXPECT_GT(max_ref, 1e-2) << "reference output is all but zero: the test would be vacuous";
    EXPECT_LE(max_err / max_ref, 1e-5) << "max abs error " << max_err << " vs max |ref| " << max_ref;
    std::filesystem::remove_all(dir);
  }
}

examples::RandomMoeSpec spec(Architecture arch, bool fused, int shards, std::uint64_t seed) {
  examples::RandomMoeSpec s;
  s.arch = arch;
  s.fused = fused;
  s.shards = shards;
  s.seed = seed;
  s.layers = 3;
  if (arch == Architecture::kDeepseekV3) s.top_k = 3;
  if (arch == Architecture::kQwen2Moe || arch == Architecture::kQwen3Moe) {
    s.mlp_only_layers = {0};
    s.norm_topk_prob = arch == Architecture::kQwen3Moe;
    s.top_k = 3;
  }
  return s;
}

std::vector<Case> cases() {
  std::vector<Case> out;
  const std::pair<Architecture, const char*> archs[] = {{Architecture::kMixtral, "mixtral"},
                                                        {Architecture::kQwen2Moe, "qwen2_moe"},
                                                        {Architecture::kQwen3Moe, "qwen3_moe"},
                                                        {Architecture::kDeepseekV3, "deepseek_v3"}};
  std::uint64_t seed = 1;
  for (auto [arch, name] : archs)
    for (bool fused : {false, true})
      out.push_back({std::string(name) + (fused ? "_fused" : "_per_expert"), spec(arch, fused, fused ? 1 : 3, seed++)});
  Case bf16{"mixtral_bf16_gelu", spec(Architecture::kMixtral, false, 2, 21)};
  bf16.spec.dtype = layers::DType::kBF16;
  bf16.spec.hidden_act = "gelu";
  out.push_back(bf16);
  Case f16{"qwen2_moe_f16_uneven_experts", spec(Architecture::kQwen2Moe, true, 2, 22)};
  f16.spec.dtype = layers::DType::kF16;
  f16.spec.experts = 7;  // uneven blocks at 2, 3 and 4 ranks
  out.push_back(f16);
  Case few{"deepseek_v3_fewer_tokens_than_ranks", spec(Architecture::kDeepseekV3, false, 1, 23)};
  few.tokens = 3;
  out.push_back(few);
  Case cap{"mixtral_capacity_factor", spec(Architecture::kMixtral, false, 1, 24)};
  cap.capacity_factor = 0.5;
  cap.tokens = 64;
  out.push_back(cap);
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, MoeDistributed, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
