"""The command-line side of a step's schedule: ``--overlap``, ``--chunks``,
``--workers``, ``--trace`` and ``--dot`` on ``switchyard forward``, ``bench``
and ``train``.

Run (from the build directory):
    SWITCHYARD_BIN=$PWD/launch/switchyard MAKE_RANDOM_MOE=$PWD/examples/make_random_moe OMP_NUM_THREADS=1 \
        python -m pytest -q -p no:cacheprovider ../tests/python/test_schedule_cli.py

Environment:
    SWITCHYARD_BIN   the switchyard binary (the module is skipped if unset)
    MAKE_RANDOM_MOE  the make_random_moe example (tests that need a checkpoint are skipped if unset)
    MPIEXEC          MPI launcher (default ``mpirun``; Open MPI flags are used)

Covers:
  * forward + backward at 1, 2 and 3 ranks: outputs and every gradient are
    bit-for-bit the same for ``--chunks 1 --overlap off`` and other chunk
    counts, overlap on/off and 1-3 workers (parsed arrays and file bytes);
  * the Chrome trace of forward (3 ranks, with the backward) and bench: one
    pid per rank, one track per worker plus one for communication, spans on a
    track nest or are disjoint, every task of the DOT graphs runs once per
    rank and after its predecessors, exchanges in the graph's order with
    byte counts that add up;
  * the DOT graphs: node and edge counts and edges against a hand-derived
    fixture, node shapes, the communication order; ``dot`` parses them if it
    is installed;
  * bad schedule flags: non-zero exit on every rank, one
    ``switchyard: error:`` line naming the flag, no output file left behind;
  * train: the final losses are exactly equal for different schedules, and
    ``--dtype bf16`` either trains (finite loss, also schedule-independent)
    or is refused with one error line.

"""

import collections
import heapq
import json
import math
import os
import re
import shlex
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

BIN = os.environ.get("SWITCHYARD_BIN")
if not BIN:
    pytest.skip("SWITCHYARD_BIN is not set", allow_module_level=True)
MAKE_RANDOM_MOE = os.environ.get("MAKE_RANDOM_MOE")
MPIEXEC = shlex.split(os.environ.get("MPIEXEC", "mpirun"))
REPO = Path(__file__).resolve().parents[2]
TRAIN_SMALL = REPO / "examples" / "train_small.json"
TIMEOUT = 120
ERR = "switchyard: error:"
CRASH = ("Segmentation fault", "core dumped", "terminate called", "Aborted", "MPI_ABORT", "Bus error",
         "Floating point exception")

# The random checkpoint: small enough that a run takes well under a second.
HIDDEN, FFN, EXPERTS, TOP_K, TOKENS, LAYER = 32, 24, 8, 2, 150, 1
COMM_PHASES = {"plan", "dispatch", "combine", "combine_grad", "dispatch_grad"}
EXCHANGES = {"dispatch", "combine", "combine_grad", "dispatch_grad"}


def env():
    e = dict(os.environ)
    e.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
             OMPI_MCA_rmaps_base_oversubscribe="1")
    return e


def describe(argv, p):
    return f"{' '.join(map(str, argv))}\nexit code {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"


def launch(sub, args, ranks=2, check=True, rc_dir=None):
    """Runs `switchyard sub args` on `ranks` ranks (None: without mpirun).

    With rc_dir, every rank runs under a shell that writes its own exit code
    to rc_dir/rc.<rank> (and exits 0, so that mpirun lets the others finish).
    """
    prog = [BIN, sub, *map(str, args)]
    if ranks is None:
        argv = prog
    else:
        argv = [*MPIEXEC, "-np", str(ranks), "--oversubscribe"]
        if rc_dir is not None:
            script = ('rc=0; "$0" "$@" || rc=$?; echo $rc > ' + shlex.quote(str(rc_dir)) +
                      '/rc.${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-0}}; exit 0')
            argv += ["sh", "-c", script]
        argv += prog
    p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=env())
    if check:
        assert p.returncode == 0, describe(argv, p)
    p.argv = argv
    return p


