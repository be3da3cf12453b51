// Ending MPI, for every program that started it.
#pragma once

#include <mpi.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

namespace switchyard::comm {

/// Calls MPI_Finalize. In a build with AddressSanitizer it first runs
/// LeakSanitizer's check, which otherwise runs at exit: Open MPI 4.1 unloads
/// its plugins in MPI_Finalize, and a leak report through an unloaded plugin
/// has no names, so neither a reader nor a suppression could tell whose it is.
/// What is still reachable here (Open MPI's state, objects still in scope) is
/// not a leak and is not reported.
inline int finalize_mpi() {
#if defined(__SANITIZE_ADDRESS__)
  __lsan_do_leak_check();
#endif
  return MPI_Finalize();
}

}  // namespace switchyard::comm
