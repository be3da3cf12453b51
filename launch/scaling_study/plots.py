"""The study's PNG plots (matplotlib, Agg). Every plot shows medians over the repeats with min–max bars."""
import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .results import spread  # noqa: E402

PHASE_ORDER = ["route", "plan", "permute", "dispatch", "experts", "combine", "unpermute", "route_grad",
               "permute_grad", "dispatch_grad", "experts_grad", "expert_weights_grad", "combine_grad",
               "unpermute_grad"]
LINK_COLORS = {"self": "#4c72b0", "same_node": "#55a868", "other_node": "#c44e52"}


def _save(fig, path):
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def _series_label(point, mode, tokens):
    unit = "tokens/rank" if mode == "weak" else "tokens in all"
    opts = dict(point.options)
    extra = "".join(f", {k.replace('_', ' ')} {v}" for k, v in opts.items()
                    if k in ("max_nodes", "link_penalty") and float(v) != 0)
    return (f"{tokens} {unit}, {point.ranks_per_node}/node, {point.link_gbit:g} Gbit/s, {opts['exchange']}, "
            f"overlap {opts['overlap']}{extra}")


def series(points, by_point, mode):
    """{label: [(point, runs), ...] by nodes} of one scaling mode: what changes in a series is the node count."""
    out = {}
    for p in points:
        if mode not in p.scaling or p.index not in by_point:
            continue
        tokens = p.sweep_tokens[p.scaling.index(mode)]
        out.setdefault(_series_label(p, mode, tokens), []).append((p, by_point[p.index]))
    return {k: sorted(v, key=lambda pr: pr[0].nodes) for k, v in out.items()}


def _node_axis(ax, nodes):
    ax.set_xscale("log", base=2)
    ax.set_xticks(nodes)
    ax.set_xticklabels([str(n) for n in nodes])
    ax.set_xlabel("nodes")
    ax.grid(True, alpha=0.3)


def scaling_plot(path, points, by_point, mode):
    """tokens/s and parallel efficiency against nodes, one line per series."""
    groups = series(points, by_point, mode)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    nodes = sorted({p.nodes for g in groups.values() for p, _ in g}) or [1]
    for label, g in groups.items():
        x = [p.nodes for p, _ in g]
        tps = [spread(runs, "tokens_per_s") for _, runs in g]
        med = [t[0] for t in tps]
        line = left.errorbar(x, med, yerr=_bars(tps), marker="o", capsize=3, label=label)
        p0 = g[0][0]
        base = med[0] / p0.ranks
        eff = [(t[0] / p.ranks) / base for (p, _), t in zip(g, tps)]
        eff_bars = [[(t[0] - t[1]) / p.ranks / base for (p, _), t in zip(g, tps)],
                    [(t[2] - t[0]) / p.ranks / base for (p, _), t in zip(g, tps)]]
        right.errorbar(x, eff, yerr=eff_bars, marker="o", capsize=3, color=line[0].get_color(), label=label)
    title = "Weak scaling (fixed tokens per rank)" if mode == "weak" else "Strong scaling (fixed total tokens)"
    left.set_title(title)
    left.set_ylabel("throughput (tokens/s, all ranks)")
    right.set_title("Parallel efficiency (per-rank throughput vs. fewest nodes)")
    right.set_ylabel("parallel efficiency (1 = ideal)")
    right.axhline(1.0, color="grey", lw=0.8, ls=":")
    for ax in (left, right):
        _node_axis(ax, nodes)
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    _legend_below(fig, left)
    _save(fig, path)


def _bars(triples):
    return [[t[0] - t[1] for t in triples], [t[2] - t[0] for t in triples]]


def _legend_below(fig, ax):
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8, frameon=False)


def _short(p):
    o = dict(p.options)
    return (f"{p.nodes}x{p.ranks_per_node}\n{p.link_gbit:g}G {o['exchange'][:4]}\nov {o['overlap']}\n"
            f"{p.tokens_per_rank}t")


