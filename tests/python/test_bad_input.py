"""Bad-input contract tests for the ``switchyard`` CLI.

Run:
    SWITCHYARD_BIN=/work/main/build/launch/switchyard \
        python -m pytest -q tests/python/test_bad_input.py

Environment:
    SWITCHYARD_BIN  path to the switchyard binary (the module is skipped if unset)
    MPIEXEC         MPI launcher (default ``mpirun``; Open MPI flags are used)

The contract for bad input, checked by ``assert_bad`` below:
  * the run exits non-zero (under mpirun: mpirun's exit code is non-zero),
    within the timeout (a timeout is reported as a hang);
  * stderr has a line starting with ``switchyard: error:`` that names the
    offending file, tensor or field (exactly one such line for a plain run, at
    least one under mpirun);
  * nothing crashed (no "Segmentation fault", "core dumped", "terminate
    called", "Aborted", ... and no death by signal);
  * no output file is left behind: the output's directory holds no new file
    (temporary files cleaned up), nor does the working directory.

Every checkpoint is written here with numpy + safetensors (tiny Mixtral,
Qwen2-MoE and DeepSeek-V3 layers), malformed safetensors files are crafted
byte by byte.
"""

import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

safetensors_numpy = pytest.importorskip("safetensors.numpy")
save_file = safetensors_numpy.save_file

BIN = os.environ.get("SWITCHYARD_BIN")
if not BIN:
    pytest.skip(
        "SWITCHYARD_BIN is not set: point it at the switchyard binary "
        "(e.g. build/launch/switchyard) to run the bad-input tests",
        allow_module_level=True,
    )

MPIEXEC = shlex.split(os.environ.get("MPIEXEC", "mpirun"))
TIMEOUT = 60  # seconds per subprocess; exceeding it is a failure ("hang")
ERR = "switchyard: error:"
CRASH_MARKERS = (
    "Segmentation fault",
    "core dumped",
    "terminate called",
    "Aborted",
    "Bus error",
    "Floating point exception",
    "Illegal instruction",
    "AddressSanitizer",
    "stack smashing",
    "double free",
)

# Model dimensions of the fixtures.
H = 16  # hidden_size
I = 24  # expert intermediate size
E = 4  # experts
K = 2  # experts per token
NL = 2  # layers
V = 32  # vocab
T = 10  # tokens in x.npy

SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"
INDEX = "model.safetensors.index.json"

NPROCS = pytest.mark.parametrize("nproc", [None, 2], ids=["1proc", "mpi2"])


# --------------------------------------------------------------------------
# running the CLI
# --------------------------------------------------------------------------


class Result:
    def __init__(self, argv, nproc, rc, out, err):
        self.argv, self.nproc, self.rc, self.out, self.err = argv, nproc, rc, out, err

    def describe(self):
        return (
            f"command: {' '.join(map(str, self.argv))}\nexit code: {self.rc}\n"
            f"--- stdout (tail) ---\n{self.out[-3000:]}\n"
            f"--- stderr (tail) ---\n{self.err[-3000:]}"
        )


def _child_env():
    env = dict(os.environ)
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    return env


