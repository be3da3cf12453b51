#include "switchyard/runtime/phase_timer.hpp"

namespace switchyard {

void PhaseTimer::mark(const std::string& phase) {
  auto now = Clock::now();
  double dt = std::chrono::duration<double>(now - last_).count();
  last_ = now;
  add(phase, dt);
}

void PhaseTimer::add(const std::string& phase, double dt) {
  for (auto& e : entries_) {
    if (e.phase == phase) {
      e.seconds += dt;
      return;
    }
  }
  entries_.push_back({phase, dt});
}

}  // namespace switchyard