def read_safetensors(path):
    """name -> float32 array, parsed by hand (8-byte header size, JSON header, data)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info)
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + begin:8 + n + end], dtype="<f4").reshape(info["shape"])
    return out


NODE = re.compile(r'^\s*task(\d+) \[label="([^"]*)" shape=(box|ellipse)\];$')
EDGE = re.compile(r"^\s*task(\d+) -> task(\d+);$")


def parse_dot(path):
    """The digraphs of a --dot file: [{"nodes": {id: (label, shape)}, "edges": [(from, to)]}].

    Every line must be a digraph header, a node, an edge or a closing brace.
    """
    graphs, g = [], None
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        if re.match(r"^digraph \w+ \{$", line):
            assert g is None, f"nested digraph: {line!r}"
            g = {"nodes": {}, "edges": []}
        elif line == "}":
            assert g is not None, "unbalanced '}'"
            graphs.append(g)
            g = None
        elif m := NODE.match(line):
            assert g is not None and int(m[1]) not in g["nodes"], line
            g["nodes"][int(m[1])] = (m[2], m[3])
        elif m := EDGE.match(line):
            assert g is not None, line
            g["edges"].append((int(m[1]), int(m[2])))
        else:
            raise AssertionError(f"{path}: unexpected DOT line {line!r}")
    assert g is None, "unterminated digraph"
    for g in graphs:
        assert sorted(g["nodes"]) == list(range(len(g["nodes"]))), "node ids are not 0..n-1"
        labels = [label for label, _ in g["nodes"].values()]
        assert len(set(labels)) == len(labels), "duplicate task names"
        for a, b in g["edges"]:
            assert a in g["nodes"] and b in g["nodes"], (a, b)
        assert len(set(g["edges"])) == len(g["edges"]), "duplicate edges"
    return graphs


def labelled_edges(g):
    return {(g["nodes"][a][0], g["nodes"][b][0]) for a, b in g["edges"]}


def phase(name):
    return name.split("[")[0]


def chunk_count(graphs):
    return sum(1 for label, _ in graphs[0]["nodes"].values() if phase(label) == "experts")


def topological_order(g):
    """Smallest id first among the ready tasks; None if the graph has a cycle."""
    indegree = {n: 0 for n in g["nodes"]}
    succ = collections.defaultdict(list)
    for a, b in g["edges"]:
        indegree[b] += 1
        succ[a].append(b)
    ready = [n for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        n = heapq.heappop(ready)
        order.append(n)
        for s in succ[n]:
            indegree[s] -= 1
            if indegree[s] == 0:
                heapq.heappush(ready, s)
    return order if len(order) == len(g["nodes"]) else None


def comm_order(g):
    """The order the communication thread runs the exchanges in (docs/task-graph.md): the
    smallest-id-first topological order of the whole graph, restricted to communication tasks."""
    order = topological_order(g)
    assert order is not None, "the graph has a cycle"
    return [g["nodes"][n][0] for n in order if g["nodes"][n][1] == "ellipse"]


def ns(value):
    return round(float(value) * 1000)


def check_trace(path, graphs, ranks, workers, repeats=1, slot_bytes=None, row_bytes=None, top_k=None):
    """Checks a --trace file against the --dot graphs of the same run.

    repeats: how often each graph ran in the traced step (train: once per layer).
    slot_bytes: the bytes of one row per (token, expert) slot, summed over
      ranks; a token crosses to each rank once, so the dispatch moves at most
      that, and at least a top_k-th of it (dropless: every token has a row).
    row_bytes, top_k: every exchange is whole rows of row_bytes bytes; the
      backward's return rows also carry top_k f32 routing-weight gradients.
    """
    trace = json.loads(Path(path).read_text())
    events = trace["traceEvents"]
    assert isinstance(events, list) and events
    assert {e["ph"] for e in events} <= {"X", "M"}, {e["ph"] for e in events}
    assert {e["pid"] for e in events} == set(range(ranks)), f"pids {sorted({e['pid'] for e in events})}"

    def wire_row_bytes(name):
        return row_bytes + 4 * top_k if phase(name) == "dispatch_grad" else row_bytes

    # Metadata: a name for every process and for every track.
    meta = [e for e in events if e["ph"] == "M"]
    for r in range(ranks):
        names = {(e["name"], e["tid"]): e["args"]["name"] for e in meta if e["pid"] == r}
        assert names.get(("process_name", 0)) == f"rank {r}", names
        for w in range(workers):
            assert names.get(("thread_name", w)) == f"worker {w}", names
        assert names.get(("thread_name", workers)) == "comm", names

    spans = [e for e in events if e["ph"] == "X"]
    shapes = {label: shape for g in graphs for label, shape in g["nodes"].values()}
    for e in spans:
        assert e["cat"] in ("compute", "comm"), e
        assert e["name"] in shapes, f"trace task {e['name']!r} is not in the DOT graphs"
        assert (e["cat"] == "comm") == (shapes[e["name"]] == "ellipse"), e
        # Compute tasks on the workers' tracks, exchanges on the communication track.
        assert (e["tid"] == workers) if e["cat"] == "comm" else (0 <= e["tid"] < workers), e
        assert float(e["ts"]) >= 0 and float(e["dur"]) >= 0, e
        assert isinstance(e["args"]["bytes"], int) and e["args"]["bytes"] >= 0, e

    # On each track, spans nest or are disjoint.
    by_track = collections.defaultdict(list)
    for e in spans:
        by_track[(e["pid"], e["tid"])].append((ns(e["ts"]), ns(e["ts"]) + ns(e["dur"]), e["name"]))
    for track, items in by_track.items():
        stack = []
        for begin, end, name in sorted(items, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1][1] <= begin:
                stack.pop()
            if stack:
                assert end <= stack[-1][1], f"{track}: {name} [{begin}, {end}] overlaps {stack[-1]}"
            stack.append((begin, end, name))

    for r in range(ranks):
        mine = [e for e in spans if e["pid"] == r]
        # Every task of every graph ran `repeats` times on every rank, nothing else did.
        counts = collections.Counter(e["name"] for e in mine)
        expected = {label: repeats for label in shapes}
        assert counts == expected, f"rank {r}: {dict(counts)} != {expected}"
        # Exchanges in the graph's order (the same on every rank).
        comm = [e["name"] for e in sorted((e for e in mine if e["cat"] == "comm"), key=lambda e: ns(e["ts"]))]
        # (train: each layer's forward graph, then each layer's backward graph)
        assert comm == [name for g in graphs for _ in range(repeats) for name in comm_order(g)], f"rank {r}: {comm}"
        if repeats == 1:
            # Each task started after all its predecessors had finished.
            at = {e["name"]: (ns(e["ts"]), ns(e["ts"]) + ns(e["dur"])) for e in mine}
            for g in graphs:
                for a, b in labelled_edges(g):
                    assert at[a][1] <= at[b][0], f"rank {r}: {b} started before {a} finished: {at[a]} {at[b]}"
        # Byte counts: exchanges move whole rows; plans and compute report none.
        by_name = collections.defaultdict(list)
        for e in mine:
            by_name[e["name"]].append(e["args"]["bytes"])
            if phase(e["name"]) in EXCHANGES:
                assert e["args"]["bytes"] > 0, e
                if row_bytes:
                    assert e["args"]["bytes"] % wire_row_bytes(e["name"]) == 0, e
            else:
                assert e["args"]["bytes"] == 0, e
        # The backward's exchanges mirror the forward's, chunk by chunk.
        for name in list(by_name):
            if phase(name) == "dispatch" and "combine_grad" + name[len("dispatch"):] in by_name:
                c = name[len("dispatch"):]
                assert sorted(by_name[name]) == sorted(by_name["combine_grad" + c]), (r, name)
                if row_bytes:
                    back = [b // wire_row_bytes("dispatch_grad") * row_bytes for b in by_name["dispatch_grad" + c]]
                    assert sorted(by_name["combine" + c]) == sorted(back), (r, name)
    if slot_bytes is not None:
        # Dropless: each token goes once to each rank that holds its slots,
        # and its partial result comes back the same way.
        totals = [sum(e["args"]["bytes"] for e in spans if phase(e["name"]) == what)
                  for what in ("dispatch", "combine")]
        assert totals[0] == totals[1], totals
        assert slot_bytes // top_k <= totals[0] <= slot_bytes, (totals, slot_bytes)
    return trace


# ---- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    if not MAKE_RANDOM_MOE:
        pytest.skip("MAKE_RANDOM_MOE is not set")
    d = tmp_path_factory.mktemp("schedule_model")
    m = d / "m"
    subprocess.run([MAKE_RANDOM_MOE, "--out", str(m), "--arch", "qwen2_moe", "--hidden", str(HIDDEN), "--ffn",
                    str(FFN), "--experts", str(EXPERTS), "--top-k", str(TOP_K), "--tokens", str(TOKENS), "--seed", "7"],
                   check=True, capture_output=True, timeout=60)
    g = d / "g.npy"
    np.save(g, np.random.default_rng(11).standard_normal((TOKENS, HIDDEN)).astype(np.float32))
    return {"dir": m, "x": m / "x.npy", "g": g}


def forward_args(model, out, backward=True):
    args = ["--model", model["dir"], "--layer", LAYER, "--input", model["x"], "--output", out / "y.npy", "--quiet"]
    if backward:
        args += ["--grad-output", model["g"], "--grads", out / "grads.safetensors"]
    return args


@pytest.fixture(scope="module")
def train_config():
    if not TRAIN_SMALL.is_file():
        pytest.skip(f"{TRAIN_SMALL} is missing")
    cfg = json.loads(TRAIN_SMALL.read_text())
    if not Path(cfg["data"]["dir"]).is_dir():
        pytest.skip(f"the corpus of {TRAIN_SMALL.name} ({cfg['data']['dir']}) is not installed")
    return cfg


# ---- 1. bitwise schedule independence of forward + backward ------------------------------------------------------

# (chunks, overlap, workers); None: the flag is left out (its default).
SCHEDULES = [
    ("2", "on", 1),
    ("2", "off", 2),
    ("3", "on", 2),
    ("4", "off", 1),
    ("5", "on", 3),
    ("7", "off", 3),
    ("8", "on", 2),
    (None, None, None),  # defaults: --chunks auto --overlap on --workers 1
]


def schedule_flags(chunks, overlap, workers):
    args = []
    for flag, value in (("--chunks", chunks), ("--overlap", overlap), ("--workers", workers)):
        if value is not None:
            args += [flag, value]
    return args


def assert_same_results(ref_dir, out, what):
    """y.npy and grads.safetensors of two runs are bit-for-bit equal (parsed and as bytes)."""
    y_ref, y = np.load(ref_dir / "y.npy"), np.load(out / "y.npy")
    assert y.dtype == y_ref.dtype and y.shape == y_ref.shape, what
    assert np.array_equal(y, y_ref), f"{what}: output differs, max |diff| {np.abs(y - y_ref).max():.3g}"
    g_ref, g = read_safetensors(ref_dir / "grads.safetensors"), read_safetensors(out / "grads.safetensors")
    assert sorted(g) == sorted(g_ref), what
    for name in g_ref:
        assert g[name].shape == g_ref[name].shape, (what, name)
        assert np.array_equal(g[name], g_ref[name]), \
            f"{what}: gradient {name} differs, max |diff| {np.abs(g[name] - g_ref[name]).max():.3g}"
    assert (out / "y.npy").read_bytes() == (ref_dir / "y.npy").read_bytes(), what
    assert (out / "grads.safetensors").read_bytes() == (ref_dir / "grads.safetensors").read_bytes(), what


def check_reference(ref_dir):
    """The reference is not trivially comparable: real values, every gradient there."""
    y_ref = np.load(ref_dir / "y.npy")
    g_ref = read_safetensors(ref_dir / "grads.safetensors")
    assert y_ref.shape == (TOKENS, HIDDEN) and np.isfinite(y_ref).all() and np.abs(y_ref).max() > 0
    assert g_ref["hidden_states"].shape == (TOKENS, HIDDEN)
    assert any(".mlp.gate.weight" in k for k in g_ref) and any("experts." in k for k in g_ref)
    assert any("shared_expert" in k for k in g_ref)
    for name, a in g_ref.items():
        assert np.isfinite(a).all(), name
    assert np.abs(g_ref["hidden_states"]).max() > 0


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_forward_and_gradients_are_bitwise_schedule_independent(tmp_path, model, ranks):
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    launch("forward", [*forward_args(model, ref_dir), "--chunks", 1, "--overlap", "off"], ranks)
    check_reference(ref_dir)
    for i, (chunks, overlap, workers) in enumerate(SCHEDULES):
        out = tmp_path / f"s{i}"
        out.mkdir()
        launch("forward", [*forward_args(model, out), "--dot", out / "graph.dot",
                           *schedule_flags(chunks, overlap, workers)], ranks)
        what = f"{ranks} rank(s), chunks {chunks}, overlap {overlap}, workers {workers}"
        # The schedule asked for is the one that ran (auto: one chunk for this few tokens on one node).
        assert chunk_count(parse_dot(out / "graph.dot")) == int(chunks or 1), what
        assert_same_results(ref_dir, out, what)


def test_bf16_forward_and_gradients_are_bitwise_schedule_independent(tmp_path, model):
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    p = launch("forward", [*forward_args(model, ref_dir), "--dtype", "bf16", "--chunks", 1, "--overlap", "off"], 3,
               check=False)
    if p.returncode != 0:
        # A build without bf16 gradients refuses with one line naming the data type.
        errors = [line for line in p.stderr.splitlines() if line.startswith(ERR)]
        assert len(errors) == 1 and "bf16" in errors[0], describe(p.argv, p)
        return
    check_reference(ref_dir)
    for i, (chunks, overlap, workers) in enumerate([("3", "on", 2), ("8", "off", 3), ("5", "on", 1)]):
        out = tmp_path / f"s{i}"
        out.mkdir()
        launch("forward", [*forward_args(model, out), "--dtype", "bf16", *schedule_flags(chunks, overlap, workers)], 3)
        assert_same_results(ref_dir, out, f"bf16, chunks {chunks}, overlap {overlap}, workers {workers}")


# ---- 2. the Chrome trace --------------------------------------------------------------------------------------------


TRACED = {"ranks": 3, "chunks": 3, "workers": 2}


@pytest.fixture(scope="module")
def traced_forward(tmp_path_factory, model):
    """forward + backward at 3 ranks with --chunks 3 --workers 2, --trace and --dot."""
    d = tmp_path_factory.mktemp("traced")
    launch("forward", [*forward_args(model, d), "--chunks", TRACED["chunks"], "--workers", TRACED["workers"],
                       "--trace", d / "trace.json", "--dot", d / "graph.dot"], TRACED["ranks"])
    return d


def check_traced_forward(trace_path, graphs):
    return check_trace(trace_path, graphs, TRACED["ranks"], TRACED["workers"],
                       slot_bytes=TOKENS * TOP_K * HIDDEN * 4, row_bytes=HIDDEN * 4, top_k=TOP_K)


def test_forward_trace_of_every_rank(traced_forward):
    graphs = parse_dot(traced_forward / "graph.dot")
    assert len(graphs) == 2, "forward with --grad-output: a forward and a backward graph"
    assert chunk_count(graphs) == TRACED["chunks"]
    trace = check_traced_forward(traced_forward / "trace.json", graphs)
    assert trace.get("displayTimeUnit") in (None, "ms", "ns")


def perturbed(events, how):
    """A copy of a valid trace's events, broken in one way."""
    events = json.loads(json.dumps(events))
    spans = [e for e in events if e["ph"] == "X"]

    def find(pid, name):
        return next(e for e in spans if e["pid"] == pid and e["name"] == name)

    if how == "overlap":  # a span that starts inside another on its track and ends after it
        a, b = sorted((e for e in spans if e["pid"] == 1 and e["tid"] == 0), key=lambda e: ns(e["ts"]))[:2]
        b["ts"] = float(a["ts"]) + float(a["dur"]) / 2
        b["dur"] = float(a["dur"]) + 1000.0
    elif how == "missing":  # one task of one rank did not run
        events.remove(find(2, "experts[1]"))
    elif how == "twice":  # one task ran twice
        events.append(dict(find(0, "route_grad"), ts=float(find(0, "route_grad")["ts"]) + 1e6))
    elif how == "edge":  # a task that starts before its predecessor ends
        e, c = find(1, "experts[0]"), find(1, "combine[0]")
        c["ts"] = float(e["ts"]) + float(e["dur"]) / 2
        c["dur"] = 0.001
    elif how == "comm_order":  # two exchanges swapped on the communication track
        a, b = find(0, "dispatch[2]"), find(0, "combine[0]")
        a["ts"], b["ts"] = b["ts"], a["ts"]
        a["dur"], b["dur"] = b["dur"], a["dur"]
    elif how == "no_bytes":
        find(2, "combine[1]")["args"]["bytes"] = 0
    elif how == "bytes":  # not whole rows
        find(2, "dispatch[0]")["args"]["bytes"] += 4
    elif how == "mirror":  # the backward's exchange differs from the forward's
        find(0, "dispatch_grad[1]")["args"]["bytes"] += HIDDEN * 4
    elif how == "track":  # an exchange on a worker's track
        find(1, "dispatch[1]")["tid"] = 0
    elif how == "rank":  # a rank missing
        events[:] = [e for e in events if e["pid"] != 2]
    else:
        raise ValueError(how)
    return events


