// Replicated experts: with copies of hot experts on several ranks, the layer
// gives the same outputs and, once the copies' gradients are summed, the same
// gradients as with a single copy of each expert; each copy computes the rows
// the replica choice rule sends it, and every copy ends with the same
// gradient. The reference is the same layer with contiguous blocks.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "../support/compare.hpp"
#include "../support/mpi_support.hpp"
#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/formats/checkpoint.hpp"
#include "switchyard/formats/moe_checkpoint.hpp"
#include "switchyard/formats/random_checkpoint.hpp"
#include "switchyard/layers/moe_layer.hpp"

namespace {

using namespace switchyard;

using test_support::rel_norm_error;

struct LayerRun {
  std::vector<float> y, dx;
  std::map<std::string, std::vector<float>> grads;  // by name, this rank's
  layers::StepTraffic traffic;
};

LayerRun run_layer(comm::MpiCommunicator& comm, formats::Checkpoint& ckpt, const formats::ModelConfig& config,
                   const layers::ExpertPlacement& placement, const layers::ExchangeLayout& exchange, std::int64_t T) {
  const int me = comm.rank();
  const std::int64_t H = config.hidden_size, layer_index = 1;
  layers::MoeLayer layer(formats::moe_config(config),
                         formats::load_moe_weights(ckpt, config, layer_index, placement.local_experts(me)), placement,
                         me, layers::MoeLayerOptions{.aux_loss_coef = 0.01, .exchange = exchange});
  const auto x = formats::random_matrix(T, H, 700 + me), g = formats::random_matrix(T, H, 800 + me);
  LayerRun r;
  r.y.assign(static_cast<std::size_t>(T * H), 0.0f);
  r.dx.assign(static_cast<std::size_t>(T * H), 0.0f);
  layers::MoeForwardContext ctx;
  layer.initialize(comm, {.max_tokens = T, .chunks = 2, .training = true}, &ctx);
  const layers::StepSchedule schedule{.chunks = 2};
  layer.run(comm, {.x = x.data(), .num_tokens = T, .y = r.y.data(), .context = &ctx, .schedule = schedule});
  layer.run(comm, layers::MoeBackwardArguments{
                      .context = &ctx, .grad_y = g.data(), .grad_x = r.dx.data(), .schedule = schedule});
  for (Parameter* p : layer.parameters()) r.grads[p->name] = p->grad;
  r.traffic = layer.traffic(&ctx);
  return r;
}

// Experts 0 and 1 on every rank; the rest in contiguous blocks.
layers::ExpertPlacement replicated(std::int64_t E, int R) {
  const layers::ExpertPlacement blocks(E, R);
  layers::ExpertHolders h{.num_ranks = R, .num_experts = E, .ranks_of_expert = {}};
  for (std::int64_t e = 0; e < E; ++e) {
    h.ranks_of_expert.push_back({blocks.owner(e)});
    if (e < 2)
      for (int r = 0; r < R; ++r)
        if (r != blocks.owner(e)) h.ranks_of_expert.back().push_back(r);
    std::sort(h.ranks_of_expert.back().begin(), h.ranks_of_expert.back().end());
  }
  return layers::ExpertPlacement(h);
}

TEST(Replicas, SameOutputsAndSummedGradientsAsOneCopy) {
  comm::MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  const std::string dir = test_support::shared_temp_dir(me);
  ASSERT_FALSE(dir.empty());
  const std::string mine = dir + "/replicas" + std::to_string(me);
  formats::RandomMoeSpec s;
  s.arch = formats::Architecture::kMixtral;
  s.hidden = 24;
  s.inter = 20;
  s.experts = 8;
  s.top_k = 3;
  s.seed = 91;
  formats::write_random_moe_checkpoint(s, mine);
  const auto config = formats::load_model_config(mine);
  formats::Checkpoint ckpt(mine);
  const std::int64_t T = 37 + 5 * me;
  layers::NodeOfRank two_nodes;
  for (int r = 0; r < R; ++r) two_nodes.push_back(r % std::min(2, R));
  const layers::ExpertPlacement one_copy(config.num_experts, R), copies = replicated(config.num_experts, R);
  ASSERT_EQ(copies.replicated(), R > 1);
  for (const layers::ExchangeKind kind : {layers::ExchangeKind::kFlat, layers::ExchangeKind::kHierarchical}) {
    const layers::ExchangeLayout exchange{.kind = kind, .node_of_rank = two_nodes};
    const std::string where = kind == layers::ExchangeKind::kFlat ? "flat" : "hierarchical";
    const LayerRun want = run_layer(comm, ckpt, config, one_copy, exchange, T);
    const LayerRun got = run_layer(comm, ckpt, config, copies, exchange, T);
    EXPECT_LE(rel_norm_error(got.y, want.y), 1e-6) << "y, " << where;
    EXPECT_LE(rel_norm_error(got.dx, want.dx), 1e-6) << "dL/dx, " << where;
    // The router's gradient is each rank's part, over the same tokens.
    EXPECT_LE(rel_norm_error(got.grads.at("gate.weight"), want.grads.at("gate.weight")), 1e-5) << where;
    // Every copy of expert e holds the gradient of e's single copy on its owner.
    for (std::int64_t e = 0; e < config.num_experts; ++e)
      for (const char* part : {".gate_up_proj", ".down_proj"}) {
        const std::string name = "experts." + std::to_string(e) + part;
        std::vector<float> single = one_copy.owner(e) == me ? want.grads.at(name) : std::vector<float>{};
        std::size_t n = single.size();
        MPI_Allreduce(MPI_IN_PLACE, &n, 1, MPI_UNSIGNED_LONG, MPI_MAX, MPI_COMM_WORLD);
        single.resize(n, 0.0f);
        MPI_Allreduce(MPI_IN_PLACE, single.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (copies.local_index(me, e) < 0) continue;
        EXPECT_LE(rel_norm_error(got.grads.at(name), single), 1e-5) << name << " on rank " << me << ", " << where;
      }
    // Tokens of expert 0 stay on their own rank (every rank holds a copy).
    const std::int32_t local0 = copies.local_index(me, 0);
    ASSERT_GE(local0, 0);
    std::int64_t routed0 = got.traffic.expert_slots.at(0);
    EXPECT_EQ(got.traffic.local_expert_rows.at(static_cast<std::size_t>(local0)), routed0)
        << "rank " << me << " computes its own tokens of expert 0, " << where;
  }
  MPI_Barrier(MPI_COMM_WORLD);
  std::filesystem::remove_all(mine);
}

// A placement whose copies sit on other nodes: a token picks the cheapest
// link, and among equally cheap copies alternates by token index.
TEST(Replicas, TokensPickTheNearestCopyAndAlternate) {
  layers::ExpertHolders h{.num_ranks = 4, .num_experts = 4, .ranks_of_expert = {{0, 1}, {2, 3}, {1, 2}, {3}}};
  const layers::ExpertPlacement p(h);
  const layers::NodeOfRank nodes = {0, 0, 1, 1};
  // From rank 0: expert 1's copies are both on the other node: alternate.
  EXPECT_EQ(layers::holder_for_token(h, 1, 0, 0, nodes), 2);
  EXPECT_EQ(layers::holder_for_token(h, 1, 0, 1, nodes), 3);
  // From rank 0: expert 2's copy on rank 1 shares the node: always it.
  EXPECT_EQ(layers::holder_for_token(h, 2, 0, 0, nodes), 1);
  EXPECT_EQ(layers::holder_for_token(h, 2, 0, 1, nodes), 1);
  EXPECT_EQ(p.local_experts(1), (std::vector<std::int64_t>{0, 2}));
  EXPECT_EQ(p.local_index(2, 2), 1);
  EXPECT_EQ(p.owner(2), 1);
  EXPECT_THROW(
      layers::ExpertPlacement(layers::ExpertHolders{.num_ranks = 3, .num_experts = 2, .ranks_of_expert = {{0}, {1}}}),
      Error);  // rank 2 holds nothing
}

}  // namespace
