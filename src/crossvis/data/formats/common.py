"""What every format reader/writer shares: videos and tracks in memory, the overlap rule, categories, atomic
output folders.

A :class:`TrackSet` is the format-neutral middle: YouTube-VIS annotations or a results list become one, a
writer turns it into files, a reader turns files back into one, and :func:`to_ytvis` makes it a YouTube-VIS
JSON dict again.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.data.masks import mask_to_box, to_rle
from crossvis.data.ytvis import YTVISDataset, read_json
from crossvis.errors import CrossVISError

MAX_PIXELS = 1 << 28  # a declared frame size above this is refused before any buffer is made
MAX_FRAMES = 1_000_000


@dataclass
class VideoMeta:
    """One video: its id, a file-system-safe unique ``name``, frame file names and size."""

    id: int
    name: str
    file_names: list[str]
    height: int
    width: int

    @property
    def length(self) -> int:
        return len(self.file_names)


@dataclass
class Track:
    """One object track of a video: ``masks`` holds one compressed RLE (bytes counts) or None per frame."""

    id: int  # unique within its video, >= 1
    category_id: int
    masks: list
    score: float | None = None  # results have one, annotations none
    iscrowd: bool = False


@dataclass
class TrackSet:
    """Videos, categories and the tracks of each video (key: video id)."""

    videos: list[VideoMeta]
    categories: list[dict]  # [{"id", "name"}] sorted by id
    tracks: dict[int, list[Track]] = field(default_factory=dict)
    is_results: bool = False

    def category_name(self, cid: int) -> str:
        return {c["id"]: c["name"] for c in self.categories}[cid]


# ------------------------------------------------------------------------------------------------ names


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def video_names(file_names_of: list[tuple[int, list[str]]]) -> dict[int, str]:
    """Video id -> a unique, file-system-safe name: the folder of its first frame (YouTube-VIS convention
    ``<video>/<frame>.jpg``), else ``video_<id>``; a clash falls back to ``video_<id>`` for every clashing one."""
    names = {}
    for vid, files in file_names_of:
        parent = Path(files[0]).parent.as_posix() if files else ""
        safe = _UNSAFE.sub("_", parent).strip("._")
        names[vid] = safe or f"video_{vid}"
    counts: dict[str, int] = {}
    for n in names.values():
        counts[n] = counts.get(n, 0) + 1
    return {vid: (n if counts[n] == 1 else f"video_{vid}") for vid, n in names.items()}


def frame_stems(video: VideoMeta) -> list[str]:
    """Per-frame stem used by per-frame files (PNG): the frame file's stem, or its index when stems repeat."""
    stems = [_UNSAFE.sub("_", Path(f).stem) or f"{i:05d}" for i, f in enumerate(video.file_names)]
    return stems if len(set(stems)) == len(stems) else [f"{i:05d}" for i in range(video.length)]


# ------------------------------------------------------------------------------------------------ loading


def _rle(seg, h: int, w: int, where: str) -> dict | None:
    rle = to_rle(seg, h, w, where)
    if rle is None:
        return None
    if list(rle["size"]) != [h, w]:
        raise CrossVISError(where, f"mask size {list(rle['size'])} differs from the video size [{h}, {w}]")
    return nonempty(rle)


def nonempty(rle: dict | None) -> dict | None:
    """An empty mask is an absent object: no format below can tell the two apart."""
    return None if rle is None or mask_utils.area(rle) == 0 else rle


def _videos_of(ds: YTVISDataset) -> list[VideoMeta]:
    names = video_names([(v.id, v.file_names) for v in ds.videos])
    return [VideoMeta(v.id, names[v.id], list(v.file_names), v.height, v.width) for v in ds.videos]


