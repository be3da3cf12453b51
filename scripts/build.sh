#!/usr/bin/env bash
# Configures and builds Switchyard into build/ (Release, -j2).
#   scripts/build.sh                    everything (library, programs, tests, benchmarks)
#   scripts/build.sh TARGET...          only those targets and what they need
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SWITCHYARD_VENV:-/opt/switchyard/venv}"
python_arg=()
[ -x "$venv/bin/python" ] && python_arg=(-DSWITCHYARD_PYTHON="$venv/bin/python")
# A partial build keeps whatever the build folder was configured with (a first one needs no GoogleTest).
tests_arg=(-DSWITCHYARD_BUILD_TESTS=ON)
if [ $# -gt 0 ]; then
  tests_arg=()
  [ -f build/CMakeCache.txt ] || tests_arg=(-DSWITCHYARD_BUILD_TESTS=OFF)
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${tests_arg[@]}" "${python_arg[@]}" >/dev/null
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build build -j2 "${targets[@]}"
