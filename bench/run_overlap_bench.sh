#!/usr/bin/env bash
# The overlap benchmarks of docs/task-graph.md: the same step graph with
# overlap on and off (bench prints both), on one node and on the emulated
# cluster at link rates where the exchange and the experts take about the
# same time. Appends JSON lines (with "nodes" and "link_gbit") to $OUT
# (default results/overlap.jsonl); run as root.
#   bench/run_overlap_bench.sh [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${1:-3}"
out="$(realpath -m "${OUT:-results/overlap.jsonl}")"
mkdir -p "$(dirname "$out")"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
sy=build/launch/switchyard
shape=(--hidden 1024 --ffn 2048 --experts 8 --top-k 2)
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
# Runs one bench and tags its line with where it ran.
tagged() {
  local nodes=$1 gbit=$2
  shift 2
  : >"$tmp"
  "$@" --json "$tmp" >/dev/null
  python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read()); d.update(nodes=int(sys.argv[2]), link_gbit=float(sys.argv[3])); print(json.dumps(d))' \
    "$tmp" "$nodes" "$gbit" >>"$out"
}
one_node() { tagged 1 0 mpirun -np 2 --bind-to core "$sy" bench "${shape[@]}" "$@"; }
cluster() {
  local nodes=$1 per_node=$2 gbit=$3
  shift 3
  tagged "$nodes" "$gbit" launch/emulated-cluster --nodes "$nodes" --ranks-per-node "$per_node" --link-gbit "$gbit" -- \
    "$sy" bench "${shape[@]}" "$@"
}
for _ in $(seq "$repeats"); do
  one_node --tokens 4096 --chunks 4 --pass fwd --iters 5 --warmup 2
  one_node --tokens 4096 --chunks 4 --pass fwd_bwd --iters 3 --warmup 1
  cluster 2 1 0.5 --tokens 2048 --chunks 4 --pass fwd --iters 8 --warmup 2
  cluster 2 1 0.3 --tokens 1024 --chunks 4 --pass fwd_bwd --iters 5 --warmup 1
  cluster 2 2 0.5 --tokens 1024 --chunks 4 --pass fwd --iters 8 --warmup 2
  cluster 2 2 0.3 --tokens 512 --chunks 4 --pass fwd_bwd --iters 5 --warmup 1
done
echo "appended to $out"
