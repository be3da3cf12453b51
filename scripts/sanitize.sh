#!/usr/bin/env bash
# The test suite under sanitizers, each kind in a build folder of its own
# (-O1 with line tables: the sanitizers' advice, and half the build time of
# -O2 -g; benchmarks left out), with the suppressions and options of
# tests/sanitizers/. Prints how long each phase took.
#   scripts/sanitize.sh address [CTEST_ARGS...]  ASan + LeakSanitizer + UBSan (build-asan): the unit,
#                                                multi-rank and cluster tests, the installed package and
#                                                the bad-input suite (the selection below says why)
#   scripts/sanitize.sh thread [CTEST_ARGS...]   ThreadSanitizer (build-tsan): the task-graph test and
#                                                every multi-rank test (label mpi)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
kind=${1:-}
[[ $kind == address || $kind == thread ]] || { echo "usage: scripts/sanitize.sh address|thread [CTEST_ARGS...]" >&2; exit 2; }
shift
phase() {  # phase NAME COMMAND...: runs it and reports its wall time
  local name=$1 start=$SECONDS; shift
  "$@"
  echo "sanitize.sh: $kind: phase '$name' took $((SECONDS - start)) s"
}
phase setup scripts/setup.sh --test
venv="${SWITCHYARD_VENV:-/opt/switchyard/venv}"
supp=$root/tests/sanitizers
if [[ $kind == address ]]; then
  build=build-asan
  config=(-DSWITCHYARD_SANITIZE=address,undefined -DSWITCHYARD_PYTHON="$venv/bin/python")
  targets=()
  # The fuzz smoke test builds its own ASan/UBSan harnesses. The Python command-line suites but
  # bad_input drive, through the binary and at several times the cost, the paths the unit and multi-rank
  # tests already run under ASan, as do the Slurm and fault-injection cluster tests: they run in the
  # plain suite only, which keeps a CI run on a slow machine well inside its limit. The bad-input suite
  # stays: malformed files and flags are where the binary's own parsing runs.
  select=(-LE fuzz -E '^(python_test_(transformers_crosscheck|train_small|scaling_study|schedule_cli|train_cli|topo_cli|placement_cli|bench|forward_router)|slurm_cluster|cluster_faults)$')
  # halt_on_error: the first report ends the process (with -fno-sanitize-recover=all for UBSan).
  # allocator_may_return_null: an impossible allocation returns null, as glibc's does, so that the
  # tests of Switchyard's out-of-memory errors see what a user's run sees instead of an ASan report.
  export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:check_initialization_order=1:strict_init_order=1"
  ASAN_OPTIONS+=":allocator_may_return_null=1"
  export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
  # Plugins stay loaded (tests/sanitizers/keep_plugins.c) so that leak stacks through them have names;
  # preloaded ahead of ASan's runtime, which defines no dlclose, hence verify_asan_link_order=0.
  mkdir -p "$build"
  gcc -O2 -shared -fPIC -o "$build/keep_plugins.so" "$supp/keep_plugins.c"
  export LD_PRELOAD="$root/$build/keep_plugins.so"
  ASAN_OPTIONS+=":verify_asan_link_order=0"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$supp/ubsan.supp"
else
  build=build-tsan
  config=(-DSWITCHYARD_SANITIZE=thread)
  targets=(--target test_task_graph)
  for t in tests/mpi/test_*.cpp; do targets+=(--target "$(basename "$t" .cpp)"); done
  select=(-R '^(test_task_graph|.*_np[0-9]+)$')
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.supp:print_suppressions=0"
fi
configure() { cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -DNDEBUG" \
  -DSWITCHYARD_BUILD_TESTS=ON -DSWITCHYARD_BUILD_BENCH=OFF "${config[@]}" >/dev/null; }
phase configure configure
phase build cmake --build "$build" -j2 "${targets[@]}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
phase ctest ctest --test-dir "$build" --output-on-failure --timeout 900 "${select[@]}" "$@"
