"""The study file: reading, checking every field, and the points it sweeps.

A bad file raises StudyError with one line naming the file and the field;
nothing has run by then.
"""
import itertools
import json
import math
import os
from dataclasses import dataclass, field


class StudyError(Exception):
    """A study file, or a flag, that cannot be run; the message is one line."""


ARCHES = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3", "olmoe", "granitemoe", "glm4_moe", "qwen3_5_moe_text",
          "llama4_text")
EXCHANGES = ("flat", "hierarchical", "auto")

# Bench flags common to every point: study key -> (bench flag, checker).
# The checkers take (where, value) and return the flag's text.


def _int_at_least(low, high=2**30):
    def check(where, v):
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise StudyError(f"{where}: expected an integer {low}..{high}, got {json.dumps(v)}")
        return str(v)
    return check


def _number_at_least(low, high=math.inf, strict=False):
    def check(where, v):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > low if strict else v >= low) and v <= high
        if not ok:
            bound = f"> {low:g}" if strict else f">= {low:g}"
            top = "" if high == math.inf else f" and <= {high:g}"
            raise StudyError(f"{where}: expected a number {bound}{top}, got {json.dumps(v)}")
        return f"{v:g}"
    return check


def _one_of(*choices):
    def check(where, v):
        if v not in choices:
            raise StudyError(f"{where}: expected one of {', '.join(choices)}, got {json.dumps(v)}")
        return v
    return check


def _chunks(where, v):
    if v == "auto":
        return v
    return _int_at_least(1, 4096)(where, v)


def _sizes(where, v):
    if not isinstance(v, str) or not v or any(not part.strip() for part in v.split(",")):
        raise StudyError(f"{where}: expected message sizes as text, e.g. \"64K,1M,4M\", got {json.dumps(v)}")
    return v


BENCH = {
    "hidden": ("--hidden", _int_at_least(1)),
    "ffn": ("--ffn", _int_at_least(1)),
    "experts": ("--experts", _int_at_least(1)),
    "top_k": ("--top-k", _int_at_least(1)),
    "arch": ("--arch", _one_of(*ARCHES)),
    "pass": ("--pass", _one_of("fwd", "fwd_bwd")),
    "dtype": ("--dtype", _one_of("f32", "bf16")),
    "iters": ("--iters", _int_at_least(1)),
    "warmup": ("--warmup", _int_at_least(0)),
    "routing": ("--routing", _one_of("uniform", "skewed")),
    "seed": ("--seed", _int_at_least(0, 2**32 - 1)),
    "chunks": ("--chunks", _chunks),
    "workers": ("--workers", _int_at_least(1, 64)),
    "wire": ("--wire", _one_of("f32", "bf16")),
    "probe_bytes": ("--probe-bytes", _sizes),
}
BENCH_DEFAULTS = {"hidden": 1024, "ffn": 2048, "experts": 8, "top_k": 2, "pass": "fwd", "routing": "uniform",
                  "wire": "f32", "iters": 10, "warmup": 3}

# Swept fields: study key -> (checker of one value, default list). nodes,
# ranks_per_node, link_gbit and tokens shape the launch; the rest are bench flags.
SWEEP = {
    "nodes": (_int_at_least(1, 200), None),
    "ranks_per_node": (_int_at_least(1, 256), [1]),
    "link_gbit": (_number_at_least(0, 1000, strict=True), [10]),
    "tokens": (_int_at_least(1), None),
    "exchange": (_one_of(*EXCHANGES), ["flat"]),
    "overlap": (_one_of("off", "on"), ["off"]),
    "max_nodes": (_int_at_least(0, 200), [0]),
    "link_penalty": (_number_at_least(0), [0]),
}
SWEEP_FLAGS = {"exchange": "--exchange", "overlap": "--overlap", "max_nodes": "--max-nodes",
               "link_penalty": "--link-penalty"}
TOP = ("name", "bench", "sweep", "scaling", "repeats", "timeout_min", "project")
PROJECT = ("topology", "nodes")