def phases_plot(path, points, by_point):
    """Each point's step split into its phases (medians), stacked."""
    shown = [p for p in points if p.index in by_point]
    names = []
    for p in shown:
        for r in by_point[p.index]:
            names += [k for k in r["_json"]["phase_ms"] if k not in names]
    names.sort(key=lambda n: PHASE_ORDER.index(n) if n in PHASE_ORDER else len(PHASE_ORDER))
    fig, ax = plt.subplots(figsize=(max(7, 0.75 * len(shown) + 2), 5))
    bottom = [0.0] * len(shown)
    cmap = plt.get_cmap("tab20")
    for i, name in enumerate(names):
        h = [statistics.median(r["_json"]["phase_ms"].get(name, 0.0) for r in by_point[p.index]) for p in shown]
        ax.bar(range(len(shown)), h, bottom=bottom, color=cmap(i % 20), label=name)
        bottom = [b + v for b, v in zip(bottom, h)]
    steps = [spread(by_point[p.index], "step_ms_p50") for p in shown]
    ax.errorbar(range(len(shown)), [s[0] for s in steps], yerr=_bars(steps), fmt="k_", capsize=3, ms=14,
                label="step (p50, min–max)")
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels([_short(p) for p in shown], fontsize=7)
    ax.set_xlabel("point (nodes x ranks/node, link, exchange, overlap, tokens/rank)")
    ax.set_ylabel("time per step (ms, p50 of the slowest rank per phase)")
    ax.set_title("Time per phase")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)


def link_bytes_plot(path, points, by_point):
    """Bytes one step moves per link class (all ranks, dispatch and combine), stacked per point."""
    shown = [p for p in points if p.index in by_point]
    fig, ax = plt.subplots(figsize=(max(7, 0.75 * len(shown) + 2), 4.8))
    bottom = [0.0] * len(shown)
    for c, color in LINK_COLORS.items():
        h = [statistics.median(float(r[f"bytes_{c}"] or 0) for r in by_point[p.index]) / 2**20 for p in shown]
        ax.bar(range(len(shown)), h, bottom=bottom, color=color, label=c.replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, h)]
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels([_short(p) for p in shown], fontsize=7)
    ax.set_xlabel("point (nodes x ranks/node, link, exchange, overlap, tokens/rank)")
    ax.set_ylabel("bytes per step (MiB, all ranks)")
    ax.set_title("Bytes per link class")
    ax.legend(title="link class")
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)


def overlap_plot(path, points, by_point):
    """Overlap efficiency of the points run with overlap on across nodes (on one node the exchange is a
    copy, and the efficiency's denominator, min(t_comm, t_compute), is noise), and their step beside
    the same point with overlap off."""
    on = [p for p in points if p.index in by_point and p.option("overlap") == "on" and p.nodes > 1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(10, 1.2 * len(on) + 4), 4.8))
    if not on:
        for ax in (left, right):
            ax.text(0.5, 0.5, "no point ran with overlap on across nodes", ha="center", va="center",
                    transform=ax.transAxes)
    off = {_twin_key(p): p for p in points if p.index in by_point and p.option("overlap") == "off"}
    eff = [spread(by_point[p.index], "overlap_efficiency") or (0.0, 0.0, 0.0) for p in on]
    left.bar(range(len(on)), [e[0] for e in eff], yerr=_bars(eff), capsize=3, color="#8172b2")
    left.set_ylabel("overlap efficiency ((t_comm + t_compute − step) / min)")
    left.set_title("Overlap efficiency (1: exchange fully hidden, 0: none)")
    left.axhline(0.0, color="grey", lw=0.8)
    width = 0.4
    for shift, label, pick in ((-width / 2, "overlap off", lambda p: off.get(_twin_key(p))),
                               (width / 2, "overlap on", lambda p: p)):
        steps = [spread(by_point[pick(p).index], "step_ms_p50") if pick(p) else (0.0, 0.0, 0.0) for p in on]
        right.bar([i + shift for i in range(len(on))], [s[0] for s in steps], width, yerr=_bars(steps), capsize=3,
                  label=label)
    right.set_ylabel("step time (ms, p50)")
    right.set_title("Step with and without overlap")
    if on:
        right.legend()
    for ax in (left, right):
        ax.set_xticks(range(len(on)))
        ax.set_xticklabels([_short(p) for p in on], fontsize=7)
        ax.set_xlabel("point (nodes x ranks/node, link, exchange, overlap, tokens/rank)")
        ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)


