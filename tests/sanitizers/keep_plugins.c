/* Preloaded (LD_PRELOAD) into every process of the AddressSanitizer run of the
 * suite (scripts/sanitize.sh): a dlclose that keeps the library loaded.
 *
 * Open MPI 4.1 and PMIx unload their plugins (components not selected in
 * MPI_Init, all of them in MPI_Finalize), and a leak report whose stack
 * passes through an unloaded plugin has frames without names, which neither a
 * reader nor a suppression can attribute. Kept loaded, each such frame names
 * its plugin (mca_*.so), which tests/sanitizers/lsan.supp matches. Built
 * without sanitizers; defines nothing else. */
int dlclose(void *handle) {
  (void)handle;
  return 0;
}
