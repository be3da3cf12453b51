#!/usr/bin/env python3
"""Predicted against measured exchange time from bench/run_cost_model.sh's JSON lines.

    python bench/cost_model.py results/cost_model.jsonl

Per configuration (yield_when_idle, link rate, nodes, tokens per rank,
hidden): the median over repeats of the measured exchange (`exchange_ms`: the
forward's dispatch + combine timed alone, p50 of the slowest rank) with its
min–max, the median prediction (`exchange_predicted_ms`, from that repeat's
probed topology file) with its min–max, and the relative error
(predicted - measured) / measured of the medians. Beside it, for reference,
the time at the nominal link rate: an average rank's bytes across nodes (both
exchanges) over the rate, no latency, no self or same-node part. Then the
mean absolute relative error per (rate, nodes) and over all configurations,
and the median fitted other_node cost per (rate, nodes); runs with and
without yield_when_idle apart.
"""
import json
import statistics
import sys
from collections import defaultdict


def load(paths):
    groups = defaultdict(list)
    for path in paths:
        for line in open(path):
            d = json.loads(line)
            if d.get("exchange_predicted_ms") is None:
                continue
            groups[(d.get("yield_when_idle", 0), d["link_gbit"], d["nodes"], d["tokens_per_rank"], d["hidden"])].append(d)
    return groups


def main(paths):
    groups = load(paths)
    rows, errors = [], defaultdict(list)
    costs = defaultdict(list)
    print("| yield | Gbit/s | nodes | tokens/rank | hidden | MiB across nodes per rank | measured ms (min–max) "
          "| predicted ms (min–max) | error | at nominal rate ms | in step ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key in sorted(groups):
        yield_when_idle, gbit, nodes, tokens, hidden = key
        g = groups[key]
        measured = [d["exchange_ms"] for d in g]
        predictions = [d["exchange_predicted_ms"] for d in g]
        predicted = statistics.median(predictions)
        in_step = statistics.median(d["exchange_in_step_ms"] for d in g)
        m = statistics.median(measured)
        err = (predicted - m) / m
        errors[(yield_when_idle, gbit, nodes)].append(abs(err))
        across = statistics.median(d["link_bytes"]["other_node"] for d in g) / nodes
        nominal_ms = across / (gbit * 1e9 / 8) * 1e3
        for d in g:
            costs[(yield_when_idle, gbit, nodes)].append(d["other_node_cost"])
        print(f"| {yield_when_idle} | {gbit:g} | {nodes} | {tokens} | {hidden} | {across / 2**20:.2f} | {m:.2f} ({min(measured):.2f}–"
              f"{max(measured):.2f}) | {predicted:.2f} ({min(predictions):.2f}–{max(predictions):.2f}) | {err:+.0%} "
              f"| {nominal_ms:.2f} | {in_step:.2f} |")
    print()
    print("| yield | Gbit/s | nodes | configurations | mean absolute relative error | fitted other_node latency us "
          "(min–max) | fitted other_node MB/s (min–max) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key in sorted(errors):
        lat = [c["latency_s"] * 1e6 for c in costs[key]]
        bw = [c["bandwidth_bytes_per_s"] / 1e6 for c in costs[key]]
        print(f"| {key[0]} | {key[1]:g} | {key[2]} | {len(errors[key])} | {statistics.mean(errors[key]):.0%} "
              f"| {statistics.median(lat):.0f} ({min(lat):.0f}–{max(lat):.0f}) "
              f"| {statistics.median(bw):.0f} ({min(bw):.0f}–{max(bw):.0f}) |")
    for y in sorted({key[0] for key in errors}):
        every = [e for key, v in errors.items() if key[0] == y for e in v]
        print(f"| {y} | all | all | {len(every)} | {statistics.mean(every):.0%} | | |")


if __name__ == "__main__":
    main(sys.argv[1:])
