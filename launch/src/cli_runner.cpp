#include "cli_runner.hpp"

#include <cstdio>
#include <exception>
#include <filesystem>
#include <new>
#include <string>

#include "switchyard/runtime/error.hpp"

namespace switchyard::launch {

void print_error(const std::string& message) {
  std::fprintf(stderr, "switchyard: error: %s\n", message.c_str());
  std::fflush(stderr);
}

void print_stack_trace(const std::string& trace) {
  if (trace.empty()) return;
  std::fprintf(stderr, "switchyard: internal error (a bug in Switchyard), stack trace:\n%s", trace.c_str());
  std::fflush(stderr);
}

void report_error(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e)) {
    print_error(error_code_name(ErrorCode::kOutOfMemory));
    return;
  }
  print_error(e.what());
  if (const auto* error = dynamic_cast<const Error*>(&e)) print_stack_trace(error->stack_trace());
}

void collective_step(comm::Communicator& comm, const std::function<void()>& fn) {
  std::string trace;  // of an internal error this rank threw
  try {
    comm::run_agreed(comm, [&] {
      try {
        fn();
      } catch (const Error& e) {
        // NOTE: the agreed error is rebuilt from its message and code, so the
        // trace of where it was thrown only exists here.
        if (e.code() == ErrorCode::kInternal) trace = e.stack_trace();
        throw;
      } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::kOutOfMemory, error_code_name(ErrorCode::kOutOfMemory));
      }
    });
  } catch (const Error& e) {
    // Every rank holds the same (lowest failing rank's) message; one prints it.
    if (comm.rank() == 0) {
      print_error(e.what());
      print_stack_trace(trace);
    }
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
