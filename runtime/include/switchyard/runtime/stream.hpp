#pragma once
// The device seam: where work runs (Device), an ordered queue of work on it
// (Stream) and a point in that work others can wait on (Event). The CPU is
// the first implementation; a CUDA backend maps Stream to cudaStream_t and
// Event to cudaEvent_t (docs/device-seam.md).
#include <exception>
#include <future>
#include <memory>

#include "switchyard/runtime/device.hpp"

namespace switchyard {

/// A device: its kind and its index among devices of that kind.
struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;

  friend bool operator==(const Device&, const Device&) = default;
};

/// What an Event waits on. Backends implement it: a CPU completion flag
/// here, MPI requests in comm::MpiExchange, a cudaEvent_t later.
class EventState {
 public:
  virtual ~EventState() = default;
  /// True once the work is complete. Never blocks. Throws the work's error.
  virtual bool ready() = 0;
  /// Blocks until the work is complete. Throws the work's error.
  virtual void wait() = 0;
};

/// A point in asynchronous work: record → query (ready) → wait. Copies share
/// one state. A default-constructed Event is already complete. Thread-safe
/// for the CPU states defined here; other states say what they allow.
class Event {
 public:
  Event() = default;
  /// An event over a backend's state (nullptr: already complete).
  explicit Event(std::shared_ptr<EventState> state) : state_(std::move(state)) {}

  /// True once the work before the event is complete. Non-blocking. Throws
  /// the Error the work failed with, if any.
  bool ready() const { return !state_ || state_->ready(); }
  /// Blocks until the work before the event is complete. Throws the Error
  /// the work failed with, if any (the error is stored where it happened
  /// and rethrown here, the join point).
  void wait() const {
    if (state_) state_->wait();
  }

 private:
  std::shared_ptr<EventState> state_;
};

/// The producer side of a CPU event: the thread that runs the work calls
/// complete() (or fail()) once; every copy of event() then becomes ready.
/// complete() and fail() may be called from any thread; calling either a
/// second time throws Error(kInternal).
class EventSource {
 public:
  EventSource();
  /// The event this source completes. Thread-safe.
  Event event() const { return event_; }
  /// Marks the work done; waiters wake.
  void complete();
  /// Marks the work failed; waiters wake and rethrow `error`.
  void fail(std::exception_ptr error);

 private:
  std::promise<void> promise_;
  Event event_;
};

/// An ordered queue of work on one device. Work submitted to a stream runs
/// in submission order; record() marks a point in it; wait() orders later
/// work after an event from any stream or backend.
///
/// On the CPU the stream is the calling thread: work runs inline, in call
/// order, so record() returns an already-complete event and wait() blocks
/// the caller until the event is complete. Not thread-safe: one thread
/// submits to a stream at a time (as with a cudaStream_t, whose order is the
/// order of submission).
class Stream {
 public:
  /// A stream on `device`. Throws Error(kInvalidArgument) for a device this
  /// build has no backend for (CUDA, for now) or a negative index.
  explicit Stream(Device device = Device{});

  const Device& device() const { return device_; }

  /// An event completed when all work submitted so far is complete.
  /// Non-blocking. On the CPU it is already complete.
  Event record();

  /// Makes work submitted after this call wait for `event`. On the CPU this
  /// blocks the caller until `event` is complete and rethrows its error.
  void wait(const Event& event);

  /// Blocks until all work submitted so far is complete. On the CPU a no-op.
  void synchronize();

 private:
  Device device_;
};

}  // namespace switchyard
