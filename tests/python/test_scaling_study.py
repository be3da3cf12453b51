"""`launch/scaling-study`: the example study at a tiny size through plain mpirun, checked against its
own raw JSON lines; bad study files and flags refused before anything runs; the projection's cost
model against a hand-derived value and against `switchyard bench`'s own prediction.

Run: SWITCHYARD_BIN=build/launch/switchyard python -m pytest tests/python/test_scaling_study.py
"""
import csv
import itertools
import json
import os
import struct
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "launch", "scaling-study")
EXAMPLE = os.path.join(ROOT, "examples", "scaling-study.json")
BIN = os.environ.get("SWITCHYARD_BIN")
MPIEXEC = os.environ.get("MPIEXEC", "mpirun")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
PNGS = ("weak_scaling.png", "strong_scaling.png", "phases.png", "link_bytes.png", "overlap.png", "projection.png")

sys.path.insert(0, os.path.join(ROOT, "launch"))
from scaling_study import projection  # noqa: E402

needs_bin = pytest.mark.skipif(not BIN, reason="SWITCHYARD_BIN is not set")


def tiny_study(tmp_path):
    """The example study, shrunk: same sections, one link rate (mpirun has no links), small layer."""
    study = json.load(open(EXAMPLE))
    study["bench"].update(hidden=64, ffn=96, experts=8, iters=5, warmup=1)
    study["sweep"].update(nodes=[1, 2], link_gbit=[2], tokens=[32])
    study["repeats"] = 2
    study["project"]["nodes"] = [4, 8]
    study["project"]["topology"] = ["probed", os.path.join(ROOT, "examples", "fabric-25gbe.json")]
    path = tmp_path / "study.json"
    path.write_text(json.dumps(study))
    return path, study


def run_tool(*args, timeout=120):
    return subprocess.run([TOOL, *args], env=ENV, capture_output=True, text=True, timeout=timeout)


