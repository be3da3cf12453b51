"""The results folder's tables: one CSV row per run, medians per point, projected rows."""
import csv
import io
import json
import os
import statistics

from . import projection

RUN_COLUMNS = [
    "study", "point", "repeat", "status", "scaling", "launcher", "nodes", "ranks_per_node", "ranks", "link_gbit",
    "exchange", "overlap", "max_nodes", "link_penalty", "tokens_per_rank", "tokens_total", "step_ms_p10",
    "step_ms_p50", "step_ms_p90", "tokens_per_s", "t_compute_ms", "t_comm_ms", "exchange_ms", "exchange_in_step_ms",
    "exchange_predicted_ms", "overlap_efficiency", "gemm_gflops", "gemm_peak_gflops", "bytes_self",
    "bytes_same_node", "bytes_other_node", "correct", "raw_line", "log", "command",
]
PROJECTED_COLUMNS = [
    "study", "kind", "purpose", "scaling", "series_tokens", "nodes", "ranks_per_node", "ranks", "link", "exchange",
    "tokens_per_rank", "tokens_total", "compute_ms", "gemm_gflops", "exchange_ms", "step_ms", "tokens_per_s",
    "compute_slowdown", "compute_reference",
    "measured_step_ms", "measured_min_ms", "measured_max_ms", "measured_compute_ms", "measured_exchange_ms",
    "rel_error", "measured_exchange_alone_ms", "exchange_alone_rel_error",
]


def write_atomic(path, text):
    """Write `path` through a temporary name in the same folder, so that no half-written file remains."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def csv_text(columns, rows):
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return out.getvalue()


def run_row(study, launcher, point, repeat, run, raw_line):
    """The CSV row of one run; metrics empty when it failed."""
    row = {"study": study.name, "point": point.index, "repeat": repeat, "scaling": " ".join(point.scaling),
           "launcher": launcher, "nodes": point.nodes, "ranks_per_node": point.ranks_per_node, "ranks": point.ranks,
           "link_gbit": "" if launcher == "slurm" else f"{point.link_gbit:g}",  # slurm: the cluster's links
           "tokens_per_rank": point.tokens_per_rank,
           "tokens_total": point.tokens_per_rank * point.ranks, "log": os.path.relpath(run.log, study.out_dir),
           "command": run.shell(), **dict(point.options)}
    row["status"] = "ok" if run.returncode == 0 and run.line else f"failed (exit {run.returncode})"
    if row["status"] != "ok":
        return row
    d = json.loads(run.line)
    for key in ("step_ms_p10", "step_ms_p50", "step_ms_p90", "tokens_per_s", "t_compute_ms", "t_comm_ms",
                "exchange_ms", "exchange_in_step_ms", "exchange_predicted_ms", "overlap_efficiency", "gemm_gflops",
                "gemm_peak_gflops", "correct"):
        row[key] = d.get(key)
    for c in projection.LINKS:
        row["bytes_" + c] = d.get("link_bytes", {}).get(c)
    for name, ms in d.get("phase_ms", {}).items():
        row["phase_" + name + "_ms"] = ms
    row["raw_line"] = raw_line
    row["_json"] = d
    return row


def run_columns(rows):
    """RUN_COLUMNS with every phase met, in first-met order, before the raw line."""
    phases = []
    for r in rows:
        phases += [k for k in r if k.startswith("phase_") and k not in phases]
    i = RUN_COLUMNS.index("raw_line")
    return RUN_COLUMNS[:i] + phases + RUN_COLUMNS[i:]


def medians(rows):
    """Per point: the ok runs' rows, grouped, in point order."""
    by_point = {}
    for r in rows:
        if r["status"] == "ok":
            by_point.setdefault(r["point"], []).append(r)
    return by_point


def spread(runs, key):
    values = [float(r[key]) for r in runs if r.get(key) not in (None, "")]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def projectable(point):
    """Points the model covers: sequential schedule, plain routing."""
    opts = dict(point.options)
    return opts["overlap"] == "off" and opts["max_nodes"] == 0 and float(opts["link_penalty"]) == 0


def compute_references(study, by_point):
    """Per (ranks per node, exchange): the medians of the phases outside the exchange at the fewest
    nodes, one reference per tokens per rank measured there, with the same-run GEMM peak."""
    refs = {}
    for point in study.points:
        runs = by_point.get(point.index)
        if not runs or not projectable(point):
            continue
        f = refs.setdefault((point.ranks_per_node, point.option("exchange")), {"nodes": point.nodes, "by_tokens": {}})
        if point.nodes < f["nodes"]:
            f.update(nodes=point.nodes, by_tokens={})
        if point.nodes == f["nodes"]:
            f["by_tokens"].setdefault(point.tokens_per_rank, []).extend(
                (*projection.split_phases(r["_json"]["phase_ms"]), r["_json"]["gemm_peak_gflops"]) for r in runs)
    out = {}
    for (rpn, exchange), f in refs.items():
        out[(rpn, exchange)] = [
            {"tokens_per_rank": t, "ranks": f["nodes"] * rpn, "slowdown": 1.0,
             "experts_ms": statistics.median(e for e, _, _ in v), "other_ms": statistics.median(o for _, o, _ in v),
             "peak": statistics.median(p for _, _, p in v), "label": f"{f['nodes']}x{rpn} at {t} tokens/rank"}
            for t, v in sorted(f["by_tokens"].items())]
    return out


def gemm_curve(study, by_point):
    """[(rows per expert, expert GEMM rate as a fraction of the same run's peak)]: medians over the
    study's points, and 1 at the peak GEMM's 4096 rows. Relative to the same run's peak, so that a run
    slowed as a whole (other load, more ranks than cores) does not bend the curve."""
    by_rows = {}
    for p in study.points:
        if p.index in by_point and projectable(p):
            rows = projection.rows_per_expert(study.bench, p.ranks, p.tokens_per_rank)
            by_rows.setdefault(rows, []).extend(
                float(r["gemm_gflops"]) / float(r["gemm_peak_gflops"]) for r in by_point[p.index])
    curve = [(rows, statistics.median(v)) for rows, v in sorted(by_rows.items())]
    if curve and curve[-1][0] < projection.PEAK_ROWS:
        curve.append((projection.PEAK_ROWS, 1.0))
    return curve


def nearest(refs, tokens):
    """The reference measured at the tokens per rank closest (by ratio) to `tokens`."""
    return min(refs, key=lambda r: max(r["tokens_per_rank"], tokens) / min(r["tokens_per_rank"], tokens))
