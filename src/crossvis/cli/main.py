"""``crossvis`` command-line entry point.

Every subcommand parses its arguments and calls the Python API. Errors follow one convention:
a :class:`~crossvis.errors.CrossVISError` (or an OSError/MemoryError from the system) becomes
``crossvis: error: <where>: <what>`` on stderr and exit 2, printed after any progress bar is closed;
``--debug`` shows the traceback instead. Ctrl-C, SIGTERM and SIGHUP unwind the same way (temporary files are
removed, earlier outputs stay) and exit 128 + the signal number (130, 143, 129) with one line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading

from crossvis.errors import CrossVISError, Interrupted

#: `crossvis synth` appearance-change flags (crossvis.data.appearance.APPEARANCE_OPTIONS, kept import-free)
APPEARANCE_HELP = {
    "lighting_drift": "brightness, tint and light gradient drift over the clip",
    "color_drift": "each object's texture and colours drift",
    "deformation": "non-rigid outline wobble and squash/stretch",
    "motion_blur": "motion blur (masks at mid-exposure)",
    "entry_scale": "entering objects grow from small to full size",
    "lookalikes": "look-alike distractors: extra objects of a present class with close colours",
}

log = logging.getLogger("crossvis")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in the crossvis one-line format."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CrossVISError(self.prog, message)


def _common() -> argparse.ArgumentParser:
    """Options every subcommand accepts anywhere on its line (``crossvis train CFG a=1 -q``)."""
    p = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's absent flag must not reset one given before the subcommand
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def _add_weights(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--weights",
        required=required,
        help="a .safetensors file written by crossvis, or the name of a shipped weight set (synthetic-tiny)",
    )
    p.add_argument("--config", help="YAML config to override the weights' own config (optional)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def _add_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "fp16"),
        help="fp32 (default), or bf16/fp16 autocast (CPU bf16 units, CUDA AMP)",
    )


def _add_overrides(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help=f"config overrides {what}, key.sub=value"
    )


def build_parser() -> argparse.ArgumentParser:
    from crossvis import __version__
    from crossvis.cli import commands as c

    parser = _Parser(
        prog="crossvis",
        description="Fast online video instance segmentation (CrossVIS) in plain PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"crossvis {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    common = [_common()]

    p = sub.add_parser("synth", parents=common, help="generate a synthetic YouTube-VIS-format dataset")
    p.set_defaults(func=c.cmd_synth)
    p.add_argument("out_dir", help="output folder (JPEGImages/ and annotations.json are written there)")
    p.add_argument("--videos", type=int, default=60, help="number of videos (default 60)")
    p.add_argument(
        "--frames",
        type=int,
        default=12,
        help="frames per video; lengths vary around it (default 12; 1: still images)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=192)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--classes", type=int, default=5, help="number of object classes, 1-8 (default 5)")
    p.add_argument("--difficulty", type=float, default=1.0, help="0 easy .. 2 hard (default 1.0)")
    p.add_argument("--compressed-rle", action="store_true", help="write compressed (string) RLE")
    p.add_argument(
        "--appearance-change",
        type=float,
        nargs="?",
        const=1.0,
        default=0.0,
        metavar="STRENGTH",
        help="turn every appearance-change option on (strength 1 without a value; 0 = off, the default)",
    )
    for name, what in APPEARANCE_HELP.items():
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=float,
            metavar="STRENGTH",
            help=f"{what} (overrides --appearance-change)",
        )

    p = sub.add_parser("evaluate", parents=common, help="official YouTube-VIS AP of a results file")
    p.set_defaults(func=c.cmd_evaluate)
    p.add_argument("annotations", help="ground-truth JSON (YouTube-VIS format)")
    p.add_argument("results", help="results JSON (official submission format)")
    p.add_argument("--output", help="write the 12 stats (and per-category AP) as JSON")
    p.add_argument(
        "--metrics",
        default="ytvis",
        help="comma list: ytvis (official AP, default), hota (HOTA, DetA, AssA, LocA, IDF1, MOTA, IDSW via trackeval)",
    )
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.0,
        help="hota only: leave out results scored below this (default 0: all, as TrackEval's YouTube-VIS)",
    )
    p.add_argument("--per-video", action="store_true", help="print AP and identity switches per video")
    p.add_argument("--per-video-csv", metavar="FILE", help="write the per-video rows as CSV")
    p.add_argument(
        "--per-track-csv", metavar="FILE", help="write one row per GT track (matched frames, switches) as CSV"
    )

    p = sub.add_parser(
        "export-results",
        parents=common,
        help="write results (or annotations) as MOTS, MOT, DAVIS PNG, CVAT XML or normalised YouTube-VIS",
    )
    p.set_defaults(func=c.cmd_export_results)
    p.add_argument("results", help="results JSON (submission format), or a YouTube-VIS annotations JSON")
    p.add_argument(
        "--annotations", help="YouTube-VIS JSON with the videos (names, sizes, frame names) of RESULTS"
    )
    p.add_argument("--format", required=True, choices=["mots", "mot", "png", "cvat", "ytvis"])
    p.add_argument("--output", required=True, help="output folder (replaced atomically)")
    p.add_argument(
        "--cvat-shape",
        default="mask",
        choices=["mask", "polygon"],
        help="cvat: mask tracks (exact) or polygons",
    )

    p = sub.add_parser(
        "import", parents=common, help="convert a CVAT, DAVIS or MOTS export to YouTube-VIS JSON for training"
    )
    p.set_defaults(func=c.cmd_import)
    p.add_argument("source", help="CVAT XML/zip or folder of them, DAVIS PNG folder, or MOTS folder")
    p.add_argument("--format", required=True, choices=["cvat", "davis", "mots"])
    p.add_argument("--output", required=True, help="YouTube-VIS JSON to write")
    p.add_argument("--images", help="image root with <video>/<frame> files: frame names are taken from it")
    p.add_argument(
        "--categories",
        help="categories: a YouTube-VIS/COCO JSON, '1=cat,2=dog' or 'cat,dog'; names/ids in SOURCE must be among them",
    )

    p = sub.add_parser(
        "infer", parents=common, help="run a model over every video of a dataset JSON -> results file"
    )
    p.set_defaults(func=c.cmd_infer)
    _add_weights(p)
    p.add_argument("--annotations", required=True, help="dataset JSON (videos are read from it)")
    p.add_argument("--images", required=True, help="image root that file_names are relative to")
    p.add_argument("--output", required=True, help="results JSON to write")
    p.add_argument("--zip", action="store_true", help="also write the zip the evaluation servers accept")
    p.add_argument("--evaluate", action="store_true", help="evaluate when the JSON has annotations")
    _add_precision(p)
    _add_overrides(p, "on top of the weights' config (e.g. test.tracker.hungarian=true)")

    p = sub.add_parser(
        "predict", parents=common, help="segment and track a video file, frame folder or webcam"
    )
    p.set_defaults(func=c.cmd_predict)
    p.add_argument(
        "source",
        help="video file, stream URL (rtsp://, http://, file:), folder of frames, webcam index (0, 1, ...); "
        "or many videos: a folder of videos, a quoted glob ('clips/*.mp4') or a .txt list of paths",
    )
    _add_weights(p)
    p.add_argument(
        "--output",
        required=True,
        help="overlay video to write (.mp4); with many videos a folder (<name>.mp4 + <name>.tracks.jsonl each)",
    )
    p.add_argument("--json", help="also write the tracks as JSON Lines (one record per frame and per track)")
    p.add_argument(
        "--format",
        choices=["mots", "mot", "png", "cvat", "ytvis"],
        help="also write the tracks in this format",
    )
    p.add_argument("--format-output", help="folder for --format (default: OUTPUT without suffix + _FORMAT)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: all)")
    p.add_argument(
        "--fps", type=float, default=10.0, help="frame rate of a frame folder's video (default 10)"
    )
    p.add_argument(
        "--vis-threshold",
        type=float,
        default=0.5,
        help="draw detections scored at least this (default 0.5, as detectron2's demo); the JSON keeps all",
    )
    _add_precision(p)
    _add_overrides(p, "on top of the weights' config (e.g. model.fcos.inference_th_test=0.1)")

    p = sub.add_parser("train", parents=common, help="train a model from a YAML config")
    p.set_defaults(func=c.cmd_train)
    p.add_argument("config", help="YAML config file")
    p.add_argument("--output", help="output folder (default: the config's output_dir)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output")
    _add_overrides(p, "on top of the config file (e.g. solver.max_iter=20)")

    p = sub.add_parser(
        "demo",
        parents=common,
        help="run the shipped weights on a fresh synthetic clip (what `make demo` does)",
    )
    p.set_defaults(func=c.cmd_demo)
    p.add_argument("--output", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--weights", default="synthetic-tiny", help="weights to show (default: synthetic-tiny)")
    p.add_argument("--device", default=None)
    _add_overrides(p, "on top of the weights' config")

    p = sub.add_parser(
        "app", parents=common, help="a web page to try a model on your videos (needs crossvis[app])"
    )
    p.set_defaults(func=c.cmd_app)
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--weights", default="synthetic-tiny", help="weights to start with (default synthetic-tiny)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="largest upload in MB (default 200)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="longest clip in seconds (default 120)")
    p.add_argument("--max-frames", type=int, default=1500, help="most frames in a clip (default 1500)")

    p = sub.add_parser("benchmark", parents=common, help="measure model and end-to-end speed")
    p.set_defaults(func=c.cmd_benchmark)
    _add_weights(p, required=False)
    p.add_argument("--size", default="360x640", help="input HxW (default 360x640)")
    p.add_argument("--backbone", default="", help="time a builder (resnet50 ...) with random weights instead")
    p.add_argument("--iters", type=int, default=10, help="timed runs of each model (medians are reported)")
    _add_precision(p)
    p.add_argument(
        "--compare",
        action="store_true",
        help="also time torchvision Mask R-CNN and FCOS R50-FPN (random weights), interleaved",
    )
    p.add_argument(
        "--detections", type=int, default=100, help="detections per image of every model (default 100)"
    )
    p.add_argument("--stages", action="store_true", help="per-stage breakdown, FLOPs, roofline, memory")
    p.add_argument(
        "--onnx", nargs="+", help="also time these exported .onnx files (fp32 or --int8) with ONNX Runtime"
    )
    p.add_argument("--compile", action="store_true", help="also time torch.compile (reports compile cost)")
    p.add_argument("--json", help="write the figures as JSON")

    p = sub.add_parser(
        "export",
        parents=common,
        help="export weights (+config, class names) to one safetensors file, or the network to ONNX",
    )
    p.set_defaults(func=c.cmd_export)
    p.add_argument("checkpoint", help="a training checkpoint or weights file")
    p.add_argument("--output", required=True)
    p.add_argument(
        "--format",
        default="safetensors",
        choices=("safetensors", "onnx"),
        help="safetensors (default) or onnx (network + dynamic mask head, dynamic H and W; see docs/performance.md)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="onnx only: quantise the network to int8 for ONNX Runtime (approximate: measure its AP)",
    )
    p.add_argument(
        "--calibration", help="with --int8: a video or frame folder like your data (activation ranges)"
    )
    p.add_argument("--calibration-frames", type=int, default=32, help="with --int8: frames spread over it")

    p = sub.add_parser(
        "convert",
        parents=common,
        help="convert official CrossVIS/CondInst detectron2 checkpoints, or an MSRA ImageNet R-50/R-101.pkl",
    )
    p.set_defaults(func=c.cmd_convert)
    p.add_argument(
        "checkpoint", help="official .pth (detectron2 format) or MSRA .pkl (Caffe2 names; no code is run)"
    )
    p.add_argument("--output", required=True, help=".safetensors file to write")
    p.add_argument("--config", help="YAML config describing the architecture (default R-50)")

    p = sub.add_parser(
        "split", parents=common, help="split a training JSON into disjoint train/val parts by video"
    )
    p.set_defaults(func=c.cmd_split)
    p.add_argument("annotations", help="YouTube-VIS-format training JSON")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of videos for val (default 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, help="folder for train.json and val.json")
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse, letting ``key=value`` overrides stand anywhere after the subcommand (argparse takes one run of
    positionals only): stray overrides join ``args.overrides``; anything else is named as unrecognised."""
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if "=" in e and not e.startswith("-")]
    unknown = [e for e in extra if e not in stray]
    if stray and hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *stray]
    else:
        unknown = extra
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


