#include "cli_runner.hpp"

#include <cstdio>
#include <exception>

#include "switchyard/runtime/error.hpp"

namespace switchyard::launch {

void print_error(const std::string& message) {
  std::fprintf(stderr, "switchyard: error: %s\n", message.c_str());
  std::fflush(stderr);
}

void collective_step(comm::Communicator& comm, const std::function<void()>& fn) {
  std::string message;
  int code = static_cast<int>(ErrorCode::kInternal);
  try {
    fn();
  } catch (const Error& e) {
    message = e.what();
    code = static_cast<int>(e.code());
  } catch (const std::exception& e) {
    message = e.what();
  }
  try {
    comm::agree_on_errors(comm, message, code);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kRemote) print_error(e.what());
    throw AgreedExit{1};
  }
}

}  // namespace switchyard::launch
