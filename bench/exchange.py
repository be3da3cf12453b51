#!/usr/bin/env python3
"""Flat against hierarchical exchange: rows per link class and times.

    python bench/exchange.py expect --model DIR --ranks R --ranks-per-node M --top-k K [--layer L]
    python bench/exchange.py tables results/exchange_bytes.jsonl results/exchange_times.jsonl [--plot PNG]

`expect` derives, from a Mixtral-style model of `make_random_moe` alone (its
router weights and x.npy, not from Switchyard), the rows per link class
(self / same_node / other_node) of one dispatch on R ranks in virtual nodes of
M consecutive ranks, and prints them as one JSON object:

* `slots`: one row per kept (token, expert) slot: what a per-slot exchange
  sends;
* `flat`: one row per token and destination rank;
* `hierarchical`: one row per token and destination node, to that node's
  forwarder (the rank whose index in the node is the sender's index in its
  own node; the sender itself in its own node), then one row per rank of the
  node that holds any of the token's experts, from the forwarder;
* `node_bound`: across nodes, one row per token and other node that holds
  any of its experts: no exchange that sends whole rows sends fewer.

The routing is Mixtral's: softmax of x · Wgᵀ, top k (ties to the lower
expert); experts and tokens in contiguous blocks over ranks, the first
`n mod R` blocks one larger.

`tables` prints, from bench/run_exchange.sh's JSON lines, the rows per link
class beside these expectations, and the times of flat, hierarchical and
auto (median over repeats with min–max), with `--plot` a figure of the
sweep.
"""
import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

CLASSES = ("self", "same_node", "other_node")


def owners(n, ranks):
    import numpy as np

    base, extra = divmod(n, ranks)
    return np.repeat(np.arange(ranks), [base + (r < extra) for r in range(ranks)])


def routed_experts(model, layer, top_k):
    import numpy as np
    from safetensors.numpy import load_file

    name = f"model.layers.{layer}.block_sparse_moe.gate.weight"
    gate = next(t[name] for f in sorted(Path(model).glob("*.safetensors")) if name in (t := load_file(f)))
    x = np.load(Path(model) / "x.npy").astype(np.float64)
    logits = x @ gate.astype(np.float64).T
    scores = np.exp(logits - logits.max(axis=1, keepdims=True))
    scores /= scores.sum(axis=1, keepdims=True)
    return np.argsort(-scores, axis=1, kind="stable")[:, :top_k], gate.shape[0]


def expect(model, ranks, ranks_per_node, top_k, layer=1):
    top, num_experts = routed_experts(model, layer, top_k)
    token_rank = owners(len(top), ranks)
    expert_rank = owners(num_experts, ranks)
    node = lambda r: int(r) // ranks_per_node  # noqa: E731

    def link(a, b):
        return "self" if a == b else "same_node" if node(a) == node(b) else "other_node"

    counts = {k: dict.fromkeys(CLASSES, 0) for k in ("slots", "flat", "hierarchical", "node_bound")}
    for t, experts in enumerate(top):
        s = int(token_rank[t])
        dests = sorted({int(expert_rank[e]) for e in experts})
        for e in experts:
            counts["slots"][link(s, expert_rank[e])] += 1
        for r in dests:
            counts["flat"][link(s, r)] += 1
        index = s % ranks_per_node
        for n in sorted({node(r) for r in dests}):
            members = [r for r in range(n * ranks_per_node, min((n + 1) * ranks_per_node, ranks))]
            forwarder = s if n == node(s) else members[index % len(members)]
            counts["hierarchical"][link(s, forwarder)] += 1
            for r in dests:
                if node(r) == n:
                    counts["hierarchical"][link(forwarder, r)] += 1
            if n != node(s):
                counts["node_bound"]["other_node"] += 1
    return counts


def load(paths):
    lines = []
    for path in paths:
        lines += [json.loads(s) for s in open(path) if s.strip()]
    return lines


