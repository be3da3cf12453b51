#!/usr/bin/env python3
"""Draws a Switchyard Chrome trace (`--trace FILE.json`) as a timeline PNG:
one row per (rank, track), compute tasks in one colour per kind of piece,
exchanges hatched with their size — the view Perfetto gives of the file.

    python bench/plot_trace.py trace.json docs/img/trace.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    events = json.load(open(src))["traceEvents"]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    spans = [e for e in events if e.get("ph") == "X"]
    t0 = min(e["ts"] for e in spans)
    rows = sorted({(e["pid"], e["tid"]) for e in spans}, key=lambda r: (r[0], -1 if names.get(r) == "comm" else r[1]))
    phases = sorted({e["name"].split("[")[0] for e in spans})
    colours = {p: plt.cm.tab20(i % 20) for i, p in enumerate(phases)}
    fig, ax = plt.subplots(figsize=(14, 0.6 * len(rows) + 1.5))
    for y, row in enumerate(rows):
        for e in (e for e in spans if (e["pid"], e["tid"]) == row):
            phase = e["name"].split("[")[0]
            comm = e.get("cat") == "comm"
            ax.barh(y, e["dur"] / 1e3, left=(e["ts"] - t0) / 1e3, height=0.7, color=colours[phase],
                    hatch="//" if comm else None, edgecolor="black", linewidth=0.3)
            if e["dur"] / 1e3 > 25:
                mb = e.get("args", {}).get("bytes", 0) / 1e6
                label = e["name"] + (f"\n{mb:.1f} MB" if comm and mb else "")
                ax.text((e["ts"] - t0 + e["dur"] / 2) / 1e3, y, label, ha="center", va="center", fontsize=6)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"rank {p} {names.get((p, t), t)}" for p, t in rows])
    ax.invert_yaxis()
    ax.set_xlabel("ms")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[p]) for p in phases]
    ax.legend(handles, phases, ncol=min(7, len(phases)), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    fig.savefig(dst + ".tmp.png", dpi=110)
    import os

    os.replace(dst + ".tmp.png", dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
