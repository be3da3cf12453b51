#pragma once
// How every subcommand runs under MPI: work is cut into steps, and after each
// step all ranks agree whether any of them failed, so an error seen by one
// rank ends every rank with a non-zero exit instead of a hang.
#include <functional>
#include <string>

#include "switchyard/comm/communicator.hpp"

namespace switchyard::launch {

/// Thrown after an agreed failure; main() turns it into the exit code.
struct AgreedExit {
  int code = 1;
};

/// Runs `fn` on every rank, then agrees on errors (collective). On failure
/// rank 0 prints "switchyard: error: <message of the lowest failing rank>" to
/// stderr and every rank throws AgreedExit.
void collective_step(comm::Communicator& comm, const std::function<void()>& fn);

/// Runs `fn`; an Error(kInvalidArgument) it throws comes back as the same
/// error with "<flag>: " in front, so the user sees which flag the library's
/// argument came from (library messages name arguments, never flags).
void with_flag(const std::string& flag, const std::function<void()>& fn);

/// Prints the one-line error format used everywhere.
void print_error(const std::string& message);

/// Error(kInvalidArgument) "<flag> <path>: directory <dir> does not exist"
/// unless `path` is empty or its directory exists: outputs are checked
/// before any work starts.
void check_output_dir(const std::string& flag, const std::string& path);

}  // namespace switchyard::launch
