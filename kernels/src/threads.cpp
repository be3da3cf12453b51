#include "switchyard/kernels/threads.hpp"

#include <omp.h>

#include <algorithm>

namespace switchyard::kernels {

// NOTE: oneDNN as Debian builds it runs on OpenMP, so the OpenMP thread count
// of the calling thread (an ICV of that thread alone) is what bounds a
// primitive's threads.
void set_num_threads(int num_threads) { omp_set_num_threads(std::max(1, num_threads)); }

int num_threads() { return omp_get_max_threads(); }

}  // namespace switchyard::kernels
