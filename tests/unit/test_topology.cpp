// The topology model: link classes, the cost fit, predictions against
// numbers worked out by hand, virtual nodes, and the topology file (round
// trip, and every kind of bad file refused with one line naming file and
// field).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "switchyard/comm/topology.hpp"
#include "switchyard/runtime/error.hpp"

namespace {

using namespace switchyard;
using namespace switchyard::comm;

// 5 ranks on nodes {0, 0, 1, 1, 2}. Costs: self 0 s + b / 1e10; same node
// 1 µs + b / 1e10; other node 10 µs + b / 1e9.
Topology five_ranks() {
  Topology t = virtual_nodes(5, 2);
  t.cost(LinkClass::kSelf) = LinkCost{0.0, 1e10, {}};
  t.cost(LinkClass::kSameNode) = LinkCost{1e-6, 1e10, {}};
  t.cost(LinkClass::kOtherNode) = LinkCost{1e-5, 1e9, {}};
  return t;
}

Error caught_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no Error thrown";
  return Error(ErrorCode::kInternal, "");
}

TEST(Topology, LinkClassesOfAHandMadeTopology) {
  const Topology t = five_ranks();
  EXPECT_EQ(t.num_ranks(), 5);
  EXPECT_EQ(t.num_nodes(), 3);
  EXPECT_EQ(t.ranks_on_node(1), (std::vector<int>{2, 3}));
  EXPECT_EQ(link_class(t, 3, 3), LinkClass::kSelf);
  EXPECT_EQ(link_class(t, 0, 1), LinkClass::kSameNode);
  EXPECT_EQ(link_class(t, 3, 2), LinkClass::kSameNode);
  EXPECT_EQ(link_class(t, 1, 2), LinkClass::kOtherNode);
  EXPECT_EQ(link_class(t, 4, 0), LinkClass::kOtherNode);
  EXPECT_EQ(caught_error([&] { link_class(t, 0, 5); }).code(), ErrorCode::kInvalidArgument);
  for (LinkClass link : kAllLinkClasses) EXPECT_EQ(parse_link_class(link_class_name(link)), link);
  EXPECT_STREQ(link_class_name(LinkClass::kOtherNode), "other_node");
  EXPECT_FALSE(parse_link_class("nvlink").has_value());
}

