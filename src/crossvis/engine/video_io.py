"""Frame sources (video file or URL through PyAV, frame folder, webcam) and an mp4 writer, one frame at a time.

Video input is anything PyAV (FFmpeg) opens: files of any codec it decodes, and ``rtsp://``, ``http(s)://``,
``file:`` ... URLs. Frames come out upright (the display-matrix rotation is applied) as (H, W, 3) uint8 RGB
whatever the pixel format (grayscale, yuv444, 10-bit ...). A packet that fails to decode, or a frame the
decoder marks corrupt, is skipped and counted (:attr:`FrameSource.skipped`); a file that ends early (truncated)
gives the frames before the break and a counted read error. The writer keeps the input's timestamps.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from crossvis.data.ytvis import load_rgb
from crossvis.errors import CrossVISError
from crossvis.io import atomic_path

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_EXTS = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".ogv"}
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "file:")


@dataclass
class DecodeStats:
    """What a source could not deliver: packets that failed to decode, frames marked corrupt, read errors."""

    decode_errors: int = 0
    corrupt_frames: int = 0
    read_error: str = ""  # the demuxer stopped early (truncated file, dropped connection)

    @property
    def skipped(self) -> int:
        return self.decode_errors + self.corrupt_frames

    def summary(self, name: str) -> str:
        """One warning line, or "" when nothing was lost."""
        parts = []
        if self.skipped:
            parts.append(
                f"skipped {self.skipped} frame(s) ({self.decode_errors} packets failed to decode, "
                f"{self.corrupt_frames} frames marked corrupt)"
            )
        if self.read_error:
            parts.append(f"stopped reading early: {self.read_error} (the result covers the frames before it)")
        return f"{name}: " + "; ".join(parts) if parts else ""


@dataclass
class FrameSource:
    """(H, W, 3) uint8 RGB frames with frame rate, time base and (when known) frame count.

    Iterating gives frames; :meth:`timed` gives (frame, pts) with ``pts`` in units of ``time_base`` (None when
    the source has no timestamps: frame folders and webcams).
    """

    timed_frames: Iterator[tuple[np.ndarray, int | None]]
    fps: Fraction
    count: int | None
    name: str
    time_base: Fraction | None = None
    stats: DecodeStats = field(default_factory=DecodeStats)
    live: bool = False  # a camera or network stream: Ctrl-C ends it like a finished video

    def __iter__(self) -> Iterator[np.ndarray]:
        return (f for f, _ in self.timed_frames)

    def timed(self) -> Iterator[tuple[np.ndarray, int | None]]:
        return self.timed_frames


def is_url(source: str) -> bool:
    return source.lower().startswith(URL_SCHEMES)


def open_source(source: str | os.PathLike, folder_fps: float = 10.0) -> FrameSource:
    """A video file or URL (PyAV), a folder of images (sorted by name), or a webcam index ("0", "1", ...)."""
    s = str(source)
    if s.isdigit():
        return _webcam(int(s))
    if is_url(s):
        src = _open_av(s, s.rsplit("/", 1)[-1].split("?")[0] or "stream", url=True)
        src.live = not s.lower().startswith("file:")
        return src
    p = Path(s)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise CrossVISError(p, "folder holds no images (.jpg, .png, ...)")
        fps = Fraction(folder_fps).limit_denominator(1000)
        return FrameSource(((load_rgb(f), None) for f in files), fps, len(files), p.name)
    if not p.is_file():
        raise CrossVISError(p, "no such video file, frame folder or webcam index")
    return _open_av(str(p), p.stem, url=False)


def _url_options(url: str) -> dict[str, str]:
    """FFmpeg protocol options: RTSP over TCP, and a 10 s network timeout (microseconds)."""
    if url.lower().startswith(("rtsp://", "rtsps://")):
        return {"rtsp_transport": "tcp", "timeout": "10000000"}
    if url.lower().startswith(("http://", "https://")):
        return {"timeout": "10000000"}
    return {}


def _open_av(target: str, name: str, *, url: bool) -> FrameSource:
    import av

    try:
        container = av.open(
            target, options=_url_options(target) if url else {}, timeout=10.0 if url else None
        )
    except (av.error.FFmpegError, OSError) as e:
        raise CrossVISError(target, f"cannot open as a video ({e})") from None
    if not container.streams.video:
        container.close()
        raise CrossVISError(target, "holds no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fps = Fraction(stream.average_rate or stream.guessed_rate or 25)
    stats = DecodeStats()
    return FrameSource(
        _decode(container, stream, stats), fps, stream.frames or None, name, stream.time_base, stats
    )


def _decode(container, stream, stats: DecodeStats) -> Iterator[tuple[np.ndarray, int | None]]:
    """Decode packet by packet so that one bad packet costs one frame, not the video."""
    import av

    def frames_of(packet):
        try:
            return packet.decode()
        except av.error.FFmpegError:
            stats.decode_errors += 1
            return []

    try:
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                stats.read_error = str(e)
                break
            for frame in frames_of(packet):  # packet.size == 0 flushes the decoder at the end
                if frame.is_corrupt:
                    stats.corrupt_frames += 1
                    continue
                yield upright(frame.to_ndarray(format="rgb24"), frame.rotation), frame.pts
    finally:
        container.close()


def upright(rgb: np.ndarray, rotation: float) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counter-clockwise, as PyAV's ``frame.rotation``)."""
    k = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def _webcam(index: int) -> FrameSource:
    try:
        import cv2
    except ImportError:
        raise CrossVISError(f"webcam {index}", "needs OpenCV: pip install 'crossvis[webcam]'") from None
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise CrossVISError(f"webcam {index}", "cannot open the camera")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0

    def gen() -> Iterator[tuple[np.ndarray, None]]:
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    return
                yield frame[:, :, ::-1].copy(), None
        finally:
            cap.release()

    return FrameSource(gen(), Fraction(fps).limit_denominator(1000), None, f"webcam{index}", live=True)


