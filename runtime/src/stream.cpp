#include "switchyard/runtime/stream.hpp"

#include <chrono>
#include <string>

#include "switchyard/runtime/error.hpp"

namespace switchyard {
namespace {

// A CPU event: the shared future of the promise the working thread fulfils.
// NOTE: std::shared_future is safe to query from many threads when each
// holds its own copy, so ready() and wait() copy it under no lock.
class CpuEventState final : public EventState {
 public:
  explicit CpuEventState(std::shared_future<void> done) : done_(std::move(done)) {}

  bool ready() override {
    std::shared_future<void> done = done_;
    if (done.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return false;
    done.get();  // rethrows the stored error
    return true;
  }

  void wait() override {
    std::shared_future<void> done = done_;
    done.get();
  }

 private:
  const std::shared_future<void> done_;
};

}  // namespace

EventSource::EventSource() : event_(std::make_shared<CpuEventState>(promise_.get_future().share())) {}

void EventSource::complete() {
  try {
    promise_.set_value();
  } catch (const std::future_error&) {
    throw Error(ErrorCode::kInternal, "EventSource completed twice");
  }
}

void EventSource::fail(std::exception_ptr error) {
  try {
    promise_.set_exception(std::move(error));
  } catch (const std::future_error&) {
    throw Error(ErrorCode::kInternal, "EventSource completed twice");
  }
}

Stream::Stream(Device device) : device_(device) {
  check_arg(device_.index >= 0, "stream on device index " + std::to_string(device_.index) + ": must be >= 0");
  check_arg(device_.kind == DeviceKind::kCpu, std::string("stream on device ") + device_name(device_.kind) + ":" +
                                                  std::to_string(device_.index) +
                                                  ": this build has no backend for it (cpu only)");
}

// NOTE: on the CPU, work runs inline on the calling thread, so everything
// submitted before record() has already finished.
Event Stream::record() { return Event(); }

void Stream::wait(const Event& event) { event.wait(); }

void Stream::synchronize() {}

}  // namespace switchyard
