#!/usr/bin/env python3
"""Trains the example MoE model, its dense twin and the MoE without the
load-balancing loss, then plots loss curves and expert load balance.

    python bench/plot_training.py [--switchyard build/launch/switchyard] [--out docs/img/training.png]

Needs matplotlib. Runs take about 30 s each on 2 ranks of a 2-core machine.
The JSON logs land beside the plot (training-*.jsonl) so the figure can be
redrawn with --no-run.
"""
import argparse
import json
import os
import subprocess
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(switchyard, config, ranks, log, overrides=None):
    cfg = json.load(open(os.path.join(ROOT, config)))
    for key, value in (overrides or {}).items():
        cfg[key] = value
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = ["mpirun", "-np", str(ranks), "--oversubscribe", switchyard, "train", "--config", f.name, "--json", log]
    print("+", " ".join(cmd), flush=True)
    if os.path.exists(log):
        os.remove(log)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    os.remove(f.name)


def read(log):
    lines = [json.loads(l) for l in open(log)]
    steps = [l for l in lines if l["event"] == "step"]
    evals = [l for l in lines if l["event"] == "eval"]
    final = [l for l in lines if l["event"] == "final"][-1]
    return steps, evals, final


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--switchyard", default=os.path.join(ROOT, "build/launch/switchyard"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/img/training.png"))
    ap.add_argument("--no-run", action="store_true", help="redraw from the logs beside --out")
    args = ap.parse_args()
    d = os.path.dirname(args.out)
    os.makedirs(d, exist_ok=True)
    runs = {
        "moe": ("examples/train_small.json", 2, None),
        "dense": ("examples/train_dense.json", 1, None),
        "moe_no_balance": ("examples/train_small.json", 2, {"aux_loss_coef": 0.0}),
    }
    logs = {name: os.path.join(d, f"training-{name}.jsonl") for name in runs}
    if not args.no_run:
        for name, (config, ranks, overrides) in runs.items():
            train(args.switchyard, config, ranks, logs[name], overrides)
    data = {name: read(log) for name, log in logs.items()}

    fig, (ax_loss, ax_load) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, label in (("moe", "MoE (8 experts, top-2)"), ("dense", "dense, same active parameters")):
        steps, evals, final = data[name]
        line, = ax_loss.plot([s["step"] for s in steps], [s["loss_window"] for s in steps], label=f"{label}: train")
        ax_loss.plot([e["step"] for e in evals], [e["val_loss"] for e in evals], "o--", color=line.get_color(),
                     label=f"{label}: held-out (final {final['val_loss']:.3f})")
    final = data["moe"][2]
    ax_loss.axhline(final["bigram_val_loss"], color="gray", ls=":", label=f"bigram baseline {final['bigram_val_loss']:.3f}")
    ax_loss.axhline(final["unigram_val_loss"], color="silver", ls=":", label=f"unigram baseline {final['unigram_val_loss']:.3f}")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (nats per character)")
    ax_loss.set_title("Character LM on the fortunes corpus")
    ax_loss.legend(fontsize=8)
    for name, label in (("moe", "with load-balancing loss (0.01)"), ("moe_no_balance", "without")):
        steps = data[name][0]
        ax_load.plot([s["step"] for s in steps], [max(s["load_max_over_mean"]) for s in steps], label=label)
    ax_load.axhline(1.0, color="gray", ls=":")
    ax_load.set_xlabel("step")
    ax_load.set_ylabel("max / mean expert load (worst layer, per step)")
    ax_load.set_title("Expert load balance")
    ax_load.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print("wrote", args.out)
    for name in runs:
        f = data[name][2]
        print(f"{name}: val_loss {f['val_loss']:.4f} bigram {f['bigram_val_loss']:.4f} wall {f['wall_s']:.1f}s")


if __name__ == "__main__":
    main()
