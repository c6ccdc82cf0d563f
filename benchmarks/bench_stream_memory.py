"""Benchmark: memory stays flat over a long stream (predict_video on a generated stream of frames).

    python benchmarks/bench_stream_memory.py [--weights synthetic-tiny] [--frames 5000] [--report 500,5000]

Frames come from the synthetic renderer (a few clips cycled), so the stream has real objects and tracks.
Prints the peak resident memory (VmHWM) when the stream reaches each reported frame count.
"""

from __future__ import annotations

import argparse
import itertools
import time

from crossvis.data.synthetic import SynthParams, render_video
from crossvis.engine.predictor import VideoPredictor


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="synthetic-tiny")
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--report", default="500,5000")
    args = ap.parse_args()
    marks = sorted(int(x) for x in args.report.split(","))
    p = SynthParams(frames=40, height=192, width=256)
    clips = [render_video(p, i)[0] for i in range(3)]
    frames = itertools.islice(itertools.cycle([f for c in clips for f in c]), args.frames)
    predictor = VideoPredictor.from_weights(args.weights)
    seen = {}
    t0 = time.perf_counter()

    def on_frame(frame, res):
        n = res.index + 1
        if n in marks:
            seen[n] = (peak_rss_mib(), time.perf_counter() - t0)

    vr = predictor.predict_video(frames, on_frame=on_frame)
    print(
        f"command: python benchmarks/bench_stream_memory.py --weights {args.weights} --frames {args.frames} "
        f"--report {args.report}"
    )
    for n, (rss, t) in sorted(seen.items()):
        print(f"after {n:6d} frames: peak RSS {rss:7.1f} MiB  ({n / t:.1f} FPS end-to-end)")
    print(f"{vr.num_frames} frames, {len(vr.tracks)} tracks")


if __name__ == "__main__":
    main()
