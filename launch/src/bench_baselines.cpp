#include "bench_baselines.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <numeric>

#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::launch {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Percentiles percentiles(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)]; };
  return {at(0.1), at(0.5), at(0.9)};
}

double measure_gemm_peak_gflops(std::int64_t rows, std::int64_t in, std::int64_t out, kernels::WeightType type,
                                int iters) {
  std::vector<float> w(static_cast<std::size_t>(in * out), 0.01f), x(static_cast<std::size_t>(rows * in), 0.5f),
      y(static_cast<std::size_t>(rows * out));
  kernels::PackedLinear gemm(w.data(), out, in, type);
  gemm.run(x.data(), rows, y.data());  // builds the primitive
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    gemm.run(x.data(), rows, y.data());
    times.push_back(seconds_since(t0));
  }
  return 2.0 * static_cast<double>(rows * in * out) / percentiles(times).p50 / 1e9;
}

double measure_memory_bandwidth_gbps(int iters) {
  // NOTE: 256 MiB is far past any last-level cache of this machine class.
  std::vector<double> buf(std::size_t{32} << 20, 1.0);
  std::vector<double> times;
  volatile double sink = 0;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (std::size_t j = 0; j + 3 < buf.size(); j += 4) {
      s0 += buf[j];
      s1 += buf[j + 1];
      s2 += buf[j + 2];
      s3 += buf[j + 3];
    }
    sink = sink + s0 + s1 + s2 + s3;
    times.push_back(seconds_since(t0));
  }
  return static_cast<double>(buf.size() * sizeof(double)) / percentiles(times).p50 / 1e9;
}

double measure_alltoallv_seconds(comm::Communicator& comm, const std::vector<std::int64_t>& send_counts,
                                 const std::vector<std::int64_t>& recv_counts, std::size_t row_bytes, int iters) {
  // NOTE: the baseline is MPI itself with byte counts, not our Communicator,
  // so the comparison also shows what the Communicator adds.
  auto* mpi = dynamic_cast<comm::MpiCommunicator*>(&comm);
  check(mpi != nullptr, ErrorCode::kInternal, "the alltoallv baseline needs an MPI communicator");
  const int R = comm.size();
  std::vector<int> sc(R), so(R), rc(R), ro(R);
  std::int64_t send_bytes = 0, recv_bytes = 0;
  for (int r = 0; r < R; ++r) {
    sc[r] = static_cast<int>(send_counts[r] * static_cast<std::int64_t>(row_bytes));
    rc[r] = static_cast<int>(recv_counts[r] * static_cast<std::int64_t>(row_bytes));
    so[r] = static_cast<int>(send_bytes);
    ro[r] = static_cast<int>(recv_bytes);
    send_bytes += sc[r];
    recv_bytes += rc[r];
  }
  std::vector<char> send(static_cast<std::size_t>(send_bytes) + 1, 1), recv(static_cast<std::size_t>(recv_bytes) + 1);
  std::vector<double> times;
  for (int i = 0; i < iters + 1; ++i) {
    double t[1] = {0};
    comm.barrier();
    const auto t0 = std::chrono::steady_clock::now();
    comm::check_mpi(MPI_Alltoallv(send.data(), sc.data(), so.data(), MPI_BYTE, recv.data(), rc.data(), ro.data(),
                                  MPI_BYTE, mpi->handle()));
    t[0] = seconds_since(t0);
    comm.allreduce_max(t, 1);  // the slowest rank's time counts
    if (i > 0) times.push_back(t[0]);
  }
  return percentiles(times).p50;
}

double max_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace switchyard::launch
