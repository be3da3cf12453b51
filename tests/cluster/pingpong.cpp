// pingpong: point-to-point bandwidth between rank 0 and the last rank.
//
//   pingpong [bytes=4194304] [round_trips=10]
//
// Rank 0 sends `bytes` to the last rank, which sends them back, `round_trips`
// times (after one untimed warm-up round trip). Rank 0 prints one line:
//   pingpong bytes <B> round_trips <K> seconds <T> GB/s <2*B*K/T/1e9> from <host> to <host>
// Under launch/emulated-cluster with one rank per node this crosses one
// emulated link each way; with one node it measures shared memory.
#include <mpi.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "switchyard/comm/finalize.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  int size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const long bytes = argc > 1 ? std::atol(argv[1]) : 4L << 20;
  const int round_trips = argc > 2 ? std::atoi(argv[2]) : 10;
  if (size < 2 || bytes <= 0 || bytes > (1L << 30) || round_trips <= 0) {
    if (rank == 0) std::fprintf(stderr, "pingpong: error: needs >= 2 ranks, 0 < bytes <= 1 GiB, round_trips > 0\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  const int peer = size - 1;
  std::vector<char> buffer(static_cast<size_t>(bytes), 1);
  std::array<char, 256> host{};
  std::array<char, 256> peer_host{};
  gethostname(host.data(), host.size() - 1);
  if (rank == peer) MPI_Send(host.data(), static_cast<int>(host.size()), MPI_CHAR, 0, 1, MPI_COMM_WORLD);
  if (rank == 0)
    MPI_Recv(peer_host.data(), static_cast<int>(peer_host.size()), MPI_CHAR, peer, 1, MPI_COMM_WORLD,
             MPI_STATUS_IGNORE);

  double start = 0;
  for (int trip = -1; trip < round_trips; ++trip) {  // trip -1 is the warm-up
    if (trip == 0) {
      MPI_Barrier(MPI_COMM_WORLD);
      start = MPI_Wtime();
    }
    if (rank == 0) {
      MPI_Send(buffer.data(), static_cast<int>(bytes), MPI_CHAR, peer, 0, MPI_COMM_WORLD);
      MPI_Recv(buffer.data(), static_cast<int>(bytes), MPI_CHAR, peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else if (rank == peer) {
      MPI_Recv(buffer.data(), static_cast<int>(bytes), MPI_CHAR, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(buffer.data(), static_cast<int>(bytes), MPI_CHAR, 0, 0, MPI_COMM_WORLD);
    }
  }
  const double seconds = MPI_Wtime() - start;
  if (rank == 0) {
    std::printf("pingpong bytes %ld round_trips %d seconds %.6f GB/s %.4f from %s to %s\n", bytes, round_trips, seconds,
                2.0 * static_cast<double>(bytes) * round_trips / seconds / 1e9, host.data(), peer_host.data());
    std::fflush(stdout);
  }
  switchyard::comm::finalize_mpi();
  return 0;
}
