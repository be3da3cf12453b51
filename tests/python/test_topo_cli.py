"""`switchyard topo` and the traffic per link class of forward, bench and train.

Run:
    SWITCHYARD_BIN=build/launch/switchyard MAKE_RANDOM_MOE=build/examples/make_random_moe \
        python -m pytest -q tests/python/test_topo_cli.py

Covers: `topo --json` on 4 ranks in virtual nodes of 2 (nodes, costs per
class); the JSON read back through `--topology FILE` printing the identical
JSON; the table; bad topology files and flags ending every rank with one
line naming the file, without a hang; forward's token copies per link class
against counts derived here from the router weights of the checkpoint;
bench's and train's counts adding up, and nothing crossing nodes when one
node holds every rank; --probe-bytes choosing the probe's sizes. Topology-aware routing through the flags: forward
with --max-nodes against the node-limited routing derived here from its
definition (every token's experts on at most M nodes); --link-penalty
keeping copies off the dearest link; train with --max-nodes and the
configuration's "routing"; the routing in every JSON line; bad values
ending every rank with one line naming the flag (or the file and field).
"""
import json
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest

BIN = os.environ.get("SWITCHYARD_BIN")
if not BIN:
    pytest.skip("SWITCHYARD_BIN is not set", allow_module_level=True)
MPIEXEC = shlex.split(os.environ.get("MPIEXEC", "mpirun"))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
TIMEOUT = 120
ERR = "switchyard: error:"
CLASSES = ("self", "same_node", "other_node")


def run(command, *args, nproc=4, check=True):
    argv = [*MPIEXEC, "-np", str(nproc), "--oversubscribe", BIN, command, *map(str, args)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=ENV)
    if check:
        assert p.returncode == 0, f"{argv}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return p


def assert_bad(p, *names):
    """Non-zero exit, exactly one error line naming every one of `names`."""
    assert p.returncode != 0, p.stdout
    lines = [line for line in p.stderr.splitlines() if line.startswith(ERR)]
    assert len(lines) == 1, p.stderr
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def topo_json():
    return run("topo", "--json", "--ranks-per-node", 2).stdout


def test_topo_json_has_virtual_nodes_and_costs(topo_json):
    t = json.loads(topo_json)
    assert t["format"] == "switchyard-topology" and t["version"] == 1
    assert [r["rank"] for r in t["ranks"]] == [0, 1, 2, 3]
    assert [r["node"] for r in t["ranks"]] == [0, 0, 1, 1]
    assert set(t["links"]) == set(CLASSES)
    for name in CLASSES:
        cost = t["links"][name]
        assert cost["latency_s"] >= 0 and cost["bandwidth_bytes_per_s"] > 0, name
        assert [p["bytes"] for p in cost["probe"]] == [8, 64 << 10, 1 << 20, 4 << 20], name  # the default sizes


def test_topology_file_round_trips_through_the_cli(tmp_path, topo_json):
    path = tmp_path / "t.json"
    path.write_text(topo_json)
    again = run("topo", "--json", "--topology", path).stdout
    assert again == topo_json
    table = run("topo", "--topology", path).stdout
    assert "4 ranks on 2 nodes (file " + str(path) in table
    assert "node 0: ranks 0-1" in table and "node 1: ranks 2-3" in table
    for name in CLASSES:
        assert name in table


def test_probe_bytes_sets_the_probe_sizes(tmp_path):
    t = json.loads(run("topo", "--json", "--ranks-per-node", 1, "--probe-bytes", "16,4K,2M", nproc=2).stdout)
    for name in CLASSES:
        if name in t["links"]:
            assert [p["bytes"] for p in t["links"][name]["probe"]] == [16, 4096, 2 << 20], name
    assert "other_node" in t["links"]
    assert_bad(run("topo", "--probe-bytes", "8,8", nproc=2, check=False), "--probe-bytes", "at least 2")
    assert_bad(run("bench", "--probe-bytes", "8,1G", nproc=2, check=False), "--probe-bytes", "64 MiB")
    assert_bad(run("bench", "--probe-bytes", "0,8", nproc=2, check=False), "--probe-bytes", "probe size 0")
    path = tmp_path / "t.json"
    path.write_text(run("topo", "--json", "--no-probe", nproc=2).stdout)
    assert_bad(run("topo", "--topology", path, "--probe-bytes", "8,1M", nproc=2, check=False), "--probe-bytes",
               "--topology FILE")


