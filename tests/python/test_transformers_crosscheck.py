"""Cross-check `switchyard forward` against Hugging Face transformers itself.

For tiny random mixtral / qwen2_moe / qwen3_moe / deepseek_v3 / olmoe / granitemoe /
glm4_moe / qwen3_5_moe(_text) / llama4(_text) models built with transformers (5.x,
float32), the MoE block of one layer (``model.layers[L].mlp``; ``block_sparse_moe`` for
granitemoe, ``feed_forward`` for llama4; a multimodal model's language model's layers:
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
(transformers 5.24 writes per_expert for all but granitemoe and llama4; see hf_tiny_models.py.)

Gradients (second half of the file): the same runs with
``--grad-output g.npy --grads grads.safetensors [--aux-loss-coef 0.1 --z-loss-coef 0.01]``
against torch autograd through transformers' block (float64; the routers' float32
islands stay as transformers wrote them), L = sum(g * y) [+ aux + z terms]: every
tensor of grads.safetensors (hidden_states = dL/dx, router, experts per-expert or
fused as the checkpoint stores them, shared experts / shared gate) must match by
name, shape and value (max|got - ref| / max|ref| <= 1e-5), none missing or extra.
SWITCHYARD_GRAD_ERRORS_JSON=path writes the worst error per architecture and tensor
kind to path.

Run (pytest in the reference venv):
    SWITCHYARD_BIN=/work/main/build/launch/switchyard MPIEXEC=mpirun \
        /tmp/pyref/bin/python -m pytest -q tests/python/test_transformers_crosscheck.py
Without SWITCHYARD_BIN the switchyard tests are skipped and only the reference
self-checks run.  MPIEXEC may carry extra launcher flags ("mpirun --bind-to none").
"""

from __future__ import annotations

import json
import os
import re
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
GRAD_RTOL = 1e-5  # per tensor: max|switchyard - torch| / max|torch|
AUX_COEF = 0.1
Z_COEF = 0.01
# Set to a path to get the worst relative gradient error per (architecture, tensor
# kind) written there as JSON when the module finishes.
GRAD_ERRORS_JSON = os.environ.get("SWITCHYARD_GRAD_ERRORS_JSON")


def file_layout(layout):
    """Tensor-name layout of a test layout's checkpoint (sharded, bf16: per_expert)."""
    return "fused" if layout == "fused" else "per_expert"


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
            if ".experts." in name or name.startswith(hf.layer_moe_prefix(v.arch, v.layer, "fused")):
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
        self.block = block
        self.block_bf16 = hf.bf16_rounded_block(block)
        y = hf.block_forward(block, self.x)
        y_bf16 = hf.block_forward(self.block_bf16, self.x)
        self.y_ref = {"per_expert": y, "fused": y, "sharded": y, "bf16": y_bf16}
        for lay, yr in self.y_ref.items():
            assert yr.shape == self.x.shape and np.isfinite(yr).all()
            assert np.abs(yr).max() > MIN_REF_MAGNITUDE, (v.name, lay, np.abs(yr).max())
        assert np.abs(y - y_bf16).max() > 1e-4, "bf16 rounding should change the output"

        # 6. dL/dy for the gradient tests (L = sum(g * y) [+ aux terms]).
        self.g = np.random.default_rng(v.seed + 7).standard_normal(self.x.shape).astype(np.float32)
        self.g_path = os.path.join(root, "g.npy")
        np.save(self.g_path, self.g)
        # g = 0 leaves only the aux / z terms in L: their gradients alone, at full scale.
        self.g0_path = os.path.join(root, "g_zero.npy")
        np.save(self.g0_path, np.zeros_like(self.g))
        self._grad_refs = {}
        self._sharded_tensors = None

        print(f"\n[{v.name}] transformers {transformers.__version__} save_pretrained wrote the "
              f"{self.saved_layout} layout; MoE tensors of layer {v.layer}:")
        for name in sorted(saved_tensors):
            if name.startswith(hf.layer_moe_prefix(v.arch, v.layer, self.saved_layout)) \
                    and (".experts.0." in name or ".experts." not in name):
                print(f"    {name} {tuple(saved_tensors[name].shape)}")

    def layout_tensors(self, layout):
        if layout == "sharded":
            if self._sharded_tensors is None:
                self._sharded_tensors = hf.read_checkpoint(self.dirs["sharded"])
            return self._sharded_tensors
        return self.tensors[layout]

    def grad_ref(self, layout, aux_selection=None, dtype=torch.float64, zero_g=False):
        """Reference gradients under the checkpoint names of `layout`'s file
        (hidden_states + every trainable tensor of the MoE block), from torch autograd
        through transformers' block (bf16-rounded weights for bf16).  aux_selection
        None: L = sum(g*y); else L also has AUX_COEF * aux + Z_COEF * zloss with f
        counted over `aux_selection` ("routed" | "softmax_topk", hf.block_grads).
        zero_g: g = 0 (g_zero.npy)."""
        key = (layout == "bf16", file_layout(layout), aux_selection, dtype, zero_g)
        if key not in self._grad_refs:
            block = self.block_bf16 if layout == "bf16" else self.block
            coefs = dict(aux_coef=AUX_COEF, z_coef=Z_COEF, aux_selection=aux_selection) if aux_selection else {}
            g = np.zeros_like(self.g) if zero_g else self.g
            grads, info = hf.block_grads(self.v, block, self.x, g, dtype=dtype, **coefs)
            self._grad_refs[key] = (hf.grads_to_checkpoint_names(self.v, grads, file_layout(layout)), info)
        return self._grad_refs[key]