@dataclass(frozen=True)
class Point:
    """One configuration to run `repeats` times."""
    index: int
    scaling: tuple  # ("weak",), ("strong",) or both: the modes this point belongs to
    sweep_tokens: tuple  # per mode, the sweep's tokens value: per rank (weak) or in all (strong)
    nodes: int
    ranks_per_node: int
    link_gbit: float
    tokens_per_rank: int
    options: tuple  # ((study key, value), ...) of the swept bench options, in SWEEP order

    @property
    def ranks(self):
        return self.nodes * self.ranks_per_node

    def option(self, key):
        return dict(self.options)[key]

    def label(self):
        opts = " ".join(f"{k}={v}" for k, v in self.options)
        return (f"{self.nodes}x{self.ranks_per_node} @ {self.link_gbit:g} Gbit/s, "
                f"{self.tokens_per_rank} tokens/rank, {opts}")


@dataclass
class Study:
    path: str
    name: str
    bench: dict
    sweep: dict
    scaling: str
    repeats: int
    timeout_min: float
    project: dict = None  # {"topology": path or "probed", "nodes": [...]} or None
    points: list = field(default_factory=list)

    def bench_flags(self):
        """The flags every point shares, in BENCH order."""
        out = []
        for key, (flag, check) in BENCH.items():
            if key in self.bench:
                out += [flag, check(key, self.bench[key])]
        return out


def _where(path, name):
    return f"{path}: field '{name}'"


def _object(path, name, v, allowed):
    if not isinstance(v, dict):
        raise StudyError(f"{_where(path, name)}: expected an object, got {json.dumps(v)[:60]}")
    for key in v:
        if key not in allowed:
            full = f"{name}.{key}" if name else key
            raise StudyError(f"{_where(path, full)}: not a field of this object; expected one of {', '.join(allowed)}")
    return v


