"""DAVIS-style palette PNGs: one indexed PNG per frame, pixel = object index (1..255), 0 = background.

Layout written by :func:`write_png`::

    OUT/<video>/<frame>.png   mode "P", the DAVIS/PASCAL palette, index k = the video's k-th object
    OUT/meta.json             YouTube-VOS style: {"videos": {video: {"objects": {"k": {"category", "frames"}}}}}
    OUT/videos.json           videos (ids, frame names, sizes) and categories, for an exact import

One object per pixel (see :func:`crossvis.data.formats.common.paint_order`); crowd annotations are not
written; at most 255 objects per video.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from crossvis.data.formats.common import (
    IMAGE_EXTS,
    Track,
    TrackSet,
    build_video,
    category_by_name,
    check_size,
    encode,
    frame_stems,
    label_map,
    read_skeleton,
    skeleton,
)
from crossvis.data.ytvis import read_json
from crossvis.errors import CrossVISError
from crossvis.io import atomic_write

MAX_OBJECTS = 255


def davis_palette() -> list[int]:
    """The 256-colour PASCAL VOC / DAVIS palette (bit-interleaved index -> RGB), flat [r0, g0, b0, r1, ...]."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


PALETTE = davis_palette()


def write_png(ts: TrackSet, out: Path) -> None:
    """Write ``ts`` as DAVIS palette PNGs under ``out`` (an empty folder)."""
    meta: dict = {"videos": {}}
    for video in ts.videos:
        tracks = ts.tracks.get(video.id, [])
        kept = [t for t in tracks if not t.iscrowd]
        if len(kept) > MAX_OBJECTS:
            raise CrossVISError(f"video {video.id}", f"{len(kept)} objects: a palette PNG holds at most 255")
        index, k = [], 0
        for t in tracks:
            k += 0 if t.iscrowd else 1
            index.append(0 if t.iscrowd else k)
        folder = out / video.name
        folder.mkdir(parents=True, exist_ok=True)
        stems = frame_stems(video)
        seen: dict[int, list[str]] = {}
        for f, stem in enumerate(stems):
            m = label_map(tracks, f, video.height, video.width, index).astype(np.uint8)
            for i in np.unique(m).tolist():
                if i:
                    seen.setdefault(i, []).append(stem)
            im = Image.frombytes("P", (video.width, video.height), np.ascontiguousarray(m).tobytes())
            im.putpalette(PALETTE)
            im.save(folder / f"{stem}.png")
        meta["videos"][video.name] = {
            "objects": {
                str(i): {"category": ts.category_name(t.category_id), "frames": seen.get(i, [])}
                for i, t in zip(index, tracks)
                if i
            }
        }
    with atomic_write(out / "meta.json") as f:
        json.dump(meta, f)
    with atomic_write(out / "videos.json") as f:
        json.dump(skeleton(ts), f)


# ------------------------------------------------------------------------------------------------ reading


def read_frame(path: Path, palette: list[int] | None) -> tuple[np.ndarray, list[int]]:
    """One palette PNG -> ((H, W) uint8 indices, its palette); a non-palette image or a palette that differs
    from the video's first frame is a CrossVISError."""
    try:
        with Image.open(path) as im:
            check_size(im.height, im.width, str(path))  # the declared size, before decoding
            if im.mode != "P":
                raise CrossVISError(
                    path, f"not a palette (mode P) PNG but mode {im.mode}: object ids are palette indices"
                )
            pal = (im.getpalette() or []) + [0] * 768
            arr = np.asarray(im)
    except CrossVISError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise CrossVISError(path, f"cannot read image: {e}") from None
    pal = pal[:768]
    if palette is not None:
        used = np.unique(arr).tolist()
        bad = [i for i in used if pal[3 * i : 3 * i + 3] != palette[3 * i : 3 * i + 3]]
        if bad:
            raise CrossVISError(path, f"palette differs from the video's first frame at index {bad[0]}")
    return arr, pal


def _categories_of(meta: dict | None, name: str, categories: list[dict], where: str) -> dict[int, int]:
    """Object index -> category id of one video, from meta.json or the single category given."""
    if meta is None:
        if len(categories) != 1:
            raise CrossVISError(
                where, "no meta.json: object categories are unknown (give --categories with one name)"
            )
        return {}
    objs = meta.get("videos", {}).get(name, {}).get("objects")
    if not isinstance(objs, dict):
        raise CrossVISError(where, f"meta.json lists no objects for video {name!r}")
    out = {}
    for k, o in objs.items():
        if not str(k).isdigit() or not isinstance(o, dict) or not isinstance(o.get("category"), str):
            raise CrossVISError(
                where, f"meta.json: object {k!r} of {name!r} needs a numeric key and a 'category'"
            )
        out[int(k)] = category_by_name(categories, o["category"], f"{where}: meta.json object {k}")
    return out


def read_png(src: Path, *, categories: list[dict] | None, images: Path | None) -> TrackSet:
    """A DAVIS-style folder ``<video>/<frame>.png`` (+ ``meta.json``) -> TrackSet."""
    src = Path(src)
    if not src.is_dir():
        raise CrossVISError(src, "expected a folder of <video>/<frame>.png")
    sk = read_skeleton(src / "videos.json")
    known, sk_cats = sk if sk else (None, None)
    meta = read_json(src / "meta.json") if (src / "meta.json").is_file() else None
    cats = categories or sk_cats
    if not cats and meta is not None:  # categories named by meta.json, ids 1.. in order of appearance
        names = []
        for v in meta.get("videos", {}).values():
            for o in v.get("objects", {}).values():
                if isinstance(o, dict) and o.get("category") not in names:
                    names.append(o.get("category"))
        cats = [{"id": i + 1, "name": str(n)} for i, n in enumerate(names)]
    if not cats:
        raise CrossVISError(src, "no categories: give --categories (or keep meta.json / videos.json)")
    ts = TrackSet([], cats)
    folders = sorted(p for p in src.iterdir() if p.is_dir() and any(p.glob("*.png")))
    if not folders:
        raise CrossVISError(src, "no <video>/ folders with .png files")
    for k, folder in enumerate(folders, start=1):
        pngs = sorted(folder.glob("*.png"))
        cat_of = _categories_of(meta, folder.name, cats, str(folder))
        first, pal = read_frame(pngs[0], None)
        h, w = first.shape
        vid = known[folder.name].id if known and folder.name in known else k
        video = build_video(
            folder.name,
            vid=vid,
            height=h,
            width=w,
            min_length=len(pngs),
            known=known,
            images=images,
            where=str(folder),
        )
        if video.length != len(pngs):
            raise CrossVISError(folder, f"{len(pngs)} PNGs for a video of {video.length} frames")
        masks: dict[int, list] = {}
        for f, path in enumerate(pngs):
            arr = first if f == 0 else read_frame(path, pal)[0]
            if arr.shape != (h, w):
                raise CrossVISError(
                    path, f"size {arr.shape[1]}x{arr.shape[0]} differs from the first frame ({w}x{h})"
                )
            for i in np.unique(arr).tolist():
                if i == 0:
                    continue
                if meta is not None and i not in cat_of:
                    raise CrossVISError(path, f"palette index {i} is not an object of meta.json")
                masks.setdefault(i, [None] * video.length)[f] = encode(arr == i)
        cid = cats[0]["id"]
        ts.tracks[video.id] = [
            Track(n, cat_of.get(i, cid), masks[i]) for n, i in enumerate(sorted(masks), start=1)
        ]
        ts.videos.append(video)
    return ts


__all__ = ["IMAGE_EXTS", "PALETTE", "read_png", "write_png"]
