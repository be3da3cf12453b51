// Expert placement planning: the replica choice rule, the step-time model
// against figures worked out by hand, the planners' limits and results, and
// the placement and routing-statistics files with their refusals.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "switchyard/layers/placement_plan.hpp"
#include "switchyard/runtime/error.hpp"

using namespace switchyard;
using namespace switchyard::layers;

namespace {

// The error message of `fn`, which must throw Error(kInvalidArgument).
template <class Fn>
std::string refusal(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

ExpertHolders holders(int num_ranks, std::vector<std::vector<int>> lists) {
  return {.num_ranks = num_ranks,
          .num_experts = static_cast<std::int64_t>(lists.size()),
          .ranks_of_expert = std::move(lists)};
}

std::filesystem::path temp_file(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / (std::to_string(getpid()) + "_" + name);
  std::ofstream(path) << text;
  return path;
}

// 2 nodes x 2 ranks, 4 experts, over 2 steps (per step: half of these).
const char* kStats = R"({"format":"switchyard-routing-stats","version":1,"command":"train","ranks":4,"experts":4,
  "steps":2,"node_of_rank":[0,0,1,1],"expert_owner":[0,1,2,3],
  "blocks":[{"block":0,"copies":[[4,2,0,2],[0,4,2,0],[2,0,4,0],[0,0,2,6]]}]})";

PlacementCostModel hand_model() {
  return {.node_of_rank = {0, 0, 1, 1},
          .row_seconds = 1.0,
          .row_bytes = 100,
          .same_node_seconds_per_byte = 0.01,
          .other_node_seconds_per_byte = 0.1,
          .expert_bytes = 1000,
          .migration_steps = 10};
}

}  // namespace

TEST(PlacementPlan, ReplicaRulePicksTheCheapestHoldersInTurn) {
  const std::vector<int> nodes = {0, 0, 1, 1};
  const ExpertHolders h = holders(4, {{0}, {1}, {2}, {0, 1}});
  EXPECT_EQ(cheapest_holders(h, 3, 0, nodes), std::vector<int>({0}));     // self
  EXPECT_EQ(cheapest_holders(h, 3, 3, nodes), std::vector<int>({0, 1}));  // both across nodes
  EXPECT_EQ(cheapest_holders(h, 1, 0, nodes), std::vector<int>({1}));     // same node
  EXPECT_EQ(holder_for_token(h, 3, 3, 0, nodes), 0);
  EXPECT_EQ(holder_for_token(h, 3, 3, 1, nodes), 1);
  EXPECT_EQ(holder_for_token(h, 3, 3, 2, nodes), 0);
}

// Worked by hand (docs/placement.md): per step r0 routes [2,1,0,1], r1
// [0,2,1,0], r2 [1,0,2,0], r3 [0,0,1,3]; e3 is held by ranks 0 and 1.
// Compute: r0 2 + 1 + 1 (r2's e0) + 1.5 (half of r3's e3) = 5.5, r1 1 + 2 +
// 1.5 = 4.5, r2 1 + 2 + 1 = 4, r3 0: max 5.5, mean 14 / 4 = 3.5.
// Dispatch rows: same node r0->r1 1, r3->r2 1; other node r1->r2 1,
// r2->r0 1, r3->r0 1.5, r3->r1 1.5. Bytes (x2 for the combine, x100):
// same 400, other 1000. Exchange per rank, 2 x 100 B x (rows in and out):
// r0 1 x 0.01 + 2.5 x 0.1 -> 52, r1 52, r2 1 x 0.01 + 2 x 0.1 -> 42, r3
// 1 x 0.01 + 3 x 0.1 -> 62. Migration: e3 new on r0 and r1, 2000 B x 0.1 / 10
// = 20 s. Step: 5.5 + 62 + 20 = 87.5.
TEST(PlacementPlan, ModelFiguresOfTwoNodesOfTwoRanks) {
  const RoutingStatsFile stats = parse_routing_stats_json(kStats, "stats.json");
  const RoutingCounts counts = stats.counts(0);
  EXPECT_DOUBLE_EQ(counts.at(3, 3), 3.0);
  const ExpertHolders current = single_holders(stats.expert_owner, stats.num_ranks);
  const PlacementFigures f = model_placement(counts, holders(4, {{0}, {1}, {2}, {0, 1}}), current, hand_model());
  EXPECT_DOUBLE_EQ(f.max_load_rows, 5.5);
  EXPECT_DOUBLE_EQ(f.mean_load_rows, 3.5);
  EXPECT_DOUBLE_EQ(f.same_node_bytes, 400);
  EXPECT_DOUBLE_EQ(f.other_node_bytes, 1000);
  EXPECT_EQ(f.migration_bytes, 2000);
  EXPECT_DOUBLE_EQ(f.compute_seconds, 5.5);
  EXPECT_DOUBLE_EQ(f.exchange_seconds, 62);
  EXPECT_DOUBLE_EQ(f.migration_seconds, 20);
  EXPECT_DOUBLE_EQ(f.step_seconds, 87.5);
  // The current placement moves nothing.
  EXPECT_EQ(model_placement(counts, current, current, hand_model()).migration_bytes, 0);
}

