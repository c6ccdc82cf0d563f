"""AP of the inference paths on a synthetic validation split: fp32, bf16, fp16 autocast and ONNX Runtime
(fp32 and int8 files).

    python benchmarks/precision_ap.py --weights synthetic-tiny --onnx /tmp/tiny.onnx [--videos 12] [--seed 2000]

The split is generated (as benchmarks/eval_synthetic.py does) with the weights' generator settings and a seed
the training never used. Prints one row per path: AP, AP50, AR10 (in %), and the frames per second (the
paths run one after another, so on a shared machine the FPS column is not a comparison: use
`crossvis benchmark`, which interleaves).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from crossvis.data.synthetic import SynthParams, generate
from crossvis.data.ytvis import YTVISDataset
from crossvis.engine.inference import infer_videos
from crossvis.engine.predictor import VideoPredictor
from crossvis.evaluation import evaluate
from crossvis.io import atomic_write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="synthetic-tiny")
    ap.add_argument(
        "--onnx",
        nargs="+",
        default=[],
        help="the same weights exported with `crossvis export --format onnx` (also --int8 files)",
    )
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--seed", type=int, default=2000)
    ap.add_argument("--data", default="reports/data")
    ap.add_argument("--json", help="write the rows as JSON")
    args = ap.parse_args()
    fp32 = VideoPredictor.from_weights(args.weights, device="cpu")
    base = fp32.cfg.data.synth_val or fp32.cfg.data.synth_train or SynthParams()
    split = Path(args.data) / f"val_seed{args.seed}_{args.videos}"
    if not (split / "annotations.json").is_file():
        generate(split, replace(base, videos=args.videos, seed=args.seed))
    ds = YTVISDataset(split / "annotations.json", split / "JPEGImages")
    paths = {
        "fp32": fp32,
        "bf16": VideoPredictor.from_weights(args.weights, device="cpu", precision="bf16"),
        "fp16": VideoPredictor.from_weights(args.weights, device="cpu", precision="fp16"),
    }
    for path in args.onnx:
        pred = VideoPredictor.from_weights(path, device="cpu")
        paths["onnx int8" if pred.model.precision == "int8" else "onnx"] = pred
    frames = sum(v.length for v in ds.videos)
    print(
        f"command: python benchmarks/precision_ap.py --weights {args.weights}"
        + (f" --onnx {' '.join(args.onnx)}" if args.onnx else "")
        + f" --videos {args.videos} --seed {args.seed}"
    )
    print(f"split {split}: {len(ds.videos)} videos, {frames} frames")
    print("| path | AP | AP50 | AR10 | FPS (end to end) |\n|---|---|---|---|---|")
    rows = {}
    for name, p in paths.items():
        t0 = time.perf_counter()
        r = evaluate(ds, infer_videos(p, ds, progress=False)).stats
        fps = frames / (time.perf_counter() - t0)
        rows[name] = {"AP": 100 * r["AP"], "AP50": 100 * r["AP50"], "AR10": 100 * r["AR10"], "fps": fps}
        print(f"| {name} | {100 * r['AP']:.2f} | {100 * r['AP50']:.2f} | {100 * r['AR10']:.2f} | {fps:.1f} |")
    if args.json:
        with atomic_write(args.json) as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