def _descendants(pid):
    """PIDs of all live descendants of pid (read from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _kill_tree(proc):
    """Stop a timed-out child and everything it started (by pid)."""
    pids = _descendants(proc.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in [proc.pid] + pids:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        pids = [p for p in pids if os.path.exists(f"/proc/{p}")]


def run_cli(args, nproc=None, cwd=None):
    """Run switchyard (plainly, or under mpirun -np nproc); fail on a hang."""
    if not os.path.exists(BIN):
        pytest.fail(f"SWITCHYARD_BIN={BIN} does not exist")
    args = [str(a) for a in args]
    if nproc is None:
        argv = [BIN] + args
    else:
        if shutil.which(MPIEXEC[0]) is None:
            pytest.skip(f"MPI launcher {MPIEXEC[0]!r} not found (set MPIEXEC)")
        argv = MPIEXEC + ["-np", str(nproc), "--oversubscribe", BIN] + args
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=_child_env(),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out, err = b"", b""
        res = Result(argv, nproc, None, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        pytest.fail(f"hang: no exit within {TIMEOUT}s\n{res.describe()}")
    return Result(argv, nproc, proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


# --------------------------------------------------------------------------
# checking results
# --------------------------------------------------------------------------


def rx(pattern):
    return re.compile(pattern, re.IGNORECASE)


def layer_key(n):
    """The line names layer n: 'layer 7', 'layers.1', '--layer=7', 'layer index 0', ..."""
    return rx(rf"layer\D{{0,12}}(?<!\d){n}(?!\d)")


def shape_key(*dims):
    """A shape like [24, 16], (24,16), 24x16 appears."""
    sep = r"\s*(?:,|x|\u00d7|\*)?\s*"
    return rx(r"(?<!\d)" + sep.join(str(d) for d in dims) + r"(?!\d)")


class AnyOf:
    def __init__(self, *keys):
        self.keys = keys

    def __repr__(self):
        return f"AnyOf{self.keys!r}"


def _matches(key, raw_line, scrubbed_line):
    if isinstance(key, AnyOf):
        return any(_matches(k, raw_line, scrubbed_line) for k in key.keys)
    if isinstance(key, re.Pattern):
        return key.search(scrubbed_line) is not None
    return key in scrubbed_line


def _snapshot(d):
    d = Path(d)
    if not d.exists():
        return set()
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def assert_no_crash(res):
    text = res.out + res.err
    found = [m for m in CRASH_MARKERS if m in text]
    assert not found, f"crash markers {found} in output\n{res.describe()}"
    assert res.rc is not None and res.rc >= 0, f"killed by signal {-res.rc}\n{res.describe()}"


def error_lines(res):
    lines = []
    for line in res.err.splitlines():
        line = line.rstrip("\r")
        if line.startswith(ERR):
            lines.append(line)
        elif res.nproc is not None and ERR in line:
            # under mpirun another rank's output may share the line
            lines.append(line[line.index(ERR):])
    return lines


class Case:
    """Directories of one test: model/, in/x.npy, out/ (for y.npy), cwd/."""

    def __init__(self, root):
        self.root = Path(root)
        self.model = self.root / "model"
        self.indir = self.root / "in"
        self.outdir = self.root / "out"
        self.cwd = self.root / "cwd"
        for d in (self.model, self.indir, self.outdir, self.cwd):
            d.mkdir(parents=True, exist_ok=True)
        self.x = self.indir / "x.npy"
        np.save(self.x, make_input())
        self.y = self.outdir / "y.npy"
        self._before = {}

    def _snap(self):
        self._before = {d: _snapshot(d) for d in (self.outdir, self.cwd)}

    def run(self, args, nproc=None):
        self._snap()
        return run_cli(args, nproc=nproc, cwd=self.cwd)

    def forward(self, layer=0, nproc=None, model=None, inp=None, out=None, extra=()):
        args = [
            "forward",
            "--model", model if model is not None else self.model,
            "--layer", layer,
            "--input", inp if inp is not None else self.x,
            "--output", out if out is not None else self.y,
        ] + list(extra)
        return self.run(args, nproc=nproc)

    def inspect(self, model=None, nproc=None):
        return self.run(["inspect", "--model", model if model is not None else self.model], nproc=nproc)

    def assert_bad(self, res, *keys):
        """The bad-input contract; every key must match one and the same error line."""
        assert res.rc != 0, f"expected a non-zero exit for bad input\n{res.describe()}"
        assert_no_crash(res)
        lines = error_lines(res)
        assert lines, f"no stderr line starting with {ERR!r}\n{res.describe()}"
        if res.nproc is None:
            assert len(lines) == 1, f"expected exactly one {ERR!r} line, got {len(lines)}\n{res.describe()}"
        root = str(self.root)
        good = [l for l in lines if all(_matches(k, l, l.replace(root, "<tmp>")) for k in keys)]
        assert good, (
            f"no {ERR!r} line mentions all of {keys!r}; error lines:\n  "
            + "\n  ".join(lines) + f"\n{res.describe()}"
        )
        for d, before in self._before.items():
            new = sorted(_snapshot(d) - before)
            assert not new, f"files left behind in {d}: {new}\n{res.describe()}"

    def assert_ok(self, res, expect_files=("y.npy",)):
        assert res.rc == 0, f"valid input failed\n{res.describe()}"
        assert_no_crash(res)
        assert not error_lines(res), f"error line on success\n{res.describe()}"
        assert sorted(_snapshot(self.outdir)) == sorted(expect_files), (
            f"output dir should hold exactly {list(expect_files)}: {sorted(_snapshot(self.outdir))}"
        )


@pytest.fixture
def case(tmp_path):
    return Case(tmp_path)


# --------------------------------------------------------------------------
# fixture builders
# --------------------------------------------------------------------------


def make_input(tokens=T, hidden=H, seed=123):
    return np.random.default_rng(seed).standard_normal((tokens, hidden)).astype(np.float32)


def _rand(rng, *shape):
    return (rng.standard_normal(shape) * 0.2).astype(np.float32)


def mixtral_config(**over):
    cfg = {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "hidden_size": H,
        "intermediate_size": I,
        "num_local_experts": E,
        "num_experts_per_tok": K,
        "num_hidden_layers": NL,
        "hidden_act": "silu",
        "vocab_size": V,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
    }
    cfg.update(over)
    return cfg


def mixtral_tensors(n_experts=E, n_layers=NL, seed=0):
    rng = np.random.default_rng(seed)
    t = {"model.embed_tokens.weight": _rand(rng, V, H)}
    for l in range(n_layers):
        p = f"model.layers.{l}.block_sparse_moe."
        t[p + "gate.weight"] = _rand(rng, n_experts, H)
        for e in range(n_experts):
            t[p + f"experts.{e}.w1.weight"] = _rand(rng, I, H)
            t[p + f"experts.{e}.w3.weight"] = _rand(rng, I, H)
            t[p + f"experts.{e}.w2.weight"] = _rand(rng, H, I)
    return t


def mx(layer, expert, w):
    """Name of a Mixtral expert weight (w in w1/w2/w3)."""
    return f"model.layers.{layer}.block_sparse_moe.experts.{expert}.{w}.weight"


def mx_gate(layer):
    return f"model.layers.{layer}.block_sparse_moe.gate.weight"


def qwen2_moe_config(**over):
    cfg = {
        "architectures": ["Qwen2MoeForCausalLM"],
        "model_type": "qwen2_moe",
        "hidden_size": H,
        "intermediate_size": 32,
        "moe_intermediate_size": I,
        "shared_expert_intermediate_size": 32,
        "num_experts": E,
        "num_experts_per_tok": K,
        "norm_topk_prob": False,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [1],
        "num_hidden_layers": NL,
        "hidden_act": "silu",
        "vocab_size": V,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
    }
    cfg.update(over)
    return cfg


def _dense_mlp(rng, t, prefix, inter):
    t[prefix + "gate_proj.weight"] = _rand(rng, inter, H)
    t[prefix + "up_proj.weight"] = _rand(rng, inter, H)
    t[prefix + "down_proj.weight"] = _rand(rng, H, inter)


def qwen2_moe_tensors(seed=1):
    """Layer 0 is MoE; layer 1 is dense (mlp_only_layers=[1])."""
    rng = np.random.default_rng(seed)
    t = {"model.embed_tokens.weight": _rand(rng, V, H)}
    p = "model.layers.0.mlp."
    t[p + "gate.weight"] = _rand(rng, E, H)
    for e in range(E):
        _dense_mlp(rng, t, p + f"experts.{e}.", I)
    _dense_mlp(rng, t, p + "shared_expert.", 32)
    t[p + "shared_expert_gate.weight"] = _rand(rng, 1, H)
    _dense_mlp(rng, t, "model.layers.1.mlp.", 32)
    return t


def deepseek_v3_config(**over):
    cfg = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "hidden_size": H,
        "intermediate_size": 32,
        "moe_intermediate_size": I,
        "n_routed_experts": E,
        "n_shared_experts": 1,
        "num_experts_per_tok": K,
        "n_group": 2,
        "topk_group": 1,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "norm_topk_prob": True,
        "routed_scaling_factor": 2.5,
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "num_hidden_layers": NL,
        "hidden_act": "silu",
        "vocab_size": V,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
    }
    cfg.update(over)
    return cfg


def deepseek_v3_tensors(seed=2):
    """Layer 0 is dense (first_k_dense_replace=1); layer 1 is MoE."""
    rng = np.random.default_rng(seed)
    t = {"model.embed_tokens.weight": _rand(rng, V, H)}
    _dense_mlp(rng, t, "model.layers.0.mlp.", 32)
    p = "model.layers.1.mlp."
    t[p + "gate.weight"] = _rand(rng, E, H)
    t[p + "gate.e_score_correction_bias"] = _rand(rng, E)
    for e in range(E):
        _dense_mlp(rng, t, p + f"experts.{e}.", I)
    _dense_mlp(rng, t, p + "shared_experts.", I * 1)
    return t


def default_shard(name):
    """Sharded layout: experts 2 and 3 (rank 1's at 2 ranks) live in shard 2."""
    return SHARD2 if re.search(r"\.experts\.[23]\.", name) else SHARD1


def write_config(model_dir, config):
    """config: dict (written as JSON), str/bytes (written raw), or None (no file)."""
    path = Path(model_dir) / "config.json"
    if config is None:
        if path.exists():
            path.unlink()
        return
    if isinstance(config, dict):
        config = json.dumps(config, indent=2)
    if isinstance(config, str):
        config = config.encode()
    path.write_bytes(config)


def write_model(model_dir, config, tensors, sharded=False, shard_of=default_shard, weight_map_extra=None):
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    write_config(model_dir, config)
    if not sharded:
        save_file(dict(tensors), str(model_dir / "model.safetensors"), metadata={"format": "pt"})
        return model_dir
    shards = {}
    for name, arr in tensors.items():
        shards.setdefault(shard_of(name), {})[name] = arr
    weight_map = {}
    total = 0
    for fname, ts in sorted(shards.items()):
        save_file(ts, str(model_dir / fname), metadata={"format": "pt"})
        for name, arr in ts.items():
            weight_map[name] = fname
            total += arr.nbytes
    weight_map.update(weight_map_extra or {})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (model_dir / INDEX).write_text(json.dumps(index, indent=2))
    return model_dir


def write_mixtral(case, sharded=False, **cfg):
    return write_model(case.model, mixtral_config(**cfg), mixtral_tensors(), sharded=sharded)


# Raw safetensors writing, for malformed files.

_ST_DTYPES = {"float32": "F32", "float64": "F64", "float16": "F16", "int32": "I32", "int64": "I64"}


def st_layout(tensors, order=None):
    """(header dict, data bytes) of a well-formed safetensors file."""
    header = {"__metadata__": {"format": "pt"}}
    chunks, off = [], 0
    for name in order or sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _ST_DTYPES[a.dtype.name], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    return header, b"".join(chunks)


def st_pack(header, data, header_bytes=None, header_len=None):
    hb = json.dumps(header, separators=(",", ":")).encode() if header_bytes is None else header_bytes
    hb += b" " * (-len(hb) % 8)
    n = len(hb) if header_len is None else header_len
    return struct.pack("<Q", n) + hb + data


# --------------------------------------------------------------------------
# sanity: the fixtures are valid, so the bad-input tests mean something
# --------------------------------------------------------------------------


def _check_y(path):
    y = np.load(path)
    assert y.dtype == np.float32, y.dtype
    assert y.shape == (T, H), y.shape
    assert np.all(np.isfinite(y))
    return y


def test_valid_mixtral_runs_at_1_and_2_ranks(case):
    write_mixtral(case)
    res = case.forward(layer=0)
    case.assert_ok(res)
    y1 = _check_y(case.y)
    case.y.unlink()
    res = case.forward(layer=1, nproc=2)
    case.assert_ok(res)
    _check_y(case.y)
    case.y.unlink()
    res = case.forward(layer=0, nproc=2)
    case.assert_ok(res)
    y2 = _check_y(case.y)
    np.testing.assert_allclose(y2, y1, rtol=1e-4, atol=1e-5)


def test_valid_sharded_mixtral(case):
    write_mixtral(case, sharded=True)
    res = case.forward(layer=0, nproc=2)
    case.assert_ok(res)
    _check_y(case.y)


def test_valid_qwen2_moe_layer0(case):
    write_model(case.model, qwen2_moe_config(), qwen2_moe_tensors())
    case.assert_ok(case.forward(layer=0))
    _check_y(case.y)


def test_valid_deepseek_v3_layer1(case):
    write_model(case.model, deepseek_v3_config(), deepseek_v3_tensors())
    case.assert_ok(case.forward(layer=1))
    _check_y(case.y)


def test_inspect_valid(case):
    write_mixtral(case)
    res = case.inspect()
    assert res.rc == 0, res.describe()
    assert_no_crash(res)
    assert not error_lines(res), res.describe()


# --------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------


@NPROCS
def test_missing_config_json(case, nproc):
    write_mixtral(case)
    (case.model / "config.json").unlink()
    case.assert_bad(case.forward(nproc=nproc), "config.json")


@NPROCS
def test_config_not_json(case, nproc):
    write_mixtral(case)
    write_config(case.model, '{"model_type": "mixtral", "hidden_size": 16,, oops')
    case.assert_bad(case.forward(nproc=nproc), "config.json")


@NPROCS
def test_config_missing_model_type(case, nproc):
    cfg = mixtral_config()
    del cfg["model_type"]
    write_model(case.model, cfg, mixtral_tensors())
    case.assert_bad(case.forward(nproc=nproc), "model_type")


@NPROCS
def test_config_unknown_model_type(case, nproc):
    write_mixtral(case, model_type="llama2_moe")
    case.assert_bad(case.forward(nproc=nproc), AnyOf("model_type", "llama2_moe"))


@NPROCS
def test_config_field_wrong_type(case, nproc):
    write_mixtral(case, hidden_size="abc")
    case.assert_bad(case.forward(nproc=nproc), "hidden_size")


@NPROCS
def test_config_missing_required_field(case, nproc):
    cfg = mixtral_config()
    del cfg["num_local_experts"]
    write_model(case.model, cfg, mixtral_tensors())
    # An absent field takes the transformers default (MixtralConfig:
    # num_local_experts = 8), so the 4-expert router no longer fits.
    case.assert_bad(case.forward(nproc=nproc), "model.layers.0.block_sparse_moe.gate.weight", "8")


def test_config_topk_exceeds_experts(case):
    write_mixtral(case, num_experts_per_tok=E + 1)
    case.assert_bad(case.forward(), "num_experts_per_tok")


# --------------------------------------------------------------------------
# tensors (expert 3 lives only on rank 1 at 2 ranks)
# --------------------------------------------------------------------------


@NPROCS
@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_missing_expert_tensor(case, nproc, sharded):
    t = mixtral_tensors()
    del t[mx(0, 3, "w2")]
    write_model(case.model, mixtral_config(), t, sharded=sharded)
    case.assert_bad(case.forward(layer=0, nproc=nproc), mx(0, 3, "w2"))


@NPROCS
def test_index_lists_tensor_missing_from_shard(case, nproc):
    t = mixtral_tensors()
    del t[mx(0, 3, "w2")]
    write_model(case.model, mixtral_config(), t, sharded=True, weight_map_extra={mx(0, 3, "w2"): SHARD2})
    case.assert_bad(case.forward(layer=0, nproc=nproc), mx(0, 3, "w2"))


def test_missing_router_tensor(case):
    t = mixtral_tensors()
    del t[mx_gate(0)]
    write_model(case.model, mixtral_config(), t)
    case.assert_bad(case.forward(layer=0), mx_gate(0))


@NPROCS
def test_expert_tensor_wrong_shape(case, nproc):
    t = mixtral_tensors()
    t[mx(0, 3, "w1")] = np.zeros((I, H - 1), np.float32)
    write_model(case.model, mixtral_config(), t)
    case.assert_bad(case.forward(layer=0, nproc=nproc), mx(0, 3, "w1"), shape_key(I, H))


def test_router_wrong_shape(case):
    t = mixtral_tensors()
    t[mx_gate(0)] = np.zeros((E - 1, H), np.float32)
    write_model(case.model, mixtral_config(), t)
    case.assert_bad(case.forward(layer=0), mx_gate(0), shape_key(E, H))


@NPROCS
def test_expert_tensor_int32(case, nproc):
    t = mixtral_tensors()
    t[mx(0, 3, "w3")] = np.ones((I, H), np.int32)
    write_model(case.model, mixtral_config(), t)
    case.assert_bad(case.forward(layer=0, nproc=nproc), mx(0, 3, "w3"), rx(r"i32|int32|f32|float32|bf16|f16"))


def test_router_float64(case):
    t = mixtral_tensors()
    t[mx_gate(0)] = t[mx_gate(0)].astype(np.float64)
    write_model(case.model, mixtral_config(), t)
    case.assert_bad(case.forward(layer=0), mx_gate(0), rx(r"f64|float64|double|f32|float32|bf16|f16"))


# --------------------------------------------------------------------------
# safetensors files
# --------------------------------------------------------------------------


@NPROCS
def test_truncated_safetensors(case, nproc):
    write_mixtral(case)
    f = case.model / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:-100])
    case.assert_bad(case.forward(nproc=nproc), "model.safetensors")


