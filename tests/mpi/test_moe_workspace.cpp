// The operator protocol's promise: after initialize(), a step's buffers never
// outgrow the workspace, whatever the routing, and routing and planning into
// reserved plans allocate nothing at all.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <new>
#include <string>
#include <vector>

#include "../support/mpi_support.hpp"
#include "../support/rank_layer.hpp"
#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/formats/checkpoint.hpp"
#include "switchyard/formats/moe_checkpoint.hpp"
#include "switchyard/formats/random_checkpoint.hpp"
#include "switchyard/layers/moe_layer.hpp"
#include "switchyard/runtime/task_graph.hpp"

// Every operator new of this program is counted while `g_counting` is set.
namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace

// NOTE: GCC cannot see that this new and delete pair up through malloc/free.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t bytes) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(bytes ? bytes : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace {

using namespace switchyard;
using formats::Architecture;

formats::RandomMoeSpec spec(Architecture arch) {
  formats::RandomMoeSpec s;
  s.arch = arch;
  s.hidden = 16;
  s.inter = 12;
  s.experts = 8;
  s.top_k = 3;
  s.shared_inter = arch == Architecture::kMixtral ? 0 : 8;
  s.seed = 90 + static_cast<int>(arch);
  return s;
}

// Routing and planning into plans reserved for the call allocate nothing:
// no per-token vectors, no fresh plans, no int copies of counts for MPI.
TEST(MoeWorkspace, RouteAndPlanIntoReservedPlansAllocateNothing) {
  comm::MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  const layers::RouterConfig router{.score = layers::ScoreFunction::kSigmoid,
                                    .num_experts = 8,
                                    .top_k = 3,
                                    .n_group = 4,
                                    .topk_group = 2,
                                    .scaling = 2.5f};
  const std::int64_t T = 50;
  std::vector<float> logits(T * 8), bias(8, 0.01f);
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>((i * 37 + me * 11) % 17) / 8.0f;
  layers::ExpertPlacement placement(8, R);
  layers::RoutingPlan routing;
  routing.reserve(T, router.top_k, router.num_experts);
  layers::RouterScratch scratch(router);
  layers::DispatchPlan plan;
  plan.reserve(T, R * T * router.top_k, R * T, placement, me, router.top_k);
  layers::NodeOfRank two_nodes;
  for (int r = 0; r < R; ++r) two_nodes.push_back(r % std::min(2, R));
  for (const layers::ExchangeKind kind : {layers::ExchangeKind::kFlat, layers::ExchangeKind::kHierarchical}) {
    const layers::ExchangeLayout layout{.kind = kind, .node_of_rank = two_nodes};
    // Pass -1 warms up: the communicator builds its MPI type for the slot
    // entries' row size once, on first use.
    for (int pass = -1; pass < 2; ++pass) {
      g_allocations = 0;
      g_counting = true;
      layers::route(router, logits.data(), bias.data(), T, &routing, &scratch);
      layers::plan_dispatch(routing, placement, layers::CapacityPolicy{}, layout, comm, &plan);
      g_counting = false;
      if (pass >= 0) {
        EXPECT_EQ(g_allocations.load(), 0) << "pass " << pass << (plan.hierarchical() ? " hierarchical" : " flat");
      }
    }
  }
  std::int64_t kept = 0;
  for (auto c : plan.send_slot_counts) kept += c;
  EXPECT_EQ(kept, T * router.top_k);  // dropless: every slot planned
}

// The same with node-limited and cost-aware routing on top of the groups.
TEST(MoeWorkspace, NodeLimitedCostAwareRoutingAllocatesNothing) {
  const int me = comm::MpiCommunicator(MPI_COMM_WORLD).rank();
  layers::RouterConfig router{.score = layers::ScoreFunction::kSigmoid,
                              .num_experts = 8,
                              .top_k = 3,
                              .n_group = 4,
                              .topk_group = 2,
                              .scaling = 2.5f};
  router.expert_node = {0, 0, 1, 1, 2, 2, 3, 3};
  router.max_nodes = 2;
  router.selection_penalty = {0.0f, 0.1f, 0.2f, 0.1f, 0.3f, 0.3f, 0.0f, 0.2f};
  router.validate();
  const std::int64_t T = 50;
  std::vector<float> logits(T * 8), bias(8, 0.01f);
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>((i * 37 + me * 11) % 17) / 8.0f;
  layers::RoutingPlan routing;
  routing.reserve(T, router.top_k, router.num_experts);
  layers::RouterScratch scratch(router);
  for (int pass = 0; pass < 2; ++pass) {
    g_allocations = 0;
    g_counting = true;
    layers::route(router, logits.data(), bias.data(), T, &routing, &scratch);
    g_counting = false;
    EXPECT_EQ(g_allocations.load(), 0) << "pass " << pass;
  }
}

