#!/usr/bin/env python3
"""Summarises bench/run_routing_quality.sh: for each training run, the
inter-node bytes over training (the sum of the step lines' link_bytes.other_node;
every step is logged) and the final validation loss, each relative to
unconstrained routing; the spread of that comparison over seeds; and, for the
frozen unconstrained checkpoint evaluated under each routing, the share of
gate mass kept and the validation loss. Prints Markdown tables and, with
--plot, draws validation loss against inter-node bytes (and, beside it,
against the gate mass kept by the frozen checkpoint).

    python bench/routing_quality.py results/routing_quality [--plot docs/routing_quality.png]
"""
import argparse
import glob
import json
import os
import statistics


def read(path):
    lines = [json.loads(l) for l in open(path)]
    steps = [l for l in lines if l["event"] == "step"]
    finals = [l for l in lines if l["event"] == "final"]
    if not finals:
        return None
    final = finals[-1]
    r = {
        "val_loss": final["val_loss"],
        "val_tokens": final["val_tokens"],
        "gate_mass_kept": final.get("gate_mass_kept"),
        "steps": final["step"],
        "train_s": final["train_s"],
        "max_nodes": final["max_nodes"],
        "link_penalty": final["link_penalty"],
        "topology_loss": final.get("topology_loss_coef", 0.0),
    }
    if os.path.basename(path).startswith("frozen_"):  # evaluated only: no steps
        copies = final.get("link_copies")
        r["eval_across"] = copies["other_node"] / sum(copies.values()) if copies else None
        return r
    covered = sorted({s["step"] for s in steps})
    if covered != list(range(1, final["step"] + 1)):
        raise SystemExit(f"{path}: step lines cover {len(covered)} of {final['step']} steps; log every step")
    r.update(other_node_bytes=sum(s["link_bytes"]["other_node"] for s in steps),
             all_bytes=sum(sum(s["link_bytes"].values()) for s in steps),
             other_node_copies=sum(s["link_copies"]["other_node"] for s in steps),
             all_copies=sum(sum(s["link_copies"].values()) for s in steps))
    return r


def label(r):
    if r["max_nodes"]:
        return f"max nodes {r['max_nodes']}"
    if r["link_penalty"]:
        return f"link penalty {r['link_penalty']:g}"
    if r["topology_loss"]:
        return f"topology loss {r['topology_loss']:g}"
    return "unconstrained"


def mib(b):
    return f"{b / 2**20:,.1f} MiB"


def seed_spread(runs):
    """Each seed's constrained run against the same seed's unconstrained one."""
    seeds = {"base": ("unconstrained", None)}
    for n in runs:
        if n.startswith("seed") and n.endswith("_unconstrained"):
            seeds[n.split("_")[0]] = (n, None)
    pairs = []  # (seed, penalty run, unconstrained run)
    for n in runs:
        if n.startswith("seed") and not n.endswith("_unconstrained"):
            pairs.append((n.split("_")[0], n, seeds.get(n.split("_")[0], (None,))[0]))
    if not pairs:
        return None
    rest = pairs[0][1].split("_", 1)[1]  # e.g. link_penalty_0.1
    if rest in runs:
        pairs.insert(0, ("base", rest, "unconstrained"))
    print("\n| seed | unconstrained validation loss | " + label(runs[pairs[0][1]]) +
          " validation loss | relative change | inter-node bytes relative |")
    print("| --- | ---: | ---: | ---: | ---: |")
    changes, byte_ratios, bases = [], [], []
    for seed, n, u in pairs:
        if u not in runs:
            continue
        c = runs[n]["val_loss"] / runs[u]["val_loss"] - 1
        b = runs[n]["other_node_bytes"] / runs[u]["other_node_bytes"]
        changes.append(c)
        byte_ratios.append(b)
        bases.append(runs[u]["val_loss"])
        name = "1234 (the sweep's)" if seed == "base" else seed[len("seed"):]
        print(f"| {name} | {runs[u]['val_loss']:.4f} | {runs[n]['val_loss']:.4f} | {c:+.2%} | {b:.1%} |")
    print(f"| mean (min–max) | {statistics.mean(bases):.4f} ({min(bases):.4f}–{max(bases):.4f}) | | "
          f"{statistics.mean(changes):+.2%} ({min(changes):+.2%} to {max(changes):+.2%}) | "
          f"{statistics.mean(byte_ratios):.1%} |")
    return changes


