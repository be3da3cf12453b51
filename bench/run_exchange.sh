#!/usr/bin/env bash
# Flat against hierarchical exchange (docs/exchange.md). Two parts; each
# appends JSON lines, and bench/exchange.py prints the tables.
#
#   bench/run_exchange.sh bytes   # rows per link class, no emulated cluster
#   bench/run_exchange.sh times   # times on the emulated cluster (root)
#   bench/run_exchange.sh         # both
#
# bytes -> $OUT_BYTES (default results/exchange_bytes.jsonl): 8 ranks in
# virtual nodes of 2 (--ranks-per-node 2), 64 experts, top-k 2, 4 and 8.
# `switchyard forward` on a Mixtral model from make_random_moe with
# --exchange flat and hierarchical, each line with "expected" added: the
# rows per link class that bench/exchange.py derives from the model's router
# weights and x.npy alone (per-slot, flat, hierarchical, per-node bound).
# Then `switchyard bench` (its own synthetic routing) at the same shapes.
#
# times -> $OUT_TIMES (default results/exchange_times.jsonl): on
# launch/emulated-cluster, per node count, `switchyard topo --json` probes the
# link costs once (kept as a topology file); then REPEATS times, for each size
# and each of --exchange flat, hierarchical, auto, `switchyard bench
# --topology FILE --pass fwd` (the modes interleaved within a repeat). Two
# cases: "small" (latency-bound rows) and "sweep" (bytes per rank from 1 KiB
# to 8 MiB). Every line gets "case", "mode", "nodes", "ranks_per_node",
# "link_gbit", "repeat" and "yield_when_idle" added. The ranks of all nodes
# share this host's cores; YIELD=1 (the default) runs them with
# OMPI_MCA_mpi_yield_when_idle=1, so that a rank waiting in MPI yields its
# core (with more ranks than cores, busy-waiting ranks otherwise stall each
# other's messages for milliseconds; YIELD=0 shows it).
#
# Environment: REPEATS (default 10 for small, 3 for sweep), GBIT (default 2),
# SMALL_NODES (default "2 4"), SWEEP_NODES (default "2 4"), SMALL (default
# "16x64", tokens per rank x hidden), SWEEP (default "8x32 32x64 64x256
# 128x1024 512x1024 1024x2048"), EXPERTS (default 64), TOP_K (default 8),
# SWITCHYARD (default build/launch/switchyard), MAKE_RANDOM_MOE (default
# build/examples/make_random_moe), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
sy="${SWITCHYARD:-build/launch/switchyard}"
maker="${MAKE_RANDOM_MOE:-$(dirname "$sy")/../examples/make_random_moe}"
PYTHON=${PYTHON:-$( [ -x /opt/switchyard/venv/bin/python ] && echo /opt/switchyard/venv/bin/python || echo python3 )}
out_bytes="${OUT_BYTES:-results/exchange_bytes.jsonl}"
out_times="${OUT_TIMES:-results/exchange_times.jsonl}"
gbit="${GBIT:-2}"
yield_when_idle="${YIELD:-1}"
experts="${EXPERTS:-64}"
top_k="${TOP_K:-8}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# merge LINE_FILE EXTRA_JSON: the last line of LINE_FILE with EXTRA's fields added.
merge() {
  "$PYTHON" - "$1" "$2" <<'PY'
import json, sys
d = json.loads(open(sys.argv[1]).read().splitlines()[-1])
d.update(json.loads(sys.argv[2]))
print(json.dumps(d))
PY
}

