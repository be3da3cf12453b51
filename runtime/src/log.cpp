#include "switchyard/runtime/log.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <string>
#include <string_view>

#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/settings.hpp"

namespace switchyard {
namespace {

constexpr std::array<const char*, static_cast<int>(LogSubsys::kCount)> kSubsysNames = {"INIT",    "COMM",    "GRAPH",
                                                                                       "EXPERTS", "FORMATS", "TRAIN"};
constexpr std::uint32_t kAllSubsys = (std::uint32_t{1} << static_cast<int>(LogSubsys::kCount)) - 1;
static_assert(static_cast<int>(LogSubsys::kCount) <= 16, "one 16-bit lane per level in g_log_bits");

std::atomic<int> g_rank{-1};

// The host name up to its first dot, as NCCL prints it.
const std::string& short_host_name() {
  static const std::string name = [] {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) != 0) return std::string("?");
    std::string host(buf);
    return host.substr(0, host.find('.'));
  }();
  return name;
}

std::uint64_t read_log_bits() {
  const auto level = static_cast<int>(log_level());
  const std::uint64_t mask = log_subsys_mask();
  std::uint64_t bits = 0;
  for (int l = 1; l <= level; ++l) bits |= mask << (16 * (l - 1));
  return bits;
}

void write_all(const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(STDERR_FILENO, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // NOTE: nowhere left to report a failing stderr
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

}  // namespace

namespace detail {

std::atomic<std::uint64_t> g_log_bits{~std::uint64_t{0}};

bool log_enabled_slow(LogLevel level, LogSubsys subsys) {
  // NOTE: two threads may both get here first; both compute the same word.
  std::uint64_t bits = g_log_bits.load(std::memory_order_acquire);
  if (bits & kLogUnread) {
    bits = read_log_bits();
    g_log_bits.store(bits, std::memory_order_release);
  }
  return (bits & log_bit(level, subsys)) != 0;
}

void reset_log_state() { g_log_bits.store(~std::uint64_t{0}, std::memory_order_release); }

}  // namespace detail

const char* log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kNone: return "NONE";
    case LogLevel::kWarn: return "WARN";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kTrace: return "TRACE";
  }
  return "?";
}

const char* log_subsys_name(LogSubsys subsys) {
  const auto i = static_cast<std::size_t>(subsys);
  return i < kSubsysNames.size() ? kSubsysNames[i] : "?";
}

void set_log_rank(int rank) { g_rank.store(rank, std::memory_order_relaxed); }

LogLevel log_level() {
  const std::string text = setting_text("SWITCHYARD_DEBUG");
  for (auto level : {LogLevel::kNone, LogLevel::kWarn, LogLevel::kInfo, LogLevel::kTrace})
    if (text == log_level_name(level)) return level;
  throw Error(ErrorCode::kInternal, "SWITCHYARD_DEBUG=" + text + " passed the registry but is no log level");
}

std::uint32_t log_subsys_mask() {
  // The registry has checked the names and upper-cased them.
  const std::string text = setting_text("SWITCHYARD_DEBUG_SUBSYS");
  std::string_view items = text;
  const bool all_except = items.starts_with('^');
  if (all_except) items.remove_prefix(1);
  std::uint32_t mask = 0;
  while (!items.empty()) {
    const auto comma = items.find(',');
    const std::string_view item = items.substr(0, comma);
    items.remove_prefix(comma == std::string_view::npos ? items.size() : comma + 1);
    if (item == "ALL") {
      mask = kAllSubsys;
      continue;
    }
    bool known = false;
    for (std::size_t i = 0; i < kSubsysNames.size(); ++i) {
      if (item != kSubsysNames[i]) continue;
      mask |= std::uint32_t{1} << i;
      known = true;
    }
    check(known, ErrorCode::kInternal,
          "SWITCHYARD_DEBUG_SUBSYS name " + std::string(item) + " passed the registry but is no subsystem");
  }
  return all_except ? ~mask & kAllSubsys : mask;
}

void log_write(LogLevel level, LogSubsys subsys, const char* format, ...) {
  const int rank = g_rank.load(std::memory_order_relaxed);
  char rank_text[16] = "?";
  if (rank >= 0) std::snprintf(rank_text, sizeof rank_text, "%d", rank);
  char prefix[384];
  const int prefix_len =
      std::snprintf(prefix, sizeof prefix, "%s:%d [%s] switchyard %s %s ", short_host_name().c_str(),
                    static_cast<int>(getpid()), rank_text, log_level_name(level), log_subsys_name(subsys));
  // NOTE: prefix, message and newline go out in one write(2): a line of one
  // thread or rank is never split by another's.
  std::string line(prefix, static_cast<std::size_t>(std::max(0, std::min<int>(prefix_len, sizeof prefix - 1))));
  va_list args;
  va_start(args, format);
  va_list again;
  va_copy(again, args);
  char small[512];
  const int len = std::vsnprintf(small, sizeof small, format, args);
  va_end(args);
  if (len >= static_cast<int>(sizeof small)) {
    std::string big(static_cast<std::size_t>(len) + 1, '\0');
    std::vsnprintf(big.data(), big.size(), format, again);
    line.append(big.data(), static_cast<std::size_t>(len));
  } else if (len > 0) {
    line.append(small, static_cast<std::size_t>(len));
  }
  va_end(again);
  if (line.empty() || line.back() != '\n') line += '\n';
  write_all(line.data(), line.size());
}

}  // namespace switchyard
