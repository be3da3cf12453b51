#!/usr/bin/env python3
"""Tables of bench/run_placement.sh's results: per setup and placement, the
measured expert rows per rank (max/mean), token copies and bytes across
nodes, the migration bytes the placement file reports, and the step time
(median over repeats of each run's median step, with the spread of those
medians), each against the contiguous blocks and the EPLB-style placer.

    python3 bench/placement.py [results/placement.jsonl]
"""
import json
import statistics
import sys
from collections import defaultdict


def main(path):
    runs = defaultdict(list)
    for line in open(path):
        d = json.loads(line)
        runs[(d["setup"], d["placement"])].append(d)
    for setup in sorted({s for s, _ in runs}):
        first = runs[(setup, "contiguous")][0]
        print(f"\n{setup}: {first['ranks']} ranks, {first['nodes']} nodes, {first['experts']} experts, "
              f"top-{first['top_k']}, {first['tokens_per_rank']} tokens per rank, hidden {first['hidden']}, "
              f"{len(runs[(setup, 'contiguous')])} repeats")
        print(f"  {'placement':<11} {'max/mean':>8} {'rows per rank':<28} {'copies across':>13} {'bytes across':>13} "
              f"{'vs eplb':>8} {'migration B':>12} {'step ms':>9} {'spread':>15} {'vs blocks':>9}")
        base_step = across_eplb = None
        rows = {}
        for placement in ("contiguous", "eplb", "model"):
            lines = runs.get((setup, placement))
            if not lines:
                continue
            d = lines[0]
            per_rank = d["expert_rows_per_rank"]
            steps = [x["step_ms_p50"] for x in lines]
            rows[placement] = dict(
                balance=max(per_rank) / (sum(per_rank) / len(per_rank)), per_rank=per_rank,
                copies=d["link_copies"]["other_node"], bytes=d["link_bytes"]["other_node"],
                migration=d.get("model", {}).get("migration_bytes", 0), step=statistics.median(steps),
                spread=(min(steps), max(steps)))
        base_step = rows["contiguous"]["step"]
        across_eplb = rows.get("eplb", {}).get("bytes")
        for placement, r in rows.items():
            vs_eplb = f"{r['bytes'] / across_eplb:.3f}" if across_eplb else "n/a"
            print(f"  {placement:<11} {r['balance']:>8.3f} {str(r['per_rank']):<28} {r['copies']:>13} "
                  f"{r['bytes']:>13} {vs_eplb:>8} {r['migration']:>12} {r['step']:>9.1f} "
                  f"{r['spread'][0]:>7.1f}-{r['spread'][1]:<7.1f} {base_step / r['step']:>8.2f}x")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/placement.jsonl")
