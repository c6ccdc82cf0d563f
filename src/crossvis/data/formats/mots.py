"""MOTS challenge format: a txt file per video (``frame id class_id img_h img_w rle``) and its PNG variant.

Layout written by :func:`write_mots` (MOTSChallenge conventions: frames count from 1, object id =
``class_id * 1000 + instance``)::

    OUT/instances_txt/<video>.txt       one line per object and frame, compressed COCO RLE
    OUT/instances/<video>/<frame>.png   16-bit PNG, pixel = object id, 0 = background
    OUT/videos.json                     videos (ids, frame names, sizes) and categories, for an exact import

``class_id`` is the YouTube-VIS ``category_id``. One object per pixel: see
:func:`crossvis.data.formats.common.paint_order` for who wins an overlap. Crowd annotations are not written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from crossvis.data.formats.common import (
    Track,
    TrackSet,
    VideoMeta,
    build_video,
    check_size,
    encode,
    frame_stems,
    label_map,
    read_skeleton,
    skeleton,
)
from crossvis.errors import CrossVISError
from crossvis.io import atomic_write

log = logging.getLogger(__name__)

IGNORE_ID = 10000  # MOTS ignore regions (class 10): skipped on import


def object_ids(tracks: list[Track], where: str) -> list[int]:
    """MOTS object id of each track: ``category_id * 1000 + k``, k = 1.. per category in track order."""
    seen: dict[int, int] = {}
    ids = []
    for t in tracks:
        seen[t.category_id] = seen.get(t.category_id, 0) + 1
        if seen[t.category_id] > 999:
            raise CrossVISError(
                where, f"more than 999 objects of category {t.category_id}: MOTS ids cannot hold them"
            )
        ids.append(t.category_id * 1000 + seen[t.category_id])
    return ids


def video_lines(video: VideoMeta, tracks: list[Track], ids: list[int]) -> tuple[list[str], list[np.ndarray]]:
    """The txt lines and (H, W) int32 id maps of one video (the overlap rule applied)."""
    lines, maps = [], []
    for f in range(video.length):
        m = label_map(tracks, f, video.height, video.width, ids)
        maps.append(m)
        for oid in sorted(set(np.unique(m).tolist()) - {0}):
            rle = encode(m == oid)
            cls = oid // 1000
            lines.append(f"{f + 1} {oid} {cls} {video.height} {video.width} {rle['counts'].decode('ascii')}")
    return lines, maps


def write_mots(ts: TrackSet, out: Path, *, png: bool = True) -> None:
    """Write ``ts`` in the MOTS layout under ``out`` (an empty folder)."""
    for video in ts.videos:
        tracks = ts.tracks.get(video.id, [])
        ids = object_ids(tracks, f"video {video.id}")
        if png and any(i > 65535 for i in ids):
            raise CrossVISError(f"video {video.id}", "category ids above 65 do not fit the 16-bit MOTS PNG")
        lines, maps = video_lines(video, tracks, ids)
        txt = out / "instances_txt" / f"{video.name}.txt"
        with atomic_write(txt) as f:
            f.write("".join(line + "\n" for line in lines))
        if png:
            folder = out / "instances" / video.name
            folder.mkdir(parents=True, exist_ok=True)
            for stem, m in zip(frame_stems(video), maps):
                Image.fromarray(m.astype(np.uint16)).save(folder / f"{stem}.png")
    crowd = sum(t.iscrowd for ts_ in ts.tracks.values() for t in ts_)
    if crowd:
        log.warning("%d crowd annotation(s) not written: MOTS ignore regions carry no category", crowd)
    with atomic_write(out / "videos.json") as f:
        json.dump(skeleton(ts), f)


# ------------------------------------------------------------------------------------------------ reading


def parse_line(line: str, where: str) -> tuple[int, int, int, int, int, bytes]:
    """One MOTS txt line -> (frame, id, class_id, h, w, rle counts); a bad line is a CrossVISError."""
    parts = line.split(" ")
    if len(parts) != 6:
        raise CrossVISError(
            where, f"expected 6 space-separated fields (frame id class_id img_h img_w rle), got {len(parts)}"
        )
    try:
        frame, oid, cls, h, w = (int(p) for p in parts[:5])
    except ValueError:
        raise CrossVISError(where, "frame, id, class_id, img_h and img_w must be integers") from None
    if frame < 1 or oid < 0 or cls < 0:
        raise CrossVISError(where, "frame must be >= 1 and id, class_id >= 0")
    check_size(h, w, where)
    return frame, oid, cls, h, w, parts[5].encode("ascii", "replace")


def decode_line_mask(counts: bytes, h: int, w: int, where: str) -> dict:
    rle = {"size": [h, w], "counts": counts}
    try:
        again = mask_utils.encode(np.asfortranarray(mask_utils.decode(rle)))
    except Exception as e:  # pycocotools raises on garbage
        raise CrossVISError(where, f"malformed RLE ({e})") from None
    if again["counts"] != counts:
        raise CrossVISError(where, "malformed RLE (does not decode to a consistent mask)")
    return rle


def read_txt(path: Path) -> dict:
    """A MOTS txt file -> {"size": (h, w) or None, "frames": max frame, "objects": {id: (class, {frame: rle})}}."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CrossVISError(path, f"cannot read: {e}") from None
    size, last, objects = None, 0, {}
    for n, raw in enumerate(text.splitlines(), start=1):
        where = f"{path}:{n}"
        if not raw.strip():
            continue
        frame, oid, cls, h, w, counts = parse_line(raw.strip(), where)
        if size is not None and size != (h, w):
            raise CrossVISError(
                where, f"image size {h}x{w} differs from {size[0]}x{size[1]} on earlier lines"
            )
        size = (h, w)
        if oid == IGNORE_ID:
            continue
        rle = decode_line_mask(counts, h, w, where)
        known_cls, frames = objects.setdefault(oid, (cls, {}))
        if known_cls != cls:
            raise CrossVISError(where, f"object {oid} has class {cls} here and {known_cls} before")
        if frame in frames:
            raise CrossVISError(where, f"object {oid} appears twice in frame {frame}")
        frames[frame] = rle
        last = max(last, frame)
    return {"size": size, "frames": last, "objects": objects}


