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

constexpr int kQuestionTag = 7001;     // "do you answer?", from a rank that timed out
constexpr int kAnswerTag = 7002;       // "yes"
constexpr int kTimeoutExitCode = 124;  // as coreutils' timeout
// How long a timed-out rank listens for answers: every rank inside a watched
// wait answers within a millisecond or so.
constexpr auto kListen = std::chrono::seconds(2);
// After its line, how long a rank waits before the abort, so that the lines
// of other ranks that timed out too are printed; then how long the abort may
// take before the process ends itself.
constexpr auto kGrace = std::chrono::milliseconds(500);
constexpr auto kAbortLimit = std::chrono::seconds(2);
// A gap this long between two tests of a request: the process did not run.
constexpr auto kSelfPause = std::chrono::milliseconds(500);
// How often a waiting rank looks for questions.
constexpr auto kAnswerEvery = std::chrono::milliseconds(1);

std::atomic<double> g_timeout{-1};  // < 0: not set, read the setting
std::mutex g_activity_mutex;
std::string g_activity;  // guarded by g_activity_mutex

// The question channel, touched only by a thread inside MPI (one at a time
// under MPI_THREAD_SERIALIZED; the mutex makes a second one skip, not race).
std::mutex g_channel_mutex;
MPI_Comm g_watch = MPI_COMM_NULL;
MPI_Request g_question = MPI_REQUEST_NULL;
int g_question_in = 0;
const int g_token = 1;
std::vector<int> g_world_rank;  // [rank in g_watch] -> rank in MPI_COMM_WORLD
WatchClock::time_point g_last_answer;

std::string activity() {
  std::lock_guard lock(g_activity_mutex);
  return g_activity;
}

void post_question_receive() {
  MPI_Irecv(&g_question_in, 1, MPI_INT, MPI_ANY_SOURCE, kQuestionTag, g_watch, &g_question);
}

// Answers every question that arrived; caller holds g_channel_mutex.
void answer_questions_locked() {
  for (;;) {
    int arrived = 0;
    MPI_Status status;
    if (g_question == MPI_REQUEST_NULL || MPI_Test(&g_question, &arrived, &status) != MPI_SUCCESS || !arrived) return;
    MPI_Request answer;
    MPI_Isend(&g_token, 1, MPI_INT, status.MPI_SOURCE, kAnswerTag, g_watch, &answer);
    MPI_Request_free(&answer);
    post_question_receive();
  }
}

void answer_questions(WatchClock::time_point now) {
  std::unique_lock lock(g_channel_mutex, std::try_to_lock);
  if (!lock.owns_lock() || now - g_last_answer < kAnswerEvery) return;
  g_last_answer = now;
  answer_questions_locked();
}

// At MPI_Finalize (the attribute on MPI_COMM_SELF is deleted first thing):
// the posted receive is cancelled and the channel freed.
int release_channel(MPI_Comm, int, void*, void*) {
  std::lock_guard lock(g_channel_mutex);
  if (g_question != MPI_REQUEST_NULL) {
    MPI_Cancel(&g_question);
    MPI_Wait(&g_question, MPI_STATUS_IGNORE);
  }
  if (g_watch != MPI_COMM_NULL) MPI_Comm_free(&g_watch);
  return MPI_SUCCESS;
}