@pytest.mark.parametrize("how", ["overlap", "missing", "twice", "edge", "comm_order", "no_bytes", "bytes", "mirror",
                                 "track", "rank"])
def test_trace_check_rejects_a_broken_trace(tmp_path, traced_forward, how):
    # The checks above can fail: each way of breaking a valid trace is caught.
    graphs = parse_dot(traced_forward / "graph.dot")
    trace = json.loads((traced_forward / "trace.json").read_text())
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(dict(trace, traceEvents=perturbed(trace["traceEvents"], how))))
    with pytest.raises(AssertionError):
        check_traced_forward(broken, graphs)


def test_forward_trace_with_overlap_off_and_no_backward(tmp_path, model):
    launch("forward", [*forward_args(model, tmp_path, backward=False), "--chunks", 4, "--overlap", "off",
                       "--trace", tmp_path / "trace.json", "--dot", tmp_path / "graph.dot"], 2)
    graphs = parse_dot(tmp_path / "graph.dot")
    assert len(graphs) == 1, "forward without --grad-output: only the forward graph"
    trace = check_trace(tmp_path / "trace.json", graphs, 2, 1, slot_bytes=TOKENS * TOP_K * HIDDEN * 4,
                        row_bytes=HIDDEN * 4, top_k=TOP_K)
    # In sequence: no two spans of a rank overlap, whatever their track.
    for r in range(2):
        spans = sorted((ns(e["ts"]), ns(e["ts"]) + ns(e["dur"])) for e in trace["traceEvents"]
                       if e["ph"] == "X" and e["pid"] == r)
        for (_, end), (begin, _) in zip(spans, spans[1:]):
            assert end <= begin


