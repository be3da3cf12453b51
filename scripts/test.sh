#!/usr/bin/env bash
# Installs everything (Debian packages and the Python reference environment),
# builds, and runs the whole test suite with CTest. Prints how long each phase took.
set -euo pipefail
cd "$(dirname "$0")/.."
phase() {  # phase NAME COMMAND...: runs it and reports its wall time
  local name=$1 start=$SECONDS; shift
  "$@"
  echo "test.sh: phase '$name' took $((SECONDS - start)) s"
}
phase setup scripts/setup.sh --test
phase build scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
phase ctest ctest --test-dir build --output-on-failure --timeout 900 "$@"
