// node_count: how many shared-memory nodes MPI sees, and where each rank runs.
//
// Prints, on rank 0:
//   ranks <R>
//   nodes <number of distinct MPI_COMM_TYPE_SHARED communicators>
//   rank <r> host <hostname> node <index of its shared-memory communicator>
// one line per rank. Used by tests/cluster to check launch/emulated-cluster.
#include <mpi.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <vector>

#include "switchyard/comm/finalize.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  int size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  MPI_Comm node_comm = MPI_COMM_NULL;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node_comm);
  int node_rank = 0;
  MPI_Comm_rank(node_comm, &node_rank);

  // Number the shared-memory communicators by their leaders (node_rank 0), in world-rank order.
  int leader = node_rank == 0 ? 1 : 0;
  int leaders_before = 0;
  MPI_Exscan(&leader, &leaders_before, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) leaders_before = 0;
  int node_index = leaders_before;  // valid on leaders; broadcast within the node
  MPI_Bcast(&node_index, 1, MPI_INT, 0, node_comm);
  int nodes = 0;
  MPI_Allreduce(&leader, &nodes, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);

  std::array<char, 256> host{};
  gethostname(host.data(), host.size() - 1);
  std::vector<char> hosts(rank == 0 ? host.size() * static_cast<size_t>(size) : 1);
  std::vector<int> indices(rank == 0 ? static_cast<size_t>(size) : 1);
  MPI_Gather(host.data(), static_cast<int>(host.size()), MPI_CHAR, hosts.data(), static_cast<int>(host.size()),
             MPI_CHAR, 0, MPI_COMM_WORLD);
  MPI_Gather(&node_index, 1, MPI_INT, indices.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);

  if (rank == 0) {
    std::printf("ranks %d\nnodes %d\n", size, nodes);
    for (int r = 0; r < size; ++r)
      std::printf("rank %d host %s node %d\n", r, &hosts[static_cast<size_t>(r) * host.size()],
                  indices[static_cast<size_t>(r)]);
    std::fflush(stdout);
  }
  MPI_Comm_free(&node_comm);
  switchyard::comm::finalize_mpi();
  return 0;
}