@NPROCS
def test_truncated_shard_of_last_rank(case, nproc):
    write_mixtral(case, sharded=True)
    f = case.model / SHARD2
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 200])
    case.assert_bad(case.forward(nproc=nproc), SHARD2)


@NPROCS
@pytest.mark.parametrize("excess", ["past_eof", "u64_max"])
def test_header_length_larger_than_file(case, nproc, excess):
    write_mixtral(case)
    f = case.model / "model.safetensors"
    data = f.read_bytes()
    n = len(data) + 100 if excess == "past_eof" else 2**64 - 1
    f.write_bytes(struct.pack("<Q", n) + data[8:])
    case.assert_bad(case.forward(nproc=nproc), "model.safetensors")


def test_file_shorter_than_length_field(case):
    write_mixtral(case)
    (case.model / "model.safetensors").write_bytes(b"\x10\x00\x00")
    case.assert_bad(case.forward(), "model.safetensors")


@NPROCS
def test_header_not_json(case, nproc):
    write_mixtral(case)
    _, data = st_layout(mixtral_tensors())
    raw = st_pack(None, data, header_bytes=b'{"model.layers.0.block_sparse_moe": [this is not json')
    (case.model / "model.safetensors").write_bytes(raw)
    case.assert_bad(case.forward(nproc=nproc), "model.safetensors")


