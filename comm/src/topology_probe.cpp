// discover_topology: nodes from MPI, placement from hwloc, link costs from a
// short probe between pairs of ranks.
#include "switchyard/comm/topology_probe.hpp"

#include <hwloc.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <set>
#include <string>

#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/comm/watchdog.hpp"
#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/log.hpp"

namespace switchyard::comm {
namespace {

constexpr int kPingTag = 7, kGoTag = 8, kResultTag = 9;
constexpr std::int64_t kMaxProbeBytes = std::int64_t{64} << 20;
// Ranks waiting for the probe sleep up to this long between tests.
constexpr std::chrono::microseconds kIdleSleep{1000};

void check_options(const DiscoveryOptions& o, int size) {
  check_arg(o.ranks_per_node >= 0, "topology discovery: ranks per node is " + std::to_string(o.ranks_per_node) +
                                       "; expected 0 (real nodes) or more (virtual nodes)");
  check_arg(o.node_of_rank.empty() || o.ranks_per_node == 0,
            "topology discovery: both ranks per node and a node for each rank given; expected at most one");
  check_arg(o.node_of_rank.empty() || o.node_of_rank.size() == static_cast<std::size_t>(size),
            "topology discovery: " + std::to_string(o.node_of_rank.size()) + " node labels for " +
                std::to_string(size) + " ranks; expected one per rank");
  for (int label : o.node_of_rank)
    check_arg(label >= 0, "topology discovery: node label " + std::to_string(label) + "; expected labels >= 0");
  check_arg(o.repetitions >= 1 && o.repetitions <= 100,
            "topology discovery: " + std::to_string(o.repetitions) + " repetitions; expected 1..100");
  if (o.probe) check_probe_bytes(o.probe_bytes);
}

// NOTE: every wait here is under the watchdog (watchdog.hpp), so a rank
// that stalls while the topology is probed ends the job too. The timed
// waits spin, as the blocking calls they stand for would.
void spin(MPI_Request* request, const char* operation) {
  wait_watched(request, operation, std::chrono::microseconds(0));
}

void send_watched(const void* data, int count, MPI_Datatype type, int peer, int tag, MPI_Comm comm) {
  MPI_Request request;
  check_mpi(MPI_Isend(data, count, type, peer, tag, comm, &request));
  spin(&request, "send (topology probe)");
}

void recv_watched(void* data, int count, MPI_Datatype type, int peer, int tag, MPI_Comm comm) {
  MPI_Request request;
  check_mpi(MPI_Irecv(data, count, type, peer, tag, comm, &request));
  spin(&request, "receive (topology probe)");
}

// A private duplicate of the caller's communicator, so that probe messages
// never match the caller's.
class DupComm {
 public:
  explicit DupComm(MPI_Comm comm) { check_mpi(MPI_Comm_dup(comm, &comm_)); }
  ~DupComm() { MPI_Comm_free(&comm_); }
  DupComm(const DupComm&) = delete;
  DupComm& operator=(const DupComm&) = delete;
  MPI_Comm get() const { return comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

// The lowest rank of the node (shared-memory domain) this rank runs on.
int lowest_rank_of_my_node(MPI_Comm comm, int rank) {
  MPI_Comm node;
  check_mpi(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  int lowest = rank;
  MPI_Request request;
  const int rc = MPI_Iallreduce(&rank, &lowest, 1, MPI_INT, MPI_MIN, node, &request);
  try {
    if (rc == MPI_SUCCESS) spin(&request, "allreduce (topology)");
  } catch (...) {
    MPI_Comm_free(&node);
    throw;
  }
  MPI_Comm_free(&node);
  check_mpi(rc);
  return lowest;
}

// Cores and NUMA node from hwloc; left unknown where hwloc cannot tell.
void read_placement(RankPlacement* p) {
  hwloc_topology_t topology;
  if (hwloc_topology_init(&topology) != 0) return;
  hwloc_bitmap_t cpus = hwloc_bitmap_alloc();
  if (cpus != nullptr && hwloc_topology_load(topology) == 0 &&
      hwloc_get_cpubind(topology, cpus, HWLOC_CPUBIND_PROCESS) == 0 && !hwloc_bitmap_iszero(cpus)) {
    for (int id = hwloc_bitmap_first(cpus); id >= 0; id = hwloc_bitmap_next(cpus, id)) p->cores.push_back(id);
    // The NUMA node whose processors include all of this rank's.
    const int num_numa = hwloc_get_nbobjs_by_type(topology, HWLOC_OBJ_NUMANODE);
    for (int i = 0; i < num_numa; ++i) {
      hwloc_obj_t numa = hwloc_get_obj_by_type(topology, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(i));
      if (numa != nullptr && numa->cpuset != nullptr && hwloc_bitmap_isincluded(cpus, numa->cpuset)) {
        p->numa_node = static_cast<int>(numa->os_index);
        break;
      }
    }
  }
  if (cpus != nullptr) hwloc_bitmap_free(cpus);
  hwloc_topology_destroy(topology);
}

// A label of this rank's node: equal labels, same node.
int node_label(MPI_Comm comm, int rank, const DiscoveryOptions& o) {
  if (!o.node_of_rank.empty()) return o.node_of_rank[static_cast<std::size_t>(rank)];
  return o.ranks_per_node > 0 ? rank / o.ranks_per_node : lowest_rank_of_my_node(comm, rank);
}

// Every rank's node, host, cores and NUMA node, the same on every rank.
std::vector<RankPlacement> gather_placements(MPI_Comm comm, int rank, int size, const DiscoveryOptions& o) {
  RankPlacement mine;
  read_placement(&mine);
  char host[MPI_MAX_PROCESSOR_NAME] = {0};
  int host_len = 0;
  check_mpi(MPI_Get_processor_name(host, &host_len));
  const int header[3] = {node_label(comm, rank, o), mine.numa_node, static_cast<int>(mine.cores.size())};
  std::vector<int> headers(static_cast<std::size_t>(3 * size));
  MPI_Request request;
  check_mpi(MPI_Iallgather(header, 3, MPI_INT, headers.data(), 3, MPI_INT, comm, &request));
  spin(&request, "allgather (topology)");
  std::vector<char> hosts(static_cast<std::size_t>(size) * MPI_MAX_PROCESSOR_NAME);
  check_mpi(MPI_Iallgather(host, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, hosts.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, comm,
                           &request));
  spin(&request, "allgather (topology)");
  std::vector<int> counts(static_cast<std::size_t>(size)), offsets(static_cast<std::size_t>(size));
  int total = 0;
  for (int r = 0; r < size; ++r) {
    counts[static_cast<std::size_t>(r)] = headers[static_cast<std::size_t>(3 * r + 2)];
    offsets[static_cast<std::size_t>(r)] = total;
    total += counts[static_cast<std::size_t>(r)];
  }
  std::vector<int> cores(static_cast<std::size_t>(std::max(total, 1)));
  check_mpi(MPI_Iallgatherv(mine.cores.data(), header[2], MPI_INT, cores.data(), counts.data(), offsets.data(), MPI_INT,
                            comm, &request));
  spin(&request, "allgatherv (topology)");
  // Node ids 0..N-1 in order of each node's lowest rank, which is the order
  // in which ranks first name their labels.
  std::vector<RankPlacement> out(static_cast<std::size_t>(size));
  std::vector<int> keys;
  for (int r = 0; r < size; ++r) {
    RankPlacement& p = out[static_cast<std::size_t>(r)];
    const int key = headers[static_cast<std::size_t>(3 * r)];
    const auto it = std::find(keys.begin(), keys.end(), key);
    p.node = static_cast<int>(it - keys.begin());
    if (it == keys.end()) keys.push_back(key);
    p.numa_node = headers[static_cast<std::size_t>(3 * r + 1)];
    const char* name = hosts.data() + static_cast<std::size_t>(r) * MPI_MAX_PROCESSOR_NAME;
    p.host.assign(name, strnlen(name, MPI_MAX_PROCESSOR_NAME));
    const auto first = cores.begin() + offsets[static_cast<std::size_t>(r)];
    p.cores.assign(first, first + counts[static_cast<std::size_t>(r)]);
  }
  return out;
}

double median(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  const std::size_t n = samples.size();
  return n % 2 == 1 ? samples[n / 2] : 0.5 * (samples[n / 2 - 1] + samples[n / 2]);
}

// Through a volatile pointer, so that the compiler cannot drop the copies.
void* (*volatile copy_bytes)(void*, const void*, std::size_t) = std::memcpy;

// Seconds of one memory copy of each size (median over repetitions); each
// sample times enough copies to span about 256 KiB, for the clock's sake.
std::vector<double> probe_copy(const DiscoveryOptions& o, std::vector<char>* a, std::vector<char>* b) {
  std::vector<double> out;
  for (std::int64_t bytes : o.probe_bytes) {
    const std::int64_t copies = std::clamp<std::int64_t>((256 << 10) / bytes, 1, 4096);
    std::vector<double> samples;
    for (int rep = -1; rep < o.repetitions; ++rep) {  // rep -1 is the warm-up
      const double start = MPI_Wtime();
      for (std::int64_t i = 0; i < copies; ++i) copy_bytes(b->data(), a->data(), static_cast<std::size_t>(bytes));
      const double seconds = (MPI_Wtime() - start) / static_cast<double>(copies);
      if (rep >= 0) samples.push_back(seconds);
    }
    out.push_back(median(samples));
  }
  return out;
}

// Rank 0's side of a ping-pong with `peer`: one-way seconds at each size
// (half the median round trip).
std::vector<double> probe_ping(MPI_Comm comm, int peer, const DiscoveryOptions& o, std::vector<char>* buffer) {
  std::vector<double> out;
  for (std::int64_t bytes : o.probe_bytes) {
    const int count = static_cast<int>(bytes);
    std::vector<double> samples;
    for (int rep = -1; rep < o.repetitions; ++rep) {
      const double start = MPI_Wtime();
      send_watched(buffer->data(), count, MPI_BYTE, peer, kPingTag, comm);
      recv_watched(buffer->data(), count, MPI_BYTE, peer, kPingTag, comm);
      if (rep >= 0) samples.push_back(0.5 * (MPI_Wtime() - start));
    }
    out.push_back(median(samples));
  }
  return out;
}

// The peer's side: echo every message from `measurer`. The first wait (the
// measurer may still be busy with another class) sleeps; the timed ones spin.
void answer_ping(MPI_Comm comm, int measurer, const DiscoveryOptions& o, std::vector<char>* buffer) {
  bool first = true;
  for (std::int64_t bytes : o.probe_bytes) {
    const int count = static_cast<int>(bytes);
    for (int rep = -1; rep < o.repetitions; ++rep) {
      if (first) {
        MPI_Request request;
        check_mpi(MPI_Irecv(buffer->data(), count, MPI_BYTE, measurer, kPingTag, comm, &request));
        wait_watched(&request, "receive (topology probe)", kIdleSleep);
        first = false;
      } else {
        recv_watched(buffer->data(), count, MPI_BYTE, measurer, kPingTag, comm);
      }
      send_watched(buffer->data(), count, MPI_BYTE, measurer, kPingTag, comm);
    }
  }
}

// The pairs of ranks the probe measures, -1 where a class has none. Rank 0
// measures the other-node link with the lowest rank of another node; the
// same-node link is measured by the lowest rank that shares its node, with
// the next rank of that node (rank 0 and its neighbour, unless rank 0 is
// alone on its node).
struct ProbePairs {
  int same_measurer = -1, same_peer = -1, other_peer = -1;
};

ProbePairs probe_pairs(const std::vector<RankPlacement>& ranks) {
  ProbePairs p;
  const int n = static_cast<int>(ranks.size());
  for (int r = 1; r < n && p.other_peer < 0; ++r)
    if (ranks[static_cast<std::size_t>(r)].node != ranks[0].node) p.other_peer = r;
  for (int a = 0; a < n && p.same_peer < 0; ++a)
    for (int b = a + 1; b < n && p.same_peer < 0; ++b)
      if (ranks[static_cast<std::size_t>(a)].node == ranks[static_cast<std::size_t>(b)].node) {
        p.same_measurer = a;
        p.same_peer = b;
      }
  return p;
}

// Every rank's part of the measurements; on return rank 0 holds
// seconds[class][size]. One pair measures at a time: rank 0 hands over to
// a same-node measurer other than itself only when its own pings are done.
void measure(MPI_Comm comm, int rank, const ProbePairs& pairs, const DiscoveryOptions& o,
             std::vector<double>* seconds) {
  const std::size_t num_sizes = o.probe_bytes.size();
  const auto max_bytes = static_cast<std::size_t>(*std::max_element(o.probe_bytes.begin(), o.probe_bytes.end()));
  std::vector<char> a(max_bytes, 1), b(max_bytes, 2);
  auto put = [&](LinkClass link, const std::vector<double>& s) {
    std::copy(s.begin(), s.end(), seconds->begin() + static_cast<std::ptrdiff_t>(static_cast<int>(link) * num_sizes));
  };
  double* same_row = seconds->data() + static_cast<std::size_t>(LinkClass::kSameNode) * num_sizes;
  const int rows = static_cast<int>(num_sizes);
  if (rank == 0) {
    put(LinkClass::kSelf, probe_copy(o, &a, &b));
    if (pairs.same_measurer == 0) put(LinkClass::kSameNode, probe_ping(comm, pairs.same_peer, o, &a));
    if (pairs.other_peer > 0) put(LinkClass::kOtherNode, probe_ping(comm, pairs.other_peer, o, &a));
    if (pairs.same_measurer > 0) {
      send_watched(nullptr, 0, MPI_BYTE, pairs.same_measurer, kGoTag, comm);
      MPI_Request request;
      check_mpi(MPI_Irecv(same_row, rows, MPI_DOUBLE, pairs.same_measurer, kResultTag, comm, &request));
      wait_watched(&request, "receive (topology probe)", kIdleSleep);
    }
    return;
  }
  if (rank == pairs.other_peer) answer_ping(comm, 0, o, &a);
  if (rank == pairs.same_peer) answer_ping(comm, pairs.same_measurer, o, &a);
  if (rank == pairs.same_measurer) {
    MPI_Request request;
    check_mpi(MPI_Irecv(nullptr, 0, MPI_BYTE, 0, kGoTag, comm, &request));
    wait_watched(&request, "receive (topology probe)", kIdleSleep);
    const std::vector<double> same = probe_ping(comm, pairs.same_peer, o, &a);
    send_watched(same.data(), rows, MPI_DOUBLE, 0, kResultTag, comm);
  }
}

// The fitted cost; when time does not grow with size (the pair was
// descheduled more than it was measured), the bandwidth of the largest size
// alone, with latency 0: pessimistic, never invalid.
LinkCost fit_or_fall_back(const std::vector<ProbePoint>& points, LinkClass link, int rank) {
  try {
    return fit_link_cost(points);
  } catch (const Error& e) {
    const auto largest = std::max_element(points.begin(), points.end(),
                                          [](const ProbePoint& a, const ProbePoint& b) { return a.bytes < b.bytes; });
    const double seconds = std::max(largest->seconds, 1e-9);
    if (rank == 0)
      SY_WARN(kComm, "topology probe of %s: %s; using %lld B in %g s (latency 0) instead", link_class_name(link),
              e.what(), static_cast<long long>(largest->bytes), seconds);
    return LinkCost{0.0, static_cast<double>(largest->bytes) / seconds, points};
  }
}

// The probe: the pairs measure, rank 0 broadcasts seconds[class][size];
// every rank knows which classes have a pair and fits the same costs.
void probe_costs(MPI_Comm comm, int rank, const DiscoveryOptions& o, Topology* t) {
  const std::size_t num_sizes = o.probe_bytes.size();
  std::vector<double> seconds(kNumLinkClasses * num_sizes, 0.0);
  const ProbePairs pairs = probe_pairs(t->ranks);
  measure(comm, rank, pairs, o, &seconds);
  MPI_Request request;
  check_mpi(MPI_Ibcast(seconds.data(), static_cast<int>(seconds.size()), MPI_DOUBLE, 0, comm, &request));
  wait_watched(&request, "broadcast (topology)", kIdleSleep);
  const std::array<bool, kNumLinkClasses> probed = {true, pairs.same_peer > 0, pairs.other_peer > 0};
  for (LinkClass link : kAllLinkClasses) {
    if (!probed[static_cast<std::size_t>(link)]) continue;
    const std::size_t base = static_cast<std::size_t>(link) * num_sizes;
    std::vector<ProbePoint> points;
    for (std::size_t i = 0; i < num_sizes; ++i) points.push_back({o.probe_bytes[i], seconds[base + i]});
    t->cost(link) = fit_or_fall_back(points, link, rank);
  }
}

// The fixed cost of an all-to-all round (Topology::round_s): after a
// warm-up, the median of timed all-to-alls of 8 bytes per peer on each
// rank, the slowest rank's. Collective.
double probe_round(MPI_Comm comm, int size) {
  constexpr int kWarmup = 3, kRounds = 21;
  std::vector<std::int64_t> send(static_cast<std::size_t>(size), 0), recv(send.size(), 0);
  std::vector<double> seconds;
  for (int i = 0; i < kWarmup + kRounds; ++i) {
    MPI_Request request;
    check_mpi(MPI_Ibarrier(comm, &request));
    spin(&request, "barrier (topology)");
    const double start = MPI_Wtime();
    check_mpi(MPI_Ialltoall(send.data(), 1, MPI_INT64_T, recv.data(), 1, MPI_INT64_T, comm, &request));
    spin(&request, "alltoall (topology)");
    if (i >= kWarmup) seconds.push_back(MPI_Wtime() - start);
  }
  std::nth_element(seconds.begin(), seconds.begin() + kRounds / 2, seconds.end());
  double slowest = seconds[kRounds / 2];
  MPI_Request request;
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm, &request));
  spin(&request, "allreduce (topology)");
  return slowest;
}

}  // namespace

void check_probe_bytes(const std::vector<std::int64_t>& probe_bytes) {
  for (std::int64_t b : probe_bytes)
    check_arg(b >= 1 && b <= kMaxProbeBytes, "probe size " + std::to_string(b) + " bytes; expected 1 B .. 64 MiB");
  const std::set<std::int64_t> distinct(probe_bytes.begin(), probe_bytes.end());
  check_arg(distinct.size() >= 2,
            std::to_string(distinct.size()) + " distinct probe size(s); expected at least 2 (a line needs 2 points)");
}

Topology discover_topology(MPI_Comm comm, const DiscoveryOptions& options) {
  int size = 0;
  check_mpi(MPI_Comm_size(comm, &size));
  check_options(options, size);
  const DupComm dup(comm);
  int rank = 0;
  check_mpi(MPI_Comm_rank(dup.get(), &rank));
  Topology t;
  t.ranks = gather_placements(dup.get(), rank, size, options);
  if (options.probe) {
    probe_costs(dup.get(), rank, options, &t);
    t.round_s = probe_round(dup.get(), size);
  }
  check_topology(t, "discovered topology");
  return t;
}

}  // namespace switchyard::comm
