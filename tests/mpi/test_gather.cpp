// gather_to_root: every rank's bytes land on the root in rank order, whatever
// their sizes. Rank r sends (r % 3) * 2 bytes, each the value 10 * r + i (a
// payload that encodes its sender and position): with 4 ranks the root
// holds nothing from r0, [10, 11] from r1, [20, 21, 22, 23] from r2 and
// nothing from r3.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "switchyard/comm/gather.hpp"
#include "switchyard/comm/mpi_communicator.hpp"

namespace {

using namespace switchyard;

std::vector<std::uint8_t> payload(int rank) {
  std::vector<std::uint8_t> v(static_cast<std::size_t>((rank % 3) * 2));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::uint8_t>(10 * rank + static_cast<int>(i));
  return v;
}

TEST(GatherToRoot, EveryRanksBytesLandInRankOrderOnTheRoot) {
  comm::MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  for (int root = 0; root < R; ++root) {
    const std::vector<std::uint8_t> mine = payload(me);
    const comm::GatheredBytes all = comm::gather_to_root(comm, mine.data(), mine.size(), root);
    ASSERT_EQ(all.sizes.size(), static_cast<std::size_t>(R));
    std::int64_t offset = 0;
    std::vector<std::uint8_t> expected;
    for (int r = 0; r < R; ++r) {
      const auto p = payload(r);
      EXPECT_EQ(all.sizes[r], static_cast<std::int64_t>(p.size())) << "rank " << r;
      EXPECT_EQ(all.offsets[r], offset) << "rank " << r;
      offset += static_cast<std::int64_t>(p.size());
      expected.insert(expected.end(), p.begin(), p.end());
    }
    if (me != root) {
      EXPECT_TRUE(all.bytes.empty());
      continue;
    }
    ASSERT_EQ(all.bytes.size(), expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i)
      EXPECT_EQ(static_cast<std::uint8_t>(all.bytes[i]), expected[i]) << "byte " << i << ", root " << root;
    for (int r = 0; r < R; ++r) EXPECT_EQ(all.part(r).size(), payload(r).size());
  }
}

TEST(GatherToRoot, TypedRowsConcatenateInRankOrder) {
  comm::MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  // Rank r sends r + 1 floats of value r: the root gets 0, 1, 1, 2, 2, 2, ...
  const std::vector<float> mine(static_cast<std::size_t>(me + 1), static_cast<float>(me));
  const std::vector<float> all = comm::gather_rows_to_root(comm, mine, 0);
  if (me != 0) {
    EXPECT_TRUE(all.empty());
    return;
  }
  std::vector<float> expected;
  for (int r = 0; r < R; ++r) expected.insert(expected.end(), static_cast<std::size_t>(r + 1), static_cast<float>(r));
  EXPECT_EQ(all, expected);
}

}  // namespace
