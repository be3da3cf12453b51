#pragma once
// A one-rank Communicator without MPI: every collective is a local copy or
// the identity. For unit tests and single-process tools.
#include <cstdlib>
#include <cstring>

#include "switchyard/comm/communicator.hpp"

namespace switchyard::comm {

class SelfCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int num_nodes() const override { return 1; }
  void alltoallv(const void* send, const std::int64_t* send_counts, const std::int64_t* send_offsets, void* recv,
                 const std::int64_t*, const std::int64_t* recv_offsets, std::size_t row_bytes) override {
    std::memmove(static_cast<char*>(recv) + recv_offsets[0] * row_bytes,
                 static_cast<const char*>(send) + send_offsets[0] * row_bytes, send_counts[0] * row_bytes);
  }
  void alltoall(const std::int64_t* send, std::int64_t* recv, std::size_t count) override {
    std::memmove(recv, send, count * sizeof(std::int64_t));
  }
  void allreduce_sum(std::int64_t*, std::size_t) override {}
  void allreduce_sum(double*, std::size_t) override {}
  void allreduce_sum(float*, std::size_t) override {}
  void allreduce_max(double*, std::size_t) override {}
  void gatherv(const void* send, std::size_t send_bytes, void* recv, const std::int64_t*,
               const std::int64_t* recv_offsets, int) override {
    std::memmove(static_cast<char*>(recv) + recv_offsets[0], send, send_bytes);
  }
  void barrier() override {}
  void broadcast(void*, std::size_t, int) override {}
  [[noreturn]] void abort(int exit_code) override { std::_Exit(exit_code); }
};

}  // namespace switchyard::comm
