"""The synthetic benchmark protocol and the paper's ablations (Tables 6-8 analogues) on it.

    pip install -e .[reports]   # matplotlib, for the plot (the tables need nothing extra)
    python benchmarks/ablation.py --iters 2000 --seeds 0 1 --jobs 2 [--rows all | NAME ...] [--out reports]

Protocol: train split = configs/synthetic_tiny.yaml's (400 synthetic videos, seed 0), validation split = 30
videos with seed 1000 (never trained on). Every row trains configs/synthetic_tiny.yaml from scratch for the same
number of iterations (LR x0.1 at 80% and 92.5% of them), then runs the online tracker on the validation split
and evaluates it (AP, AP50, AP75, AR1, AR10, identity switches), and again with IoU-only association.
Results go to OUT/ablation.json, one record per run; rows already there are skipped, so a study can be split
across sessions. OUT/ablation.md (its generated block) and OUT/ablation.png are rebuilt from the records.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROWS = {
    # name: (crossover, identity loss, sample_region)
    "pairwise_ce": (False, "pairwise_ce", 20),
    "pairwise_ce+crossover": (True, "pairwise_ce", 20),
    "global_focal": (False, "global_focal", 20),
    "global_focal+crossover": (True, "global_focal", 20),
    "pairwise_focal+crossover": (True, "pairwise_focal", 20),
    "global_ce+crossover": (True, "global_ce", 20),
    # Table 6: the frame window delta (sample_region), with and without crossover; delta=20 is the rows above
    "global_focal@d2": (False, "global_focal", 2),
    "global_focal+crossover@d2": (True, "global_focal", 2),
}
MAIN_ROWS = [n for n in ROWS if "@" not in n]
TABLES = {
    "Table 8 analogue (components)": [
        "pairwise_ce",
        "pairwise_ce+crossover",
        "global_focal",
        "global_focal+crossover",
    ],
    "Table 7 analogue (embedding x loss, with crossover)": [
        "pairwise_ce+crossover",
        "pairwise_focal+crossover",
        "global_ce+crossover",
        "global_focal+crossover",
    ],
    "Table 6 analogue (frame window delta, global focal embedding)": [
        "global_focal@d2",
        "global_focal+crossover@d2",
        "global_focal",
        "global_focal+crossover",
    ],
}
METRICS = ["AP", "AP50", "AP75", "AR1", "AR10", "id_switches"]
# The same weights with IoU-only association: separates what a row changes in the per-frame masks from what it
# changes in the association (the embedding).
IOU_ONLY = ["AP_iou_only", "id_switches_iou_only"]
COLUMNS = METRICS + IOU_ONLY
COUNTS = {"id_switches", "id_switches_iou_only"}  # integers; the rest are fractions shown in %
VAL = {"videos": 30, "frames": 12, "seed": 1000, "height": 192, "width": 256}


def flow(d: dict) -> str:
    """A flat mapping as a YAML flow mapping for a ``key={...}`` override."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"


def run_dir(out: Path, name: str, seed: int) -> Path:
    """Where one run's checkpoints, log and final weights go."""
    return out / "runs" / f"{name}_seed{seed}"


def val_split(out: Path) -> tuple[Path, Path]:
    """The validation split every run is evaluated on: (annotations JSON, image folder)."""
    return out / "val" / "annotations.json", out / "val" / "JPEGImages"


def train_command(
    name: str, seed: int, iters: int, out: Path, *, val: dict | None = None, extra: tuple[str, ...] = ()
) -> list[str]:
    """The `crossvis train` command line of one run; ``val`` replaces the validation split's synth settings
    (VAL), ``extra`` overrides are appended (benchmarks/paper_setting.py: other splits, a pretrained start)."""
    cross, ident, region = ROWS[name]
    val_json, val_images = val_split(out)
    overrides = [
        f"seed={seed}",
        f"solver.max_iter={iters}",
        f"solver.steps=[{int(0.8 * iters)}, {int(0.925 * iters)}]",  # the tiny schedule's shape, scaled
        f"model.crossvis.crossover={str(cross).lower()}",
        f"model.crossvis.identity_loss={ident}",
        f"model.crossvis.sample_region={region}",
        f"data.val_json={val_json}",
        f"data.val_images={val_images}",
        "data.synth_val=" + flow(val or VAL),
        "test.eval_period=0",
        f"solver.checkpoint_period={iters}",
        *extra,
    ]
    return [
        "crossvis",
        "train",
        "configs/synthetic_tiny.yaml",
        "--output",
        str(run_dir(out, name, seed)),
        *overrides,
    ]


