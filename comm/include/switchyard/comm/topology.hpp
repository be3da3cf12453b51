#pragma once
// The machine as the exchange sees it: which node each rank runs on, where
// on that node (cores, NUMA node), and what a message costs on each class of
// link. Plain data, the same on every rank; measured by discover_topology
// (topology_probe.hpp), made up by virtual_nodes, or read from a file.
// See docs/topology.md.
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace switchyard::comm {

/// How two ranks are connected, from the cheapest to the dearest. GPU links
/// (NVLink, PCIe) will be classes of their own; files name classes, never
/// their numbers, so a new class leaves existing files valid.
enum class LinkClass {
  kSelf,       // a rank to itself: a memory copy
  kSameNode,   // two ranks of one node: shared memory
  kOtherNode,  // two ranks on different nodes: the network
};
inline constexpr int kNumLinkClasses = 3;
inline constexpr std::array<LinkClass, kNumLinkClasses> kAllLinkClasses = {LinkClass::kSelf, LinkClass::kSameNode,
                                                                           LinkClass::kOtherNode};

/// "self", "same_node", "other_node": the names topology files use.
const char* link_class_name(LinkClass link);
/// The class named `name` (as link_class_name writes it), or nullopt.
std::optional<LinkClass> parse_link_class(std::string_view name);

/// One measurement: a message of `bytes` bytes took `seconds` one way.
struct ProbePoint {
  std::int64_t bytes = 0;
  double seconds = 0;
  bool operator==(const ProbePoint&) const = default;
};

/// The cost of one message on a link class: seconds(bytes) = latency_s +
/// bytes / bandwidth_bytes_per_s, and the points it was fitted from (empty
/// when the numbers were given by hand).
struct LinkCost {
  double latency_s = 0;              // >= 0
  double bandwidth_bytes_per_s = 0;  // > 0
  std::vector<ProbePoint> probe;

  /// Predicted one-way time of a message of `bytes` (> 0) bytes.
  double seconds(std::int64_t bytes) const;
  bool operator==(const LinkCost&) const = default;
};

/// Where one rank runs.
struct RankPlacement {
  int node = 0;      // 0..num_nodes-1, nodes numbered in order of their lowest rank
  std::string host;  // MPI_Get_processor_name; "" when unknown (virtual_nodes)
  std::vector<int>
      cores;           // OS processor ids the rank may run on (as `taskset -c` lists them), ascending; empty: unknown
  int numa_node = -1;  // OS index of the NUMA node holding all of `cores`; -1: unknown or several
  bool operator==(const RankPlacement&) const = default;
};

struct Topology {
  std::vector<RankPlacement> ranks;  // [num_ranks], indexed by rank
  /// Cost per link class, indexed by LinkClass; nullopt where the class has
  /// no pair of ranks to measure (other_node on one node) or was not probed.
  std::array<std::optional<LinkCost>, kNumLinkClasses> costs;
  /// The fixed cost of one all-to-all round over all ranks: the slowest
  /// rank's median time of an all-to-all of 8 bytes per peer, which pays
  /// every rank's synchronisation and none of the bytes. nullopt when not
  /// probed. An exchange of several rounds pays it once per round.
  std::optional<double> round_s;

  int num_ranks() const { return static_cast<int>(ranks.size()); }
  int num_nodes() const;
  /// The ranks on `node`, ascending.
  std::vector<int> ranks_on_node(int node) const;
  const std::optional<LinkCost>& cost(LinkClass link) const { return costs[static_cast<int>(link)]; }
  std::optional<LinkCost>& cost(LinkClass link) { return costs[static_cast<int>(link)]; }
  bool operator==(const Topology&) const = default;
};

/// Throws Error(kInvalidArgument) naming `source` and the field unless the
/// topology is well formed: at least one rank, node ids 0..N-1 numbered in
/// order of their lowest rank, cores non-negative, ascending and distinct,
/// numa_node >= -1, every cost with finite latency >= 0, finite bandwidth > 0
/// and probe points with bytes >= 0 and finite seconds >= 0.
void check_topology(const Topology& topology, const std::string& source);

/// The class of the link from rank `from` to rank `to`. Throws
/// Error(kInvalidArgument) for a rank outside the topology.
LinkClass link_class(const Topology& topology, int from, int to);

/// Predicted one-way time of a message of `bytes` bytes from `from` to `to`
/// (0 for 0 bytes). Throws Error(kInvalidArgument) when the link's class has
/// no cost.
double predict_message_seconds(const Topology& topology, int from, int to, std::int64_t bytes);

/// Predicted time of one rank's share of an all-to-all: for each link class
/// c, latency_c × (number of non-empty messages on c) + (bytes on c) /
/// bandwidth_c, summed over the classes (self copy, same node, other node).
/// Summing, not taking the maximum, models a rank that drives its messages
/// one after another from one thread, as Open MPI's progress engine does.
/// `bytes_to_each_rank` has num_ranks entries >= 0.
double predict_exchange_seconds(const Topology& topology, int rank, std::span<const std::int64_t> bytes_to_each_rank);

/// Predicted time of a whole all-to-all: `bytes` is the num_ranks ×
/// num_ranks matrix, row-major, bytes[from * num_ranks + to]. Every rank
/// both sends its row and receives its column, each priced as
/// predict_exchange_seconds; the exchange ends when the slowest rank is done:
/// max over ranks of max(send, receive).
double predict_all_to_all_seconds(const Topology& topology, std::span<const std::int64_t> bytes);

/// A topology of `num_ranks` ranks on nodes of `ranks_per_node` consecutive
/// ranks (rank r on node r / ranks_per_node); when ranks_per_node does not
/// divide num_ranks, the last node holds the remainder. Hosts, cores and NUMA
/// nodes unknown, no costs. Throws Error(kInvalidArgument) unless num_ranks
/// >= 1 and ranks_per_node >= 1.
Topology virtual_nodes(int num_ranks, int ranks_per_node);

/// Fits latency and bandwidth to `points` by ordinary least squares on the
/// time, min Σ (latency + bytes/bandwidth − seconds)²; when the best line has
/// a negative intercept, latency is 0 and only the bandwidth is fitted.
/// Absolute residuals, because an exchange's time is a sum of absolute
/// times: the largest sizes, which carry most bytes, weigh most. The result
/// carries `points` as its probe. Throws Error(kInvalidArgument) unless there
/// are at least 2 distinct sizes, every size is >= 0, every time is finite
/// and > 0, and time grows with size.
LinkCost fit_link_cost(std::span<const ProbePoint> points);

/// The topology file (docs/topology.md): a JSON object with "format":
/// "switchyard-topology", "version": 1, "ranks" and "links". What this
/// writes, read_topology_file reads back equal (==).
std::string write_topology_json(const Topology& topology);

/// Parses a topology file's text; `source` names it in errors. Throws
/// Error(kInvalidArgument) with one line naming `source`, the field and what
/// was expected.
Topology parse_topology_json(const std::string& text, const std::string& source);

/// Reads and parses the topology file at `path`. Throws Error(kIo) when it
/// cannot be read, otherwise as parse_topology_json.
Topology read_topology_file(const std::string& path);

}  // namespace switchyard::comm