def trackset_from_annotations(ds: YTVISDataset) -> TrackSet:
    """The annotations of a YouTube-VIS dataset as tracks (ids 1.. per video in annotation order)."""
    ts = TrackSet(_videos_of(ds), [dict(c) for c in ds.categories])
    for v in ds.videos:
        tracks = []
        for k, a in enumerate(v.annotations, start=1):
            where = f"{ds.source}: annotation id {a['id']}"
            masks = [
                _rle(s, v.height, v.width, f"{where}: frame {f}") for f, s in enumerate(a["segmentations"])
            ]
            tracks.append(Track(k, a["category_id"], masks, None, bool(a.get("iscrowd", 0))))
        ts.tracks[v.id] = tracks
    return ts


def trackset_from_results(results: list | str | os.PathLike, ds: YTVISDataset) -> TrackSet:
    """A results list (official submission format) as tracks; track ids 1.. per video in file order."""
    where = "<results>" if isinstance(results, list) else str(results)
    data = results if isinstance(results, list) else read_json(results)
    if not isinstance(data, list):
        raise CrossVISError(
            where, "results must be a JSON list of {video_id, category_id, score, segmentations}"
        )
    ts = TrackSet(_videos_of(ds), [dict(c) for c in ds.categories], is_results=True)
    cats = set(ds.category_ids)
    for i, r in enumerate(data):
        w = f"{where}: result {i}"
        if not isinstance(r, dict):
            raise CrossVISError(w, "must be an object")
        vid, cid, score, segs = (
            r.get("video_id"),
            r.get("category_id"),
            r.get("score"),
            r.get("segmentations"),
        )
        video = ds.video_by_id.get(vid) if isinstance(vid, int) and not isinstance(vid, bool) else None
        if video is None:
            raise CrossVISError(w, f"unknown video_id {vid!r}")
        if cid not in cats or isinstance(cid, bool):
            raise CrossVISError(w, f"unknown category_id {cid!r}")
        if isinstance(score, bool) or not isinstance(score, int | float) or not np.isfinite(score):
            raise CrossVISError(w, f"score must be a finite number, got {score!r}")
        if not isinstance(segs, list) or len(segs) != video.length:
            raise CrossVISError(w, f"'segmentations' must be a list of {video.length} entries (RLE or null)")
        masks = [_rle(s, video.height, video.width, f"{w}: frame {f}") for f, s in enumerate(segs)]
        lst = ts.tracks.setdefault(vid, [])
        lst.append(Track(len(lst) + 1, cid, masks, float(score)))
    for v in ts.videos:
        ts.tracks.setdefault(v.id, [])
    return ts


def load_trackset(source, annotations) -> TrackSet:
    """``source``: a results list/file, or a YouTube-VIS annotations dict/file (its own annotations are then
    exported, with its own videos); ``annotations`` supplies the videos, sizes, frame names and categories of
    results."""
    if isinstance(source, str | os.PathLike):
        data, name = read_json(source), str(source)
    else:
        data, name = source, "<annotations>"
    if isinstance(data, dict):
        ds = YTVISDataset(data)
        ds.source = name
        if not ds.has_annotations:
            raise CrossVISError(name, "has no 'annotations' to export")
        return trackset_from_annotations(ds)
    if annotations is None:
        raise CrossVISError(
            name, "a results list needs --annotations (videos, sizes, frame names, categories)"
        )
    ds = annotations if isinstance(annotations, YTVISDataset) else YTVISDataset(annotations)
    return trackset_from_results(source if isinstance(source, str | os.PathLike) else data, ds)


# ------------------------------------------------------------------------------------------------ overlap rule


def paint_order(tracks: list[Track]) -> list[int]:
    """Indices of ``tracks`` in painting order for formats with one object per pixel (PNG, MOTS).

    The rule: non-crowd tracks are painted in ascending score (annotations: all equal), ties in file order, so
    on a contested pixel the highest-scored track wins, and among equals the later one. Crowd tracks are not
    painted (these formats have no category for an ignore region).
    """
    keep = [i for i, t in enumerate(tracks) if not t.iscrowd]
    return sorted(keep, key=lambda i: (tracks[i].score if tracks[i].score is not None else 0.0, i))


