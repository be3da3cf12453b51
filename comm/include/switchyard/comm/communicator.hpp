#pragma once
// The backend-neutral communicator: moves bytes between ranks, knows nothing
// of experts or tokens. MPI implements it today, NCCL later.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace switchyard::comm {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// Number of distinct nodes (shared-memory domains) the ranks run on; the
  /// same on every rank. Known from construction.
  virtual int num_nodes() const = 0;

  /// All-to-all of variable-size blocks of fixed-size rows. `send_counts[r]`
  /// rows starting at row `send_offsets[r]` of `send` go to rank r; rows from
  /// rank r land at row `recv_offsets[r]` of `recv`. Counts and offsets are
  /// in rows of `row_bytes` bytes. Collective and blocking.
  virtual void alltoallv(const void* send, const std::int64_t* send_counts, const std::int64_t* send_offsets,
                         void* recv, const std::int64_t* recv_counts, const std::int64_t* recv_offsets,
                         std::size_t row_bytes) = 0;

  /// All-to-all of `count` int64 values per rank. Collective and blocking.
  virtual void alltoall(const std::int64_t* send, std::int64_t* recv, std::size_t count) = 0;

  /// In-place element-wise sum over all ranks. Collective and blocking.
  virtual void allreduce_sum(std::int64_t* data, std::size_t count) = 0;
  virtual void allreduce_sum(double* data, std::size_t count) = 0;
  virtual void allreduce_sum(float* data, std::size_t count) = 0;
  /// In-place element-wise maximum over all ranks. Collective and blocking.
  virtual void allreduce_max(double* data, std::size_t count) = 0;

  /// Gathers `send_bytes` bytes from every rank into `recv` on `root`, rank r's
  /// bytes at `recv_offsets[r]` with length `recv_bytes[r]` (significant at
  /// root only). Collective and blocking.
  virtual void gatherv(const void* send, std::size_t send_bytes, void* recv, const std::int64_t* recv_bytes,
                       const std::int64_t* recv_offsets, int root) = 0;

  /// Waits until every rank has called it. Collective and blocking.
  virtual void barrier() = 0;

  /// Broadcasts `bytes` bytes from `root`. Collective and blocking.
  virtual void broadcast(void* data, std::size_t bytes, int root) = 0;

  /// Ends every process of the job at once. For failures that happen where
  /// ranks cannot agree (in the middle of a collective); never returns.
  [[noreturn]] virtual void abort(int exit_code) = 0;
};

/// Collective error agreement. Every rank passes the message of the error it
/// hit since the last agreement (empty if none). If any rank failed, every
/// rank throws Error with the code and message of the lowest failing rank;
/// otherwise returns. This is what keeps an error that one rank sees from
/// hanging the others.
void agree_on_errors(Communicator& comm, const std::string& local_error, int local_code);

/// Runs `fn` on every rank, then agrees on what it threw (agree_on_errors):
/// either every rank returns or every rank throws the same Error. Collective.
void run_agreed(Communicator& comm, const std::function<void()>& fn);

}  // namespace switchyard::comm
