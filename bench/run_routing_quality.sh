#!/usr/bin/env bash
# Quality against traffic: trains the small character LM (examples/train_small.json)
# on 4 ranks in 4 virtual nodes (one rank per node), same steps and seed, with
# unconstrained routing, node-limited routing (--max-nodes 1, 2, 3),
# cost-aware routing (--link-penalty at a few values of lambda) and the
# topology loss (--topology-loss), then tabulates the inter-node bytes over
# training against the final validation loss and draws the curve
# (bench/routing_quality.py). Unconstrained and one penalty run again with
# other seeds, for the spread. The unconstrained run's checkpoint is then
# evaluated frozen under each node limit and penalty (no training: `train
# --resume` at its last step), for the share of gate mass kept.
#
#   bench/run_routing_quality.sh                 # the sweep of docs/topology.md
#   STEPS=100 bench/run_routing_quality.sh       # a quick check
#
# Environment: SWITCHYARD (binary), OUT (logs, default results/routing_quality),
# STEPS (1200), MAX_NODES ("1 2 3"), PENALTIES ("0.01 0.03 0.1 0.15 0.3"),
# PLOT (docs/routing_quality.png; empty: no plot), FINAL_EVAL_TOKENS (65536),
# TOPOLOGY_LOSSES ("1"), SPREAD_SEEDS ("1 2"), SPREAD_PENALTY (0.1),
# SWEEP (1; 0 skips the node-limited and penalty training runs, e.g. to add
# the rest to an earlier sweep).
#
# Every step is logged (log_interval 1) so that the step lines' link_bytes sum
# to the whole run's traffic. The link penalty needs link costs: `topo --json`
# probes them once, and the file then gets a network's cost for other_node
# (5 us, 10 GB/s), since virtual nodes of one host talk through shared memory.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SWITCHYARD=${SWITCHYARD:-$ROOT/build/launch/switchyard}
OUT=${OUT:-$ROOT/results/routing_quality}
STEPS=${STEPS:-1200}
MAX_NODES=${MAX_NODES:-"1 2 3"}
PENALTIES=${PENALTIES:-"0.01 0.03 0.1 0.15 0.3"}
PLOT=${PLOT-$ROOT/docs/routing_quality.png}
FINAL_EVAL_TOKENS=${FINAL_EVAL_TOKENS:-65536}
TOPOLOGY_LOSSES=${TOPOLOGY_LOSSES-"1"}
SPREAD_SEEDS=${SPREAD_SEEDS-"1 2"}
SPREAD_PENALTY=${SPREAD_PENALTY:-0.1}
SWEEP=${SWEEP:-1}
PYTHON=${PYTHON:-$( [ -x /opt/switchyard/venv/bin/python ] && echo /opt/switchyard/venv/bin/python || echo python3 )}
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(mpirun -np 4 --oversubscribe)
mkdir -p "$OUT"

# config.json, and config_seed$S.json for each spread seed.
"$PYTHON" - "$ROOT/examples/train_small.json" "$OUT" "$STEPS" "$FINAL_EVAL_TOKENS" $SPREAD_SEEDS <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
out, steps = sys.argv[2], int(sys.argv[3])
cfg.update(steps=steps, log_interval=1, eval_interval=0, final_eval_tokens=int(sys.argv[4]))
cfg["schedule"]["warmup_steps"] = min(cfg["schedule"]["warmup_steps"], max(1, steps // 10))
json.dump(cfg, open(f"{out}/config.json", "w"), indent=1)
for seed in sys.argv[5:]:
    json.dump(dict(cfg, seed=int(seed)), open(f"{out}/config_seed{seed}.json", "w"), indent=1)
PY

# Link costs: probed, then other_node priced as a network link.
"${MPIRUN[@]}" "$SWITCHYARD" topo --json --ranks-per-node 1 > "$OUT/topology-probed.json"
"$PYTHON" - "$OUT/topology-probed.json" "$OUT/topology.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["links"]["other_node"] = {"latency_s": 5e-6, "bandwidth_bytes_per_s": 10e9, "probe": []}
json.dump(t, open(sys.argv[2], "w"), indent=1)
PY

run() {  # run NAME CONFIG ARGS...
  local name=$1 config=$2
  shift 2
  echo "+ ${MPIRUN[*]} $SWITCHYARD train --config $config --json $OUT/$name.jsonl $*"
  rm -f "$OUT/$name.jsonl"
  local t0=$SECONDS
  "${MPIRUN[@]}" "$SWITCHYARD" train --config "$config" --json "$OUT/$name.jsonl" "$@" > "$OUT/$name.log"
  echo "  $name: $((SECONDS - t0)) s"
}

rm -rf "$OUT/unconstrained.ckpt"
run unconstrained "$OUT/config.json" --ranks-per-node 1 --save "$OUT/unconstrained.ckpt"
if [ "$SWEEP" = 1 ]; then
  for m in $MAX_NODES; do run "max_nodes_$m" "$OUT/config.json" --ranks-per-node 1 --max-nodes "$m"; done
  for l in $PENALTIES; do run "link_penalty_$l" "$OUT/config.json" --topology "$OUT/topology.json" --link-penalty "$l"; done
fi
for c in $TOPOLOGY_LOSSES; do
  run "topology_loss_$c" "$OUT/config.json" --topology "$OUT/topology.json" --topology-loss "$c"
done
for seed in $SPREAD_SEEDS; do
  run "seed${seed}_unconstrained" "$OUT/config_seed$seed.json" --ranks-per-node 1
  run "seed${seed}_link_penalty_$SPREAD_PENALTY" "$OUT/config_seed$seed.json" --topology "$OUT/topology.json" \
    --link-penalty "$SPREAD_PENALTY"
done
# Frozen: the unconstrained checkpoint, evaluated without training.
frozen() { run "frozen_$1" "$OUT/config.json" --resume "$OUT/unconstrained.ckpt" "${@:2}"; }
frozen unconstrained --ranks-per-node 1
for m in $MAX_NODES; do frozen "max_nodes_$m" --ranks-per-node 1 --max-nodes "$m"; done
for l in $PENALTIES; do frozen "link_penalty_$l" --topology "$OUT/topology.json" --link-penalty "$l"; done

"$PYTHON" "$ROOT/bench/routing_quality.py" "$OUT" ${PLOT:+--plot "$PLOT"}
