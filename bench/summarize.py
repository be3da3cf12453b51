#!/usr/bin/env python3
"""Markdown tables (median and min–max over repeats) from bench JSON lines.

    python bench/summarize.py results/bench.jsonl [results/torch.jsonl] [results/weak_scaling.jsonl]
"""
import json
import statistics
import sys
from collections import defaultdict

KEY = ("impl", "nodes", "link_gbit", "ranks", "arch", "dtype", "pass", "tokens_per_rank", "hidden", "ffn", "experts",
       "top_k", "routing")


def load(paths):
    groups = defaultdict(list)
    for path in paths:
        for line in open(path):
            d = json.loads(line)
            d.setdefault("impl", "switchyard")
            groups[tuple(d.get(k) for k in KEY)].append(d)
    return groups


def spread(values, fmt="{:.2f}"):
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main():
    groups = load(sys.argv[1:])
    print("| impl | nodes×link | ranks | dtype | pass | tokens/rank | step ms p50 | tokens/s | expert GEMM GF/s | "
          "GEMM peak GF/s | GEMM % of peak | exchange GB/s | alltoallv GB/s | exchange % | exchange share of step | "
          "mem floor ms | step / floor | correct | n |")
    print("|" + "---|" * 19)
    for key, runs in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        d = dict(zip(KEY, key))
        get = lambda k: [r[k] for r in runs if k in r]
        step = get("step_ms_p50")
        row = [d["impl"], f"{d['nodes']}×{d['link_gbit']:g}G" if d["nodes"] else "1 host", d["ranks"], d["dtype"],
               d["pass"], d["tokens_per_rank"], spread(step), spread(get("tokens_per_s"), "{:.0f}")]
        if d["impl"] == "switchyard":
            gemm, peak = get("gemm_gflops"), get("gemm_peak_gflops")
            ex, a2a = get("exchange_gbps"), get("alltoallv_gbps")
            share = [(r["phase_ms"].get("dispatch", 0) + r["phase_ms"].get("combine", 0)) / r["step_ms_p50"] for r in runs]
            floor = get("mem_floor_ms")
            row += [spread(gemm, "{:.0f}"), spread(peak, "{:.0f}"),
                    spread([g / p * 100 for g, p in zip(gemm, peak)], "{:.0f}%"), spread(ex), spread(a2a),
                    spread([e / a * 100 for e, a in zip(ex, a2a)], "{:.0f}%"), spread([s * 100 for s in share], "{:.0f}%"),
                    spread(floor, "{:.3f}"), spread([s / f for s, f in zip(step, floor)], "{:.2f}"),
                    "yes" if all(r["correct"] for r in runs) else "NO"]
        else:
            row += [""] * 10
        row.append(len(runs))
        print("| " + " | ".join(str(x) for x in row) + " |")


if __name__ == "__main__":
    main()
