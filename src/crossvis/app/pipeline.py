"""One clip through the model for the app: overlay video, contact sheet, tracks table and timeline, tracks JSON,
results file and zip, and (with annotations) the official metrics. No Gradio in here: it is plain Python,
testable on its own."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from crossvis.app.timeline import draw_timeline, track_rows
from crossvis.app.uploads import AppLimits, check_size
from crossvis.data.synthetic import SynthParams, generate
from crossvis.data.ytvis import Video, YTVISDataset
from crossvis.engine.inference import write_tracks_json
from crossvis.engine.predictor import VideoPredictor, VideoResult
from crossvis.engine.video_io import FrameSource, VideoWriter
from crossvis.engine.visualize import contact_sheet, draw_result
from crossvis.errors import CrossVISError
from crossvis.evaluation import EvalResult, evaluate, write_results
from crossvis.evaluation.report import format_metrics
from crossvis.io import atomic_path

SAMPLE_FPS = 6.0
SAMPLE_FRAMES = 24

ProgressFn = Callable[[int, int | None], None]  # (frames done, total frames or None)


@dataclass
class ClipOutputs:
    """What the page shows for one clip; paths are inside the run's folder."""

    overlay: Path
    contact_sheet: Path
    timeline: Path
    tracks_json: Path
    results: list[Path]  # results.json (official submission format) and results.zip
    rows: list[list]  # the tracks table (timeline.TRACK_COLUMNS)
    num_frames: int
    fps: float
    metrics: EvalResult | None
    summary: str


def load_annotations(path: Path, limits: AppLimits) -> YTVISDataset:
    """A YouTube-VIS-format annotations JSON of the one video that is uploaded with it."""
    name = path.name
    check_size(path, limits, name)
    ds = YTVISDataset(path)
    if not ds.has_annotations:
        raise CrossVISError(name, "has no 'annotations': it cannot be used as ground truth")
    if len(ds.videos) != 1:
        raise CrossVISError(name, f"describes {len(ds.videos)} videos; the app evaluates one clip at a time")
    return ds


def sample_clip(out_dir: Path, predictor: VideoPredictor, seed: int) -> tuple[Path, Path]:
    """A fresh synthetic clip like those the weights were validated on -> (frame folder, annotations JSON)."""
    base = predictor.cfg.data.synth_val or predictor.cfg.data.synth_train or SynthParams()
    generate(out_dir, replace(base, videos=1, frames=SAMPLE_FRAMES, seed=seed))
    ds = YTVISDataset(out_dir / "annotations.json")
    return out_dir / "JPEGImages" / Path(ds.videos[0].file_names[0]).parent, out_dir / "annotations.json"


class _Thumbnails:
    """Small copies of every ``step``-th overlay frame, at most ``keep`` of them; the step doubles as the video
    grows, so memory stays flat for any length."""

    def __init__(self, keep: int = 16, width: int = 256) -> None:
        self.keep, self.width, self.step = keep, width, 1
        self.items: list[tuple[int, np.ndarray]] = []

    def add(self, index: int, frame: np.ndarray) -> None:
        if index % self.step:
            return
        im = Image.fromarray(frame)
        im = im.resize((self.width, max(1, round(im.height * self.width / im.width))))
        self.items.append((index, np.asarray(im)))
        if len(self.items) > self.keep:
            self.step *= 2
            self.items = [(i, t) for i, t in self.items if i % self.step == 0]

    def pick(self, n: int = 8) -> list[np.ndarray]:
        idx = np.linspace(0, len(self.items) - 1, min(n, len(self.items))).round().astype(int)
        return [self.items[i][1] for i in sorted(set(idx.tolist()))]


def _check_against(video: Video, frame: np.ndarray, name: str) -> None:
    if frame.shape[:2] != (video.height, video.width):
        raise CrossVISError(
            name,
            f"the annotations are for a {video.width}x{video.height} video, the clip's frames are "
            f"{frame.shape[1]}x{frame.shape[0]}",
        )


def _track_video(
    predictor: VideoPredictor,
    source: FrameSource,
    out: Path,
    *,
    vis_threshold: float,
    video: Video | None,
    progress: ProgressFn | None,
) -> tuple[VideoResult, _Thumbnails]:
    thumbs = _Thumbnails()
    with VideoWriter(out / "overlay.mp4", source.fps) as writer:

        def on_frame(frame: np.ndarray, res) -> None:
            if res.index == 0 and video is not None:
                _check_against(video, frame, source.name)
            overlay = draw_result(frame, res, vis_threshold)
            writer.write(overlay)
            thumbs.add(res.index, overlay)
            if progress is not None:
                progress(res.index + 1, source.count)

        vr = predictor.predict_video(source, on_frame=on_frame)
        if vr.num_frames == 0:
            raise CrossVISError(source.name, "no frames could be read")
    return vr, thumbs


def _evaluate(ds: YTVISDataset, results: list[dict], num_frames: int, name: str) -> EvalResult:
    video = ds.videos[0]
    if num_frames != video.length:
        raise CrossVISError(name, f"{num_frames} frames, but the annotations describe {video.length}")
    known = set(ds.category_ids)
    return evaluate(ds, [r for r in results if r["category_id"] in known])


def run_clip(
    predictor: VideoPredictor,
    source: FrameSource,
    out: Path,
    *,
    vis_threshold: float = 0.5,
    annotations: YTVISDataset | None = None,
    progress: ProgressFn | None = None,
) -> ClipOutputs:
    """Segment and track ``source`` and write every output into the folder ``out``.

    The overlay draws tracks scored >= ``vis_threshold``; tracks.json and the results file keep every track.
    Results carry the annotations' video id (1 without annotations).
    """
    video = annotations.videos[0] if annotations is not None else None
    if video is not None and source.count is not None and source.count != video.length:
        raise CrossVISError(
            source.name, f"{source.count} frames, but the annotations describe {video.length}"
        )
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    vr, thumbs = _track_video(
        predictor, source, out, vis_threshold=vis_threshold, video=video, progress=progress
    )
    seconds = time.perf_counter() - t0
    with atomic_path(out / "contact_sheet.png") as tmp:
        contact_sheet(thumbs.pick(8), columns=4, width=256).save(tmp, format="PNG")
    with atomic_path(out / "timeline.png") as tmp:
        draw_timeline(vr.tracks, vr.num_frames).save(tmp, format="PNG")
    write_tracks_json(vr, out / "tracks.json", source.name, float(source.fps))
    results = vr.to_results(video.id if video is not None else 1)
    written = write_results(results, out / "results.json", zip_=True)
    metrics = _evaluate(annotations, results, vr.num_frames, source.name) if annotations else None
    summary = (
        f"{vr.num_frames} frames at {float(source.fps):g} fps, {len(vr.tracks)} tracks; "
        f"{vr.num_frames / max(seconds, 1e-9):.1f} frames/s end to end on {predictor.device}"
    )
    return ClipOutputs(
        overlay=out / "overlay.mp4",
        contact_sheet=out / "contact_sheet.png",
        timeline=out / "timeline.png",
        tracks_json=out / "tracks.json",
        results=written,
        rows=track_rows(vr.tracks),
        num_frames=vr.num_frames,
        fps=float(source.fps),
        metrics=metrics,
        summary=summary,
    )


def metrics_text(metrics: EvalResult | None) -> str:
    if metrics is None:
        return "Give an annotations JSON of the clip (YouTube-VIS format) to see AP and identity switches."
    return "Official YouTube-VIS metrics of this clip (%):\n" + format_metrics(metrics, per_category=True)
