#pragma once
// The watchdog: no rank waits forever in MPI. Every collective and exchange
// is posted non-blocking and tested until it completes; one that does not
// complete within the operation timeout ends the job, after asking the other
// ranks which of them still answer, with one line naming the operation, what
// the program was doing and the ranks that did not answer.
#include <mpi.h>

#include <chrono>
#include <string>

namespace switchyard::comm {

using WatchClock = std::chrono::steady_clock;

/// Seconds an operation may take before the job is ended. Defaults to
/// SWITCHYARD_TIMEOUT_S; --timeout sets it. Process-wide.
void set_operation_timeout(double seconds);
double operation_timeout();

/// What the program is doing now ("train step 12", "saving a checkpoint"),
/// named in a timeout's message. Thread-safe; call it per phase, not per
/// operation.
void set_activity(const std::string& text);

/// Collective over `comm`, once per process (the first MpiCommunicator's
/// constructor calls it): a private duplicate on which ranks ask each other
/// whether they answer, with a receive posted for such questions. Released
/// at MPI_Finalize.
void init_watchdog(MPI_Comm comm);

/// How long an operation has waited, not counting the moments this process
/// itself did not run (stopped, suspended, starved of its core): a job that
/// is suspended and resumed as a whole does not time out for it.
class StallClock {
 public:
  explicit StallClock(WatchClock::time_point started = WatchClock::now()) : started_(started), last_(started) {}
  /// Seconds waited, as of now; call it between tests of the request.
  double waited();

 private:
  WatchClock::time_point started_, last_;
};

/// Completes `request`: spins briefly, then tests with sleeps that grow to
/// `max_sleep` (zero: never sleep); answers other ranks' questions meanwhile.
/// Ends the job if it is not complete after `operation_timeout()` seconds of
/// `clock`. Throws like check_mpi.
void wait_watched(MPI_Request* request, const char* operation, std::chrono::microseconds max_sleep,
                  StallClock clock = StallClock());

/// As wait_watched, but returns false instead of ending the job when the
/// timeout passes (for a wait during error handling, which must not hide the
/// error being handled).
bool wait_watched_or_give_up(MPI_Request* request, StallClock clock);

/// For code that tests a request itself: answers other ranks' questions and
/// ends the job if the operation has waited past the timeout.
void check_not_stalled(StallClock& clock, const char* operation);

/// Ends the job for an operation that waited `waited_s` seconds: asks every
/// rank whether it answers (every rank inside a watched wait does), prints
/// one line naming `operation`, the activity and the ranks that did not
/// answer, and aborts the job. Never returns.
[[noreturn]] void end_stalled_job(const char* operation, double waited_s);

}  // namespace switchyard::comm