def _twin_key(p):
    return (p.nodes, p.ranks_per_node, p.link_gbit, p.tokens_per_rank,
            tuple(kv for kv in p.options if kv[0] != "overlap"))


def projection_plot(path, points, by_point, rows):
    """Measured tokens/s, the model at the measured points, and the model past them, per scaling mode."""
    modes = [m for m in ("weak", "strong") if any(r["scaling"] == m for r in rows if r["purpose"] == "projection")]
    fig, axes = plt.subplots(1, max(1, len(modes)), figsize=(7.5 * max(1, len(modes)), 5), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        _projection_axes(ax, mode, points, by_point, rows)
    _save(fig, path)


def _projection_axes(ax, mode, points, by_point, rows):
    lines = {}
    for r in rows:
        if r["purpose"] == "projection" and r["scaling"] == mode:
            lines.setdefault((r["ranks_per_node"], r["exchange"], r["series_tokens"], r["link"]), []).append(r)
    nodes = set()
    for (rpn, exchange, tokens, link), rs in lines.items():
        rs.sort(key=lambda r: r["nodes"])
        nodes |= {r["nodes"] for r in rs}
        unit = "tokens/rank" if mode == "weak" else "tokens"
        line = ax.plot([r["nodes"] for r in rs], [r["tokens_per_s"] for r in rs], ls="--", marker=".",
                       label=f"projected: {tokens} {unit}, {rpn}/node, {exchange}, {link}")
        gbit = _gbit(link)
        if gbit is None:  # a topology file's links: nothing measured on them
            continue
        measured = [p for p in points if p.index in by_point and mode in p.scaling and p.ranks_per_node == rpn
                    and p.option("exchange") == exchange and p.sweep_tokens[p.scaling.index(mode)] == tokens
                    and (gbit is None or p.link_gbit == gbit) and p.option("overlap") == "off"
                    and p.option("max_nodes") == 0 and float(p.option("link_penalty")) == 0]
        if not measured:
            continue
        measured.sort(key=lambda p: p.nodes)
        tps = [spread(by_point[p.index], "tokens_per_s") for p in measured]
        ax.errorbar([p.nodes for p in measured], [t[0] for t in tps], yerr=_bars(tps), fmt="o", capsize=3,
                    color=line[0].get_color(), label=f"measured at {gbit:g} Gbit/s (median, min–max)")
        valid = [r for r in rows if r["purpose"] == "validation" and mode in r["scaling"].split()
                 and r["ranks_per_node"] == rpn and r["exchange"] == exchange and _gbit(r["link"]) == gbit
                 and r["nodes"] in {p.nodes for p in measured if p.tokens_per_rank == r["tokens_per_rank"]}]
        if valid:
            ax.plot([r["nodes"] for r in valid], [r["tokens_per_s"] for r in valid], ls="none", marker="s",
                    mfc="none", color=line[0].get_color(),
                    label=f"model at the measured points, {gbit:g} Gbit/s (compute as slow as measured there)")
        nodes |= {p.nodes for p in measured}
    _node_axis(ax, sorted(nodes) or [1])
    ax.set_yscale("log")
    ax.set_ylabel("throughput (tokens/s, all ranks)")
    ax.set_title(f"{mode.capitalize()} scaling: measured and projected")
    ax.legend(fontsize=7)


def _gbit(link):
    head = str(link).split(" ")[0]
    try:
        return float(head) if str(link).split(" ")[1:2] == ["Gbit/s"] else None
    except ValueError:
        return None
