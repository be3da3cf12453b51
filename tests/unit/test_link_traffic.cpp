// Traffic per link class (layers/link_traffic.hpp) against counts worked out
// by hand on a small fixture: 4 ranks on 2 nodes, nodes {0, 0, 1, 1}.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "switchyard/comm/self_communicator.hpp"
#include "switchyard/comm/topology.hpp"
#include "switchyard/layers/link_traffic.hpp"
#include "switchyard/runtime/error.hpp"

namespace {

using namespace switchyard;
using comm::LinkClass;
using layers::LinkTraffic;
using layers::StepTraffic;

// Rows rank `from` dispatched to rank `to`: kSend[from][to].
const std::vector<std::vector<std::int64_t>> kSend = {{2, 1, 0, 3}, {3, 5, 2, 7}, {0, 1, 4, 1}, {2, 0, 2, 2}};

// Rank r's StepTraffic: its row of kSend, and its column as what it received.
StepTraffic traffic_of(int r) {
  StepTraffic t;
  t.send_rows = kSend[static_cast<std::size_t>(r)];
  for (const auto& row : kSend) t.recv_rows.push_back(row[static_cast<std::size_t>(r)]);
  return t;
}

TEST(LinkTraffic, OneRankByHand) {
  // Rank 1 (node 0) sends {3, 5, 2, 7} and receives {1, 5, 1, 0}: copies
  // self 5, same node (rank 0) 3, other node (ranks 2, 3) 2 + 7 = 9; bytes
  // (sent + received rows) x 10: self (5 + 5) 100, same node (3 + 1) 40,
  // other node (2 + 7 + 1 + 0) 100.
  const comm::Topology topology = comm::virtual_nodes(4, 2);
  const LinkTraffic t = layers::link_traffic(traffic_of(1), topology, 1, 10);
  EXPECT_EQ(t.copies_on(LinkClass::kSelf), 5);
  EXPECT_EQ(t.copies_on(LinkClass::kSameNode), 3);
  EXPECT_EQ(t.copies_on(LinkClass::kOtherNode), 9);
  EXPECT_EQ(t.total_copies(), 17);
  EXPECT_EQ(t.bytes_on(LinkClass::kSelf), 100);
  EXPECT_EQ(t.bytes_on(LinkClass::kSameNode), 40);
  EXPECT_EQ(t.bytes_on(LinkClass::kOtherNode), 100);
  // A backward sends the same rows again.
  const LinkTraffic twice = layers::link_traffic(traffic_of(1), topology, 1, 10, 2);
  EXPECT_EQ(twice.copies, t.copies);
  EXPECT_EQ(twice.bytes_on(LinkClass::kOtherNode), 200);
}

TEST(LinkTraffic, JobTotalsByHand) {
  // Over all ranks: self is the diagonal 2 + 5 + 4 + 2 = 13; same node
  // (0,1) 1 + (1,0) 3 + (2,3) 1 + (3,2) 2 = 7; other node the other 15 of
  // 35. Every row travels once in the dispatch and once in the combine:
  // bytes = 2 x copies x 8.
  const comm::Topology topology = comm::virtual_nodes(4, 2);
  LinkTraffic sum;
  for (int r = 0; r < 4; ++r) sum += layers::link_traffic(traffic_of(r), topology, r, 8);
  EXPECT_EQ(sum.copies_on(LinkClass::kSelf), 13);
  EXPECT_EQ(sum.copies_on(LinkClass::kSameNode), 7);
  EXPECT_EQ(sum.copies_on(LinkClass::kOtherNode), 15);
  EXPECT_EQ(sum.total_copies(), 35);
  EXPECT_EQ(sum.bytes_on(LinkClass::kSelf), 2 * 13 * 8);
  EXPECT_EQ(sum.bytes_on(LinkClass::kSameNode), 2 * 7 * 8);
  EXPECT_EQ(sum.bytes_on(LinkClass::kOtherNode), 2 * 15 * 8);
}

TEST(LinkTraffic, OneNodeHasNothingAcrossNodes) {
  const comm::Topology topology = comm::virtual_nodes(4, 4);
  LinkTraffic sum;
  for (int r = 0; r < 4; ++r) sum += layers::link_traffic(traffic_of(r), topology, r, 8);
  EXPECT_EQ(sum.copies_on(LinkClass::kSelf), 13);
  EXPECT_EQ(sum.copies_on(LinkClass::kSameNode), 22);
  EXPECT_EQ(sum.copies_on(LinkClass::kOtherNode), 0);
  EXPECT_EQ(sum.bytes_on(LinkClass::kOtherNode), 0);
}

TEST(LinkTraffic, WireRowBytes) {
  EXPECT_EQ(layers::wire_row_bytes(64, false), 256);
  EXPECT_EQ(layers::wire_row_bytes(64, true), 128);
}

TEST(LinkTraffic, TransposeIsTheCombine) {
  const std::vector<std::int64_t> dispatch = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(layers::transpose_bytes(dispatch, 3), (std::vector<std::int64_t>{1, 4, 7, 2, 5, 8, 3, 6, 9}));
  EXPECT_THROW(layers::transpose_bytes(dispatch, 2), Error);
}

TEST(LinkTraffic, OneRankJob) {
  comm::SelfCommunicator self;
  const StepTraffic t{
      .send_rows = {6}, .send_slots = {}, .recv_rows = {6}, .local_expert_rows = {}, .expert_slots = {}};
  const LinkTraffic job = layers::job_link_traffic(self, t, comm::virtual_nodes(1, 1), 4);
  EXPECT_EQ(job.copies_on(LinkClass::kSelf), 6);
  EXPECT_EQ(job.bytes_on(LinkClass::kSelf), 48);
  EXPECT_EQ(layers::job_dispatch_bytes(self, t, 4), (std::vector<std::int64_t>{24}));
}

TEST(LinkTraffic, RefusesTrafficThatDoesNotFitTheTopology) {
  const comm::Topology topology = comm::virtual_nodes(4, 2);
  StepTraffic short_send = traffic_of(0);
  short_send.send_rows.pop_back();
  EXPECT_THROW(layers::link_traffic(short_send, topology, 0, 8), Error);
  EXPECT_THROW(layers::link_traffic(traffic_of(0), topology, 4, 8), Error);
  EXPECT_THROW(layers::link_traffic(traffic_of(0), topology, 0, -1), Error);
  StepTraffic negative = traffic_of(0);
  negative.recv_rows[2] = -1;
  EXPECT_THROW(layers::link_traffic(negative, topology, 0, 8), Error);
}

}  // namespace
