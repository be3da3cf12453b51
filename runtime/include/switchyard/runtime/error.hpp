#pragma once
// The one exception type of Switchyard and the helpers that raise it.
#include <stdexcept>
#include <string>

namespace switchyard {

enum class ErrorCode {
  kInvalidArgument,  // bad user input: files, flags, shapes, config fields
  kIo,               // the operating system refused a read, write or map
  kMpi,              // an MPI call failed
  kDnnl,             // a oneDNN call failed
  kInternal,         // a broken invariant inside Switchyard
};

/// Name of an error code, e.g. "invalid argument".
const char* error_code_name(ErrorCode code);

/// Every failure Switchyard reports. `what()` is one line meant for the user.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

/// Throws `Error(code, message)` unless `ok`.
inline void check(bool ok, ErrorCode code, const std::string& message) {
  if (!ok) throw Error(code, message);
}

/// Shorthand for the most common case: invalid user input.
inline void check_arg(bool ok, const std::string& message) { check(ok, ErrorCode::kInvalidArgument, message); }

}  // namespace switchyard
