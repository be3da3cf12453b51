"""How one point runs: the command lines of the three launchers, and running them.

slurm:    sbatch --parsable --wait ... launch/slurm/switchyard.sbatch bench FLAGS
          (the template writes $SWITCHYARD_RUNS/job-$SLURM_JOB_ID/results.jsonl)
emulated: launch/emulated-cluster --nodes N --ranks-per-node M --link-gbit G -- switchyard bench ...
mpirun:   mpirun --oversubscribe -np N*M switchyard bench ... --ranks-per-node M (virtual nodes)
"""
import math
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass

from .study import SWEEP_FLAGS, StudyError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMULATED = os.path.join(REPO, "launch", "emulated-cluster")
SBATCH_TEMPLATE = os.path.join(REPO, "launch", "slurm", "switchyard.sbatch")
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMP_NUM_THREADS": "1"}


@dataclass
class Run:
    """One command of the study: what ran, where its log and JSON line went, how it ended."""
    argv: list
    env: dict  # the variables set for it, beyond the caller's environment
    log: str
    json_path: str = None  # bench's --json file (emulated, mpirun); slurm: found after the job
    returncode: int = None
    line: str = None  # the bench JSON line, when it ran
    seconds: float = 0.0

    def shell(self):
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + shlex.join(self.argv)


def choose(name):
    """The launcher for --launcher NAME: auto takes slurm when sbatch is on PATH and a cluster
    answers (`sinfo`), then the emulated cluster when root, else plain mpirun."""
    if name == "auto":
        if shutil.which("sbatch") and _slurm_answers():
            return "slurm"
        return "emulated" if os.geteuid() == 0 else "mpirun"
    if name == "emulated" and os.geteuid() != 0:
        raise StudyError("--launcher emulated: the emulated cluster needs root (network namespaces); "
                         "use --launcher mpirun")
    if name == "slurm" and not shutil.which("sbatch"):
        raise StudyError("--launcher slurm: sbatch is not on PATH")
    return name


def _slurm_answers():
    try:
        return subprocess.run(["sinfo", "--noheader"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def check_study(study, launcher):
    """Refuse what a launcher cannot do, before anything runs."""
    rates = study.sweep["link_gbit"]
    if launcher in ("slurm", "mpirun") and len(rates) > 1:
        where = "the cluster's links" if launcher == "slurm" else "shared memory (virtual nodes on one host)"
        raise StudyError(f"{study.path}: field 'sweep.link_gbit': lists {len(rates)} link rates, but under "
                         f"{launcher} the links are {where}; expected one value (or run on the emulated cluster)")
    if launcher == "slurm" and study.project and "probed" in study.project["topology"]:
        raise StudyError(f"{study.path}: field 'project.topology': \"probed\" needs the emulated or mpirun "
                         f"launcher; under slurm give the cluster's topology file (switchyard topo --json)")


def bench_args(study, point):
    args = ["bench", *study.bench_flags(), "--tokens", str(point.tokens_per_rank)]
    for key, value in point.options:
        args += [SWEEP_FLAGS[key], value if isinstance(value, str) else f"{value:g}"]
    return args


def _mpi_prefix(launcher, point):
    if launcher == "emulated":
        return [EMULATED, "--nodes", str(point.nodes), "--ranks-per-node", str(point.ranks_per_node),
                "--link-gbit", f"{point.link_gbit:g}", "--"], []
    return ["mpirun", "--oversubscribe", "-np", str(point.ranks)], ["--ranks-per-node", str(point.ranks_per_node)]


def probe_run(study, launcher, program, point, path, log):
    """The `switchyard topo --json` run that measures a point's links into `path`."""
    prefix, virtual = _mpi_prefix(launcher, point)
    probe = ["--probe-bytes", study.bench["probe_bytes"]] if "probe_bytes" in study.bench else []
    return Run(prefix + [program, "topo", "--json", *virtual, *probe], dict(MPI_ENV), log, json_path=path)


def bench_run(study, launcher, program, point, out_dir, name, topology):
    """The command of one repeat of a point."""
    log = os.path.join(out_dir, "logs", name + ".log")
    if launcher == "slurm":
        minutes = max(1, math.ceil(study.timeout_min))
        runs = os.path.join(out_dir, "slurm")
        argv = ["sbatch", "--parsable", "--wait", "--nodes", str(point.nodes), "--ntasks-per-node",
                str(point.ranks_per_node), "--time", str(minutes), "--output",
                os.path.join(runs, "switchyard-%j.out"), SBATCH_TEMPLATE,
                *bench_args(study, point)]
        return Run(argv, {"SWITCHYARD": program, "SWITCHYARD_RUNS": runs}, log)
    prefix, virtual = _mpi_prefix(launcher, point)
    json_path = os.path.join(out_dir, "logs", name + ".jsonl")
    where = ["--topology", topology] if topology else virtual  # the file says which node each rank is on
    argv = prefix + [program, *bench_args(study, point), *where, "--json", json_path]
    return Run(argv, dict(MPI_ENV), log, json_path=json_path)


def execute(run, timeout_s, stdout_to_json=False):
    """Run it; fills returncode and, when bench wrote one, the JSON line."""
    env = dict(os.environ, **run.env)
    if run.json_path and os.path.exists(run.json_path):
        os.unlink(run.json_path)
    with open(run.log, "w") as log:
        log.write("$ " + run.shell() + "\n")
        log.flush()
        out = subprocess.PIPE if stdout_to_json or run.argv[0] == "sbatch" else log
        try:
            res = subprocess.run(run.argv, env=env, stdout=out, stderr=log, text=True, timeout=timeout_s,
                                 stdin=subprocess.DEVNULL)
            run.returncode = res.returncode
        except subprocess.TimeoutExpired:
            log.write(f"\nscaling-study: timed out after {timeout_s:g} s\n")
            run.returncode = 124
            return run
    if stdout_to_json:
        if run.returncode == 0:
            _write(run.json_path, res.stdout)
    elif run.argv[0] == "sbatch":
        _slurm_result(run, res.stdout)
    elif run.returncode == 0 and os.path.exists(run.json_path):
        lines = open(run.json_path).read().splitlines()
        run.line = lines[-1] if lines else None
    if run.returncode == 0 and run.line is None and not stdout_to_json:
        run.returncode = 1
        with open(run.log, "a") as log:
            log.write("\nscaling-study: the run wrote no bench JSON line\n")
    return run


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _slurm_result(run, stdout):
    """sbatch --parsable prints `JOBID` or `JOBID;CLUSTER`; the job folder holds the line."""
    job = stdout.strip().splitlines()[-1].split(";")[0].strip() if stdout.strip() else ""
    with open(run.log, "a") as log:
        log.write(f"sbatch: job {job or '?'}\n")
    if not job.isdigit():
        run.returncode = run.returncode or 1
        return
    folder = os.path.join(run.env["SWITCHYARD_RUNS"], f"job-{job}")
    run.json_path = os.path.join(folder, "results.jsonl")
    if os.path.exists(run.json_path):
        lines = open(run.json_path).read().splitlines()
        run.line = lines[-1] if lines else None
