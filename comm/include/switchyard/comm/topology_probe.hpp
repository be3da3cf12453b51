#pragma once
// Discovery of the topology of an MPI job: nodes, placement (hwloc) and
// link costs measured by a short probe. See docs/topology.md.
#include <mpi.h>

#include <cstdint>
#include <vector>

#include "switchyard/comm/topology.hpp"

namespace switchyard::comm {

struct DiscoveryOptions {
  /// > 0: virtual nodes of this many consecutive ranks (virtual_nodes)
  /// instead of MPI's shared-memory split; the probe then measures the
  /// virtual "other node" link between ranks that may share a host.
  int ranks_per_node = 0;
  /// Non-empty: a label for each rank's node instead (ranks with equal
  /// labels share a node; nodes are numbered in order of their lowest rank),
  /// e.g. the nodes of a topology file. At most one of the two.
  std::vector<int> node_of_rank;
  /// false: nodes and placement only, no costs.
  bool probe = true;
  /// Message sizes of the probe, at least 2 distinct, each 1 B .. 64 MiB.
  /// The largest should pass a link's burst allowance, so that the fit sees
  /// its sustained rate (docs/topology.md).
  std::vector<std::int64_t> probe_bytes = {8, 64 << 10, 1 << 20, 4 << 20};
  /// Timed repetitions per size (1..100), after one untimed warm-up; the
  /// median counts.
  int repetitions = 5;
};

/// Throws Error(kInvalidArgument) unless `probe_bytes` holds at least 2
/// distinct sizes, each 1 B .. 64 MiB ("probe size 0 bytes; expected ...").
void check_probe_bytes(const std::vector<std::int64_t>& probe_bytes);

/// The topology of the ranks of `comm`, the same on every rank. Collective;
/// every rank must pass the same options.
///
/// Nodes come from MPI_Comm_split_type(MPI_COMM_TYPE_SHARED), or are virtual
/// (options.ranks_per_node, options.node_of_rank); hosts from
/// MPI_Get_processor_name; each rank's cores (its CPU binding) and NUMA node
/// from hwloc, left unknown (no cores, numa_node -1) where hwloc cannot tell.
/// With options.probe, one pair of ranks per link class is timed at each
/// size, one pair at a time: rank 0 copies memory (self) and ping-pongs with
/// the lowest rank of another node (other_node); the lowest rank that shares
/// its node ping-pongs with the next rank of that node (same_node). Every
/// rank fits the same costs (fit_link_cost) from the medians rank 0
/// broadcasts; a class without a pair gets no cost. When a class's times do
/// not grow with size (the pair was descheduled more than measured), its
/// cost is the bandwidth of the largest size with latency 0, and rank 0 logs
/// a warning. Ranks not taking part wait asleep, so oversubscribed ranks
/// leave their cores to the probing pair.
///
/// Throws Error(kInvalidArgument) on every rank for bad options, and
/// Error(kMpi) where an MPI call fails.
Topology discover_topology(MPI_Comm comm, const DiscoveryOptions& options = {});

}  // namespace switchyard::comm
