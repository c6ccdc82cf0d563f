"""Inference loops: a dataset JSON -> official results file; any video -> overlay mp4 + tracks JSON."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from crossvis.config import load_config, resolve_config_path
from crossvis.data.ytvis import YTVISDataset
from crossvis.engine.predictor import VideoPredictor
from crossvis.errors import CrossVISError
from crossvis.evaluation import evaluate, write_results
from crossvis.io import atomic_write

log = logging.getLogger(__name__)


def _predictor(
    weights: str,
    config: str | None,
    overrides: list[str] | None,
    device: str | None,
    precision: str = "fp32",
) -> VideoPredictor:
    cfg = load_config(resolve_config_path(config)) if config else None
    return VideoPredictor.from_weights(
        weights, device=device, config=cfg, overrides=overrides, precision=precision
    )


def infer_videos(predictor: VideoPredictor, dataset: YTVISDataset, progress: bool = True) -> list[dict]:
    """Every video of ``dataset`` -> entries of the official submission format (progress: overall and per
    video)."""
    results: list[dict] = []
    bar = tqdm(dataset.videos, desc="videos", unit="video", disable=not progress)
    for video in bar:
        frames = tqdm(
            (dataset.load_image(video, f) for f in range(video.length)),
            total=video.length,
            desc=f"video {video.id}",
            unit="frame",
            leave=False,
            disable=not progress,
        )
        vr = predictor.predict_video(frames)
        results.extend(vr.to_results(video.id))
        bar.set_postfix(tracks=len(vr.tracks), fps=f"{vr.num_frames / max(vr.total_seconds, 1e-9):.1f}")
    return results


def infer_dataset(
    weights: str,
    annotations: str,
    images: str,
    output: str,
    *,
    zip_: bool = False,
    with_eval: bool = False,
    config: str | None = None,
    overrides: list[str] | None = None,
    device: str | None = None,
    progress: bool = True,
    precision: str = "fp32",
) -> dict:
    """Every video of a dataset JSON -> the official results file (and zip); optionally evaluate it.

    ``overrides`` (``key.sub=value``) are layered over the weights' (or ``config``'s) config.
    ``weights`` may be an exported ``.onnx`` file; ``precision``: fp32, bf16 or fp16 (autocast).

    Returns {"written": [paths], "tracks": n, "videos": n, "metrics": EvalResult or None}.
    """
    predictor = _predictor(weights, config, overrides, device, precision)
    ds = YTVISDataset(annotations, images)
    if not ds.videos:
        raise CrossVISError(annotations, "lists no videos: there is nothing to infer")
    if with_eval and not ds.has_annotations:
        raise CrossVISError(annotations, "--evaluate needs annotations in the JSON")
    missing = set(ds.category_ids) - set(predictor.category_ids)
    if missing and ds.has_annotations:
        log.warning("categories %s of %s are unknown to the weights", sorted(missing), annotations)
    results = infer_videos(predictor, ds, progress=progress)
    known = set(ds.category_ids)
    dropped = sum(1 for r in results if r["category_id"] not in known)
    results = [r for r in results if r["category_id"] in known]
    if dropped:
        log.warning("%d tracks of classes the dataset does not list were left out", dropped)
    written = write_results(results, output, zip_=zip_)
    metrics = evaluate(ds, results) if with_eval else None
    return {"written": written, "tracks": len(results), "videos": len(ds.videos), "metrics": metrics}


def predict_source(
    source: str,
    weights: str,
    output: str,
    *,
    json_path: str | None = None,
    config: str | None = None,
    overrides: list[str] | None = None,
    device: str | None = None,
    max_frames: int = 0,
    progress: bool = True,
    vis_threshold: float = 0.5,
    folder_fps: float = 10.0,
    export_format: str | None = None,
    export_dir: str | None = None,
    precision: str = "fp32",
) -> dict:
    """A video file, frame folder or webcam -> overlay mp4 (same frame rate and count) and tracks JSON.

    The overlay draws detections scored >= ``vis_threshold``; the tracks JSON holds every track.
    ``export_format`` (mots, mot, png, cvat, ytvis) also writes every track in that format to ``export_dir``
    (default: ``output`` without its suffix + ``_<format>``).

    Returns {"frames", "tracks", "fps_end_to_end", "fps_model", "device", "export_dir"}.
    """
    from crossvis.engine.video_io import VideoWriter, open_source
    from crossvis.engine.visualize import draw_result

    predictor = _predictor(weights, config, overrides, device, precision)
    src = open_source(source, folder_fps)
    limit = max_frames or None

    def frames():
        for i, f in enumerate(src):
            if limit is not None and i >= limit:
                return
            yield f

    total = src.count if limit is None else min(limit, src.count or limit)
    bar = tqdm(total=total, unit="frame", desc=src.name, disable=not progress)
    with VideoWriter(output, src.fps) as writer:

        def on_frame(frame: np.ndarray, res) -> None:
            writer.write(draw_result(frame, res, vis_threshold))
            bar.update(1)

        vr = predictor.predict_video(frames(), on_frame=on_frame)
        if vr.num_frames == 0:
            raise CrossVISError(source, "no frames could be read")
    bar.close()
    if json_path:
        write_tracks_json(vr, json_path, str(source), float(src.fps))
    if export_format:  # the tracks in an interop format (crossvis.data.formats)
        from crossvis.data.formats import export_video_tracks

        export_dir = export_video_tracks(
            vr.tracks,
            name=Path(src.name).stem or "video",
            num_frames=vr.num_frames,
            height=vr.height,
            width=vr.width,
            categories=[
                {"id": int(c), "name": n} for c, n in zip(predictor.category_ids, predictor.class_names)
            ],
            fmt=export_format,
            out_dir=export_dir or f"{Path(output).with_suffix('')}_{export_format}",
        )
    return {
        "export_dir": export_dir,
        "frames": vr.num_frames,
        "tracks": len(vr.tracks),
        "fps_end_to_end": vr.num_frames / vr.total_seconds,
        "fps_model": vr.num_frames / max(vr.model_seconds, 1e-9),
        "device": str(predictor.device),
    }


def write_tracks_json(vr, path: str | os.PathLike, source: str, fps: float) -> None:
    data = {
        "source": source,
        "fps": fps,
        "num_frames": vr.num_frames,
        "height": vr.height,
        "width": vr.width,
        "tracks": vr.tracks,
    }
    with atomic_write(Path(path)) as f:
        json.dump(data, f)
