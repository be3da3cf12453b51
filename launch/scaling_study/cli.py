"""scaling-study: run a study file's points through Slurm, the emulated cluster or mpirun, and write one folder.

    launch/scaling-study --config study.json --out DIR [--switchyard PATH] [--launcher auto|slurm|emulated|mpirun]

DIR receives results.csv (one row per run), commands.sh, raw.jsonl (the bench
JSON lines as written), logs/, topology/ (probed links), the PNG plots and,
with a "project" section, projection.csv and validation.md. Bad flags or a bad
study file end it with one line and exit code 2 before anything runs; a failed
run is reported with its command and log, the rest still run, and the exit
code is 1.
"""
import argparse
import csv
import json
import os
import shlex
import sys
import time

from . import analysis, launchers, plots, results
from .study import StudyError, load_study

PROG = "scaling-study"
DEFAULT_PROGRAM = os.path.join(launchers.REPO, "build", "launch", "switchyard")


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise StudyError(message)


def parse_args(argv):
    p = Parser(prog=PROG, description="Run a scaling study of `switchyard bench` and plot it.")
    p.add_argument("--config", required=True, help="the study file (JSON)")
    p.add_argument("--out", required=True, help="the results folder (created; files in it are replaced)")
    p.add_argument("--switchyard", default=DEFAULT_PROGRAM, help="the program (default: the build tree's)")
    p.add_argument("--launcher", default="auto", choices=("auto", "slurm", "emulated", "mpirun"),
                   help="auto: slurm when sbatch is on PATH and a cluster answers, else the emulated cluster as "
                        "root, else mpirun")
    p.add_argument("--replot", action="store_true",
                   help="run nothing: remake the plots and projection from --out's results.csv and raw.jsonl")
    args = p.parse_args(argv)
    if not (os.path.isfile(args.switchyard) and os.access(args.switchyard, os.X_OK)):
        raise StudyError(f"--switchyard: {args.switchyard} is not an executable file")
    args.switchyard = os.path.abspath(args.switchyard)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise StudyError(f"--out: {args.out} exists and is not a folder")
    return args


class Progress:
    """One line on stderr: runs done, the current one, elapsed time and the estimate of what is left."""

    def __init__(self, total):
        self.total, self.done, self.start = total, 0, time.monotonic()
        self.tty = sys.stderr.isatty()

    def show(self, what):
        elapsed = time.monotonic() - self.start
        eta = "?" if not self.done else _clock(elapsed / self.done * (self.total - self.done))
        text = f"[{self.done}/{self.total}] {what} | elapsed {_clock(elapsed)}, ETA {eta}"
        sys.stderr.write(("\r\033[K" + text) if self.tty else text + "\n")
        sys.stderr.flush()

    def note(self, line):
        sys.stderr.write(("\r\033[K" if self.tty else "") + line + "\n")
        sys.stderr.flush()

    def finish(self):
        if self.tty:
            sys.stderr.write("\n")


def _clock(seconds):
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def probe_topologies(study, launcher, program, progress, commands):
    """switchyard topo --json once per (nodes, ranks per node, link rate) that a point runs on."""
    if launcher == "slurm":
        return {}, []
    out, failed = {}, []
    for key in sorted({(p.nodes, p.ranks_per_node, p.link_gbit) for p in study.points}):
        nodes, rpn, gbit = key
        name = f"nodes{nodes}-rpn{rpn}-link{gbit:g}"
        path = os.path.join(study.out_dir, "topology", name + ".json")
        point = next(p for p in study.points if (p.nodes, p.ranks_per_node, p.link_gbit) == key)
        run = launchers.probe_run(study, launcher, program, point, path,
                                  os.path.join(study.out_dir, "logs", "topo-" + name + ".log"))
        progress.show(f"probing links: {nodes}x{rpn} @ {gbit:g} Gbit/s")
        commands.append(run.shell() + " > " + shlex.quote(os.path.relpath(path, study.out_dir)))
        launchers.execute(run, study.timeout_min * 60, stdout_to_json=True)
        if run.returncode == 0:
            out[key] = path
        else:
            failed.append(run)
            progress.note(f"{PROG}: link probe {name} failed (exit {run.returncode}): {run.shell()}; log: {run.log}")
    return out, failed


