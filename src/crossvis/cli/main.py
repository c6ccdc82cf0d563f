"""``crossvis`` command-line entry point.

Every subcommand parses its arguments and calls the Python API. Errors follow one convention:
a :class:`~crossvis.errors.CrossVISError` becomes ``crossvis: error: <where>: <what>`` on stderr and exit 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from crossvis.errors import CrossVISError

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
        "--frames", type=int, default=12, help="frames per video; lengths vary around it (default 12)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=192)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--classes", type=int, default=5, help="number of object classes, 1-8 (default 5)")
    p.add_argument("--difficulty", type=float, default=1.0, help="0 easy .. 2 hard (default 1.0)")
    p.add_argument("--compressed-rle", action="store_true", help="write compressed (string) RLE")

    p = sub.add_parser("evaluate", parents=common, help="official YouTube-VIS AP of a results file")
    p.set_defaults(func=c.cmd_evaluate)
    p.add_argument("annotations", help="ground-truth JSON (YouTube-VIS format)")
    p.add_argument("results", help="results JSON (official submission format)")
    p.add_argument("--output", help="write the 12 stats (and per-category AP) as JSON")

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

    p = sub.add_parser("benchmark", parents=common, help="measure model and end-to-end speed")
    p.set_defaults(func=c.cmd_benchmark)
    _add_weights(p, required=False)
    p.add_argument("--size", default="360x640", help="input HxW (default 360x640)")
    p.add_argument("--backbone", default="", help="time a builder (resnet50 ...) with random weights instead")
    p.add_argument("--iters", type=int, default=10)

    p = sub.add_parser(
        "export", parents=common, help="export weights (+config, class names) to one safetensors file"
    )
    p.set_defaults(func=c.cmd_export)
    p.add_argument("checkpoint", help="a training checkpoint or weights file")
    p.add_argument("--output", required=True)

    p = sub.add_parser(
        "convert", parents=common, help="convert official CrossVIS/CondInst detectron2 checkpoints"
    )
    p.set_defaults(func=c.cmd_convert)
    p.add_argument("checkpoint", help="official .pth (detectron2 format)")
    p.add_argument("--output", required=True, help=".safetensors file to write")
    p.add_argument("--config", help="YAML config describing the architecture (default R-50)")
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = _parse(parser, argv)
        logging.basicConfig(
            level=logging.INFO, format="%(message)s" if not debug else "%(levelname)s %(name)s: %(message)s"
        )
        if args.quiet:  # the console shows warnings and errors; log files (train.log) keep everything
            for handler in logging.getLogger().handlers:
                handler.setLevel(logging.WARNING)
        if args.command is None:
            build_parser().print_help(sys.stderr)
            return 2
        return args.func(args) or 0
    except CrossVISError as e:
        if debug:
            raise
        print(f"crossvis: error: {e.where}: {e.what}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crossvis: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` & co.: stop quietly (Python's documented recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(
            f"crossvis: error: {type(e).__name__}: {msg} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