@NPROCS
def test_data_offsets_past_end(case, nproc):
    write_mixtral(case)
    t = mixtral_tensors()
    bad = mx(0, 3, "w2")
    order = sorted(n for n in t if n != bad)
    header, data = st_layout({n: t[n] for n in order}, order)
    nbytes = t[bad].nbytes
    header[bad] = {"dtype": "F32", "shape": list(t[bad].shape),
                   "data_offsets": [len(data) + 4096, len(data) + 4096 + nbytes]}
    (case.model / "model.safetensors").write_bytes(st_pack(header, data))
    case.assert_bad(case.forward(nproc=nproc), AnyOf("model.safetensors", bad))


def test_data_offsets_disagree_with_shape(case):
    write_mixtral(case)
    t = mixtral_tensors()
    bad = mx(0, 0, "w1")
    header, data = st_layout(t)
    b, e = header[bad]["data_offsets"]
    header[bad]["shape"] = [I + 8, H]  # claims more bytes than its offsets cover
    (case.model / "model.safetensors").write_bytes(st_pack(header, data))
    case.assert_bad(case.forward(), AnyOf("model.safetensors", bad))


@NPROCS
def test_index_names_missing_shard(case, nproc):
    write_mixtral(case, sharded=True)
    (case.model / SHARD2).unlink()
    case.assert_bad(case.forward(nproc=nproc), SHARD2)


