"""Cross-check `switchyard forward` against Hugging Face transformers itself.

For tiny random mixtral / qwen2_moe / qwen3_moe / deepseek_v3 models built with
transformers (5.x, float32), the MoE block of one layer (``model.layers[L].mlp``,
the module the decoder layer calls on the post-attention-norm hidden states) is
run by transformers on random x [1, T, H] (T = 37) and by

    [mpirun -np R --oversubscribe] $SWITCHYARD_BIN forward --model DIR --layer L \
        --input x.npy --output y.npy

for a plain process and R = 1, 2, 3, 4; the outputs must agree to 1e-5
(max-norm, relative to max|y_ref|).

Checkpoint layouts (test id part 2):
  per_expert  what transformers 5.x ``save_pretrained`` writes: the legacy
              per-expert names (mixtral: block_sparse_moe.experts.E.w1/w3/w2,
              others: mlp.experts.E.gate_proj/up_proj/down_proj), one file.
  fused       the same tensors rewritten to transformers 5.x's in-memory fused
              names (mlp.experts.gate_up_proj [E, 2I, H] gate rows first,
              mlp.experts.down_proj [E, H, I]; mixtral router at mlp.gate.weight).
  sharded     ``save_pretrained(max_shard_size="20KB")``: model.safetensors.index.json
              plus many shards, the tested layer's experts spread over several.
  bf16        per_expert, with every weight of the tested MoE block stored as
              bfloat16 (e_score_correction_bias stays float32); the reference is
              transformers on the bf16-rounded weights upcast to float32.
(transformers 5.24 writes per_expert for all four archs; see hf_tiny_models.py.)

Run (pytest in the reference venv):
    SWITCHYARD_BIN=/work/main/build/launch/switchyard MPIEXEC=mpirun \
        /tmp/pyref/bin/python -m pytest -q tests/python/test_transformers_crosscheck.py
Without SWITCHYARD_BIN the switchyard tests are skipped and only the reference
self-checks run.  MPIEXEC may carry extra launcher flags ("mpirun --bind-to none").
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys

import pytest

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_tiny_models as hf  # noqa: E402

VARIANTS = list(hf.VARIANTS)
LAYOUTS = ["per_expert", "fused", "sharded", "bf16"]
RUNS = ["plain", "np1", "np2", "np3", "np4"]
RTOL = 1e-5
TIMEOUT_S = 120
MIN_REF_MAGNITUDE = 0.05


# --------------------------------------------------------------------------- fixtures


class Case:
    """One variant: model, checkpoints in every layout, x.npy and reference outputs."""

    def __init__(self, v: hf.Variant, root: str):
        self.v = v
        self.root = root
        model = hf.build_model(v)
        block = hf.moe_block(model, v.layer)

        # 1. What transformers writes.
        saved = os.path.join(root, "hf_save")
        model.save_pretrained(saved)
        saved_tensors = hf.read_checkpoint(saved)
        self.saved_layout = hf.detect_layout(saved_tensors)
        self.dirs = {self.saved_layout: saved}
        other = "fused" if self.saved_layout == "per_expert" else "per_expert"
        other_tensors = hf.convert_layout(v.arch, saved_tensors, other)
        self.dirs[other] = os.path.join(root, other)
        hf.write_checkpoint(saved, self.dirs[other], other_tensors)
        self.tensors = {self.saved_layout: saved_tensors, other: other_tensors}

        # The fused tensors must be exactly transformers' in-memory parameters.
        state = model.state_dict()
        for name, t in self.tensors["fused"].items():
            if ".experts." in name or name.startswith(f"model.layers.{v.layer}.mlp."):
                assert torch.equal(t, state[name]), name

        # 2. Sharded save.
        self.dirs["sharded"] = os.path.join(root, "sharded")
        model.save_pretrained(self.dirs["sharded"], max_shard_size="20KB")

        # 3. bf16 MoE tensors (per-expert names).
        bf16_tensors = hf.bf16_moe_tensors(v.arch, v.layer, self.tensors["per_expert"])
        self.dirs["bf16"] = os.path.join(root, "bf16")
        hf.write_checkpoint(saved, self.dirs["bf16"], bf16_tensors)
        self.tensors["bf16"] = bf16_tensors

        # 4. Input with safe routing margins (for both the f32 and the bf16 weights).
        self.x = hf.make_input(v, [self.tensors["per_expert"], bf16_tensors])
        self.x_path = os.path.join(root, "x.npy")
        np.save(self.x_path, self.x)

        # 5. Reference outputs from transformers' own MoE block.
        y = hf.block_forward(block, self.x)
        y_bf16 = hf.block_forward(hf.bf16_rounded_block(block), self.x)
        self.y_ref = {"per_expert": y, "fused": y, "sharded": y, "bf16": y_bf16}
        for lay, yr in self.y_ref.items():
            assert yr.shape == self.x.shape and np.isfinite(yr).all()
            assert np.abs(yr).max() > MIN_REF_MAGNITUDE, (v.name, lay, np.abs(yr).max())
        assert np.abs(y - y_bf16).max() > 1e-4, "bf16 rounding should change the output"

        print(f"\n[{v.name}] transformers {transformers.__version__} save_pretrained wrote the "
              f"{self.saved_layout} layout; MoE tensors of layer {v.layer}:")
        for name in sorted(saved_tensors):
            if name.startswith(f"model.layers.{v.layer}.") and (".experts.0." in name or ".experts." not in name) \
                    and ("mlp" in name or "moe" in name):
                print(f"    {name} {tuple(saved_tensors[name].shape)}")

    def layout_tensors(self, layout):
        if layout == "sharded":
            return hf.read_checkpoint(self.dirs["sharded"])
        return self.tensors[layout]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_tiny_moe")
    built: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in built:
            d = os.path.join(str(root), name)
            os.makedirs(d)
            built[name] = Case(hf.VARIANTS[name], d)
        return built[name]

    return get


# --------------------------------------------------------------------------- reference self-checks


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_checkpoint_layout(cases, variant, layout):
    """The files carry the tensor names/shapes/dtypes switchyard is specified to read."""
    c = cases(variant)
    v, L = c.v, c.v.layer
    cfg = v.config
    E = cfg.get("num_local_experts") or cfg.get("num_experts") or cfg["n_routed_experts"]
    H = cfg["hidden_size"]
    inter = cfg.get("moe_intermediate_size") or cfg["intermediate_size"]
    t = c.layout_tensors(layout)
    file_layout = "fused" if layout == "fused" else "per_expert"
    assert hf.detect_layout(t) == file_layout
    pre = hf.layer_moe_prefix(v.arch, L, file_layout)
    assert tuple(t[pre + "gate.weight"].shape) == (E, H)
    if file_layout == "fused":
        assert tuple(t[pre + "experts.gate_up_proj"].shape) == (E, 2 * inter, H)
        assert tuple(t[pre + "experts.down_proj"].shape) == (E, H, inter)
        assert not any(k.startswith(f"model.layers.{L}.block_sparse_moe.") for k in t)
    else:
        g, u, d = hf._PROJ_NAMES[v.arch]
        for e in range(E):
            assert tuple(t[f"{pre}experts.{e}.{g}.weight"].shape) == (inter, H)
            assert tuple(t[f"{pre}experts.{e}.{u}.weight"].shape) == (inter, H)
            assert tuple(t[f"{pre}experts.{e}.{d}.weight"].shape) == (H, inter)
    if v.arch == "qwen2_moe":
        assert tuple(t[pre + "shared_expert.gate_proj.weight"].shape) == (cfg["shared_expert_intermediate_size"], H)
        assert tuple(t[pre + "shared_expert_gate.weight"].shape) == (1, H)
    if v.arch == "deepseek_v3":
        assert tuple(t[pre + "gate.e_score_correction_bias"].shape) == (E,)
        assert tuple(t[pre + "shared_experts.down_proj.weight"].shape) == (H, inter * cfg["n_shared_experts"])
        assert (t[pre + "gate.e_score_correction_bias"] < 0).any()
    dtypes = hf.checkpoint_dtypes(c.dirs[layout])
    moe_dtypes = {dt for k, dt in dtypes.items() if k.startswith(pre) and "e_score_correction_bias" not in k}
    assert moe_dtypes == ({"BF16"} if layout == "bf16" else {"F32"})
    if layout == "bf16":
        assert {dt for k, dt in dtypes.items() if not k.startswith(pre)} == {"F32"}
    if layout == "sharded":
        index = os.path.join(c.dirs["sharded"], "model.safetensors.index.json")
        assert os.path.exists(index)
        wm = json.load(open(index))["weight_map"]
        assert len({f for k, f in wm.items() if k.startswith(pre)}) >= 2, "layer L should span shards"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_checkpoint_reloads_in_transformers(cases, variant, layout):
    """transformers itself reads each written checkpoint back to the same MoE block output."""
    c = cases(variant)
    model = transformers.AutoModelForCausalLM.from_pretrained(c.dirs[layout], dtype=torch.float32)
    model.set_experts_implementation("eager")
    model.eval()
    y = hf.block_forward(hf.moe_block(model, c.v.layer), c.x)
    ref = c.y_ref[layout]
    assert np.abs(y - ref).max() <= 1e-6 * np.abs(ref).max()


@pytest.mark.parametrize("layout", ["per_expert", "bf16"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_architecture_facts_match_transformers(cases, variant, layout):
    """A float64 numpy implementation of the routing/shared-expert semantics switchyard
    follows reproduces transformers' MoE block (so the facts hold for the installed
    transformers), and the DeepSeek bias and group limit really change the routing."""
    c = cases(variant)
    y = hf.facts_forward(c.v, c.tensors[layout], c.x)
    ref = c.y_ref[layout]
    err = np.abs(y - ref).max() / np.abs(ref).max()
    assert err <= RTOL, err
    if c.v.arch == "deepseek_v3":
        by_bias, by_group = hf.deepseek_selection_sensitivity(c.v, c.tensors[layout], c.x)
        assert by_bias > 0, "e_score_correction_bias changes no token's experts"
        assert by_group > 0, "group-limited routing changes no token's experts"


# --------------------------------------------------------------------------- switchyard


def _switchyard_bin():
    path = os.environ.get("SWITCHYARD_BIN")
    if not path:
        pytest.skip("SWITCHYARD_BIN is not set (point it at the built `switchyard` binary)")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"SWITCHYARD_BIN={path!r} is not an executable file")
    return path


def _session_pids(sid):
    """Processes of session `sid` (the one _run created): Open MPI puts each rank in
    its own process group, so killing mpirun's group alone can leave ranks behind."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:  # fields after "(comm)": state ppid pgrp session ...
                pids.append(int(entry))
    return pids


