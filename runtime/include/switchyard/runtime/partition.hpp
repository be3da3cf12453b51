#pragma once
// Contiguous, near-equal blocks: the one split of `total` items (token rows,
// experts, training samples) over `num_parts` parts (ranks) used everywhere.
#include <algorithm>
#include <cstdint>
#include <string>

#include "switchyard/runtime/error.hpp"

namespace switchyard {

/// `total` items in `num_parts` contiguous blocks, in order; the first
/// `total % num_parts` blocks hold one item more than the others, e.g. 10
/// over 4 is 3, 3, 2, 2. Blocks may be empty when total < num_parts. Every
/// member is constant time and thread-safe.
class BlockPartition {
 public:
  /// Throws Error(kInvalidArgument) if num_parts < 1 or total < 0.
  BlockPartition(std::int64_t total, int num_parts) : total_(total), num_parts_(num_parts) {
    check_arg(num_parts >= 1, "num_parts must be at least 1, got " + std::to_string(num_parts));
    check_arg(total >= 0, "total must not be negative, got " + std::to_string(total));
  }

  std::int64_t total() const { return total_; }
  int num_parts() const { return num_parts_; }

  /// The first item of block `part`; first(num_parts()) is total().
  std::int64_t first(int part) const { return part * base() + std::min<std::int64_t>(part, extra()); }
  /// The number of items in block `part`.
  std::int64_t count(int part) const { return base() + (part < extra() ? 1 : 0); }
  /// The largest block (block 0's).
  std::int64_t max_count() const { return count(0); }
  /// The block that holds item `item` (0 <= item < total()).
  int owner(std::int64_t item) const {
    const std::int64_t big = base() + 1;  // blocks 0 .. extra()-1 hold one more
    if (item < extra() * big) return static_cast<int>(item / big);
    return static_cast<int>(extra() + (item - extra() * big) / base());
  }

 private:
  std::int64_t base() const { return total_ / num_parts_; }
  std::int64_t extra() const { return total_ % num_parts_; }

  std::int64_t total_;
  int num_parts_;
};

}  // namespace switchyard
