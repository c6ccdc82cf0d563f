"""The formats other tools speak: MOTS, MOT, DAVIS palette PNG, CVAT for video XML, normalised YouTube-VIS.

Two front doors (the CLI's ``export-results`` and ``import`` call them):

- :func:`export_results` writes results (or annotations) with the videos of a YouTube-VIS JSON in one format,
  into a folder that appears whole or not at all;
- :func:`import_annotations` reads a CVAT, DAVIS or MOTS export and returns (and writes) YouTube-VIS JSON that
  ``train``, ``evaluate`` and ``split`` accept.

See ``docs/interop.md`` for layouts, what each format cannot hold, and the overlap rule.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from crossvis.data.formats.common import (
    Track,
    TrackSet,
    VideoMeta,
    atomic_dir,
    load_trackset,
    nonempty,
    parse_categories,
    to_ytvis,
)
from crossvis.data.formats.cvat import read_cvat, write_cvat
from crossvis.data.formats.mot import write_mot
from crossvis.data.formats.mots import read_mots, write_mots
from crossvis.data.formats.png import read_png, write_png
from crossvis.data.formats.ytvis import write_ytvis
from crossvis.data.ytvis import YTVISDataset
from crossvis.errors import CrossVISError
from crossvis.io import atomic_write

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("mots", "mot", "png", "cvat", "ytvis")
IMPORT_FORMATS = ("cvat", "davis", "mots")


def write_trackset(ts: TrackSet, fmt: str, out_dir: str | os.PathLike, *, cvat_shape: str = "mask") -> Path:
    """Write ``ts`` in ``fmt`` to the folder ``out_dir`` atomically (built in a temporary folder, then renamed
    over ``out_dir``). Returns ``out_dir``."""
    if fmt not in EXPORT_FORMATS:
        raise CrossVISError("--format", f"unknown format {fmt!r} (one of {', '.join(EXPORT_FORMATS)})")
    with atomic_dir(out_dir) as tmp:
        if fmt == "mots":
            write_mots(ts, tmp)
        elif fmt == "mot":
            write_mot(ts, tmp)
        elif fmt == "png":
            write_png(ts, tmp)
        elif fmt == "cvat":
            write_cvat(ts, tmp, shape=cvat_shape)
        else:
            write_ytvis(ts, tmp)
    return Path(out_dir)


def export_results(
    results: str | os.PathLike | list | dict,
    annotations: str | os.PathLike | dict | YTVISDataset | None,
    fmt: str,
    out_dir: str | os.PathLike,
    *,
    cvat_shape: str = "mask",
) -> dict:
    """Results (official submission list or file) or a YouTube-VIS annotations JSON -> ``fmt`` files in
    ``out_dir``. ``annotations`` supplies the videos (names, sizes, frame names) and categories of results.

    Returns {"out_dir", "videos", "tracks"}.
    """
    ts = load_trackset(results, annotations)
    write_trackset(ts, fmt, out_dir, cvat_shape=cvat_shape)
    return {"out_dir": Path(out_dir), "videos": len(ts.videos), "tracks": sum(map(len, ts.tracks.values()))}


def export_video_tracks(
    tracks: list[dict],
    *,
    name: str,
    num_frames: int,
    height: int,
    width: int,
    categories: list[dict],
    fmt: str,
    out_dir: str | os.PathLike,
) -> Path:
    """The tracks of one predicted video (``VideoResult.tracks``: category_id, score, per-frame RLE) -> ``fmt``
    files in ``out_dir``; frames are named ``<name>/<index:05d>.jpg``."""
    video = VideoMeta(1, name, [f"{name}/{i:05d}.jpg" for i in range(num_frames)], height, width)
    ts = TrackSet([video], sorted(categories, key=lambda c: c["id"]), is_results=True)
    ts.tracks[1] = [
        Track(k, t["category_id"], [_bytes_rle(s) for s in t["segmentations"]], float(t["score"]))
        for k, t in enumerate(tracks, start=1)
    ]
    return write_trackset(ts, fmt, out_dir)


def _bytes_rle(seg: dict | None) -> dict | None:
    if seg is None:
        return None
    c = seg["counts"]
    return nonempty({"size": list(seg["size"]), "counts": c.encode("ascii") if isinstance(c, str) else c})


def read_trackset(
    src: str | os.PathLike,
    fmt: str,
    *,
    categories: list[dict] | None = None,
    images: str | os.PathLike | None = None,
) -> TrackSet:
    """Read a ``cvat``, ``davis`` or ``mots`` export into a TrackSet."""
    img = Path(images) if images is not None else None
    if img is not None and not img.is_dir():
        raise CrossVISError(img, "--images must be a folder of <video>/<frame> images")
    if fmt == "cvat":
        ts = read_cvat(Path(src), categories=categories, images=img)
    elif fmt == "davis":
        ts = read_png(Path(src), categories=categories, images=img)
    elif fmt == "mots":
        ts = read_mots(Path(src), categories=categories, images=img)
    else:
        raise CrossVISError("--format", f"cannot import {fmt!r} (one of {', '.join(IMPORT_FORMATS)})")
    ids = [v.id for v in ts.videos]
    if len(set(ids)) != len(ids):  # videos.json named only some videos: number them all by name
        tracks = {}
        for k, v in enumerate(sorted(ts.videos, key=lambda v: v.name), start=1):
            tracks[k] = ts.tracks.get(v.id, [])
            v.id = k
        ts.tracks = tracks
    return ts


def import_annotations(
    src: str | os.PathLike,
    fmt: str,
    *,
    output: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    categories: str | list[dict] | None = None,
) -> dict:
    """A CVAT / DAVIS / MOTS export -> YouTube-VIS JSON dict (checked with :class:`YTVISDataset`), written
    atomically to ``output`` when given.

    ``categories``: a list of {"id", "name"} or a ``--categories`` spec (JSON file, ``1=cat,2=dog``, ``cat,dog``);
    class names and ids in the source must be among them. Without it, CVAT labels (ids 1.. in label order),
    DAVIS ``meta.json`` names, or the export's ``videos.json`` define them.
    """
    cats = categories if isinstance(categories, list) else parse_categories(categories)
    ts = read_trackset(src, fmt, categories=cats, images=images)
    data = to_ytvis(ts)
    YTVISDataset(data, check=True)  # what train/evaluate will demand
    if output is not None:
        with atomic_write(output) as f:
            json.dump(data, f)
    return data


__all__ = [
    "EXPORT_FORMATS",
    "IMPORT_FORMATS",
    "export_results",
    "export_video_tracks",
    "import_annotations",
    "read_trackset",
    "write_trackset",
]