def frozen_table(runs):
    """The frozen unconstrained checkpoint under each routing."""
    names = [n for n in runs if n.startswith("frozen_")]
    if "frozen_unconstrained" not in names:
        return None
    base = runs["frozen_unconstrained"]
    names.sort(key=lambda n: (n != "frozen_unconstrained", runs[n]["link_penalty"] > 0, runs[n]["max_nodes"],
                              runs[n]["link_penalty"]))
    print("\n| frozen checkpoint, routed with | copies across nodes (evaluation) | gate mass kept | validation loss "
          "| relative change |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for n in names:
        r = runs[n]
        across = "" if r["eval_across"] is None else f"{r['eval_across']:.1%}"
        print(f"| {label(r)} | {across} | {r['gate_mass_kept']:.1%} | {r['val_loss']:.4f} | "
              f"{r['val_loss'] / base['val_loss'] - 1:+.2%} |")
    return names


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
        (n for n in runs if n.startswith("link_penalty")), key=lambda n: runs[n]["link_penalty"]) + sorted(
        (n for n in runs if n.startswith("topology_loss")), key=lambda n: runs[n]["topology_loss"])
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
    spread = seed_spread(runs)
    frozen = frozen_table(runs)
    if args.plot:
        plot(args.plot, runs, order, base, frozen)


def plot(path, runs, order, base, frozen):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, fx) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    styles = {"unconstrained": ("k", "*"), "max_nodes": ("tab:blue", "o"), "link_penalty": ("tab:orange", "s"),
              "topology_loss": ("tab:purple", "^")}
    names = {"unconstrained": "unconstrained", "max_nodes": "node-limited (--max-nodes M)",
             "link_penalty": "cost-aware (--link-penalty λ)", "topology_loss": "topology loss (--topology-loss C)"}
    for kind, name in names.items():
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
            if r["max_nodes"]:  # at x = 1, stacked: labels to the right, spread
                ax.annotate(f"M={r['max_nodes']}", (x, y), textcoords="offset points", fontsize=8, color=color,
                            xytext=(8, {2: 5, 3: -9}.get(r["max_nodes"], 0)), va="center")
            elif r["link_penalty"]:
                near = x > 0.95  # next to the node-limited points: above, centred
                ax.annotate(f"λ={r['link_penalty']:g}", (x, y), textcoords="offset points",
                            xytext=(0, 8) if near else ((0, -14) if x > 0.8 else (8, -14)),
                            fontsize=8, color=color, ha="center" if x > 0.8 else "left")
            elif r["topology_loss"]:
                ax.annotate(f"C={r['topology_loss']:g}", (x, y), textcoords="offset points", xytext=(-12, 10),
                            fontsize=8, color=color, ha="right")
    # Other seeds: each constrained run placed by its ratios to its own seed's unconstrained run.
    for n in runs:
        if n.startswith("seed") and not n.endswith("_unconstrained"):
            u = runs.get(n.split("_")[0] + "_unconstrained")
            if u:
                r = runs[n]
                ax.plot(r["other_node_bytes"] / u["other_node_bytes"], base["val_loss"] * r["val_loss"] / u["val_loss"],
                        marker="s", mfc="none", color="tab:orange", ls="", ms=7,
                        label="other seeds, relative to their own unconstrained run" if n == sorted(
                            m for m in runs if m.startswith("seed") and not m.endswith("_unconstrained"))[0] else None)
    lo, hi = ax.get_ylim()
    ax.axhspan(lo - 1, base["val_loss"] * 1.01, xmax=0.5 / 1.1, color="tab:green", alpha=0.08,
               label="goal: ≤ 50% of the bytes, ≤ +1% loss")
    ax.axhline(base["val_loss"] * 1.01, color="gray", ls=":", lw=1)
    ax.axvline(0.5, color="gray", ls=":", lw=1)
    ax.set_ylim(lo, max(hi, base["val_loss"] * 1.012))
    ax.set_xlabel("inter-node bytes over training, relative to unconstrained")
    ax.set_ylabel("final validation loss (nats per character)")
    ax.set_title(f"Trained with the routing: 4 ranks on 4 virtual nodes, {base['steps']} steps", fontsize=10)
    ax.set_xlim(0, 1.1)
    ax.legend(fontsize=7.5)
    ax.grid(alpha=0.3)

    if frozen:
        for kind in ("max_nodes", "link_penalty"):
            ns = [n for n in frozen if n.startswith("frozen_" + kind)]
            color, marker = styles[kind]
            xs = [runs[n]["gate_mass_kept"] for n in ns]
            ys = [runs[n]["val_loss"] for n in ns]
            fx.plot(xs, ys, marker=marker, color=color, ls="-", label=names[kind])
            for n, x, y in zip(ns, xs, ys):
                r = runs[n]
                if x > 0.99:  # crowded beside the unconstrained point: the table has them
                    continue
                text = f"M={r['max_nodes']}" if r["max_nodes"] else f"λ={r['link_penalty']:g}"
                fx.annotate(text, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8, color=color)
        u = runs["frozen_unconstrained"]
        fx.plot([u["gate_mass_kept"]], [u["val_loss"]], marker="*", color="k", ms=9, ls="", label="unconstrained")
        fx.set_xlabel("share of the top-k gate mass kept")
        fx.set_ylabel("validation loss (nats per character)")
        fx.set_title("The unconstrained checkpoint, frozen, routed with each\n(points above 0.99 unlabelled)",
                     fontsize=10)
        fx.legend(fontsize=7.5)
        fx.grid(alpha=0.3)
    else:
        fx.set_visible(False)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
