#pragma once
// The watchdog: no rank waits forever in MPI. Every collective and exchange
// is posted non-blocking and tested until it completes; one that does not
// complete within the operation timeout ends the job, after asking the other
// ranks which of them are still alive, with one line naming the operation,
// what the program was doing and the ranks it was waiting on.
#include <mpi.h>

#include <chrono>
#include <string>

namespace switchyard::comm {

using WatchClock = std::chrono::steady_clock;

/// Seconds an operation may take before the job is ended. Defaults to
/// SWITCHYARD_TIMEOUT_S; --timeout sets it. Process-wide.
void set_operation_timeout(double seconds);
double operation_timeout();

/// What the program is doing now ("train step 12"), named in a timeout's
/// message. Thread-safe; call it at step granularity, not per operation.
void set_activity(const std::string& text);

/// Collective over `world`, once, before any watched wait (MpiCommunicator's
/// constructor calls it): a private duplicate on which timed-out ranks ask
/// each other whether they are alive.
void init_watchdog(MPI_Comm world);

/// Completes `request`: spins briefly, then tests with sleeps that grow to
/// `max_sleep` (zero: never sleep). Ends the job if it is not complete
/// `operation_timeout()` seconds after `started`. Throws like check_mpi.
void wait_watched(MPI_Request* request, const char* operation, std::chrono::microseconds max_sleep,
                  WatchClock::time_point started = WatchClock::now());

/// For code that tests a request itself: ends the job if the operation
/// posted at `started` is past the timeout.
void check_not_stalled(WatchClock::time_point started, const char* operation);

/// Ends the job for an operation stalled since `started`: asks every rank
/// whether it is alive (the ranks that time out in the same operation
/// answer), prints one line naming `operation`, the activity and the ranks
/// that did not answer, and aborts the job. Never returns.
[[noreturn]] void end_stalled_job(const char* operation, WatchClock::time_point started);

}  // namespace switchyard::comm
