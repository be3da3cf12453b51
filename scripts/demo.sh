#!/usr/bin/env bash
# Installs, builds and runs the main job: one MoE layer of a (random, real-format)
# Mixtral-style checkpoint across 4 MPI ranks on this host.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh switchyard make_random_moe   # only what the demo runs
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
demo="${TMPDIR:-/tmp}/switchyard-demo"
rm -rf "$demo"
build/examples/make_random_moe --out "$demo" --arch mixtral --hidden 256 --ffn 512 --experts 8 --top-k 2 \
  --layers 2 --shards 2 --tokens 512
build/launch/switchyard inspect --model "$demo"
mpirun -np 4 --oversubscribe build/launch/switchyard forward --model "$demo" --layer 1 \
  --input "$demo/x.npy" --output "$demo/y.npy"
cat <<EOT

Demo done: $demo/y.npy holds the layer's output for all 512 tokens.
Next (README.md): "Using it" (inspect, forward, gradients), training ("train", docs/training.md),
"bench" beside the machine's limits (docs/benchmarks.md), the task-graph flags (docs/task-graph.md),
the emulated cluster (docs/emulated-cluster.md), and scripts/test.sh for the whole suite.
EOT
