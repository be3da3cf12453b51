#pragma once
// Levelled logging to stderr, switched on by SWITCHYARD_DEBUG (NONE, WARN,
// INFO, TRACE) and SWITCHYARD_DEBUG_SUBSYS (e.g. "COMM,GRAPH" or "^TRAIN"),
// as NCCL_DEBUG and NCCL_DEBUG_SUBSYS do. Each line reads
//
//   host:pid [rank] switchyard LEVEL SUBSYS message
//
// Log through the macros: they test the level and the subsystem before the
// arguments are evaluated, so a disabled call costs one load and one branch
// and formats nothing.
//
//   SY_INFO(kComm, "exchange of %zu rows", rows);
//
// Program output (a command's summary, its tables) is not a log line: print
// it as before.
#include <atomic>
#include <cstdint>

namespace switchyard {

/// SWITCHYARD_DEBUG: a line is written when its level is at most this one.
enum class LogLevel : int { kNone = 0, kWarn = 1, kInfo = 2, kTrace = 3 };

/// SWITCHYARD_DEBUG_SUBSYS names, in the order of the registry's choices.
enum class LogSubsys : int { kInit = 0, kComm, kGraph, kExperts, kFormats, kTrain, kCount };

/// "NONE", "WARN", "INFO" or "TRACE".
const char* log_level_name(LogLevel level);

/// "INIT", "COMM", "GRAPH", "EXPERTS", "FORMATS" or "TRAIN".
const char* log_subsys_name(LogSubsys subsys);

/// Sets the rank printed in every line; -1 (the start) prints "[?]". Called by
/// whoever knows the rank (the MPI communicator). Thread-safe.
void set_log_rank(int rank);

/// The level set by SWITCHYARD_DEBUG. Throws like load_settings. Thread-safe.
LogLevel log_level();

/// The subsystems set by SWITCHYARD_DEBUG_SUBSYS: bit i stands for
/// LogSubsys(i). Throws like load_settings. Thread-safe.
std::uint32_t log_subsys_mask();

namespace detail {

// NOTE: one word holds every (level, subsystem) switch, so the check on the
// hot path is one load and one AND: bit 16 * (level - 1) + subsystem. It
// starts with every bit set, kLogUnread included; the first check that finds
// its bit set reads the settings (log_enabled_slow).
inline constexpr std::uint64_t kLogUnread = std::uint64_t{1} << 63;
extern std::atomic<std::uint64_t> g_log_bits;

constexpr std::uint64_t log_bit(LogLevel level, LogSubsys subsys) {
  return level == LogLevel::kNone ? 0
                                  : std::uint64_t{1} << (16 * (static_cast<int>(level) - 1) + static_cast<int>(subsys));
}

bool log_enabled_slow(LogLevel level, LogSubsys subsys);

// Forgets the switches read from the settings (reset_settings_for_testing).
void reset_log_state();

}  // namespace detail

/// Whether a line of `level` about `subsys` is written. The first call reads
/// the settings and throws like load_settings if SWITCHYARD_DEBUG or
/// SWITCHYARD_DEBUG_SUBSYS is bad. Thread-safe.
inline bool log_enabled(LogLevel level, LogSubsys subsys) {
  const std::uint64_t bits = detail::g_log_bits.load(std::memory_order_relaxed);
  if ((bits & detail::log_bit(level, subsys)) == 0) return false;
  return (bits & detail::kLogUnread) == 0 || detail::log_enabled_slow(level, subsys);
}

/// Formats `format` (printf) behind the line prefix and writes the line to
/// stderr in one write(2), so lines of threads and ranks do not interleave.
/// Does not check the level: call it through SY_WARN, SY_INFO or SY_TRACE.
/// Thread-safe.
void log_write(LogLevel level, LogSubsys subsys, const char* format, ...) __attribute__((format(printf, 3, 4)));

}  // namespace switchyard

/// Logs a printf-style line at `level` for `subsys` (LogLevel and LogSubsys
/// values) if both are switched on; the arguments are evaluated only then.
#define SY_LOG(level, subsys, ...)                             \
  do {                                                         \
    if (::switchyard::log_enabled(level, subsys)) [[unlikely]] \
      ::switchyard::log_write(level, subsys, __VA_ARGS__);     \
  } while (0)

/// SY_WARN(kComm, "format", args...): something is off but the run goes on.
#define SY_WARN(subsys, ...) SY_LOG(::switchyard::LogLevel::kWarn, ::switchyard::LogSubsys::subsys, __VA_ARGS__)
/// SY_INFO(kInit, "format", args...): once-per-run facts (sizes, choices made).
#define SY_INFO(subsys, ...) SY_LOG(::switchyard::LogLevel::kInfo, ::switchyard::LogSubsys::subsys, __VA_ARGS__)
/// SY_TRACE(kComm, "format", args...): per-step or per-call detail.
#define SY_TRACE(subsys, ...) SY_LOG(::switchyard::LogLevel::kTrace, ::switchyard::LogSubsys::subsys, __VA_ARGS__)