def label_map(tracks: list[Track], frame: int, height: int, width: int, values: list[int]) -> np.ndarray:
    """(H, W) int32 map of one frame: ``values[i]`` where track ``i`` owns the pixel (overlap rule), 0 elsewhere."""
    out = np.zeros((height, width), dtype=np.int32)
    for i in paint_order(tracks):
        rle = tracks[i].masks[frame]
        if rle is not None:
            out[mask_utils.decode(rle).astype(bool)] = values[i]
    return out


def decode(rle: dict) -> np.ndarray:
    """Compressed RLE -> (H, W) bool."""
    return mask_utils.decode(rle).astype(bool)


def encode(mask: np.ndarray) -> dict | None:
    """(H, W) bool -> compressed RLE (bytes counts), None when empty."""
    if not mask.any():
        return None
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


# ------------------------------------------------------------------------------------------------ categories


def parse_categories(spec: str | None, where: str = "--categories") -> list[dict] | None:
    """``--categories``: a YouTube-VIS/COCO JSON file (its ``categories``), ``1=cat,2=dog`` or ``cat,dog``
    (ids 1..). None when not given."""
    if not spec:
        return None
    if os.path.isfile(spec):
        data = read_json(spec)
        cats = data.get("categories") if isinstance(data, dict) else None
        if not isinstance(cats, list) or not cats:
            raise CrossVISError(spec, "has no 'categories' list")
        try:
            out = [{"id": int(c["id"]), "name": str(c["name"])} for c in cats]
        except (KeyError, TypeError, ValueError):
            raise CrossVISError(spec, "each category needs an integer 'id' and a 'name'") from None
    else:
        out = []
        for k, item in enumerate(x.strip() for x in spec.split(",")):
            if not item:
                raise CrossVISError(where, f"empty category name in {spec!r}")
            cid, sep, name = item.partition("=")
            if sep:
                if not cid.strip().isdigit() or not name.strip():
                    raise CrossVISError(where, f"expected ID=NAME, got {item!r}")
                out.append({"id": int(cid), "name": name.strip()})
            else:
                out.append({"id": k + 1, "name": item})
    ids, names = [c["id"] for c in out], [c["name"] for c in out]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise CrossVISError(where, "category ids and names must be unique")
    return sorted(out, key=lambda c: c["id"])


def category_by_name(categories: list[dict], name: str, where: str) -> int:
    for c in categories:
        if c["name"] == name:
            return c["id"]
    known = ", ".join(c["name"] for c in categories)
    raise CrossVISError(where, f"unknown class name {name!r} (known: {known})")


# ------------------------------------------------------------------------------------------------ back to YTVIS


def segmentations(track: Track, height: int, width: int) -> list:
    """Per-frame YouTube-VIS segmentations of a track: compressed RLE with str counts, or None."""
    out = []
    for m in track.masks:
        if m is None:
            out.append(None)
        else:
            c = m["counts"]
            out.append({"size": [height, width], "counts": c.decode("ascii") if isinstance(c, bytes) else c})
    return out


def to_ytvis(ts: TrackSet) -> dict:
    """A TrackSet as a YouTube-VIS JSON dict (annotations: compressed RLE with str counts, boxes, areas);
    annotation ids run 1.. over videos in id order and tracks in id order; tracks with no mask are dropped."""
    videos, anns = [], []
    for v in sorted(ts.videos, key=lambda v: v.id):
        videos.append(
            {"id": v.id, "file_names": v.file_names, "height": v.height, "width": v.width, "length": v.length}
        )
        for t in sorted(ts.tracks.get(v.id, []), key=lambda t: t.id):
            if all(m is None for m in t.masks):
                continue
            anns.append(
                {
                    "id": len(anns) + 1,
                    "video_id": v.id,
                    "category_id": t.category_id,
                    "iscrowd": int(t.iscrowd),
                    "height": v.height,
                    "width": v.width,
                    "length": v.length,
                    "segmentations": segmentations(t, v.height, v.width),
                    "bboxes": [None if m is None else mask_to_box(decode(m)) for m in t.masks],
                    "areas": [None if m is None else int(mask_utils.area(m)) for m in t.masks],
                }
            )
    return {"videos": videos, "categories": [dict(c) for c in ts.categories], "annotations": anns}


