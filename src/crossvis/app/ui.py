"""The Gradio page. Processing lives in :mod:`crossvis.app.pipeline`; this file lays out the page, turns every
error into a readable message in it, and keeps the server's footprint small: it binds 127.0.0.1 by default,
serves only the files it returns (Gradio copies them into its cache; no folder is added to ``allowed_paths``),
and removes its working files (old runs while serving, everything at exit; Gradio's cache via
``delete_cache``)."""

from __future__ import annotations

import atexit
import html
import logging
import secrets
import shutil
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path

import gradio as gr

from crossvis.app.pipeline import (
    SAMPLE_FPS,
    ClipOutputs,
    load_annotations,
    metrics_text,
    run_clip,
    sample_clip,
)
from crossvis.app.timeline import TRACK_COLUMNS
from crossvis.app.uploads import MB, VIDEO_EXTS, AppLimits, limited, open_upload
from crossvis.engine.predictor import VideoPredictor
from crossvis.engine.video_io import open_source
from crossvis.errors import CrossVISError
from crossvis.modeling.weights import SHIPPED

log = logging.getLogger(__name__)

TRACKER_FIELDS = [
    "match_threshold",
    "memory_momentum",
    "max_missed",
    "min_new_score",
    "hungarian",
    "use_embedding",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def load_predictor(weights: str, device: str | None) -> VideoPredictor:
    """``VideoPredictor.from_weights``, with a clear word for weight formats this version cannot run."""
    try:
        return VideoPredictor.from_weights(weights, device=device)
    except CrossVISError:
        if Path(weights).suffix.lower() == ".onnx" and Path(weights).is_file():
            raise CrossVISError(
                Path(weights).name,
                "ONNX weights are not supported by this crossvis version: use a .safetensors file "
                "(`crossvis export`)",
            ) from None
        raise


def _page_error(message: str) -> gr.Error:
    """An error shown in the page until closed (Gradio renders it as HTML, so it is escaped)."""
    return gr.Error(html.escape(message), duration=None, print_exception=False)


def _readable(e: CrossVISError, paths: dict[str, str]) -> str:
    """``where: what`` with server-side paths replaced by the names the visitor knows."""
    text = f"{e.where}: {e.what}"
    for path, name in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(path, name)
    return text


class Runner:
    """Loaded predictors (the starting weights and up to ``MAX_EXTRA_WEIGHTS`` others, least recently used
    dropped first) and run folders: the newest ``keep_runs`` finished runs are kept while serving (a run in
    progress is never removed), and the whole working folder is removed when the process exits."""

    MAX_EXTRA_WEIGHTS = 2

    def __init__(self, weights: str, device: str | None, limits: AppLimits, keep_runs: int) -> None:
        self.device, self.limits, self.keep_runs = device, limits, max(1, keep_runs)
        self.root = Path(tempfile.mkdtemp(prefix="crossvis-app-"))
        atexit.register(shutil.rmtree, self.root, True)
        self._lock = threading.Lock()
        self._predictors: dict[str, VideoPredictor] = {}  # insertion order = least recently used first
        self._active: set[Path] = set()
        self.default_weights = weights
        self.default = self.predictor(weights)

    def predictor(self, weights: str | None) -> VideoPredictor:
        key = (weights or "").strip() or self.default_weights
        with self._lock:
            predictor = self._predictors.pop(key, None) or load_predictor(key, self.device)
            self._predictors[key] = predictor
            extra = [k for k in self._predictors if k != self.default_weights]
            for k in extra[: max(0, len(extra) - self.MAX_EXTRA_WEIGHTS)]:
                del self._predictors[k]
            return predictor

    def new_run(self) -> Path:
        with self._lock:
            runs = sorted(
                (p for p in self.root.glob("run-*") if p not in self._active), key=lambda p: p.stat().st_mtime
            )
            for old in runs[: max(0, len(runs) - self.keep_runs + 1)]:
                shutil.rmtree(old, ignore_errors=True)
            run = self.root / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
            run.mkdir()
            self._active.add(run)
            return run

    def _finish(self, run: Path) -> None:
        for scratch in ("frames", "sample"):  # inputs, not outputs: gone as soon as the clip is done
            shutil.rmtree(run / scratch, ignore_errors=True)
        with self._lock:
            self._active.discard(run)

    def process(
        self,
        upload: str | None,
        annotations: str | None,
        *,
        sample: bool,
        weights: str,
        threshold: float,
        folder_fps: float,
        tracker: dict,
        progress: gr.Progress,
    ) -> ClipOutputs:
        """One request: an upload (or a fresh sample clip) -> the outputs; errors become ``gr.Error``."""
        run = self.new_run()
        paths = {str(run): "", **{p: Path(p).name for p in (upload, annotations) if p}}
        try:
            predictor = self.predictor(weights).with_tracker(**_tracker_changes(tracker))
            if sample:
                progress(0, desc="generating a sample clip")
                folder, ann = sample_clip(run / "sample", predictor, seed=secrets.randbelow(2**31))
                ds = load_annotations(ann, self.limits)
                source = limited(open_source(folder, SAMPLE_FPS), self.limits, "sample clip")
            else:
                if not upload:
                    raise CrossVISError(
                        "input", "upload a video or a zip of frames first (or try a sample clip)"
                    )
                if not folder_fps or folder_fps <= 0:
                    raise CrossVISError("frame rate of a zip of frames", "must be positive")
                ds = load_annotations(Path(annotations), self.limits) if annotations else None
                progress(0, desc="reading the upload")
                source = open_upload(Path(upload), run, self.limits, folder_fps=folder_fps)

            def on_progress(done: int, total: int | None) -> None:
                progress((done, total), desc="segmenting and tracking", unit="frames")

            return run_clip(
                predictor, source, run / "out", vis_threshold=threshold, annotations=ds, progress=on_progress
            )
        except CrossVISError as e:
            log.warning("crossvis app: %s", _readable(e, paths))
            raise _page_error(_readable(e, paths)) from None
        except Exception as e:  # noqa: BLE001 - the page shows one line; the log keeps the traceback
            log.exception("crossvis app: processing failed")
            raise _page_error(
                f"processing failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            ) from None
        finally:
            self._finish(run)


def _tracker_changes(values: dict) -> dict:
    out = {}
    for key, value in values.items():
        if key in ("hungarian", "use_embedding"):
            out[key] = bool(value)
        elif key == "max_missed":
            out[key] = max(0, int(value or 0))
        else:
            out[key] = float(value or 0.0)
    return out


def _page_outputs(out: ClipOutputs) -> tuple:
    summary = f"**{out.summary}**"
    if out.metrics is not None:
        m = out.metrics
        summary += f"  \nAP {100 * m.stats['AP']:.1f}, identity switches {m.identity.get('id_switches', '-')}"
    return (
        summary,
        str(out.overlay),
        str(out.contact_sheet),
        {"headers": TRACK_COLUMNS, "data": out.rows},
        str(out.timeline),
        metrics_text(out.metrics),
        [str(out.tracks_json), *map(str, out.results)],
    )


INTRO = """# crossvis: segment and track objects in a video
Upload a video (or a zip of its frames), or try a fresh synthetic sample clip. The page shows every instance's
mask in a colour fixed by its track id, the tracks found, and with an annotations JSON of the clip the official
YouTube-VIS AP and identity switches. Everything runs on this machine; nothing is uploaded elsewhere."""


def _input_controls(runner: Runner, limits: AppLimits) -> dict:
    t = runner.default.tracker_cfg
    c = {}
    c["upload"] = gr.File(
        label=f"Video or zip of frames (up to {limits.max_upload_mb:g} MB, {limits.max_seconds:g} s, "
        f"{limits.max_frames} frames)",
        file_types=sorted(VIDEO_EXTS | {".zip"}),
        elem_id="upload",
    )
    c["annotations"] = gr.File(
        label="Annotations JSON of the clip (optional, YouTube-VIS format): adds AP and identity switches",
        file_types=[".json"],
        elem_id="annotations",
    )
    with gr.Row():
        c["run"] = gr.Button("Segment and track", variant="primary", elem_id="run")
        c["sample"] = gr.Button("Try a sample clip", elem_id="sample")
    c["weights"] = gr.Dropdown(
        choices=sorted({*SHIPPED, runner.default_weights}),
        value=runner.default_weights,
        allow_custom_value=True,
        label="Weights: a shipped name or a .safetensors path on this machine",
    )
    c["threshold"] = gr.Slider(
        0.0, 1.0, 0.5, step=0.05, label="Display threshold (the files keep every track)"
    )
    with gr.Accordion("Tracker options", open=False):
        c["match_threshold"] = gr.Slider(
            0.0, 2.0, t.match_threshold, step=0.05, label="Match threshold (embedding cosine + IoU)"
        )
        c["memory_momentum"] = gr.Slider(
            0.0, 0.99, t.memory_momentum, step=0.01, label="Embedding memory momentum (0: last detection)"
        )
        c["max_missed"] = gr.Number(
            t.max_missed, precision=0, minimum=0, label="End a track after N missed frames (0: never)"
        )
        c["min_new_score"] = gr.Slider(
            0.0, 1.0, t.min_new_score, step=0.05, label="Minimum score to open a track"
        )
        c["hungarian"] = gr.Checkbox(
            t.hungarian, label="Hungarian assignment (default: greedy, as the paper)"
        )
        c["use_embedding"] = gr.Checkbox(t.use_embedding, label="Use the learned embedding (off: IoU only)")
        c["folder_fps"] = gr.Number(10.0, minimum=0.1, label="Frame rate of a zip of frames")
    return c


def _output_views() -> list:
    """The outputs, in the order the endpoints return them."""
    summary = gr.Markdown(elem_id="summary")
    with gr.Row(equal_height=True):
        overlay = gr.Video(label="Overlay", elem_id="overlay", interactive=False, loop=True, height=340)
        sheet = gr.Image(
            label="Contact sheet", type="filepath", elem_id="contact_sheet", interactive=False, height=340
        )
    with gr.Row():
        tracks = gr.Dataframe(
            headers=TRACK_COLUMNS,
            label="Tracks: first and last frame, frames present",
            elem_id="tracks",
            interactive=False,
            max_height=420,
        )
        timeline = gr.Image(
            label="Timeline: track x frame", type="filepath", elem_id="timeline", interactive=False
        )
    metrics = gr.Code(label="Evaluation", language=None, lines=6, elem_id="metrics", interactive=False)
    return [summary, overlay, sheet, tracks, timeline, metrics]


def _endpoints(runner: Runner) -> tuple:
    """The page's two functions; Gradio reads their signatures (one parameter per input, then the progress
    bar it injects)."""

    def run(upload, annotations, sample, weights, threshold, folder_fps, tracker, progress):
        """One page run; ``tracker``: the tracker controls' values in TRACKER_FIELDS order."""
        out = runner.process(
            upload,
            annotations,
            sample=sample,
            weights=weights,
            threshold=threshold,
            folder_fps=folder_fps,
            tracker=dict(zip(TRACKER_FIELDS, tracker)),
            progress=progress,
        )
        return _page_outputs(out)

    def process(
        upload,
        annotations,
        weights,
        threshold,
        folder_fps,
        match_threshold,
        memory_momentum,
        max_missed,
        min_new_score,
        hungarian,
        use_embedding,
        progress=gr.Progress(),  # noqa: B008 - how Gradio injects a progress bar
    ):
        tracker = (match_threshold, memory_momentum, max_missed, min_new_score, hungarian, use_embedding)
        return run(upload, annotations, False, weights, threshold, folder_fps, tracker, progress)

    def sample(
        weights,
        threshold,
        match_threshold,
        memory_momentum,
        max_missed,
        min_new_score,
        hungarian,
        use_embedding,
        progress=gr.Progress(),  # noqa: B008 - how Gradio injects a progress bar
    ):
        tracker = (match_threshold, memory_momentum, max_missed, min_new_score, hungarian, use_embedding)
        return run(None, None, True, weights, threshold, SAMPLE_FPS, tracker, progress)

    return process, sample


def build_app(weights: str, *, device: str | None, limits: AppLimits, keep_runs: int = 4) -> gr.Blocks:
    """The page: inputs on the left, outputs on the right; two endpoints, ``/process`` (an upload) and
    ``/sample`` (a fresh synthetic clip), with the same outputs. The weights load here, so a bad path fails
    before anything is served."""
    runner = Runner(weights, device, limits, keep_runs)
    with gr.Blocks(title="crossvis", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                c = _input_controls(runner, limits)
                files = gr.File(
                    label="Downloads: tracks.json, results.json, results.zip",
                    file_count="multiple",
                    elem_id="downloads",
                    interactive=False,
                )
            with gr.Column(scale=3):
                outputs = [*_output_views(), files]
        tracker = [c[k] for k in TRACKER_FIELDS]
        process, sample = _endpoints(runner)
        common = [c["weights"], c["threshold"]]
        c["run"].click(
            process,
            inputs=[c["upload"], c["annotations"], *common, c["folder_fps"], *tracker],
            outputs=outputs,
            api_name="process",
            concurrency_id="crossvis",
            concurrency_limit=1,
        )
        c["sample"].click(
            sample, inputs=[*common, *tracker], outputs=outputs, api_name="sample", concurrency_id="crossvis"
        )
    demo.crossvis_workdir = runner.root
    return demo


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt


def launch(
    weights: str,
    *,
    host: str,
    port: int,
    device: str | None,
    limits: AppLimits,
    block: bool = True,
    quiet: bool = False,
) -> gr.Blocks:
    """Build and serve the page; with ``block`` False return once it is up (``demo.local_url``)."""
    demo = build_app(weights, device=device, limits=limits)
    if host not in LOCAL_HOSTS:
        log.warning("crossvis app: serving on %s: anyone who can reach this address can use the page", host)
    demo.queue(default_concurrency_limit=1)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own health checks, one line each
    if block and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)  # close like Ctrl-C, so the working folder is removed at exit
    demo.launch(
        server_name=host,
        server_port=port,
        max_file_size=int(limits.max_upload_mb * MB),
        share=False,
        ssr_mode=False,
        mcp_server=False,
        prevent_thread_lock=not block,
        quiet=quiet,
    )
    return demo