def test_table_without_probe(tmp_path):
    table = run("topo", "--no-probe", "--ranks-per-node", 3).stdout
    assert "4 ranks on 2 nodes (virtual nodes of 3 ranks)" in table
    assert "node 0: ranks 0-2" in table and "node 1: ranks 3\n" in table
    assert table.count("no cost") == 3, table


def test_bad_topology_files_end_every_rank_with_one_line(tmp_path, topo_json):
    path = tmp_path / "four.json"
    path.write_text(topo_json)
    line = assert_bad(run("topo", "--topology", path, nproc=2, check=False), path)
    assert "4 ranks" in line and "2" in line
    broken = tmp_path / "broken.json"
    broken.write_text(topo_json[: len(topo_json) // 2])
    assert_bad(run("topo", "--topology", broken, check=False), broken, "not valid JSON")
    bad_field = tmp_path / "bad_field.json"
    t = json.loads(topo_json)
    t["ranks"][1]["node"] = 5
    bad_field.write_text(json.dumps(t))
    assert_bad(run("forward", "--model", tmp_path, "--layer", 1, "--input", "x.npy", "--output", "y.npy",
                   "--topology", bad_field, check=False), bad_field, "ranks[1].node")
    assert_bad(run("topo", "--topology", tmp_path / "missing.json", check=False), "missing.json")
    assert_bad(run("topo", "--topology", path, "--ranks-per-node", 2, check=False), "--ranks-per-node")
    assert_bad(run("bench", "--ranks-per-node", 0, check=False), "--ranks-per-node")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    maker = os.environ.get("MAKE_RANDOM_MOE")
    if not maker:
        pytest.skip("MAKE_RANDOM_MOE is not set")
    d = tmp_path_factory.mktemp("model") / "m"
    subprocess.run([maker, "--out", str(d), "--arch", "mixtral", "--hidden", "64", "--ffn", "96", "--experts", "8",
                    "--top-k", "2", "--tokens", "90"], check=True, capture_output=True, timeout=60)
    return d


def owners(n, ranks):
    """Rank r holds a contiguous block of n items (tokens or experts), the
    first `n mod ranks` blocks one larger."""
    base, extra = divmod(n, ranks)
    return np.repeat(np.arange(ranks), [base + (r < extra) for r in range(ranks)])


def routed_experts(model, ranks, ranks_per_node, layer=1, top_k=2, max_nodes=0, node_score_experts=2):
    """Each token's experts, derived from the router weights: Mixtral's
    scores are the softmax of the logits x · Wgᵀ, and it picks the top k.
    With max_nodes = M, node-limited routing by its definition: a node scores
    as the sum of its best `node_score_experts` scores, the M best nodes are
    kept (ties to the lower node), and the top k come from their experts."""
    from safetensors.numpy import load_file

    name = f"model.layers.{layer}.block_sparse_moe.gate.weight"
    gate = next(t[name] for f in sorted(model.glob("*.safetensors")) if name in (t := load_file(f)))
    x = np.load(model / "x.npy").astype(np.float64)
    logits = x @ gate.astype(np.float64).T
    scores = np.exp(logits - logits.max(axis=1, keepdims=True))
    scores /= scores.sum(axis=1, keepdims=True)
    expert_node = owners(gate.shape[0], ranks) // ranks_per_node
    if max_nodes > 0:
        nodes = expert_node.max() + 1
        node_score = np.stack([np.sort(scores[:, expert_node == n], axis=1)[:, ::-1][:, :node_score_experts].sum(1)
                               for n in range(nodes)], axis=1)
        kept = np.argsort(-node_score, axis=1, kind="stable")[:, :max_nodes]
        allowed = (expert_node[None, :, None] == kept[:, None, :]).any(axis=2)
        scores = np.where(allowed, scores, -np.inf)
    return np.argsort(-scores, axis=1, kind="stable")[:, :top_k], expert_node


def expected_copies(model, ranks, ranks_per_node, layer=1, top_k=2, **routing):
    """Token copies per link class of the routing that routed_experts
    derives: one per token and destination rank, however many of the
    token's experts that rank holds."""
    return expected_traffic(model, ranks, ranks_per_node, layer, top_k, **routing)[0]


def expected_traffic(model, ranks, ranks_per_node, layer=1, top_k=2, **routing):
    """(copies, slots) per link class: slots count every (token, expert)."""
    top, expert_node = routed_experts(model, ranks, ranks_per_node, layer, top_k, **routing)
    src = np.repeat(owners(len(top), ranks)[:, None], top_k, axis=1)
    dst = owners(len(expert_node), ranks)[top]
    # A slot whose rank an earlier slot of the same token already reaches adds no copy.
    first = np.array([[dst[t, j] not in dst[t, :j] for j in range(top_k)] for t in range(len(top))])
    node = lambda r: r // ranks_per_node  # noqa: E731

    def by_class(mask):
        return {"self": int(((src == dst) & mask).sum()),
                "same_node": int(((src != dst) & (node(src) == node(dst)) & mask).sum()),
                "other_node": int(((node(src) != node(dst)) & mask).sum())}
    return by_class(first), by_class(np.ones_like(first))


@pytest.mark.parametrize("ranks_per_node", [1, 2, 4])
def test_forward_counts_match_the_routing(tmp_path, model, ranks_per_node):
    out = tmp_path / "f.jsonl"
    run("forward", "--model", model, "--layer", 1, "--input", model / "x.npy", "--output", tmp_path / "y.npy",
        "--ranks-per-node", ranks_per_node, "--json", out, "--quiet")
    line = json.loads(out.read_text())
    assert line["nodes"] == 4 // ranks_per_node and line["ranks"] == 4
    want, slots = expected_traffic(model, 4, ranks_per_node)
    assert line["link_copies"] == want and line["link_slots"] == slots
    assert sum(slots.values()) == 90 * 2 and sum(want.values()) < sum(slots.values())
    # Forward: every copy travels out in the dispatch and back in the combine, float32 rows of 64.
    assert line["link_bytes"] == {k: 2 * v * 64 * 4 for k, v in want.items()}
    if ranks_per_node == 4:
        assert line["link_copies"]["other_node"] == 0 and line["link_bytes"]["other_node"] == 0


def test_forward_with_backward_and_bf16_wire_counts_bytes(tmp_path, model):
    out = tmp_path / "f.jsonl"
    gy = tmp_path / "gy.npy"
    np.save(gy, np.ones((90, 64), dtype=np.float32))
    run("forward", "--model", model, "--layer", 1, "--input", model / "x.npy", "--output", tmp_path / "y.npy",
        "--grad-output", gy, "--grads", tmp_path / "g.safetensors", "--wire", "bf16", "--ranks-per-node", 2,
        "--json", out, "--quiet")
    line = json.loads(out.read_text())
    want = expected_copies(model, 4, 2)
    assert line["link_copies"] == want and line["passes"] == 2
    assert line["link_bytes"] == {k: 4 * v * 64 * 2 for k, v in want.items()}


def bench(tmp_path, *args, nproc=4):
    out = tmp_path / "bench.jsonl"
    p = run("bench", "--hidden", 32, "--ffn", 48, "--experts", 8, "--top-k", 2, "--tokens", 40, "--iters", 2,
            "--warmup", 1, "--json", out, *args, nproc=nproc)
    return json.loads(out.read_text().splitlines()[-1]), p.stdout


@pytest.mark.parametrize("ranks_per_node", [2, 4])
def test_bench_reports_traffic_and_predicted_exchange(tmp_path, ranks_per_node):
    line, table = bench(tmp_path, "--ranks-per-node", ranks_per_node)
    copies, bytes_ = line["link_copies"], line["link_bytes"]
    assert line["nodes"] == 4 // ranks_per_node
    assert sum(line["link_slots"].values()) == 4 * 40 * 2
    assert all(copies[k] <= line["link_slots"][k] for k in copies)
    assert bytes_ == {k: 2 * v * 32 * 4 for k, v in copies.items()}
    assert (copies["other_node"] == 0) == (ranks_per_node == 4)
    assert line["exchange_predicted_ms"] > 0 and line["exchange_ms"] > 0 and line["exchange_in_step_ms"] > 0
    assert "token copies:" in table and "predicted" in table


def test_bench_without_costs_predicts_nothing(tmp_path):
    topo = tmp_path / "t.json"
    topo.write_text(run("topo", "--json", "--no-probe", "--ranks-per-node", 1, nproc=2).stdout)
    line, table = bench(tmp_path, "--topology", topo, "--pass", "fwd_bwd", nproc=2)
    assert line["exchange_predicted_ms"] is None and "predicted n/a" in table
    assert sum(line["link_slots"].values()) == 2 * 40 * 2 and line["link_copies"]["same_node"] == 0
    assert line["link_bytes"] == {k: 4 * v * 32 * 4 for k, v in line["link_copies"].items()}


def test_train_step_lines_report_traffic(tmp_path):
    config = train_config(tmp_path)
    for ranks_per_node, crossing in ((1, True), (2, False)):
        log = tmp_path / f"log{ranks_per_node}.jsonl"
        run("train", "--config", config, "--json", log, "--quiet", "--ranks-per-node", ranks_per_node,
            nproc=2)
        steps = [json.loads(s) for s in log.read_text().splitlines() if '"event":"step"' in s]
        assert [s["step"] for s in steps] == [2, 4]
        for s in steps:
            copies = s["link_copies"]
            assert sum(s["link_slots"].values()) == 2 * 64 * 2 * 2  # ranks x tokens x top-k x blocks
            assert 2 * 64 * 2 <= sum(copies.values()) < 2 * 64 * 2 * 2  # at least one copy per token and block
            assert (copies["other_node"] > 0) == crossing and (copies["same_node"] > 0) != crossing
            # Forward and backward: each copy crosses its link four times.
            assert s["link_bytes"] == {k: 4 * v * 32 * 4 for k, v in copies.items()}
        # The final evaluation's forward: every held-out token's copies, each
        # crossing its link twice (dispatch and combine).
        final = json.loads(log.read_text().splitlines()[-1])
        assert final["event"] == "final"
        copies = final["link_copies"]
        assert sum(final["link_slots"].values()) == final["val_tokens"] * 2 * 2  # tokens x top-k x blocks
        assert (copies["other_node"] > 0) == crossing and (copies["same_node"] > 0) != crossing
        assert final["link_bytes"] == {k: 2 * v * 32 * 4 for k, v in copies.items()}


@pytest.mark.parametrize("max_nodes", [0, 1])
def test_routing_stats_match_the_routing(tmp_path, model, max_nodes):
    """forward --routing-stats: copies[r][e], the tokens of rank r routed to
    expert e, against the routing derived from the router weights."""
    stats = tmp_path / "rs.json"
    run("forward", "--model", model, "--layer", 1, "--input", model / "x.npy", "--output", tmp_path / "y.npy",
        "--ranks-per-node", 2, "--max-nodes", max_nodes, "--routing-stats", stats, "--quiet")
    d = json.loads(stats.read_text())
    assert (d["format"], d["version"], d["command"], d["ranks"], d["experts"], d["steps"]) == (
        "switchyard-routing-stats", 1, "forward", 4, 8, 1)
    assert d["node_of_rank"] == [0, 0, 1, 1] and d["expert_owner"] == owners(8, 4).tolist()
    top, _ = routed_experts(model, 4, 2, max_nodes=max_nodes)
    want = np.zeros((4, 8), dtype=int)
    np.add.at(want, (np.repeat(owners(len(top), 4)[:, None], 2, axis=1), top), 1)
    assert [b["block"] for b in d["blocks"]] == [0]
    assert d["blocks"][0]["copies"] == want.tolist()


def test_train_and_bench_routing_stats_add_up(tmp_path):
    stats = tmp_path / "train.json"
    log = tmp_path / "log.jsonl"
    run("train", "--config", train_config(tmp_path, log_interval=1), "--json", log, "--quiet",
        "--routing-stats", stats, nproc=2)
    d = json.loads(stats.read_text())
    steps = [json.loads(s) for s in log.read_text().splitlines() if '"event":"step"' in s]
    assert d["command"] == "train" and d["steps"] == 4 and len(d["blocks"]) == 2
    # Every step's expert loads (all ranks, per block) sum to the file's
    # copies summed over ranks; each rank routed steps x tokens x top-k.
    loads = np.array([s["expert_load"] for s in steps]).sum(axis=0)
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    for b, block in enumerate(d["blocks"]):
        copies = np.array(block["copies"])
        assert copies.shape == (2, d["experts"])
        assert (copies.sum(axis=1) == 4 * 64 * 2).all()
        assert copies.sum(axis=0).tolist() == loads[b].tolist()
    bench_stats = tmp_path / "bench.json"
    run("bench", "--hidden", 64, "--ffn", 64, "--experts", 4, "--tokens", 32, "--iters", 1, "--warmup", 0,
        "--routing-stats", bench_stats, nproc=2)
    b = json.loads(bench_stats.read_text())
    assert b["command"] == "bench" and b["steps"] == 1
    assert (np.array(b["blocks"][0]["copies"]).sum(axis=1) == 32 * 2).all()
    p = run("bench", "--hidden", 64, "--ffn", 64, "--experts", 4, "--tokens", 32, "--iters", 1, "--warmup", 0,
            "--routing-stats", tmp_path / "missing" / "rs.json", nproc=2, check=False)
    assert_bad(p, "--routing-stats", "rs.json")
    assert not (tmp_path / "missing").exists()


def forward_line(tmp_path, model, *args):
    out = tmp_path / "f.jsonl"
    out.unlink(missing_ok=True)
    p = run("forward", "--model", model, "--layer", 1, "--input", model / "x.npy", "--output", tmp_path / "y.npy",
            "--json", out, *args)
    return json.loads(out.read_text()), p.stdout


@pytest.mark.parametrize("max_nodes,node_score_experts", [(1, 2), (1, 1), (1, 4), (2, 2)])
def test_forward_max_nodes_routes_as_node_limited_routing(tmp_path, model, max_nodes, node_score_experts):
    line, summary = forward_line(tmp_path, model, "--ranks-per-node", 2, "--max-nodes", max_nodes,
                                 "--node-score-experts", node_score_experts)
    assert (line["max_nodes"], line["node_score_experts"], line["link_penalty"]) == (max_nodes, node_score_experts, 0)
    routing = dict(max_nodes=max_nodes, node_score_experts=node_score_experts)
    top, expert_node = routed_experts(model, 4, 2, **routing)
    spans = np.array([len(set(expert_node[t])) for t in top])
    assert spans.max() <= max_nodes
    assert line["link_copies"] == expected_copies(model, 4, 2, **routing)
    assert f"at most {max_nodes} node" in summary and f"best {node_score_experts} expert" in summary
    if max_nodes == 1:
        # The limit bites: unlimited routing sends some tokens to both nodes.
        free, _ = routed_experts(model, 4, 2)
        assert max(len(set(expert_node[t])) for t in free) == 2


def test_forward_without_routing_flags_reports_the_defaults(tmp_path, model):
    line, summary = forward_line(tmp_path, model, "--ranks-per-node", 2)
    assert (line["max_nodes"], line["node_score_experts"], line["link_penalty"]) == (0, 2, 0)
    assert line["link_copies"] == expected_copies(model, 4, 2)
    assert "routing: no node limit; link penalty 0" in summary


def test_link_penalty_keeps_copies_off_the_dearest_link(tmp_path, model, topo_json):
    # Virtual nodes on one host measure shared memory for both node classes,
    # so which of them is dearer is noise: the file gives other_node the cost
    # of a network link (50 us, 100 MB/s), as a hand-written file may.
    t = json.loads(topo_json)
    t["links"]["other_node"] = {"latency_s": 50e-6, "bandwidth_bytes_per_s": 1e8, "probe": []}
    topo = tmp_path / "t.json"
    topo.write_text(json.dumps(t))
    plain, _ = forward_line(tmp_path, model, "--topology", topo)
    penalised, summary = forward_line(tmp_path, model, "--topology", topo, "--link-penalty", 10)
    assert penalised["link_penalty"] == 10 and "link penalty 10" in summary
    assert plain["link_copies"]["other_node"] > 0
    assert penalised["link_copies"]["other_node"] < plain["link_copies"]["other_node"]
    assert sum(penalised["link_slots"].values()) == sum(plain["link_slots"].values()) == 90 * 2
    # Forward probes the link costs itself when it needs them; whichever node
    # class is dearer, the rank's own experts are the cheapest.
    measured, _ = forward_line(tmp_path, model, "--ranks-per-node", 2, "--link-penalty", 10)
    assert measured["link_copies"]["self"] > plain["link_copies"]["self"]
    bench_plain, _ = bench(tmp_path, "--topology", topo)
    bench_penalised, table = bench(tmp_path, "--topology", topo, "--link-penalty", 10, "--max-nodes", 1)
    assert (bench_penalised["max_nodes"], bench_penalised["link_penalty"]) == (1, 10)
    assert bench_penalised["link_copies"]["other_node"] < bench_plain["link_copies"]["other_node"]
    assert bench_penalised["correct"] and "routing: each token's experts on at most 1 node" in table


def train_config(tmp_path, **extra):
    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    words = "the cat sat on a mat and dog ran to big red house in rain sun".split()
    (corpus / "words").write_text(" ".join(words[(i * 7) % 16] for i in range(12000)))
    cfg = {
        "data": {"dir": str(corpus), "min_bytes": 1000},
        "model": {"arch": "mixtral", "hidden": 32, "ffn": 32, "experts": 4, "top_k": 2, "layers": 2,
                  "context": 8, "embed": 8},
        "optimizer": {"type": "adamw", "lr": 0.01},
        "batch_tokens": 64, "steps": 4, "seed": 3, "log_interval": 2, "eval_interval": 0, "eval_tokens": 500,
        **extra,
    }
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    return path


def train_lines(tmp_path, config, *args):
    log = tmp_path / "log.jsonl"
    p = run("train", "--config", config, "--json", log, "--ranks-per-node", 2, *args)
    return [json.loads(s) for s in log.read_text().splitlines()], p.stdout


def test_train_with_max_nodes_reports_its_routing(tmp_path):
    lines, out = train_lines(tmp_path, train_config(tmp_path), "--max-nodes", 1, "--link-penalty", 0.5)
    steps = [s for s in lines if s["event"] == "step"]
    assert [s["step"] for s in steps] == [2, 4]
    for s in lines:
        if s["event"] in ("step", "final"):
            assert (s["max_nodes"], s["node_score_experts"], s["link_penalty"]) == (1, 2, 0.5), s
    for s in steps:
        assert s["nodes"] == 2 and sum(s["link_copies"].values()) == 4 * 64 * 2 * 2
        # One expert per rank, two per node, top-2 of one node: each token
        # takes both experts of its node, so the two have the same load.
        for load in s["expert_load"]:
            assert load[0] == load[1] and load[2] == load[3] and sum(load) == 4 * 64 * 2, load
    assert "routing: each token's experts on at most 1 node" in out
    # The configuration's "routing", and a flag over it.
    config = train_config(tmp_path, routing={"max_nodes": 3, "node_score_experts": 1})
    lines, _ = train_lines(tmp_path, config, "--max-nodes", 2, "--quiet")
    assert (lines[0]["max_nodes"], lines[0]["node_score_experts"], lines[0]["link_penalty"]) == (2, 1, 0)
    line = assert_bad(run("train", "--config", config, "--ranks-per-node", 2, check=False), config,
                      "routing.max_nodes", "[1, 2]", "got 3")
    assert "--max-nodes" not in line
    bad = train_config(tmp_path, routing={"max_nodes": -1})
    assert_bad(run("train", "--config", bad, check=False), bad, "routing.max_nodes", "at least 0")
    bad = train_config(tmp_path, routing={"link_penalty": 1, "hops": 2})
    assert_bad(run("train", "--config", bad, check=False), bad, "routing.hops", "not a known field")


def test_bad_routing_values_end_every_rank_with_one_line(tmp_path, model, topo_json):
    forward = ["forward", "--model", model, "--layer", 1, "--input", model / "x.npy", "--output", tmp_path / "y.npy",
               "--ranks-per-node", 2]
    assert_bad(run(*forward, "--max-nodes", -1, check=False), "--max-nodes", "an integer >= 0", "-1")
    assert_bad(run(*forward, "--max-nodes", 9, check=False), "--max-nodes", "[1, 2]", "got 9")
    assert_bad(run(*forward, "--node-score-experts", 0, check=False), "--node-score-experts", ">= 1")
    assert_bad(run(*forward, "--max-nodes", 1, "--node-score-experts", 5, check=False), "--node-score-experts",
               "[1, 4]", "got 5")
    assert_bad(run(*forward, "--link-penalty", -1, check=False), "--link-penalty", ">= 0", "-1")
    assert_bad(run("bench", "--max-nodes", 9, "--ranks-per-node", 2, check=False), "--max-nodes", "got 9")
    assert_bad(run("train", "--config", train_config(tmp_path), "--ranks-per-node", 2, "--max-nodes", 9,
                   check=False), "--max-nodes", "got 9")
    # Virtual nodes without link costs: nothing to price the links with.
    no_costs = tmp_path / "no_costs.json"
    no_costs.write_text(run("topo", "--json", "--no-probe", "--ranks-per-node", 2).stdout)
    for command in (forward[:-2], ["bench"], ["train", "--config", train_config(tmp_path)]):
        line = assert_bad(run(*command, "--topology", no_costs, "--link-penalty", 1, check=False), "--link-penalty",
                          "no cost", no_costs)
        assert "topology" in line


@pytest.mark.parametrize("wire", ["f32", "bf16"])
def test_hierarchical_exchange_matches_flat_bitwise_and_crosses_nodes_once(tmp_path, model, wire):
    """--exchange hierarchical: the same output and gradients, bit for bit, as
    flat on the same nodes; each token crosses to each other node once."""
    from safetensors.numpy import load_file

    gy = tmp_path / "gy.npy"
    np.save(gy, np.random.default_rng(5).standard_normal((90, 64)).astype(np.float32))
    results = {}
    for kind in ("flat", "hierarchical"):
        d = tmp_path / kind
        d.mkdir()
        run("forward", "--model", model, "--layer", 1, "--input", model / "x.npy", "--output", d / "y.npy",
            "--grad-output", gy, "--grads", d / "g.safetensors", "--ranks-per-node", 2, "--exchange", kind,
            "--wire", wire, "--json", d / "f.jsonl", "--quiet")
        results[kind] = (np.load(d / "y.npy"), load_file(d / "g.safetensors"), json.loads((d / "f.jsonl").read_text()))
    (y_flat, g_flat, flat), (y_hier, g_hier, hier) = results["flat"], results["hierarchical"]
    assert flat["exchange"] == "flat" and hier["exchange"] == "hierarchical"
    assert y_flat.tobytes() == y_hier.tobytes()
    assert g_flat.keys() == g_hier.keys()
    for name in g_flat:
        assert g_flat[name].tobytes() == g_hier[name].tobytes(), name
    # The per-node bound, from the router weights: one copy per token and other node.
    top, expert_node = routed_experts(model, 4, 2)
    token_node = owners(len(top), 4) // 2
    across = sum(len(set(expert_node[top[t]]) - {token_node[t]}) for t in range(len(top)))
    assert hier["link_copies"]["other_node"] == across
    assert flat["link_copies"]["other_node"] >= across


def test_bad_exchange_is_refused_naming_the_flag(tmp_path, model):
    p = run("forward", "--model", model, "--layer", 1, "--input", model / "x.npy", "--output", tmp_path / "y.npy",
            "--exchange", "ring", check=False)
    assert_bad(p, "--exchange")
    assert not (tmp_path / "y.npy").exists()


def test_auto_exchange_follows_the_cost_model(tmp_path, topo_json):
    """auto: hierarchical when crossing nodes is dear (fewer, fuller messages
    across), flat when every link costs the same (the second hop is extra),
    and flat when the topology has no costs."""
    topo = json.loads(topo_json)

    def with_links(name, other_latency, other_bandwidth, round_s=0.0):
        cheap = {"latency_s": 0.0, "bandwidth_bytes_per_s": 1e12, "probe": []}
        t = dict(topo, links={"self": cheap, "same_node": cheap,
                              "other_node": {"latency_s": other_latency, "bandwidth_bytes_per_s": other_bandwidth,
                                             "probe": []}}, round_s=round_s)
        path = tmp_path / name
        path.write_text(json.dumps(t))
        return path

    dear, even = with_links("dear.json", 1e-3, 1e6), with_links("even.json", 0.0, 1e12)
    assert bench(tmp_path, "--topology", dear, "--exchange", "auto")[0]["exchange"] == "hierarchical"
    assert bench(tmp_path, "--topology", even, "--exchange", "auto")[0]["exchange"] == "flat"
    # A round dearer than all the bytes saved: hierarchical's second round loses.
    slow_rounds = with_links("rounds.json", 1e-3, 1e6, round_s=10.0)
    assert bench(tmp_path, "--topology", slow_rounds, "--exchange", "auto")[0]["exchange"] == "flat"
    none = tmp_path / "none.json"
    none.write_text(run("topo", "--json", "--no-probe", "--ranks-per-node", 2).stdout)
    assert bench(tmp_path, "--topology", none, "--exchange", "auto")[0]["exchange"] == "flat"
