#pragma once
// Gather-to-root: every rank's bytes, of any size, land on one rank in rank
// order. The one home of the sizes -> offsets -> gatherv sequence.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>
#include <vector>

#include "switchyard/comm/communicator.hpp"

namespace switchyard::comm {

/// What gather_to_root leaves on each rank.
struct GatheredBytes {
  /// Every rank's bytes, rank 0's first, then rank 1's, ... On the root
  /// only; empty on the other ranks.
  std::vector<std::byte> bytes;
  /// [num ranks] where rank r's bytes start in `bytes`, and how many they
  /// are. The same on every rank.
  std::vector<std::int64_t> offsets, sizes;

  /// Rank r's bytes (root only).
  std::string_view part(int r) const {
    return {reinterpret_cast<const char*>(bytes.data()) + offsets[static_cast<std::size_t>(r)],
            static_cast<std::size_t>(sizes[static_cast<std::size_t>(r)])};
  }
};

/// Gathers `local_bytes` bytes at `local` from every rank onto `root`, in
/// rank order; ranks may send different sizes (zero included). Collective
/// and blocking: one sum of the sizes, then one gatherv.
GatheredBytes gather_to_root(Communicator& comm, const void* local, std::size_t local_bytes, int root);

/// Typed form for rows of trivially copyable values: every rank's `local`
/// values concatenated in rank order on `root`, empty elsewhere. Collective
/// and blocking.
template <class T>
std::vector<T> gather_rows_to_root(Communicator& comm, const std::vector<T>& local, int root) {
  static_assert(std::is_trivially_copyable_v<T>);
  const GatheredBytes all = gather_to_root(comm, local.data(), local.size() * sizeof(T), root);
  std::vector<T> out(all.bytes.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), all.bytes.data(), out.size() * sizeof(T));
  return out;
}

}  // namespace switchyard::comm
