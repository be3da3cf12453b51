"""Faults a cluster job meets, injected on the emulated cluster: none may hang the job.

Run (as root; CTest sets these, label ``cluster``):
    SWITCHYARD_BIN=build/launch/switchyard MAKE_RANDOM_MOE=build/examples/make_random_moe \
        python -m pytest -q tests/cluster/test_faults.py

Each test starts a job on launch/emulated-cluster, injects one fault while
the ranks are mid-step, and requires the watchdog's line (naming the
operation, what the program was doing and the rank that did not answer)
within ``--timeout`` + 10 s of the fault, the job ended non-zero soon after
(mpirun then has to notice the lost node: a looser bound, for a loaded
host), nothing left behind, and the last complete checkpoint intact and
resumable. A job a test leaves running (a failed assertion) is ended at
teardown.
"""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from leftovers import assert_no_leftovers, cmdline, live_processes_of, root_links

if os.geteuid() != 0:
    pytest.fail("the fault tests need root (network namespaces, mounts)", pytrace=False)

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "launch" / "emulated-cluster"
TIMEOUT_S = 4  # --timeout of the jobs
LINE_BOUND_S = TIMEOUT_S + 10  # from the fault to the watchdog's line
END_BOUND_S = TIMEOUT_S + 25  # from the fault to the end of the job
STALL = re.compile(r"switchyard: error: rank (\d+): (\S+(?: \(alltoallv\))?) made no progress for ([0-9.]+) s "
                   r"in (.+?): waiting on rank (\d+) \(no answer within 2 s: stopped, dead, cut off, or busy "
                   r"outside MPI\); ending the job")


def tool(name):
    path = os.environ.get(name)
    if not path:
        pytest.fail(f"{name} is not set (path to the built program)", pytrace=False)
    return path


def env():
    return dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")


def rank_pid(launcher_pid, rank):
    """The pid of switchyard rank `rank` of the job the launcher started."""
    program = os.path.basename(tool("SWITCHYARD_BIN"))
    for pid in live_processes_of(f"sy{launcher_pid}"):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        words = cmdline(pid).split()
        if f"OMPI_COMM_WORLD_RANK={rank}\0".encode() in environ and words and os.path.basename(words[0]) == program:
            return pid
    return None


