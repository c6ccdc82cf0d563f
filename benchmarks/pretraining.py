"""Does per-frame pretraining on still images help CrossVIS? The paper's chain (COCO CondInst -> CrossVIS) on
synthetic data:

    python benchmarks/pretraining.py --pretrain-iters 250 --video-iters 250 --seeds 0 [--out reports]

1. still images: every frame of 100 synthetic videos (seed 2000, never used for video training) written as a
   COCO instance JSON, which crossvis reads as one-frame videos (only the CondInst losses train on them);
2. ``pretrained``: configs/synthetic_tiny.yaml trained on the still images for --pretrain-iters, then on the
   synthetic videos (the tiny config's train split) for --video-iters from those weights (model.weights);
3. ``scratch``: the same video training from random weights (model.init=scratch), same iterations.
Both are tracked and evaluated on the ablation's validation split (30 videos, seed 1000). Results are appended
to OUT/pretraining.json (runs already there are skipped) and OUT/pretraining.md is rebuilt from them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VAL = {"videos": 30, "frames": 12, "seed": 1000, "height": 192, "width": 256}
STILL_SOURCE = {"videos": 100, "frames": 12, "seed": 2000, "height": 192, "width": 256}


def still_images(out: Path) -> Path:
    """Write (once) OUT/stills/instances.json: every annotated frame of the still-source videos as COCO."""
    from crossvis.config import SynthConfig
    from crossvis.data.synthetic import generate

    src, dst = out / "data" / "stills_source", out / "data" / "stills" / "instances.json"
    if dst.is_file():
        return dst
    generate(src, SynthConfig(**STILL_SOURCE))
    data = json.loads((src / "annotations.json").read_text())
    images, anns = [], []
    for v in data["videos"]:
        for f, name in enumerate(v["file_names"]):
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": name, "height": v["height"], "width": v["width"]})
            for a in data["annotations"]:
                if a["video_id"] == v["id"] and a["segmentations"][f] is not None:
                    anns.append(
                        {
                            "id": len(anns) + 1,
                            "image_id": image_id,
                            "category_id": a["category_id"],
                            "segmentation": a["segmentations"][f],
                            "bbox": a["bboxes"][f],
                            "area": (a.get("areas") or [None] * v["length"])[f],
                            "iscrowd": 0,
                        }
                    )
    coco = {"images": images, "annotations": anns, "categories": data["categories"]}
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(coco))
    return dst


def prepare(out: Path) -> None:
    """Generate every dataset once, before runs start in parallel (they would race to generate them)."""
    from crossvis.config import load_config
    from crossvis.data.synthetic import generate

    still_images(out)
    if not (out / "val" / "annotations.json").is_file():
        from crossvis.config import SynthConfig

        generate(out / "val", SynthConfig(**VAL))
    d = load_config(ROOT / "configs" / "synthetic_tiny.yaml").data
    train = ROOT / d.train_json
    if not train.is_file():
        generate(train.parent, d.synth_train)


def _common(iters: int, seed: int, out: Path) -> list[str]:
    return [
        f"seed={seed}",
        f"solver.max_iter={iters}",
        f"solver.steps=[{int(0.8 * iters)}, {int(0.925 * iters)}]",
        f"solver.warmup_iters={min(100, iters // 5)}",
        f"solver.checkpoint_period={iters}",
        "test.eval_period=0",
        f"data.val_json={out / 'val' / 'annotations.json'}",
        f"data.val_images={out / 'val' / 'JPEGImages'}",
        "data.synth_val={" + ", ".join(f"{k}: {v}" for k, v in VAL.items()) + "}",
    ]


def commands(kind: str, seed: int, a: argparse.Namespace, out: Path) -> list[list[str]]:
    """The `crossvis train` command lines of one run (two for the pretrained start)."""
    run = out / "runs" / f"{kind}_seed{seed}"
    video = [*_common(a.video_iters, seed, out)]
    if kind == "scratch":
        return [["crossvis", "train", "configs/synthetic_tiny.yaml", "--output", str(run), *video]]
    stills = out / "data" / "stills"
    pre = [
        "crossvis",
        "train",
        "configs/synthetic_tiny.yaml",
        "--output",
        str(out / "runs" / f"stills_seed{seed}"),
        *_common(a.pretrain_iters, seed, out),
        f"data.train_json={stills / 'instances.json'}",
        f"data.train_images={out / 'data' / 'stills_source' / 'JPEGImages'}",
        "data.synth_train=null",
        "model.crossvis.num_identities=1",  # still images: no identity loss, no classifier over all objects
    ]
    weights = out / "runs" / f"stills_seed{seed}" / "model_final.safetensors"
    main = [
        "crossvis",
        "train",
        "configs/synthetic_tiny.yaml",
        "--output",
        str(run),
        *video,
        "model.init=pretrained",
        f"model.weights={weights}",
    ]
    return [pre, main]


def evaluate(run: Path, out: Path) -> dict:
    from crossvis.data.ytvis import YTVISDataset
    from crossvis.engine.inference import infer_videos
    from crossvis.engine.predictor import VideoPredictor
    from crossvis.evaluation import evaluate as ev

    ds = YTVISDataset(out / "val" / "annotations.json", out / "val" / "JPEGImages")
    predictor = VideoPredictor.from_weights(str(run / "model_final.safetensors"))
    r = ev(ds, infer_videos(predictor, ds, progress=False))
    return {k: r.stats[k] for k in ("AP", "AP50", "AP75", "AR1", "AR10")} | {
        "id_switches": r.identity["id_switches"]
    }


def run_one(kind: str, seed: int, a: argparse.Namespace, out: Path) -> dict:
    t0 = time.perf_counter()
    cmds = commands(kind, seed, a, out)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    for cmd in cmds:
        subprocess.run(
            [sys.executable, "-m", "crossvis.cli.main", "-q", *cmd[1:]], check=True, env=env, cwd=ROOT
        )
    minutes = (time.perf_counter() - t0) / 60
    return {
        "start": kind,
        "seed": seed,
        "pretrain_iters": a.pretrain_iters if kind == "pretrained" else 0,
        "video_iters": a.video_iters,
        "minutes": round(minutes, 1),
        "commands": [shlex.join(c).replace(f"{ROOT}/", "") for c in cmds],  # paths relative to the repo
        **evaluate(out / "runs" / f"{kind}_seed{seed}", out),
    }


def write_report(out: Path, records: list[dict]) -> None:
    lines = [
        "# Per-frame pretraining on still images vs. training from scratch (synthetic video)",
        "",
        "Generated by `benchmarks/pretraining.py` from `pretraining.json`. Tiny model (configs/synthetic_tiny.yaml),",
        "CPU. `pretrained`: still-image (COCO-format, one-frame videos) training, then video training from",
        "those weights; `scratch`: the same video training from random weights. Evaluated on 30 synthetic",
        "validation videos (seed 1000). AP/AR in %.",
        "",
        "| start | seeds | still iters | video iters | AP | AP50 | AP75 | AR1 | AR10 | id switches |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("pretrained", "scratch"):
        rs = [r for r in records if r["start"] == kind]
        if not rs:
            continue

        def cell(k: str, rs=rs) -> str:
            v = [r[k] * (1 if k == "id_switches" else 100) for r in rs]
            f = ".0f" if k == "id_switches" else ".1f"
            return f"{v[0]:{f}}" if len(v) == 1 else f"{statistics.mean(v):{f}} ± {statistics.stdev(v):.1f}"

        seeds = ",".join(str(r["seed"]) for r in rs)
        lines.append(
            f"| {kind} | {seeds} | {rs[0]['pretrain_iters']} | {rs[0]['video_iters']} | "
            + " | ".join(cell(k) for k in ("AP", "AP50", "AP75", "AR1", "AR10", "id_switches"))
            + " |"
        )
    n_seeds = len({r["seed"] for r in records})
    by = {(r["start"], r["seed"]): r for r in records}
    paired = sorted(s for k, s in by if k == "pretrained" and ("scratch", s) in by)
    lines += ["", "Mean ± sample std over seeds. Paired by seed (pretrained minus scratch, same seed):", ""]
    lines += ["| seed | AP | AP50 | AR10 | id switches |", "|---|---|---|---|---|"]
    diffs = []
    for s in paired:
        d = {k: by["pretrained", s][k] - by["scratch", s][k] for k in ("AP", "AP50", "AR10", "id_switches")}
        diffs.append(d)
        lines.append(
            f"| {s} | {100 * d['AP']:+.1f} | {100 * d['AP50']:+.1f} | {100 * d['AR10']:+.1f} | "
            f"{d['id_switches']:+.0f} |"
        )
    wins = sum(d["AP"] > 0 for d in diffs)
    lines += [
        "",
        f"{n_seeds} seed(s); the pretrained start has the higher AP in {wins} of {len(diffs)} paired seeds. Short",
        "CPU runs (the tiny config's full schedule is 8,000 iterations), so absolute APs are low; the comparison",
        "is what the runs are for. The `pretrained` row also had the still-image iterations; the video-training",
        "budget is the same. Minutes are wall time on a shared 2-core machine (runs side by side).",
        "",
        "Commands:",
        "",
    ]
    for r in records:
        lines += [f"- {r['start']} seed {r['seed']} ({r['minutes']} min):"]
        lines += [f"  `{c}`" for c in r["commands"]]
    (out / "pretraining.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pretrain-iters", type=int, default=250)
    p.add_argument("--video-iters", type=int, default=250)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--out", default="reports")
    a = p.parse_args()
    out = Path(a.out).resolve()
    print("command:", shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), flush=True)
    prepare(out)
    path = out / "pretraining.json"
    records = json.loads(path.read_text()) if path.is_file() else []
    done = {(r["start"], r["seed"]) for r in records}
    todo = [(k, s) for s in a.seeds for k in ("pretrained", "scratch") if (k, s) not in done]
    with ThreadPoolExecutor(a.jobs) as pool:
        for rec in pool.map(lambda ks: run_one(*ks, a, out), todo):
            records.append(rec)
            path.write_text(json.dumps(records, indent=1))
            write_report(out, records)
            print(json.dumps({k: v for k, v in rec.items() if k != "commands"}), flush=True)
    write_report(out, records)


if __name__ == "__main__":
    main()
