#!/usr/bin/env bash
# The fuzzing smoke test (CTest `fuzz_smoke`, label fuzz): builds the libFuzzer
# harnesses of fuzz/ with clang++-14 into BUILD_DIR (default build-fuzz), runs
# every kept finding in fuzz/regressions/<target>/ as a plain input, then each
# harness for SECONDS (default 15) from its seed corpus. New corpus entries go
# to a temporary folder, never into the source tree. Long runs: bench/fuzz.sh.
#   scripts/fuzz-smoke.sh [BUILD_DIR] [SECONDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-fuzz}
seconds=${2:-15}
start=$SECONDS
if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S "$root/fuzz" -B "$build" -DCMAKE_CXX_COMPILER=clang++-14 >/dev/null
fi
cmake --build "$build" -j2 >/dev/null
echo "fuzz-smoke: build took $((SECONDS - start)) s"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
targets=(safetensors_header safetensors_index model_config npy train_config topology placement routing_stats)
for t in "${targets[@]}"; do
  regressions=("$root"/fuzz/regressions/"$t"/*)
  if [[ -e ${regressions[0]} ]]; then
    "$build/fuzz_$t" "${regressions[@]}" >"$work/$t-regressions.log" 2>&1 ||
      { tail -30 "$work/$t-regressions.log"; echo "fuzz-smoke: $t: a regression input fails"; exit 1; }
    echo "fuzz-smoke: $t: ${#regressions[@]} regression inputs pass"
  fi
  mkdir -p "$work/$t"
  "$build/fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$work/$t-" "$work/$t" "$root/fuzz/corpus/$t" >"$work/$t.log" 2>&1 ||
    { tail -40 "$work/$t.log"; echo "fuzz-smoke: $t: finding (input above; keep it in fuzz/regressions/$t/)"; exit 1; }
  echo "fuzz-smoke: $t: $(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log") executions, no finding"
done
echo "fuzz-smoke: took $((SECONDS - start)) s"
