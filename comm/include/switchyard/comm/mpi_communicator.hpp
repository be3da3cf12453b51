#pragma once
// Communicator over an MPI communicator (not owned).
#include <mpi.h>

#include <chrono>
#include <map>
#include <source_location>
#include <thread>
#include <vector>

#include "switchyard/comm/communicator.hpp"

namespace switchyard::comm {

/// Throws Error(kMpi) with file:line, rank and MPI's own error text unless
/// `rc == MPI_SUCCESS`.
void check_mpi(int rc, std::source_location where = std::source_location::current());

/// Completes `request`, spinning briefly and then sleeping between tests (up
/// to `max_sleep`) so a waiting thread leaves its core to compute; under the
/// watchdog (watchdog.hpp). Throws like check_mpi.
void wait_politely(MPI_Request* request, std::chrono::microseconds max_sleep = std::chrono::microseconds(10));

class MpiCommunicator final : public Communicator {
 public:
  /// Wraps `comm`; MPI must be initialised and errors set to MPI_ERRORS_RETURN
  /// by the caller if it wants them as exceptions.
  explicit MpiCommunicator(MPI_Comm comm);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int num_nodes() const override { return num_nodes_; }
  void alltoallv(const void* send, const std::int64_t* send_counts, const std::int64_t* send_offsets, void* recv,
                 const std::int64_t* recv_counts, const std::int64_t* recv_offsets, std::size_t row_bytes) override;
  void alltoall(const std::int64_t* send, std::int64_t* recv, std::size_t count) override;
  void allreduce_sum(std::int64_t* data, std::size_t count) override;
  void allreduce_sum(double* data, std::size_t count) override;
  void allreduce_sum(float* data, std::size_t count) override;
  void allreduce_max(double* data, std::size_t count) override;
  void gatherv(const void* send, std::size_t send_bytes, void* recv, const std::int64_t* recv_bytes,
               const std::int64_t* recv_offsets, int root) override;
  void barrier() override;
  void broadcast(void* data, std::size_t bytes, int root) override;
  [[noreturn]] void abort(int exit_code) override;

  MPI_Comm handle() const { return comm_; }

 private:
  MPI_Datatype row_type(std::size_t row_bytes);
  void allreduce(void* data, std::size_t count, MPI_Datatype type, MPI_Op op);
  void wait(MPI_Request* request, const char* operation);  // under the watchdog

  MPI_Comm comm_;
  std::thread::id owner_thread_;  // blocking waits here; polite waits on other threads
  std::map<std::size_t, MPI_Datatype> row_types_;
  int rank_ = 0;
  int size_ = 1;
  int num_nodes_ = 1;
  std::vector<int> int_args_;    // [4 * size] counts and offsets as int, for MPI
  std::vector<char> same_node_;  // [size] 1 where the rank shares this node
};

}  // namespace switchyard::comm