// Every rank sends [12, 6, 4, 4, 3, 3, 2, 2] per step: e0 and e1 hold half
// of the load, so the contiguous placement's rank 0 computes 4 x 18 = 72
// rows of a mean 36.
TEST(PlacementPlan, ReplicasRespectTheLimitAndBalanceASkewedLoad) {
  RoutingCounts counts{.num_ranks = 4, .num_experts = 8, .copies = {}};
  for (int r = 0; r < 4; ++r)
    for (double c : {12, 6, 4, 4, 3, 3, 2, 2}) counts.copies.push_back(c);
  const ExpertHolders current = single_holders(std::vector<int>{0, 0, 1, 1, 2, 2, 3, 3}, 4);
  const PlacementOptions options{.replicas = 4,
                                 .model = {.node_of_rank = {0, 0, 1, 1},
                                           .row_seconds = 1e-3,
                                           .row_bytes = 1,
                                           .same_node_seconds_per_byte = 1e-9,
                                           .other_node_seconds_per_byte = 1e-8,
                                           .expert_bytes = 0}};
  const ExpertHolders planned = plan_placement(counts, current, options);
  check_expert_holders(planned, "planned");
  EXPECT_LE(planned.total_copies(), 12);
  EXPECT_EQ(max_experts_per_rank(8, 4, 4), 3);  // ceil(12 / 4)
  for (std::int64_t held : planned.experts_per_rank()) {
    EXPECT_GE(held, 1);
    EXPECT_LE(held, 3);
  }
  EXPECT_NEAR(model_placement(counts, current, current, options.model).max_over_mean(), 72.0 / 36, 1e-12);
  EXPECT_LE(model_placement(counts, planned, current, options.model).max_over_mean(), 1.10);
  for (std::int64_t held : eplb_placement(counts.expert_loads(), options.model.node_of_rank, 4).experts_per_rank())
    EXPECT_LE(held, 3);
}

// Every rank of 4 nodes of 2 sends most of its tokens to e0 and e6 (bench
// --routing skewed's trace): under the replica rule a node's tokens stay
// with the node's copy, so balancing takes a copy of both in every node,
// which single copies, added one at a time, do not reach (each alone leaves
// the busiest rank as it was).
TEST(PlacementPlan, ACopyPerNodeBalancesLoadEveryNodeSends) {
  RoutingCounts counts{.num_ranks = 8, .num_experts = 16, .copies = {}};
  const double rows[8][6] = {{465, 134, 114, 10, 288, 13}, {463, 139, 118, 8, 288, 8}, {465, 136, 101, 9, 301, 12},
                             {477, 129, 96, 4, 307, 10},   {472, 128, 119, 6, 290, 9}, {463, 145, 105, 7, 295, 9},
                             {474, 147, 105, 10, 280, 7},  {467, 133, 104, 2, 312, 6}};
  for (const auto& r : rows) {
    // experts 0, 2, 4, 5, 6 and 10; the others get nothing
    const std::vector<double> per_expert = {r[0], 0, r[1], 0, r[2], r[3], r[4], 0, 0, 0, r[5], 0, 0, 0, 0, 0};
    counts.copies.insert(counts.copies.end(), per_expert.begin(), per_expert.end());
  }
  std::vector<int> owner;
  for (int e = 0; e < 16; ++e) owner.push_back(e / 2);
  const ExpertHolders current = single_holders(owner, 8);
  // switchyard placement's defaults for hidden 512, ffn 1024, float32.
  const PlacementOptions options{.replicas = 12,
                                 .model = {.node_of_rank = {0, 0, 1, 1, 2, 2, 3, 3},
                                           .row_seconds = 6.0 * 512 * 1024 / 50e9,
                                           .row_bytes = 512 * 4,
                                           .expert_bytes = 3 * 512 * 1024 * 4,
                                           .migration_steps = 1000}};
  const ExpertHolders planned = plan_placement(counts, current, options);
  EXPECT_GT(model_placement(counts, current, current, options.model).max_over_mean(), 3.0);
  EXPECT_LE(model_placement(counts, planned, current, options.model).max_over_mean(), 1.10);
  for (int n = 0; n < 4; ++n)
    for (std::int64_t hot : {0, 6}) {
      bool in_node = false;
      for (int r : planned.ranks_of_expert[static_cast<std::size_t>(hot)]) in_node = in_node || r / 2 == n;
      EXPECT_TRUE(in_node) << "expert " << hot << " has no copy in node " << n;
    }
}

