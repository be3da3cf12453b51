// discover_topology on 1..4 ranks of one host: every rank holds the same
// topology, real nodes put every rank on node 0, virtual nodes follow
// ranks_per_node, costs are plausible, placement matches the OS, and the
// probe is quick.
#include <gtest/gtest.h>
#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "switchyard/comm/topology.hpp"
#include "switchyard/comm/topology_probe.hpp"
#include "switchyard/runtime/error.hpp"

namespace {

using namespace switchyard;
using namespace switchyard::comm;

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int world_size() {
  int s = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

// Rank 0's text, as every rank receives it.
std::string rank0_text(const std::string& mine) {
  int length = static_cast<int>(mine.size());
  MPI_Bcast(&length, 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::string text(static_cast<std::size_t>(length), '\0');
  if (world_rank() == 0) text = mine;
  MPI_Bcast(text.data(), length, MPI_CHAR, 0, MPI_COMM_WORLD);
  return text;
}

void expect_plausible_costs(const Topology& t) {
  for (LinkClass link : kAllLinkClasses) {
    if (!t.cost(link)) continue;
    SCOPED_TRACE(link_class_name(link));
    EXPECT_GE(t.cost(link)->latency_s, 0.0);
    EXPECT_GT(t.cost(link)->bandwidth_bytes_per_s, 0.0);
    EXPECT_EQ(t.cost(link)->probe.size(), comm::DiscoveryOptions{}.probe_bytes.size());  // one point per default size
  }
}

TEST(TopologyDiscovery, EveryRankHoldsTheSameTopologyAndItIsQuick) {
  MPI_Barrier(MPI_COMM_WORLD);
  const auto start = std::chrono::steady_clock::now();
  const Topology t = discover_topology(MPI_COMM_WORLD);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MPI_Allreduce(MPI_IN_PLACE, &seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  const std::string text = write_topology_json(t);
  EXPECT_EQ(text, rank0_text(text));
  if (world_rank() == 0)
    std::printf("discover_topology on %d rank(s): %.3f s\n%s", world_size(), seconds, text.c_str());
  // The probe is meant to take well under 2 s; CI shares its cores, hence 5.
  EXPECT_LT(seconds, 5.0);
}

// Ranks share a node exactly when they share a host: on one host (a CTest
// run) every rank is on node 0; on the emulated cluster each host is a node.
TEST(TopologyDiscovery, RanksOfOneHostShareANode) {
  const Topology t = discover_topology(MPI_COMM_WORLD);
  ASSERT_EQ(t.num_ranks(), world_size());
  std::vector<std::string> hosts;  // in order of their lowest rank
  for (const RankPlacement& p : t.ranks) {
    EXPECT_FALSE(p.host.empty());
    const auto it = std::find(hosts.begin(), hosts.end(), p.host);
    EXPECT_EQ(p.node, it - hosts.begin()) << p.host;
    if (it == hosts.end()) hosts.push_back(p.host);
  }
  const bool one_host = hosts.size() == 1;
  if (one_host) {
    for (const RankPlacement& p : t.ranks) EXPECT_EQ(p.node, 0);
  }
  EXPECT_TRUE(t.cost(LinkClass::kSelf).has_value());
  EXPECT_EQ(t.cost(LinkClass::kSameNode).has_value(), t.ranks_on_node(0).size() > 1);
  EXPECT_EQ(t.cost(LinkClass::kOtherNode).has_value(), !one_host);
  expect_plausible_costs(t);
}

TEST(TopologyDiscovery, VirtualNodesOfTwoRanks) {
  DiscoveryOptions options;
  options.ranks_per_node = 2;
  const Topology t = discover_topology(MPI_COMM_WORLD, options);
  std::vector<int> nodes, expected;
  for (int r = 0; r < world_size(); ++r) {
    nodes.push_back(t.ranks[static_cast<std::size_t>(r)].node);
    expected.push_back(r / 2);  // {0, 0, 1, 1} on 4 ranks
  }
  EXPECT_EQ(nodes, expected);
  EXPECT_EQ(t.cost(LinkClass::kSameNode).has_value(), world_size() >= 2);
  EXPECT_EQ(t.cost(LinkClass::kOtherNode).has_value(), world_size() >= 3);
  expect_plausible_costs(t);
  if (world_size() >= 3) {
    EXPECT_EQ(link_class(t, 1, 2), LinkClass::kOtherNode);
  }
}

// Rank 0 alone on its node: the same-node link is measured by ranks 1 and
// 2, the other-node link by ranks 0 and 1. Labels are renumbered 0..N-1 in
// order of each node's lowest rank.
TEST(TopologyDiscovery, NodeLabelsWithRankZeroAlone) {
  DiscoveryOptions options;
  std::vector<int> expected;
  for (int r = 0; r < world_size(); ++r) {
    options.node_of_rank.push_back(r == 0 ? 7 : 3);
    expected.push_back(r == 0 ? 0 : 1);
  }
  const Topology t = discover_topology(MPI_COMM_WORLD, options);
  std::vector<int> nodes;
  for (const RankPlacement& p : t.ranks) nodes.push_back(p.node);
  EXPECT_EQ(nodes, expected);
  EXPECT_EQ(t.cost(LinkClass::kSameNode).has_value(), world_size() >= 3);
  EXPECT_EQ(t.cost(LinkClass::kOtherNode).has_value(), world_size() >= 2);
  expect_plausible_costs(t);
}

TEST(TopologyDiscovery, CoresAreTheRanksAffinityMask) {
  DiscoveryOptions options;
  options.probe = false;
  const Topology t = discover_topology(MPI_COMM_WORLD, options);
  cpu_set_t mask;
  CPU_ZERO(&mask);
  ASSERT_EQ(sched_getaffinity(0, sizeof(mask), &mask), 0);
  std::vector<int> cores;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &mask)) cores.push_back(cpu);
  EXPECT_EQ(t.ranks[static_cast<std::size_t>(world_rank())].cores, cores);
  EXPECT_GE(t.ranks[static_cast<std::size_t>(world_rank())].numa_node, 0);  // one NUMA node holds them here
  for (LinkClass link : kAllLinkClasses) EXPECT_FALSE(t.cost(link).has_value());
}

TEST(TopologyDiscovery, DiscoveredTopologyRoundTripsThroughItsFile) {
  const Topology t = discover_topology(MPI_COMM_WORLD);
  EXPECT_EQ(parse_topology_json(write_topology_json(t), "discovered.json"), t);
}

TEST(TopologyDiscovery, BadOptionsThrowOnEveryRank) {
  DiscoveryOptions options;
  options.probe_bytes = {64, 64};
  try {
    discover_topology(MPI_COMM_WORLD, options);
    ADD_FAILURE() << "no Error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("distinct probe size"), std::string::npos) << e.what();
  }
  options = DiscoveryOptions{};
  options.node_of_rank = {0};
  options.node_of_rank.resize(static_cast<std::size_t>(world_size()) + 1, 0);
  try {
    discover_topology(MPI_COMM_WORLD, options);
    ADD_FAILURE() << "no Error thrown";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected one per rank"), std::string::npos) << e.what();
  }
  MPI_Barrier(MPI_COMM_WORLD);  // every rank got here: nobody waits in a collective
}

}  // namespace
