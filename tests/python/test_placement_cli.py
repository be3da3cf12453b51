"""`switchyard placement`: planning expert placement from routing statistics.

Run:
    SWITCHYARD_BIN=build/launch/switchyard python -m pytest -q tests/python/test_placement_cli.py

Covers: the three placements' figures (--json) against the step-time model
re-derived here from its definition (docs/placement.md) for the placements
the command printed; the per-rank limit and the replica count; the placement
file written by --out (only rank 0 under mpirun) and read back through
--current (nothing to migrate); link costs from --topology; bad statistics
files, placement files and flags ending every rank with one line naming the
file and field, or the flag.
"""
import json
import math
import os
import shlex
import subprocess

import pytest

BIN = os.environ.get("SWITCHYARD_BIN")
if not BIN:
    pytest.skip("SWITCHYARD_BIN is not set", allow_module_level=True)
MPIEXEC = shlex.split(os.environ.get("MPIEXEC", "mpirun"))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
TIMEOUT = 120
ERR = "switchyard: error:"

NODES = [0, 0, 1, 1]
# Two blocks, 8 experts, 4 ranks on 2 nodes, 10 steps: block 0 skewed toward
# e0, block 1 with node 0 routing to e0..e3 and node 1 to e4..e7.
BLOCK0 = [[400, 200, 50, 50, 20, 20, 20, 20]] * 4
BLOCK1 = [[300, 40, 40, 40, 0, 0, 0, 10]] * 2 + [[0, 10, 0, 0, 280, 40, 40, 40]] * 2
STATS = {
    "format": "switchyard-routing-stats", "version": 1, "command": "train", "ranks": 4, "experts": 8,
    "steps": 10, "node_of_rank": NODES, "expert_owner": [0, 0, 1, 1, 2, 2, 3, 3],
    "blocks": [{"block": 0, "copies": BLOCK0}, {"block": 1, "copies": BLOCK1}],
}
MODEL = ["--hidden", 256, "--ffn", 512, "--dtype-bytes", 2, "--row-seconds", 1e-5, "--migration-steps", 100]
ROW_BYTES, EXPERT_BYTES, ROW_SECONDS, MIGRATION_STEPS = 256 * 2, 3 * 256 * 512 * 2, 1e-5, 100
SAME, OTHER = 1 / 20e9, 1 / 2.5e9  # documented defaults


def sy(command, *args, nproc=4, check=True):
    argv = [*MPIEXEC, "-np", str(nproc), "--oversubscribe", BIN, command, *map(str, args)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=ENV)
    if check:
        assert p.returncode == 0, f"{argv}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return p


def run(*args, nproc=1, check=True):
    """`switchyard placement ARGS`."""
    return sy("placement", *args, nproc=nproc, check=check)


def assert_bad(p, *names):
    """Non-zero exit, exactly one error line naming every one of `names`."""
    assert p.returncode != 0, p.stdout
    lines = [line for line in p.stderr.splitlines() if line.startswith(ERR)]
    assert len(lines) == 1, p.stderr
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


def model(copies, holders, current, steps, same=SAME, other=OTHER):
    """The step-time model of docs/placement.md, written out again."""
    R = len(copies)
    rows, in_out = [0.0] * R, [[0.0, 0.0] for _ in range(R)]
    sent = [0.0, 0.0]
    for r in range(R):
        for e, n in enumerate(copies[r]):
            n /= steps
            cls = {h: 0 if h == r else (1 if NODES[h] == NODES[r] else 2) for h in holders[e]}
            best = min(cls.values())
            chosen = [h for h in holders[e] if cls[h] == best]
            for h in chosen:
                rows[h] += n / len(chosen)
                if h != r:
                    in_out[r][best - 1] += n / len(chosen)
                    in_out[h][best - 1] += n / len(chosen)
                    sent[best - 1] += n / len(chosen)
    migration = sum(r not in current[e] for e, hs in enumerate(holders) for r in hs) * EXPERT_BYTES
    exchange = max(2 * ROW_BYTES * (s * same + o * other) for s, o in in_out)
    step = max(rows) * ROW_SECONDS + exchange + migration * other / MIGRATION_STEPS
    return {"max_load_rows": max(rows), "mean_load_rows": sum(rows) / R, "same_node_bytes": 2 * sent[0] * ROW_BYTES,
            "other_node_bytes": 2 * sent[1] * ROW_BYTES, "migration_bytes": migration, "step_seconds": step}


@pytest.fixture()
def stats_file(tmp_path):
    path = tmp_path / "rs.json"
    path.write_text(json.dumps(STATS))
    return path


