#!/usr/bin/env bash
# Expert placement against the contiguous blocks and the EPLB-style placer,
# measured. `switchyard bench --routing skewed` writes its routing statistics;
# `switchyard placement` plans from them (the model's placement and the
# EPLB-style one, with REPLICAS extra copies); then bench runs REPEATS times
# with each placement, and every JSON line gets "placement", "repeat", "setup"
# and the placement file's modelled figures added, appended to $OUT (default
# results/placement.jsonl); bench/placement.py prints the table.
# Two setups:
#   timed: the emulated cluster, 2 nodes x 1 rank (one rank per core) at
#          LINK_GBIT Gbit/s; needs root (network namespaces);
#   bytes: 4 virtual nodes x 2 ranks on this host (8 ranks share the cores:
#          byte counts only, which do not depend on timing).
#   bench/run_placement.sh [REPEATS]
# Environment: SETUPS (default "timed bytes"), TIMED_REPLICAS (default 2), BYTES_REPLICAS (default 12),
# LINK_GBIT (default 2),
# SWITCHYARD (default build/launch/switchyard), OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${1:-5}"
out="${OUT:-results/placement.jsonl}"
sy="${SWITCHYARD:-build/launch/switchyard}"
gbit="${LINK_GBIT:-2}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

shape=(--experts 16 --top-k 2 --hidden 512 --ffn 1024 --routing skewed --pass fwd_bwd)

annotate() {  # annotate LINE_FILE SETUP PLACEMENT REPEAT PLAN_FILE
  python3 - "$@" >> "$out" <<'PY'
import json, sys
line, setup, placement, rep, plan = sys.argv[1:]
d = json.loads(open(line).read())
d.update(setup=setup, placement=placement, repeat=int(rep))
if plan:
    d["model"] = json.load(open(plan))["model"]["blocks"][0]
print(json.dumps(d))
PY
}

run_setup() {  # run_setup SETUP REPLICAS TOKENS REPEATS LAUNCH... (bench's extra flags in $flags)
  local setup=$1 replicas=$2 tokens=$3 reps=$4
  shift 4
  "$@" "$sy" bench "${shape[@]}" $flags --tokens "$tokens" --iters 1 --warmup 0 \
    --routing-stats "$work/$setup.stats.json" > /dev/null
  for method in model eplb; do
    "$sy" placement --stats "$work/$setup.stats.json" --replicas "$replicas" --hidden 512 --ffn 1024 \
      --method "$method" --out "$work/$setup.$method.json" > /dev/null
  done
  for rep in $(seq "$reps"); do
    for placement in contiguous model eplb; do
      local plan="" extra=()
      if [[ $placement != contiguous ]]; then
        plan="$work/$setup.$placement.json"
        extra=(--placement "$plan")
      fi
      : > "$work/line.jsonl"
      "$@" "$sy" bench "${shape[@]}" $flags --tokens "$tokens" --iters 10 --warmup 2 "${extra[@]}" \
        --json "$work/line.jsonl" > /dev/null
      annotate "$work/line.jsonl" "$setup" "$placement" "$rep" "$plan"
    done
    echo "$setup: repeat $rep done ($(date -u +%H:%M:%S))" >&2
  done
}

setups="${SETUPS:-timed bytes}"
if [[ $setups == *timed* ]]; then
  flags="" run_setup timed "${TIMED_REPLICAS:-2}" 2048 "$repeats" \
    launch/emulated-cluster --nodes 2 --ranks-per-node 1 --link-gbit "$gbit" -- env OMPI_MCA_mpi_yield_when_idle=1
fi
if [[ $setups == *bytes* ]]; then
  flags="--ranks-per-node 2" run_setup bytes "${BYTES_REPLICAS:-12}" 512 1 \
    mpirun --oversubscribe -np 8 env OMPI_MCA_mpi_yield_when_idle=1
fi
echo "appended to $out" >&2