def run_points(study, launcher, program, topologies, progress, commands):
    rows, raw, failed = [], [], []
    for point in study.points:
        topo = topologies.get((point.nodes, point.ranks_per_node, point.link_gbit))
        for repeat in range(1, study.repeats + 1):
            name = f"point{point.index:03d}-rep{repeat}"
            run = launchers.bench_run(study, launcher, program, point, study.out_dir, name, topo)
            progress.show(f"{point.label()}, repeat {repeat}/{study.repeats}")
            commands.append(run.shell())
            start = time.monotonic()
            launchers.execute(run, study.timeout_min * 60)
            run.seconds = time.monotonic() - start
            progress.done += 1
            if run.line:
                raw.append(run.line)
            rows.append(results.run_row(study, launcher, point, repeat, run, len(raw) if run.line else None))
            if rows[-1]["status"] != "ok":
                failed.append(run)
                progress.note(f"{PROG}: point {point.index} repeat {repeat} failed (exit {run.returncode}): "
                              f"{run.shell()}; log: {run.log}")
    return rows, raw, failed


def write_outputs(study, rows, raw, commands, topologies):
    out = study.out_dir
    header = (f"#!/bin/sh\n# {PROG}: the commands of study '{study.name}' ({study.path}), in the order they ran\n"
              f"cd \"$(dirname \"$0\")\"\n")
    results.write_atomic(os.path.join(out, "commands.sh"), header + "\n".join(commands) + "\n")
    results.write_atomic(os.path.join(out, "raw.jsonl"), "".join(line + "\n" for line in raw))
    results.write_atomic(os.path.join(out, "results.csv"), results.csv_text(results.run_columns(rows), rows))
    by_point = results.medians(rows)
    plots.scaling_plot(os.path.join(out, "weak_scaling.png"), study.points, by_point, "weak")
    plots.scaling_plot(os.path.join(out, "strong_scaling.png"), study.points, by_point, "strong")
    plots.phases_plot(os.path.join(out, "phases.png"), study.points, by_point)
    plots.link_bytes_plot(os.path.join(out, "link_bytes.png"), study.points, by_point)
    plots.overlap_plot(os.path.join(out, "overlap.png"), study.points, by_point)
    if study.project:
        valid = analysis.validation_rows(study, by_point, topologies)
        projected = analysis.projection_rows(study, by_point, topologies)
        results.write_atomic(os.path.join(out, "projection.csv"),
                             results.csv_text(results.PROJECTED_COLUMNS, valid + projected))
        results.write_atomic(os.path.join(out, "validation.md"), analysis.validation_table(valid))
        plots.projection_plot(os.path.join(out, "projection.png"), study.points, by_point, valid + projected)


def replot(study, args):
    """The tables and plots again, from the runs an earlier study wrote to --out."""
    out = study.out_dir
    try:
        rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
        raw = [line.rstrip("\n") for line in open(os.path.join(out, "raw.jsonl"))]
        commands = [c for c in open(os.path.join(out, "commands.sh")).read().splitlines()
                    if c and not c.startswith(("#", "cd "))]
    except OSError as e:
        raise StudyError(f"--replot: {e.filename}: {e.strerror}; expected the results of a study in --out")
    for r in rows:
        r["point"] = int(r["point"])
        if r["status"] == "ok":
            r["_json"] = json.loads(raw[int(r["raw_line"]) - 1])
    topologies = {}
    for p in study.points:
        path = os.path.join(out, "topology", f"nodes{p.nodes}-rpn{p.ranks_per_node}-link{p.link_gbit:g}.json")
        if os.path.exists(path):
            topologies[(p.nodes, p.ranks_per_node, p.link_gbit)] = path
    write_outputs(study, rows, raw, commands, topologies)
    return 0


def main(argv=None):
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        study = load_study(args.config)
        launcher = launchers.choose(args.launcher)
        launchers.check_study(study, launcher)
    except StudyError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    study.out_dir = os.path.abspath(args.out)
    if args.replot:
        try:
            return replot(study, args)
        except StudyError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 2
    for sub in ("logs", "topology") + (("slurm",) if launcher == "slurm" else ()):
        os.makedirs(os.path.join(study.out_dir, sub), exist_ok=True)
    progress = Progress(len(study.points) * study.repeats)
    commands = []
    topologies, probe_failed = probe_topologies(study, launcher, args.switchyard, progress, commands)
    rows, raw, failed = run_points(study, launcher, args.switchyard, topologies, progress, commands)
    progress.show("writing the results")
    write_outputs(study, rows, raw, commands, topologies)
    progress.finish()
    failed += probe_failed
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"{PROG}: {ok} of {len(rows)} runs ok ({launcher}); results in {study.out_dir}", file=sys.stderr)
    if failed:
        print(f"{PROG}: {len(failed)} run(s) failed; their logs: " + " ".join(r.log for r in failed), file=sys.stderr)
    return 1 if failed else 0
