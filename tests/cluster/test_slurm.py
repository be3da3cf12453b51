"""A real Slurm cluster across emulated nodes runs the project's batch template.

Run (as root; CTest sets these, label ``slurm``):
    SWITCHYARD_BIN=build/launch/switchyard MAKE_RANDOM_MOE=build/examples/make_random_moe \
        python -m pytest -q tests/cluster/test_slurm.py

launch/slurm/emulated-slurm starts munged, slurmctld and one slurmd per node of
launch/emulated-cluster (Debian's packages). The template
launch/slurm/switchyard.sbatch is submitted with ``sbatch --wait -N 2`` and
``-N 4``; its forward and backward must equal, bit for bit, the same run
under mpirun on the same emulated nodes (launch/emulated-cluster), and so
must the traffic per link class it reports. Nothing here skips: a machine
that cannot run Slurm fails with the step that cannot work.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from leftovers import assert_no_leftovers, cmdline, live_processes_of, root_links, run_launcher

ROOT = Path(__file__).resolve().parents[2]
SLURM = ROOT / "launch" / "slurm" / "emulated-slurm"
TEMPLATE = ROOT / "launch" / "slurm" / "switchyard.sbatch"
CLUSTER = ROOT / "launch" / "emulated-cluster"
NODES = 4
TIMEOUT = 300
# Open MPI between emulated nodes: TCP over each node's eth0, shared memory inside one.
MPI_ENV = {"OMPI_MCA_pml": "ob1", "OMPI_MCA_btl": "self,vader,tcp", "OMPI_MCA_osc": "^ucx",
           "OMPI_MCA_btl_tcp_if_include": "eth0", "OMPI_MCA_oob_tcp_if_include": "eth0"}


def require(condition, step):
    if not condition:
        pytest.fail(f"Slurm test cannot run on this machine: {step}", pytrace=False)


def tool(name):
    path = os.environ.get(name)
    require(path, f"{name} is not set (path to the built program)")
    return path


def run_slurm(args, timeout=TIMEOUT, env=None):
    """Runs emulated-slurm to completion and checks that it left nothing behind."""
    return run_launcher([str(SLURM), *args], timeout, env=env)


def forward_flags(model, out_dir):
    return ["forward", "--model", str(model), "--layer", "1", "--input", str(model / "x.npy"),
            "--grad-output", str(model / "dy.npy"), "--output", str(out_dir / "y.npy"),
            "--grads", str(out_dir / "grads.safetensors"), "--quiet"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    require(os.geteuid() == 0, "not root (Slurm's daemons and the network namespaces need root)")
    for program in ["munged", "slurmctld", "slurmd", "sbatch", "ip", "tc"]:
        require(subprocess.run(["sh", "-c", f"command -v {program}"], capture_output=True).returncode == 0,
                f"'{program}' not found (scripts/setup.sh --test installs it)")
    model = tmp_path_factory.mktemp("slurm") / "model"
    subprocess.run([tool("MAKE_RANDOM_MOE"), "--out", str(model), "--arch", "mixtral", "--tokens", "96",
                    "--experts", "8"], check=True, capture_output=True, timeout=60)
    x = np.load(model / "x.npy")
    np.save(model / "dy.npy", np.random.default_rng(5).standard_normal(x.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def slurm_jobs(model):
    """One Slurm cluster of 4 nodes; jobs at -N 2, -N 4 and one that fails. Returns {name: (rc, folder)}."""
    work = model.parent / "jobs"
    work.mkdir()
    jobs = {"n2": f"-N 2 {TEMPLATE} " + " ".join(forward_flags(model, work / "n2")),
            "n4": f"-N 4 {TEMPLATE} " + " ".join(forward_flags(model, work / "n4")),
            "bad": f"-N 2 {TEMPLATE} forward --model {model} --layer 1 --input {model}/x.npy --output y.npy --no-such"}
    script = ["set -u"]
    for name, args in jobs.items():
        (work / name).mkdir()
        script.append(f"SWITCHYARD_RUNS={work / name} sbatch --wait --parsable --ntasks-per-node 1 --time 5 "
                      f"--output {work / name}/slurm.out {args} > {work / name}/jobid; echo $? > {work / name}/rc")
    env = dict(os.environ, SWITCHYARD=tool("SWITCHYARD_BIN"), SWITCHYARD_CPU_BIND="none", **MPI_ENV)
    res = run_slurm(["--nodes", str(NODES), "--cpus-per-node", "1", "--link-gbit", "2", "--", "bash", "-c",
                        "\n".join(script)], env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    result = {}
    for name in jobs:
        job_id = (work / name / "jobid").read_text().strip()
        rc = int((work / name / "rc").read_text())
        result[name] = (rc, work / name, work / name / f"job-{job_id}")
    return result


def mpirun_reference(model, nodes, out_dir):
    """The same forward and backward under mpirun on the same emulated nodes."""
    out_dir.mkdir(exist_ok=True)
    flags = forward_flags(model, out_dir) + ["--json", str(out_dir / "results.jsonl")]
    res = subprocess.run([str(CLUSTER), "--nodes", str(nodes), "--ranks-per-node", "1", "--link-gbit", "2", "--",
                          tool("SWITCHYARD_BIN"), *flags], capture_output=True, text=True, timeout=TIMEOUT,
                         env=dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1"))
    assert res.returncode == 0, res.stdout + res.stderr
    return out_dir


@pytest.mark.parametrize("nodes", [2, 4])
def test_sbatch_equals_mpirun(slurm_jobs, model, nodes):
    rc, out_dir, job_dir = slurm_jobs[f"n{nodes}"]
    assert rc == 0, (out_dir / "slurm.out").read_text()
    reference = mpirun_reference(model, nodes, model.parent / f"mpirun{nodes}")
    assert np.array_equal(np.load(out_dir / "y.npy"), np.load(reference / "y.npy"))
    assert (out_dir / "grads.safetensors").read_bytes() == (reference / "grads.safetensors").read_bytes()
    line = json.loads((job_dir / "results.jsonl").read_text())
    expected = json.loads((reference / "results.jsonl").read_text())
    assert line["ranks"] == nodes
    for field in ["link_bytes", "link_copies", "link_slots"]:
        assert line[field] == expected[field], field
    assert line["link_bytes"]["other_node"] > 0  # the ranks really were on different nodes


@pytest.mark.parametrize("nodes", [2, 4])
def test_job_folder(slurm_jobs, nodes):
    _, _, job_dir = slurm_jobs[f"n{nodes}"]
    command = (job_dir / "command.txt").read_text()
    assert command.startswith("srun --mpi=pmix --cpu-bind=none --kill-on-bad-exit=1 ")
    assert f"{nodes} nodes" in command and f"--json {job_dir}/results.jsonl" in command
    trace = json.loads((job_dir / "trace.json").read_text())
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    assert {e["pid"] for e in events if e.get("ph") == "X"} == set(range(nodes))
    assert (job_dir / "output.log").exists()


def test_failed_job_reports_the_error(slurm_jobs):
    rc, out_dir, job_dir = slurm_jobs["bad"]
    assert rc != 0
    log = (job_dir / "output.log").read_text()
    assert "switchyard: error: The following argument was not expected: --no-such" in log, log
    assert not (job_dir / "results.jsonl").exists()


def test_template_outside_slurm_is_refused():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    res = subprocess.run([str(TEMPLATE), "bench"], capture_output=True, text=True, env=env, timeout=30)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("switchyard.sbatch: error: not inside a Slurm job")


def test_exit_code_and_teardown_after_failing_command():
    res = run_slurm(["--nodes", "2", "--cpus-per-node", "1", "--link-gbit", "1", "--", "sh", "-c",
                        "sinfo -h -N -o %N:%t | sort | tr '\\n' ' '; exit 3"])
    assert res.returncode == 3, res.stderr
    assert res.stdout.split() == ["node0:idle", "node1:idle"]


def test_teardown_after_sigterm(tmp_path):
    links_before = root_links()
    ready = tmp_path / "ready"
    proc = subprocess.Popen([str(SLURM), "--nodes", "2", "--cpus-per-node", "1", "--link-gbit", "1", "--", "sh",
                             "-c", f"touch {ready}; sleep 300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        daemons = [p for p in live_processes_of(f"sy{proc.pid}") if "slurmd" in cmdline(p)]
        assert len(daemons) == 2, [cmdline(p) for p in live_processes_of(f"sy{proc.pid}")]
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        # the teardown runs at once, not after the command's 300 s sleep
        assert time.monotonic() - started < 30
    finally:  # a failed assertion above must not leave the cluster running
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert_no_leftovers(proc.pid, links_before)


def test_missing_daemon_names_the_step():
    res = subprocess.run([str(SLURM), "--nodes", "2", "--cpus-per-node", "1", "--link-gbit", "1", "--", "true"],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, PATH="/usr/bin:/bin"))
    assert res.returncode == 2
    assert res.stderr.strip() == ("emulated-slurm: error: 'munged' not found (install Debian's munge, slurmctld, "
                                  "slurmd and slurm-client)")
