#pragma once
// How every subcommand runs under MPI: work is cut into steps, and after each
// step all ranks agree whether any of them failed, so an error seen by one
// rank ends every rank with a non-zero exit instead of a hang.
#include <exception>
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
/// stderr and every rank throws AgreedExit. A std::bad_alloc from `fn` is
/// agreed as Error(kOutOfMemory) "out of memory". If rank 0's own `fn` threw
/// an Error(kInternal), rank 0 prints its stack trace below the message
/// (print_stack_trace); other ranks' traces are not shown.
void collective_step(comm::Communicator& comm, const std::function<void()>& fn);

/// Runs `fn`; an Error(kInvalidArgument) it throws comes back as the same
/// error with "<flag>: " in front, so the user sees which flag the library's
/// argument came from (library messages name arguments, never flags).
void with_flag(const std::string& flag, const std::function<void()>& fn);

/// Prints the one-line error format used everywhere.
void print_error(const std::string& message);

/// Prints "switchyard: internal error (a bug in Switchyard), stack trace:"
/// and `trace` (Error::stack_trace()) to stderr; nothing if `trace` is empty.
void print_stack_trace(const std::string& trace);

/// The top-level report of an exception that ended the program: the one
/// error line (std::bad_alloc as "out of memory"), and below it the stack
/// trace of an Error(kInternal).
void report_error(const std::exception& e);

/// Error(kInvalidArgument) "<flag> <path>: directory <dir> does not exist"
/// unless `path` is empty or its directory exists: outputs are checked
/// before any work starts.
void check_output_dir(const std::string& flag, const std::string& path);

}  // namespace switchyard::launch
