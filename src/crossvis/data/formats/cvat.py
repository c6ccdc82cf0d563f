"""CVAT for video 1.1 XML: one ``<track>`` per object with a ``<mask>`` (or ``<polygon>``) per frame.

Layout written by :func:`write_cvat`::

    OUT/<video>.xml    one CVAT task per video (upload it to CVAT as "CVAT 1.1")
    OUT/videos.json    videos (ids, frame names, sizes) and categories, for an exact import

A CVAT mask is ``rle="c0, c1, ..."`` over its tight box ``left, top, width, height``: row-major run lengths,
starting with a (possibly empty) run of background. A track's shape holds from its frame until the track's
next shape; ``outside="1"`` ends it. Every frame where an object is present gets a keyframe; the first
absent frame after a run gets an ``outside`` copy, as CVAT writes it. Masks may overlap (``z_order``: higher
score drawn on top). Polygon tracks (``shape="polygon"``) keep the outline of each frame's largest part only
(lossy). Crowd annotations and scores are not written.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET
from xml.sax.saxutils import quoteattr

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.data.formats.common import (
    MAX_FRAMES,
    Track,
    TrackSet,
    VideoMeta,
    build_video,
    category_by_name,
    check_size,
    decode,
    read_skeleton,
    skeleton,
)
from crossvis.errors import CrossVISError
from crossvis.io import atomic_write

log = logging.getLogger(__name__)

MAX_XML_BYTES = 1 << 30  # refuse larger annotation files before parsing them
SHAPES = ("mask", "polygon")
OTHER_SHAPES = ("box", "polyline", "points", "cuboid", "ellipse", "skeleton", "tag")


# ------------------------------------------------------------------------------------------------ CVAT RLE


def mask_to_cvat(mask: np.ndarray) -> tuple[list[int], int, int, int, int]:
    """(H, W) bool -> (rle, left, top, width, height) of CVAT: runs over the tight box, row-major, background
    first."""
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    top, left = int(ys[0]), int(xs[0])
    crop = mask[top : ys[-1] + 1, left : xs[-1] + 1].ravel()
    change = np.flatnonzero(np.diff(crop.astype(np.int8))) + 1
    runs = np.diff(np.concatenate([[0], change, [crop.size]])).tolist()
    if crop[0]:
        runs = [0, *runs]
    return runs, left, top, int(xs[-1] - left + 1), int(ys[-1] - top + 1)


def cvat_to_mask(
    rle: list[int], box: tuple[int, int, int, int], height: int, width: int, where: str
) -> np.ndarray:
    """CVAT mask attributes -> (H, W) bool; a run total other than width*height or a box off the image is an error."""
    left, top, w, h = box
    if w <= 0 or h <= 0 or left < 0 or top < 0 or left + w > width or top + h > height:
        raise CrossVISError(
            where, f"mask box left={left} top={top} width={w} height={h} is off the {width}x{height} frame"
        )
    if any(r < 0 for r in rle) or sum(rle) != w * h:
        raise CrossVISError(
            where, f"mask rle runs must be >= 0 and sum to width*height = {w * h}, got {sum(rle)}"
        )
    values = np.arange(len(rle)) % 2 == 1
    crop = np.repeat(values, rle).reshape(h, w)
    out = np.zeros((height, width), dtype=bool)
    out[top : top + h, left : left + w] = crop
    return out


def mask_to_polygon(mask: np.ndarray) -> list[float] | None:
    """Outline of the largest part of a mask as [x0, y0, x1, y1, ...] through the centres (x + 0.5, y + 0.5) of
    its boundary pixels, or None. Lossy: holes, other parts and half of each boundary pixel are lost."""
    import cv2  # optional: only polygon export needs OpenCV (opencv-python, a trackeval dependency)

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contours = [c for c in contours if len(c) >= 3]
    if not contours:
        return None
    c = max(contours, key=cv2.contourArea).reshape(-1, 2)
    return (c.astype(float) + 0.5).ravel().tolist()  # boundary pixels' centres in continuous coordinates


# ------------------------------------------------------------------------------------------------ writing


def _shape_xml(shape: str, mask: np.ndarray, frame: int, outside: int, z: int) -> str | None:
    head = f'frame="{frame}" keyframe="1" outside="{outside}" occluded="0"'
    if shape == "polygon":
        poly = mask_to_polygon(mask)
        if poly is None:
            return None
        pts = ";".join(f"{x:.2f},{y:.2f}" for x, y in zip(poly[0::2], poly[1::2]))
        return f'    <polygon {head} points="{pts}" z_order="{z}">\n    </polygon>\n'
    rle, left, top, w, h = mask_to_cvat(mask)
    runs = ", ".join(map(str, rle))
    return (
        f'    <mask {head} rle="{runs}" left="{left}" top="{top}" width="{w}" height="{h}" z_order="{z}">\n'
        "    </mask>\n"
    )


def _track_xml(index: int, label: str, track: Track, length: int, shape: str, z: int) -> str:
    parts = [f'  <track id="{index}" label={quoteattr(label)} source="auto">\n']
    last = None
    for f in range(length):
        rle = track.masks[f]
        if rle is not None:
            last = decode(rle)
            xml = _shape_xml(shape, last, f, 0, z)
        elif last is not None:  # the first absent frame after a run: an outside copy, as CVAT writes it
            xml, last = _shape_xml(shape, last, f, 1, z), None
        else:
            continue
        if xml:
            parts.append(xml)
    parts.append("  </track>\n")
    return "".join(parts)


def video_xml(video: VideoMeta, tracks: list[Track], categories: list[dict], shape: str) -> str:
    """The CVAT for video 1.1 document of one video."""
    labels = "".join(
        f"        <label>\n          <name>{_esc(c['name'])}</name>\n          <type>{shape}</type>\n"
        "          <attributes>\n          </attributes>\n        </label>\n"
        for c in categories
    )
    head = (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n  <meta>\n    <task>\n'
        f"      <name>{_esc(video.name)}</name>\n      <size>{video.length}</size>\n"
        "      <mode>interpolation</mode>\n      <overlap>0</overlap>\n"
        f"      <start_frame>0</start_frame>\n      <stop_frame>{video.length - 1}</stop_frame>\n"
        f"      <labels>\n{labels}      </labels>\n"
        f"      <original_size>\n        <width>{video.width}</width>\n        <height>{video.height}</height>\n"
        "      </original_size>\n    </task>\n  </meta>\n"
    )
    names = {c["id"]: c["name"] for c in categories}
    kept = [t for t in tracks if not t.iscrowd]
    order = sorted(range(len(kept)), key=lambda i: (kept[i].score or 0.0, i))  # z: higher score on top
    z_of = {i: z for z, i in enumerate(order)}
    body = "".join(
        _track_xml(i, names[t.category_id], t, video.length, shape, z_of[i]) for i, t in enumerate(kept)
    )
    return head + body + "</annotations>\n"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_cvat(ts: TrackSet, out: Path, *, shape: str = "mask") -> None:
    """Write ``ts`` as one CVAT for video 1.1 XML per video under ``out`` (an empty folder)."""
    if shape not in SHAPES:
        raise CrossVISError("--cvat-shape", f"must be one of {', '.join(SHAPES)}, got {shape!r}")
    for video in ts.videos:
        with atomic_write(out / f"{video.name}.xml") as f:
            f.write(video_xml(video, ts.tracks.get(video.id, []), ts.categories, shape))
    crowd = sum(t.iscrowd for tracks in ts.tracks.values() for t in tracks)
    if crowd:
        log.warning("%d crowd annotation(s) not written: CVAT has no crowd regions", crowd)
    with atomic_write(out / "videos.json") as f:
        json.dump(skeleton(ts), f)


# ------------------------------------------------------------------------------------------------ reading


def _read_bytes(path: Path) -> tuple[bytes, str]:
    """The XML bytes of ``path`` (an .xml file or a CVAT export .zip holding annotations.xml), size-checked."""
    where = str(path)
    try:
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as z:
                info = z.getinfo("annotations.xml")
                if info.file_size > MAX_XML_BYTES:
                    raise CrossVISError(
                        where, f"annotations.xml is {info.file_size} bytes (limit {MAX_XML_BYTES})"
                    )
                return z.read(info), f"{path}/annotations.xml"
        if path.stat().st_size > MAX_XML_BYTES:
            raise CrossVISError(where, f"{path.stat().st_size} bytes is over the {MAX_XML_BYTES}-byte limit")
        return path.read_bytes(), where
    except KeyError:
        raise CrossVISError(where, "the zip holds no annotations.xml") from None
    except (OSError, zipfile.BadZipFile) as e:
        raise CrossVISError(where, f"cannot read: {e}") from None


def parse_xml(data: bytes, where: str) -> ET.Element:
    """Parse untrusted XML: no DTD, so no entity expansion (billion laughs) and no external entities."""
    head = data[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in data.lower():
        raise CrossVISError(where, "XML with a DTD or entities is refused (CVAT never writes one)")
    try:
        try:
            from defusedxml.ElementTree import fromstring
        except (
            ImportError
        ):  # the checks above already refuse DTDs; the stdlib never fetches external entities
            fromstring = ET.fromstring
        return fromstring(data)
    except ET.ParseError as e:
        line, col = e.position
        raise CrossVISError(
            f"{where}:{line}", f"malformed XML (column {col}: {str(e).split(':')[0]})"
        ) from None
    except Exception as e:  # defusedxml's own refusals
        raise CrossVISError(where, f"refused XML: {type(e).__name__}") from None


def _int_attr(el: ET.Element, key: str, where: str) -> int:
    v = el.get(key)
    try:
        return int(float(v)) if v is not None and float(v).is_integer() else int(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CrossVISError(where, f"<{el.tag}> needs an integer {key!r}, got {v!r}") from None


def read_meta(root: ET.Element, where: str) -> tuple[str | None, int, int, int, list[str]]:
    """(task name, frame count, height, width, label names) from ``<meta>``."""
    if root.tag != "annotations":
        raise CrossVISError(where, f"root element is <{root.tag}>, expected <annotations>")
    if root.find("image") is not None:
        raise CrossVISError(where, "this is 'CVAT for images' XML; export the task as 'CVAT for video 1.1'")
    meta = root.find("meta")
    task = None
    if meta is not None:
        task = meta.find("task") if meta.find("task") is not None else meta.find("job")
    if task is None:
        raise CrossVISError(where, "no <meta><task> (or <job>): the frame count and size are unknown")
    size_el, orig = task.find("size"), task.find("original_size")
    try:
        length = int(size_el.text)  # type: ignore[union-attr, arg-type]
        width = int(orig.find("width").text)  # type: ignore[union-attr, arg-type]
        height = int(orig.find("height").text)  # type: ignore[union-attr, arg-type]
    except (AttributeError, TypeError, ValueError):
        raise CrossVISError(
            where, "<meta><task> needs <size> and <original_size><width>/<height> integers"
        ) from None
    check_size(height, width, where)
    if not 0 < length <= MAX_FRAMES:
        raise CrossVISError(where, f"task <size> {length} is not a frame count in 1..{MAX_FRAMES}")
    name_el = task.find("name")
    labels = [n.text or "" for lab in meta.iter("label") if (n := lab.find("name")) is not None]  # type: ignore[union-attr]
    return (name_el.text if name_el is not None else None), length, height, width, labels


def _shape_mask(el: ET.Element, height: int, width: int, where: str) -> np.ndarray:
    if el.tag == "mask":
        try:
            rle = [int(x) for x in (el.get("rle") or "").replace(" ", "").split(",") if x != ""]
        except ValueError:
            raise CrossVISError(where, "mask rle must be comma-separated integers") from None
        box = tuple(_int_attr(el, k, where) for k in ("left", "top", "width", "height"))
        return cvat_to_mask(rle, box, height, width, where)  # type: ignore[arg-type]
    try:
        pts = [float(v) for p in (el.get("points") or "").split(";") for v in p.split(",")]
    except ValueError:
        raise CrossVISError(where, "polygon points must be 'x0,y0;x1,y1;...'") from None
    if len(pts) < 6 or len(pts) % 2:
        raise CrossVISError(where, "a polygon needs at least 3 points")
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([pts], height, width))).astype(bool)


def read_track(el: ET.Element, length: int, height: int, width: int, where: str) -> tuple[list, int]:
    """One ``<track>`` -> (per-frame compressed RLE or None, skipped non-mask shapes)."""
    masks: list = [None] * length
    shapes = [s for s in el if s.tag in SHAPES]
    skipped = sum(1 for s in el if s.tag in OTHER_SHAPES)
    frames = []
    for s in shapes:
        f = _int_attr(s, "frame", where)
        if not 0 <= f < length:
            raise CrossVISError(f"{where} frame {f}", f"frame outside the task's {length} frames")
        frames.append(f)
    if len(set(frames)) != len(frames):
        raise CrossVISError(where, "two shapes in one frame")
    order = sorted(range(len(shapes)), key=lambda i: frames[i])
    for n, i in enumerate(order):
        s, f = shapes[i], frames[i]
        end = frames[order[n + 1]] if n + 1 < len(order) else length
        if s.get("outside", "0") not in ("0", "1"):
            raise CrossVISError(f"{where} frame {f}", f"outside must be 0 or 1, got {s.get('outside')!r}")
        if s.get("outside", "0") == "1":
            continue
        m = _shape_mask(s, height, width, f"{where} frame {f}")
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) if m.any() else None
        for g in range(f, end):  # a shape holds until the track's next shape
            masks[g] = rle
    return masks, skipped


def read_cvat_file(
    path: Path, categories: list[dict] | None
) -> tuple[str, int, int, int, list[dict], list[Track]]:
    """One CVAT for video XML (or export zip) -> (name, length, height, width, categories, tracks)."""
    data, where = _read_bytes(path)
    root = parse_xml(data, where)
    name, length, height, width, labels = read_meta(root, where)
    cats = categories or [{"id": i + 1, "name": n} for i, n in enumerate(dict.fromkeys(labels))]
    tracks, skipped = [], 0
    for el in root.iter("track"):
        w = f"{where}: track id {el.get('id')}"
        label = el.get("label")
        if not label:
            raise CrossVISError(w, "track without a label")
        cid = category_by_name(cats, label, w)
        masks, n = read_track(el, length, height, width, w)
        skipped += n
        if any(m is not None for m in masks):
            tracks.append(Track(len(tracks) + 1, cid, masks))
    if skipped:
        log.warning(
            "%s: %d box/polyline/point shapes skipped (only masks and polygons become masks)", where, skipped
        )
    name = name or (path.parent.name if path.name == "annotations.xml" else path.stem)
    return name, length, height, width, cats, tracks


def read_cvat(src: Path, *, categories: list[dict] | None, images: Path | None) -> TrackSet:
    """A CVAT for video XML, export zip, or folder of them (one video each) -> TrackSet."""
    src = Path(src)
    if src.is_dir():
        files = sorted([*src.glob("*.xml"), *src.glob("*/annotations.xml"), *src.glob("*.zip")])
        sk = read_skeleton(src / "videos.json")
    elif src.is_file():
        files, sk = [src], None
    else:
        raise CrossVISError(src, "no such file or folder")
    if not files:
        raise CrossVISError(src, "no .xml or .zip files")
    known, sk_cats = sk if sk else (None, None)
    cats = categories or sk_cats
    ts = TrackSet([], cats or [])
    for k, path in enumerate(files, start=1):
        name, length, h, w, file_cats, tracks = read_cvat_file(path, cats)
        if cats is None:  # categories from the first file's labels; later files must use the same names
            cats = ts.categories = file_cats
        vid = known[name].id if known and name in known else k
        video = build_video(
            name, vid=vid, height=h, width=w, min_length=length, known=known, images=images, where=str(path)
        )
        if video.length != length:
            raise CrossVISError(path, f"task size {length} differs from the video's {video.length} frames")
        ts.videos.append(video)
        ts.tracks[video.id] = tracks
    return ts
