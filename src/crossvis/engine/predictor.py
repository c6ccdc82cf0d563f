"""The video front door: ``VideoPredictor.from_weights(weights).track(frames)`` streams per-frame tracked instances;
``predict_video(path)`` returns whole-video instances. Memory stays flat however long the video: masks of
finished frames are kept only as RLE."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from crossvis.config import Config, TrackerConfig
from crossvis.data.masks import encode_mask
from crossvis.data.pairs import resize_shape
from crossvis.engine.precision import check_precision, network_autocast
from crossvis.errors import CrossVISError
from crossvis.modeling.crossvis import CrossVIS
from crossvis.modeling.weights import load_model
from crossvis.tracking import OnlineTracker


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``--device`` as given (cpu, cuda, cuda:1, ...) or the default; one that does not exist here is a
    CrossVISError, not a traceback."""
    if device is None or device == "":
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise CrossVISError("--device", f"unknown device {device!r} ({str(e).split(':')[0]})") from None
    if dev.type == "cuda" and (
        not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()
    ):
        raise CrossVISError("--device", f"{device} is not available on this machine")
    return dev


@dataclass
class FrameResult:
    """Tracked instances in one frame (N of them), in the frame's pixels.

    track_ids (N,) int; classes (N,) contiguous class index; class_names; scores (N,); boxes (N, 4) xyxy;
    masks (N, H, W) bool.
    """

    index: int
    track_ids: np.ndarray
    classes: np.ndarray
    class_names: list[str]
    scores: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray


@dataclass
class VideoResult:
    """Whole-video instances: one entry per track with its per-frame RLE masks (None where absent)."""

    num_frames: int
    height: int
    width: int
    tracks: list[dict] = field(default_factory=list)
    model_seconds: float = 0.0
    total_seconds: float = 0.0

    def to_results(self, video_id: int) -> list[dict]:
        """Entries of the official submission format for this video."""
        return [
            {
                "video_id": video_id,
                "category_id": t["category_id"],
                "score": t["score"],
                "segmentations": t["segmentations"],
            }
            for t in self.tracks
        ]