// Node 0's ranks route to e0..e3, node 1's to e4..e7, but the current
// placement deals the experts out in turn (e2, e3 on node 1; e4, e5 on node
// 0): the model moves them home. EPLB packs e0 (100) and e4 (90) first and
// then e1 onto node 1, the lighter: copies cross nodes.
TEST(PlacementPlan, ModelKeepsNodeLocalityThatEplbIgnores) {
  RoutingCounts counts{.num_ranks = 4, .num_experts = 8, .copies = {}};
  const std::vector<double> node0 = {50, 5, 5, 5, 0, 0, 0, 0}, node1 = {0, 0, 0, 0, 45, 5, 5, 5};
  for (const auto* row : {&node0, &node0, &node1, &node1})
    counts.copies.insert(counts.copies.end(), row->begin(), row->end());
  const ExpertHolders current = single_holders(std::vector<int>{0, 1, 2, 3, 0, 1, 2, 3}, 4);
  const PlacementOptions options{.replicas = 0, .model = {.node_of_rank = {0, 0, 1, 1}, .expert_bytes = 1 << 10}};
  const PlacementFigures now = model_placement(counts, current, current, options.model);
  const PlacementFigures planned =
      model_placement(counts, plan_placement(counts, current, options), current, options.model);
  const PlacementFigures eplb = model_placement(
      counts, eplb_placement(counts.expert_loads(), options.model.node_of_rank, 0), current, options.model);
  EXPECT_GT(now.other_node_bytes, 0);
  EXPECT_GT(eplb.other_node_bytes, 0);
  EXPECT_LE(planned.other_node_bytes, eplb.other_node_bytes);
  EXPECT_EQ(planned.other_node_bytes, 0);
  EXPECT_LT(planned.step_seconds, now.step_seconds);
}

// Hierarchical (2 nodes of 2 ranks, loads [40, 30, 20, 10], 2 replicas):
// step 1 packs e0 -> node 0, e1 -> node 1, e2 -> node 1 (30 < 40), e3 ->
// node 0 (node 1 full). Step 2, 3 copies per node: node 0 replicates e0
// (40 > 10), node 1 e1 (30 > 20). Step 3, heaviest copy first to the lightest
// rank: node 0 e0 (20) -> r0, e0 (20) -> r1 (r0 has it), e3 (10) -> r0 (a tie,
// lower rank); node 1 e2 (20) -> r2, e1 (15) -> r3, e1 (15) -> r2 (r3 has it).
TEST(PlacementPlan, EplbHierarchicalByHand) {
  const std::vector<double> loads = {40, 30, 20, 10};
  EXPECT_EQ(eplb_placement(loads, std::vector<int>{0, 0, 1, 1}, 2), holders(4, {{0, 1}, {2, 3}, {2}, {0}}));
}

// Global (nodes of 2 and 1 ranks differ), loads [10, 40, 20, 30], 2 replicas:
// e1 and then e3 (30 > 40 / 2 = 20) replicated; copies e1 20, e2 20, e1 20,
// e3 15, e3 15, e0 10 packed 2 per rank: e1 -> r0, e2 -> r1, e1 -> r2, e3 ->
// r0 (ties at 20: lowest rank), e3 -> r1 (r0 has it), e0 -> r2.
TEST(PlacementPlan, EplbGlobalByHand) {
  const std::vector<double> loads = {10, 40, 20, 30};
  EXPECT_EQ(eplb_placement(loads, std::vector<int>{0, 0, 1}, 2), holders(3, {{2}, {0, 2}, {1}, {0, 1}}));
}

TEST(PlacementPlan, PlannersRefuseImpossibleReplicas) {
  const std::vector<double> loads = {1, 1};
  EXPECT_NE(refusal([&] { eplb_placement(loads, std::vector<int>{0, 0, 0}, 0); }).find("replicas"), std::string::npos);
  EXPECT_NE(refusal([&] { eplb_placement(loads, std::vector<int>{0, 0}, -1); }).find("replicas"), std::string::npos);
  EXPECT_NE(refusal([&] { eplb_placement(loads, std::vector<int>{0, 0}, 3); }).find("replicas"), std::string::npos);
}

TEST(PlacementFile, RoundTrip) {
  PlacementFile file{.method = "model", .replicas = 1, .blocks = {}};
  file.blocks.push_back(
      {.holders = holders(4, {{0}, {1, 3}, {2}}), .has_figures = true, .figures = {.step_seconds = 2}});
  file.blocks.push_back({.holders = holders(4, {{3}, {0, 1, 2}, {1}}), .has_figures = false, .figures = {}});
  const std::string text = write_placement_json(file);
  const std::vector<ExpertHolders> back = parse_placement_json(text, "p.json", 3, 4);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0], file.blocks[0].holders);
  EXPECT_EQ(back[1], file.blocks[1].holders);
  const auto path = std::filesystem::temp_directory_path() / (std::to_string(getpid()) + "_placement.json");
  write_placement_file(path.string(), file);
  EXPECT_EQ(read_placement_file(path.string(), 3, 4, 1), file.blocks[1].holders);
  const std::string missing = refusal([&] { read_placement_file(path.string(), 3, 4, 2); });
  EXPECT_NE(missing.find("no block 2"), std::string::npos) << missing;
  EXPECT_NE(missing.find(path.string()), std::string::npos) << missing;
  std::filesystem::remove(path);
}