@pytest.fixture(autouse=True)
def _skip_layouts_an_architecture_lacks(request):
    """Llama 4 files have one expert layout (fused, transposed): its "per_expert"
    case is what save_pretrained writes, and there is no other to rewrite it to."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    if params.get("layout") == "fused" and hf.VARIANTS[params.get("variant", "mixtral")].a.single_layout:
        pytest.skip("this architecture has a single expert layout")


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
    cfg = v.text
    E, H, inter = v.num_experts, cfg["hidden_size"], v.inter
    t = c.layout_tensors(layout)
    flay = file_layout(layout)
    assert hf.detect_layout(t) == flay
    pre = hf.layer_moe_prefix(v.arch, L, flay)
    assert tuple(t[hf.router_name(v.arch, L, flay)].shape) == (E, H)
    if flay == "fused":
        assert tuple(t[pre + "experts.gate_up_proj"].shape) == (E, 2 * inter, H)
        assert tuple(t[pre + "experts.down_proj"].shape) == (E, H, inter)
        assert not any(hf._PE_EXPERT.match(k) for k in t)
        if v.arch == "mixtral":
            assert not any(k.startswith(f"model.layers.{L}.block_sparse_moe.") for k in t)
    else:
        for e in range(E):
            g, u, d = hf.expert_weights(v.arch, t, pre, e)
            assert (tuple(g.shape), tuple(u.shape), tuple(d.shape)) == ((inter, H), (inter, H), (H, inter))
    if v.a.shared:
        width = cfg.get("shared_expert_intermediate_size") or inter * cfg.get("n_shared_experts", 1)
        assert tuple(t[pre + v.a.shared + ".gate_proj.weight"].shape) == (width, H)
        assert tuple(t[pre + v.a.shared + ".down_proj.weight"].shape) == (H, width)
    if v.a.shared_gated:
        assert tuple(t[pre + "shared_expert_gate.weight"].shape) == (1, H)
    if v.a.family == "deepseek":
        assert tuple(t[pre + "gate.e_score_correction_bias"].shape) == (E,)
        assert (t[pre + "gate.e_score_correction_bias"] < 0).any()
    if v.a.decoder != "model.layers":  # multimodal: nothing of the decoder outside its prefix
        assert not any(k.startswith("model.layers.") for k in t)
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
    if c.v.a.family == "deepseek":
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


def _launch(run, cmd):
    """cmd as is for run "plain", else under `MPIEXEC -np R --oversubscribe` for "npR"."""
    if run == "plain":
        return cmd
    mpiexec = shlex.split(os.environ.get("MPIEXEC", "mpirun"))
    if shutil.which(mpiexec[0]) is None:
        pytest.fail(f"MPI launcher {mpiexec[0]!r} not found (set MPIEXEC)")
    return mpiexec + ["-np", run[2:], "--oversubscribe"] + cmd


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
    cmd = _launch(run, [binary, "forward", "--model", c.dirs[layout], "--layer", str(c.v.layer),
                        "--input", c.x_path, "--output", out_path])
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


# --------------------------------------------------------------------------- gradients
#
#   [mpirun -np R --oversubscribe] $SWITCHYARD_BIN forward --model DIR --layer L \
#       --input x.npy --output y.npy --grad-output g.npy --grads grads.safetensors \
#       [--aux-loss-coef A --z-loss-coef Z]
#
# must write (rank 0, float32) dL/dx as `hidden_states` and the gradient of every
# trainable tensor of layer L's MoE block under its checkpoint name and shape, for
# L = sum(g * y) [+ A * aux + Z * zloss, hf.block_grads].  The reference is torch
# autograd through transformers' own block in float64 (transformers keeps the router
# softmax / the DeepSeek router in float32 even then), on the bf16-rounded weights
# for the bf16 layout.  Per tensor: max|got - ref| / max|ref| <= GRAD_RTOL.

_WORST: dict[str, dict[str, float]] = {}
_PE_KIND = {"w1": "gate", "w3": "up", "w2": "down", "gate_proj": "gate", "up_proj": "up", "down_proj": "down"}


def _tensor_kind(name):
    if name == "hidden_states":
        return "hidden_states (dx)"
    tail = name.split(".mlp.", 1)[-1].split(".block_sparse_moe.", 1)[-1]
    if tail == "gate.weight":
        return "router gate.weight"
    m = re.fullmatch(r"experts\.\d+\.(\w+)\.weight", tail)
    if m:
        return f"experts.E.{_PE_KIND[m.group(1)]} (per-expert)"
    return tail  # experts.gate_up_proj / experts.down_proj (fused), shared experts, shared gate


@pytest.fixture(scope="module", autouse=True)
def _report_worst_grad_errors():
    yield
    if GRAD_ERRORS_JSON and _WORST:
        with open(GRAD_ERRORS_JSON, "w") as f:
            json.dump(_WORST, f, indent=1, sort_keys=True)


def _rel_err(got, ref):
    """max|got - ref| / max|ref|; a tensor whose reference is all zero must be all zero."""
    diff = float(np.abs(got.astype(np.float64) - ref).max(initial=0.0))
    scale = float(np.abs(ref).max(initial=0.0))
    if scale == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / scale


def _compare_grads(c, path, ref, cmd, record=None):
    """Every tensor of `path` matched by name, shape and value to `ref` and vice versa."""
    from safetensors import safe_open

    with safe_open(path, "np") as h:
        dtypes = {k: h.get_slice(k).get_dtype() for k in h.keys()}
        got = {k: h.get_tensor(k) for k in h.keys()}
    missing, extra = sorted(set(ref) - set(got)), sorted(set(got) - set(ref))
    assert not missing and not extra, (
        f"gradient names differ from the layer's trainable tensors: missing {missing}, unexpected {extra}; "
        f"cmd: {shlex.join(cmd)}")
    bad_dtype = {k: dt for k, dt in dtypes.items() if dt != "F32"}
    assert not bad_dtype, f"gradients must be float32: {bad_dtype}"
    errors, bad = {}, []
    for name, r in ref.items():
        a = got[name]
        assert a.shape == r.shape, f"{name}: shape {a.shape}, expected {r.shape}; cmd: {shlex.join(cmd)}"
        assert np.isfinite(a).all(), f"{name}: non-finite gradient; cmd: {shlex.join(cmd)}"
        errors[name] = _rel_err(a, r)
        if errors[name] > GRAD_RTOL:
            flat = int(np.abs(a.astype(np.float64) - r).argmax())
            bad.append((errors[name], f"  {name} {tuple(r.shape)}: rel err {errors[name]:.3e} (at flat index "
                                      f"{flat}: switchyard {a.ravel()[flat]:.6g}, torch {r.ravel()[flat]:.6g}, "
                                      f"max|torch| {np.abs(r).max():.4g})"))
    if record:
        worst = _WORST.setdefault(record, {})
        for name, e in errors.items():
            k = _tensor_kind(name)
            worst[k] = max(worst.get(k, 0.0), e)
    if bad:
        bad.sort(key=lambda b: -b[0])
        pytest.fail(f"{len(bad)} of {len(ref)} gradients exceed rel err {GRAD_RTOL:g} (worst first):\n"
                    + "\n".join(line for _, line in bad[:12]) + f"\ncmd: {shlex.join(cmd)}")
    return errors


def _run_grads(c, layout, run, tmp_path, extra=(), zero_g=False):
    binary = _switchyard_bin()
    y_path, grads_path = str(tmp_path / "y.npy"), str(tmp_path / "grads.safetensors")
    cmd = _launch(run, [binary, "forward", "--model", c.dirs[layout], "--layer", str(c.v.layer),
                        "--input", c.x_path, "--output", y_path, "--grad-output", c.g0_path if zero_g else c.g_path,
                        "--grads", grads_path, *extra])
    rc, out, err = _run(cmd)
    assert rc == 0, f"exit {rc}: {shlex.join(cmd)}\nstdout:\n{out[-4000:]}\nstderr:\n{err[-4000:]}"
    assert os.path.exists(grads_path), f"no gradients written: {shlex.join(cmd)}\nstderr:\n{err[-4000:]}"
    assert os.path.exists(y_path), f"no output written: {shlex.join(cmd)}\nstderr:\n{err[-4000:]}"
    assert sorted(os.listdir(tmp_path)) == ["grads.safetensors", "y.npy"], os.listdir(tmp_path)
    # The forward output is unchanged by asking for gradients.
    y, ref = np.load(y_path), c.y_ref[layout]
    assert y.shape == ref.shape and np.abs(y.astype(np.float64) - ref).max() <= RTOL * np.abs(ref).max()
    return grads_path, cmd


def _layer_trainable_names(c, layout):
    """The checkpoint's own tensors of the tested MoE block that take a gradient."""
    t = c.layout_tensors(layout)
    pre = hf.layer_moe_prefix(c.v.arch, c.v.layer, file_layout(layout))
    return {k: tuple(x.shape) for k, x in t.items() if k.startswith(pre) and not k.endswith(hf.NON_TRAINABLE)}


