"""End-to-end checks of ``switchyard train`` on a small synthetic corpus.

Run:
    SWITCHYARD_BIN=/work/main/build/launch/switchyard \
        python -m pytest -q tests/python/test_train_cli.py

Environment:
    SWITCHYARD_BIN  path to the switchyard binary (the module is skipped if unset)
    MPIEXEC         MPI launcher (default ``mpirun``; Open MPI flags are used)

Covers: a 2-rank run whose loss falls, with progress lines, JSON lines and
the final line; two identical runs giving identical loss curves; a run
stopped and resumed from its checkpoint ending byte-identical to an
uninterrupted one; a damaged checkpoint (one flipped byte in any of its
files, or a truncated file) refused naming the file; and bad configurations
ending every rank with one ``switchyard: error:`` line naming the field.
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

BIN = os.environ.get("SWITCHYARD_BIN")
if not BIN:
    pytest.skip("SWITCHYARD_BIN is not set", allow_module_level=True)
MPIEXEC = shlex.split(os.environ.get("MPIEXEC", "mpirun"))
TIMEOUT = 120
ERR = "switchyard: error:"
CRASH = ("Segmentation fault", "core dumped", "terminate called", "Aborted", "MPI_ABORT")
WORDS = "the cat sat on a mat and dog ran to big red house in rain sun".split()


def env():
    e = dict(os.environ)
    e.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    return e


def run(args, nproc=2, check=True):
    argv = [*MPIEXEC, "-np", str(nproc), "--oversubscribe", BIN, "train", *map(str, args)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=env())
    if check:
        assert p.returncode == 0, f"{argv}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    s, out = 12345, []
    while sum(map(len, out)) < 60000:
        s = (s * 6364136223846793005 + 1442695040888963407) % 2**64
        out.append(WORDS[(s >> 33) % 16] + (".\n" if (s >> 20) % 9 == 0 else " "))
    (d / "words").write_text("".join(out))
    (d / "words.dat").write_bytes(b"\x00\x01 ignored index")
    return d


def write_config(path, corpus, **overrides):
    cfg = {
        "data": {"dir": str(corpus), "min_bytes": 1000},
        "model": {"arch": "mixtral", "hidden": 32, "ffn": 32, "experts": 4, "top_k": 2, "layers": 2,
                  "context": 8, "embed": 8},
        "optimizer": {"type": "adamw", "lr": 0.01, "betas": [0.9, 0.95], "weight_decay": 0.01},
        "schedule": {"warmup_steps": 5, "min_lr": 0.001},
        "grad_clip": 1.0, "batch_tokens": 64, "steps": 60, "seed": 3, "log_interval": 5,
        "eval_interval": 20, "eval_tokens": 1000, "aux_loss_coef": 0.01, "z_loss_coef": 0.001,
    }
    for k, v in overrides.items():
        if isinstance(v, dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    path.write_text(json.dumps(cfg))
    return path


def read_lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_short_run_loss_falls_and_reports(tmp_path, corpus):
    cfg = write_config(tmp_path / "c.json", corpus)
    p = run(["--config", cfg, "--json", tmp_path / "log.jsonl"])
    out = p.stdout.strip().splitlines()
    final = json.loads(out[-1])
    assert final["event"] == "final" and final["step"] == 60
    for key in ("val_loss", "unigram_val_loss", "bigram_val_loss"):
        assert 0 < final[key] < 10
    assert final["val_loss"] < final["unigram_val_loss"]
    assert any(line.startswith("step ") and "tok/s" in line and "load max/mean" in line and "eta" in line
               for line in out)
    assert any("layer 1 expert  3" in line for line in out), "no specialisation summary"

    lines = read_lines(tmp_path / "log.jsonl")
    steps = [x for x in lines if x["event"] == "step"]
    assert [x["step"] for x in steps] == list(range(5, 61, 5))
    assert steps[-1]["loss"] < steps[0]["loss"] - 0.5
    assert [x["step"] for x in lines if x["event"] == "eval"] == [20, 40]
    assert lines[-1]["event"] == "final" and len(lines[-1]["experts"]) == 8
    assert abs(sum(e["token_share"] for e in lines[-1]["experts"] if e["layer"] == 0) - 1) < 1e-9


def test_identical_runs_give_identical_curves(tmp_path, corpus):
    cfg = write_config(tmp_path / "c.json", corpus, steps=20, log_interval=1, model={"arch": "qwen2_moe"})
    run(["--config", cfg, "--json", tmp_path / "a.jsonl", "--quiet"])
    run(["--config", cfg, "--json", tmp_path / "b.jsonl", "--quiet"])
    a = [x["loss"] for x in read_lines(tmp_path / "a.jsonl") if x["event"] == "step"]
    b = [x["loss"] for x in read_lines(tmp_path / "b.jsonl") if x["event"] == "step"]
    assert len(a) == 20 and a == b


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_resume_equals_uninterrupted(tmp_path, corpus, optimizer):
    cfg = write_config(tmp_path / "c.json", corpus, steps=16,
                       optimizer={"type": optimizer, "lr": 0.01 if optimizer == "adamw" else 0.1},
                       model={"arch": "deepseek_v3", "experts": 4}, bias_update_speed=0.001)
    full, half, resumed = tmp_path / "full", tmp_path / "half", tmp_path / "resumed"
    run(["--config", cfg, "--save", full, "--quiet"])
    p = run(["--config", cfg, "--stop-after", 8, "--save", half, "--save-every", 4, "--quiet"])
    assert json.loads(p.stdout.strip().splitlines()[-1])["step"] == 8
    run(["--config", cfg, "--resume", half, "--save", resumed, "--quiet"])
    names = sorted(f.name for f in full.iterdir())
    assert names == sorted(f.name for f in resumed.iterdir())
    assert "model.safetensors.index.json" in names and "experts-rank00001-of-00002.safetensors" in names
    for name in names:
        assert (full / name).read_bytes() == (resumed / name).read_bytes(), name
    index = json.loads((full / "model.safetensors.index.json").read_text())
    assert index["metadata"]["step"] == 16
    assert set(index["weight_map"].values()) == {"replicated.safetensors", "experts-rank00000-of-00002.safetensors",
                                                 "experts-rank00001-of-00002.safetensors"}
    assert not [f for f in tmp_path.iterdir() if ".tmp-" in f.name]


def test_top_p_router_trains_with_fewer_experts(tmp_path, corpus):
    # Up to 4 of 8 experts until their probability reaches 0.5, with the
    # entropy loss: tokens use between 1 and 4, and the histogram, its mean
    # and the compute ratio agree with each other in every line.
    cfg = write_config(tmp_path / "c.json", corpus, steps=30, eval_interval=10,
                       model={"experts": 8, "top_k": 2})
    p = run(["--config", cfg, "--router", "top-p", "--top-p", 0.5, "--max-k", 4, "--entropy-loss-coef", 0.01,
             "--json", tmp_path / "log.jsonl"])
    assert "(top-p 0.5, at most 4)" in p.stdout
    assert any(line.startswith("step ") and "experts/token" in line for line in p.stdout.splitlines())
    lines = read_lines(tmp_path / "log.jsonl")
    for x in lines:
        h = x["experts_per_token_histogram"]
        assert len(h) == 5 and h[0] == 0, x
        mean = sum(k * n for k, n in enumerate(h)) / sum(h)
        assert abs(x["experts_per_token"] - mean) < 1e-12
        assert abs(x["expert_compute_vs_top_k"] - mean / 4) < 1e-12
    final = lines[-1]
    assert final["event"] == "final" and final["val_loss"] < final["unigram_val_loss"]
    assert 1.0 < final["experts_per_token"] < 4.0, final["experts_per_token_histogram"]
    # Every token counted once per block in training steps: 64 tokens x 2 ranks x 2 blocks.
    steps = [x for x in lines if x["event"] == "step"]
    assert all(sum(x["experts_per_token_histogram"]) == 64 * 2 * 2 for x in steps)
    # A fixed top-k router reports its k for every token.
    run(["--config", cfg, "--json", tmp_path / "k.jsonl", "--quiet", "--steps", 5])
    k = read_lines(tmp_path / "k.jsonl")[-1]
    assert k["experts_per_token"] == 2.0 and k["expert_compute_vs_top_k"] == 1.0


def test_noisy_top_k_router_learns_its_noise(tmp_path, corpus):
    # The noise weights start at zero and are trained; evaluation is
    # noise-free, so two runs of the same configuration agree exactly.
    cfg = write_config(tmp_path / "c.json", corpus, steps=20, eval_interval=10, aux_loss_coef=0.0,
                       importance_loss_coef=0.1, load_loss_coef=0.1)
    p = run(["--config", cfg, "--router", "noisy-top-k", "--json", tmp_path / "a.jsonl", "--save", tmp_path / "ck"])
    assert "(noisy top-2)" in p.stdout
    run(["--config", cfg, "--router", "noisy-top-k", "--json", tmp_path / "b.jsonl", "--quiet"])
    a, b = read_lines(tmp_path / "a.jsonl"), read_lines(tmp_path / "b.jsonl")
    assert a[-1]["val_loss"] == b[-1]["val_loss"] and a[-1]["val_loss"] < a[-1]["unigram_val_loss"]
    assert all(x["aux_loss"] > 0 for x in a if x["event"] == "step"), "importance and load losses missing"
    from safetensors.numpy import load_file
    tensors = load_file(str(tmp_path / "ck" / "replicated.safetensors"))
    for block in (0, 1):
        w = tensors[f"blocks.{block}.moe.gate.noise_weight"]
        assert w.shape == (4, 32) and abs(w).max() > 1e-4, "the noise weights did not train"


def test_bad_router_choices_are_refused(tmp_path, corpus):
    ok = write_config(tmp_path / "ok.json", corpus, steps=2)
    assert_bad(run(["--config", ok, "--top-p", 0.5], check=False), "--top-p", "--router top-p")
    assert_bad(run(["--config", ok, "--router", "top-p"], check=False), "--router top-p", "--top-p")
    assert_bad(run(["--config", ok, "--router", "top-p", "--top-p", 0.5, "--max-k", 9], check=False), "--max-k 9")
    assert_bad(run(["--config", ok, "--router", "top-q"], check=False), "--router")
    ds = write_config(tmp_path / "ds.json", corpus, steps=2, model={"arch": "deepseek_v3"})
    assert_bad(run(["--config", ds, "--router", "top-p", "--top-p", 0.5], check=False), "top-p", "sigmoid")
    assert_bad(run(["--config", ds, "--router", "noisy-top-k"], check=False), "noisy-top-k", "softmax")
    coef = write_config(tmp_path / "coef.json", corpus, steps=2, load_loss_coef=0.1)
    assert_bad(run(["--config", coef], check=False), "'load_loss_coef'", "noisy-top-k")

    def bad(name, **model):
        return run(["--config", write_config(tmp_path / f"{name}.json", corpus, steps=2, model=model)], check=False)

    assert_bad(bad("kind", router="top-n"), "'model.router'", "top-n")
    assert_bad(bad("needs", top_p=0.5), "'model.top_p'", "needs model.router")
    assert_bad(bad("required", router="top-p"), "'model.top_p'", "required")
    assert_bad(bad("range", router="top-p", top_p=1.5), "'model.top_p'", "(0, 1]")


def assert_bad(p, *needles):
    text = p.stdout + p.stderr
    assert p.returncode != 0, text
    errors = [line for line in p.stderr.splitlines() if line.startswith(ERR)]
    assert len(errors) == 1, text
    for n in needles:
        assert n in errors[0], f"{n!r} not in {errors[0]!r}"
    for marker in CRASH:
        assert marker not in text, text


def test_bad_configurations_name_the_field(tmp_path, corpus):
    def bad(name, **overrides):
        return run(["--config", write_config(tmp_path / f"{name}.json", corpus, **overrides)], check=False)

    assert_bad(bad("unknown", stpes=3), "'stpes'", "not a known field")
    assert_bad(bad("type", steps="ten"), "'steps'", "integer")
    assert_bad(bad("arch", model={"arch": "gpt2"}), "'model.arch'", "gpt2")
    assert_bad(bad("opt", optimizer={"type": "adam"}), "'optimizer.type'")
    assert_bad(bad("ranks", model={"experts": 1, "top_k": 1}), "'model.experts'", "ranks")
    assert_bad(bad("data", data={"dir": str(tmp_path / "nowhere")}), "data.dir", "nowhere")
    assert_bad(run(["--config", tmp_path / "missing.json"], check=False), "missing.json")
    ok = write_config(tmp_path / "ok.json", corpus, steps=2)
    assert_bad(run(["--config", ok, "--save-every", 1], check=False), "--save-every")
    assert_bad(run(["--config", ok, "--resume", tmp_path / "nockpt"], check=False), "--resume", "nockpt")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert_bad(run(["--config", ok, "--save", foreign], check=False), "--save", "not a training checkpoint")
    assert (foreign / "keep.txt").read_text() == "mine"
    # A checkpoint of another model is refused by name.
    run(["--config", ok, "--save", tmp_path / "ck", "--quiet"])
    other = write_config(tmp_path / "other.json", corpus, steps=2, model={"hidden": 16})
    assert_bad(run(["--config", other, "--resume", tmp_path / "ck"], check=False), "metadata.model")


def test_damaged_checkpoint_is_refused_naming_the_file(tmp_path, corpus):
    # The index records a checksum of every other file and of itself: one
    # flipped byte anywhere, or a truncated file, refuses the resume by name.
    cfg = write_config(tmp_path / "c.json", corpus, steps=2)
    ck = tmp_path / "ck"
    run(["--config", cfg, "--save", ck, "--quiet"])
    index_name = "model.safetensors.index.json"
    index = json.loads((ck / index_name).read_text())
    files = sorted(f.name for f in ck.iterdir())
    assert sorted(index["metadata"]["checksums"]) == [f for f in files if f != index_name]
    assert all(v.startswith("xxh3-128:") for v in index["metadata"]["checksums"].values())

    def damaged(name, change, how):
        bad = tmp_path / f"{how}-{name}"
        shutil.copytree(ck, bad)
        data = bytearray((bad / name).read_bytes())
        (bad / name).write_bytes(change(data))
        return run(["--config", cfg, "--resume", bad, "--quiet"], check=False), str(bad / name)

    def flip(data):
        data[len(data) // 2] ^= 0x01
        return data

    for name in files:
        p, path = damaged(name, flip, "flipped")
        assert_bad(p, path, "the file is damaged")
    p, path = damaged("experts-rank00001-of-00002.safetensors", lambda d: d[: len(d) - 100], "truncated")
    assert_bad(p, path, "truncated", "the file is damaged")
    # A checkpoint written without checksums resumes unchecked.
    for key in ("checksums", "file_sizes", "index_checksum"):
        del index["metadata"][key]
    (ck / index_name).write_text(json.dumps(index, indent=2))
    run(["--config", cfg, "--resume", ck, "--quiet"])


def _descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def test_killed_while_saving_leaves_a_whole_checkpoint(tmp_path, corpus):
    # Saving every step, the run is killed at arbitrary moments; the checkpoint
    # directory must always resume (a save is published by one rename).
    cfg = write_config(tmp_path / "c.json", corpus, steps=100000, log_interval=1000, eval_interval=0,
                       model={"hidden": 64, "ffn": 64})
    ck = tmp_path / "ck"
    for delay in (1.5, 2.3):
        argv = [*MPIEXEC, "-np", "2", "--oversubscribe", BIN, "train", "--config", str(cfg), "--save", str(ck),
                "--save-every", "1", "--quiet"]
        if ck.exists():
            argv += ["--resume", str(ck)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
        time.sleep(delay)
        for pid in [proc.pid, *_descendants(proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)
        assert ck.is_dir(), "no checkpoint was published"
        step = json.loads((ck / "model.safetensors.index.json").read_text())["metadata"]["step"]
        p = run(["--config", cfg, "--resume", ck, "--stop-after", step + 1, "--quiet"])
        assert json.loads(p.stdout.strip().splitlines()[-1])["step"] == step + 1