class Job:
    """A switchyard job on 2 emulated nodes x 1 rank."""

    def __init__(self, args, tmp_path):
        self.links_before = root_links()
        self.log = open(tmp_path / "job.log", "w+")
        self.proc = subprocess.Popen([str(LAUNCHER), "--nodes", "2", "--ranks-per-node", "1", "--link-gbit", "1",
                                      "--", tool("SWITCHYARD_BIN"), *map(str, args), "--timeout", str(TIMEOUT_S)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env())

    def wait_until(self, condition, what, limit=90):
        deadline = time.monotonic() + limit
        while not condition():
            assert self.proc.poll() is None, f"the job ended before {what}: {self.output()}"
            assert time.monotonic() < deadline, f"no {what} within {limit} s: {self.output()}"
            time.sleep(0.1)

    def rank(self, r):
        self.wait_until(lambda: rank_pid(self.proc.pid, r) is not None, f"rank {r}")
        return rank_pid(self.proc.pid, r)

    def after_fault(self):
        """Seconds from now to the watchdog's line (None if it never came) and the job's output."""
        start = time.monotonic()
        line_s = None
        while self.proc.poll() is None and time.monotonic() - start < END_BOUND_S + 30:
            if line_s is None and STALL.search(self.output()):
                line_s = time.monotonic() - start
            time.sleep(0.1)
        if self.proc.poll() is None:
            self.stop()
            pytest.fail(f"the job hung after the fault: {self.output()}")
        took = time.monotonic() - start
        if line_s is None and STALL.search(self.output()):
            line_s = took
        assert_no_leftovers(self.proc.pid, self.links_before)
        assert took <= END_BOUND_S, f"the job took {took:.1f} s after the fault (bound {END_BOUND_S} s): {self.output()}"
        assert self.proc.returncode != 0
        return line_s, self.output()

    def stop(self):
        """Ends the launcher as a user would (SIGTERM runs its teardown), then for sure."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


@pytest.fixture
def jobs():
    """Jobs a test starts; any still running at teardown (a failed assertion) are ended."""
    started = []
    yield lambda args, tmp_path: started.append(Job(args, tmp_path)) or started[-1]
    for job in started:
        job.stop()


def stall_lines(output):
    return [m.groups() for m in STALL.finditer(output)]


@pytest.fixture(scope="module")
def train_config(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    words = "the cat sat on a mat and dog ran to big red house in rain sun".split()
    s, out = 7, []
    while sum(map(len, out)) < 40000:
        s = (s * 6364136223846793005 + 1442695040888963407) % 2**64
        out.append(words[(s >> 33) % 16] + (".\n" if (s >> 20) % 9 == 0 else " "))
    (d / "corpus").mkdir()
    (d / "corpus" / "words").write_text("".join(out))
    cfg = {"data": {"dir": str(d / "corpus"), "min_bytes": 1000},
           "model": {"arch": "mixtral", "hidden": 64, "ffn": 64, "experts": 4, "top_k": 2, "layers": 2,
                     "context": 8, "embed": 8},
           "optimizer": {"type": "adamw", "lr": 0.01},
           "batch_tokens": 64, "steps": 1000000, "seed": 3, "log_interval": 1000000, "eval_interval": 0}
    (d / "train.json").write_text(json.dumps(cfg))
    return d / "train.json"


def resume_one_step(config, checkpoint):
    """Resumes the checkpoint for one more step under plain mpirun; returns (saved step, resumed step)."""
    step = json.loads((checkpoint / "model.safetensors.index.json").read_text())["metadata"]["step"]
    p = subprocess.run(["mpirun", "--oversubscribe", "-np", "2", tool("SWITCHYARD_BIN"), "train", "--config",
                        str(config), "--resume", str(checkpoint), "--stop-after", str(step + 1), "--quiet"],
                       capture_output=True, text=True, timeout=120, env=env())
    assert p.returncode == 0, p.stdout + p.stderr
    return step, json.loads(p.stdout.strip().splitlines()[-1])["step"]


@pytest.mark.parametrize("fault", ["SIGSTOP", "SIGKILL", "link down"])
def test_fault_mid_training(tmp_path, train_config, jobs, fault):
    # Saving every step, a fault strikes rank 1 or node1 at some moment of a
    # step or of a save. The job ends; a stall is named by rank 0 (node1's
    # own line cannot cross a dead link); the last published checkpoint
    # resumes.
    checkpoint = tmp_path / "ck"
    job = jobs(["train", "--config", train_config, "--save", checkpoint, "--save-every", "1", "--quiet"], tmp_path)
    victim = job.rank(1)
    job.wait_until(checkpoint.is_dir, "checkpoint")  # the ranks are stepping
    time.sleep(1.3)
    if fault == "link down":
        subprocess.run(["ip", "-n", f"sy{job.proc.pid}n1", "link", "set", "eth0", "down"], check=True)
    else:
        os.kill(victim, getattr(signal, fault.replace(" ", "")))
    line_s, output = job.after_fault()
    if fault != "SIGKILL":
        assert line_s is not None and line_s <= LINE_BOUND_S, f"watchdog line after {line_s} s: {output}"
        lines = stall_lines(output)
        assert ("0", "1") in [(rank, peer) for rank, _, _, _, peer in lines], output
        for _, _, waited, doing, _ in lines:
            assert float(waited) >= TIMEOUT_S, output
            assert re.fullmatch(r"(train step|checkpoint save after step) \d+", doing), output
    if fault == "SIGSTOP":
        assert job.proc.returncode == 124, output  # the watchdog's MPI_Abort code, passed on by mpirun
    step, resumed = resume_one_step(train_config, checkpoint)
    assert resumed == step + 1


def test_disk_full_leaves_no_partial_file(tmp_path):
    model = tmp_path / "model"
    subprocess.run([tool("MAKE_RANDOM_MOE"), "--out", str(model), "--arch", "mixtral", "--tokens", "256"],
                   check=True, capture_output=True, timeout=60)
    full = tmp_path / "full"
    full.mkdir()
    # A 16 KiB filesystem in a mount namespace of its own: the 32 KiB output cannot fit.
    script = (f"mount -t tmpfs -o size=16k none {full} && mpirun --oversubscribe -np 2 {tool('SWITCHYARD_BIN')} "
              f"forward --model {model} --layer 1 --input {model}/x.npy --output {full}/y.npy --quiet; "
              f"rc=$?; ls -A {full}; exit $rc")
    p = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120, env=env())
    assert p.returncode != 0
    assert f"switchyard: error: {full}/y.npy: write failed (No space left on device)" in p.stderr, p.stderr
    assert p.stdout.strip() == "", f"left in the full filesystem: {p.stdout}"