def test_index_not_json(case):
    write_mixtral(case, sharded=True)
    (case.model / INDEX).write_text('{"metadata": {}, "weight_map": {"a": ')
    case.assert_bad(case.forward(), INDEX)


# --------------------------------------------------------------------------
# input .npy
# --------------------------------------------------------------------------


def _bad_input(case, name, content):
    p = case.indir / name
    if isinstance(content, np.ndarray):
        np.save(p, content)
    else:
        p.write_bytes(content)
    return p


@NPROCS
def test_input_not_npy(case, nproc):
    write_mixtral(case)
    p = _bad_input(case, "text_input.npy", b"hello, this is not an npy file\n" * 4)
    case.assert_bad(case.forward(nproc=nproc, inp=p), "text_input.npy")


@NPROCS
def test_input_float64(case, nproc):
    write_mixtral(case)
    p = _bad_input(case, "f64_input.npy", make_input().astype(np.float64))
    case.assert_bad(case.forward(nproc=nproc, inp=p), "f64_input.npy")


@NPROCS
def test_input_wrong_hidden_dim(case, nproc):
    write_mixtral(case)
    p = _bad_input(case, "h15_input.npy", make_input(hidden=H - 1))
    case.assert_bad(case.forward(nproc=nproc, inp=p), "h15_input.npy", rx(rf"(?<!\d){H}(?!\d)"))


