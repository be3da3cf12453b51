// switchyard::Error: an internal error (a bug in Switchyard) records the call
// stack it was raised on, user errors record none, and an allocation failure
// inside a task comes back as Error(kOutOfMemory) like any other task error.
#include <gtest/gtest.h>

#include <new>
#include <stdexcept>
#include <string>

#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/task_graph.hpp"

// NOTE: outside the anonymous namespace and never inlined, so the function has
// a frame and a symbol of its own for the trace to name.
[[gnu::noinline]] void switchyard_test_throw_internal_error() {
  switchyard::check(false, switchyard::ErrorCode::kInternal, "invariant broken");
}

[[gnu::noinline]] void switchyard_test_throw_invalid_argument() {
  switchyard::check_arg(false, "num_experts must be positive, got 0");
}

namespace {

using namespace switchyard;

Error caught(void (*fn)()) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no Error thrown";
  return Error(ErrorCode::kInvalidArgument, "");
}

TEST(Error, InternalErrorCarriesAStackTraceNamingTheThrowingFunction) {
  const Error e = caught(switchyard_test_throw_internal_error);
  EXPECT_EQ(e.code(), ErrorCode::kInternal);
  EXPECT_STREQ(e.what(), "invariant broken");  // the one-line message is unchanged
  const std::string trace = e.stack_trace();
  ASSERT_FALSE(trace.empty());
  EXPECT_NE(trace.find("switchyard_test_throw_internal_error"), std::string::npos) << trace;
  // The Error constructor itself is not part of the trace.
  EXPECT_EQ(trace.find("Error::Error"), std::string::npos) << trace;
}

TEST(Error, CopiesShareTheStackTrace) {
  const Error e = caught(switchyard_test_throw_internal_error);
  const Error copy = e;  // NOLINT(performance-unnecessary-copy-initialization)
  EXPECT_EQ(copy.stack_trace(), e.stack_trace());
}

TEST(Error, UserErrorsCarryNoStackTrace) {
  const Error e = caught(switchyard_test_throw_invalid_argument);
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(e.stack_trace(), "");
  for (ErrorCode code : {ErrorCode::kIo, ErrorCode::kMpi, ErrorCode::kDnnl, ErrorCode::kOutOfMemory})
    EXPECT_EQ(Error(code, "x").stack_trace(), "") << error_code_name(code);
}

TEST(Error, OutOfMemoryHasItsName) { EXPECT_STREQ(error_code_name(ErrorCode::kOutOfMemory), "out of memory"); }

// The task graph stores a task's exception and rethrows it at run(): an
// internal error keeps the trace of the worker thread that raised it, and a
// std::bad_alloc becomes Error(kOutOfMemory) naming the task, so callers agree
// on it across ranks like any other error instead of ending the process.
TEST(Error, TaskInternalErrorKeepsTheTraceOfTheTask) {
  Executor executor(2);
  TaskGraph g;
  g.emplace("broken", [] { switchyard_test_throw_internal_error(); });
  try {
    executor.run(g);
    FAIL() << "run did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInternal);
    EXPECT_NE(e.stack_trace().find("switchyard_test_throw_internal_error"), std::string::npos) << e.stack_trace();
  }
}

TEST(Error, TaskBadAllocIsRethrownAsOutOfMemory) {
  Executor executor(2);
  for (TaskKind kind : {TaskKind::kCompute, TaskKind::kComm}) {
    TaskGraph g;
    g.emplace(
        "alloc-buffers", [] { throw std::bad_alloc(); }, kind);
    for (bool in_sequence : {false, true}) {
      try {
        if (in_sequence) {
          executor.run_in_sequence(g);
        } else {
          executor.run(g);
        }
        FAIL() << "no Error thrown";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kOutOfMemory) << error_code_name(e.code()) << ": " << e.what();
        EXPECT_NE(std::string(e.what()).find("alloc-buffers"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("out of memory"), std::string::npos) << e.what();
        EXPECT_EQ(e.stack_trace(), "");
      }
    }
  }
  // The free run_in_sequence takes the same path.
  TaskGraph h;
  h.emplace("grow", [] { throw std::bad_alloc(); });
  try {
    run_in_sequence(h);
    FAIL() << "no Error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kOutOfMemory);
  }
}

}  // namespace
