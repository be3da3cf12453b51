#pragma once
// What a step's exchanges carried over each class of link: token copies that
// stay on the rank, stay in the node or cross nodes, and their bytes. See
// docs/topology.md ("Traffic per link class").
#include <array>
#include <cstdint>
#include <vector>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/comm/topology.hpp"
#include "switchyard/layers/moe_context.hpp"

namespace switchyard::layers {

/// Token copies and bytes per link class, indexed by comm::LinkClass.
struct LinkTraffic {
  /// Token copies (rows of the dispatch: one per token and destination
  /// rank) sent over each class: kSelf stays on the rank, kSameNode stays in
  /// the node, kOtherNode crosses nodes.
  std::array<std::int64_t, comm::kNumLinkClasses> copies{};
  /// The kept top-k slots behind those copies (what an exchange sending one
  /// row per slot would send): copies <= slots.
  std::array<std::int64_t, comm::kNumLinkClasses> slots{};
  /// Bytes sent over each class by every exchange of the step: the dispatch
  /// and the combine (and, with a backward, both again), rows × row bytes.
  std::array<std::int64_t, comm::kNumLinkClasses> bytes{};

  std::int64_t total_copies() const;
  std::int64_t copies_on(comm::LinkClass link) const { return copies[static_cast<int>(link)]; }
  std::int64_t slots_on(comm::LinkClass link) const { return slots[static_cast<int>(link)]; }
  std::int64_t bytes_on(comm::LinkClass link) const { return bytes[static_cast<int>(link)]; }
  LinkTraffic& operator+=(const LinkTraffic& other);
  bool operator==(const LinkTraffic&) const = default;
};

/// Bytes of one row on the wire: `hidden` float32 values, or bf16 ones when
/// the step sends rows as bf16 (StepSchedule::wire_bf16).
std::int64_t wire_row_bytes(std::int64_t hidden, bool wire_bf16);

/// This rank's share of a step's traffic, from its StepTraffic: copies are
/// the rows it dispatched (send_rows) and slots the slots they carry
/// (send_slots; zeros when that is empty) by the class of the link to each
/// destination; bytes are what it sent, dispatch rows (send_rows) plus
/// combine rows (recv_rows, which go back the way they came), × `row_bytes`,
/// × `passes` (1: a forward; 2: a forward and its backward, which sends the
/// same rows again). Summed over the ranks, bytes are the job's bytes per
/// class. Not collective. Throws Error(kInvalidArgument) when the traffic's
/// rank count differs from the topology's, `rank` is outside it, a count is
/// negative, row_bytes < 0 or passes < 1.
LinkTraffic link_traffic(const StepTraffic& traffic, const comm::Topology& topology, int rank, std::int64_t row_bytes,
                         int passes = 1);

/// The job's totals: link_traffic of every rank, summed with one all-reduce.
/// The same on every rank. Collective and blocking.
LinkTraffic job_link_traffic(comm::Communicator& comm, const StepTraffic& traffic, const comm::Topology& topology,
                             std::int64_t row_bytes, int passes = 1);

/// The job's dispatch as a byte matrix, bytes[from * R + to] = rows rank
/// `from` sent to rank `to` × `row_bytes`, every rank's send_rows gathered
/// with one all-reduce: what comm::predict_all_to_all_seconds prices (the
/// combine is its transpose). The same on every rank. Collective and
/// blocking.
std::vector<std::int64_t> job_dispatch_bytes(comm::Communicator& comm, const StepTraffic& traffic,
                                             std::int64_t row_bytes);

/// The transpose of a square byte matrix (num_ranks × num_ranks): the
/// combine of a dispatch.
std::vector<std::int64_t> transpose_bytes(const std::vector<std::int64_t>& bytes, int num_ranks);

}  // namespace switchyard::layers
