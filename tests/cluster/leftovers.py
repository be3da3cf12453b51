"""What a launcher on the emulated cluster may leave behind, and the check that it left nothing.

A launcher started as pid P names its network namespaces sy<P>n<i> and sy<P>hub
and exports EMULATED_CLUSTER_PREFIX=sy<P> to everything it starts (mpirun,
orted, ranks, Slurm's daemons and steps), so processes are attributed by that
environment variable, never by name alone: other jobs may run on this machine.
"""

import re
import subprocess
import time
from pathlib import Path

import pytest


def root_links():
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return sorted(re.findall(r"^\d+: ([^:@]+)", out, re.M))


def live_processes_of(prefix):
    """Pids of non-zombie processes whose environment has EMULATED_CLUSTER_PREFIX=<prefix>."""
    marker = f"EMULATED_CLUSTER_PREFIX={prefix}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if state != "Z" and marker in environ + b"\0":
            found.append(int(entry.name))
    return found


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def assert_no_leftovers(pid, links_before, wait_s=10.0):
    prefix = f"sy{pid}"
    own = re.compile(rf"^{prefix}(n\d+|hub)\b")
    deadline = time.monotonic() + wait_s
    while True:
        namespaces = [line for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                                      check=True).stdout.splitlines() if own.match(line)]
        files = [p.name for p in Path("/etc/netns").glob(f"{prefix}*")] if Path("/etc/netns").exists() else []
        files += [str(p) for p in Path("/tmp").glob(f"{prefix}-*")]  # emulated-slurm's folder (munge key, logs)
        procs = live_processes_of(prefix)
        links = root_links()
        if not (namespaces or files or procs) and links == links_before:
            return
        if time.monotonic() > deadline:
            details = [cmdline(p) for p in procs]
            pytest.fail(f"left behind: namespaces {namespaces}, files {files}, processes {details}, "
                        f"root links {links} (before {links_before})")
        time.sleep(0.2)


def run_launcher(argv, timeout, **kwargs):
    """Runs a launcher (argv) to completion, checks that it left nothing behind; a CompletedProcess."""
    links_before = root_links()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"{argv[0]} hung (> {timeout} s): {out}\n{err}")
    # the namespaces carry the launcher's pid (emulated-slurm execs emulated-cluster)
    assert_no_leftovers(proc.pid, links_before)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
