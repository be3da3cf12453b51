#include "switchyard/comm/mpi_communicator.hpp"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "switchyard/comm/watchdog.hpp"
#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/log.hpp"
#include "switchyard/runtime/settings.hpp"

namespace switchyard::comm {
namespace {

// Into `out` ([n]): MPI's v-collectives take int counts and offsets.
int* to_int(const std::int64_t* v, int n, const char* what, int* out) {
  for (int i = 0; i < n; ++i) {
    // NOTE: the message is built only on failure, so an exchange allocates nothing.
    if (v[i] < 0 || v[i] > INT_MAX)
      check(false, ErrorCode::kInternal, std::string("MPI ") + what + " out of int range: " + std::to_string(v[i]));
    out[i] = static_cast<int>(v[i]);
  }
  return out;
}

}  // namespace

namespace {

// Longest sleep between tests of an exchange that crosses nodes
// (SWITCHYARD_POLL_US, 200 by default; read once, on first use).
std::chrono::microseconds remote_sleep() {
  // NOTE: 0 counts as 1: a zero sleep would turn the polite wait into a spin.
  static const auto sleep = std::chrono::microseconds(std::max<std::int64_t>(1, setting_int("SWITCHYARD_POLL_US")));
  return sleep;
}

}  // namespace

void wait_politely(MPI_Request* request, std::chrono::microseconds max_sleep) {
  wait_watched(request, "a point-to-point message", max_sleep);
}

void check_mpi(int rc, std::source_location where) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  int rank = -1, initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  throw Error(ErrorCode::kMpi, std::string(where.file_name()) + ":" + std::to_string(where.line()) + " rank " +
                                   std::to_string(rank) + ": " + std::string(text, len));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  for (auto& [bytes, type] : row_types_) MPI_Type_free(&type);
}

MPI_Datatype MpiCommunicator::row_type(std::size_t row_bytes) {
  // NOTE: one committed type per row size, built once: creating and freeing
  // a derived type on every exchange costs measurable microseconds.
  auto it = row_types_.find(row_bytes);
  if (it != row_types_.end()) return it->second;
  check(row_bytes <= INT_MAX, ErrorCode::kInternal, "row of " + std::to_string(row_bytes) + " bytes is too large");
  MPI_Datatype type;
  check_mpi(MPI_Type_contiguous(static_cast<int>(row_bytes), MPI_BYTE, &type));
  check_mpi(MPI_Type_commit(&type));
  return row_types_.emplace(row_bytes, type).first->second;
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm) : comm_(comm), owner_thread_(std::this_thread::get_id()) {
  // NOTE: log lines carry the rank in MPI_COMM_WORLD, which names the process
  // whatever communicator this one wraps.
  int world_rank = -1;
  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
  set_log_rank(world_rank);
  // NOTE: the settings are read before the first collective, so a bad value
  // throws on every rank alike rather than on some ranks mid-exchange.
  load_settings();
  init_watchdog(comm_);
  check_mpi(MPI_Comm_rank(comm_, &rank_));
  check_mpi(MPI_Comm_size(comm_, &size_));
  int_args_.assign(static_cast<std::size_t>(4 * size_), 0);
  // Nodes: count the lowest rank of every shared-memory group.
  MPI_Comm node;
  check_mpi(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
  int node_rank = 0;
  check_mpi(MPI_Comm_rank(node, &node_rank));
  // Which ranks share this node: translate the node group into our ranks.
  MPI_Group world_group, node_group;
  check_mpi(MPI_Comm_group(comm_, &world_group));
  check_mpi(MPI_Comm_group(node, &node_group));
  int node_size = 0;
  check_mpi(MPI_Group_size(node_group, &node_size));
  std::vector<int> local(static_cast<std::size_t>(node_size)), global(local.size());
  for (int i = 0; i < node_size; ++i) local[i] = i;
  check_mpi(MPI_Group_translate_ranks(node_group, node_size, local.data(), world_group, global.data()));
  same_node_.assign(static_cast<std::size_t>(size_), 0);
  for (int r : global) same_node_[static_cast<std::size_t>(r)] = 1;
  MPI_Group_free(&node_group);
  MPI_Group_free(&world_group);
  MPI_Comm_free(&node);
  int leader = node_rank == 0 ? 1 : 0;
  check_mpi(MPI_Allreduce(&leader, &num_nodes_, 1, MPI_INT, MPI_SUM, comm_));
  SY_INFO(kInit, "communicator created: rank %d of %d, %d node(s), %d rank(s) on this node", rank_, size_, num_nodes_,
          node_size);
  SY_INFO(kComm, "polite wait from other threads: up to %lld us between tests across nodes, 10 us within a node",
          static_cast<long long>(remote_sleep().count()));
}

void MpiCommunicator::alltoallv(const void* send, const std::int64_t* send_counts, const std::int64_t* send_offsets,
                                void* recv, const std::int64_t* recv_counts, const std::int64_t* recv_offsets,
                                std::size_t row_bytes) {
  MPI_Datatype row = row_type(row_bytes);
  // NOTE: converted into buffers sized once, so an exchange allocates nothing.
  int* sc = to_int(send_counts, size_, "count", int_args_.data());
  int* so = to_int(send_offsets, size_, "offset", int_args_.data() + size_);
  int* rc = to_int(recv_counts, size_, "count", int_args_.data() + 2 * size_);
  int* ro = to_int(recv_offsets, size_, "offset", int_args_.data() + 3 * size_);
  // NOTE: every collective is posted non-blocking and waited for under the
  // watchdog (watchdog.hpp), so a stalled peer ends the job instead of
  // hanging it. The owner thread spins (as a blocking call would); another
  // thread (a task graph's communication thread) leaves its core to compute
  // meanwhile. Shared memory moves data only inside MPI calls, so it wants
  // frequent tests; a network link keeps sending from the socket buffers
  // between them, and fewer wake-ups leave more of the core to the experts.
  MPI_Request request;
  check_mpi(MPI_Ialltoallv(send, sc, so, row, recv, rc, ro, row, comm_, &request));
  auto max_sleep = std::chrono::microseconds(0);
  if (std::this_thread::get_id() != owner_thread_) {
    bool remote = false;
    for (int r = 0; r < size_; ++r) remote = remote || (!same_node_[r] && (sc[r] > 0 || rc[r] > 0));
    max_sleep = remote ? remote_sleep() : std::chrono::microseconds(10);
  }
  wait_watched(&request, "alltoallv", max_sleep);
}

void MpiCommunicator::wait(MPI_Request* request, const char* operation) {
  const auto max_sleep =
      std::this_thread::get_id() == owner_thread_ ? std::chrono::microseconds(0) : std::chrono::microseconds(10);
  wait_watched(request, operation, max_sleep);
}

void MpiCommunicator::alltoall(const std::int64_t* send, std::int64_t* recv, std::size_t count) {
  MPI_Request request;
  check_mpi(MPI_Ialltoall(send, static_cast<int>(count), MPI_INT64_T, recv, static_cast<int>(count), MPI_INT64_T, comm_,
                          &request));
  wait(&request, "alltoall");
}

void MpiCommunicator::allreduce(void* data, std::size_t count, MPI_Datatype type, MPI_Op op) {
  MPI_Request request;
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), type, op, comm_, &request));
  wait(&request, "allreduce");
}