def _read(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise StudyError(f"{path}: cannot read the study file ({e.strerror})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise StudyError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                         f"expected a study file")


def _sweep(path, raw):
    sweep = {}
    for key, (check, default) in SWEEP.items():
        where = _where(path, f"sweep.{key}")
        if key not in raw:
            if default is None:
                raise StudyError(f"{path}: missing field 'sweep.{key}'")
            sweep[key] = default
            continue
        values = raw[key]
        if not isinstance(values, list) or not values:
            raise StudyError(f"{where}: expected a non-empty list, got {json.dumps(values)[:60]}")
        for i, v in enumerate(values):
            check(f"{where[:-1]}[{i}]'", v)
        if len(set(map(json.dumps, values))) != len(values):
            raise StudyError(f"{where}: lists a value twice; expected each value once")
        sweep[key] = values
    return sweep


def _project(path, raw, base):
    if raw is None:
        return None
    _object(path, "project", raw, PROJECT)
    topologies = raw.get("topology", "probed")
    names = topologies if isinstance(topologies, list) and topologies else [topologies]
    checked = []
    for i, topology in enumerate(names):
        where = _where(path, "project.topology" + (f"[{i}]" if isinstance(topologies, list) else ""))
        if not isinstance(topology, str) or not topology:
            raise StudyError(f"{where}: expected \"probed\" or the path of a topology file (switchyard topo --json), "
                             f"or a list of them, got {json.dumps(topology)}")
        if topology != "probed":
            topology = os.path.join(base, topology)
            if not os.path.isfile(topology):
                raise StudyError(f"{where}: no such file {topology}")
            _check_costs(where, topology)
        checked.append(topology)
    nodes = raw.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise StudyError(f"{_where(path, 'project.nodes')}: expected a non-empty list of node counts, "
                         f"got {json.dumps(nodes)}")
    for i, n in enumerate(nodes):
        _int_at_least(1, 4096)(f"{_where(path, f'project.nodes[{i}]')}", n)
    return {"topology": checked, "nodes": sorted(set(nodes))}


def _check_costs(where, path):
    """A projection's topology file needs a cost for the network and for shared memory."""
    try:
        with open(path) as f:
            links = json.load(f).get("links", {})
        for c in ("self", "same_node", "other_node"):
            if c in links:
                float(links[c]["latency_s"]) + float(links[c]["bandwidth_bytes_per_s"])
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as e:
        raise StudyError(f"{where}: {path} is not a topology file with link costs ({type(e).__name__}: {e})")
    if "other_node" not in links or "self" not in links:
        raise StudyError(f"{where}: {path} has no cost for the self or other_node link; expected a file with "
                         f"link costs (switchyard topo --json, not --no-probe)")


def _check_top(path, raw):
    _object(path, "", raw, TOP)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise StudyError(f"{_where(path, 'name')}: expected a non-empty string, got {json.dumps(name)}")
    scaling = raw.get("scaling", "weak")
    _one_of("weak", "strong", "both")(_where(path, "scaling"), scaling)
    repeats = int(_int_at_least(1, 100)(_where(path, "repeats"), raw.get("repeats", 1)))
    timeout = float(_number_at_least(0, 24 * 60, strict=True)(_where(path, "timeout_min"),
                                                              raw.get("timeout_min", 10)))
    return name, scaling, repeats, timeout


def _check_bench(path, raw):
    if "bench" not in raw:
        return dict(BENCH_DEFAULTS)
    bench = _object(path, "bench", raw["bench"], tuple(BENCH))
    for key, value in bench.items():
        BENCH[key][1](_where(path, f"bench.{key}"), value)
    return {**BENCH_DEFAULTS, **bench}


def _check_combined(study):
    path, b = study.path, study.bench
    if b["top_k"] > b["experts"]:
        raise StudyError(f"{_where(path, 'bench.top_k')}: is {b['top_k']}; expected at most bench.experts "
                         f"({b['experts']})")
    most = max(study.sweep["nodes"]) * max(study.sweep["ranks_per_node"])
    if most > b["experts"]:
        raise StudyError(f"{_where(path, 'sweep.nodes')}: {most} ranks at the largest point; expected at most "
                         f"bench.experts ({b['experts']}): every rank holds an expert")
    if study.project:
        most = max(study.project["nodes"]) * max(study.sweep["ranks_per_node"])
        if most > b["experts"]:
            raise StudyError(f"{_where(path, 'project.nodes')}: {most} ranks at the largest node count; expected "
                             f"at most bench.experts ({b['experts']})")
        if b["routing"] != "uniform":
            raise StudyError(f"{_where(path, 'project')}: the projection models uniform routing; expected "
                             f"bench.routing \"uniform\", got \"{b['routing']}\"")


def load_study(path):
    """The checked Study of the file at `path`, with its points."""
    raw = _read(path)
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: expected a JSON object (a study file), got {type(raw).__name__}")
    name, scaling, repeats, timeout = _check_top(path, raw)
    bench = _check_bench(path, raw)
    sweep = _sweep(path, _object(path, "sweep", raw.get("sweep", {}), tuple(SWEEP)))
    project = _project(path, raw.get("project"), os.path.dirname(os.path.abspath(path)))
    study = Study(path, name, bench, sweep, scaling, repeats, timeout, project)
    _check_combined(study)
    study.points = expand(study)
    return study


def expand(study):
    """Every point of the sweep; strong points split the total tokens over the ranks.

    A point reached by both weak and strong scaling (same launch, same tokens
    per rank) runs once and belongs to both."""
    s = study.sweep
    modes = ("weak", "strong") if study.scaling == "both" else (study.scaling,)
    option_keys = [k for k in SWEEP if k in SWEEP_FLAGS]
    seen = {}
    for mode, nodes, rpn, gbit, tokens, *opts in itertools.product(
            modes, s["nodes"], s["ranks_per_node"], s["link_gbit"], s["tokens"], *(s[k] for k in option_keys)):
        per_rank = tokens if mode == "weak" else tokens // (nodes * rpn)
        if per_rank < 1:
            raise StudyError(f"{_where(study.path, 'sweep.tokens')}: {tokens} tokens split over {nodes * rpn} ranks "
                             f"leaves none per rank; expected at least one token per rank in strong scaling")
        key = (nodes, rpn, float(gbit), per_rank, tuple(zip(option_keys, opts)))
        seen.setdefault(key, []).append((mode, tokens))
    return [Point(i, tuple(m for m, _ in pairs), tuple(t for _, t in pairs), *key)
            for i, (key, pairs) in enumerate(seen.items())]