@pytest.mark.parametrize("overlap,workers", [("on", 2), ("off", 1)])
def test_bench_trace(tmp_path, overlap, workers):
    ranks, tokens, hidden = 2, 40, 32
    launch("bench", ["--hidden", hidden, "--ffn", 48, "--experts", 6, "--top-k", 2, "--tokens", tokens,
                     "--iters", 2, "--warmup", 1, "--pass", "fwd_bwd", "--chunks", 2, "--overlap", overlap,
                     "--workers", workers, "--json", tmp_path / "bench.jsonl", "--trace", tmp_path / "trace.json",
                     "--dot", tmp_path / "graph.dot"], ranks)
    line = json.loads((tmp_path / "bench.jsonl").read_text())
    assert line["correct"] is True and line["chunks"] == 2, line
    graphs = parse_dot(tmp_path / "graph.dot")
    assert len(graphs) == 2 and chunk_count(graphs) == 2
    # One traced step: the last one.
    check_trace(tmp_path / "trace.json", graphs, ranks, workers, slot_bytes=ranks * tokens * 2 * hidden * 4,
                row_bytes=hidden * 4, top_k=2)


# ---- 3. the DOT graphs ------------------------------------------------------------------------------------------------

# Hand-derived from the task lists (docs/task-graph.md) and the dependency rules:
#   forward, per chunk: route -> plan -> permute -> dispatch -> experts -> combine -> unpermute (7 tasks, 6 edges),
#     plus experts[c-1] -> experts[c] (one chunk's experts at a time): 7C nodes, 6C + (C - 1) edges;
#   backward, per chunk: unpermute_grad -> combine_grad -> experts_grad -> dispatch_grad -> permute_grad -> route_grad
#     and experts_grad -> expert_weights_grad (5 tasks, 6 edges), plus experts_grad[c-1] -> experts_grad[c] and the
#     two once-per-step tasks: 5C + 2 nodes, 6C + (C - 1) edges.
# chunks: (forward nodes, forward edges, backward nodes, backward edges)
DOT_COUNTS = {1: (7, 6, 7, 6), 2: (14, 13, 12, 13), 3: (21, 20, 17, 20), 5: (35, 34, 27, 34), 8: (56, 55, 42, 55)}

