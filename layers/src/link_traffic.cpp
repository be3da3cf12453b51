#include "switchyard/layers/link_traffic.hpp"

#include <algorithm>
#include <numeric>
#include <string>

#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {

std::int64_t LinkTraffic::total_copies() const {
  return std::accumulate(copies.begin(), copies.end(), std::int64_t{0});
}

LinkTraffic& LinkTraffic::operator+=(const LinkTraffic& other) {
  for (int c = 0; c < comm::kNumLinkClasses; ++c) {
    copies[c] += other.copies[c];
    slots[c] += other.slots[c];
    bytes[c] += other.bytes[c];
  }
  return *this;
}

std::int64_t wire_row_bytes(std::int64_t hidden, bool wire_bf16) {
  check_arg(hidden >= 0, "hidden is " + std::to_string(hidden) + "; expected >= 0");
  return hidden * (wire_bf16 ? 2 : 4);
}

namespace {

void check_counts(const std::vector<std::int64_t>& counts, const char* name, int num_ranks) {
  check_arg(static_cast<int>(counts.size()) == num_ranks,
            std::string("traffic.") + name + " has " + std::to_string(counts.size()) +
                " entries; expected one per rank of the topology (" + std::to_string(num_ranks) + ")");
  for (std::size_t r = 0; r < counts.size(); ++r)
    check_arg(counts[r] >= 0, std::string("traffic.") + name + "[" + std::to_string(r) + "] is " +
                                  std::to_string(counts[r]) + "; expected >= 0");
}

}  // namespace

LinkTraffic link_traffic(const StepTraffic& traffic, const comm::Topology& topology, int rank, std::int64_t row_bytes,
                         int passes) {
  const int R = topology.num_ranks();
  check_arg(rank >= 0 && rank < R,
            "rank is " + std::to_string(rank) + "; expected 0.." + std::to_string(R - 1) + " (the topology's ranks)");
  check_arg(row_bytes >= 0, "row_bytes is " + std::to_string(row_bytes) + "; expected >= 0");
  check_arg(passes >= 1, "passes is " + std::to_string(passes) + "; expected >= 1");
  check_counts(traffic.send_rows, "send_rows", R);
  check_counts(traffic.recv_rows, "recv_rows", R);
  if (!traffic.send_slots.empty()) check_counts(traffic.send_slots, "send_slots", R);
  LinkTraffic out;
  for (int peer = 0; peer < R; ++peer) {
    const int c = static_cast<int>(comm::link_class(topology, rank, peer));
    out.copies[c] += traffic.send_rows[peer];
    if (!traffic.send_slots.empty()) out.slots[c] += traffic.send_slots[peer];
    out.bytes[c] += (traffic.send_rows[peer] + traffic.recv_rows[peer]) * row_bytes * passes;
  }
  return out;
}

LinkTraffic job_link_traffic(comm::Communicator& comm, const StepTraffic& traffic, const comm::Topology& topology,
                             std::int64_t row_bytes, int passes) {
  LinkTraffic out = link_traffic(traffic, topology, comm.rank(), row_bytes, passes);
  constexpr int n = comm::kNumLinkClasses;
  std::array<std::int64_t, 3 * n> sums{};
  std::copy(out.copies.begin(), out.copies.end(), sums.begin());
  std::copy(out.bytes.begin(), out.bytes.end(), sums.begin() + n);
  std::copy(out.slots.begin(), out.slots.end(), sums.begin() + 2 * n);
  comm.allreduce_sum(sums.data(), sums.size());
  std::copy(sums.begin(), sums.begin() + n, out.copies.begin());
  std::copy(sums.begin() + n, sums.begin() + 2 * n, out.bytes.begin());
  std::copy(sums.begin() + 2 * n, sums.end(), out.slots.begin());
  return out;
}

std::vector<std::int64_t> job_dispatch_bytes(comm::Communicator& comm, const StepTraffic& traffic,
                                             std::int64_t row_bytes) {
  const int R = comm.size(), me = comm.rank();
  check_counts(traffic.send_rows, "send_rows", R);
  std::vector<std::int64_t> bytes(static_cast<std::size_t>(R) * R, 0);
  for (int to = 0; to < R; ++to) bytes[static_cast<std::size_t>(me) * R + to] = traffic.send_rows[to] * row_bytes;
  comm.allreduce_sum(bytes.data(), bytes.size());  // each rank fills its own row: the sum is an all-gather
  return bytes;
}

std::vector<std::int64_t> transpose_bytes(const std::vector<std::int64_t>& bytes, int num_ranks) {
  const auto R = static_cast<std::size_t>(num_ranks);
  check_arg(
      num_ranks >= 0 && bytes.size() == R * R,
      "bytes has " + std::to_string(bytes.size()) + " entries; expected num_ranks² (" + std::to_string(R * R) + ")");
  std::vector<std::int64_t> out(bytes.size());
  for (std::size_t from = 0; from < R; ++from)
    for (std::size_t to = 0; to < R; ++to) out[to * R + from] = bytes[from * R + to];
  return out;
}

}  // namespace switchyard::layers