# ---- reference self-checks


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradient_reference_covers_layer(cases, variant, layout):
    """The torch reference, mapped to checkpoint names, has exactly the checkpoint's
    trainable tensors of layer L (+ hidden_states) with their shapes, every one non-zero
    (all experts get tokens), and float32 autograd agrees with the float64 reference."""
    c = cases(variant)
    ref, info = c.grad_ref(layout)
    expect = _layer_trainable_names(c, layout)
    expect["hidden_states"] = c.x.shape
    assert {k: tuple(r.shape) for k, r in ref.items()} == expect
    zero = [k for k, r in ref.items() if not np.abs(r).max() > 0]
    assert not zero, f"all-zero reference gradients: {zero}"
    E = len(np.unique(info["selected"]))
    assert E == c.v.num_experts, "some expert gets no token"
    ref32, _ = c.grad_ref(layout, dtype=torch.float32)
    worst = max(_rel_err(ref32[k], ref[k]) for k in ref)
    assert worst <= GRAD_RTOL / 10, f"float32 vs float64 torch gradients differ by {worst:.2e}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_aux_loss_reference(cases, variant):
    """Our differentiable aux loss is transformers' load_balancing_loss_func; for
    the softmax routers the routed experts are the softmax top-k, so f is the same either
    way (not for the deepseek family); the aux and z terms each change the router and dx gradients
    beyond GRAD_RTOL with g, and dominate them with g = 0."""
    c = cases(variant)
    v = c.v
    for sel in ("routed", "softmax_topk"):
        _, info = hf.block_grads(v, c.block, c.x, c.g, aux_coef=AUX_COEF, z_coef=Z_COEF, aux_selection=sel)
        if sel == "softmax_topk" or v.a.family != "deepseek":
            assert abs(info["aux"] - info["hf_aux"]) <= 1e-6 * info["hf_aux"], info
    router = getattr(c.block, v.a.router)
    logits = torch.from_numpy(c.x).double() @ router.weight.detach().double().T
    topk = torch.topk(torch.softmax(logits, -1), v.text["num_experts_per_tok"], -1)[1].numpy()
    same = (np.sort(topk, -1) == np.sort(info["selected"], -1)).all()
    assert same == (v.a.family != "deepseek"), "routed experts vs softmax top-k"
    for g, min_effect in ((c.g, 3 * GRAD_RTOL), (np.zeros_like(c.g), 0.1)):
        both, _ = hf.block_grads(v, c.block, c.x, g, aux_coef=AUX_COEF, z_coef=Z_COEF)
        for coefs in (dict(aux_coef=AUX_COEF), dict(z_coef=Z_COEF)):  # drop the other term
            one, _ = hf.block_grads(v, c.block, c.x, g, **coefs)
            for k in (f"{v.a.router}.weight", "hidden_states"):
                assert _rel_err(one[k], both[k]) > min_effect, (coefs, k, _rel_err(one[k], both[k]))
    if v.a.family == "deepseek":  # the two f conventions really differ here
        router = hf.router_name(v.arch, v.layer, "per_expert")
        a, _ = c.grad_ref("per_expert", aux_selection="routed", zero_g=True)
        b, _ = c.grad_ref("per_expert", aux_selection="softmax_topk", zero_g=True)
        assert _rel_err(a[router], b[router]) > 0.01


