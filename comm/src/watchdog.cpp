#include "switchyard/comm/watchdog.hpp"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/runtime/settings.hpp"

namespace switchyard::comm {
namespace {

constexpr int kAliveTag = 7001;
constexpr int kTimeoutExitCode = 124;  // as coreutils' timeout
// How long a timed-out rank listens for the others: ranks stalled in the same
// operation time out within moments of each other.
constexpr auto kListen = std::chrono::seconds(2);
// After its line, how long a rank waits before the abort, so that the other
// ranks' lines are printed too; then how long the abort may take.
constexpr auto kGrace = std::chrono::milliseconds(500);
constexpr auto kAbortLimit = std::chrono::seconds(2);

std::atomic<double> g_timeout{-1};  // < 0: not set, read the setting
MPI_Comm g_watch = MPI_COMM_NULL;
std::mutex g_activity_mutex;
std::string g_activity;  // guarded by g_activity_mutex
double g_paused_s = 0;   // guarded by g_activity_mutex: time this process did not run while it waited
constexpr auto kSelfPause = std::chrono::milliseconds(500);

std::string activity() {
  std::lock_guard lock(g_activity_mutex);
  return g_activity;
}

double paused_seconds() {
  std::lock_guard lock(g_activity_mutex);
  return g_paused_s;
}

// World ranks that sent nothing on the watch communicator within kListen.
// Every rank that timed out sends to every other one, so a rank that is
// stopped, cut off or dead is the one that stays silent.
std::vector<int> silent_ranks() {
  int rank = 0, size = 1;
  MPI_Comm_rank(g_watch, &rank);
  MPI_Comm_size(g_watch, &size);
  static int token = 0;
  std::vector<int> heard(static_cast<std::size_t>(size), 0);
  std::vector<MPI_Request> recvs(static_cast<std::size_t>(size), MPI_REQUEST_NULL);
  std::vector<MPI_Request> sends(static_cast<std::size_t>(size), MPI_REQUEST_NULL);
  for (int peer = 0; peer < size; ++peer) {
    if (peer == rank) continue;
    MPI_Irecv(&heard[peer], 1, MPI_INT, peer, kAliveTag, g_watch, &recvs[peer]);
    MPI_Isend(&token, 1, MPI_INT, peer, kAliveTag, g_watch, &sends[peer]);
  }
  std::vector<int> silent;
  const auto until = WatchClock::now() + kListen;
  for (;;) {
    silent.clear();
    for (int peer = 0; peer < size; ++peer) {
      int done = 1;
      if (recvs[peer] != MPI_REQUEST_NULL) MPI_Test(&recvs[peer], &done, MPI_STATUS_IGNORE);
      if (!done) silent.push_back(peer);
    }
    if (silent.empty() || WatchClock::now() > until) return silent;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string out;
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    if (i) out += i + 1 == ranks.size() ? " and " : ", ";
    out += std::to_string(ranks[i]);
  }
  return out;
}

}  // namespace

void set_operation_timeout(double seconds) { g_timeout = seconds; }

double operation_timeout() {
  double t = g_timeout;
  if (t < 0) {
    t = setting_double("SWITCHYARD_TIMEOUT_S");
    g_timeout = t;
  }
  return t;
}

void set_activity(const std::string& text) {
  std::lock_guard lock(g_activity_mutex);
  g_activity = text;
}

void init_watchdog(MPI_Comm world) {
  if (g_watch == MPI_COMM_NULL) check_mpi(MPI_Comm_dup(world, &g_watch));
}

void check_not_stalled(WatchClock::time_point started, const char* operation) {
  const auto limit = std::chrono::duration<double>(operation_timeout());
  if (WatchClock::now() - started > limit) end_stalled_job(operation, started);
}

void wait_watched(MPI_Request* request, const char* operation, std::chrono::microseconds max_sleep,
                  WatchClock::time_point started) {
  // NOTE: spin briefly (small messages finish in microseconds), then test with
  // sleeps that grow to `max_sleep`: a blocking MPI wait busy-polls its core,
  // which on a rank with one core starves the compute an exchange should
  // overlap. Progress (shared memory copies, TCP) happens inside MPI_Test.
  constexpr auto kSpin = std::chrono::microseconds(100);
  const auto limit = std::chrono::duration<double>(operation_timeout());
  auto sleep = std::chrono::microseconds(std::min<std::int64_t>(10, max_sleep.count()));
  auto last = WatchClock::now();
  for (;;) {
    int done = 0;
    check_mpi(MPI_Test(request, &done, MPI_STATUS_IGNORE));
    if (done) return;
    const auto now = WatchClock::now();
    // A gap between two tests far beyond the sleep: this process itself did
    // not run (stopped, or starved of its core); then the stall may be its own.
    if (now - last > kSelfPause) {
      std::lock_guard lock(g_activity_mutex);
      g_paused_s += std::chrono::duration<double>(now - last).count();
    }
    last = now;
    const auto waited = now - started;
    if (waited > limit) end_stalled_job(operation, started);
    if (max_sleep.count() > 0 && waited > kSpin) {
      std::this_thread::sleep_for(sleep);
      sleep = std::min(max_sleep, sleep * 2);
    }
  }
}

void end_stalled_job(const char* operation, WatchClock::time_point started) {
  // NOTE: the abort must happen even if MPI cannot deliver it (a node cut
  // off): a detached thread ends this process if MPI_Abort has not.
  std::thread([] {
    std::this_thread::sleep_for(kListen + kGrace + kAbortLimit);
    std::_Exit(kTimeoutExitCode);
  }).detach();
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  const double waited = std::chrono::duration<double>(WatchClock::now() - started).count();
  std::vector<int> silent;
  if (g_watch != MPI_COMM_NULL) silent = silent_ranks();
  const std::string doing = activity();
  std::string peers = silent.empty() ? "every rank answered (they wait in different operations)"
                                     : (silent.size() == 1 ? "waiting on rank " : "waiting on ranks ") +
                                           rank_list(silent) + " (no answer within 2 s)";
  // NOTE: a rank that was itself stopped finds every peer answered (they
  // timed out while it was stopped); its own pause is then the cause.
  if (const double paused = paused_seconds(); paused > 0.5 * operation_timeout())
    peers = "this rank itself did not run for " + std::to_string(static_cast<int>(paused + 0.5)) +
            " s of the wait (stopped, or starved of its core)";
  std::fprintf(stderr, "switchyard: error: rank %d: %s made no progress for %.1f s%s%s: %s; ending the job\n",
               world_rank, operation, waited, doing.empty() ? "" : " in ", doing.c_str(), peers.c_str());
  std::fflush(stderr);
  std::this_thread::sleep_for(kGrace);
  MPI_Abort(MPI_COMM_WORLD, kTimeoutExitCode);
  std::_Exit(kTimeoutExitCode);
}

}  // namespace switchyard::comm
