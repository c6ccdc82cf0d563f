"""Inference loops: a dataset JSON -> official results file; any video -> overlay mp4 + tracks JSON."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from crossvis.config import load_config, resolve_config_path
from crossvis.data.ytvis import YTVISDataset
from crossvis.engine.predictor import VideoPredictor
from crossvis.errors import CrossVISError, atomic_write
from crossvis.evaluation import evaluate, write_results

log = logging.getLogger(__name__)


def _predictor(weights: str, config: str | None, device: str | None) -> VideoPredictor:
    cfg = load_config(resolve_config_path(config)) if config else None
    return VideoPredictor(weights, device=device, config=cfg)


def infer_videos(predictor: VideoPredictor, dataset: YTVISDataset, progress: bool = True) -> list[dict]:
    """Every video of ``dataset`` -> entries of the official submission format."""
    results: list[dict] = []
    bar = tqdm(dataset.videos, desc="videos", unit="video", disable=not progress)
    for video in bar:
        frames = (dataset.load_image(video, f) for f in range(video.length))
        vr = predictor.predict_video(frames)
        results.extend(vr.to_results(video.id))
        bar.set_postfix(tracks=len(vr.tracks), fps=f"{vr.num_frames / max(vr.total_seconds, 1e-9):.1f}")
    return results


def infer_dataset(args: argparse.Namespace) -> int:
    predictor = _predictor(args.weights, args.config, args.device)
    ds = YTVISDataset(args.annotations, args.images)
    missing = set(ds.category_ids) - set(predictor.category_ids)
    if missing and ds.has_annotations:
        log.warning("categories %s of %s are unknown to the weights", sorted(missing), args.annotations)
    results = infer_videos(predictor, ds, progress=not getattr(args, "quiet", False))
    known = set(ds.category_ids)
    dropped = sum(1 for r in results if r["category_id"] not in known)
    results = [r for r in results if r["category_id"] in known]
    if dropped:
        log.warning("%d tracks of classes the dataset does not list were left out", dropped)
    written = write_results(results, args.output, zip_=args.zip)
    print(f"wrote {', '.join(map(str, written))} ({len(results)} tracks, {len(ds.videos)} videos)")
    if args.evaluate:
        if not ds.has_annotations:
            raise CrossVISError(args.annotations, "--evaluate needs annotations in the JSON")
        from crossvis.evaluation.report import format_metrics

        print(format_metrics(evaluate(ds, results)))
    return 0


def predict_source(args: argparse.Namespace) -> int:
    from crossvis.engine.video_io import VideoWriter, open_source
    from crossvis.engine.visualize import draw_overlay

    predictor = _predictor(args.weights, args.config, args.device)
    source = open_source(args.source)
    limit = args.max_frames or None

    def frames():
        for i, f in enumerate(source):
            if limit is not None and i >= limit:
                return
            yield f

    bar = tqdm(total=source.count if limit is None else min(limit, source.count or limit), unit="frame",
               desc=source.name, disable=getattr(args, "quiet", False))
    with VideoWriter(args.output, source.fps) as writer:
        def on_frame(frame: np.ndarray, res) -> None:
            writer.write(draw_overlay(frame, res.track_ids.tolist(), res.masks, res.boxes, res.class_names,
                                      res.scores.tolist()))
            bar.update(1)

        vr = predictor.predict_video(frames(), on_frame=on_frame)
    bar.close()
    if vr.num_frames == 0:
        raise CrossVISError(args.source, "no frames could be read")
    if args.json:
        write_tracks_json(vr, args.json, str(args.source), float(source.fps))
    print(f"wrote {args.output} ({vr.num_frames} frames, {len(vr.tracks)} tracks)"
          + (f" and {args.json}" if args.json else ""))
    print(f"end-to-end {vr.num_frames / vr.total_seconds:.1f} FPS (decode through encode), "
          f"model-only {vr.num_frames / max(vr.model_seconds, 1e-9):.1f} FPS on {predictor.device}")
    return 0


def write_tracks_json(vr, path: str | os.PathLike, source: str, fps: float) -> None:
    data = {"source": source, "fps": fps, "num_frames": vr.num_frames, "height": vr.height, "width": vr.width,
            "tracks": vr.tracks}
    with atomic_write(Path(path)) as f:
        json.dump(data, f)