TEST(Topology, VirtualNodesPutTheRemainderOnTheLastNode) {
  std::vector<int> nodes;
  for (const auto& r : virtual_nodes(5, 2).ranks) nodes.push_back(r.node);
  EXPECT_EQ(nodes, (std::vector<int>{0, 0, 1, 1, 2}));
  EXPECT_EQ(virtual_nodes(4, 4).num_nodes(), 1);
  EXPECT_EQ(virtual_nodes(3, 1).num_nodes(), 3);
  EXPECT_EQ(virtual_nodes(2, 8).num_nodes(), 1);
  EXPECT_FALSE(virtual_nodes(4, 2).cost(LinkClass::kSelf).has_value());
  EXPECT_EQ(caught_error([] { virtual_nodes(4, 0); }).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(caught_error([] { virtual_nodes(0, 1); }).code(), ErrorCode::kInvalidArgument);
}

TEST(Topology, FitRecoversLatencyAndBandwidthOfExactPoints) {
  const double latency = 2.5e-6, bandwidth = 5e9;
  std::vector<ProbePoint> points;
  for (std::int64_t bytes : {8, 4096, 65536, 1 << 20}) points.push_back({bytes, latency + bytes / bandwidth});
  const LinkCost cost = fit_link_cost(points);
  EXPECT_NEAR(cost.latency_s, latency, latency * 1e-9);
  EXPECT_NEAR(cost.bandwidth_bytes_per_s, bandwidth, bandwidth * 1e-9);
  EXPECT_EQ(cost.probe, points);
  EXPECT_NEAR(cost.seconds(1000), latency + 1000 / bandwidth, 1e-15);
}

TEST(Topology, FitKeepsLatencyNonNegative) {
  // The line through (1000 B, 1 µs) and (2000 B, 3 µs) crosses zero bytes at
  // -1 µs: latency becomes 0 and the bandwidth lies between the points' own
  // (1e9 and 6.7e8 B/s).
  const std::vector<ProbePoint> points = {{1000, 1e-6}, {2000, 3e-6}};
  const LinkCost cost = fit_link_cost(points);
  EXPECT_EQ(cost.latency_s, 0.0);
  EXPECT_GT(cost.bandwidth_bytes_per_s, 2000 / 3e-6);
  EXPECT_LT(cost.bandwidth_bytes_per_s, 1e9);
}

TEST(Topology, FitRefusesPointsThatCannotSeparateLatencyFromBandwidth) {
  auto message = [](std::vector<ProbePoint> points) {
    const Error e = caught_error([&] { fit_link_cost(points); });
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    return std::string(e.what());
  };
  EXPECT_NE(message({}).find("at least 2"), std::string::npos);
  EXPECT_NE(message({{64, 1e-6}, {64, 2e-6}}).find("1 distinct message size"), std::string::npos);
  EXPECT_NE(message({{-1, 1e-6}, {64, 2e-6}}).find("-1 bytes"), std::string::npos);
  EXPECT_NE(message({{8, 0.0}, {64, 2e-6}}).find("expected a time > 0"), std::string::npos);
  EXPECT_NE(message({{8, 2e-6}, {1 << 20, 1e-6}}).find("does not grow"), std::string::npos);
}

TEST(Topology, MessageAndExchangePredictionsMatchHandComputedTimes) {
  const Topology t = five_ranks();
  EXPECT_DOUBLE_EQ(predict_message_seconds(t, 0, 4, 1000), 1e-5 + 1000 / 1e9);
  EXPECT_EQ(predict_message_seconds(t, 0, 4, 0), 0.0);
  // Rank 0 sends 100 B to itself, 200 B to rank 1 (same node), nothing to
  // rank 2, 1000 B and 3000 B to ranks 3 and 4 (other nodes):
  //   self 100/1e10 = 1e-8; same node 1e-6 + 200/1e10 = 1.02e-6;
  //   other node 2 × 1e-5 + 4000/1e9 = 2.4e-5; total 2.503e-5 s.
  const std::vector<std::int64_t> bytes = {100, 200, 0, 1000, 3000};
  EXPECT_NEAR(predict_exchange_seconds(t, 0, bytes), 2.503e-5, 1e-18);
  EXPECT_EQ(predict_exchange_seconds(t, 2, std::vector<std::int64_t>(5, 0)), 0.0);
  EXPECT_EQ(caught_error([&] { predict_exchange_seconds(t, 0, std::vector<std::int64_t>(4, 1)); }).code(),
            ErrorCode::kInvalidArgument);
  Topology no_network = t;
  no_network.cost(LinkClass::kOtherNode).reset();
  const std::string why = caught_error([&] { predict_exchange_seconds(no_network, 0, bytes); }).what();
  EXPECT_NE(why.find("no cost for link class 'other_node'"), std::string::npos) << why;
}

TEST(Topology, AllToAllIsTheSlowestRanksSendOrReceive) {
  Topology t = five_ranks();
  t.ranks.resize(3);  // nodes {0, 0, 1}
  // bytes[from][to]:        to 0   1     2
  const std::vector<std::int64_t> bytes = {0,    1000, 0,   // from 0
                                           0,    0,    0,   // from 1
                                           5000, 1000, 0};  // from 2
  // send: rank 0 1e-6 + 1e-7 = 1.1e-6; rank 2 2e-5 + 6e-6 = 2.6e-5.
  // receive: rank 0 1e-5 + 5e-6 = 1.5e-5; rank 1 1.1e-6 + 1.1e-5 = 1.21e-5.
  EXPECT_NEAR(predict_all_to_all_seconds(t, bytes), 2.6e-5, 1e-18);
}

// A topology with every kind of field, and doubles that print long.
Topology detailed() {
  Topology t = virtual_nodes(3, 2);
  t.ranks[0] = {0, "node-a", {0, 1, 2, 3}, 0};
  t.ranks[1] = {0, "node-a", {64}, 1};
  t.ranks[2] = {1, "node-b \"quoted\"", {}, -1};
  t.cost(LinkClass::kSelf) = LinkCost{1.0 / 3.0 * 1e-7, 1.2345678901234567e10, {{8, 3.3e-8}, {1 << 20, 1e-4}}};
  t.cost(LinkClass::kOtherNode) = LinkCost{0.0, 1e9 / 7.0, {}};
  t.round_s = 1.0 / 7.0 * 1e-4;
  return t;
}

std::string temp_dir() {
  std::string path = (std::filesystem::temp_directory_path() / "sy_topology_XXXXXX").string();
  EXPECT_NE(mkdtemp(path.data()), nullptr);
  return path;
}

std::string write_file(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(TopologyFile, RoundTripIsExact) {
  const Topology t = detailed();
  const std::string text = write_topology_json(t);
  EXPECT_EQ(parse_topology_json(text, "t.json"), t);
  const std::string dir = temp_dir();
  const Topology back = read_topology_file(write_file(dir, "t.json", text));
  EXPECT_EQ(back, t);
  EXPECT_EQ(write_topology_json(back), text);
  EXPECT_EQ(back.ranks[2].host, "node-b \"quoted\"");
  EXPECT_FALSE(back.cost(LinkClass::kSameNode).has_value());
  EXPECT_EQ(back.cost(LinkClass::kSelf)->latency_s, 1.0 / 3.0 * 1e-7);  // bit for bit
  EXPECT_EQ(back.round_s, 1.0 / 7.0 * 1e-4);
  Topology bare = virtual_nodes(2, 1);
  EXPECT_EQ(parse_topology_json(write_topology_json(bare), "bare.json"), bare);
  std::filesystem::remove_all(dir);
}

// The file of docs/topology.md, in short; every bad file below is one edit of it.
const char* const kGoodFile = R"({
  "format": "switchyard-topology",
  "version": 1,
  "ranks": [
    {"rank": 0, "node": 0, "host": "a", "cores": [0, 1], "numa_node": 0},
    {"rank": 1, "node": 1, "host": "b", "cores": [2], "numa_node": null}
  ],
  "links": {
    "self": {"latency_s": 5e-08, "bandwidth_bytes_per_s": 1.2e10, "probe": [{"bytes": 8, "seconds": 5e-08}]},
    "other_node": {"latency_s": 2.5e-05, "bandwidth_bytes_per_s": 1.1e9, "probe": []}
  }
})";