def evaluate_run(name: str, seed: int, out: Path, use_embedding: bool):
    """Track the validation split with a finished run's weights and evaluate it (an EvalResult)."""
    from crossvis.data.ytvis import YTVISDataset
    from crossvis.engine.inference import infer_videos
    from crossvis.engine.predictor import VideoPredictor
    from crossvis.evaluation import evaluate

    ds = YTVISDataset(*val_split(out))
    weights = run_dir(out, name, seed) / "model_final.safetensors"
    predictor = VideoPredictor.from_weights(str(weights)).with_tracker(use_embedding=use_embedding)
    return evaluate(ds, infer_videos(predictor, ds, progress=False))


def run_train(cmd: list[str], threads: int) -> float:
    """Run a `crossvis train` command line (as ``python -m crossvis.cli.main -q``); its wall time in minutes."""
    # Several runs can share the machine (--jobs); each gets its share of the cores.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "crossvis.cli.main", "-q", *cmd[1:]], check=True, env=env)
    return (time.perf_counter() - t0) / 60


def run_row(name: str, seed: int, iters: int, out: Path, threads: int) -> dict:
    cmd = train_command(name, seed, iters, out)
    minutes = run_train(cmd, threads)
    r = evaluate_run(name, seed, out, use_embedding=True)
    return {
        "row": name,
        "seed": seed,
        "iters": iters,
        "train_minutes": round(minutes, 1),
        "threads": threads,
        "command": shlex.join(cmd),
        **{k: r.stats[k] for k in METRICS[:-1]},
        "id_switches": r.identity["id_switches"],
    }


def add_iou_only(record: dict, out: Path) -> None:
    """Fill IOU_ONLY for a finished run from its saved weights (cheap: 30 short videos)."""
    r = evaluate_run(record["row"], record["seed"], out, use_embedding=False)
    record["AP_iou_only"] = r.stats["AP"]
    record["id_switches_iou_only"] = r.identity["id_switches"]


BEGIN, END = "<!-- tables: generated by benchmarks/ablation.py -->", "<!-- end of generated tables -->"


