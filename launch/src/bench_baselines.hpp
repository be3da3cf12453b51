#pragma once
// The limits a benchmark reports its results against, measured in the same
// run: one large GEMM, a plain MPI_Alltoallv, and streaming memory reads.
#include <cstdint>
#include <vector>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/kernels/packed_linear.hpp"

namespace switchyard::launch {

/// GFLOP/s of one large prepacked GEMM (rows x in -> out) with the same
/// library and weight type as the experts; median of `iters` runs.
double measure_gemm_peak_gflops(std::int64_t rows, std::int64_t in, std::int64_t out, kernels::WeightType type,
                                int iters);

/// GB/s of a streaming read of a buffer much larger than the caches (per rank).
double measure_memory_bandwidth_gbps(int iters);

/// Median seconds of a plain alltoallv with these per-peer row counts.
/// Collective.
double measure_alltoallv_seconds(comm::Communicator& comm, const std::vector<std::int64_t>& send_counts,
                                 const std::vector<std::int64_t>& recv_counts, std::size_t row_bytes, int iters);

/// Median, and the p10/p90 (nearest rank) of `v`.
struct Percentiles {
  double p10 = 0, p50 = 0, p90 = 0;
};
Percentiles percentiles(std::vector<double> v);

/// Peak resident set size of this process in MiB.
double max_rss_mib();

}  // namespace switchyard::launch