TEST(PlacementFile, EachRefusalNamesTheField) {
  const std::string head = R"({"format":"switchyard-placement","version":1,"ranks":2,"experts":2,"blocks":)";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not json", "not valid JSON"},
      {"[1e400]", "not valid JSON (number overflow parsing '1e400')"},
      {R"({"format":"switchyard-topology","version":1})", "field 'format'"},
      {R"({"version":1})", "missing field 'format'"},
      {R"({"format":"switchyard-placement","version":2,"ranks":2,"experts":2,"blocks":[]})", "field 'version'"},
      {R"({"format":"switchyard-placement","version":1,"ranks":3,"experts":2,"blocks":[]})", "field 'ranks'"},
      {R"({"format":"switchyard-placement","version":1,"ranks":2,"experts":5,"blocks":[]})", "field 'experts'"},
      {R"({"format":"switchyard-placement","version":1,"ranks":2,"experts":2})", "missing field 'blocks'"},
      {head + "[]}", "field 'blocks' is empty"},
      {head + R"([{"block":1,"expert_ranks":[[0],[1]]}]})", "field 'blocks[0].block'"},
      {head + R"([{"block":0,"expert_ranks":[[0]]}]})", "field 'blocks[0].expert_ranks' has 1 entries"},
      {head + R"([{"block":0,"expert_ranks":[[0],[2]]}]})", "blocks[0].expert_ranks[1]: rank 2 is outside 0..1"},
      {head + R"([{"block":0,"expert_ranks":[[0],[1,1]]}]})", "blocks[0].expert_ranks[1]: rank 1 is listed twice"},
      {head + R"([{"block":0,"expert_ranks":[[],[1]]}]})", "blocks[0].expert_ranks[0]: expert 0 has no holder"},
      {head + R"([{"block":0,"expert_ranks":[[1,0],[1]]}]})", "blocks[0].expert_ranks[0]: ranks are not ascending"},
      {head + R"([{"block":0,"expert_ranks":[["a"],[1]]}]})", "field 'blocks[0].expert_ranks[0][0]'"},
  };
  for (const auto& [text, field] : cases) {
    const std::string message = refusal([&] { parse_placement_json(text, "p.json", 2, 2); });
    EXPECT_EQ(message.rfind("p.json:", 0), 0u) << message;
    EXPECT_NE(message.find(field), std::string::npos) << "expected '" << field << "' in: " << message;
  }
}

TEST(RoutingStatsFile, EachRefusalNamesTheField) {
  const std::string head =
      R"({"format":"switchyard-routing-stats","version":1,"command":"bench","ranks":2,"experts":2,"steps":1,)";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[1,2", "not valid JSON"},
      {"[1e400]", "not valid JSON (number overflow parsing '1e400')"},
      {R"({"format":"switchyard-placement","version":1})", "field 'format'"},
      {head + R"("node_of_rank":[0],"expert_owner":[0,1],"blocks":[]})", "field 'node_of_rank' has 1 entries"},
      {head + R"("node_of_rank":[0,0],"expert_owner":[0,2],"blocks":[]})", "field 'expert_owner[1]'"},
      {head + R"("node_of_rank":[0,0],"expert_owner":[0,1],"blocks":[]})", "field 'blocks' is empty"},
      {head + R"("node_of_rank":[0,0],"expert_owner":[0,1],"blocks":[{"block":0,"copies":[[1,2],[3]]}]})",
       "field 'blocks[0].copies[1]' has 1 entries"},
      {head + R"("node_of_rank":[0,0],"expert_owner":[0,1],"blocks":[{"block":0,"copies":[[1,2],[3,-1]]}]})",
       "field 'blocks[0].copies[1][1]'"},
      {head + R"("node_of_rank":[0,0],"expert_owner":[0,1]})", "missing field 'blocks'"},
  };
  for (const auto& [text, field] : cases) {
    const std::string message = refusal([&] { parse_routing_stats_json(text, "rs.json"); });
    EXPECT_NE(message.find(field), std::string::npos) << "expected '" << field << "' in: " << message;
  }
  const auto path = temp_file("stats.json", kStats);
  EXPECT_EQ(read_routing_stats_file(path.string()).steps, 2);
  std::filesystem::remove(path);
}
