#pragma once
// The data-plane exchange: moves token rows between ranks asynchronously,
// ordered by events on a stream. Separate from the control-plane
// Communicator (counts, error agreement, gathers), so the bulk data of a
// step never matches, waits behind or reorders a control message
// (docs/device-seam.md). MPI implements it today, NCCL on a CUDA stream later.
#include <mpi.h>

#include <cstdint>
#include <map>

#include "switchyard/runtime/stream.hpp"

namespace switchyard::comm {

class Exchange {
 public:
  virtual ~Exchange() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  /// All-to-all-v of rows of `row_bytes` bytes. `send` holds send_rows[0]
  /// rows for rank 0, then send_rows[1] rows for rank 1, and so on, packed;
  /// rows from rank r land in `recv` after the recv_rows[q] rows of every
  /// rank q < r, packed the same way. recv_rows[r] on this rank must equal
  /// send_rows[this rank] on rank r. Counts may be zero.
  ///
  /// Ordering: the exchange starts after `previous` is complete (and after
  /// the work already submitted to `stream`); the returned Event is complete
  /// when `recv` is full and `send` may be reused. `send`, `recv` and the
  /// count arrays' values are read at the call; the buffers must stay alive
  /// and untouched until the Event is complete.
  ///
  /// Collective: every rank calls it, exchanges in the same order on every
  /// rank. Non-blocking: returns once the exchange is posted (on a CPU stream
  /// the caller first blocks until `previous` is complete). Not thread-safe:
  /// one thread issues exchanges on an Exchange at a time. Throws
  /// Error(kInvalidArgument) for negative counts or row_bytes < 1, Error(kMpi)
  /// when the backend fails (also from the Event's ready() and wait()).
  virtual Event alltoallv(const void* send, const std::int64_t* send_rows, void* recv, const std::int64_t* recv_rows,
                          std::int64_t row_bytes, const Event& previous, Stream& stream) = 0;
};

/// Exchange over MPI non-blocking collectives (MPI_Ialltoallv with one
/// contiguous datatype per row size) on its own duplicate of an MPI
/// communicator. Events from it complete their requests in wait()
/// (MPI_Wait) and test them in ready() (MPI_Test): they call MPI, so under
/// MPI_THREAD_SERIALIZED only one thread may use them (or any MPI call) at a
/// time. CPU streams only.
class MpiExchange final : public Exchange {
 public:
  /// Duplicates `comm` (MPI_Comm_dup; pass the control-plane communicator's
  /// handle()) so that data and control messages never match each other.
  /// The duplicate inherits `comm`'s error handler. Collective over `comm`
  /// and blocking.
  explicit MpiExchange(MPI_Comm comm);
  /// Frees the duplicate and the row types. Every Event from this exchange
  /// must be complete by then. Collective (MPI_Comm_free): destroy it on
  /// every rank.
  ~MpiExchange() override;
  MpiExchange(const MpiExchange&) = delete;
  MpiExchange& operator=(const MpiExchange&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Event alltoallv(const void* send, const std::int64_t* send_rows, void* recv, const std::int64_t* recv_rows,
                  std::int64_t row_bytes, const Event& previous, Stream& stream) override;

  /// The duplicated communicator the data moves on.
  MPI_Comm handle() const { return comm_; }

 private:
  MPI_Datatype row_type(std::int64_t row_bytes);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::map<std::int64_t, MPI_Datatype> row_types_;
};

}  // namespace switchyard::comm