def row_table(
    title: str, rows: list[str], columns: list[str], seeds: dict[str, str], cell: Callable[[str, str], str]
) -> list[str]:
    """A markdown table under ``### title``: one line per row name, its seeds, then ``cell(name, column)``
    for each column (also used by benchmarks/paper_setting.py)."""
    lines = [
        f"### {title}",
        "",
        "| row | seeds | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for name in rows:
        lines.append(f"| {name} | {seeds[name]} | " + " | ".join(cell(name, k) for k in columns) + " |")
    return lines + [""]


def write_report(out: Path, records: list[dict]) -> None:
    """Rebuild the tables in OUT/ablation.md (text outside the markers is kept) and OUT/ablation.png."""
    by_row: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        by_row.setdefault(r["row"], []).append(r)

    def values(name: str, k: str) -> list[float]:
        return [r[k] * (1 if k in COUNTS else 100) for r in by_row.get(name, []) if k in r]

    def cell(name: str, k: str) -> str:
        vals = values(name, k)
        if not vals:
            return "—"
        if len(vals) == 1:
            return f"{vals[0]:.0f}" if k in COUNTS else f"{vals[0]:.1f}"
        return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}"

    lines = [
        BEGIN,
        "",
        "Mean ± sample std over seeds (a single value where only one seed ran); AP/AR in %; identity switches",
        "summed over the 30 validation videos. Every number comes from `reports/ablation.json`.",
        "",
    ]
    for title, rows in TABLES.items():
        seeds = {name: ",".join(str(r["seed"]) for r in by_row.get(name, [])) for name in rows}
        lines += row_table(title, rows, COLUMNS, seeds, cell)
    lines += [
        "### Every run",
        "",
        "| row | seed | iterations | threads | train min | " + " | ".join(COLUMNS) + " |",
        "|---|---|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for r in records:
        vals = [("—" if k not in r else str(r[k]) if k in COUNTS else f"{r[k] * 100:.1f}") for k in COLUMNS]
        lines.append(
            f"| {r['row']} | {r['seed']} | {r['iters']} | {r.get('threads', 2)} | {r['train_minutes']} | "
            + " | ".join(vals)
            + " |"
        )
    lines += ["", "Commands (the ablation script runs each through `python -m crossvis.cli.main`):", ""]
    lines += [f"- `{shlex.join(train_command(r['row'], r['seed'], r['iters'], out))}`" for r in records]
    lines += ["", END]
    path = out / "ablation.md"
    old = path.read_text() if path.is_file() else ""
    if BEGIN in old and END in old:
        text = old[: old.index(BEGIN)] + "\n".join(lines) + old[old.index(END) + len(END) :]
    else:
        text = "# Ablations on synthetic video\n\n" + "\n".join(lines) + "\n"
    path.write_text(text)
    _plot(out / "ablation.png", by_row)


def _plot(path: Path, by_row: dict[str, list[dict]]) -> None:
    try:  # matplotlib is optional: pip install -e .[reports]
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    tables = [(t, [n for n in rows if n in by_row]) for t, rows in TABLES.items()]
    tables = [(t, rows) for t, rows in tables if rows]
    if not tables:
        return
    fig, axes = plt.subplots(2, len(tables), figsize=(4.6 * len(tables), 6.5), squeeze=False)
    for j, (title, rows) in enumerate(tables):
        for i, (k, label) in enumerate([("AP", "AP (%)"), ("id_switches", "identity switches")]):
            ax = axes[i][j]
            scale = 1 if k in COUNTS else 100
            for x, n in enumerate(rows):
                vals = [r[k] * scale for r in by_row[n]]
                ax.bar(x, statistics.mean(vals), color="#8fb8de" if "crossover" in n else "#d9d9d9")
                ax.plot([x] * len(vals), vals, "o", color="black", ms=3)  # one dot per seed
            ax.set_xticks(range(len(rows)), rows, rotation=35, ha="right", fontsize=7)
            ax.set_xlim(-0.6, max(len(rows), 4) - 0.4)  # same bar width in every panel
            ax.set_ylabel(label)
            if i == 0:
                ax.set_title(title.split(" (")[0] + "\n(" + title.split(" (", 1)[1], fontsize=9)
    fig.suptitle(
        "CrossVIS ablations on synthetic video (bars: mean over seeds, dots: seeds; blue: crossover)"
    )
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--rows", nargs="+", default=MAIN_ROWS, help="row names, or 'all' (adds Table 6)")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--jobs", type=int, default=1, help="runs side by side, each with cores/jobs threads")
    args = ap.parse_args()
    rows = list(ROWS) if args.rows == ["all"] else args.rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = out / "ablation.json"
    records = json.loads(db.read_text()) if db.is_file() else []
    todo = [
        (name, seed)
        for seed in args.seeds
        for name in rows
        if not any(r["row"] == name and r["seed"] == seed and r["iters"] == args.iters for r in records)
    ]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    torch.set_num_threads(threads)  # add_iou_only runs here beside the other jobs' training
    lock = threading.Lock()

    def one(job: tuple[str, int]) -> None:
        record = run_row(*job, args.iters, out, threads)
        add_iou_only(record, out)
        with lock:  # the JSON database is rewritten whole after every finished run
            records.append(record)
            db.write_text(json.dumps(records, indent=1))
            write_report(out, records)

    with ThreadPoolExecutor(args.jobs) as pool:
        for f in [pool.submit(one, job) for job in todo]:
            f.result()
    for r in records:  # runs made before the IoU-only columns existed
        if "AP_iou_only" not in r and run_dir(out, r["row"], r["seed"]).is_dir():
            add_iou_only(r, out)
            db.write_text(json.dumps(records, indent=1))
    write_report(out, records)


if __name__ == "__main__":
    main()
