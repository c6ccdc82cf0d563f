"""Subcommand handlers: parse -> call the Python API -> print. No logic lives here."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from crossvis.errors import CrossVISError
from crossvis.io import atomic_write

log = logging.getLogger("crossvis")


def _out(line: str = "") -> None:
    print(line, flush=True)


def cmd_synth(args: argparse.Namespace) -> int:
    from crossvis.data.appearance import APPEARANCE_OPTIONS, appearance_strengths
    from crossvis.data.synthetic import SynthParams, generate

    strengths = appearance_strengths(
        args.appearance_change, {k: getattr(args, k) for k in APPEARANCE_OPTIONS}
    )
    p = SynthParams(
        videos=args.videos,
        frames=args.frames,
        seed=args.seed,
        height=args.height,
        width=args.width,
        num_classes=args.classes,
        difficulty=args.difficulty,
        compressed_rle=args.compressed_rle,
        **strengths,
    )
    s = generate(args.out_dir, p)
    _out(f"wrote {args.out_dir}/annotations.json and {s['frames']} frames in {args.out_dir}/JPEGImages")
    _out(f"categories ({len(s['categories'])}): {', '.join(s['categories'])}")
    _out(
        f"identities: {s['identities']}  videos: {s['videos']}  instances/video: {s['instances_per_video']:.2f}  "
        f"entering late or returning: {100 * s['late_or_returning_fraction']:.0f}%"
    )
    for v in s["per_video"][:10]:
        _out(
            f"  video {v['video']:4d}: {v['frames']:3d} frames {v['size'][0]}x{v['size'][1]}, "
            f"{v['instances']} instances ({v['late_or_returning']} late/returning)"
        )
    if len(s["per_video"]) > 10:
        _out(f"  ... {len(s['per_video']) - 10} more videos")
    return 0


def print_metrics(result) -> None:
    from crossvis.evaluation.report import format_metrics

    _out(format_metrics(result))


def write_metrics(result, path: str) -> None:
    with atomic_write(path) as f:
        json.dump(result.to_dict(), f, indent=1)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from crossvis.evaluation.suite import evaluate_report, parse_metrics

    report = evaluate_report(
        args.annotations,
        args.results,
        metrics=parse_metrics(args.metrics),
        per_video=args.per_video or bool(args.per_video_csv),
        per_track=bool(args.per_track_csv),
        score_threshold=args.score_threshold,
    )
    _out(report.text(per_video=args.per_video))
    if args.output:
        with atomic_write(args.output) as f:
            json.dump(report.to_dict(), f, indent=1)
        _out(f"wrote {args.output}")
    if args.per_video_csv:
        report.write_per_video_csv(args.per_video_csv)
        _out(f"wrote {args.per_video_csv}")
    if args.per_track_csv:
        report.write_per_track_csv(args.per_track_csv)
        _out(f"wrote {args.per_track_csv}")
    return 0


def cmd_export_results(args: argparse.Namespace) -> int:
    from crossvis.data.formats import export_results

    r = export_results(args.results, args.annotations, args.format, args.output, cvat_shape=args.cvat_shape)
    _out(f"wrote {r['out_dir']} ({args.format}: {r['videos']} videos, {r['tracks']} tracks)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from crossvis.data.formats import import_annotations

    d = import_annotations(
        args.source, args.format, output=args.output, images=args.images, categories=args.categories
    )
    _out(
        f"wrote {args.output} ({len(d['videos'])} videos, {len(d['annotations'])} tracks, "
        f"categories: {', '.join(c['name'] for c in d['categories'])})"
    )
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from crossvis.engine.inference import infer_dataset

    r = infer_dataset(
        args.weights,
        args.annotations,
        args.images,
        args.output,
        zip_=args.zip,
        with_eval=args.evaluate,
        config=args.config,
        overrides=args.overrides,
        device=args.device,
        progress=not args.quiet,
        precision=args.precision,
    )
    if r["rank"] > 0:  # torchrun: rank 0 writes and reports
        return 0
    _out(f"wrote {', '.join(map(str, r['written']))} ({r['tracks']} tracks, {r['videos']} videos)")
    if r["metrics"] is not None:
        print_metrics(r["metrics"])
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from crossvis.engine.inference import predict_source

    r = predict_source(
        args.source,
        args.weights,
        args.output,
        json_path=args.json,
        config=args.config,
        overrides=args.overrides,
        device=args.device,
        max_frames=args.max_frames,
        progress=not args.quiet,
        vis_threshold=args.vis_threshold,
        folder_fps=args.fps,
        export_format=args.format,
        export_dir=args.format_output,
        precision=args.precision,
    )
    if "videos" in r:
        _out(
            f"wrote {str(args.output).rstrip('/')}/ ({r['videos'] - r['done_before']} videos, {r['frames']} frames, "
            f"{r['tracks']} tracks; {r['done_before']} done before)"
        )
    else:
        _out(
            f"wrote {args.output} ({r['frames']} frames, {r['tracks']} tracks)"
            + (f" and {args.json}" if args.json else "")
            + (f" and {r['export_dir']} ({args.format})" if args.format else "")
        )
    if r["skipped_frames"]:
        _out(f"skipped {r['skipped_frames']} undecodable or corrupt frame(s) (see the warning above)")
    if r["frames"]:
        _out(
            f"end-to-end {r['fps_end_to_end']:.1f} FPS (decode through encode), model-only {r['fps_model']:.1f} FPS "
            f"on {r['device']}"
        )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import os

    import torch.distributed as dist

    from crossvis.config import load_config, resolve_config_path
    from crossvis.engine.trainer import train

    cfg = load_config(resolve_config_path(args.config), args.overrides)
    os.environ.setdefault(
        "CROSSVIS_COMMAND",
        " ".join(
            [
                "crossvis train",
                args.config,
                *(["--output", args.output] if args.output else []),
                *args.overrides,
            ]
        ),
    )
    final = train(cfg, args.output, resume=args.resume, progress=not args.quiet)
    if not dist.is_initialized() or dist.get_rank() == 0:
        _out(f"wrote {final}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from crossvis.engine.demo import run_demo

    for line in run_demo(args.output, device=args.device, weights=args.weights, overrides=args.overrides):
        _out(line)
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from crossvis.app import AppLimits, launch

    limits = AppLimits(
        max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds, max_frames=args.max_frames
    )
    launch(args.weights, host=args.host, port=args.port, device=args.device, limits=limits, quiet=args.quiet)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from crossvis.engine.benchmark import run_benchmark

    for line in run_benchmark(
        args.weights,
        size=args.size,
        backbone=args.backbone,
        iters=args.iters,
        device=args.device,
        precision=args.precision,
        compare=args.compare,
        detections=args.detections,
        stages=args.stages,
        onnx=args.onnx,
        compile_=args.compile,
        json_path=args.json,
    ):
        _out(line)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.int8 and args.format != "onnx":
        raise CrossVISError("--int8", "int8 quantisation is for --format onnx")
    if args.int8 and not args.calibration:
        raise CrossVISError(
            "--int8", "needs --calibration VIDEO_OR_FOLDER (frames like the ones you will run on)"
        )
    if args.format == "onnx":
        from crossvis.engine.onnx_export import export_onnx

        export_onnx(
            args.checkpoint,
            args.output,
            int8_calibration=args.calibration if args.int8 else None,
            calibration_frames=args.calibration_frames,
        )
        _out(f"wrote {args.output}")
        return 0
    from crossvis.engine.checkpoint import export_weights

    export_weights(args.checkpoint, args.output)
    _out(f"wrote {args.output}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from crossvis.engine.checkpoint import convert_official

    convert_official(args.checkpoint, args.output, args.config)
    _out(f"wrote {args.output}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from crossvis.data.split import split_dataset

    r = split_dataset(args.annotations, val_fraction=args.val_fraction, seed=args.seed, output=args.output)
    _out(f"wrote {r.train} ({r.train_videos} videos) and {r.val} ({r.val_videos} videos)")
    if r.train_only:
        _out(f"classes only in train (a single video): {', '.join(r.train_only)}")
    return 0


__all__ = [name for name in dir(sys.modules[__name__]) if name.startswith("cmd_")]
