#include "switchyard/comm/exchange.hpp"

#include <climits>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/comm/watchdog.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::comm {
namespace {

// One posted MPI_Ialltoallv. NOTE: MPI reads the count and displacement
// arrays of a non-blocking collective until it completes, so they live here,
// beside the request, not on the caller's stack.
class MpiEventState final : public EventState {
 public:
  std::vector<int> send_counts, send_displs, recv_counts, recv_displs;
  MPI_Request request = MPI_REQUEST_NULL;
  StallClock clock;  // from when the exchange was posted

  ~MpiEventState() override {
    // NOTE: an exchange dropped unwaited still writes into its receive
    // buffer; complete it here rather than leave MPI a dangling request.
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized || request == MPI_REQUEST_NULL) return;
    // NOTE: while an error unwinds the stack, a stalled exchange is given up
    // (the request left behind) rather than ending the job, so that the error
    // itself is what the user sees.
    try {
      if (std::uncaught_exceptions() > 0)
        wait_watched_or_give_up(&request, clock);
      else
        wait_watched(&request, "exchange (alltoallv)", std::chrono::microseconds(0), clock);
    } catch (...) {  // MPI's error, from a destructor: nothing left to do with it
    }
  }

  bool ready() override {
    std::lock_guard lock(mutex_);
    if (request == MPI_REQUEST_NULL) return true;
    int done = 0;
    check_mpi(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    if (!done) check_not_stalled(clock, "exchange (alltoallv)");
    return done != 0;
  }

  void wait() override {
    std::lock_guard lock(mutex_);
    if (request != MPI_REQUEST_NULL)
      wait_watched(&request, "exchange (alltoallv)", std::chrono::microseconds(0), clock);
  }

 private:
  std::mutex mutex_;
};

// Counts as ints and their packed (prefix-sum) displacements, in rows.
void counts_and_displs(const std::int64_t* rows, int n, const char* what, std::vector<int>* counts,
                       std::vector<int>* displs) {
  counts->resize(static_cast<std::size_t>(n));
  displs->resize(static_cast<std::size_t>(n));
  std::int64_t offset = 0;
  for (int r = 0; r < n; ++r) {
    // NOTE: messages are built only on failure, so an exchange allocates nothing.
    if (rows[r] < 0)
      check_arg(false, std::string("alltoallv: ") + what + "[" + std::to_string(r) + "] = " + std::to_string(rows[r]) +
                           ", must be >= 0");
    if (rows[r] > INT_MAX || offset > INT_MAX)
      check(false, ErrorCode::kInternal,
            std::string("alltoallv: ") + what + " beyond MPI's int range at rank " + std::to_string(r));
    (*counts)[r] = static_cast<int>(rows[r]);
    (*displs)[r] = static_cast<int>(offset);
    offset += rows[r];
  }
}

}  // namespace

MpiExchange::MpiExchange(MPI_Comm comm) {
  // NOTE: the duplicate inherits `comm`'s error handler, so data-plane
  // errors reach check_mpi exactly when control-plane ones do.
  check_mpi(MPI_Comm_dup(comm, &comm_));
  check_mpi(MPI_Comm_rank(comm_, &rank_));
  check_mpi(MPI_Comm_size(comm_, &size_));
}

MpiExchange::~MpiExchange() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  for (auto& [bytes, type] : row_types_) MPI_Type_free(&type);
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

MPI_Datatype MpiExchange::row_type(std::int64_t row_bytes) {
  auto it = row_types_.find(row_bytes);
  if (it != row_types_.end()) return it->second;
  check_arg(row_bytes >= 1 && row_bytes <= INT_MAX,
            "alltoallv: row_bytes = " + std::to_string(row_bytes) + ", must be in [1, INT_MAX]");
  MPI_Datatype type;
  check_mpi(MPI_Type_contiguous(static_cast<int>(row_bytes), MPI_BYTE, &type));
  check_mpi(MPI_Type_commit(&type));
  return row_types_.emplace(row_bytes, type).first->second;
}

Event MpiExchange::alltoallv(const void* send, const std::int64_t* send_rows, void* recv, const std::int64_t* recv_rows,
                             std::int64_t row_bytes, const Event& previous, Stream& stream) {
  check_arg(stream.device().kind == DeviceKind::kCpu, "MpiExchange::alltoallv: needs a CPU stream");
  MPI_Datatype row = row_type(row_bytes);
  auto state = std::make_shared<MpiEventState>();
  counts_and_displs(send_rows, size_, "send_rows", &state->send_counts, &state->send_displs);
  counts_and_displs(recv_rows, size_, "recv_rows", &state->recv_counts, &state->recv_displs);
  // NOTE: the collective is posted here, in call order, on every rank: a
  // start deferred until some later ready() could post two exchanges in a
  // different order on different ranks, and they would match wrongly.
  stream.wait(previous);
  state->clock = StallClock();
  check_mpi(MPI_Ialltoallv(send, state->send_counts.data(), state->send_displs.data(), row, recv,
                           state->recv_counts.data(), state->recv_displs.data(), row, comm_, &state->request));
  return Event(std::move(state));
}

}  // namespace switchyard::comm