void MpiCommunicator::allreduce_sum(std::int64_t* data, std::size_t count) {
  allreduce(data, count, MPI_INT64_T, MPI_SUM);
}

void MpiCommunicator::allreduce_sum(double* data, std::size_t count) { allreduce(data, count, MPI_DOUBLE, MPI_SUM); }

void MpiCommunicator::allreduce_sum(float* data, std::size_t count) { allreduce(data, count, MPI_FLOAT, MPI_SUM); }

void MpiCommunicator::allreduce_max(double* data, std::size_t count) { allreduce(data, count, MPI_DOUBLE, MPI_MAX); }

void MpiCommunicator::gatherv(const void* send, std::size_t send_bytes, void* recv, const std::int64_t* recv_bytes,
                              const std::int64_t* recv_offsets, int root) {
  int* rb = int_args_.data();
  int* ro = int_args_.data() + size_;
  if (rank_ == root) {
    to_int(recv_bytes, size_, "count", rb);
    to_int(recv_offsets, size_, "offset", ro);
  }
  MPI_Request request;
  check_mpi(MPI_Igatherv(send, static_cast<int>(send_bytes), MPI_BYTE, recv, rb, ro, MPI_BYTE, root, comm_, &request));
  wait(&request, "gatherv");
}

void MpiCommunicator::barrier() {
  MPI_Request request;
  check_mpi(MPI_Ibarrier(comm_, &request));
  wait(&request, "barrier");
}

void MpiCommunicator::broadcast(void* data, std::size_t bytes, int root) {
  MPI_Request request;
  check_mpi(MPI_Ibcast(data, static_cast<int>(bytes), MPI_BYTE, root, comm_, &request));
  wait(&request, "broadcast");
}

void MpiCommunicator::abort(int exit_code) {
  MPI_Abort(comm_, exit_code);
  std::_Exit(exit_code);
}

}  // namespace switchyard::comm
