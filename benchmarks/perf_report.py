"""The plot of reports/performance.md from the JSON files `crossvis benchmark --json` wrote.

    python benchmarks/perf_report.py reports/perf/fp32_100.json reports/perf/fp32_10.json \
        reports/perf/fast_100.json --output reports/performance.png

Left: ms per frame of every timed model in each run (one group of bars per run). Right: the per-stage
breakdown of the first run that has one. Needs matplotlib (the `reports` extra).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from crossvis.io import atomic_path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="benchmark JSON files")
    ap.add_argument("--output", default="reports/performance.png")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(Path(p).stem, json.loads(Path(p).read_text())) for p in args.runs]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [3, 1.4]})
    y = 0
    ticks, labels = [], []
    for name, r in runs:
        for model, ms in sorted(r["models_ms"].items(), key=lambda kv: kv[1]):
            n = r["detections"].get(model, "?")
            ax.barh(y, ms, color="tab:orange" if model.startswith("torchvision") else "tab:blue")
            ax.text(ms, y, f" {ms:.0f} ms", va="center", fontsize=8)
            ticks.append(y)
            short = re.sub(r"\((?:[^()]*/)?([^/()]+)\)", r"(\1)", model.replace(" (random weights)", ""))
            if not short.startswith("torchvision") and "[" not in short:
                short += f" [{r['precision']}]"
            labels.append(f"[{name}] {short} ({n} det.)")
            y += 1
        y += 0.8
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms per frame (median of interleaved rounds)")
    ax.set_title(f"{runs[0][1]['size'][0]}x{runs[0][1]['size'][1]}, {runs[0][1]['device']}", fontsize=9)
    staged = next(((n, r) for n, r in runs if r.get("stages")), None)
    if staged:
        st = staged[1]["stages"]
        bottom = 0.0
        for k, v in st.items():
            bx.bar(0, v, bottom=bottom, label=f"{k} {v:.0f} ms")
            bottom += v
        bx.set_xticks([0], [staged[0]])
        bx.set_ylabel("ms per tracked frame")
        bx.set_title("stages of one CrossVIS frame", fontsize=9)
        bx.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    with atomic_path(args.output) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