def test_figures_match_the_model_and_the_file_reads_back(stats_file, tmp_path):
    out = tmp_path / "placement.json"
    p = run("--stats", stats_file, "--replicas", 4, "--out", out, "--json", *MODEL, nproc=2)
    report = json.loads(p.stdout.strip())  # one line: rank 1 printed nothing
    owners = [[r] for r in STATS["expert_owner"]]
    for name in ("current", "eplb", "model"):
        for b, block in enumerate(report[name]["blocks"]):
            holders = block["expert_ranks"]
            want = model(STATS["blocks"][b]["copies"], holders, owners, STATS["steps"])
            for key, value in want.items():
                assert math.isclose(block[key], value, rel_tol=1e-9, abs_tol=1e-12), (name, b, key)
            held = [sum(r in hs for hs in holders) for r in range(4)]
            assert min(held) >= 1 and max(held) <= 3, (name, held)  # ceil((8 + 4) / 4)
            if name != "current":
                assert sum(held) <= 12
    assert report["current"]["total"]["migration_bytes"] == 0
    for b in range(2):
        assert report["model"]["blocks"][b]["step_seconds"] <= report["current"]["blocks"][b]["step_seconds"]
    # Block 1's traffic stays in its node under the model; EPLB sends some across.
    assert report["model"]["blocks"][1]["other_node_bytes"] <= report["eplb"]["blocks"][1]["other_node_bytes"]
    written = json.loads(out.read_text())
    assert written["format"] == "switchyard-placement" and written["version"] == 1
    assert [b["expert_ranks"] for b in written["blocks"]] == [b["expert_ranks"] for b in report["model"]["blocks"]]
    # The written placement as the current one: nothing to migrate, the same figures.
    again = json.loads(run("--stats", stats_file, "--replicas", 4, "--current", out, "--json", *MODEL).stdout)
    for b in range(2):
        assert again["current"]["blocks"][b]["expert_ranks"] == written["blocks"][b]["expert_ranks"]
        assert again["current"]["blocks"][b]["migration_bytes"] == 0


def test_table_and_topology_costs(stats_file, tmp_path):
    p = run("--stats", stats_file, "--method", "eplb", "--out", tmp_path / "e.json", *MODEL)
    assert "current" in p.stdout and "eplb" in p.stdout and "model" in p.stdout, p.stdout
    assert "wrote the eplb placement" in p.stdout
    topo = {"format": "switchyard-topology", "version": 1,
            "ranks": [{"rank": r, "node": n, "host": "", "cores": [], "numa_node": None} for r, n in enumerate(NODES)],
            "links": {"same_node": {"latency_s": 1e-6, "bandwidth_bytes_per_s": 1e9, "probe": []},
                      "other_node": {"latency_s": 1e-5, "bandwidth_bytes_per_s": 1e8, "probe": []}}}
    (tmp_path / "t.json").write_text(json.dumps(topo))
    report = json.loads(run("--stats", stats_file, "--topology", tmp_path / "t.json", "--json", *MODEL).stdout)
    owners = [[r] for r in STATS["expert_owner"]]
    want = model(BLOCK0, owners, owners, 10, same=1e-9, other=1e-8)
    assert math.isclose(report["current"]["blocks"][0]["step_seconds"], want["step_seconds"], rel_tol=1e-9)


def test_bad_files_and_flags(stats_file, tmp_path):
    bad = dict(STATS, blocks=[{"block": 0, "copies": BLOCK0[:3]}])
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert_bad(run("--stats", tmp_path / "bad.json", nproc=2, check=False), "bad.json", "blocks[0].copies")
    (tmp_path / "text.json").write_text("not json")
    assert_bad(run("--stats", tmp_path / "text.json", check=False), "text.json", "not valid JSON")
    assert_bad(run("--stats", tmp_path / "missing.json", check=False), "missing.json")
    current = {"format": "switchyard-placement", "version": 1, "ranks": 3, "experts": 8, "blocks": []}
    (tmp_path / "cur.json").write_text(json.dumps(current))
    assert_bad(run("--stats", stats_file, "--current", tmp_path / "cur.json", check=False), "cur.json", "'ranks'")
    assert_bad(run("--stats", stats_file, "--replicas", -1, nproc=2, check=False), "--replicas")
    assert_bad(run("--stats", stats_file, "--replicas", 100, check=False), "--replicas")
    assert_bad(run("--stats", stats_file, "--method", "best", check=False), "--method")
    assert_bad(run("--stats", stats_file, "--hidden", 0, check=False), "--hidden")
    assert_bad(run("--stats", stats_file, "--out", tmp_path / "no" / "p.json", check=False), "--out")
    assert_bad(run(check=False), "--stats")


BENCH = ["--hidden", 32, "--ffn", 48, "--experts", 8, "--top-k", 2, "--tokens", 64, "--iters", 1, "--warmup", 0,
         "--routing", "skewed", "--ranks-per-node", 2]