def bytes_tables(lines):
    rows = [d for d in lines if d.get("kind") == "bytes"]
    if not rows:
        return
    print("Rows per link class, one dispatch (the combine sends as many back): "
          "per-slot, flat and hierarchical as the code counts them (`link_slots`, `link_copies`), "
          "with what the router weights give beside them.\n")
    print("| source | ranks | ranks/node | experts | top-k | tokens | class | per-slot | flat | hierarchical "
          "| per-node bound | expected per-slot / flat / hierarchical | hier vs bound | hier vs per-slot |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    groups = defaultdict(dict)
    for d in rows:
        groups[(d["source"], d["ranks"], d["ranks_per_node"], d["experts"], d["top_k"], d["tokens"])][d["exchange"]] = d
    for key in sorted(groups, key=lambda k: (k[0], k[4])):
        g = groups[key]
        if not {"flat", "hierarchical"} <= g.keys():
            continue
        flat, hier = g["flat"], g["hierarchical"]
        want = flat.get("expected")
        for c in CLASSES:
            slots = flat["link_slots"][c]
            bound = want["node_bound"][c] if want and c == "other_node" else None
            exp = (f"{want['slots'][c]} / {want['flat'][c]} / {want['hierarchical'][c]}" if want else "")
            vs_bound = f"{hier['link_copies'][c] / bound - 1:+.2%}" if bound else ""
            vs_slot = f"{hier['link_copies'][c] / slots - 1:+.1%}" if slots else ""
            print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | {key[5]} | {c} | {slots} "
                  f"| {flat['link_copies'][c]} | {hier['link_copies'][c]} | {bound if bound is not None else ''} "
                  f"| {exp} | {vs_bound} | {vs_slot} |")
    print()


def median_span(values):
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def time_groups(lines):
    groups = defaultdict(lambda: defaultdict(list))
    for d in lines:
        if d.get("kind") != "times":
            continue
        key = (d["case"], d["nodes"], d["ranks_per_node"], d["link_gbit"], d["tokens_per_rank"], d["hidden"],
               d["experts"], d["top_k"])
        groups[key][d["mode"]].append(d)
    return groups


