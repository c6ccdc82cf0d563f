"""Benchmark: loading a large YouTube-VIS-format JSON (default 3,000 videos, 100,000 annotations).

    python benchmarks/bench_load.py [--videos 3000 --annotations 100000 --frames 36]

Each annotation has an uncompressed RLE per frame (a few runs each, as real files of small objects) and
null frames; the file is written once to a temp folder and then timed through ``YTVISDataset``
(JSON parse + structural validation) and through ``json.load`` alone.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from crossvis.data.ytvis import YTVISDataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=3000)
    ap.add_argument("--annotations", type=int, default=100_000)
    ap.add_argument("--frames", type=int, default=36)
    args = ap.parse_args()
    h, w, T = 720, 1280, args.frames
    rle = {"size": [h, w], "counts": [400000, 300, 420, 300, h * w - 401020]}
    data = {
        "videos": [
            {
                "id": v,
                "height": h,
                "width": w,
                "length": T,
                "file_names": [f"v{v}/{t:05d}.jpg" for t in range(T)],
            }
            for v in range(1, args.videos + 1)
        ],
        "categories": [{"id": c, "name": f"class{c}"} for c in range(1, 41)],
        "annotations": [
            {
                "id": i + 1,
                "video_id": i % args.videos + 1,
                "category_id": i % 40 + 1,
                "iscrowd": 0,
                "segmentations": [rle if t % 4 else None for t in range(T)],
                "bboxes": [[1.0, 2.0, 3.0, 4.0] if t % 4 else None for t in range(T)],
                "areas": [600 if t % 4 else None for t in range(T)],
            }
            for i in range(args.annotations)
        ],
    }
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.json"
        path.write_text(json.dumps(data))
        del data
        size = path.stat().st_size / 2**20
        t0 = time.perf_counter()
        with open(path) as f:
            json.load(f)
        t_json = time.perf_counter() - t0
        t0 = time.perf_counter()
        ds = YTVISDataset(path)
        t_load = time.perf_counter() - t0
    print(
        f"command: python benchmarks/bench_load.py --videos {args.videos} --annotations {args.annotations} "
        f"--frames {T}"
    )
    print(
        f"file: {size:.0f} MiB; YTVISDataset load (parse + validation): {t_load:.2f} s "
        f"(json.load alone {t_json:.2f} s); {len(ds.videos)} videos, {ds.num_identities} identities"
    )


if __name__ == "__main__":
    main()