def test_placement_with_replicas_runs_the_layer_and_balances_it(tmp_path):
    """bench --routing-stats -> placement --replicas -> bench --placement: the
    layer with the planned replicas still matches bench's dense reference
    and computes every slot once."""
    stats, plan = tmp_path / "rs.json", tmp_path / "p.json"
    sy("bench", *BENCH, "--routing-stats", stats, "--json", tmp_path / "a.jsonl")
    run("--stats", stats, "--replicas", 3, "--out", plan)
    holders = json.loads(plan.read_text())["blocks"][0]["expert_ranks"]
    assert sum(len(h) for h in holders) == 8 + 3
    for placement in ("", plan):
        extra = ["--placement", placement] if placement else []
        sy("bench", *BENCH, *extra, "--pass", "fwd_bwd", "--json", tmp_path / "b.jsonl")
    contiguous, placed = [json.loads(s) for s in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert contiguous["correct"] is True and placed["correct"] is True
    # Every slot is still computed once.
    assert sum(placed["link_slots"].values()) == sum(contiguous["link_slots"].values()) == 4 * 64 * 2


def test_forward_with_a_replicated_placement_matches_contiguous(tmp_path):
    """forward --placement: outputs and every gradient (the owners' copies)
    equal the contiguous placement's within float32 rounding."""
    np = pytest.importorskip("numpy")
    safetensors = pytest.importorskip("safetensors.numpy")
    make = os.environ.get("MAKE_RANDOM_MOE")
    if not make:
        pytest.skip("MAKE_RANDOM_MOE is not set")
    model = tmp_path / "m"
    subprocess.run([make, "--out", str(model), "--arch", "mixtral", "--hidden", "32", "--ffn", "24", "--experts", "6",
                    "--top-k", "2", "--tokens", "50", "--seed", "3"], check=True, capture_output=True, timeout=60)
    gy = tmp_path / "gy.npy"
    np.save(gy, np.random.default_rng(2).standard_normal((50, 32)).astype(np.float32))
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"format": "switchyard-placement", "version": 1, "ranks": 3, "experts": 6, "blocks": [
        {"block": 0, "expert_ranks": [[0, 1, 2], [0], [1], [1, 2], [2], [0]]}]}))
    out = {}
    for name, extra in (("blocks", []), ("placed", ["--placement", plan])):
        d = tmp_path / name
        d.mkdir()
        sy("forward", "--model", model, "--layer", 1, "--input", model / "x.npy", "--output", d / "y.npy",
           "--grad-output", gy, "--grads", d / "g.safetensors", "--quiet", *extra, nproc=3)
        out[name] = (np.load(d / "y.npy"), safetensors.load_file(d / "g.safetensors"))
    (y0, g0), (y1, g1) = out["blocks"], out["placed"]
    assert np.allclose(y1, y0, rtol=1e-5, atol=1e-6)
    assert g0.keys() == g1.keys()
    for k in g0:
        assert np.allclose(g1[k], g0[k], rtol=1e-4, atol=1e-6), k
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "switchyard-placement", "version": 1, "ranks": 3, "experts": 6, "blocks": [
        {"block": 0, "expert_ranks": [[0], [0], [1], [1], [0], [0]]}]}))
    p = sy("forward", "--model", model, "--layer", 1, "--input", model / "x.npy", "--output", tmp_path / "y.npy",
           "--placement", bad, nproc=3, check=False)
    assert_bad(p, "--placement", "bad.json")
    assert not (tmp_path / "y.npy").exists()


def test_train_with_a_placement_per_block_resumes_bit_exactly(tmp_path):
    """train --placement: every block with its own placement (replicas in
    one), the final loss close to the contiguous run's (only the sums'
    rounding differs), and a checkpoint saved mid-run resumes to the same
    bits as the uninterrupted run."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = "the cat sat on a mat and dog ran to big red house in rain sun".split()
    (corpus / "words").write_text(" ".join(words[(i * 7) % 16] for i in range(12000)))
    config = tmp_path / "c.json"
    config.write_text(json.dumps({
        "data": {"dir": str(corpus), "min_bytes": 1000},
        "model": {"arch": "mixtral", "hidden": 32, "ffn": 32, "experts": 4, "top_k": 2, "layers": 2,
                  "context": 8, "embed": 8},
        "optimizer": {"type": "adamw", "lr": 0.01},
        "batch_tokens": 64, "steps": 8, "seed": 3, "log_interval": 4, "eval_interval": 0, "eval_tokens": 500}))
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"format": "switchyard-placement", "version": 1, "ranks": 2, "experts": 4, "blocks": [
        {"block": 0, "expert_ranks": [[1], [0], [1], [0]]},
        {"block": 1, "expert_ranks": [[0, 1], [0], [1], [0, 1]]}]}))

    def final(name, *args):
        log = tmp_path / f"{name}.jsonl"
        sy("train", "--config", config, "--quiet", "--json", log, *args, nproc=2)
        return json.loads(log.read_text().splitlines()[-1])

    blocks = final("blocks")
    placed = final("placed", "--placement", plan)
    assert placed["event"] == "final" and math.isclose(placed["val_loss"], blocks["val_loss"], rel_tol=2e-3)
    sy("train", "--config", config, "--quiet", "--placement", plan, "--stop-after", 4, "--save", tmp_path / "ck",
       nproc=2)
    resumed = final("resumed", "--placement", plan, "--resume", tmp_path / "ck")
    assert resumed["val_loss"] == placed["val_loss"] and resumed["train_loss"] == placed["train_loss"]
    index = json.loads((tmp_path / "ck" / "model.safetensors.index.json").read_text())["weight_map"]
    assert "blocks.1.moe.experts.0.gate_up_proj" in index  # a replicated expert, saved once
