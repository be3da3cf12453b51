#pragma once
// Helpers for multi-rank tests.
#include <mpi.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "switchyard/runtime/partition.hpp"

namespace switchyard::test_support {

/// A fresh directory made by rank 0, its path shared with every rank
/// (empty if it could not be made). Collective.
inline std::string shared_temp_dir(int rank) {
  char path[256] = {0};
  if (rank == 0) {
    const std::string tmpl = (std::filesystem::temp_directory_path() / "sy_test_XXXXXX").string();
    std::copy(tmpl.begin(), tmpl.end(), path);
    if (mkdtemp(path) == nullptr) path[0] = 0;
  }
  MPI_Bcast(path, sizeof(path), MPI_CHAR, 0, MPI_COMM_WORLD);
  return path;
}

/// First row and row count of rank r's contiguous block of T rows.
inline std::int64_t block_begin(std::int64_t T, int R, int r) { return BlockPartition(T, R).first(r); }
inline std::int64_t block_rows(std::int64_t T, int R, int r) { return BlockPartition(T, R).count(r); }

}  // namespace switchyard::test_support
