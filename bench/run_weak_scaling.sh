#!/usr/bin/env bash
# Weak scaling on the emulated cluster: 1, 2 and 4 nodes with one rank each,
# the same tokens per rank, at several link rates. Appends bench JSON lines
# (with "nodes" and "link_gbit" added) to $OUT (default results/weak_scaling.jsonl).
# Needs root (network namespaces). Usage: bench/run_weak_scaling.sh [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${1:-1}"
out="${OUT:-results/weak_scaling.jsonl}"
mkdir -p "$(dirname "$out")"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for _ in $(seq "$repeats"); do
  for gbit in 1 4 16; do
    for nodes in 1 2 4; do
      : > "$tmp"
      launch/emulated-cluster --nodes "$nodes" --ranks-per-node 1 --link-gbit "$gbit" -- \
        build/launch/switchyard bench --hidden 1024 --ffn 2048 --experts 8 --top-k 2 --tokens 512 \
        --iters 5 --warmup 2 --json "$tmp" > /dev/null
      python3 -c "import json,sys; d=json.loads(open(sys.argv[1]).read()); d.update(nodes=int(sys.argv[2]), link_gbit=float(sys.argv[3])); print(json.dumps(d))" \
        "$tmp" "$nodes" "$gbit" >> "$out"
    done
  done
done
echo "appended to $out"
