// Outputs and gradients do not depend on how a step is scheduled: every
// chunk count 1..8, overlap on or off, 1..3 compute workers give the same
// bits as the plain one-chunk sequence (which test_moe_distributed and
// test_moe_gradients check against float64 references). Also: a failing task
// on one rank ends the step on every rank with its message, without a hang.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "../support/compare.hpp"
#include "../support/mpi_support.hpp"
#include "../support/rank_layer.hpp"
#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/formats/checkpoint.hpp"
#include "switchyard/formats/moe_checkpoint.hpp"
#include "switchyard/formats/random_checkpoint.hpp"
#include "switchyard/layers/moe_layer.hpp"
#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/task_graph.hpp"

namespace {

using namespace switchyard;
using formats::Architecture;

struct Result {
  std::vector<float> y, dx;
  std::vector<std::vector<float>> grads;  // parameters() order
  std::vector<std::int64_t> load;
  std::vector<double> stats;  // aux, z, topology, entropy, importance and load losses, gate masses
  std::vector<std::int64_t> experts_per_token;
};

// The router of a case: the architecture's, top-p over it, or noisy top-k.
enum class Router { kPlain, kTopP, kNoisy };

struct Case {
  Architecture arch;
  Router router = Router::kPlain;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << formats::architecture_name(c.arch)
      << (c.router == Router::kTopP    ? "_top_p"
          : c.router == Router::kNoisy ? "_noisy"
                                       : "");
}

formats::RandomMoeSpec spec(Architecture arch, int seed) {
  formats::RandomMoeSpec s;
  s.arch = arch;
  s.hidden = 24;
  s.inter = 20;
  s.experts = 8;
  s.top_k = 2;
  s.shared_inter = arch == Architecture::kMixtral ? 0 : 16;
  s.seed = seed;
  return s;
}

using test_support::rel_norm_error;

// bf16 rows on the wire: the results move (the flag took effect) but stay
// within bf16 rounding of float32 wires (||a - b|| / ||b||; observed ~2e-3).
void expect_bf16_wire_close(const Result& f32, const Result& bf16, bool training) {
  constexpr double kTolerance = 1e-2;
  EXPECT_NE(bf16.y, f32.y) << "--wire bf16 changed nothing";
  EXPECT_LE(rel_norm_error(bf16.y, f32.y), kTolerance) << "y";
  if (!training) return;
  EXPECT_LE(rel_norm_error(bf16.dx, f32.dx), kTolerance) << "dL/dx";
  for (std::size_t i = 0; i < f32.grads.size(); ++i) {
    bool any = false;
    for (float v : f32.grads[i]) any = any || v != 0.0f;
    if (any) {
      EXPECT_LE(rel_norm_error(bf16.grads[i], f32.grads[i]), kTolerance) << "gradient " << i;
    }
  }
}

class ScheduleIndependence : public ::testing::TestWithParam<Case> {};

TEST_P(ScheduleIndependence, OutputsAndGradientsAreBitwiseEqualForEverySchedule) {
  comm::MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  const std::string dir = test_support::shared_temp_dir(me);
  ASSERT_FALSE(dir.empty());
  const std::string mine = dir + "/rank" + std::to_string(me);
  const Case c = GetParam();
  const auto s = spec(c.arch, 40 + static_cast<int>(c.arch) + 10 * static_cast<int>(c.router));
  formats::write_random_moe_checkpoint(s, mine);
  const auto config = formats::load_model_config(mine);
  formats::Checkpoint ckpt(mine);
  layers::ExpertPlacement placement(config.num_experts, R);
  const std::int64_t layer_index = s.layers - 1, H = s.hidden;
  // Uneven token counts per rank, one rank with fewer tokens than chunks.
  const std::int64_t T = me == 1 ? 5 : 53 + 7 * me;
  const auto x = formats::random_matrix(T, H, 300 + me);
  const auto g = formats::random_matrix(T, H, 400 + me);

  // A made-up link cost per rank, so that the topology loss is on too.
  layers::MoeConfig moe = formats::moe_config(config);
  for (std::int64_t e = 0; e < moe.num_experts; ++e)
    moe.router.link_cost.push_back(static_cast<float>((e + me) % 3) / 2.0f);
  if (c.router == Router::kTopP) moe.router.top_p = 0.3f;  // observed: tokens use 1 or 2 experts
  const bool noisy = c.router == Router::kNoisy;
  // Flat on one node; then two interleaved virtual nodes, flat as the
  // reference and hierarchical against it (the same sums, the same bits).
  layers::NodeOfRank two_nodes;
  for (int r = 0; r < R; ++r) two_nodes.push_back(r % std::min(2, R));
  const layers::ExchangeLayout layouts[] = {{},
                                            {.kind = layers::ExchangeKind::kFlat, .node_of_rank = two_nodes},
                                            {.kind = layers::ExchangeKind::kHierarchical, .node_of_rank = two_nodes}};
  Result wants[2];
  for (bool training : {true, false})
    for (const layers::ExchangeLayout& layout : layouts) {
      const bool reference = layout.kind == layers::ExchangeKind::kFlat;
      layers::MoeWeights weights =
          formats::load_moe_weights(ckpt, config, layer_index, placement.first_expert(me), placement.num_local(me));
      if (noisy) weights.router_noise = formats::random_matrix(s.experts, H, 500);
      layers::MoeLayer layer(moe, std::move(weights), placement, me,
                             layers::MoeLayerOptions{.experts = {.inference_only = !training},
                                                     .aux_loss_coef = 0.01,
                                                     .z_loss_coef = 0.001,
                                                     .topology_loss_coef = 0.05,
                                                     .entropy_loss_coef = 0.02,
                                                     .noisy_gating = {noisy, 0.1, 0.1},
                                                     .exchange = layout});
      auto run = [&](const layers::StepSchedule& schedule) {
        Result r;
        r.y.assign(T * H, -1.0f);
        r.dx.assign(T * H, -1.0f);
        for (auto* p : layer.parameters()) std::fill(p->grad.begin(), p->grad.end(), 0.0f);
        layers::ForwardStats stats;
        layers::MoeForwardContext ctx;
        layers::MoeForwardContext* kept = training ? &ctx : nullptr;
        layer.initialize(comm, {T, schedule.chunks, training, schedule.wire_bf16}, kept);
        layer.run(comm, {.x = x.data(),
                         .num_tokens = T,
                         .y = r.y.data(),
                         .context = kept,
                         .stats = &stats,
                         .schedule = schedule,
                         .gating_noise = noisy && training,
                         .noise_key = 5});
        if (training) {
          layer.run(comm, layers::MoeBackwardArguments{
                              .context = &ctx, .grad_y = g.data(), .grad_x = r.dx.data(), .schedule = schedule});
          for (auto* p : layer.parameters()) r.grads.push_back(p->grad);
        }
        r.load = stats.expert_load;
        r.stats = {stats.aux_loss,        stats.z_loss,    stats.topology_loss, stats.entropy_loss,
                   stats.importance_loss, stats.load_loss, stats.gate_mass,     stats.gate_mass_top_k};
        r.experts_per_token = stats.experts_per_token;
        return r;
      };
      // Rows on the wire in float32 or bf16: each its own reference.
      if (reference) {
        wants[0] = run({});
        wants[1] = run({.wire_bf16 = true});
        expect_bf16_wire_close(wants[0], wants[1], training);
        if (c.router == Router::kTopP) {
          const auto& h = wants[0].experts_per_token;
          EXPECT_TRUE(h.size() == 3 && h[1] > 0 && h[2] > 0) << "top-p should give tokens 1 and 2 experts";
        }
        if (noisy && training) {
          EXPECT_GT(wants[0].stats[5], 0.0) << "no load loss: the noisy router is off";
        }
      }
      // Two nodes: the flat reference's schedules are the one node's; test fewer.
      const bool two = !layout.node_of_rank.empty();
      if (two && reference) continue;
      for (std::size_t workers = 1; workers <= (two ? 2u : 3u); ++workers) {
        Executor executor(workers);
        for (int chunks = 1; chunks <= 8; chunks += two ? 3 : 1)
          for (bool overlap : {false, true})
            for (bool wire_bf16 : {false, true}) {
              const Result& want = wants[wire_bf16];
              const Result got =
                  run({.chunks = chunks, .overlap = overlap, .executor = &executor, .wire_bf16 = wire_bf16});
              const std::string where = std::string(training ? "training" : "inference") +
                                        (two ? (reference ? " flat, 2 nodes" : " hierarchical, 2 nodes") : "") +
                                        " chunks " + std::to_string(chunks) + " overlap " + std::to_string(overlap) +
                                        " workers " + std::to_string(workers) + " wire " + (wire_bf16 ? "bf16" : "f32");
              ASSERT_EQ(std::memcmp(got.y.data(), want.y.data(), want.y.size() * sizeof(float)), 0) << "y, " << where;
              EXPECT_EQ(got.load, want.load) << where;
              EXPECT_EQ(got.stats, want.stats) << "losses, gate mass; " << where;
              EXPECT_EQ(got.experts_per_token, want.experts_per_token) << where;
              if (!training) continue;
              ASSERT_EQ(std::memcmp(got.dx.data(), want.dx.data(), want.dx.size() * sizeof(float)), 0)
                  << "dL/dx, " << where;
              ASSERT_EQ(got.grads.size(), want.grads.size());
              for (std::size_t i = 0; i < want.grads.size(); ++i)
                ASSERT_EQ(std::memcmp(got.grads[i].data(), want.grads[i].data(), want.grads[i].size() * sizeof(float)),
                          0)
                    << layer.parameters()[i]->name << " gradient, " << where;
            }
      }
    }
  MPI_Barrier(MPI_COMM_WORLD);
  std::filesystem::remove_all(mine);
}

// Arguments that are wrong on one rank only (a null output) must not hang
// the others: every rank throws can_implement's message, naming the argument.
TEST(ScheduleFailure, BadArgumentsOnOneRankFailEveryRank) {
  comm::MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  const std::string dir = test_support::shared_temp_dir(me);
  ASSERT_FALSE(dir.empty());
  const auto s = spec(Architecture::kMixtral, 78);
  test_support::RankLayer set_up(dir + "/badarg" + std::to_string(me), s, R, me);
  layers::MoeLayer& layer = set_up.layer;
  const std::int64_t T = 24, H = s.hidden;
  const auto x = formats::random_matrix(T, H, 600 + me);
  std::vector<float> y(T * H), dx(T * H);
  Executor executor(2);
  for (bool overlap : {false, true}) {
    const layers::StepSchedule schedule{.chunks = 2, .overlap = overlap, .executor = &executor};
    layers::MoeForwardContext ctx;
    layer.initialize(comm, {.max_tokens = T, .chunks = 2, .training = true}, &ctx);
    float* out = me == 0 ? nullptr : y.data();
    EXPECT_EQ(layer.can_implement(layers::MoeForwardArguments{.x = x.data(), .num_tokens = T, .y = out}).ok(), me != 0);
    try {
      layer.run(comm, {.x = x.data(), .num_tokens = T, .y = out, .context = &ctx, .schedule = schedule});
      FAIL() << "forward did not throw on rank " << me;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("y: is null for 24 tokens"), std::string::npos) << e.what();
    }
    // Then a good forward, and a backward whose gradient is null on rank 0.
    layer.run(comm, {.x = x.data(), .num_tokens = T, .y = y.data(), .context = &ctx, .schedule = schedule});
    try {
      layer.run(
          comm,
          layers::MoeBackwardArguments{
              .context = &ctx, .grad_y = me == 0 ? nullptr : x.data(), .grad_x = dx.data(), .schedule = schedule});
      FAIL() << "backward did not throw on rank " << me;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("grad_y: is null"), std::string::npos) << e.what();
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

INSTANTIATE_TEST_SUITE_P(Archs, ScheduleIndependence,
                         ::testing::Values(Case{Architecture::kMixtral}, Case{Architecture::kQwen2Moe},
                                           Case{Architecture::kDeepseekV3}, Case{Architecture::kLlama4},
                                           Case{Architecture::kMixtral, Router::kTopP},
                                           Case{Architecture::kQwen3Moe, Router::kNoisy}),
                         [](const auto& info) { return ::testing::PrintToString(info.param); });

// The last rank's experts cannot run a backward (built for inference), so
// its experts_grad tasks throw while the other ranks' succeed: every rank
// must end the step with that message, for every schedule, and not hang
// (ctest's timeout would catch a hang).
TEST(ScheduleFailure, FailingTaskOnOneRankStopsTheStepOnEveryRank) {
  comm::MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  const std::string dir = test_support::shared_temp_dir(me);
  ASSERT_FALSE(dir.empty());
  const auto s = spec(Architecture::kQwen2Moe, 77);
  test_support::RankLayer set_up(dir + "/fail" + std::to_string(me), s, R, me,
                                 layers::MoeLayerOptions{.experts = {.inference_only = me == R - 1}});
  layers::MoeLayer& layer = set_up.layer;
  const std::int64_t T = 40, H = s.hidden;
  const auto x = formats::random_matrix(T, H, 500 + me);
  std::vector<float> y(T * H), dx(T * H);
  Executor executor(2);
  for (int chunks : {1, 3})
    for (bool overlap : {false, true}) {
      const layers::StepSchedule schedule{.chunks = chunks, .overlap = overlap, .executor = &executor};
      layers::MoeForwardContext ctx;
      layer.initialize(comm, {.max_tokens = T, .chunks = chunks, .training = true}, &ctx);
      layer.run(comm, {.x = x.data(), .num_tokens = T, .y = y.data(), .context = &ctx, .schedule = schedule});
      try {
        layer.run(comm, layers::MoeBackwardArguments{
                            .context = &ctx, .grad_y = x.data(), .grad_x = dx.data(), .schedule = schedule});
        FAIL() << "backward did not throw on rank " << me;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("inference only"), std::string::npos) << e.what();
      }
      // The communicator still works: the step after the failure runs.
      layer.initialize(comm, {.max_tokens = T, .chunks = chunks});
      layer.run(comm, {.x = x.data(), .num_tokens = T, .y = y.data(), .schedule = schedule});
    }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
