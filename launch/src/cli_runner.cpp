#include "cli_runner.hpp"

#include <cstdio>
#include <exception>
#include <filesystem>

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

void with_flag(const std::string& flag, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) throw;
    throw Error(e.code(), flag + ": " + e.what());
  }
}

void check_output_dir(const std::string& flag, const std::string& path) {
  if (path.empty()) return;
  const std::filesystem::path dir = std::filesystem::absolute(path).parent_path();
  check_arg(std::filesystem::is_directory(dir), flag + " " + path + ": directory " + dir.string() + " does not exist");
}

}  // namespace switchyard::launch