@NPROCS
def test_input_1d(case, nproc):
    write_mixtral(case)
    p = _bad_input(case, "flat_input.npy", make_input().reshape(-1))
    case.assert_bad(case.forward(nproc=nproc, inp=p), "flat_input.npy")


@NPROCS
def test_input_missing(case, nproc):
    write_mixtral(case)
    p = case.indir / "absent_input.npy"
    case.assert_bad(case.forward(nproc=nproc, inp=p), "absent_input.npy")


def test_input_truncated_data(case):
    write_mixtral(case)
    p = _bad_input(case, "cut_input.npy", make_input())
    raw = p.read_bytes()
    p.write_bytes(raw[:-40])
    case.assert_bad(case.forward(inp=p), "cut_input.npy")


# --------------------------------------------------------------------------
# --layer
# --------------------------------------------------------------------------


@NPROCS
def test_layer_out_of_range(case, nproc):
    write_mixtral(case)
    case.assert_bad(case.forward(layer=7, nproc=nproc), layer_key(7))


@NPROCS
def test_layer_negative(case, nproc):
    write_mixtral(case)
    case.assert_bad(case.forward(layer=-1, nproc=nproc), rx("layer"))


def test_layer_not_integer(case):
    write_mixtral(case)
    case.assert_bad(case.forward(layer="abc"), rx("layer"))


