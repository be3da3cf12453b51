// The topology model: link classes, costs, predictions, virtual nodes and
// the fit of a link's cost to probe points. The file format is in
// topology_json.cpp, discovery in topology_probe.cpp.
#include "switchyard/comm/topology.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "switchyard/runtime/error.hpp"

namespace switchyard::comm {
namespace {

std::string field(const std::string& source, const std::string& name) { return source + ": field '" + name + "'"; }

std::string number_text(double x) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", x);
  return text;
}

std::string rank_field(const std::string& source, std::size_t rank_idx, const char* name) {
  return field(source, "ranks[" + std::to_string(rank_idx) + "]." + name);
}

void check_placement(const RankPlacement& p, std::size_t rank_idx, const std::string& source) {
  for (std::size_t i = 0; i < p.cores.size(); ++i) {
    check_arg(p.cores[i] >= 0, rank_field(source, rank_idx, "cores") + " holds " + std::to_string(p.cores[i]) +
                                   "; expected OS processor ids >= 0");
    check_arg(i == 0 || p.cores[i] > p.cores[i - 1],
              rank_field(source, rank_idx, "cores") + " expected ascending, distinct ids, got " +
                  std::to_string(p.cores[i - (i > 0 ? 1 : 0)]) + " before " + std::to_string(p.cores[i]));
  }
  check_arg(p.numa_node >= -1, rank_field(source, rank_idx, "numa_node") + " is " + std::to_string(p.numa_node) +
                                   "; expected an OS NUMA node index >= 0, or unknown");
}

void check_cost(const LinkCost& cost, LinkClass link, const std::string& source) {
  const std::string name = std::string("links.") + link_class_name(link);
  check_arg(std::isfinite(cost.latency_s) && cost.latency_s >= 0,
            field(source, name + ".latency_s") + " is " + number_text(cost.latency_s) + "; expected a number >= 0");
  check_arg(std::isfinite(cost.bandwidth_bytes_per_s) && cost.bandwidth_bytes_per_s > 0,
            field(source, name + ".bandwidth_bytes_per_s") + " is " + number_text(cost.bandwidth_bytes_per_s) +
                "; expected a number > 0");
  for (std::size_t i = 0; i < cost.probe.size(); ++i) {
    const std::string point = name + ".probe[" + std::to_string(i) + "]";
    check_arg(cost.probe[i].bytes >= 0, field(source, point + ".bytes") + " is " + std::to_string(cost.probe[i].bytes) +
                                            "; expected an integer >= 0");
    check_arg(
        std::isfinite(cost.probe[i].seconds) && cost.probe[i].seconds >= 0,
        field(source, point + ".seconds") + " is " + number_text(cost.probe[i].seconds) + "; expected a number >= 0");
  }
}

void check_rank(const Topology& topology, int rank, const char* what) {
  check_arg(rank >= 0 && rank < topology.num_ranks(), std::string("topology: ") + what + " rank " +
                                                          std::to_string(rank) + " is outside 0.." +
                                                          std::to_string(topology.num_ranks() - 1));
}

const LinkCost& cost_of(const Topology& topology, LinkClass link) {
  const auto& cost = topology.cost(link);
  check_arg(cost.has_value(), std::string("topology: no cost for link class '") + link_class_name(link) +
                                  "' (not measured: no pair of ranks on such a link, or not probed)");
  return *cost;
}

// One direction of one rank's exchange: `bytes[peer]` to or from each peer.
double exchange_seconds(const Topology& topology, int rank, std::span<const std::int64_t> bytes, std::size_t stride) {
  std::array<std::int64_t, kNumLinkClasses> messages{}, total{};
  for (int peer = 0; peer < topology.num_ranks(); ++peer) {
    const std::int64_t b = bytes[static_cast<std::size_t>(peer) * stride];
    check_arg(b >= 0, "topology: exchange of " + std::to_string(b) + " bytes between ranks " + std::to_string(rank) +
                          " and " + std::to_string(peer) + "; expected >= 0");
    if (b == 0) continue;
    const int c = static_cast<int>(link_class(topology, rank, peer));
    ++messages[c];
    total[c] += b;
  }
  double seconds = 0;
  for (LinkClass link : kAllLinkClasses) {
    const int c = static_cast<int>(link);
    if (messages[c] == 0) continue;
    const LinkCost& cost = cost_of(topology, link);
    seconds +=
        cost.latency_s * static_cast<double>(messages[c]) + static_cast<double>(total[c]) / cost.bandwidth_bytes_per_s;
  }
  return seconds;
}

}  // namespace

const char* link_class_name(LinkClass link) {
  switch (link) {
    case LinkClass::kSelf: return "self";
    case LinkClass::kSameNode: return "same_node";
    case LinkClass::kOtherNode: return "other_node";
  }
  return "unknown";
}

std::optional<LinkClass> parse_link_class(std::string_view name) {
  for (LinkClass link : kAllLinkClasses)
    if (name == link_class_name(link)) return link;
  return std::nullopt;
}

double LinkCost::seconds(std::int64_t bytes) const {
  return latency_s + static_cast<double>(bytes) / bandwidth_bytes_per_s;
}

int Topology::num_nodes() const {
  int n = 0;
  for (const auto& r : ranks) n = std::max(n, r.node + 1);
  return n;
}

std::vector<int> Topology::ranks_on_node(int node) const {
  std::vector<int> out;
  for (int r = 0; r < num_ranks(); ++r)
    if (ranks[static_cast<std::size_t>(r)].node == node) out.push_back(r);
  return out;
}

