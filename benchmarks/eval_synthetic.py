"""The synthetic benchmark: weights on a fresh synthetic validation split, learned embedding vs IoU-only.

    python benchmarks/eval_synthetic.py --weights synthetic-tiny [--videos 30] [--seed 2000]

The split is generated with the generator settings stored in the weights' config (size, classes, difficulty)
and a seed the training never used (training: 0, its periodic validation: 1000), into
reports/data/val_seed<SEED>/ unless it exists. Prints AP, AP50, AP75, AR1, AR10 and identity switches for the
official tracker and for IoU-only association, and the speed (2-core CPU unless CUDA is present).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from crossvis.data.synthetic import SynthParams, generate
from crossvis.data.ytvis import YTVISDataset
from crossvis.engine.benchmark import device_name
from crossvis.engine.inference import infer_videos
from crossvis.engine.predictor import VideoPredictor
from crossvis.evaluation import evaluate

KEYS = ["AP", "AP50", "AP75", "AR1", "AR10"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="synthetic-tiny")
    ap.add_argument("--videos", type=int, default=30)
    ap.add_argument("--seed", type=int, default=2000)
    ap.add_argument("--data", default="reports/data")
    args = ap.parse_args()
    predictor = VideoPredictor.from_weights(args.weights)
    base = predictor.cfg.data.synth_val or predictor.cfg.data.synth_train or SynthParams()
    split = Path(args.data) / f"val_seed{args.seed}"
    if not (split / "annotations.json").is_file():
        generate(split, replace(base, videos=args.videos, seed=args.seed))
    ds = YTVISDataset(split / "annotations.json", split / "JPEGImages")
    frames = sum(v.length for v in ds.videos)
    print(
        f"command: python benchmarks/eval_synthetic.py --weights {args.weights} --videos {args.videos} "
        f"--seed {args.seed}"
    )
    print(
        f"split: {split} ({len(ds.videos)} videos, {frames} frames, {ds.num_identities} tracks); "
        f"device: {device_name(predictor.device)}"
    )
    print("| association | " + " | ".join(KEYS) + " | ID switches | fragmentations |")
    print("|---|" + "---|" * (len(KEYS) + 2))
    for name, use_emb in (("embedding cos + IoU (official)", True), ("IoU only", False)):
        p = predictor.with_tracker(use_embedding=use_emb)
        t0 = time.perf_counter()
        r = evaluate(ds, infer_videos(p, ds, progress=False))
        dt = time.perf_counter() - t0
        print(
            f"| {name} | "
            + " | ".join(f"{100 * r.stats[k]:.1f}" for k in KEYS)
            + f" | {r.identity['id_switches']} | {r.identity['fragmentations']} |"
        )
        if use_emb:
            speed = (
                f"end-to-end {frames / dt:.1f} FPS (JPEG read, model, tracker, RLE), model-only "
                f"{frames / p.model_seconds:.1f} FPS"
            )
    print(speed)


if __name__ == "__main__":
    main()
