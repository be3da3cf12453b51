#pragma once
// How many threads the kernels called from a thread may use.

namespace switchyard::kernels {

/// Sets the number of threads that kernels called from the calling thread
/// use from now on (at least 1; a smaller value is taken as 1). Other threads
/// keep their own count, so each compute worker of an executor can take its
/// share of the cores: call it once at the start of each worker thread.
/// Not collective. Thread-safe: it changes only the calling thread's setting
/// (on this CPU build, OpenMP's per-thread thread count, which oneDNN's
/// OpenMP runtime follows).
void set_num_threads(int num_threads);

/// The number of threads that kernels called from the calling thread use:
/// the last set_num_threads of this thread, else the process default
/// (OMP_NUM_THREADS if set, else every available core). Thread-safe.
int num_threads();

}  // namespace switchyard::kernels