def network_input(frame: np.ndarray, min_size: int, max_size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB frame -> (3, h, w) uint8 tensor at the test size (shortest side ``min_size``,
    longest at most ``max_size``), as the model's ``preprocess`` takes it."""
    h, w = frame.shape[:2]
    nh, nw = resize_shape(h, w, min_size, max_size)
    if (nh, nw) != (h, w):
        frame = np.asarray(Image.fromarray(frame).resize((nw, nh), Image.BILINEAR))
    return torch.from_numpy(np.array(frame)).permute(2, 0, 1)


class VideoPredictor:
    """Run a CrossVIS model and the online tracker over videos.

    Args:
        model: a :class:`~crossvis.modeling.crossvis.CrossVIS` in eval mode (its device is used).
        config: the config it was built from (input sizes, mask threshold, tracker defaults).
        class_names: name of each contiguous class (default "0", "1", ...).
        category_ids: the dataset category id of each class, for results files (default 1..C).
        tracker: tracker options (default: the config's ``test.tracker``, the official rule).
        precision: ``fp32`` (default), ``bf16`` or ``fp16``: ``detect`` runs the dense network under
            ``torch.autocast`` (see :func:`crossvis.engine.precision.network_autocast`); post-processing and
            the detections stay float32.

    The model may also be a :class:`~crossvis.engine.onnx_runtime.OnnxModel` (an exported network run by
    ONNX Runtime, fp32 only). Use :meth:`from_weights` for a shipped weight set or a ``.safetensors`` file.
    """

    def __init__(
        self,
        model: CrossVIS,
        config: Config,
        class_names: list[str] | None = None,
        category_ids: list[int] | None = None,
        *,
        tracker: TrackerConfig | None = None,
        precision: str = "fp32",
    ) -> None:
        if isinstance(model, str | os.PathLike):
            raise TypeError("VideoPredictor takes a model; use VideoPredictor.from_weights(path or name)")
        self.model, self.cfg, self.device = model, config, model.device
        self.class_names = list(class_names or [str(i) for i in range(model.num_classes)])
        self.category_ids = list(category_ids or range(1, model.num_classes + 1))
        self.tracker_cfg = tracker or config.test.tracker
        self.precision = check_precision(precision, "precision")
        if precision != "fp32" and not isinstance(model, CrossVIS):
            raise CrossVISError(
                "precision", f"{precision} needs a PyTorch model (an ONNX graph runs in fp32)"
            )
        self.model_seconds = 0.0

    @classmethod
    def from_weights(
        cls,
        weights: str | os.PathLike = "synthetic-tiny",
        *,
        device: str | torch.device | None = None,
        config: Config | None = None,
        overrides: list[str] | None = None,
        tracker: TrackerConfig | None = None,
        precision: str = "fp32",
        channels_last: bool = True,
    ) -> VideoPredictor:
        """A predictor for a shipped weight-set name (``synthetic-tiny``), a crossvis ``.safetensors`` file,
        or an ``.onnx`` file written by ``crossvis export --format onnx`` (run by ONNX Runtime).

        ``config`` replaces the config stored with the weights; ``overrides`` (``key.sub=value``, e.g.
        ``test.tracker.hungarian=true``) are layered on top; ``device`` defaults to CUDA when available.
        ``precision``: fp32, bf16 or fp16 (autocast). ``channels_last``: run the convolutions in NHWC memory
        format (the same outputs to float tolerance; faster with oneDNN and cuDNN).
        """
        device = resolve_device(device)
        if str(weights).endswith(".onnx"):
            from crossvis.engine.onnx_runtime import load_onnx_model

            model, w = load_onnx_model(weights, device, config, overrides)
        else:
            model, w = load_model(weights, device, config, overrides)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
        return cls(model, w.config, w.class_names, w.category_ids, tracker=tracker, precision=precision)

    def with_tracker(self, **changes) -> VideoPredictor:
        """The same model with other tracker options, e.g. ``with_tracker(use_embedding=False)``."""
        return VideoPredictor(
            self.model,
            self.cfg,
            self.class_names,
            self.category_ids,
            tracker=replace(self.tracker_cfg, **changes),
            precision=self.precision,
        )

    def stream_tracker_config(self) -> TrackerConfig:
        """The tracker options for streams: ``max_missed``, or ``stream_max_missed`` while that is 0."""
        c = self.tracker_cfg
        return c if c.max_missed > 0 else replace(c, max_missed=c.stream_max_missed)

    def new_tracker(self, *, stream: bool = False) -> OnlineTracker:
        """A tracker with this predictor's options; ``stream``: tracks end (:meth:`stream_tracker_config`)."""
        return OnlineTracker(self.stream_tracker_config() if stream else self.tracker_cfg)

    def _input(self, frame: np.ndarray) -> torch.Tensor:
        return network_input(frame, self.cfg.input.min_size_test, self.cfg.input.max_size_test)

    def detect(self, frames: list[np.ndarray]):
        """Per-frame detections (no tracking) of a small batch of (H, W, 3) uint8 RGB frames."""
        inputs = [self._input(f) for f in frames]
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with network_autocast(self.model, self.device, self.precision):
            dets = self.model.inference(inputs, [f.shape[:2] for f in frames], self.cfg.test.mask_threshold)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.model_seconds += time.perf_counter() - t0
        return dets

    def step(self, index: int, frame: np.ndarray, tracker: OnlineTracker) -> FrameResult:
        """Detect in one frame and associate with ``tracker``'s tracks."""
        if index == 0 and hasattr(self.model, "reset_stream"):
            self.model.reset_stream()  # a new video: no previous frame for temporal feature calibration
        det = self.detect([frame])[0].to("cpu")
        ids = np.array(
            tracker.update(index, det.boxes, det.scores, det.classes, det.embeddings), dtype=np.int64
        )
        keep = ids >= 0
        cls = det.classes.numpy()[keep]
        return FrameResult(
            index=index,
            track_ids=ids[keep],
            classes=cls,
            class_names=[self.class_names[c] for c in cls],
            scores=det.scores.numpy()[keep],
            boxes=det.boxes.numpy()[keep],
            masks=det.masks.numpy()[keep],
        )

    def track(
        self, frames: Iterable[np.ndarray], tracker: OnlineTracker | None = None
    ) -> Iterator[FrameResult]:
        """Stream (H, W, 3) uint8 RGB frames -> one :class:`FrameResult` per frame, online.

        Tracks end after ``max_missed`` frames without a detection (``stream_max_missed`` while that is 0), so
        an endless stream runs at constant cost; pass a ``tracker`` for other options."""
        tracker = tracker or self.new_tracker(stream=True)
        for i, frame in enumerate(frames):
            yield self.step(i, frame, tracker)

    def predict_video(self, source, on_frame=None) -> VideoResult:
        """A video path, frame folder, or iterable of RGB frames -> :class:`VideoResult`.

        Whole-video results for clips (datasets, the official format): every track's masks are held as RLE
        until the end, and tracks follow ``max_missed`` (official: never end). For long videos and streams
        use :func:`crossvis.engine.inference.predict_source` (JSON Lines as produced) or :meth:`track`.

        ``on_frame(frame, frame_result)`` is called for every frame (e.g. to draw and encode an overlay).
        """
        from crossvis.engine.video_io import open_source

        frames = open_source(source) if isinstance(source, str | os.PathLike) else source
        tracker = self.new_tracker()
        rles: dict[int, dict[int, dict]] = {}  # track id -> frame -> RLE: no dense masks are kept
        height = width = n = 0
        model_start = self.model_seconds  # a running total over the predictor's life
        t0 = time.perf_counter()
        for n, frame in enumerate(frames, start=1):
            height, width = frame.shape[:2]
            res = self.step(n - 1, frame, tracker)
            for tid, m in zip(res.track_ids.tolist(), res.masks):
                rles.setdefault(tid, {})[res.index] = encode_mask(m)
            if on_frame is not None:
                on_frame(frame, res)
        result = VideoResult(
            n,
            height,
            width,
            model_seconds=self.model_seconds - model_start,
            total_seconds=time.perf_counter() - t0,
        )
        for t in tracker.tracks:
            frames_of = rles.get(t.id)
            if frames_of:
                result.tracks.append(
                    {
                        "track_id": t.id,
                        "category_id": int(self.category_ids[t.category]),
                        "class_name": self.class_names[t.category],
                        "score": t.score,
                        "segmentations": [frames_of.get(i) for i in range(n)],
                    }
                )
        return result