@NPROCS
def test_qwen2_moe_dense_layer(case, nproc):
    write_model(case.model, qwen2_moe_config(mlp_only_layers=[1]), qwen2_moe_tensors())
    case.assert_bad(case.forward(layer=1, nproc=nproc), layer_key(1))


@NPROCS
def test_deepseek_v3_dense_layer(case, nproc):
    write_model(case.model, deepseek_v3_config(first_k_dense_replace=1), deepseek_v3_tensors())
    case.assert_bad(case.forward(layer=0, nproc=nproc), layer_key(0))


# --------------------------------------------------------------------------
# ranks vs experts
# --------------------------------------------------------------------------


def test_more_ranks_than_experts(case):
    write_model(case.model, mixtral_config(num_local_experts=2, num_experts_per_tok=1), mixtral_tensors(n_experts=2))
    case.assert_bad(case.forward(layer=0, nproc=3), rx("rank"), rx("expert"))


# --------------------------------------------------------------------------
# --output
# --------------------------------------------------------------------------


@NPROCS
def test_output_dir_missing(case, nproc):
    write_mixtral(case)
    missing = case.root / "no_such_dir"
    case.assert_bad(case.forward(nproc=nproc, out=missing / "y.npy"), "no_such_dir")
    assert not missing.exists(), "the missing output directory was created"


# --------------------------------------------------------------------------
# inspect
# --------------------------------------------------------------------------


def test_inspect_missing_dir(case):
    case.assert_bad(case.inspect(model=case.root / "no_such_model"), "no_such_model")


def test_inspect_bad_config(case):
    write_mixtral(case)
    write_config(case.model, "not json at all {")
    case.assert_bad(case.inspect(), "config.json")


def test_inspect_no_weights(case):
    write_config(case.model, mixtral_config())
    case.assert_bad(case.inspect(), "safetensors")


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


def test_unknown_flag(case):
    write_mixtral(case)
    case.assert_bad(case.forward(extra=["--bogus-flag", "1"]), "bogus-flag")


@pytest.mark.parametrize("flag", ["--model", "--input", "--output"])
def test_missing_required_flag(case, flag):
    write_mixtral(case)
    args = {"--model": case.model, "--layer": 0, "--input": case.x, "--output": case.y}
    del args[flag]
    argv = ["forward"] + [v for kv in args.items() for v in kv]
    case.assert_bad(case.run(argv), rx(rf"\b{flag.lstrip('-')}\b"))


def test_flag_missing_value(case):
    write_mixtral(case)
    argv = ["forward", "--model", case.model, "--input", case.x, "--output", case.y, "--layer"]
    case.assert_bad(case.run(argv), rx("layer"))


def test_unknown_subcommand(case):
    case.assert_bad(case.run(["frobnicate", "--model", case.model]), "frobnicate")


# --------------------------------------------------------------------------
# --grad-output / --grads (backward)
# --------------------------------------------------------------------------

load_file = safetensors_numpy.load_file


def _grad_args(case, g=None, grads=None):
    """--grad-output g --grads grads (either may be omitted with False)."""
    args = []
    if g is not False:
        if g is None:
            g = case.indir / "g.npy"
            np.save(g, make_input(seed=7))
        args += ["--grad-output", g]
    if grads is not False:
        args += ["--grads", grads if grads is not None else case.outdir / "grads.safetensors"]
    return args


def _layer_tensor_names(tensors, layer):
    pre = (f"model.layers.{layer}.block_sparse_moe.", f"model.layers.{layer}.mlp.")
    return {n for n in tensors if n.startswith(pre) and not n.endswith("e_score_correction_bias")}


