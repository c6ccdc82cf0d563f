"""Reading what a page visitor uploads, safely: size and duration limits checked before work is spent, zips
of frames extracted without path traversal or unbounded sizes. Uploads are only decoded (PyAV, Pillow, JSON),
never executed or unpickled."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path, PurePosixPath

import numpy as np

from crossvis.engine.video_io import IMAGE_EXTS, FrameSource, open_source
from crossvis.errors import CrossVISError

MB = 1024 * 1024
VIDEO_EXTS = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".gif"}


@dataclass(frozen=True)
class AppLimits:
    """What the app accepts from an upload.

    max_upload_mb: size of an uploaded file (video, zip or annotations JSON); max_seconds and max_frames: the
    clip's length (both apply); max_unzipped_mb: the images a zip holds, summed as its directory declares them;
    max_frame_pixels: height x width of one frame.
    """

    max_upload_mb: float = 200.0
    max_seconds: float = 120.0
    max_frames: int = 1500
    max_unzipped_mb: float = 1000.0
    max_frame_pixels: int = 3840 * 2160

    def frame_limit(self, fps: Fraction) -> int:
        """The most frames a clip at ``fps`` may have under both length limits."""
        return min(self.max_frames, int(self.max_seconds * float(fps)))


def check_size(path: Path, limits: AppLimits, name: str) -> None:
    size = path.stat().st_size
    if size > limits.max_upload_mb * MB:
        raise CrossVISError(
            name, f"is {size / MB:.1f} MB, over the upload limit of {limits.max_upload_mb:g} MB"
        )
    if size == 0:
        raise CrossVISError(name, "is empty")


def _natural_key(name: str) -> list:
    """Sort frame names as people number them: 2.jpg before 10.jpg."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _safe_member(info: zipfile.ZipInfo, name: str) -> PurePosixPath:
    p = PurePosixPath(info.filename.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise CrossVISError(name, f"refusing a zip member with an unsafe path: {info.filename!r}")
    return p


def _frame_members(z: zipfile.ZipFile, name: str) -> list[zipfile.ZipInfo]:
    """The zip's image members (hidden files and macOS metadata skipped), in natural name order."""
    images = []
    for info in z.infolist():
        p = _safe_member(info, name)
        hidden = any(part.startswith(".") or part == "__MACOSX" for part in p.parts)
        if not info.is_dir() and not hidden and p.suffix.lower() in IMAGE_EXTS:
            images.append(info)
    return sorted(images, key=lambda i: _natural_key(i.filename))


def extract_frames_zip(zip_path: Path, dest: Path, limits: AppLimits, name: str) -> int:
    """Extract the images of a zip of frames into ``dest`` as 000000.jpg, 000001.png, ... (in natural name
    order of the members); returns the frame count. Counts and declared sizes are checked first, and no
    member is written past its declared size."""
    try:
        z = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CrossVISError(name, f"not a readable zip file ({e})") from None
    with z:
        images = _frame_members(z, name)
        if not images:
            raise CrossVISError(name, f"the zip holds no frames ({', '.join(sorted(IMAGE_EXTS))})")
        if len(images) > limits.max_frames:
            raise CrossVISError(name, f"{len(images)} frames, over the limit of {limits.max_frames} frames")
        total = sum(i.file_size for i in images)
        if total > limits.max_unzipped_mb * MB:
            raise CrossVISError(
                name, f"unzips to {total / MB:.0f} MB, over the limit of {limits.max_unzipped_mb:g} MB"
            )
        dest.mkdir(parents=True, exist_ok=True)
        for k, info in enumerate(images):
            out = dest / f"{k:06d}{PurePosixPath(info.filename).suffix.lower()}"
            try:
                with z.open(info) as src, open(out, "wb") as dst:
                    data = src.read(info.file_size + 1)
                    if len(data) > info.file_size:
                        raise CrossVISError(name, f"{info.filename} is larger than its zip entry declares")
                    dst.write(data)
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise CrossVISError(name, f"cannot extract {info.filename} ({e})") from None
    return len(images)


def open_upload(path: Path, workdir: Path, limits: AppLimits, *, folder_fps: float = 10.0) -> FrameSource:
    """An uploaded video or zip of frames -> a :class:`FrameSource` of (H, W, 3) uint8 RGB frames that stops
    with an error past the limits. Errors name the upload by its file name."""
    name = path.name
    check_size(path, limits, name)
    suffix = path.suffix.lower()
    if suffix == ".zip":
        folder = workdir / "frames"
        extract_frames_zip(path, folder, limits, name)
        src = open_source(folder, folder_fps)
    elif suffix in VIDEO_EXTS:
        try:
            src = open_source(path)
        except CrossVISError as e:
            raise CrossVISError(name, e.what) from None
    else:
        raise CrossVISError(name, f"upload a video ({', '.join(sorted(VIDEO_EXTS))}) or a .zip of frames")
    return limited(src, limits, name)


def limited(src: FrameSource, limits: AppLimits, name: str) -> FrameSource:
    """``src`` (renamed ``name``) checked against the limits: up front when its frame count is known, else while
    reading."""
    n_max = limits.frame_limit(src.fps)
    if src.count is not None and src.count > n_max:
        raise CrossVISError(name, _too_long(f"{src.count} frames", src.fps, limits))

    def frames() -> Iterator[tuple[np.ndarray, int | None]]:
        for i, (frame, pts) in enumerate(src.timed()):
            if i >= n_max:
                raise CrossVISError(name, _too_long(f"more than {n_max} frames", src.fps, limits))
            if frame.shape[0] * frame.shape[1] > limits.max_frame_pixels:
                raise CrossVISError(
                    name,
                    f"frames of {frame.shape[1]}x{frame.shape[0]} are over the limit of "
                    f"{limits.max_frame_pixels} pixels",
                )
            yield frame, pts

    return replace(src, timed_frames=frames(), name=name)


def _too_long(frames: str, fps: Fraction, limits: AppLimits) -> str:
    return (
        f"{frames} at {float(fps):g} fps is over the limit of {limits.max_frames} frames and "
        f"{limits.max_seconds:g} s (the app's --max-frames / --max-seconds)"
    )
