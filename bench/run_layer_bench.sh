#!/usr/bin/env bash
# Runs the layer benchmarks the docs report and appends JSON lines to $OUT
# (default results/bench.jsonl). Each configuration runs REPEATS times so the
# docs can report the median and spread of the medians.
#   bench/run_layer_bench.sh [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${1:-3}"
out="${OUT:-results/bench.jsonl}"
mkdir -p "$(dirname "$out")"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
sy=build/launch/switchyard
run() { mpirun -np 2 --oversubscribe --bind-to core "$sy" bench --json "$out" "$@"; }
for _ in $(seq "$repeats"); do
  for dtype in f32 bf16; do
    run --hidden 1024 --ffn 2048 --experts 8 --top-k 2 --tokens 4096 --dtype "$dtype" --pass fwd --iters 10 --warmup 3
  done
  run --hidden 1024 --ffn 2048 --experts 8 --top-k 2 --tokens 4096 --dtype f32 --pass fwd_bwd --iters 5 --warmup 2
  for t in 1 4 16; do
    run --hidden 1024 --ffn 2048 --experts 8 --top-k 2 --tokens "$t" --dtype bf16 --pass fwd --iters 50 --warmup 5
  done
done
echo "appended to $out"
