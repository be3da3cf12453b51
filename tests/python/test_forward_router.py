"""``switchyard forward --router top-p``: dynamic expert counts at inference on
a checkpoint's layer, against an independent float64 evaluation in numpy.

Run (from the build directory):
    SWITCHYARD_BIN=$PWD/launch/switchyard MAKE_RANDOM_MOE=$PWD/examples/make_random_moe \\
        python -m pytest -q -p no:cacheprovider ../tests/python/test_forward_router.py

Covers:
  * a Mixtral layer (top-4 in its config.json) routed top-p at 1 and 2 ranks:
    the output against the float64 reference (experts in probability order
    until their mass reaches P, at most the cap, weights renormalised over
    them), the experts-per-token histogram and mean of the JSON line, with
    --max-k and without (the checkpoint's top_k is the cap);
  * the backward with top-p: dL/dx and the router's gradient against central
    differences of the reference's loss sum(g * y);
  * bad router flags, and top-p on a sigmoid router: non-zero exit, one error
    line naming the flag, no output written.
"""

import json
import os
import subprocess

import numpy as np
import pytest
from safetensors.numpy import load_file

BIN = os.environ.get("SWITCHYARD_BIN")
MAKE_RANDOM_MOE = os.environ.get("MAKE_RANDOM_MOE")
MPIEXEC = os.environ.get("MPIEXEC", "mpirun")
pytestmark = pytest.mark.skipif(not BIN or not MAKE_RANDOM_MOE, reason="SWITCHYARD_BIN or MAKE_RANDOM_MOE is not set")

HIDDEN, FFN, EXPERTS, TOP_K, TOKENS, LAYER = 32, 24, 8, 4, 120, 1
TIMEOUT = 300


def env():
    e = dict(os.environ)
    e.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    return e


def forward(model_dir, args, ranks, check=True):
    argv = [MPIEXEC, "-np", str(ranks), "--oversubscribe", BIN, "forward", "--model", str(model_dir), "--layer",
            str(LAYER), *map(str, args)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=env())
    if check:
        assert p.returncode == 0, f"{' '.join(argv)}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return p


def make_model(out, arch, seed):
    subprocess.run([MAKE_RANDOM_MOE, "--out", str(out), "--arch", arch, "--hidden", str(HIDDEN), "--ffn", str(FFN),
                    "--experts", str(EXPERTS), "--top-k", str(TOP_K), "--tokens", str(TOKENS), "--seed", str(seed)],
                   check=True, capture_output=True, timeout=60)
    return out


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory):
    d = make_model(tmp_path_factory.mktemp("router") / "mixtral", "mixtral", 5)
    tensors = {}
    for name in os.listdir(d):
        if name.endswith(".safetensors"):
            tensors.update(load_file(str(d / name)))
    p = f"model.layers.{LAYER}.block_sparse_moe."
    weights = {
        "gate": tensors[p + "gate.weight"].astype(np.float64),
        "w1": np.stack([tensors[f"{p}experts.{e}.w1.weight"] for e in range(EXPERTS)]).astype(np.float64),
        "w3": np.stack([tensors[f"{p}experts.{e}.w3.weight"] for e in range(EXPERTS)]).astype(np.float64),
        "w2": np.stack([tensors[f"{p}experts.{e}.w2.weight"] for e in range(EXPERTS)]).astype(np.float64),
    }
    g = d / "g.npy"
    np.save(g, np.random.default_rng(9).standard_normal((TOKENS, HIDDEN)).astype(np.float32))
    return {"dir": d, "x": d / "x.npy", "g": g, "w": weights}


def top_p_experts(probs, p, cap):
    """Experts in probability order (lower index first on a tie) until their mass reaches p, at most cap."""
    order = sorted(range(len(probs)), key=lambda e: (-probs[e], e))
    chosen, mass = [], 0.0
    for e in order[:cap]:
        chosen.append(e)
        mass += probs[e]
        if mass >= p:
            break
    return chosen


def reference(w, x, p, cap, gate=None):
    """The Mixtral block in float64, routed top-p: (y [T, H], experts used per token)."""
    gate = w["gate"] if gate is None else gate
    logits = x @ gate.T
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    y = np.zeros_like(x)
    used = []
    for t in range(x.shape[0]):
        chosen = top_p_experts(probs[t], p, cap)
        used.append(len(chosen))
        mass = probs[t, chosen].sum()
        for e in chosen:
            a = w["w1"][e] @ x[t]
            h = a / (1.0 + np.exp(-a)) * (w["w3"][e] @ x[t])
            y[t] += probs[t, e] / mass * (w["w2"][e] @ h)
    return y, used, probs


def assert_clear_margins(probs, p, cap):
    """The float32 run must take the same decisions: no near-ties, no mass near p."""
    for t in range(probs.shape[0]):
        s = np.sort(probs[t])[::-1]
        assert np.min(s[:cap] - s[1:cap + 1]) > 1e-5, f"token {t}: near-tie in its top {cap}"
        assert np.min(np.abs(np.cumsum(s[:cap]) - p)) > 1e-4, f"token {t}: mass near p"