def read_mots(src: Path, *, categories: list[dict] | None, images: Path | None) -> TrackSet:
    """A MOTS folder (``instances_txt/*.txt`` or ``*.txt``) -> TrackSet. Class ids must be category ids of
    ``categories`` (or of ``videos.json``)."""
    src = Path(src)
    if not src.is_dir():
        raise CrossVISError(src, "expected a folder with instances_txt/<video>.txt files")
    folder = src / "instances_txt" if (src / "instances_txt").is_dir() else src
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise CrossVISError(folder, "no .txt files")
    sk = read_skeleton(src / "videos.json")
    known, sk_cats = sk if sk else (None, None)
    cats = categories or sk_cats
    if not cats:
        raise CrossVISError(src, "class ids need names: give --categories (or keep the export's videos.json)")
    cat_ids = {c["id"] for c in cats}
    ts = TrackSet([], cats)
    for k, path in enumerate(files, start=1):
        data = read_txt(path)
        name = path.stem
        h, w = data["size"] or (
            (known[name].height, known[name].width) if known and name in known else (0, 0)
        )
        if not h:
            raise CrossVISError(path, "no objects and no size in videos.json: the video size is unknown")
        vid = known[name].id if known and name in known else k
        video = build_video(
            name,
            vid=vid,
            height=h,
            width=w,
            min_length=data["frames"],
            known=known,
            images=images,
            where=str(path),
        )
        tracks = []
        for oid in sorted(data["objects"]):
            cls, frames = data["objects"][oid]
            if cls not in cat_ids:
                raise CrossVISError(path, f"object {oid}: class_id {cls} is not a known category id")
            masks = [frames.get(f + 1) for f in range(video.length)]
            tracks.append(Track(len(tracks) + 1, cls, masks))
        ts.videos.append(video)
        ts.tracks[video.id] = tracks
    return ts
