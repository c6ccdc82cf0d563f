"""Synthetic YouTube-VIS-format videos: textured shapes moving over textured, moving backgrounds.

What makes real VIS hard is here on purpose: several instances of one class that differ only in
appearance, crossing paths with partial and full occlusion (depth order), objects that enter late or leave
and come back, scale change, and videos of varying length and resolution. Masks are the *visible* pixels
of each object after occlusion, and boxes are computed from those masks, so frames, masks and boxes agree
exactly. ``difficulty`` (0 easy .. 2 hard) scales the number of objects, speed, clutter and gaps.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from crossvis.config import SynthConfig
from crossvis.data.appearance import (
    APPEARANCE_OPTIONS,
    apply_lighting,
    deform_grid,
    entry_factor,
    exposure_offsets,
    object_pixels,
    prepare_appearance,
)
from crossvis.data.masks import encode_mask, encode_uncompressed, mask_to_box
from crossvis.data.synth_texture import draw_texture_spec, paint_texture
from crossvis.errors import CrossVISError
from crossvis.io import atomic_write
from crossvis.limits import MAX_FRAMES, MAX_SIDE, MAX_VIDEOS, pixels_ok

log = logging.getLogger(__name__)

SHAPES = ["circle", "square", "triangle", "star", "cross", "ring", "diamond", "crescent"]
MIN_VISIBLE_PIXELS = 12  # below this an object counts as absent in the frame (null segmentation)


SynthParams = SynthConfig  # the generator's settings are the config dataclass


def _shape_mask(
    shape: str, xx: np.ndarray, yy: np.ndarray, *, cx: float, cy: float, r: float, angle: float
) -> np.ndarray:
    """Binary mask of a shape of radius ``r`` centred at (cx, cy), rotated by ``angle``."""
    dx, dy = xx - cx, yy - cy
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if shape == "circle":
        return u * u + v * v <= r * r
    if shape == "square":
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= r
    if shape == "triangle":
        # equilateral, pointing up in the rotated frame
        return (v <= 0.5 * r) & (v >= -r + 1.732 * np.abs(u) * 1.0 - 0.0) & (np.abs(u) <= 0.9 * r)
    if shape == "cross":
        w = 0.33 * r
        return ((np.abs(u) <= w) & (np.abs(v) <= r)) | ((np.abs(v) <= w) & (np.abs(u) <= r))
    if shape == "ring":
        d2 = u * u + v * v
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "star":
        theta = np.arctan2(v, u)
        rad = r * (0.55 + 0.45 * np.abs(np.cos(2.5 * theta)))
        return u * u + v * v <= rad * rad
    if shape == "crescent":
        return (u * u + v * v <= r * r) & ((u - 0.45 * r) ** 2 + v * v > (0.75 * r) ** 2)
    raise ValueError(shape)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A large (2h, 2w) textured background canvas that the camera pans over."""
    H, W = 2 * h, 2 * w
    small = rng.uniform(40, 200, (max(2, H // 24), max(2, W // 24), 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(small).resize((W, H), Image.BILINEAR), dtype=np.float32)
    noise = rng.normal(0, 10, (H, W, 1)).astype(np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    lines = 15 * np.sin(xx / rng.uniform(6, 20)) * np.cos(yy / rng.uniform(6, 20))
    return np.clip(base + noise + lines[..., None], 0, 255)


def _make_objects(rng: np.random.Generator, p: SynthParams, *, length: int, h: int, w: int) -> list[dict]:
    d = p.difficulty
    n = int(rng.integers(2, 4 + round(1.5 * d)))  # 2..(4+) objects
    objs = []
    # favour several instances of the same class: draw classes from a small per-video subset
    pool = rng.choice(p.num_classes, size=min(p.num_classes, int(rng.integers(1, 4))), replace=False)
    for k in range(n):
        r0 = rng.uniform(0.09, 0.2) * min(h, w)
        growth = rng.uniform(-0.4, 0.6) * (0.5 + 0.5 * d)
        speed = rng.uniform(0.5, 1.5) * (1 + d) * min(h, w) / 60
        ang = rng.uniform(0, 2 * math.pi)
        start, stop = 0, length
        gap = None
        u = rng.uniform()
        if u < 0.15 * (0.5 + d / 2) and length > 4:
            start = int(rng.integers(1, max(2, length // 2)))  # enters late
        elif u < 0.3 * (0.5 + d / 2) and length > 6:
            g0 = int(rng.integers(2, length - 3))
            gap = (g0, g0 + int(rng.integers(1, 3)))  # leaves, then comes back
        elif u < 0.38 * (0.5 + d / 2) and length > 4:
            stop = int(rng.integers(length // 2, length))  # leaves early
        # drawn in this order (the data of every existing seed depends on it)
        cls = int(pool[k % len(pool)] if rng.uniform() < 0.7 else rng.integers(p.num_classes))
        x, y = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
        angle, spin = rng.uniform(0, 2 * math.pi), rng.uniform(-0.15, 0.15)
        spec = draw_texture_spec(rng, int(rng.integers(4)))
        objs.append(
            {
                "cls": cls,
                "x": x,
                "y": y,
                "vx": speed * math.cos(ang),
                "vy": speed * math.sin(ang),
                "r0": r0,
                "growth": growth,
                "angle": angle,
                "spin": spin,
                "tex": paint_texture(spec, h, w),
                "tex_spec": spec,
                "z": rng.uniform(),
                "start": start,
                "stop": stop,
                "gap": gap,
            }
        )
    return objs


def render_video(p: SynthParams, index: int) -> tuple[list[np.ndarray], list[dict], np.ndarray]:
    """Render video ``index`` of the set described by ``p``.

    Returns:
        frames: T arrays (H, W, 3) uint8 RGB.
        objects: per object {"cls": int, "masks": list of T (H, W) bool arrays or None,
            "lookalike_of": index of the object it copies (look-alike distractors) or None}.
        size: (H, W).
    """
    rng = np.random.default_rng([p.seed, index])
    length = max(min(2, p.frames), int(round(p.frames * rng.uniform(0.75, 1.25))))  # frames=1: stills
    scale = rng.choice([0.75, 0.875, 1.0])
    h, w = int(p.height * scale) // 2 * 2, int(p.width * scale) // 2 * 2
    bg = _background(rng, h, w)
    pan = rng.uniform(-1, 1, 2) * (0.5 + p.difficulty) * 2
    objs = _make_objects(rng, p, length=length, h=h, w=w)
    light = prepare_appearance(p, index, objs, length=length, h=h, w=w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scene = Scene(bg=bg, pan=pan, objs=objs, xx=xx, yy=yy, length=length)
    frames, masks = [], [[None] * length for _ in objs]
    offsets = exposure_offsets(p)
    for t in range(length):
        img, visible = render_frame(scene, t=t, offsets=offsets)
        if light is not None:
            img = apply_lighting(img, light, t=t, length=length, xx=xx, yy=yy)
        for k in range(len(objs)):
            m = visible == k
            if m.sum() >= MIN_VISIBLE_PIXELS:
                masks[k][t] = m
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    objects = [
        {"cls": o["cls"], "masks": masks[k], "lookalike_of": o.get("lookalike_of")}
        for k, o in enumerate(objs)
    ]
    return frames, objects, np.array([h, w])


@dataclass
class Scene:
    """One video's fixed parts: background canvas (2H, 2W, 3), camera pan (2,) per frame, objects, pixel
    grids (H, W) and the number of frames."""

    bg: np.ndarray
    pan: np.ndarray
    objs: list[dict]
    xx: np.ndarray
    yy: np.ndarray
    length: int

    def __post_init__(self) -> None:
        self.order = np.argsort([o["z"] for o in self.objs])  # painted back to front


def _present(o: dict, t: int) -> bool:
    return not (t < o["start"] or t >= o["stop"] or (o["gap"] and o["gap"][0] <= t < o["gap"][1]))


def object_mask(o: dict, time: float, *, xx: np.ndarray, yy: np.ndarray, length: int) -> np.ndarray:
    """(H, W) bool: the whole (unoccluded) shape of object ``o`` at ``time`` (in frames, may be fractional)."""
    h, w = xx.shape
    x, y = o["x"] + o["vx"] * time, o["y"] + o["vy"] * time
    # bounce off a margin so objects stay mostly inside, but may be cut by the border
    x = _bounce(x, -0.1 * w, 1.1 * w)
    y = _bounce(y, -0.1 * h, 1.1 * h)
    r = o["r0"] * (1 + o["growth"] * time / max(1, length - 1))
    if "entry" in o:
        r *= entry_factor(o, time)
    angle = o["angle"] + o["spin"] * time
    gx, gy = (xx, yy) if "deform" not in o else deform_grid(o, xx, yy, cx=x, cy=y, t=time)
    return _shape_mask(SHAPES[o["cls"]], gx, gy, cx=x, cy=y, r=max(r, 3.0), angle=angle)


def render_frame(scene: Scene, *, t: int, offsets: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t`` exposed over sub-frame times ``t + offsets`` (odd count, middle 0): the (H, W, 3) float
    mean of the sub-frames, and the (H, W) front-most object index of the middle one (mid-exposure)."""
    shots = [_render_at(scene, t=t, time=t + dt) for dt in offsets]
    img, visible = shots[len(shots) // 2]
    if len(shots) > 1:
        img = np.mean([s[0] for s in shots], axis=0)
    return img, visible


def _render_at(scene: Scene, *, t: int, time: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t``'s picture at ``time`` (a sub-frame time with motion blur): (H, W, 3) float image and the
    (H, W) index of the front-most object per pixel (-1: background)."""
    h, w = scene.xx.shape
    ox = int(np.clip(w / 2 + scene.pan[0] * time, 0, w))
    oy = int(np.clip(h / 2 + scene.pan[1] * time, 0, h))
    img = scene.bg[oy : oy + h, ox : ox + w].copy()
    visible = np.full((h, w), -1, dtype=np.int32)
    for k in scene.order:
        o = scene.objs[k]
        if not _present(o, t):
            continue
        m = object_mask(o, time, xx=scene.xx, yy=scene.yy, length=scene.length)
        img[m] = object_pixels(o, m, t=t, length=scene.length)
        visible[m] = k
    return img, visible


def _bounce(v: float, lo: float, hi: float) -> float:
    span = hi - lo
    v = (v - lo) % (2 * span)
    return lo + (v if v <= span else 2 * span - v)


def _write_video(
    img_root: Path, vi: int, frames: list[np.ndarray], objects: list[dict], *, first_ann_id: int, enc
) -> tuple[dict, list[dict], dict]:
    """Save one rendered video's frames as JPEGs -> (video record, annotation records, statistics)."""
    h, w = frames[0].shape[:2]
    name = f"video_{vi + 1:04d}"
    (img_root / name).mkdir(parents=True, exist_ok=True)
    file_names = []
    for t, fr in enumerate(frames):
        rel = f"{name}/{t:05d}.jpg"
        Image.fromarray(fr).save(img_root / rel, quality=92)
        file_names.append(rel)
    video = {"id": vi + 1, "file_names": file_names, "height": h, "width": w, "length": len(frames)}
    annotations, late_or_back = [], 0
    for o in objects:
        present = [m is not None for m in o["masks"]]
        if not any(present):
            continue
        first = present.index(True)
        last = len(present) - 1 - present[::-1].index(True)
        if first > 0 or not all(present[first : last + 1]):
            late_or_back += 1
        annotations.append(
            {
                "id": first_ann_id + len(annotations),
                "video_id": vi + 1,
                "category_id": o["cls"] + 1,
                "iscrowd": 0,
                "height": h,
                "width": w,
                "length": len(frames),
                "segmentations": [enc(m) if m is not None else None for m in o["masks"]],
                "bboxes": [mask_to_box(m) if m is not None else None for m in o["masks"]],
                "areas": [int(m.sum()) if m is not None else None for m in o["masks"]],
            }
        )
    stats = {
        "video": vi + 1,
        "frames": len(frames),
        "size": [h, w],
        "instances": len(annotations),
        "late_or_returning": late_or_back,
    }
    return video, annotations, stats


def params_record(p: SynthParams) -> dict:
    """The settings stored in annotations.json: every field, except appearance options that are off (so that
    data made before those options existed is reproduced byte for byte)."""
    return {k: v for k, v in vars(p).items() if not (k in APPEARANCE_OPTIONS and v == 0)}


def generate(out_dir: str | Path, params: SynthParams | None = None) -> dict:
    """Write ``out_dir/JPEGImages/<video>/<frame>.jpg`` and ``out_dir/annotations.json``.

    Returns statistics (categories, identities, per-video counts), also logged.
    """
    p = params or SynthParams()
    if not 1 <= p.num_classes <= len(SHAPES):
        raise CrossVISError("--classes", f"must be between 1 and {len(SHAPES)}")
    if p.videos < 1 or p.frames < 1 or p.height < 32 or p.width < 32:
        raise CrossVISError("synth", "need videos >= 1, frames >= 1 and a size of at least 32x32")
    if not pixels_ok(p.height, p.width) or p.frames > MAX_FRAMES or p.videos > MAX_VIDEOS:
        raise CrossVISError(
            "synth", f"beyond the limits: sides <= {MAX_SIDE}, {MAX_FRAMES} frames, {MAX_VIDEOS} videos"
        )
    for name in APPEARANCE_OPTIONS:
        if not 0 <= getattr(p, name) <= 4:
            raise CrossVISError(
                f"--{name.replace('_', '-')}", f"must be between 0 and 4, got {getattr(p, name)}"
            )
    out = Path(out_dir)
    enc = encode_mask if p.compressed_rle else encode_uncompressed
    videos, annotations, stats = [], [], []
    for vi in range(p.videos):
        frames, objects, _ = render_video(p, vi)
        video, anns, st = _write_video(
            out / "JPEGImages", vi, frames, objects, first_ann_id=len(annotations) + 1, enc=enc
        )
        videos.append(video)
        annotations.extend(anns)
        stats.append(st)
    categories = [{"id": c + 1, "name": SHAPES[c], "supercategory": "shape"} for c in range(p.num_classes)]
    data = {
        "info": {"description": "crossvis synthetic YouTube-VIS", "seed": p.seed, "params": params_record(p)},
        "licenses": [],
        "videos": videos,
        "categories": categories,
        "annotations": annotations,
    }
    with atomic_write(out / "annotations.json") as f:
        json.dump(data, f)
    n_inst = len(annotations)
    return {
        "categories": [c["name"] for c in categories],
        "identities": n_inst,
        "videos": p.videos,
        "frames": sum(s["frames"] for s in stats),
        "instances_per_video": n_inst / p.videos,
        "late_or_returning_fraction": sum(s["late_or_returning"] for s in stats) / max(1, n_inst),
        "per_video": stats,
    }
