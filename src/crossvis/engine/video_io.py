"""Frame sources (video file, frame folder, webcam) and an mp4 writer, streaming one frame at a time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from crossvis.data.ytvis import load_rgb
from crossvis.errors import CrossVISError
from crossvis.io import atomic_path

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass
class FrameSource:
    """An iterable of (H, W, 3) uint8 RGB frames with its frame rate and (when known) frame count."""

    frames: Iterator[np.ndarray]
    fps: Fraction
    count: int | None
    name: str

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.frames


def open_source(source: str | os.PathLike, folder_fps: float = 10.0) -> FrameSource:
    """A video file (PyAV), a folder of images (sorted by name), or a webcam index ("0", "1", ...)."""
    s = str(source)
    if s.isdigit():
        return _webcam(int(s))
    p = Path(s)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise CrossVISError(p, "folder holds no images (.jpg, .png, ...)")
        return FrameSource(
            (load_rgb(f) for f in files), Fraction(folder_fps).limit_denominator(1000), len(files), p.name
        )
    if not p.is_file():
        raise CrossVISError(p, "no such video file, frame folder or webcam index")
    import av

    try:
        container = av.open(str(p))
        stream = container.streams.video[0]
    except (av.error.FFmpegError, IndexError) as e:
        raise CrossVISError(p, f"cannot open as a video ({e})") from None
    fps = stream.average_rate or stream.guessed_rate or Fraction(25)

    def gen() -> Iterator[np.ndarray]:
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise CrossVISError(p, f"video decoding failed ({e})") from None
        finally:
            container.close()

    return FrameSource(gen(), Fraction(fps), stream.frames or None, p.stem)


def _webcam(index: int) -> FrameSource:
    try:
        import cv2
    except ImportError:
        raise CrossVISError(f"webcam {index}", "needs OpenCV: pip install 'crossvis[webcam]'") from None
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise CrossVISError(f"webcam {index}", "cannot open the camera")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0

    def gen() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    return
                yield frame[:, :, ::-1].copy()
        finally:
            cap.release()

    return FrameSource(gen(), Fraction(fps).limit_denominator(1000), None, f"webcam{index}")


class VideoWriter:
    """Write RGB frames to an mp4 (H.264 when available, else MPEG-4 Part 2), atomically on close."""

    def __init__(self, path: str | os.PathLike, fps: Fraction) -> None:
        self.path = Path(path)
        self.fps = fps
        self._ctx = atomic_path(self.path, suffix=self.path.suffix or ".mp4")
        self._tmp = self._ctx.__enter__()
        self._container = None
        self._stream = None
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        import av

        if self._container is None:
            h, w = frame.shape[:2]
            self._container = av.open(str(self._tmp), mode="w", format="mp4")
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            self._stream = self._container.add_stream(codec, rate=self.fps)
            self._stream.width, self._stream.height = w - w % 2, h - h % 2
            self._stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                self._stream.options = {"crf": "20", "preset": "veryfast"}
        frame = frame[: self._stream.height, : self._stream.width]
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.count  # one tick of 1/fps per frame: the encoder keeps every frame
        vf.time_base = 1 / Fraction(self.fps)
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.count += 1

    def close(self, ok: bool = True) -> None:
        try:
            if self._container is not None:
                if ok:
                    for packet in self._stream.encode():
                        self._container.mux(packet)
                self._container.close()
        finally:
            if ok and self.count:
                self._ctx.__exit__(None, None, None)
            else:
                err = CrossVISError(self.path, "no frames written")
                self._ctx.__exit__(type(err), err, None)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


def count_frames(path: str | os.PathLike) -> int:
    """Decode a video and count its frames (for tests and checks)."""
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))
