// BlockPartition: the one contiguous, near-equal split of items over parts,
// checked against splits written out by hand.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/partition.hpp"

namespace {

using switchyard::BlockPartition;

struct Split {
  std::int64_t total;
  int parts;
  std::vector<std::int64_t> counts;  // by hand: the first total % parts blocks get one more
};

const Split kSplits[] = {
    {10, 4, {3, 3, 2, 2}},    // 10 = 4*2 + 2
    {8, 4, {2, 2, 2, 2}},     // even
    {7, 3, {3, 2, 2}},        // 7 = 3*2 + 1
    {3, 5, {1, 1, 1, 0, 0}},  // fewer items than parts: empty tail blocks
    {0, 2, {0, 0}},           // nothing to split
    {5, 1, {5}},              // one part holds everything
    {60, 8, {8, 8, 8, 8, 7, 7, 7, 7}},
};

TEST(BlockPartition, CountsAndFirstsMatchHandDerivedSplits) {
  for (const Split& s : kSplits) {
    const BlockPartition p(s.total, s.parts);
    std::int64_t first = 0;
    for (int i = 0; i < s.parts; ++i) {
      EXPECT_EQ(p.count(i), s.counts[static_cast<std::size_t>(i)]) << s.total << " over " << s.parts << ", block " << i;
      EXPECT_EQ(p.first(i), first) << s.total << " over " << s.parts << ", block " << i;
      first += s.counts[static_cast<std::size_t>(i)];
    }
    EXPECT_EQ(p.first(s.parts), s.total);
    EXPECT_EQ(p.max_count(), s.counts[0]);
  }
}

TEST(BlockPartition, OwnerIsTheBlockHoldingTheItem) {
  // 10 over 4: items 0-2 -> 0, 3-5 -> 1, 6-7 -> 2, 8-9 -> 3.
  const BlockPartition p(10, 4);
  const int expected[] = {0, 0, 0, 1, 1, 1, 2, 2, 3, 3};
  for (std::int64_t x = 0; x < 10; ++x) EXPECT_EQ(p.owner(x), expected[x]) << "item " << x;
  // Every item of every split lies in its owner's block.
  for (const Split& s : kSplits) {
    const BlockPartition q(s.total, s.parts);
    for (std::int64_t x = 0; x < s.total; ++x) {
      const int o = q.owner(x);
      EXPECT_TRUE(q.first(o) <= x && x < q.first(o) + q.count(o)) << x << " of " << s.total << " over " << s.parts;
    }
  }
}

TEST(BlockPartition, RejectsNoPartsAndNegativeTotals) {
  EXPECT_THROW(BlockPartition(4, 0), switchyard::Error);
  EXPECT_THROW(BlockPartition(-1, 2), switchyard::Error);
}

}  // namespace