def skeleton(ts: TrackSet) -> dict:
    """The videos and categories of a TrackSet as a YouTube-VIS JSON without annotations (``videos.json``):
    written beside folder exports so that an import restores ids, frame names and categories exactly."""
    data = to_ytvis(TrackSet(ts.videos, ts.categories))
    for v, meta in zip(data["videos"], sorted(ts.videos, key=lambda v: v.id)):
        v["name"] = meta.name
    del data["annotations"]
    return data


def check_size(h: int, w: int, where: str) -> None:
    if h <= 0 or w <= 0 or h * w > MAX_PIXELS:
        raise CrossVISError(where, f"frame size {h}x{w} is not valid (at most {MAX_PIXELS} pixels)")


# ------------------------------------------------------------------------------------------------ atomic folders


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it replaces ``path`` (an earlier folder
    there is removed only then), on any exception it is removed and ``path`` is left untouched."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CrossVISError(path, "exists and is not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp folders are 0o700
        old = None
        if path.exists():
            old = path.parent / f"{tmp.name}.old"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------------------ import helpers

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def read_skeleton(path: Path) -> tuple[dict[str, VideoMeta], list[dict]] | None:
    """``videos.json`` written by an export (videos with a ``name``, categories), or None when absent."""
    if not path.is_file():
        return None
    data = read_json(path)
    ds = YTVISDataset({**data, "annotations": []} if isinstance(data, dict) else data)
    ds.source = str(path)
    names = {v.get("id"): v.get("name") for v in data["videos"]}
    fallback = video_names([(v.id, v.file_names) for v in ds.videos])
    videos = {}
    for v in ds.videos:
        name = names.get(v.id) if isinstance(names.get(v.id), str) else fallback[v.id]
        videos[name] = VideoMeta(v.id, name, list(v.file_names), v.height, v.width)
    return videos, [dict(c) for c in ds.categories]


def frames_in(images: Path, name: str) -> list[str] | None:
    """Sorted image files of ``images/<name>/`` as ``<name>/<file>``, or None when there is no such folder."""
    folder = images / name
    if not folder.is_dir():
        return None
    return [f"{name}/{p.name}" for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTS]


def build_video(
    name: str,
    *,
    vid: int,
    height: int,
    width: int,
    min_length: int,
    known: dict[str, VideoMeta] | None,
    images: Path | None,
    where: str,
) -> VideoMeta:
    """The :class:`VideoMeta` of an imported video named ``name``, from (in this order) ``videos.json``, the
    ``--images`` folder, or the default frame names ``<name>/<index:05d>.jpg`` over ``min_length`` frames."""
    check_size(height, width, where)
    if known is not None and name in known:
        v = known[name]
        if (v.height, v.width) != (height, width):
            raise CrossVISError(
                where, f"size {height}x{width} differs from videos.json ({v.height}x{v.width})"
            )
        if v.length < min_length:
            raise CrossVISError(where, f"frame {min_length} is past the {v.length} frames of videos.json")
        return v
    files = frames_in(images, name) if images is not None else None
    if images is not None and files is None:
        raise CrossVISError(images / name, "no such image folder for this video")
    if files is not None and len(files) < min_length:
        raise CrossVISError(where, f"frame {min_length} is past the {len(files)} images in {images / name}")
    if min_length > MAX_FRAMES:
        raise CrossVISError(where, f"frame number {min_length} is too large")
    return VideoMeta(vid, name, files or [f"{name}/{i:05d}.jpg" for i in range(min_length)], height, width)
