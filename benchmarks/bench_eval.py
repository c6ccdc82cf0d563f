"""Benchmark: evaluation time for N videos x T frames x P predictions (default 300 x 36 x 10).

    python benchmarks/bench_eval.py [--videos 300 --frames 36 --preds 10] [--write DIR]

Ground truth: 3 tracks per video over 40 categories at 360x640; predictions: jittered copies and random
boxes as compressed RLE. ``--write DIR`` also saves gt.json/results.json to time other evaluators on.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from crossvis.data.masks import encode_mask, encode_uncompressed
from crossvis.evaluation import Evaluator, evaluate


def make_case(videos: int, frames: int, preds: int, h: int = 360, w: int = 640, seed: int = 0):
    rng = np.random.default_rng(seed)
    vids, anns, res = [], [], []
    aid = 1
    for v in range(1, videos + 1):
        vids.append(
            {
                "id": v,
                "height": h,
                "width": w,
                "length": frames,
                "file_names": [f"{v}/{t:05d}.jpg" for t in range(frames)],
            }
        )
        boxes = []
        for _ in range(3):
            cat = int(rng.integers(1, 41))
            x, y = rng.integers(0, w - 100), rng.integers(0, h - 100)
            bw, bh = rng.integers(20, 100, 2)
            segs, areas = [], []
            for t in range(frames):
                m = np.zeros((h, w), bool)
                m[y + t % 5 : y + bh, x : x + bw] = True
                segs.append(encode_uncompressed(m))
                areas.append(int(m.sum()))
            anns.append(
                {
                    "id": aid,
                    "video_id": v,
                    "category_id": cat,
                    "iscrowd": 0,
                    "segmentations": segs,
                    "areas": areas,
                    "bboxes": [None] * frames,
                }
            )
            boxes.append((cat, x, y, bw, bh))
            aid += 1
        for p in range(preds):
            cat, x, y, bw, bh = boxes[p % 3]
            dx, dy = rng.integers(-10, 11, 2)
            segs = []
            for _ in range(frames):
                m = np.zeros((h, w), bool)
                m[max(0, y + dy) : y + dy + bh, max(0, x + dx) : x + dx + bw] = True
                segs.append(encode_mask(m))
            res.append(
                {
                    "video_id": v,
                    "category_id": cat if p < 6 else int(rng.integers(1, 41)),
                    "score": float(rng.random()),
                    "segmentations": segs,
                }
            )
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, 41)]
    return {"videos": vids, "categories": cats, "annotations": anns}, res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=300)
    ap.add_argument("--frames", type=int, default=36)
    ap.add_argument("--preds", type=int, default=10)
    ap.add_argument("--write", default="")
    args = ap.parse_args()
    gt, res = make_case(args.videos, args.frames, args.preds)
    if args.write:
        out = Path(args.write)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gt.json").write_text(json.dumps(gt))
        (out / "results.json").write_text(json.dumps(res))
    t0 = time.perf_counter()
    r = evaluate(gt, res)
    dt = time.perf_counter() - t0
    ev = Evaluator(gt)  # what training does: ground truth prepared once
    t0 = time.perf_counter()
    ev.evaluate(res, with_identity=False)
    dt_prepared = time.perf_counter() - t0
    print(
        f"command: python benchmarks/bench_eval.py --videos {args.videos} --frames {args.frames} "
        f"--preds {args.preds}"
    )
    print(
        f"crossvis.evaluation.evaluate (everything, identity diagnostics included): {dt:.2f} s  "
        f"AP={r.stats['AP']:.4f} AR10={r.stats['AR10']:.4f}"
    )
    print(
        f"Evaluator(gt).evaluate(results, with_identity=False), ground truth prepared once: {dt_prepared:.2f} s"
    )


if __name__ == "__main__":
    main()
