#include "switchyard/comm/gather.hpp"

namespace switchyard::comm {

GatheredBytes gather_to_root(Communicator& comm, const void* local, std::size_t local_bytes, int root) {
  const auto R = static_cast<std::size_t>(comm.size());
  GatheredBytes out;
  out.sizes.assign(R, 0);
  out.offsets.assign(R, 0);
  out.sizes[static_cast<std::size_t>(comm.rank())] = static_cast<std::int64_t>(local_bytes);
  comm.allreduce_sum(out.sizes.data(), R);  // NOTE: every rank learns every size; each adds only its own
  for (std::size_t r = 1; r < R; ++r) out.offsets[r] = out.offsets[r - 1] + out.sizes[r - 1];
  if (comm.rank() == root) out.bytes.resize(static_cast<std::size_t>(out.offsets[R - 1] + out.sizes[R - 1]));
  comm.gatherv(local, local_bytes, out.bytes.data(), out.sizes.data(), out.offsets.data(), root);
  return out;
}

}  // namespace switchyard::comm