_SIGNALS = ("SIGTERM", "SIGHUP")  # what `kill`, `timeout`, job schedulers and a closed terminal send


def _raise_interrupted(signum: int, frame) -> None:
    # A second signal while cleaning up stops at once (the default action) instead of interrupting cleanup.
    signal.signal(signum, signal.SIG_DFL)
    raise Interrupted(signum)


def _install_signal_handlers() -> dict:
    """SIGTERM/SIGHUP unwind like Ctrl-C (atomic writers remove their temporary files); returns the previous
    handlers. Only the main thread may set handlers (main() called from another thread keeps the defaults)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for name in _SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, _raise_interrupted)
    return previous


def _close_bars() -> None:
    """Close every open tqdm bar (innermost first) so that a message starts on a line of its own."""
    if "tqdm" not in sys.modules:
        return
    from tqdm import tqdm

    bars = sorted(list(getattr(tqdm, "_instances", ())), key=lambda b: -abs(getattr(b, "pos", 0)))
    for bar in bars:
        with contextlib.suppress(Exception):
            bar.close()
    with contextlib.suppress(Exception):
        sys.stderr.flush()


def _fail(where: object, what: str) -> int:
    _close_bars()
    what = " ".join(str(what).split()) or "failed"  # always one line
    print(f"crossvis: error: {where}: {what}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    previous = _install_signal_handlers()
    try:
        return _run(argv, debug)
    except CrossVISError as e:
        if debug:
            raise
        return _fail(e.where, e.what)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP turned into Interrupted
        _close_bars()
        signum = getattr(e, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        print(f"crossvis: interrupted ({name})", file=sys.stderr)
        return 128 + int(signum)
    except BrokenPipeError:  # output piped into `head` & co.: stop quietly (Python's documented recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # the system refused something (disk full, permissions, too many open files)
        if debug:
            raise
        return _fail(e.filename or "crossvis", e.strerror or str(e) or type(e).__name__)
    except MemoryError:
        if debug:
            raise
        return _fail("crossvis", "out of memory")
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if debug:
            raise
        _close_bars()
        msg = str(e).splitlines()[0] if str(e) else ""
        print(
            f"crossvis: internal error: {type(e).__name__}: {msg} (a bug: please report it with the output "
            "of --debug)",
            file=sys.stderr,
        )
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(argv: list[str], debug: bool) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    # crossvis logs progress at INFO; other libraries (ONNX Runtime's quantiser, ...) only their warnings
    logging.basicConfig(
        level=logging.WARNING, format="%(message)s" if not debug else "%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("crossvis").setLevel(logging.DEBUG if debug else logging.INFO)
    if args.quiet:  # the console shows warnings and errors; log files (train.log) keep everything
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.WARNING)
    if args.command is None:
        build_parser().print_help(sys.stderr)
        return 2
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