FORWARD_EDGES_2 = {
    ("route[0]", "plan[0]"), ("plan[0]", "permute[0]"), ("permute[0]", "dispatch[0]"),
    ("dispatch[0]", "experts[0]"), ("experts[0]", "combine[0]"), ("combine[0]", "unpermute[0]"),
    ("route[1]", "plan[1]"), ("plan[1]", "permute[1]"), ("permute[1]", "dispatch[1]"),
    ("dispatch[1]", "experts[1]"), ("experts[1]", "combine[1]"), ("combine[1]", "unpermute[1]"),
    ("experts[0]", "experts[1]"),
}
BACKWARD_EDGES_2 = {
    ("unpermute_grad[0]", "combine_grad[0]"), ("combine_grad[0]", "experts_grad[0]"),
    ("experts_grad[0]", "dispatch_grad[0]"), ("dispatch_grad[0]", "permute_grad[0]"),
    ("experts_grad[0]", "expert_weights_grad"), ("permute_grad[0]", "route_grad"),
    ("unpermute_grad[1]", "combine_grad[1]"), ("combine_grad[1]", "experts_grad[1]"),
    ("experts_grad[1]", "dispatch_grad[1]"), ("dispatch_grad[1]", "permute_grad[1]"),
    ("experts_grad[1]", "expert_weights_grad"), ("permute_grad[1]", "route_grad"),
    ("experts_grad[0]", "experts_grad[1]"),
}
# The communication thread's order for 3 chunks: all plans first, then the exchanges interleaved so that while chunk
# c's experts compute the link carries chunk c+1's dispatch and chunk c-1's combine (docs/task-graph.md).
FORWARD_COMM_3 = ["plan[0]", "plan[1]", "plan[2]", "dispatch[0]", "dispatch[1]", "combine[0]", "dispatch[2]",
                  "combine[1]", "combine[2]"]