def times_tables(lines):
    groups = time_groups(lines)
    if not groups:
        return {}
    print("Exchange per configuration: median over repeats (min–max) of `exchange_in_step_ms` (the step's "
          "dispatch and combine tasks, p50 over iterations of the slowest rank); `auto` names what it chose; "
          "`auto / best`: auto's own median over the better median of flat and hierarchical; `choice / best`: "
          "the median of the kind auto chose (measured in its own runs) over the better one, which is 1.00 when "
          "auto chose the faster kind.\n")
    print("| case | nodes x ranks | Gbit/s | tokens/rank | hidden | KiB/rank | repeats | flat ms "
          "| hierarchical ms | auto ms (chose) | auto / best | choice / best | hier / flat |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    sweep, rows = {}, []
    for key in sorted(groups, key=lambda k: (k[0] != "small", k[1], k[4] * k[5])):
        case, nodes, rpn, gbit, tokens, hidden, experts, top_k = key
        g = groups[key]
        if not all(m in g for m in ("flat", "hierarchical", "auto")):
            continue
        exch = {m: [d["exchange_in_step_ms"] for d in g[m]] for m in g}
        med = {m: statistics.median(exch[m]) for m in exch}
        chose = sorted({d["exchange"] for d in g["auto"]})
        best = min(med["flat"], med["hierarchical"])
        ratio = med["auto"] / best
        picks = [d["exchange"] for d in g["auto"]]
        regret = med[max(set(picks), key=picks.count)] / best
        kib = tokens * hidden * 4 / 1024
        spans = {m: (min(exch[m]), max(exch[m])) for m in exch}
        sweep[key] = (kib, med, spans)
        rows.append((key, g, kib))
        shared = f" ({nodes * rpn} ranks share 2 cores)" if nodes * rpn > 2 else ""
        print(f"| {case} | {nodes} x {rpn}{shared} | {gbit:g} | {tokens} | {hidden} | {kib:g} | {len(g['flat'])} "
              f"| {median_span(exch['flat'])} | {median_span(exch['hierarchical'])} "
              f"| {median_span(exch['auto'])} ({'/'.join(c[:4] for c in chose)}) | {ratio:.2f} "
              f"| {regret:.2f} | {med['hierarchical'] / med['flat']:.2f} |")
    print()
    print("Step and exchange alone: median over repeats (min–max) of `step_ms_p50` and of `exchange_ms` (the "
          "forward's dispatch and combine timed alone, outside the step).\n")
    print("| case | nodes x ranks | tokens/rank | hidden | flat step ms | hier step ms | auto step ms "
          "| flat alone ms | hier alone ms |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key, g, kib in rows:
        case, nodes, rpn, gbit, tokens, hidden = key[:6]
        step = {m: [d["step_ms_p50"] for d in g[m]] for m in g}
        alone = {m: [d["exchange_ms"] for d in g[m]] for m in g}
        shared = f" ({nodes * rpn} ranks share 2 cores)" if nodes * rpn > 2 else ""
        print(f"| {case} | {nodes} x {rpn}{shared} | {tokens} | {hidden} | {median_span(step['flat'])} "
              f"| {median_span(step['hierarchical'])} | {median_span(step['auto'])} "
              f"| {median_span(alone['flat'])} | {median_span(alone['hierarchical'])} |")
    print()
    return sweep


def plot(sweep, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    configs = sorted({(k[1], k[2], k[3]) for k in sweep if k[0] == "sweep"})
    if not configs:
        return
    fig, axes = plt.subplots(1, len(configs), figsize=(6 * len(configs), 4.2), squeeze=False)
    for ax, (nodes, rpn, gbit) in zip(axes[0], configs):
        keys = sorted((k for k in sweep if k[0] == "sweep" and (k[1], k[2], k[3]) == (nodes, rpn, gbit)),
                      key=lambda k: sweep[k][0])
        kib = [sweep[k][0] for k in keys]
        for mode, style, shift in (("flat", "o-", 0.94), ("hierarchical", "s-", 1.0), ("auto", "x--", 1.06)):
            med = [sweep[k][1][mode] for k in keys]
            lo = [m - sweep[k][2][mode][0] for m, k in zip(med, keys)]
            hi = [sweep[k][2][mode][1] - m for m, k in zip(med, keys)]
            ax.errorbar([x * shift for x in kib], med, yerr=[lo, hi], fmt=style, capsize=3,
                        label=f"{mode} (median, min–max)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(kib, [f"{x:g} KiB" if x < 1024 else f"{x / 1024:g} MiB" for x in kib], fontsize=8)
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("x per rank (tokens x hidden x 4 B)")
        ax.set_ylabel("exchange in step, ms (median)")
        ax.set_title(f"{nodes} nodes x {rpn} ranks, {gbit:g} Gbit/s links\n"
                     f"({nodes * rpn} ranks share 2 cores)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    e = sub.add_parser("expect")
    e.add_argument("--model", required=True)
    e.add_argument("--ranks", type=int, required=True)
    e.add_argument("--ranks-per-node", type=int, required=True)
    e.add_argument("--top-k", type=int, required=True)
    e.add_argument("--layer", type=int, default=1)
    t = sub.add_parser("tables")
    t.add_argument("files", nargs="+")
    t.add_argument("--plot")
    args = ap.parse_args()
    if args.command == "expect":
        json.dump(expect(args.model, args.ranks, args.ranks_per_node, args.top_k, args.layer), sys.stdout)
        print()
        return
    lines = load(args.files)
    bytes_tables(lines)
    sweep = times_tables(lines)
    if args.plot and sweep:
        plot(sweep, args.plot)


if __name__ == "__main__":
    main()
