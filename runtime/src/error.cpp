#include "switchyard/runtime/error.hpp"

// NOTE: Boost.Stacktrace's backtrace backend (libboost_stacktrace_backtrace,
// linked with BOOST_STACKTRACE_LINK; libbacktrace inside it comes with GCC).
// On Debian 12 it is the one that names functions in a Release build without
// -rdynamic or debug information: the basic backend (dladdr) sees only
// exported symbols, and the addr2line backend of Boost 1.81 prints bare
// addresses for position-independent executables.
#include <boost/stacktrace.hpp>
#include <new>

namespace switchyard {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kIo: return "I/O error";
    case ErrorCode::kMpi: return "MPI error";
    case ErrorCode::kDnnl: return "oneDNN error";
    case ErrorCode::kOutOfMemory: return "out of memory";
    case ErrorCode::kInternal: return "internal error";
  }
  return "unknown error";
}

struct Error::StackFrames {
  boost::stacktrace::stacktrace frames;
};

namespace {

constexpr std::size_t kMaxFrames = 64;

}  // namespace

Error::Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {
  if (code != ErrorCode::kInternal) return;
  try {
    // NOTE: only the return addresses are taken here (cheap); names are
    // resolved in stack_trace(). Skip 1: this constructor's own frame.
    frames_ = std::make_shared<const StackFrames>(StackFrames{boost::stacktrace::stacktrace(1, kMaxFrames)});
  } catch (const std::bad_alloc&) {
    // NOTE: the error itself matters more than its trace: report it without one.
  }
}

std::string Error::stack_trace() const {
  if (!frames_ || frames_->frames.empty()) return "";
  return boost::stacktrace::to_string(frames_->frames);
}

}  // namespace switchyard