def _kill_run(proc):
    proc.terminate()  # mpirun forwards SIGTERM to its ranks
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    for pid in _session_pids(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _run(cmd, timeout=TIMEOUT_S):
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_run(proc)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout}s: {shlex.join(cmd)}\nstdout:\n{out[-4000:]}\nstderr:\n{err[-4000:]}")
    return proc.returncode, out, err


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_switchyard_forward(cases, variant, layout, run, tmp_path):
    binary = _switchyard_bin()
    c = cases(variant)
    out_path = str(tmp_path / "y.npy")
    cmd = [binary, "forward", "--model", c.dirs[layout], "--layer", str(c.v.layer),
           "--input", c.x_path, "--output", out_path]
    if run != "plain":
        mpiexec = shlex.split(os.environ.get("MPIEXEC", "mpirun"))
        if shutil.which(mpiexec[0]) is None:
            pytest.fail(f"MPI launcher {mpiexec[0]!r} not found (set MPIEXEC)")
        cmd = mpiexec + ["-np", run[2:], "--oversubscribe"] + cmd
    rc, out, err = _run(cmd)
    assert rc == 0, f"exit {rc}: {shlex.join(cmd)}\nstdout:\n{out[-4000:]}\nstderr:\n{err[-4000:]}"
    assert os.path.exists(out_path), f"no output written: {shlex.join(cmd)}\nstderr:\n{err[-4000:]}"

    y = np.load(out_path)
    ref = c.y_ref[layout]
    assert y.dtype == np.float32, y.dtype
    assert y.shape == ref.shape, (y.shape, ref.shape)
    assert np.isfinite(y).all()
    scale = max(float(np.abs(ref).max()), 1e-6)
    assert scale > MIN_REF_MAGNITUDE
    diff = np.abs(y.astype(np.float64) - ref.astype(np.float64))
    err = float(diff.max()) / scale
    tok = int(np.unravel_index(diff.argmax(), diff.shape)[0])
    assert err <= RTOL, (
        f"max rel error {err:.3e} > {RTOL:g} (worst token {tok}: switchyard {y[tok, :4]} "
        f"vs transformers {ref[tok, :4]}); cmd: {shlex.join(cmd)}")
