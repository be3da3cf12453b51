// The distributed MoE layer with bf16 training experts: output and every
// gradient against the float64 reference layer (support/moe_reference.hpp,
// gradients by central differences), at any rank count, within a bf16
// tolerance. test_bf16_experts checks the experts alone, more tightly.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <functional>
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
using test_support::Vec;

constexpr std::int64_t kTokens = 9;

// Normwise relative error allowed here: the experts' own bf16 error (~4e-3,
// see test_bf16_experts) on tensors of a few dozen elements, where a norm
// averages over few roundings. Observed: up to 6.7e-3 (1-4 ranks).
constexpr double kTolerance = 1.5e-2;

// ||got - want|| / ||want||, or ||got|| where want is zero (an expert no
// token chose has no gradient).
double rel_error(const float* got, const Vec& want) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

formats::RandomMoeSpec spec_for(Architecture arch, std::uint64_t seed) {
  formats::RandomMoeSpec s;
  s.arch = arch;
  s.seed = seed;
  s.hidden = 16;
  s.inter = 12;
  s.shared_inter = 10;
  s.experts = 4;
  s.top_k = 2;
  s.n_group = 2;
  s.topk_group = 1;
  s.scale = 0.4f;
  return s;
}

class Bf16MoeLayer : public ::testing::TestWithParam<Architecture> {};

TEST_P(Bf16MoeLayer, OutputAndGradientsMatchFloat64) {
  const auto spec = spec_for(GetParam(), 70 + static_cast<std::uint64_t>(GetParam()));
  comm::MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  const std::string dir = test_support::shared_temp_dir(me);
  ASSERT_FALSE(dir.empty());
  const std::string mine = dir + "/rank" + std::to_string(me);
  const auto arrays = formats::write_random_moe_checkpoint(spec, mine);
  const std::int64_t layer = spec.layers - 1, H = spec.hidden, T = kTokens;

  const auto config = formats::load_model_config(mine);
  formats::Checkpoint ckpt(mine);
  layers::ExpertPlacement placement(config.num_experts, R);
  layers::MoeLayerOptions options{.experts = {.weight_type = kernels::WeightType::kBF16}};
  layers::MoeLayer moe(
      formats::moe_config(config),
      formats::load_moe_weights(ckpt, config, layer, placement.first_expert(me), placement.num_local(me)), placement,
      me, options);

  const auto x = formats::random_matrix(T, H, 5), g = formats::random_matrix(T, H, 6);
  const std::int64_t begin = test_support::block_begin(T, R, me), rows = test_support::block_rows(T, R, me);
  std::vector<float> y(rows * H), dx(rows * H);
  layers::ForwardStats stats;
  layers::MoeForwardContext ctx;
  moe.initialize(comm, {.max_tokens = rows, .training = true}, &ctx);
  moe.run(comm, {.x = x.data() + begin * H, .num_tokens = rows, .y = y.data(), .context = &ctx, .stats = &stats});
  moe.run(comm, layers::MoeBackwardArguments{.context = &ctx, .grad_y = g.data() + begin * H, .grad_x = dx.data()});
  auto params = moe.parameters();
  for (auto* p : params)
    if (p->replicated) comm.allreduce_sum(p->grad.data(), p->grad.size());

  auto ref = test_support::ref_params(arrays[layer]);
  Vec xd = test_support::to_double(x), gd = test_support::to_double(g);
  const auto out = test_support::ref_forward(spec, ref, xd, T);
  auto mine_rows = [&](const Vec& v) { return Vec(v.begin() + begin * H, v.begin() + (begin + rows) * H); };
  if (rows > 0) {
    EXPECT_LE(rel_error(y.data(), mine_rows(out.y)), kTolerance) << "output on rank " << me;
  }

  auto loss = [&] {
    const auto o = test_support::ref_forward(spec, ref, xd, T);
    double l = 0;
    for (std::size_t i = 0; i < gd.size(); ++i) l += gd[i] * o.y[i];
    return l;
  };
  const Vec grad_x = finite_diff(loss, &xd);
  if (rows > 0) {
    EXPECT_LE(rel_error(dx.data(), mine_rows(grad_x)), kTolerance) << "dL/dx on rank " << me;
  }
  for (auto* p : params) {
    const std::string& n = p->name;
    const Vec want = test_support::reference_gradient(n, loss, &ref);
    ASSERT_EQ(want.size(), p->grad.size()) << n;
    EXPECT_LE(rel_error(p->grad.data(), want), kTolerance) << n << " on rank " << me;
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (me == 0) std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Architectures, Bf16MoeLayer,
                         ::testing::Values(Architecture::kMixtral, Architecture::kQwen2Moe, Architecture::kQwen3Moe,
                                           Architecture::kDeepseekV3),
                         [](const auto& info) { return std::string(formats::architecture_name(info.param)); });

}  // namespace
