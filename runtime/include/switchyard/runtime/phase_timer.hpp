#pragma once
// Wall-clock time per named phase of a step (route, plan, exchange, ...).
#include <chrono>
#include <string>
#include <vector>

namespace switchyard {

class PhaseTimer {
 public:
  /// Adds the time since the previous mark (or construction) to `phase`.
  /// Phases keep the order in which they were first marked.
  void mark(const std::string& phase);
  /// Adds `seconds` to `phase` without touching the clock.
  void add(const std::string& phase, double seconds);

  struct Entry {
    std::string phase;
    double seconds = 0;
  };
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  using Clock = std::chrono::steady_clock;
  Clock::time_point last_ = Clock::now();
  std::vector<Entry> entries_;
};

}  // namespace switchyard