void check_topology(const Topology& topology, const std::string& source) {
  check_arg(!topology.ranks.empty(), field(source, "ranks") + " is empty; expected at least one rank");
  int next_node = 0;  // the id the next new node must take
  for (std::size_t r = 0; r < topology.ranks.size(); ++r) {
    const int node = topology.ranks[r].node;
    check_arg(node >= 0 && node <= next_node, rank_field(source, r, "node") + " is " + std::to_string(node) +
                                                  "; expected 0.." + std::to_string(next_node) +
                                                  " (nodes are numbered 0..N-1 in order of their lowest rank)");
    if (node == next_node) ++next_node;
    check_placement(topology.ranks[r], r, source);
  }
  for (LinkClass link : kAllLinkClasses)
    if (topology.cost(link)) check_cost(*topology.cost(link), link, source);
  if (topology.round_s)
    check_arg(std::isfinite(*topology.round_s) && *topology.round_s >= 0,
              source + ": 'round_s' is " + std::to_string(*topology.round_s) + "; expected a finite number >= 0");
}

LinkClass link_class(const Topology& topology, int from, int to) {
  check_rank(topology, from, "sending");
  check_rank(topology, to, "receiving");
  if (from == to) return LinkClass::kSelf;
  return topology.ranks[static_cast<std::size_t>(from)].node == topology.ranks[static_cast<std::size_t>(to)].node
             ? LinkClass::kSameNode
             : LinkClass::kOtherNode;
}

double predict_message_seconds(const Topology& topology, int from, int to, std::int64_t bytes) {
  check_arg(bytes >= 0, "topology: message of " + std::to_string(bytes) + " bytes; expected >= 0");
  const LinkClass link = link_class(topology, from, to);
  return bytes == 0 ? 0.0 : cost_of(topology, link).seconds(bytes);
}

double predict_exchange_seconds(const Topology& topology, int rank, std::span<const std::int64_t> bytes_to_each_rank) {
  check_rank(topology, rank, "exchanging");
  check_arg(bytes_to_each_rank.size() == topology.ranks.size(),
            "topology: exchange has " + std::to_string(bytes_to_each_rank.size()) +
                " byte counts; expected one per rank (" + std::to_string(topology.num_ranks()) + ")");
  return exchange_seconds(topology, rank, bytes_to_each_rank, 1);
}

double predict_all_to_all_seconds(const Topology& topology, std::span<const std::int64_t> bytes) {
  const auto n = topology.ranks.size();
  check_arg(bytes.size() == n * n, "topology: all-to-all has " + std::to_string(bytes.size()) +
                                       " byte counts; expected num_ranks × num_ranks (" + std::to_string(n * n) + ")");
  double slowest = 0;
  for (std::size_t r = 0; r < n; ++r) {
    const int rank = static_cast<int>(r);
    const double send = exchange_seconds(topology, rank, bytes.subspan(r * n, n), 1);
    const double recv = exchange_seconds(topology, rank, bytes.subspan(r), n);  // column r
    slowest = std::max({slowest, send, recv});
  }
  return slowest;
}

Topology virtual_nodes(int num_ranks, int ranks_per_node) {
  check_arg(num_ranks >= 1, "virtual nodes: " + std::to_string(num_ranks) + " ranks; expected at least 1");
  check_arg(ranks_per_node >= 1,
            "virtual nodes: " + std::to_string(ranks_per_node) + " ranks per node; expected at least 1");
  Topology t;
  t.ranks.resize(static_cast<std::size_t>(num_ranks));
  for (int r = 0; r < num_ranks; ++r) t.ranks[static_cast<std::size_t>(r)].node = r / ranks_per_node;
  return t;
}

LinkCost fit_link_cost(std::span<const ProbePoint> points) {
  std::set<std::int64_t> sizes;
  for (const ProbePoint& p : points) {
    check_arg(p.bytes >= 0, "link cost fit: probe of " + std::to_string(p.bytes) + " bytes; expected >= 0");
    check_arg(std::isfinite(p.seconds) && p.seconds > 0, "link cost fit: probe of " + std::to_string(p.bytes) +
                                                             " bytes took " + number_text(p.seconds) +
                                                             " s; expected a time > 0");
    sizes.insert(p.bytes);
  }
  check_arg(sizes.size() >= 2, "link cost fit: " + std::to_string(sizes.size()) +
                                   " distinct message size(s); expected at least 2 to separate latency and bandwidth");
  double mx = 0, my = 0;
  for (const ProbePoint& p : points) {
    mx += static_cast<double>(p.bytes);
    my += p.seconds;
  }
  mx /= static_cast<double>(points.size());
  my /= static_cast<double>(points.size());
  double sxx = 0, sxy = 0, oxx = 0, oxy = 0;  // centred, and through the origin
  for (const ProbePoint& p : points) {
    const double x = static_cast<double>(p.bytes);
    sxx += (x - mx) * (x - mx);
    sxy += (x - mx) * (p.seconds - my);
    oxx += x * x;
    oxy += x * p.seconds;
  }
  double slope = sxy / sxx, latency = my - slope * mx;
  if (latency < 0) {
    latency = 0;
    slope = oxy / oxx;
  }
  check_arg(slope > 0 && std::isfinite(slope), "link cost fit: time does not grow with message size (fitted " +
                                                   number_text(slope) +
                                                   " s/byte); expected larger messages to take longer");
  return LinkCost{latency, 1.0 / slope, std::vector<ProbePoint>(points.begin(), points.end())};
}

}  // namespace switchyard::comm