def expected_points(study):
    """(nodes, ranks/node, tokens per rank, overlap) of every run, derived from the study file alone."""
    s = study["sweep"]
    modes = ("weak", "strong") if study["scaling"] == "both" else (study["scaling"],)
    points = set()
    for mode, n, m, t, o in itertools.product(modes, s["nodes"], s["ranks_per_node"], s["tokens"], s["overlap"]):
        points.add((n, m, t if mode == "weak" else t // (n * m), o))
    return points


def check_png(path):
    data = path.read_bytes()
    assert len(data) > 1000, f"{path}: {len(data)} bytes"
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 200 and height > 200, (path, width, height)


@needs_bin
def test_example_study_tiny(tmp_path):
    path, study = tiny_study(tmp_path)
    out = tmp_path / "out"
    res = run_tool("--config", str(path), "--out", str(out), "--launcher", "mpirun", "--switchyard", BIN)
    assert res.returncode == 0, res.stderr
    assert "ETA" in res.stderr
    rows = list(csv.DictReader(open(out / "results.csv")))
    raw = [json.loads(line) for line in open(out / "raw.jsonl")]
    points = expected_points(study)
    assert len(rows) == len(points) * study["repeats"] == len(raw)
    ran = {(int(r["nodes"]), int(r["ranks_per_node"]), int(r["tokens_per_rank"]), r["overlap"]) for r in rows}
    assert ran == points
    for r in rows:
        d = raw[int(r["raw_line"]) - 1]
        assert r["status"] == "ok" and d["correct"] is True
        assert d["ranks"] == int(r["ranks"]) == int(r["nodes"]) * int(r["ranks_per_node"])
        assert d["tokens_per_rank"] == int(r["tokens_per_rank"])
        for key in ("step_ms_p10", "step_ms_p50", "step_ms_p90", "exchange_ms", "gemm_gflops"):
            assert float(r[key]) == d[key], key
        # tokens/s from the row's own tokens, ranks and step, and from the JSON line's
        recomputed = int(r["tokens_per_rank"]) * int(r["ranks"]) / (float(r["step_ms_p50"]) / 1e3)
        assert float(r["tokens_per_s"]) == pytest.approx(recomputed, rel=1e-9)
        assert d["tokens_per_s"] == pytest.approx(d["tokens_per_rank"] * d["ranks"] / (d["step_ms_p50"] / 1e3))
    commands = (out / "commands.sh").read_text().splitlines()
    assert sum(" bench " in c for c in commands) == len(rows)
    for name in PNGS:
        check_png(out / name)
    projected = list(csv.DictReader(open(out / "projection.csv")))
    assert {r["kind"] for r in projected} == {"projected"}
    beyond = {int(r["nodes"]) for r in projected if r["purpose"] == "projection"}
    assert {4, 8} <= beyond
    assert any(r["link"] == "fabric-25gbe.json" for r in projected)
    valid = [r for r in projected if r["purpose"] == "validation"]
    assert valid and all(r["rel_error"] != "" for r in valid)
    assert "| nodes |" in (out / "validation.md").read_text()


def bad(tmp_path, mutate):
    study = json.load(open(EXAMPLE))
    study["project"]["topology"] = ["probed", os.path.join(ROOT, "examples", "fabric-25gbe.json")]
    mutate(study)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(study))
    return path


BAD = [
    (lambda s: s.update(colour="red"), "field 'colour'"),
    (lambda s: s["sweep"].update(nodes="4"), "field 'sweep.nodes'"),
    (lambda s: s["sweep"].update(nodes=[1, 0]), "field 'sweep.nodes[1]'"),
    (lambda s: s["sweep"].update(exchange=["ring"]), "field 'sweep.exchange[0]'"),
    (lambda s: s["bench"].update(top_k=2.5), "field 'bench.top_k'"),
    (lambda s: s["bench"].update(hiden=64), "field 'bench.hiden'"),
    (lambda s: s.update(scaling="diagonal"), "field 'scaling'"),
    (lambda s: s.update(repeats=0), "field 'repeats'"),
    (lambda s: s["project"].update(nodes=[128]), "field 'project.nodes'"),
    (lambda s: s["project"].update(topology="nowhere.json"), "field 'project.topology'"),
    (lambda s: s["sweep"].pop("tokens"), "missing field 'sweep.tokens'"),
]


@pytest.mark.parametrize("mutate,field", BAD, ids=[f for _, f in BAD])
def test_bad_study_refused(tmp_path, mutate, field):
    out = tmp_path / "out"
    res = run_tool("--config", str(bad(tmp_path, mutate)), "--out", str(out), "--launcher", "mpirun",
                   "--switchyard", BIN or "/bin/true")
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("scaling-study: error: "), res.stderr
    assert "bad.json" in lines[0] and field in lines[0], lines[0]
    assert not out.exists()


@pytest.mark.parametrize("args,text", [
    (["--out", "o"], "--config"),
    (["--config", EXAMPLE, "--out", "o", "--launcher", "ssh"], "--launcher"),
    (["--config", EXAMPLE, "--out", "o", "--switchyard", "/nonexistent"], "--switchyard"),
    (["--config", "/nonexistent.json", "--out", "o", "--switchyard", "/bin/true"], "/nonexistent.json"),
])
def test_bad_flags_refused(tmp_path, args, text):
    res = subprocess.run([TOOL, *args], env=ENV, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("scaling-study: error: ") and text in lines[0], res.stderr
    assert not (tmp_path / "o").exists()


def test_projection_hand_value():
    # 2 nodes x 1 rank, 4 experts (2 per rank), top-2, 100 tokens, rows of 8 floats (32 bytes).
    # A token misses a rank's 2 experts with chance C(2,2)/C(4,2) = 1/6, so each rank sends every
    # rank round(100 * 5/6) = 83 rows = 2656 bytes. One rank's row: self 2656 / 1e9 = 2.656 us;
    # other node 10 us + 2656 / 1e8 = 36.56 us; 39.216 us, the same for every row and column.
    costs = {"self": (0.0, 1e9), "same_node": (1e-6, 1e9), "other_node": (1e-5, 1e8)}
    f = projection.forecast_exchange(costs, 0.0, 2, 1, 4, 2, 100, 32)
    assert f["flat"] == pytest.approx(39.216e-6, rel=1e-12)
    # With one rank per node the first hop is the flat exchange, and in the second each rank copies
    # to itself the rows both ranks sent it: 39.216 us + 2 * 2656 / 1e9 = 44.528 us.
    assert f["hierarchical"] == pytest.approx(44.528e-6, rel=1e-12)
    # Expected counts instead of rounded ones: 500/6 rows, and a message almost surely (1 - 6^-100).
    e = projection.forecast_exchange(costs, 0.0, 2, 1, 4, 2, 100, 32, expected=True)
    assert e["flat"] == pytest.approx(1e-5 + (500 / 6 * 32) * (1 / 1e9 + 1 / 1e8), rel=1e-12)
    bench = {"experts": 4, "top_k": 2, "hidden": 8, "wire": "f32", "pass": "fwd"}
    assert projection.exchange_ms(costs, 0.0, bench, 2, 1, 100, "flat") == pytest.approx(2 * e["flat"] * 1e3)
    # GEMM rate: log-linear between (16, 20) and (64, 60): at 32 rows, halfway: 40.
    assert projection.gemm_rate([(16, 20.0), (64, 60.0)], 32) == pytest.approx(40.0)
    assert projection.gemm_rate([(16, 20.0), (64, 60.0)], 4096) == 60.0


def write_topology(path, nodes):
    ranks = [{"rank": r, "node": n, "host": f"node{n}", "cores": [], "numa_node": None} for r, n in enumerate(nodes)]
    links = {"self": {"latency_s": 0.0, "bandwidth_bytes_per_s": 1.5e10, "probe": []},
             "same_node": {"latency_s": 2e-6, "bandwidth_bytes_per_s": 4e9, "probe": []},
             "other_node": {"latency_s": 3e-5, "bandwidth_bytes_per_s": 2.5e8, "probe": []}}
    path.write_text(json.dumps({"format": "switchyard-topology", "version": 1, "ranks": ranks, "links": links}))


@needs_bin
def test_model_matches_bench_prediction(tmp_path):
    """The Python model of the measured byte matrix equals bench's exchange_predicted_ms. With top-1
    routing every routed slot is one row on the wire, so --routing-stats gives the exact matrix."""
    nodes = [0, 0, 1]
    topo, stats, line = tmp_path / "t.json", tmp_path / "stats.json", tmp_path / "b.jsonl"
    write_topology(topo, nodes)
    cmd = [MPIEXEC, "-np", "3", "--oversubscribe", BIN, "bench", "--hidden", "64", "--ffn", "96", "--experts", "6",
           "--top-k", "1", "--tokens", "50", "--iters", "2", "--warmup", "1", "--topology", str(topo),
           "--routing-stats", str(stats), "--json", str(line)]
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    d = json.loads(line.read_text())
    s = json.loads(stats.read_text())
    assert len(s["blocks"]) == 1
    matrix = [[0] * 3 for _ in range(3)]
    for r, copies in enumerate(s["blocks"][0]["copies"]):
        for e, c in enumerate(copies):
            matrix[r][s["expert_owner"][e]] += c * 64 * 4
    costs, round_s = projection.read_costs(topo)
    transposed = [list(col) for col in zip(*matrix)]
    model = (projection.all_to_all_seconds(costs, nodes, matrix)
             + projection.all_to_all_seconds(costs, nodes, transposed))
    assert model * 1e3 == pytest.approx(d["exchange_predicted_ms"], rel=1e-9)
