#!/usr/bin/env python3
"""Summarises bench/run_routing_quality.sh: for each run, the inter-node bytes
over training (the sum of the step lines' link_bytes.other_node; every step is
logged) and the final validation loss, each relative to unconstrained routing.
Prints a Markdown table and, with --plot, draws validation loss against
inter-node bytes.

    python bench/routing_quality.py results/routing_quality [--plot docs/routing_quality.png]
"""
import argparse
import glob
import json
import os


def read(path):
    lines = [json.loads(l) for l in open(path)]
    steps = [l for l in lines if l["event"] == "step"]
    finals = [l for l in lines if l["event"] == "final"]
    if not finals:
        return None
    final = finals[-1]
    covered = sorted({s["step"] for s in steps})
    if covered != list(range(1, final["step"] + 1)):
        raise SystemExit(f"{path}: step lines cover {len(covered)} of {final['step']} steps; log every step")
    return {
        "other_node_bytes": sum(s["link_bytes"]["other_node"] for s in steps),
        "all_bytes": sum(sum(s["link_bytes"].values()) for s in steps),
        "other_node_copies": sum(s["link_copies"]["other_node"] for s in steps),
        "all_copies": sum(sum(s["link_copies"].values()) for s in steps),
        "val_loss": final["val_loss"],
        "val_tokens": final["val_tokens"],
        "steps": final["step"],
        "train_s": final["train_s"],
        "max_nodes": final["max_nodes"],
        "link_penalty": final["link_penalty"],
    }


def label(r):
    if r["max_nodes"]:
        return f"max nodes {r['max_nodes']}"
    if r["link_penalty"]:
        return f"link penalty {r['link_penalty']:g}"
    return "unconstrained"


def mib(b):
    return f"{b / 2**20:,.1f} MiB"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--plot")
    args = ap.parse_args()
    runs = {}
    for path in sorted(glob.glob(os.path.join(args.dir, "*.jsonl"))):
        r = read(path)
        if r:
            runs[os.path.basename(path)[: -len(".jsonl")]] = r
    if "unconstrained" not in runs:
        raise SystemExit(f"{args.dir}: no finished unconstrained run")
    base = runs["unconstrained"]
    order = ["unconstrained"] + sorted(n for n in runs if n.startswith("max_nodes")) + sorted(
        (n for n in runs if n.startswith("link_penalty")), key=lambda n: runs[n]["link_penalty"])
    print("| config | inter-node bytes | relative to unconstrained | copies across nodes | validation loss | relative change |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for n in order:
        r = runs[n]
        rel_b = r["other_node_bytes"] / base["other_node_bytes"]
        rel_l = r["val_loss"] / base["val_loss"] - 1
        print(f"| {label(r)} | {mib(r['other_node_bytes'])} | {rel_b:.1%} | {r['other_node_copies'] / r['all_copies']:.1%} "
              f"| {r['val_loss']:.4f} | {rel_l:+.2%} |")
    print(f"\n{base['steps']} steps; validation loss on {base['val_tokens']} held-out characters; "
          "training time " + ", ".join(f"{label(runs[n])} {runs[n]['train_s']:.0f} s" for n in order))

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        styles = {"unconstrained": ("k", "*"), "max_nodes": ("tab:blue", "o"), "link_penalty": ("tab:orange", "s")}
        for kind, name in (("unconstrained", "unconstrained"), ("max_nodes", "node-limited (--max-nodes M)"),
                           ("link_penalty", "cost-aware (--link-penalty λ)")):
            ns = [n for n in order if n.startswith(kind)]
            if not ns:
                continue
            xs = [runs[n]["other_node_bytes"] / base["other_node_bytes"] for n in ns]
            ys = [runs[n]["val_loss"] for n in ns]
            color, marker = styles[kind]
            ax.plot(xs, ys, marker=marker, color=color, ls="-" if len(ns) > 1 else "", ms=9 if kind == "unconstrained" else 7,
                    label=name)
            for n, x, y in zip(ns, xs, ys):
                r = runs[n]
                text = f"M={r['max_nodes']}" if r["max_nodes"] else (f"λ={r['link_penalty']:g}" if r["link_penalty"] else "")
                if r["max_nodes"]:  # at x = 1, stacked: labels to the right, spread
                    ax.annotate(text, (x, y), textcoords="offset points", fontsize=8, color=color,
                                xytext=(8, {2: 5, 3: -9}.get(r["max_nodes"], 0)), va="center")
                elif text:
                    near = x > 0.95  # next to the node-limited points: above, centred
                    ax.annotate(text, (x, y), textcoords="offset points", xytext=(0, 8) if near else ((0, -14) if x > 0.8 else (8, -14)),
                                fontsize=8, color=color, ha="center" if x > 0.8 else "left")
        lo, hi = ax.get_ylim()
        ax.axhspan(lo - 1, base["val_loss"] * 1.01, xmax=0.5 / 1.1, color="tab:green", alpha=0.08,
                   label="goal: ≤ 50% of the bytes, ≤ +1% loss")
        ax.axhline(base["val_loss"] * 1.01, color="gray", ls=":", lw=1)
        ax.axvline(0.5, color="gray", ls=":", lw=1)
        ax.set_ylim(lo, max(hi, base["val_loss"] * 1.012))
        ax.set_xlabel("inter-node bytes over training, relative to unconstrained")
        ax.set_ylabel("final validation loss (nats per character)")
        ax.set_title(f"Quality against traffic: 4 ranks on 4 virtual nodes, {base['steps']} steps, one seed", fontsize=10)
        ax.set_xlim(0, 1.1)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