// Ranks (of MPI_COMM_WORLD) that did not answer within kListen. Every rank
// inside a watched wait answers; a rank stopped, dead, cut off, or busy
// outside MPI for that long does not.
std::vector<int> silent_ranks() {
  std::lock_guard lock(g_channel_mutex);
  int rank = 0, size = 1;
  MPI_Comm_rank(g_watch, &rank);
  MPI_Comm_size(g_watch, &size);
  std::vector<int> answers(static_cast<std::size_t>(size), 0);
  std::vector<MPI_Request> replies(static_cast<std::size_t>(size), MPI_REQUEST_NULL);
  for (int peer = 0; peer < size; ++peer) {
    if (peer == rank) continue;
    MPI_Irecv(&answers[peer], 1, MPI_INT, peer, kAnswerTag, g_watch, &replies[peer]);
    MPI_Request question;
    MPI_Isend(&g_token, 1, MPI_INT, peer, kQuestionTag, g_watch, &question);
    MPI_Request_free(&question);
  }
  std::vector<int> silent;
  const auto until = WatchClock::now() + kListen;
  for (;;) {
    answer_questions_locked();  // ranks that timed out too are asking as well
    silent.clear();
    for (int peer = 0; peer < size; ++peer) {
      int done = 1;
      if (replies[peer] != MPI_REQUEST_NULL) MPI_Test(&replies[peer], &done, MPI_STATUS_IGNORE);
      if (!done) silent.push_back(g_world_rank[static_cast<std::size_t>(peer)]);
    }
    if (silent.empty() || WatchClock::now() > until) return silent;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
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

// Tests `request` until it completes (true) or `clock` passes the timeout
// (false), spinning first and then sleeping up to `max_sleep` between tests.
bool wait_until_timeout(MPI_Request* request, std::chrono::microseconds max_sleep, StallClock& clock, double* waited) {
  // NOTE: a blocking MPI wait busy-polls its core, which on a rank with one
  // core starves the compute an exchange should overlap. Progress (shared
  // memory copies, TCP) happens inside MPI_Test.
  constexpr auto kSpin = std::chrono::microseconds(100);
  const double limit = operation_timeout();
  const auto start = WatchClock::now();
  auto sleep = std::chrono::microseconds(std::min<std::int64_t>(10, max_sleep.count()));
  for (;;) {
    int done = 0;
    check_mpi(MPI_Test(request, &done, MPI_STATUS_IGNORE));
    if (done) return true;
    *waited = clock.waited();
    if (*waited > limit) return false;
    const auto now = WatchClock::now();
    answer_questions(now);
    if (max_sleep.count() > 0 && now - start > kSpin) {
      std::this_thread::sleep_for(sleep);
      sleep = std::min(max_sleep, sleep * 2);
    }
  }
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

void init_watchdog(MPI_Comm comm) {
  std::lock_guard lock(g_channel_mutex);
  if (g_watch != MPI_COMM_NULL) return;
  check_mpi(MPI_Comm_dup(comm, &g_watch));
  int size = 1;
  check_mpi(MPI_Comm_size(g_watch, &size));
  MPI_Group watch_group, world_group;
  check_mpi(MPI_Comm_group(g_watch, &watch_group));
  check_mpi(MPI_Comm_group(MPI_COMM_WORLD, &world_group));
  std::vector<int> mine(static_cast<std::size_t>(size));
  for (int r = 0; r < size; ++r) mine[static_cast<std::size_t>(r)] = r;
  g_world_rank.assign(mine.size(), 0);
  check_mpi(MPI_Group_translate_ranks(watch_group, size, mine.data(), world_group, g_world_rank.data()));
  MPI_Group_free(&watch_group);
  MPI_Group_free(&world_group);
  post_question_receive();
  int key = MPI_KEYVAL_INVALID;
  check_mpi(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, release_channel, &key, nullptr));
  check_mpi(MPI_Comm_set_attr(MPI_COMM_SELF, key, nullptr));
  // The attribute keeps the key alive until MPI_Finalize deletes it; freeing it here releases it then.
  check_mpi(MPI_Comm_free_keyval(&key));
}

double StallClock::waited() {
  const auto now = WatchClock::now();
  // NOTE: a gap far beyond the sleeps between tests means this process did
  // not run; that time is not the operation's (a job suspended as a whole
  // must not time out when it resumes).
  if (now - last_ > kSelfPause) started_ += now - last_;
  last_ = now;
  return std::chrono::duration<double>(now - started_).count();
}

void wait_watched(MPI_Request* request, const char* operation, std::chrono::microseconds max_sleep, StallClock clock) {
  double waited = 0;
  if (!wait_until_timeout(request, max_sleep, clock, &waited)) end_stalled_job(operation, waited);
}

bool wait_watched_or_give_up(MPI_Request* request, StallClock clock) {
  double waited = 0;
  return wait_until_timeout(request, std::chrono::microseconds(1000), clock, &waited);
}

void check_not_stalled(StallClock& clock, const char* operation) {
  const double waited = clock.waited();
  answer_questions(WatchClock::now());
  if (waited > operation_timeout()) end_stalled_job(operation, waited);
}

void end_stalled_job(const char* operation, double waited_s) {
  // NOTE: the job must end even if MPI cannot deliver the abort (a node cut
  // off): a detached thread ends this process if MPI_Abort has not.
  std::thread([] {
    std::this_thread::sleep_for(kListen + kGrace + kAbortLimit);
    std::_Exit(kTimeoutExitCode);
  }).detach();
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  std::vector<int> silent;
  if (g_watch != MPI_COMM_NULL) silent = silent_ranks();
  const std::string doing = activity();
  const std::string peers = silent.empty()
                                ? "every rank answered (they wait in different operations)"
                                : (silent.size() == 1 ? "waiting on rank " : "waiting on ranks ") + rank_list(silent) +
                                      " (no answer within 2 s: stopped, dead, cut off, or busy outside MPI)";
  std::fprintf(stderr, "switchyard: error: rank %d: %s made no progress for %.1f s%s%s: %s; ending the job\n",
               world_rank, operation, waited_s, doing.empty() ? "" : " in ", doing.c_str(), peers.c_str());
  std::fflush(stderr);
  std::this_thread::sleep_for(kGrace);
  MPI_Abort(MPI_COMM_WORLD, kTimeoutExitCode);
  std::_Exit(kTimeoutExitCode);
}

}  // namespace switchyard::comm