// Skewed tokens send (almost) every slot to the same few experts, the worst
// case the workspace is sized for: no buffer of the step reallocates, for
// any schedule, with and without capacity, training and inference.
TEST(MoeWorkspace, SkewedStepsNeverOutgrowTheWorkspace) {
  comm::MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  const std::string dir = test_support::shared_temp_dir(me);
  ASSERT_FALSE(dir.empty());
  Executor executor(2);
  for (Architecture arch : {Architecture::kMixtral, Architecture::kDeepseekV3, Architecture::kLlama4}) {
    const std::string mine = dir + "/ws" + std::to_string(me) + "_" + std::to_string(static_cast<int>(arch));
    const auto s = spec(arch);
    formats::write_random_moe_checkpoint(s, mine);
    const auto config = formats::load_model_config(mine);
    formats::Checkpoint ckpt(mine);
    layers::ExpertPlacement placement(config.num_experts, R);
    for (double capacity : {0.0, 1.25}) {
      layers::MoeLayer layer(
          formats::moe_config(config),
          formats::load_moe_weights(ckpt, config, s.layers - 1, placement.first_expert(me), placement.num_local(me)),
          placement, me, layers::MoeLayerOptions{.capacity = {capacity}});
      // Uneven token counts per rank; every token leans the same way.
      const std::int64_t T = 20 + 9 * me, H = s.hidden;
      auto x = formats::random_matrix(T, H, 700 + me, 0.2f);
      for (std::int64_t t = 0; t < T; ++t) x[t * H] += 4.0f;
      std::vector<float> y(T * H), dx(T * H);
      for (int chunks : {1, 3})
        for (bool wire : {false, true}) {
          const layers::StepSchedule schedule{
              .chunks = chunks, .overlap = chunks > 1, .executor = &executor, .wire_bf16 = wire};
          layers::MoeForwardContext ctx;
          layer.initialize(comm, {T, chunks, true, wire}, &ctx);
          const std::size_t reserved = ctx.workspace_bytes();
          const std::vector<std::int64_t> tokens = [&] {
            std::vector<std::int64_t> v(R, 0);
            v[me] = T;
            comm.allreduce_sum(v.data(), v.size());
            return v;
          }();
          EXPECT_EQ(reserved, layer.workspace_size({T, chunks, true, wire}, tokens));
          for (int step = 0; step < 2; ++step) {
            layer.run(comm, {.x = x.data(), .num_tokens = T, .y = y.data(), .context = &ctx, .schedule = schedule});
            layer.run(comm, layers::MoeBackwardArguments{
                                .context = &ctx, .grad_y = x.data(), .grad_x = dx.data(), .schedule = schedule});
          }
          EXPECT_EQ(ctx.workspace_bytes(), reserved)
              << "chunks " << chunks << " wire " << wire << " capacity " << capacity;
          const auto traffic = ctx.traffic();
          std::int64_t sent = 0;
          for (auto r : traffic.send_rows) sent += r;
          EXPECT_GT(sent, 0);
        }
    }
    std::filesystem::remove_all(mine);
  }
}

// A call larger than the workspace still runs, and its results are those of
// a workspace sized for it.
TEST(MoeWorkspace, CallsLargerThanTheWorkspaceGrowItAndStayCorrect) {
  comm::MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  const std::string dir = test_support::shared_temp_dir(me);
  ASSERT_FALSE(dir.empty());
  const auto s = spec(Architecture::kQwen2Moe);
  test_support::RankLayer set_up(dir + "/grow" + std::to_string(me), s, R, me);
  layers::MoeLayer& layer = set_up.layer;
  const std::int64_t T = 40, H = s.hidden;
  const auto x = formats::random_matrix(T, H, 800 + me);
  std::vector<float> small(T * H), sized(T * H);
  layers::MoeForwardContext a, b;
  layer.initialize(comm, {.max_tokens = 4}, &a);
  const std::size_t before = a.workspace_bytes();
  layer.run(comm, {.x = x.data(), .num_tokens = T, .y = small.data(), .context = &a});
  EXPECT_GT(a.workspace_bytes(), before);
  layer.initialize(comm, {.max_tokens = T}, &b);
  layer.run(comm, {.x = x.data(), .num_tokens = T, .y = sized.data(), .context = &b});
  EXPECT_EQ(std::memcmp(small.data(), sized.data(), small.size() * sizeof(float)), 0);
  // And a run before initialize() is refused, naming what is missing.
  test_support::RankLayer fresh(dir + "/fresh" + std::to_string(me), s, R, me);
  try {
    fresh.layer.run(comm, {.x = x.data(), .num_tokens = T, .y = sized.data()});
    FAIL() << "run before initialize did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("initialize()"), std::string::npos) << e.what();
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