run_bytes() {
  mkdir -p "$(dirname "$out_bytes")"
  local ranks=8 rpn=2 tokens=2048 k kind model expected
  for k in 2 4 8; do
    model="$work/m$k"
    "$maker" --out "$model" --arch mixtral --hidden 64 --ffn 64 --experts 64 --top-k "$k" --tokens "$tokens" > /dev/null
    expected=$("$PYTHON" bench/exchange.py expect --model "$model" --ranks $ranks --ranks-per-node $rpn --top-k "$k")
    for kind in flat hierarchical; do
      : > "$work/line.jsonl"
      mpirun -np $ranks --oversubscribe "$sy" forward --model "$model" --layer 1 --input "$model/x.npy" \
        --output "$work/y_$kind.npy" --ranks-per-node $rpn --exchange $kind --json "$work/line.jsonl" --quiet
      merge "$work/line.jsonl" "{\"kind\": \"bytes\", \"source\": \"forward\", \"ranks\": $ranks, \"ranks_per_node\": $rpn,
        \"experts\": 64, \"top_k\": $k, \"tokens\": $tokens, \"expected\": $expected}" >> "$out_bytes"
    done
    cmp -s "$work/y_flat.npy" "$work/y_hierarchical.npy" || { echo "top-$k: flat and hierarchical outputs differ" >&2; exit 1; }
    for kind in flat hierarchical; do
      : > "$work/line.jsonl"
      mpirun -np $ranks --oversubscribe "$sy" bench --experts 64 --top-k "$k" --tokens 256 --hidden 256 --ffn 256 \
        --iters 1 --warmup 0 --ranks-per-node $rpn --exchange $kind --json "$work/line.jsonl" > /dev/null
      merge "$work/line.jsonl" "{\"kind\": \"bytes\", \"source\": \"bench\", \"ranks_per_node\": $rpn,
        \"tokens\": $((256 * ranks))}" >> "$out_bytes"
    done
    echo "bytes: top-$k done ($(date -u +%H:%M:%S))" >&2
  done
  echo "appended to $out_bytes" >&2
}

cluster() {  # cluster NODES CMD...
  local nodes=$1
  shift
  launch/emulated-cluster --nodes "$nodes" --ranks-per-node 2 --link-gbit "$gbit" -- \
    env OMPI_MCA_mpi_yield_when_idle="$yield_when_idle" "$@"
}

run_times_case() {  # run_times_case CASE NODES REPEATS SIZES...
  local case=$1 nodes=$2 repeats=$3 rep size tokens hidden mode iters topo
  shift 3
  topo="$work/topo_$nodes.json"
  [[ -s $topo ]] || cluster "$nodes" "$sy" topo --json > "$topo"
  for rep in $(seq "$repeats"); do
    for size in "$@"; do
      tokens=${size%x*} hidden=${size#*x}
      # Many iterations where a step takes a few ms: their p50 is what is kept.
      iters=$(( tokens * hidden >= 262144 ? 3 : tokens * hidden >= 16384 ? 20 : 50 ))
      for mode in flat hierarchical auto; do
        : > "$work/line.jsonl"
        cluster "$nodes" "$sy" bench --topology "$topo" --exchange $mode --tokens "$tokens" --hidden "$hidden" \
          --ffn 64 --experts "$experts" --top-k "$top_k" --pass fwd --iters $iters --warmup 2 \
          --json "$work/line.jsonl" > /dev/null
        merge "$work/line.jsonl" "{\"kind\": \"times\", \"case\": \"$case\", \"mode\": \"$mode\", \"nodes\": $nodes,
          \"ranks_per_node\": 2, \"link_gbit\": $gbit, \"repeat\": $rep, \"yield_when_idle\": $yield_when_idle}" >> "$out_times"
      done
    done
    echo "times: $case, $nodes nodes, repeat $rep done ($(date -u +%H:%M:%S))" >&2
  done
}

run_times() {
  mkdir -p "$(dirname "$out_times")"
  local nodes
  # shellcheck disable=SC2086
  for nodes in ${SMALL_NODES:-2 4}; do run_times_case small "$nodes" "${REPEATS:-10}" ${SMALL:-16x64}; done
  # shellcheck disable=SC2086
  for nodes in ${SWEEP_NODES:-2 4}; do
    run_times_case sweep "$nodes" "${REPEATS:-3}" ${SWEEP:-8x32 32x64 64x256 128x1024 512x1024 1024x2048}
  done
  echo "appended to $out_times" >&2
}

case $what in
  bytes) run_bytes ;;
  times) run_times ;;
  all) run_bytes; run_times ;;
  *) echo "usage: bench/run_exchange.sh [bytes|times]" >&2; exit 2 ;;
esac
