#!/usr/bin/env bash
# Long libFuzzer runs of the file-parser harnesses in fuzz/ (docs/reliability.md,
# "Fuzzing"), one harness at a time on one core:
#   bench/fuzz.sh MINUTES [TARGET...]
# Builds build-fuzz/ with clang++-14 if needed, runs each TARGET (default:
# all) for MINUTES with a working corpus in results/fuzz/<target> seeded from
# fuzz/corpus/<target> and fuzz/regressions/<target>, crashes to
# results/fuzz/artifacts/, the log to results/fuzz/<target>.log. Prints per
# harness the executions and exec/s of libFuzzer's final stats; exits 1 when
# any harness found something.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:?usage: bench/fuzz.sh MINUTES [TARGET...]}
shift
all=(safetensors_header safetensors_index model_config npy train_config topology placement routing_stats)
targets=("$@")
[[ $# -gt 0 ]] || targets=("${all[@]}")

if [[ ! -f build-fuzz/CMakeCache.txt ]]; then
  cmake -S fuzz -B build-fuzz -DCMAKE_CXX_COMPILER=clang++-14 >/dev/null
fi
cmake --build build-fuzz -j1 >/dev/null

seconds=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')
mkdir -p results/fuzz/artifacts
found=0
printf '%-20s %8s %14s %8s %s\n' harness minutes executions exec/s result
for t in "${targets[@]}"; do
  work=results/fuzz/$t
  mkdir -p "$work"
  seeds=(fuzz/corpus/"$t")
  [[ -d fuzz/regressions/$t ]] && seeds+=(fuzz/regressions/"$t")
  status=0
  build-fuzz/fuzz_"$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix=results/fuzz/artifacts/"$t"- "$work" "${seeds[@]}" >"$work.log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work.log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work.log" | tail -1)
  result=ok
  if [[ $status -ne 0 ]]; then
    result="FINDING (exit $status, see $work.log and results/fuzz/artifacts/$t-*)"
    found=1
  fi
  printf '%-20s %8s %14s %8s %s\n' "$t" "$minutes" "${execs:-?}" "${rate:-?}" "$result"
done
exit $found
