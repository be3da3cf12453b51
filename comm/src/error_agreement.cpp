#include <cstdint>
#include <new>
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
  throw Error(static_cast<ErrorCode>(header[1]), message);
}

void run_agreed(Communicator& comm, const std::function<void()>& fn) {
  std::string message;
  int code = static_cast<int>(ErrorCode::kInternal);
  try {
    fn();
  } catch (const Error& e) {
    message = e.what();
    code = static_cast<int>(e.code());
  } catch (const std::bad_alloc&) {
    message = error_code_name(ErrorCode::kOutOfMemory);
    code = static_cast<int>(ErrorCode::kOutOfMemory);
  } catch (const std::exception& e) {
    message = e.what();
  }
  agree_on_errors(comm, message, code);
}

}  // namespace switchyard::comm