@pytest.mark.parametrize("ranks,p,max_k", [(1, 0.6, None), (2, 0.6, None), (2, 0.5, 3)])
def test_top_p_forward_matches_float64_reference(tmp_path, mixtral, ranks, p, max_k):
    x = np.load(mixtral["x"]).astype(np.float64)
    cap = max_k or TOP_K
    want, used, probs = reference(mixtral["w"], x, p, cap)
    assert_clear_margins(probs, p, cap)
    assert min(used) < cap and max(used) == cap, "the case must have tokens below and at the cap"
    args = ["--input", mixtral["x"], "--output", tmp_path / "y.npy", "--json", tmp_path / "f.jsonl", "--router",
            "top-p", "--top-p", p]
    if max_k:
        args += ["--max-k", max_k]
    out = forward(mixtral["dir"], args, ranks)
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(y, want, rtol=0, atol=2e-5 * np.abs(want).max())
    line = json.loads((tmp_path / "f.jsonl").read_text().splitlines()[-1])
    assert line["top_k"] == cap and line["top_p"] == p
    assert line["experts_per_token_histogram"] == [used.count(k) for k in range(cap + 1)]
    assert line["experts_per_token"] == pytest.approx(np.mean(used))
    assert line["expert_compute_vs_top_k"] == pytest.approx(np.mean(used) / cap)
    assert sum(line["expert_load"]) == sum(used)
    assert f"top-p {p:g} (at most {cap})" in out.stdout and "experts per token" in out.stdout


def test_top_p_gradients_match_finite_differences(tmp_path, mixtral):
    p, cap = 0.6, TOP_K
    w = mixtral["w"]
    x = np.load(mixtral["x"]).astype(np.float64)
    g = np.load(mixtral["g"]).astype(np.float64)
    assert_clear_margins(reference(w, x, p, cap)[2], p, cap)
    forward(mixtral["dir"], ["--input", mixtral["x"], "--output", tmp_path / "y.npy", "--router", "top-p",
                             "--top-p", p, "--grad-output", mixtral["g"], "--grads", tmp_path / "g.safetensors",
                             "--quiet"], 2)
    grads = load_file(str(tmp_path / "g.safetensors"))
    dx = grads["hidden_states"]
    dgate = grads[f"model.layers.{LAYER}.block_sparse_moe.gate.weight"]
    loss = lambda xx, gate: float((g * reference(w, xx, p, cap, gate)[0]).sum())  # noqa: E731
    eps = 1e-5
    rng = np.random.default_rng(3)
    for t, h in zip(rng.integers(0, TOKENS, 6), rng.integers(0, HIDDEN, 6)):
        xp, xm = x.copy(), x.copy()
        xp[t, h] += eps
        xm[t, h] -= eps
        fd = (loss(xp, w["gate"]) - loss(xm, w["gate"])) / (2 * eps)
        assert dx[t, h] == pytest.approx(fd, rel=1e-3, abs=1e-4), f"dL/dx[{t}, {h}]"
    checked = 0
    for e, h in zip(rng.integers(0, EXPERTS, 6), rng.integers(0, HIDDEN, 6)):
        gp, gm = w["gate"].copy(), w["gate"].copy()
        gp[e, h] += eps
        gm[e, h] -= eps
        fd = (loss(x, gp) - loss(x, gm)) / (2 * eps)
        assert dgate[e, h] == pytest.approx(fd, rel=1e-3, abs=1e-4), f"dL/dgate[{e}, {h}]"
        checked += abs(fd) > 1e-3
    assert checked > 0, "the router's gradient must not be trivially zero"


@pytest.mark.parametrize("flags,needle", [
    (["--top-p", "0.5"], "--top-p needs --router top-p"),
    (["--max-k", "2"], "--max-k needs --router top-p"),
    (["--router", "top-p"], "--router top-p needs --top-p"),
    (["--router", "top-p", "--top-p", "0.5", "--max-k", "9"], "--max-k 9 exceeds the model's experts (8)"),
    (["--router", "noisy-top-k"], "--router"),
    (["--router", "top-p", "--top-p", "1.5"], "--top-p"),
])
def test_bad_router_flags_are_refused(tmp_path, mixtral, flags, needle):
    out = tmp_path / "y.npy"
    r = forward(mixtral["dir"], ["--input", mixtral["x"], "--output", out, *flags], 2, check=False)
    assert r.returncode != 0
    assert needle in r.stderr, r.stderr
    assert not out.exists()


def test_top_p_on_a_sigmoid_router_is_refused(tmp_path):
    d = make_model(tmp_path / "dsv3", "deepseek_v3", 2)
    out = tmp_path / "y.npy"
    r = forward(d, ["--input", d / "x.npy", "--output", out, "--router", "top-p", "--top-p", "0.5"], 2, check=False)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert errors and all("--router top-p" in e and "sigmoid" in e for e in errors), r.stderr
    assert not out.exists()
