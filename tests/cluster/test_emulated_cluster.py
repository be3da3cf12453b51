"""Tests of launch/emulated-cluster (network namespaces + Open MPI on one host).

Run (as root; CTest sets these, label ``cluster``):
    EMULATED_CLUSTER=/work/main/launch/emulated-cluster \
    NODE_COUNT=build/tests/node_count PINGPONG=build/tests/pingpong \
    SWITCHYARD_BIN=build/launch/switchyard MAKE_RANDOM_MOE=build/examples/make_random_moe \
        python -m pytest -q tests/cluster/test_emulated_cluster.py

Not root: the module exits with code 77 (CTest reports the test as skipped).

After every run of the launcher these check that it left nothing behind: no
network namespace or /etc/netns entry of its own (``sy<launcher pid>...``),
the same links in the root namespace as before, and no live process that
carries its EMULATED_CLUSTER_PREFIX (mpirun, orted and every rank inherit it).
Other jobs may run MPI on this machine at the same time, so processes are
attributed by that environment variable, never by name alone.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from leftovers import assert_no_leftovers, cmdline, live_processes_of, root_links, run_launcher

if os.geteuid() != 0:
    pytest.exit("emulated-cluster tests need root (network namespaces)", returncode=77)

HERE = Path(__file__).resolve().parent
LAUNCHER = os.environ.get("EMULATED_CLUSTER", str(HERE.parents[1] / "launch" / "emulated-cluster"))
TIMEOUT = 120  # seconds per launcher run


def tool(name):
    path = os.environ.get(name)
    if not path:
        pytest.skip(f"{name} is not set (path to the built program)")
    return path


def run_cluster(args, command, timeout=TIMEOUT, **kwargs):
    """Runs the launcher to completion and checks it cleaned up; returns the CompletedProcess-like result."""
    return run_launcher([LAUNCHER, *args, "--", *command], timeout, **kwargs)


def cluster(nodes, ranks_per_node, gbit=1):
    return ["--nodes", str(nodes), "--ranks-per-node", str(ranks_per_node), "--link-gbit", str(gbit)]


def node_count(nodes, ranks_per_node):
    res = run_cluster(cluster(nodes, ranks_per_node), [tool("NODE_COUNT")])
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    ranks = int(re.search(r"^ranks (\d+)$", res.stdout, re.M).group(1))
    count = int(re.search(r"^nodes (\d+)$", res.stdout, re.M).group(1))
    placement = [re.match(r"rank (\d+) host (\S+) node (\d+)", line).groups() for line in lines if line.startswith("rank ")]
    return ranks, count, [(int(r), host, int(n)) for r, host, n in placement]


# ------------------------------------------------------------------ the cluster starts, nodes are nodes

def test_starts_two_nodes_one_rank_each():
    ranks, count, placement = node_count(2, 1)
    assert (ranks, count) == (2, 2)
    assert placement == [(0, "node0", 0), (1, "node1", 1)]


def test_starts_two_nodes_two_ranks_each():
    ranks, count, placement = node_count(2, 2)
    assert (ranks, count) == (4, 2)
    assert placement == [(0, "node0", 0), (1, "node0", 0), (2, "node1", 1), (3, "node1", 1)]


def test_starts_three_nodes():
    ranks, count, placement = node_count(3, 1)
    assert (ranks, count) == (3, 3)
    assert sorted({host for _, host, _ in placement}) == ["node0", "node1", "node2"]


def test_node_sees_private_network_only():
    script = "hostname; ip -o -4 addr show; ip route; tc qdisc show dev eth0"
    res = run_cluster(cluster(2, 1, 0.5), ["sh", "-c", script])
    assert res.returncode == 0, res.stderr
    assert "10.213.0.1/24" in res.stdout and "10.213.0.2/24" in res.stdout
    assert "default" not in res.stdout  # no route out of the private subnet
    assert res.stdout.count("tbf") == 2 and "500Mbit" in res.stdout


# ------------------------------------------------------------------ switchyard across emulated nodes

def test_forward_two_nodes_matches_one_node(tmp_path):
    model = tmp_path / "model"
    subprocess.run([tool("MAKE_RANDOM_MOE"), "--out", str(model), "--arch", "mixtral", "--tokens", "64"], check=True,
                   capture_output=True, timeout=60)
    switchyard = tool("SWITCHYARD_BIN")

    def forward(nodes, ranks_per_node):
        out = tmp_path / f"y_{nodes}x{ranks_per_node}.npy"
        res = run_cluster(cluster(nodes, ranks_per_node), [switchyard, "forward", "--model", str(model), "--layer",
                                                           "1", "--input", str(model / "x.npy"), "--output", str(out)])
        assert res.returncode == 0, res.stdout + res.stderr
        return np.load(out)

    reference = forward(1, 1)
    assert reference.shape == (64, np.load(model / "x.npy").shape[1]) and np.isfinite(reference).all()
    for nodes, ranks_per_node in [(2, 1), (2, 2)]:
        y = forward(nodes, ranks_per_node)
        assert y.shape == reference.shape
        np.testing.assert_allclose(y, reference, rtol=0, atol=1e-6, err_msg=f"{nodes} nodes x {ranks_per_node}")


# ------------------------------------------------------------------ cleanup after failure and interruption

def test_cleanup_after_failing_command():
    res = run_cluster(cluster(2, 1), ["false"])
    assert res.returncode != 0


def test_exit_code_is_the_commands():
    res = run_cluster(cluster(2, 1), ["sh", "-c", "exit 7"])
    assert res.returncode == 7


def test_cleanup_after_bad_switchyard_flag(tmp_path):
    res = run_cluster(cluster(2, 2), [tool("SWITCHYARD_BIN"), "forward", "--no-such-flag", str(tmp_path)])
    assert res.returncode != 0


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_cleanup_after_signal(sig, code, tmp_path):
    links_before = root_links()
    proc = subprocess.Popen([LAUNCHER, *cluster(2, 2), "--", "sleep", "300"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    prefix = f"sy{proc.pid}"
    deadline = time.monotonic() + 60
    while True:  # mid-run: all four ranks are up
        sleeping = [p for p in live_processes_of(prefix) if cmdline(p) == "sleep 300"]
        if len(sleeping) == 4:
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the ranks did not start"
        time.sleep(0.2)
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"launcher did not stop within 30 s of {sig.name}")
    assert proc.returncode == code, err
    assert time.monotonic() - start < 30
    assert_no_leftovers(proc.pid, links_before)


# ------------------------------------------------------------------ refusals

def one_error_line(res):
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("emulated-cluster: error: "), res.stderr
    return lines[0]


@pytest.mark.parametrize("args", [
    ["--nodes", "0", "--ranks-per-node", "1", "--link-gbit", "1", "--", "true"],
    ["--nodes", "2", "--ranks-per-node", "x", "--link-gbit", "1", "--", "true"],
    ["--nodes", "2", "--ranks-per-node", "1", "--link-gbit", "-1", "--", "true"],
    ["--nodes", "2", "--ranks-per-node", "1", "--link-gbit", "0", "--", "true"],
    ["--nodes", "2", "--ranks-per-node", "1", "--", "true"],
    ["--nodes", "2", "--ranks-per-node", "1", "--link-gbit", "1"],
    ["--nodes", "2", "--ranks-per-node", "1", "--link-gbit", "1", "--bogus", "--", "true"],
    ["--nodes"],
], ids=["nodes0", "rpn-x", "gbit-neg", "gbit0", "no-gbit", "no-command", "unknown-flag", "missing-value"])
def test_refuses_bad_flags(args):
    links_before = root_links()
    proc = subprocess.Popen([LAUNCHER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=30)
    one_error_line(subprocess.CompletedProcess(args, proc.returncode, out, err))
    assert_no_leftovers(proc.pid, links_before, wait_s=0)


def test_refuses_when_not_root():
    res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", LAUNCHER, *cluster(2, 1),
                          "--", "true"], capture_output=True, text=True, timeout=30)
    assert "root" in one_error_line(res)


def test_refuses_when_mpirun_is_missing(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ["bash", "env", "id", "dirname", "readlink", "awk", "ip", "tc", "unshare"]:
        found = subprocess.run(["sh", "-c", f"command -v {name}"], capture_output=True, text=True).stdout.strip()
        (bin_dir / name).symlink_to(found)
    res = subprocess.run([LAUNCHER, *cluster(2, 1), "--", "true"], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PATH": str(bin_dir)})
    assert "mpirun" in one_error_line(res)


def broken_tc_path(tmp_path):
    """A PATH whose first `tc` always fails, as on a kernel without sch_tbf."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tc").write_text("#!/bin/sh\necho 'Error: Specified qdisc kind is unknown.' >&2\nexit 2\n")
    (bin_dir / "tc").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_refuses_when_tbf_fails(tmp_path):
    res = run_cluster(cluster(2, 1), ["true"], env=broken_tc_path(tmp_path))
    errors = [line for line in res.stderr.splitlines() if line.startswith("emulated-cluster: error: ")]
    assert res.returncode != 0 and len(errors) == 1 and "tbf" in errors[0], res.stderr


def test_keep_going_without_tbf(tmp_path):
    res = run_cluster(["--keep-going", *cluster(2, 1)], [tool("NODE_COUNT")], env=broken_tc_path(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "emulated-cluster: warning: " in res.stderr and "nodes 2" in res.stdout


# ------------------------------------------------------------------ the links are rate-limited

def test_link_rate_limit_in_effect():
    """Loose sanity ratio only; the measured numbers are in docs/emulated-cluster.md."""
    seconds = {}
    for gbit in (0.5, 4):
        res = run_cluster(cluster(2, 1, gbit), [tool("PINGPONG"), str(4 << 20), "5"])
        assert res.returncode == 0, res.stderr
        match = re.search(r"seconds ([0-9.]+) GB/s ([0-9.]+) from node0 to node1", res.stdout)
        assert match, res.stdout
        seconds[gbit] = float(match.group(1))
        print(f"{gbit} Gbit/s link: {res.stdout.strip()}")
    # 40 MiB over 0.5 Gbit/s take >= 0.67 s at the line rate; 8x the rate must be clearly faster.
    assert seconds[0.5] > 0.5, seconds
    assert seconds[0.5] > 2 * seconds[4], seconds
