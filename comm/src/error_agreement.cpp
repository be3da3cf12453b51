#include <cstdint>
#include <string>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::comm {

void agree_on_errors(Communicator& comm, const std::string& local_error, int local_code) {
  // NOTE: a max-reduction of (size - rank) finds the lowest failing rank in one
  // collective; a second one is only paid when something failed.
  const bool failed = !local_error.empty();
  double key = failed ? static_cast<double>(comm.size() - comm.rank()) : 0.0;
  comm.allreduce_max(&key, 1);
  if (key == 0.0) return;
  const int root = comm.size() - static_cast<int>(key);
  std::int64_t header[2] = {static_cast<std::int64_t>(local_error.size()), local_code};
  comm.broadcast(header, sizeof(header), root);
  std::string message(static_cast<std::size_t>(header[0]), '\0');
  if (comm.rank() == root) message = local_error;
  comm.broadcast(message.data(), message.size(), root);
  throw Error(comm.rank() == root ? static_cast<ErrorCode>(header[1]) : ErrorCode::kRemote, message);
}

}  // namespace switchyard::comm
