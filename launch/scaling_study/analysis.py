"""Projected rows: the model beside each measured point (validation), and at the node counts asked for."""
import os
import statistics

from . import projection
from .results import compute_references, gemm_curve, nearest, projectable, spread


def _row(study, purpose, scaling, nodes, rpn, link, exchange, tokens, p, over, ref):
    return {"study": study.name, "kind": "projected", "purpose": purpose, "scaling": scaling, "nodes": nodes,
            "ranks_per_node": rpn, "ranks": nodes * rpn, "link": link, "exchange": exchange,
            "tokens_per_rank": tokens, "tokens_total": tokens * nodes * rpn, "compute_ms": round(p["compute_ms"], 4),
            "exchange_ms": round(p["exchange_ms"], 4), "step_ms": round(p["step_ms"], 4),
            "gemm_gflops": round(p["gemm_gflops"], 2),
            "tokens_per_s": round(p["tokens_per_s"], 1), "compute_slowdown": round(over, 4),
            "compute_reference": ref["label"]}


def validation_rows(study, by_point, topologies):
    """The model at every measured point it covers, with the point's own probed links and
    the compute slowed as the point's own runs measured it: the reference's same-run GEMM peak over
    the point's (one host running the ranks of several nodes, other load)."""
    refs = compute_references(study, by_point)
    curve = gemm_curve(study, by_point)
    rows = []
    for point in study.points:
        runs = by_point.get(point.index)
        topo = topologies.get((point.nodes, point.ranks_per_node, point.link_gbit))
        key = (point.ranks_per_node, point.option("exchange"))
        if not runs or not projectable(point) or not topo or key not in refs:
            continue
        costs, round_s = projection.read_costs(topo)
        ref = nearest(refs[key], point.tokens_per_rank)
        over = ref["peak"] / statistics.median(float(r["gemm_peak_gflops"]) for r in runs)
        p = projection.project_step(ref, curve, costs, round_s, study.bench, point.nodes, point.ranks_per_node,
                                    point.tokens_per_rank, point.option("exchange"), over)
        med, low, high = spread(runs, "step_ms_p50")
        row = _row(study, "validation", " ".join(point.scaling), point.nodes, point.ranks_per_node,
                   f"{point.link_gbit:g} Gbit/s (probed)", point.option("exchange"), point.tokens_per_rank, p, over,
                   ref)
        phases = [r["_json"]["phase_ms"] for r in runs]
        exch = statistics.median(sum(v for k, v in ph.items() if k in projection.EXCHANGE_PHASES) for ph in phases)
        comp = statistics.median(sum(v for k, v in ph.items() if k not in projection.EXCHANGE_PHASES)
                                 for ph in phases)
        alone = statistics.median(r["_json"]["exchange_ms"] for r in runs)
        model_alone = p["exchange_ms"] / (2 if study.bench["pass"] == "fwd_bwd" else 1)
        row.update(measured_exchange_alone_ms=round(alone, 4), exchange_alone_rel_error=(
            round((model_alone - alone) / alone, 4) if alone > 0 else None))
        row.update(measured_step_ms=med, measured_min_ms=low, measured_max_ms=high,
                   measured_compute_ms=round(comp, 4), measured_exchange_ms=round(exch, 4),
                   rel_error=round((p["step_ms"] - med) / med, 4))
        rows.append(row)
    return rows


def projection_costs(study, topologies):
    """[(link label, ranks per node or None, topology file)] the projection uses: each file given,
    and for "probed" the links probed at the most nodes of each (ranks per node, link rate) whose
    ranks fit this host's cores (a probe of ranks that share cores also times their waits for each
    other), or at the fewest nodes when none fit."""
    out = []
    for topology in study.project["topology"]:
        if topology != "probed":
            out.append((os.path.basename(topology), None, topology))
            continue
        for rpn in study.sweep["ranks_per_node"]:
            for gbit in study.sweep["link_gbit"]:
                probed = sorted((n, f) for (n, m, g), f in topologies.items()
                                if m == rpn and g == float(gbit) and n > 1)
                fit = [(n, f) for n, f in probed if n * rpn <= (os.cpu_count() or 1)]
                if probed:
                    n, f = max(fit) if fit else probed[0]
                    out.append((f"{float(gbit):g} Gbit/s (probed at {n} nodes)", rpn, f))
    return out


def projection_rows(study, by_point, topologies):
    """The model at the study's node counts and the projected ones, every core as fast as the reference's."""
    if not study.project:
        return []
    refs = compute_references(study, by_point)
    curve = gemm_curve(study, by_point)
    s = study.sweep
    counts = sorted(set(s["nodes"]) | set(study.project["nodes"]))
    modes = ("weak", "strong") if study.scaling == "both" else (study.scaling,)
    rows = []
    for link, rpn_only, topo in projection_costs(study, topologies):
        costs, round_s = projection.read_costs(topo)
        for rpn in [rpn_only] if rpn_only else s["ranks_per_node"]:
            for exchange in s["exchange"]:
                if (rpn, exchange) not in refs:
                    continue
                for mode in modes:
                    for tokens in s["tokens"]:
                        for nodes in counts:
                            per_rank = tokens if mode == "weak" else tokens // (nodes * rpn)
                            if per_rank < 1:
                                continue
                            ref = nearest(refs[(rpn, exchange)], per_rank)
                            p = projection.project_step(ref, curve, costs, round_s, study.bench, nodes, rpn, per_rank,
                                                        exchange, 1.0)
                            row = _row(study, "projection", mode, nodes, rpn, link, exchange, per_rank, p, 1.0, ref)
                            row["series_tokens"] = tokens
                            rows.append(row)
    return rows


def validation_table(rows):
    """Markdown: the validation rows, measured beside projected, with the relative error."""
    lines = ["| nodes | ranks/node | link | exchange | tokens/rank | compute slowdown | measured step ms (min–max) "
             "| measured phases ms (compute + exchange) | projected ms (compute + exchange) | error "
             "| exchange alone: measured ms | model's error |",
             "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['nodes']} | {r['ranks_per_node']} | {r['link']} | {r['exchange']} | "
                     f"{r['tokens_per_rank']} | {r['compute_slowdown']:.2f} | {r['measured_step_ms']:.2f} "
                     f"({r['measured_min_ms']:.2f}–{r['measured_max_ms']:.2f}) | {r['measured_compute_ms']:.2f} + "
                     f"{r['measured_exchange_ms']:.2f} | {r['step_ms']:.2f} "
                     f"({r['compute_ms']:.2f} + {r['exchange_ms']:.2f}) | {r['rel_error']:+.1%} | "
                     f"{r['measured_exchange_alone_ms']:.2f} | {_percent(r['exchange_alone_rel_error'])} |")
    if rows:
        mean = sum(abs(r["rel_error"]) for r in rows) / len(rows)
        across = [abs(r["exchange_alone_rel_error"]) for r in rows if r["nodes"] > 1]
        lines.append("")
        lines.append(f"Mean absolute relative error of the step over {len(rows)} points: {mean:.1%}"
                     + (f"; of the exchange alone, over the {len(across)} points across nodes: "
                        f"{sum(across) / len(across):.1%}." if across else "."))
    return "\n".join(lines) + "\n"


def _percent(x):
    return "—" if x is None else f"{x:+.1%}"