std::string edited(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

TEST(TopologyFile, TheDocumentedExampleParses) {
  const Topology t = parse_topology_json(kGoodFile, "good.json");
  EXPECT_EQ(t.num_nodes(), 2);
  EXPECT_EQ(t.ranks[1].numa_node, -1);
  EXPECT_EQ(t.ranks[0].cores, (std::vector<int>{0, 1}));
  EXPECT_DOUBLE_EQ(t.cost(LinkClass::kOtherNode)->bandwidth_bytes_per_s, 1.1e9);
  EXPECT_EQ(t.cost(LinkClass::kSelf)->probe, (std::vector<ProbePoint>{{8, 5e-8}}));
}

struct BadFile {
  const char* name;
  std::string text;
  const char* field;     // what the message must name
  const char* expected;  // and what it must say was expected
};

TEST(TopologyFile, BadFilesAreRefusedWithOneLineNamingFileAndField) {
  const std::string good = kGoodFile;
  const std::vector<BadFile> cases = {
      {"missing_field", edited(good, R"("host": "a", )", ""), "'ranks[0].host'", "missing field"},
      {"wrong_type", edited(good, R"("node": 1,)", R"("node": "1",)"), "'ranks[1].node'", "expected an integer"},
      {"negative_bandwidth", edited(good, "1.1e9", "-1.1e9"), "'links.other_node.bandwidth_bytes_per_s'", "> 0"},
      {"negative_latency", edited(good, "2.5e-05", "-2.5e-05"), "'links.other_node.latency_s'", ">= 0"},
      {"rank_twice", edited(good, R"("rank": 1)", R"("rank": 0)"), "'ranks[1].rank'", "listed twice"},
      {"rank_order", edited(edited(good, R"("rank": 1)", R"("rank": 9)"), R"("rank": 0)", R"("rank": 1)"),
       "'ranks[0].rank'", "expected 0"},
      {"node_gap", edited(good, R"("node": 1)", R"("node": 2)"), "'ranks[1].node'", "0..N-1"},
      {"unknown_link_class", edited(good, R"("other_node":)", R"("nvlink":)"), "'links.nvlink'", "same_node"},
      {"wrong_format", edited(good, "switchyard-topology", "nccl-topology"), "'format'", "switchyard-topology"},
      {"no_format", edited(good, R"("format": "switchyard-topology",)", ""), "'format'", "not a topology file"},
      {"wrong_version", edited(good, R"("version": 1)", R"("version": 2)"), "'version'", "expected 1"},
      {"truncated", good.substr(0, good.size() / 2), "not valid JSON", "expected a topology file"},
      {"number_overflow", edited(good, R"("version": 1)", R"("version": 1e400)"), "not valid JSON",
       "number overflow parsing '1e400'"},
      {"unknown_field", edited(good, R"("numa_node": 0)", R"("numa_node": 0, "cpu": 3)"), "'ranks[0].cpu'",
       "expected one of"},
      {"cores_descending", edited(good, "[0, 1]", "[1, 0]"), "'ranks[0].cores'", "ascending"},
      {"negative_core", edited(good, "[2]", "[-2]"), "'ranks[1].cores'", ">= 0"},
      {"numa_type", edited(good, R"("numa_node": null)", R"("numa_node": "x")"), "'ranks[1].numa_node'", "null"},
      {"probe_bytes", edited(good, R"("bytes": 8)", R"("bytes": 8.5)"), "'links.self.probe[0].bytes'", "integer"},
      {"ranks_not_list", R"({"format": "switchyard-topology", "version": 1, "ranks": {"rank": 0}})", "'ranks'",
       "expected a list"},
      {"empty_ranks", R"({"format": "switchyard-topology", "version": 1, "ranks": []})", "'ranks'", "at least one"},
      {"not_an_object", "[1, 2]", "expected a JSON object", ""},
      {"round_type", edited(good, R"("version": 1,)", R"("version": 1, "round_s": "fast",)"), "'round_s'",
       "expected a number"},
      {"round_negative", edited(good, R"("version": 1,)", R"("version": 1, "round_s": -1e-5,)"), "'round_s'", ">= 0"},
  };
  const std::string dir = temp_dir();
  for (const BadFile& c : cases) {
    const std::string path = write_file(dir, std::string(c.name) + ".json", c.text);
    const Error e = caught_error([&] { read_topology_file(path); });
    const std::string what = e.what();
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << c.name;
    EXPECT_EQ(what.rfind(path + ": ", 0), 0u) << c.name << ": " << what;
    EXPECT_NE(what.find(c.field), std::string::npos) << c.name << ": " << what;
    EXPECT_NE(what.find(c.expected), std::string::npos) << c.name << ": " << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << c.name << ": " << what;
  }
  const Error missing = caught_error([&] { read_topology_file(dir + "/absent.json"); });
  EXPECT_EQ(missing.code(), ErrorCode::kIo);
  EXPECT_NE(std::string(missing.what()).find(dir + "/absent.json: cannot open topology file"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(TopologyFile, WriterRefusesATopologyItCouldNotReadBack) {
  Topology t = virtual_nodes(2, 1);
  t.ranks[1].node = 3;
  EXPECT_EQ(caught_error([&] { write_topology_json(t); }).code(), ErrorCode::kInvalidArgument);
}

}  // namespace