@NPROCS
@pytest.mark.parametrize("model", ["mixtral", "qwen2_moe", "deepseek_v3"])
def test_valid_grads(case, nproc, model):
    """Sanity for the bad-gradient tests: a valid backward writes y.npy and the
    gradients (hidden_states + every trainable tensor of the layer) and nothing else."""
    cfg, tensors, layer = {
        "mixtral": (mixtral_config(), mixtral_tensors(), 0),
        "qwen2_moe": (qwen2_moe_config(), qwen2_moe_tensors(), 0),
        "deepseek_v3": (deepseek_v3_config(), deepseek_v3_tensors(), 1),
    }[model]
    write_model(case.model, cfg, tensors)
    res = case.forward(layer=layer, nproc=nproc,
                       extra=_grad_args(case) + ["--aux-loss-coef", "0.1", "--z-loss-coef", "0.01"])
    case.assert_ok(res, expect_files=("grads.safetensors", "y.npy"))
    _check_y(case.y)
    grads = load_file(str(case.outdir / "grads.safetensors"))
    assert set(grads) == _layer_tensor_names(tensors, layer) | {"hidden_states"}, sorted(grads)
    assert grads["hidden_states"].shape == (T, H)
    for name, g in grads.items():
        assert g.dtype == np.float32 and np.all(np.isfinite(g)), name
        if name != "hidden_states":
            assert g.shape == tensors[name].shape, (name, g.shape)


@NPROCS
@pytest.mark.parametrize("shape", [(T, H - 1), (T - 1, H)], ids=["hidden-1", "tokens-1"])
def test_grad_output_wrong_shape(case, nproc, shape):
    write_mixtral(case)
    g = case.indir / "bad_shape_g.npy"
    np.save(g, np.ones(shape, np.float32))
    case.assert_bad(case.forward(nproc=nproc, extra=_grad_args(case, g=g)), "bad_shape_g.npy")


@NPROCS
def test_grad_output_float64(case, nproc):
    write_mixtral(case)
    g = case.indir / "f64_g.npy"
    np.save(g, make_input(seed=7).astype(np.float64))
    case.assert_bad(case.forward(nproc=nproc, extra=_grad_args(case, g=g)), "f64_g.npy")


@NPROCS
def test_grad_output_missing_file(case, nproc):
    write_mixtral(case)
    g = case.indir / "absent_g.npy"
    case.assert_bad(case.forward(nproc=nproc, extra=_grad_args(case, g=g)), "absent_g.npy")


@NPROCS
def test_grads_without_grad_output(case, nproc):
    write_mixtral(case)
    case.assert_bad(case.forward(nproc=nproc, extra=_grad_args(case, g=False)), rx(r"--grad-output\b"))


@NPROCS
def test_grad_output_without_grads(case, nproc):
    write_mixtral(case)
    case.assert_bad(case.forward(nproc=nproc, extra=_grad_args(case, grads=False)), rx(r"--grads\b"))


@NPROCS
def test_grads_dir_missing(case, nproc):
    write_mixtral(case)
    missing = case.root / "no_such_grads_dir"
    res = case.forward(nproc=nproc, extra=_grad_args(case, grads=missing / "grads.safetensors"))
    case.assert_bad(res, "no_such_grads_dir")
    assert not missing.exists(), "the missing gradients directory was created"


@NPROCS
def test_grads_path_is_directory(case, nproc):
    write_mixtral(case)
    d = case.root / "grads_is_a_dir"
    d.mkdir()
    case.assert_bad(case.forward(nproc=nproc, extra=_grad_args(case, grads=d)), "grads_is_a_dir")
    assert list(d.iterdir()) == [], "files left in the directory given as --grads"


@NPROCS
@pytest.mark.parametrize("flag", ["--aux-loss-coef", "--z-loss-coef"])
def test_negative_loss_coef(case, nproc, flag):
    write_mixtral(case)
    case.assert_bad(case.forward(nproc=nproc, extra=_grad_args(case) + [flag, "-0.5"]), flag.lstrip("-"))


# --------------------------------------------------------------------------
# SWITCHYARD_* settings (the registry behind `switchyard env`)
# --------------------------------------------------------------------------


def test_env_lists_settings_with_defaults(case, monkeypatch):
    for name in ("SWITCHYARD_POLL_US", "SWITCHYARD_DEBUG", "SWITCHYARD_DEBUG_SUBSYS"):
        monkeypatch.delenv(name, raising=False)
    res = case.run(["env"])
    assert res.rc == 0, res.describe()
    poll = [l for l in res.out.splitlines() if l.startswith("SWITCHYARD_POLL_US=")]
    assert len(poll) == 1 and poll[0].split()[:2] == ["SWITCHYARD_POLL_US=200", "default"], res.describe()


@NPROCS
def test_env_bad_setting(case, nproc, monkeypatch):
    monkeypatch.setenv("SWITCHYARD_POLL_US", "abc")
    case.assert_bad(case.run(["env"], nproc=nproc), "SWITCHYARD_POLL_US=abc")
