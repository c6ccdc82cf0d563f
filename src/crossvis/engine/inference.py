"""Inference loops: a dataset JSON -> official results file (one process or many with torchrun); any video,
stream or set of videos -> overlay mp4 + tracks as JSON Lines, written as the frames go through."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
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


def infer_videos(
    predictor: VideoPredictor, dataset: YTVISDataset, progress: bool = True, *, rank: int = 0, world: int = 1
) -> list[dict]:
    """The videos of ``dataset`` (every ``world``-th from ``rank``: this process's shard) -> entries of the
    official submission format, in dataset order (progress: overall and per video)."""
    results: list[dict] = []
    videos = dataset.videos[rank::world]
    bar = tqdm(videos, desc="videos", unit="video", disable=not progress)
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


def _init_distributed(device: str | None) -> tuple[int, int, str | None]:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPU) and pick this
    rank's GPU. Returns (rank, world size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return dist.get_rank(), dist.get_world_size(), device


def _gather_in_order(results: list[dict], dataset: YTVISDataset, world: int) -> list[dict] | None:
    """Every rank's shard -> rank 0 (None elsewhere), put back in dataset order: the same list one process
    would produce."""
    if world == 1:
        return results
    shards: list | None = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object(results, shards, dst=0)
    if shards is None:
        return None
    by_video: dict[int, list[dict]] = {}
    for shard in shards:
        for r in shard:
            by_video.setdefault(r["video_id"], []).append(r)
    return [r for v in dataset.videos for r in by_video.get(v.id, [])]


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

    ``weights`` may be an exported ``.onnx`` file; ``precision``: fp32, bf16 or fp16 (autocast).

    ``overrides`` (``key.sub=value``) are layered over the weights' (or ``config``'s) config. Tracks follow
    ``test.tracker.max_missed``: 0 (the default) is the official rule, tracks never end, so numbers stay
    comparable with published ones. Under ``torchrun`` each rank runs every world-size-th video and rank 0
    merges the shards in dataset order and writes the file (atomically): the same file as one process.

    Returns {"written": [paths], "tracks": n, "videos": n, "metrics": EvalResult or None, "rank": r}
    (rank > 0 writes nothing and returns an empty "written").
    """
    rank, world, device = _init_distributed(device)
    predictor = _predictor(weights, config, overrides, device, precision)
    ds = YTVISDataset(annotations, images)
    if not ds.videos:
        raise CrossVISError(annotations, "lists no videos: there is nothing to infer")
    if with_eval and not ds.has_annotations:
        raise CrossVISError(annotations, "--evaluate needs annotations in the JSON")
    missing = set(ds.category_ids) - set(predictor.category_ids)
    if missing and ds.has_annotations and rank == 0:
        log.warning("categories %s of %s are unknown to the weights", sorted(missing), annotations)
    if rank == 0:
        mm = predictor.tracker_cfg.max_missed
        log.info(
            "tracks never end (official CrossVIS rule; test.tracker.max_missed=N ends them)"
            if mm <= 0
            else f"tracks end after {mm} frames without a detection (test.tracker.max_missed={mm})"
        )
    shard = infer_videos(predictor, ds, progress=progress and rank == 0, rank=rank, world=world)
    results = _gather_in_order(shard, ds, world)
    if results is None:
        dist.destroy_process_group()
        return {"written": [], "tracks": 0, "videos": len(ds.videos), "metrics": None, "rank": rank}
    known = set(ds.category_ids)
    dropped = sum(1 for r in results if r["category_id"] not in known)
    results = [r for r in results if r["category_id"] in known]
    if dropped:
        log.warning("%d tracks of classes the dataset does not list were left out", dropped)
    written = write_results(results, output, zip_=zip_)
    metrics = evaluate(ds, results) if with_eval else None
    if world > 1:
        dist.destroy_process_group()
    return {
        "written": written,
        "tracks": len(results),
        "videos": len(ds.videos),
        "metrics": metrics,
        "rank": 0,
    }


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
    """A video file, URL, frame folder or webcam -> overlay mp4 (same frames and timestamps) and tracks as
    JSON Lines (:mod:`crossvis.engine.tracks_writer`), both written as the frames stream through.

    ``export_format`` (mots, mot, png, cvat, ytvis) also writes every track of a single video in that format
    to ``export_dir`` (default: ``output`` without its suffix + ``_<format>``), from the tracks file once the
    stream has ended. ``precision``: fp32, bf16 or fp16 (autocast); ``weights`` may be an ``.onnx`` file.

    Many videos at once: ``source`` may be a folder of videos, a glob or a ``.txt`` list; ``output`` is then a
    folder that receives ``<name>.mp4`` and ``<name>.tracks.jsonl`` per video (see :func:`predict_many`).
    Tracks end after ``test.tracker.max_missed`` frames without a detection (``stream_max_missed`` while that
    is 0). The overlay draws detections scored >= ``vis_threshold``; the tracks file holds every detection.

    Returns {"frames", "tracks", "skipped_frames", "fps_end_to_end", "fps_model", "device"} (and "videos",
    "done_before" for many videos; "export_dir" with ``export_format``).
    """
    from crossvis.engine.video_io import expand_sources

    many = expand_sources(str(source))
    if many is not None and json_path:
        raise CrossVISError(
            "--json", "with many videos the tracks go to <output>/<name>.tracks.jsonl: drop --json"
        )
    if many is not None and export_format:
        raise CrossVISError("--format", "exports one video at a time: run `export-results` per video")
    predictor = _predictor(weights, config, overrides, device, precision)
    if many is not None:
        return predict_many(
            predictor, many, output, max_frames=max_frames, progress=progress, vis_threshold=vis_threshold
        )
    from crossvis.engine.video_io import open_source

    src = open_source(source, folder_fps)
    bar = tqdm(total=_frame_total(src.count, max_frames), unit="frame", desc=src.name, disable=not progress)
    with contextlib.ExitStack() as stack:
        if export_format and not json_path:  # the export reads the tracks file back: a temporary one
            json_path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "tracks.jsonl"
        try:
            r = predict_stream(
                predictor, src, output, json_path, max_frames=max_frames, vis_threshold=vis_threshold, bar=bar
            )
        finally:
            bar.close()
        if r["frames"] == 0:
            raise CrossVISError(source, "no frames could be read")
        if export_format:
            r["export_dir"] = _export_tracks(
                predictor,
                json_path,
                fmt=export_format,
                name=Path(src.name).stem or "video",
                out_dir=export_dir or f"{Path(output).with_suffix('')}_{export_format}",
            )
    return r


def _export_tracks(
    predictor: VideoPredictor, tracks_file: Path, *, fmt: str, name: str, out_dir: str
) -> Path:
    """A finished stream's tracks file -> the tracks in an interop format (:mod:`crossvis.data.formats`)."""
    from crossvis.data.formats import export_video_tracks
    from crossvis.engine.tracks_writer import read_tracks_jsonl, video_tracks

    data = read_tracks_jsonl(tracks_file)
    return export_video_tracks(
        video_tracks(data),
        name=name,
        num_frames=data["end"]["num_frames"],
        height=data["video"]["height"],
        width=data["video"]["width"],
        categories=[{"id": int(c), "name": n} for c, n in zip(predictor.category_ids, predictor.class_names)],
        fmt=fmt,
        out_dir=out_dir,
    )


def _frame_total(count: int | None, max_frames: int) -> int | None:
    return count if not max_frames else min(max_frames, count or max_frames)


def predict_stream(
    predictor: VideoPredictor,
    src,
    output: str | os.PathLike,
    json_path: str | os.PathLike | None,
    *,
    max_frames: int = 0,
    vis_threshold: float = 0.5,
    bar=None,
) -> dict:
    """Run one opened :class:`~crossvis.engine.video_io.FrameSource` through detection, tracking, the overlay
    writer and the JSON Lines writer, one frame at a time (memory does not grow with the video's length).

    Both outputs appear atomically when the stream ends; on an error neither is left behind. A live source
    (webcam, URL) stopped with Ctrl-C ends like a finished stream."""
    from crossvis.engine.tracks_writer import TracksWriter
    from crossvis.engine.video_io import VideoWriter
    from crossvis.engine.visualize import draw_result

    tracker = predictor.new_tracker(stream=True)
    model_start, t0, n = predictor.model_seconds, time.perf_counter(), 0
    writer = VideoWriter(output, src.fps, time_base=src.time_base)
    tracks, ok = None, False
    try:
        if json_path:
            tracks = TracksWriter(
                json_path,
                source=src.name,
                fps=float(src.fps),
                class_names=predictor.class_names,
                category_ids=predictor.category_ids,
            )
        first_pts = None
        try:
            for n, (frame, pts) in enumerate(src.timed(), start=1):
                res = predictor.step(n - 1, frame, tracker)
                writer.write(draw_result(frame, res, vis_threshold), pts)
                if tracks is not None:
                    first_pts = pts if first_pts is None else first_pts
                    t = (
                        float((pts - first_pts) * src.time_base)
                        if pts is not None
                        else (n - 1) / float(src.fps)
                    )
                    tracks.frame(n - 1, t, res, frame.shape[:2])
                    tracks.finished(tracker.drain_finished())
                if bar is not None:
                    bar.update(1)
                if max_frames and n >= max_frames:
                    break
        except KeyboardInterrupt:
            if not src.live:
                raise
            log.warning("%s: interrupted; writing the %d frames read so far", src.name, n)
        if tracks is not None:
            tracks.finished(tracker.finish_all())
        ok = n > 0
    finally:
        try:
            if tracks is not None:
                tracks.close(ok, skipped_frames=src.stats.skipped)
        finally:
            writer.close(ok)
    warning = src.stats.summary(src.name)
    if warning:
        log.warning(warning)
    seconds = time.perf_counter() - t0
    return {
        "frames": n,
        "tracks": tracker.num_tracks,
        "skipped_frames": src.stats.skipped,
        "fps_end_to_end": n / max(seconds, 1e-9),
        "fps_model": n / max(predictor.model_seconds - model_start, 1e-9),
        "device": str(predictor.device),
    }


def _outputs_of(videos: list[Path], out_dir: Path) -> list[tuple[Path, Path]]:
    """(overlay, tracks) paths per video: ``<out>/<stem>.mp4`` and ``<out>/<stem>.tracks.jsonl``; two
    videos with one name are an error before anything runs."""
    seen: dict[str, Path] = {}
    for v in videos:
        if v.stem in seen:
            raise CrossVISError(v, f"has the same name as {seen[v.stem]}: outputs would collide")
        seen[v.stem] = v
    return [(out_dir / f"{v.stem}.mp4", out_dir / f"{v.stem}.tracks.jsonl") for v in videos]


def predict_many(
    predictor: VideoPredictor,
    videos: list[Path],
    output: str | os.PathLike,
    *,
    max_frames: int = 0,
    progress: bool = True,
    vis_threshold: float = 0.5,
) -> dict:
    """Each video -> ``<output>/<name>.mp4`` + ``<output>/<name>.tracks.jsonl``.

    Resumable: a video whose two outputs exist is skipped (outputs are written atomically, so existing ones
    are complete). A video that fails is reported in a warning and the others still run; the call then raises
    naming the failures. Shows one progress bar over all videos."""
    from crossvis.engine.video_io import open_source

    out_dir = Path(output)
    if out_dir.suffix.lower() == ".mp4":
        raise CrossVISError(output, "with many videos --output is a folder, not an .mp4 file")
    pairs = _outputs_of(videos, out_dir)
    todo = [(v, o, j) for v, (o, j) in zip(videos, pairs) if not (o.is_file() and j.is_file())]
    if len(todo) < len(videos):
        log.info(
            "%d of %d videos are done already (outputs exist): skipped", len(videos) - len(todo), len(videos)
        )
    total = {"frames": 0, "tracks": 0, "skipped_frames": 0, "model_s": 0.0}
    failed: list[str] = []
    t0, model0 = time.perf_counter(), predictor.model_seconds
    bar = tqdm(todo, desc="videos", unit="video", disable=not progress)
    for video, overlay, tracks in bar:
        try:
            r = predict_stream(
                predictor,
                open_source(video),
                overlay,
                tracks,
                max_frames=max_frames,
                vis_threshold=vis_threshold,
            )
            if r["frames"] == 0:
                raise CrossVISError(video, "no frames could be read")
        except CrossVISError as e:
            log.warning("%s: %s (skipped)", e.where, e.what)
            failed.append(str(video))
            continue
        for k in ("frames", "tracks", "skipped_frames"):
            total[k] += r[k]
        bar.set_postfix(frames=total["frames"])
    bar.close()
    if failed:
        raise CrossVISError(failed[0], f"{len(failed)} of {len(todo)} videos failed (see the warnings above)")
    seconds = time.perf_counter() - t0
    return {
        "videos": len(videos),
        "done_before": len(videos) - len(todo),
        "frames": total["frames"],
        "tracks": total["tracks"],
        "skipped_frames": total["skipped_frames"],
        "fps_end_to_end": total["frames"] / max(seconds, 1e-9),
        "fps_model": total["frames"] / max(predictor.model_seconds - model0, 1e-9),
        "device": str(predictor.device),
    }


def write_tracks_json(vr, path: str | os.PathLike, source: str, fps: float) -> None:
    """A whole-video :class:`~crossvis.engine.predictor.VideoResult` (a clip) as one JSON document."""
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
