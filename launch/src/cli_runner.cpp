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
  try {
    comm::run_agreed(comm, fn);
  } catch (const Error& e) {
    // Every rank holds the same (lowest failing rank's) message; one prints it.
    if (comm.rank() == 0) print_error(e.what());
    throw AgreedExit{1};
  }
}

}  // namespace switchyard::launch
