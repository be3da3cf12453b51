#!/usr/bin/env python3
"""Trains the example MoE model with fixed top-k routers, noisy top-k gating
and top-p routing, then plots held-out loss and experts per token side by
side, each against the bigram baseline.

    python bench/plot_routers.py [--switchyard build/launch/switchyard] [--out docs/img/routers.png]

Needs matplotlib. Each run takes about 30-60 s on 2 ranks of a 2-core
machine. The JSON logs land beside the plot (routers-*.jsonl) so the figure
can be redrawn with --no-run.
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from plot_training import ROOT, read, train  # noqa: E402

CONFIG = "examples/train_small.json"


def runs():
    model = json.load(open(os.path.join(ROOT, CONFIG)))["model"]

    def with_model(**fields):
        return {"model": dict(model, **fields), "eval_interval": 250}

    # NOTE: Mixtral renormalises a top-1 weight to 1, so its router learns
    # only from the balancing loss; Qwen3-MoE's block with norm_topk_prob off
    # weighs by the probability, as Switch does.
    return {
        "top1": ("fixed top-1 (weight 1)", with_model(top_k=1)),
        "top1_prob": ("fixed top-1 (weight = probability)", with_model(top_k=1, arch="qwen3_moe", norm_topk_prob=False)),
        "top2": ("fixed top-2", with_model(top_k=2)),
        "top_p": ("top-p 0.5, at most 4, entropy loss 0.01",
                  dict(with_model(top_k=4, router="top-p", top_p=0.5), entropy_loss_coef=0.01)),
        "top_p_plain": ("top-p 0.5, at most 4, no entropy loss", with_model(top_k=4, router="top-p", top_p=0.5)),
        # Shazeer et al.'s losses in place of the Switch balancing loss, w = 0.1 each as in the paper.
        "noisy": ("noisy top-2, importance and load losses 0.1",
                  dict(with_model(top_k=2, router="noisy-top-k"), aux_loss_coef=0.0, importance_loss_coef=0.1,
                       load_loss_coef=0.1)),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--switchyard", default=os.path.join(ROOT, "build/launch/switchyard"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/img/routers.png"))
    ap.add_argument("--no-run", action="store_true", help="redraw from the logs beside --out")
    args = ap.parse_args()
    d = os.path.dirname(args.out)
    os.makedirs(d, exist_ok=True)
    logs = {name: os.path.join(d, f"routers-{name}.jsonl") for name in runs()}
    if not args.no_run:
        for name, (_, overrides) in runs().items():
            train(args.switchyard, CONFIG, 2, logs[name], overrides)
    data = {name: read(log) for name, log in logs.items()}

    fig, (ax_loss, ax_k) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, (label, _) in runs().items():
        steps, evals, final = data[name]
        evals = evals + [final]  # the final evaluation, on all held-out text
        line, = ax_loss.plot([e["step"] for e in evals], [e["val_loss"] for e in evals], "o-",
                             label=f"{label}: final {final['val_loss']:.3f}")
        fixed = name.startswith("top1") or name in ("top2", "noisy")  # equal lines: dashes keep both visible
        ax_k.plot([s["step"] for s in steps], [s["experts_per_token"] for s in steps], color=line.get_color(),
                  ls=(0, (4, 4)) if name in ("top1_prob", "noisy") else "-", lw=1.5 if fixed else 2,
                  label=f"{label}: held-out {final['experts_per_token']:.2f}")
    final = data["top2"][2]
    ax_loss.axhline(final["bigram_val_loss"], color="gray", ls=":", label=f"bigram baseline {final['bigram_val_loss']:.3f}")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("held-out loss (nats per character)")
    ax_loss.set_title("Character LM, 8 experts: held-out loss by router")
    ax_loss.legend(fontsize=8, loc="upper right")
    ax_k.set_xlabel("step")
    ax_k.set_ylabel("experts per token (mean over tokens and blocks)")
    ax_k.set_title("Expert compute per token")
    ax_k.set_ylim(0, 4.2)
    ax_k.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print("wrote", args.out)
    for name, (label, _) in runs().items():
        f = data[name][2]
        print(f"{label}: val_loss {f['val_loss']:.4f} (bigram {f['bigram_val_loss']:.4f}) experts/token "
              f"{f['experts_per_token']:.3f} histogram {f['experts_per_token_histogram']} "
              f"{f['tokens_per_s']:.0f} tokens/s wall {f['wall_s']:.1f}s")


if __name__ == "__main__":
    main()
