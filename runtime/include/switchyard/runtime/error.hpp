#pragma once
// The one exception type of Switchyard and the helpers that raise it.
#include <memory>
#include <stdexcept>
#include <string>

namespace switchyard {

enum class ErrorCode {
  kInvalidArgument,  // bad user input: files, flags, shapes, config fields
  kIo,               // the operating system refused a read, write or map
  kMpi,              // an MPI call failed
  kDnnl,             // a oneDNN call failed
  kOutOfMemory,      // an allocation failed (std::bad_alloc)
  kInternal,         // a broken invariant inside Switchyard
};

/// Name of an error code, e.g. "invalid argument".
const char* error_code_name(ErrorCode code);

/// Every failure Switchyard reports. `what()` is one line meant for the user.
///
/// An Error with code kInternal is a bug in Switchyard, so it also records
/// the call stack at its construction (stack_trace()) for the top-level
/// handler to print below the message; every other code records none.
/// Copying is cheap and never throws (the recorded stack is shared).
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message);
  ErrorCode code() const { return code_; }

  /// The call stack where this error was constructed, one frame a line
  /// (" 0# function in binary", innermost first, "at file:line" where the
  /// binary has debug information), or "" for a code other than kInternal.
  /// Names are resolved on this call, from the running binary's symbol
  /// table: call it when printing, not on a hot path. Thread-safe.
  std::string stack_trace() const;

 private:
  struct StackFrames;  // defined in error.cpp, so this header needs no Boost

  ErrorCode code_;
  std::shared_ptr<const StackFrames> frames_;  // null unless kInternal
};

/// Throws `Error(code, message)` unless `ok`.
inline void check(bool ok, ErrorCode code, const std::string& message) {
  if (!ok) throw Error(code, message);
}

/// Shorthand for the most common case: invalid user input.
inline void check_arg(bool ok, const std::string& message) { check(ok, ErrorCode::kInvalidArgument, message); }

/// The same for a literal message: no string is built unless the check
/// fails, so checks on a step's hot path allocate nothing.
inline void check(bool ok, ErrorCode code, const char* message) {
  if (!ok) throw Error(code, message);
}
inline void check_arg(bool ok, const char* message) { check(ok, ErrorCode::kInvalidArgument, message); }

}  // namespace switchyard