def _is_frame_folder(p: Path) -> bool:
    return p.is_dir() and any(f.suffix.lower() in IMAGE_EXTS for f in p.iterdir())


def expand_sources(source: str) -> list[Path] | None:
    """Many videos in one argument -> their paths (sorted); None when ``source`` is one video/stream/folder
    of frames. Accepted: a folder of video files, a glob pattern (``clips/*.mp4``; it may also match folders
    of frames, ``datasets/toy/JPEGImages/*``) or a list file (``.txt``, one path per line, relative to the
    list's folder, ``#`` comments)."""
    if source.isdigit() or is_url(source):
        return None
    p = Path(source)
    if p.is_dir():
        videos = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_EXTS and f.is_file())
        return videos or None  # no videos: a folder of frames
    if p.is_file() and p.suffix.lower() == ".txt":
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
        paths = [p.parent / ln for ln in lines if ln and not ln.startswith("#")]
        if not paths:
            raise CrossVISError(p, "list file names no videos")
        missing = [str(x) for x in paths if not x.is_file()]
        if missing:
            raise CrossVISError(p, f"{len(missing)} listed video(s) not found, e.g. {missing[0]}")
        return paths
    if glob.has_magic(source) and not p.exists():
        paths = sorted(
            Path(x)
            for x in glob.glob(source, recursive=True)
            if Path(x).is_file() or _is_frame_folder(Path(x))
        )
        if not paths:
            raise CrossVISError(source, "pattern matches no video files or folders of frames")
        return paths
    return None


class VideoWriter:
    """Write RGB frames to an mp4 (H.264 when available, else MPEG-4 Part 2), atomically on close.

    With ``time_base``, :meth:`write` takes each frame's input ``pts`` and the output keeps the input timing
    (variable frame rate included); without, frames are 1/``fps`` apart. Odd sizes lose their last row or
    column (4:2:0 video needs even sizes).
    """

    def __init__(self, path: str | os.PathLike, fps: Fraction, time_base: Fraction | None = None) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps)
        self.time_base = Fraction(time_base) if time_base else None
        self._ctx = atomic_path(self.path, suffix=self.path.suffix or ".mp4")
        self._tmp = self._ctx.__enter__()
        self._container = None
        self._stream = None
        self._first_pts: int | None = None
        self._last_pts = -1
        self.count = 0

    def _open(self, h: int, w: int) -> None:
        import av

        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=self.fps)
        self._stream.width, self._stream.height = w - w % 2, h - h % 2
        self._stream.pix_fmt = "yuv420p"
        tb = self.time_base or 1 / self.fps
        self._stream.codec_context.time_base = tb
        self._stream.time_base = tb
        if codec == "libx264":
            self._stream.options = {"crf": "20", "preset": "veryfast"}

    def _pts(self, pts: int | None) -> int:
        """The output pts: the input's (from 0) with a time base, else the frame count; never decreasing."""
        if self.time_base is None or pts is None:
            out = self.count if self.time_base is None else self._last_pts + 1
        else:
            self._first_pts = pts if self._first_pts is None else self._first_pts
            out = pts - self._first_pts
        out = max(out, self._last_pts + 1)  # a broken or repeated timestamp must not stop the encoder
        self._last_pts = out
        return out

    def write(self, frame: np.ndarray, pts: int | None = None) -> None:
        """frame (H, W, 3) uint8 RGB; ``pts`` in ``time_base`` units (ignored without a time base)."""
        import av

        if self._container is None:
            self._open(*frame.shape[:2])
        frame = frame[: self._stream.height, : self._stream.width]
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self._pts(pts)
        vf.time_base = self._stream.codec_context.time_base
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


def frame_times(path: str | os.PathLike) -> list[float]:
    """Presentation time in seconds of every frame of a video (for tests and checks)."""
    import av

    with av.open(str(path)) as c:
        return [float(f.time) for f in c.decode(video=0)]
