#!/usr/bin/env bash
# Cost-model accuracy on the emulated cluster: for each link rate and node
# count, REPEATS times: `switchyard topo --json` measures the link costs across
# the emulated links (kept as a topology file), then `switchyard bench
# --topology FILE` runs at a few (tokens, hidden) sizes so that the exchanged
# bytes vary. Every bench line gets "nodes", "link_gbit", "repeat",
# "yield_when_idle" and that repeat's fitted other_node cost (with its probe
# points) added and is appended to $OUT (default results/cost_model.jsonl);
# bench/cost_model.py prints the tables.
# One rank per node: N nodes run N ranks on this host's cores.
# Needs root (network namespaces).
#   bench/run_cost_model.sh [REPEATS]
# Environment: RATES (default "0.5 2 8", Gbit/s), NODES (default "2 4"),
# SIZES (default "128x512 512x1024 1024x2048", tokens per rank x hidden),
# YIELD (default 0; 1 runs the ranks with OMPI_MCA_mpi_yield_when_idle=1, so
# that a rank waiting in MPI yields its core: with more ranks than cores,
# busy-waiting ranks otherwise stall each other's messages for milliseconds),
# SWITCHYARD (default build/launch/switchyard).
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${1:-3}"
out="${OUT:-results/cost_model.jsonl}"
rates="${RATES:-0.5 2 8}"
node_counts="${NODES:-2 4}"
sizes="${SIZES:-128x512 512x1024 1024x2048}"
sy="${SWITCHYARD:-build/launch/switchyard}"
yield_when_idle="${YIELD:-0}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cluster() {  # cluster NODES GBIT CMD...
  local nodes=$1 gbit=$2
  shift 2
  launch/emulated-cluster --nodes "$nodes" --ranks-per-node 1 --link-gbit "$gbit" -- \
    env OMPI_MCA_mpi_yield_when_idle="$yield_when_idle" "$@"
}

for gbit in $rates; do
  for nodes in $node_counts; do
    for rep in $(seq "$repeats"); do
      topo="$work/topo_${nodes}_${gbit}_${rep}.json"
      cluster "$nodes" "$gbit" "$sy" topo --json > "$topo"
      for size in $sizes; do
        tokens=${size%x*} hidden=${size#*x}
        : > "$work/line.jsonl"
        cluster "$nodes" "$gbit" "$sy" bench --topology "$topo" --tokens "$tokens" --hidden "$hidden" \
          --ffn 128 --experts 8 --top-k 2 --iters 5 --warmup 1 --json "$work/line.jsonl" > /dev/null
        python3 - "$work/line.jsonl" "$topo" "$nodes" "$gbit" "$rep" "$yield_when_idle" >> "$out" <<'PY'
import json, sys
line, topo, nodes, gbit, rep, yield_when_idle = sys.argv[1:]
d = json.loads(open(line).read())
cost = json.load(open(topo))["links"]["other_node"]
d.update(nodes=int(nodes), link_gbit=float(gbit), repeat=int(rep), yield_when_idle=int(yield_when_idle),
         other_node_cost=cost)
print(json.dumps(d))
PY
      done
    done
    echo "rate $gbit Gbit/s, $nodes nodes: done ($(date -u +%H:%M:%S))" >&2
  done
done
echo "appended to $out" >&2