# ---- switchyard


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_switchyard_grads(cases, variant, layout, run, tmp_path):
    c = cases(variant)
    path, cmd = _run_grads(c, layout, run, tmp_path)
    ref, _ = c.grad_ref(layout)
    _compare_grads(c, path, ref, cmd, record=f"{c.v.name} (L = sum(g*y))")


AUX_CASES = [  # (layout, run, g): zero_g = g.npy all zeros, so only the aux/z gradients remain
    ("per_expert", "plain", "g"), ("fused", "np3", "g"), ("bf16", "np4", "g"),
    ("per_expert", "np2", "zero_g"), ("fused", "np4", "zero_g"),
]


@pytest.mark.parametrize("layout,run,g", AUX_CASES, ids=["-".join(a) for a in AUX_CASES])
@pytest.mark.parametrize("variant", VARIANTS)
def test_switchyard_grads_aux_z_loss(cases, variant, layout, run, g, tmp_path):
    """With --aux-loss-coef/--z-loss-coef.  f counts the top-k of softmax(router_logits),
    as transformers' load_balancing_loss_func does (for mixtral/qwen that is the routing
    itself; for deepseek_v3 it ignores the selection bias and the group limit)."""
    c = cases(variant)
    zero_g = g == "zero_g"
    path, cmd = _run_grads(c, layout, run, tmp_path, zero_g=zero_g,
                           extra=["--aux-loss-coef", str(AUX_COEF), "--z-loss-coef", str(Z_COEF)])
    ref, _ = c.grad_ref(layout, aux_selection="softmax_topk", zero_g=zero_g)
    _compare_grads(c, path, ref, cmd, record=f"{c.v.name} (+ aux/z loss{', g = 0' if zero_g else ''})")


def test_switchyard_deepseek_aux_f_is_not_the_routed_choice(cases, tmp_path):
    """For deepseek_v3 the two conventions differ; switchyard must follow
    load_balancing_loss_func, not the bias-corrected, group-limited routing."""
    c = cases("deepseek_v3")
    path, cmd = _run_grads(c, "per_expert", "np2", tmp_path, zero_g=True,
                           extra=["--aux-loss-coef", str(AUX_COEF), "--z-loss-coef", str(Z_COEF)])
    routed, _ = c.grad_ref("per_expert", aux_selection="routed", zero_g=True)
    softmax_topk, _ = c.grad_ref("per_expert", aux_selection="softmax_topk", zero_g=True)
    _compare_grads(c, path, softmax_topk, cmd)
    with pytest.raises(pytest.fail.Exception):
        _compare_grads(c, path, routed, cmd)