BACKWARD_COMM_3 = ["combine_grad[0]", "combine_grad[1]", "dispatch_grad[0]", "combine_grad[2]", "dispatch_grad[1]",
                   "dispatch_grad[2]"]


def expected_labels(chunks):
    fwd = {f"{p}[{c}]" for p in ("route", "plan", "permute", "dispatch", "experts", "combine", "unpermute")
           for c in range(chunks)}
    bwd = {f"{p}[{c}]" for p in ("unpermute_grad", "combine_grad", "experts_grad", "dispatch_grad", "permute_grad")
           for c in range(chunks)} | {"expert_weights_grad", "route_grad"}
    return fwd, bwd


@pytest.mark.parametrize("chunks", sorted(DOT_COUNTS))
def test_dot_graph_structure(tmp_path, model, chunks):
    dot = tmp_path / "graph.dot"
    launch("forward", [*forward_args(model, tmp_path), "--chunks", chunks, "--dot", dot], 2)
    graphs = parse_dot(dot)
    assert len(graphs) == 2
    fwd, bwd = graphs
    assert (len(fwd["nodes"]), len(fwd["edges"]), len(bwd["nodes"]), len(bwd["edges"])) == DOT_COUNTS[chunks]
    want_fwd, want_bwd = expected_labels(chunks)
    assert {label for label, _ in fwd["nodes"].values()} == want_fwd
    assert {label for label, _ in bwd["nodes"].values()} == want_bwd
    for g in graphs:
        assert topological_order(g) is not None, "cycle"
        for label, shape in g["nodes"].values():
            assert shape == ("ellipse" if phase(label) in COMM_PHASES else "box"), (label, shape)
    if chunks == 2:
        assert labelled_edges(fwd) == FORWARD_EDGES_2
        assert labelled_edges(bwd) == BACKWARD_EDGES_2
    if chunks == 3:
        assert comm_order(fwd) == FORWARD_COMM_3
        assert comm_order(bwd) == BACKWARD_COMM_3
    if shutil.which("dot"):
        p = subprocess.run(["dot", "-Tcanon", str(dot)], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and not p.stderr.strip(), p.stderr
        assert p.stdout.count("digraph") == 2


def test_dot_parses_with_graphviz(tmp_path, model):
    if not shutil.which("dot"):
        pytest.skip("the Graphviz 'dot' program is not installed")
    dot = tmp_path / "graph.dot"
    launch("forward", [*forward_args(model, tmp_path), "--chunks", 3, "--dot", dot], 2)
    p = subprocess.run(["dot", "-Tsvg", "-o", str(tmp_path / "graph.svg"), str(dot)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "graph.svg").stat().st_size > 0


# ---- 4. bad schedule flags ----------------------------------------------------------------------------------------

BAD_FLAGS = [
    (["--chunks", "0"], "--chunks", "'0'"),
    (["--chunks", "abc"], "--chunks", "'abc'"),
    (["--chunks", "65"], "--chunks", "'65'"),
    (["--chunks", "2.5"], "--chunks", "'2.5'"),
    (["--overlap", "maybe"], "--overlap", "maybe"),
    (["--workers", "0"], "--workers", "0"),
]
BAD_IDS = [" ".join(flags) for flags, _, _ in BAD_FLAGS]


def assert_refused(p, rc_dir, ranks, *needles):
    text = p.stdout + p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith(ERR)]
    assert len(errors) == 1, describe(p.argv, p)
    for n in needles:
        assert n in errors[0], f"{n!r} not in {errors[0]!r}"
    for marker in CRASH:
        assert marker not in text, describe(p.argv, p)
    if rc_dir is None:
        assert p.returncode != 0, describe(p.argv, p)
    else:
        codes = {f.name: f.read_text().strip() for f in rc_dir.iterdir()}
        assert sorted(codes) == [f"rc.{r}" for r in range(ranks)], (codes, describe(p.argv, p))
        assert all(c != "0" for c in codes.values()), (codes, describe(p.argv, p))


def bad_run(tmp_path, ranks):
    out = tmp_path / "out"
    out.mkdir()
    rc_dir = None
    if ranks is not None:
        rc_dir = tmp_path / "rc"
        rc_dir.mkdir()
    return out, rc_dir


@pytest.mark.parametrize("ranks", [None, 3], ids=["plain", "mpi3"])
@pytest.mark.parametrize("flags,flag,value", BAD_FLAGS, ids=BAD_IDS)
def test_forward_refuses_bad_schedule_flags(tmp_path, model, ranks, flags, flag, value):
    out, rc_dir = bad_run(tmp_path, ranks)
    p = launch("forward", [*forward_args(model, out), "--trace", out / "trace.json", "--dot", out / "graph.dot",
                           *flags], ranks, check=False, rc_dir=rc_dir)
    assert_refused(p, rc_dir, ranks, flag, value)
    assert sorted(f.name for f in out.iterdir()) == [], "output left behind"


@pytest.mark.parametrize("flags,flag,value", BAD_FLAGS, ids=BAD_IDS)
def test_bench_refuses_bad_schedule_flags(tmp_path, flags, flag, value):
    out, rc_dir = bad_run(tmp_path, 2)
    p = launch("bench", ["--hidden", 32, "--ffn", 48, "--experts", 4, "--tokens", 40, "--iters", 2, "--warmup", 1,
                         "--json", out / "bench.jsonl", "--trace", out / "trace.json", "--dot", out / "graph.dot",
                         *flags], 2, check=False, rc_dir=rc_dir)
    assert_refused(p, rc_dir, 2, flag, value)
    assert sorted(f.name for f in out.iterdir()) == [], "output left behind"


@pytest.mark.parametrize("flags,flag,value", BAD_FLAGS, ids=BAD_IDS)
def test_train_refuses_bad_schedule_flags(tmp_path, train_config, flags, flag, value):
    out, rc_dir = bad_run(tmp_path, 2)
    p = launch("train", ["--config", TRAIN_SMALL, "--steps", 2, "--quiet", "--save", out / "ckpt",
                         "--trace", out / "trace.json", "--dot", out / "graph.dot", *flags], 2, check=False,
               rc_dir=rc_dir)
    assert_refused(p, rc_dir, 2, flag, value)
    assert sorted(f.name for f in out.iterdir()) == [], "output left behind"


def test_train_bad_chunks_leaves_no_json_log_behind(tmp_path, train_config):
    """`train --json LOG --chunks 0` is refused before rank 0 creates LOG."""
    out, rc_dir = bad_run(tmp_path, 2)
    p = launch("train", ["--config", TRAIN_SMALL, "--steps", 2, "--quiet", "--json", out / "log.jsonl",
                         "--chunks", "0"], 2, check=False, rc_dir=rc_dir)
    assert_refused(p, rc_dir, 2, "--chunks")
    assert sorted(f.name for f in out.iterdir()) == [], "output left behind"


def test_bench_unwritable_trace_is_an_agreed_error(tmp_path):
    """`bench --trace DIR/missing/t.json` is refused on every rank with one error line, not
    an MPI_ABORT after the whole benchmark."""
    out, rc_dir = bad_run(tmp_path, 2)
    missing = tmp_path / "missing" / "trace.json"
    p = launch("bench", ["--hidden", 32, "--ffn", 48, "--experts", 4, "--tokens", 40, "--iters", 2, "--warmup", 1,
                         "--trace", missing], 2, check=False, rc_dir=rc_dir)
    assert_refused(p, rc_dir, 2, str(missing))


def test_forward_unwritable_trace_or_dot_is_an_agreed_error(tmp_path, model):
    for flag in ("--trace", "--dot"):
        out, rc_dir = tmp_path / flag.strip("-"), tmp_path / (flag.strip("-") + "_rc")
        out.mkdir()
        rc_dir.mkdir()
        missing = tmp_path / "missing" / "file"
        p = launch("forward", [*forward_args(model, out), flag, missing], 2, check=False, rc_dir=rc_dir)
        assert_refused(p, rc_dir, 2, str(missing))
        assert sorted(f.name for f in out.iterdir()) == [], "output left behind"


# ---- 5. train -------------------------------------------------------------------------------------------------------


def final_line(p):
    final = json.loads(p.stdout.strip().splitlines()[-1])
    assert final["event"] == "final", p.stdout
    return final


def test_train_losses_are_schedule_independent(tmp_path, train_config):
    base = ["--config", TRAIN_SMALL, "--steps", 8, "--quiet"]
    ref = final_line(launch("train", [*base, "--chunks", 1, "--overlap", "off", "--json", tmp_path / "a.jsonl"]))
    assert ref["step"] == 8 and math.isfinite(ref["val_loss"]) and math.isfinite(ref["train_loss"])
    layers = train_config["model"]["layers"]
    for i, (chunks, overlap, workers) in enumerate([(3, "on", 2), (2, "off", 3)]):
        log = tmp_path / f"b{i}.jsonl"
        extra = ["--trace", tmp_path / "trace.json", "--dot", tmp_path / "graph.dot"] if i == 0 else []
        got = final_line(launch("train", [*base, "--chunks", chunks, "--overlap", overlap, "--workers", workers,
                                          "--json", log, *extra]))
        what = f"chunks {chunks} overlap {overlap} workers {workers}"
        assert got["val_loss"] == ref["val_loss"], (what, got["val_loss"], ref["val_loss"])
        assert got["train_loss"] == ref["train_loss"], (what, got["train_loss"], ref["train_loss"])
        a = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
        b = [json.loads(x) for x in log.read_text().splitlines()]
        assert [x.get("loss") for x in a] == [x.get("loss") for x in b], what
        assert a[-1]["experts"] == b[-1]["experts"], what
        if extra:
            graphs = parse_dot(tmp_path / "graph.dot")
            assert len(graphs) == 2 and chunk_count(graphs) == chunks
            # The last training step: every MoE layer's forward and backward graph once.
            model_cfg = train_config["model"]
            check_trace(tmp_path / "trace.json", graphs, 2, workers, repeats=layers,
                        slot_bytes=layers * 2 * train_config["batch_tokens"] * model_cfg["top_k"]
                        * model_cfg["hidden"] * 4, row_bytes=model_cfg["hidden"] * 4, top_k=model_cfg["top_k"])


def test_train_bf16_runs_or_is_refused(tmp_path, train_config):
    base = ["--config", TRAIN_SMALL, "--steps", 8, "--quiet"]
    p = launch("train", [*base, "--dtype", "bf16", "--chunks", 1, "--overlap", "off"], check=False)
    if p.returncode != 0:
        # Not supported by this build: refused with one line naming the data type.
        errors = [line for line in p.stderr.splitlines() if line.startswith(ERR)]
        assert len(errors) == 1 and ("bf16" in errors[0] or "--dtype" in errors[0]), describe(p.argv, p)
        for marker in CRASH:
            assert marker not in p.stdout + p.stderr, describe(p.argv, p)
        return
    bf16 = final_line(p)
    assert bf16["step"] == 8 and math.isfinite(bf16["val_loss"]) and 0 < bf16["val_loss"] < 10, bf16
    # The flag took effect: bf16 expert GEMMs do not round like f32 ones.
    f32 = final_line(launch("train", [*base, "--dtype", "f32", "--chunks", 1, "--overlap", "off"]))
    assert bf16["val_loss"] != f32["val_loss"], "--dtype bf16 gave exactly the f32 result"
    assert abs(bf16["val_loss"] - f32["val_loss"]) < 0.05 * f32["val_loss"], (bf16, f32)
    # And it is schedule-independent like f32.
    other = final_line(launch("train", [*base, "--dtype", "bf16", "--chunks", 3, "--workers", 2]))
    assert (other["val_loss"], other["train_loss"]) == (bf16["val_loss"], bf16["train_loss"])
