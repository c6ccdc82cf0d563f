"""``crossvis demo`` (what ``make demo`` runs): the shipped weights on a fresh synthetic clip and split."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from crossvis.data.synthetic import SynthParams, generate
from crossvis.data.ytvis import YTVISDataset
from crossvis.engine.inference import infer_videos, write_tracks_json
from crossvis.engine.predictor import VideoPredictor
from crossvis.engine.video_io import VideoWriter
from crossvis.engine.visualize import contact_sheet, draw_result
from crossvis.evaluation import evaluate, write_results
from crossvis.evaluation.report import format_metrics
from crossvis.io import atomic_path, atomic_write

log = logging.getLogger(__name__)

DEMO_SEED = 20261125  # never used for training data


def run_demo(
    output: str = "demo_output",
    *,
    device: str | None = None,
    weights: str = "synthetic-tiny",
    overrides: list[str] | None = None,
) -> list[str]:
    """Run the demo; returns the lines of its report (metrics, speed, paths). ``overrides``
    (``key.sub=value``) are layered over the weights' config."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    predictor = VideoPredictor.from_weights(weights, device=device, overrides=overrides)
    # the generator settings the weights were validated on (sizes, classes, difficulty), with fresh seeds
    base = predictor.cfg.data.synth_val or predictor.cfg.data.synth_train or SynthParams()
    lines = [f"crossvis demo: weights {weights} on {predictor.device}; outputs in {out}/"]

    # 1. a fresh clip -> overlay video, contact sheet, tracks
    clip_dir = out / "clip"
    generate(clip_dir, replace(base, videos=1, frames=36, seed=DEMO_SEED))
    clip = YTVISDataset(clip_dir / "annotations.json", clip_dir / "JPEGImages")
    video = clip.videos[0]
    overlays = []
    with VideoWriter(out / "overlay.mp4", fps=Fraction(6)) as writer:

        def on_frame(frame, res):
            o = draw_result(frame, res)
            writer.write(o)
            overlays.append(o)

        vr = predictor.predict_video(
            (clip.load_image(video, f) for f in range(video.length)), on_frame=on_frame
        )
    picks = [overlays[i] for i in range(0, len(overlays), max(1, len(overlays) // 8))][:8]
    with atomic_path(out / "contact_sheet.png") as tmp:
        contact_sheet(picks, columns=4, width=256).save(tmp, format="PNG")
    write_tracks_json(vr, out / "tracks.json", str(clip_dir), 6.0)

    # 2. a small validation split with a seed the weights never saw -> results.json, metrics.json
    val_dir = out / "val"
    generate(val_dir, replace(base, videos=10, seed=DEMO_SEED + 1))
    val = YTVISDataset(val_dir / "annotations.json", val_dir / "JPEGImages")
    t0 = time.perf_counter()
    predictor.model_seconds = 0.0
    results = infer_videos(predictor, val, progress=False)
    infer_seconds, model_seconds = time.perf_counter() - t0, predictor.model_seconds
    n_frames = sum(v.length for v in val.videos)
    write_results(results, out / "results.json")
    metrics = evaluate(val, results)
    # the same split with IoU-only association: what the learned embedding buys
    iou_only = predictor.with_tracker(use_embedding=False)
    metrics_iou = evaluate(val, infer_videos(iou_only, val, progress=False))
    with atomic_write(out / "metrics.json") as f:
        json.dump({**metrics.to_dict(), "iou_only_tracker": metrics_iou.to_dict()}, f, indent=1)

    lines.append(format_metrics(metrics, per_category=False))
    lines.append(
        f"AP {100 * metrics.stats['AP']:.1f}  AR10 {100 * metrics.stats['AR10']:.1f}  identity switches "
        f"{metrics.identity['id_switches']}  on {len(val.videos)} unseen synthetic videos ({n_frames} frames)"
    )
    lines.append(
        f"identity switches with the learned embedding: {metrics.identity['id_switches']}, with IoU-only "
        f"association: {metrics_iou.identity['id_switches']} (AP {100 * metrics_iou.stats['AP']:.1f})"
    )
    lines.append(
        f"speed on {predictor.device}: end-to-end {n_frames / infer_seconds:.1f} FPS (read, model, track, "
        f"RLE), model-only {n_frames / model_seconds:.1f} FPS"
    )
    for name in ("overlay.mp4", "contact_sheet.png", "tracks.json", "results.json", "metrics.json"):
        lines.append(f"  {out / name}")
    lines.append(f"done in {time.perf_counter() - t_start:.0f} s")
    return lines
