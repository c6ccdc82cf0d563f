"""Appearance change for the synthetic generator: what makes an object look different between two frames.

Six options, each a strength (0 = off, 1 = the documented strength) multiplied by ``0.5 + 0.5 * difficulty``
(the *level*; 1 at the default difficulty 1):

- ``lighting_drift``: the whole frame's brightness, colour tint and a light gradient drift over the clip;
- ``color_drift``: each object's texture blends towards a second texture and its colours drift;
- ``deformation``: each object's outline wobbles and squashes/stretches non-rigidly over time;
- ``motion_blur``: each frame averages sub-frames over an exposure around its time (objects and camera move);
- ``entry_scale``: an object entering the view (at its start, or back after a gap) grows from small to full
  size over ``ENTRY_RAMP`` frames, as if approaching the camera;
- ``lookalikes``: extra objects of an existing object's class with close colours and the same pattern.

Each option draws from its own random stream (seeded by seed, video and option), separate from the base
generator's: with every option off the output is byte for byte what it was before these options existed,
and turning one option on leaves the objects, trajectories and the other options' draws unchanged.

Masks stay exact: they are the visible pixels of each object as rendered. With motion blur a frame is the
mean of sub-frames; its masks are those of the middle sub-frame, the *mid-exposure* position (the frame's own
time). Pixels outside that mask may hold a fraction of the object's colour (the smear), as in real video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from crossvis.data.synth_texture import TextureSpec, draw_texture_spec, paint_texture

APPEARANCE_OPTIONS = (
    "lighting_drift",
    "color_drift",
    "deformation",
    "motion_blur",
    "entry_scale",
    "lookalikes",
)
ENTRY_RAMP = 3.0  # frames an entering object takes to grow to full size
BLUR_SAMPLES = 7  # sub-frames per exposure (odd: the middle one is the frame's own time)


def appearance_strengths(every: float, per_option: dict[str, float | None]) -> dict[str, float]:
    """Strength of each option: its own value where given (not None), else ``every``."""
    return {k: (every if per_option.get(k) is None else float(per_option[k])) for k in APPEARANCE_OPTIONS}


def level(p, name: str) -> float:
    """Option ``name``'s strength scaled by the difficulty (0 when off)."""
    return float(getattr(p, name)) * (0.5 + 0.5 * p.difficulty)


def _rng(p, index: int, name: str) -> np.random.Generator:
    return np.random.default_rng([p.seed, index, 0xA11CE, APPEARANCE_OPTIONS.index(name)])


def _clip_phase(t: float, length: int) -> float:
    """0 at the first frame .. 1 at the last."""
    return t / max(1, length - 1)


# ----------------------------------------------------------------------------------------------- per video


@dataclass(frozen=True)
class Lighting:
    """Per-video lighting drift: log-gain amplitude, (3,) tint, gradient strength and its angle/spin, and
    ``still`` (the drift position of a one-frame video, in [-1, 1])."""

    gain: float
    tint: np.ndarray
    gradient: float
    angle: float
    spin: float
    still: float


def prepare_appearance(p, index: int, objs: list[dict], *, length: int, h: int, w: int) -> Lighting | None:
    """Add look-alikes to ``objs`` and attach each enabled option's per-object parameters (in place);
    return the video's lighting drift (None when off)."""
    if p.lookalikes > 0:
        objs.extend(_lookalikes(_rng(p, index, "lookalikes"), p, objs, h=h, w=w, length=length))
    if p.color_drift > 0:
        rng, lv = _rng(p, index, "color_drift"), level(p, "color_drift")
        for o in objs:
            spec = draw_texture_spec(rng, int(rng.integers(4)))
            o["drift"] = {
                "tex": paint_texture(spec, h, w),
                "blend": min(0.9, 0.6 * lv),
                "gain": rng.uniform(-1, 1, 3) * min(0.6, 0.35 * lv),
            }
    if p.deformation > 0:
        rng, lv = _rng(p, index, "deformation"), level(p, "deformation")
        for o in objs:
            o["deform"] = {
                "amp": min(0.4, 0.2 * lv),
                "lobes": int(rng.integers(2, 5)),
                "phase": rng.uniform(0, 2 * math.pi),
                "speed": rng.uniform(0.5, 1.0) * rng.choice([-1, 1]),
                "squash": min(0.5, 0.25 * lv),
                "axis": rng.uniform(0, math.pi),
                "speed2": rng.uniform(0.4, 0.9),
                "phase2": rng.uniform(0, 2 * math.pi),
            }
    if p.entry_scale > 0:
        rng, lv = _rng(p, index, "entry_scale"), level(p, "entry_scale")
        for o in objs:
            entries = [float(o["start"])] if o["start"] > 0 else [-rng.uniform(0, ENTRY_RAMP)]
            if o["gap"]:
                entries.append(float(o["gap"][1]))
            o["entry"] = {"times": entries, "from": max(0.15, 1 - 0.55 * lv)}
    if p.lighting_drift <= 0:
        return None
    rng, lv = _rng(p, index, "lighting_drift"), level(p, "lighting_drift")
    return Lighting(
        gain=min(0.8, 0.35 * lv) * rng.choice([-1.0, 1.0]),
        tint=rng.uniform(-1, 1, 3) * min(0.3, 0.12 * lv),
        gradient=min(0.6, 0.25 * lv),
        angle=rng.uniform(0, 2 * math.pi),
        spin=rng.uniform(-0.3, 0.3),
        still=rng.uniform(-1, 1),
    )


def _lookalikes(rng: np.random.Generator, p, objs: list[dict], *, h: int, w: int, length: int) -> list[dict]:
    """Objects copying a random existing object's class, pattern and (closely) colours, on their own path."""
    n = max(1, int(round(level(p, "lookalikes") * rng.uniform(0.6, 1.6))))
    out = []
    for _ in range(n):
        k = int(rng.integers(len(objs)))
        src: TextureSpec = objs[k]["tex_spec"]
        spec = TextureSpec(
            kind=src.kind,
            c1=np.clip(src.c1 + rng.normal(0, 8, 3), 0, 255),
            c2=np.clip(src.c2 + rng.normal(0, 8, 3), 0, 255),
            period=src.period * rng.uniform(0.9, 1.1),
            angle=src.angle,
        )
        speed = rng.uniform(0.5, 1.5) * (1 + p.difficulty) * min(h, w) / 60
        ang = rng.uniform(0, 2 * math.pi)
        out.append(
            {
                **objs[k],
                "x": rng.uniform(0.15, 0.85) * w,
                "y": rng.uniform(0.15, 0.85) * h,
                "vx": speed * math.cos(ang),
                "vy": speed * math.sin(ang),
                "r0": objs[k]["r0"] * rng.uniform(0.85, 1.15),
                "angle": rng.uniform(0, 2 * math.pi),
                "tex": paint_texture(spec, h, w),
                "tex_spec": spec,
                "z": rng.uniform(),
                "start": 0,
                "stop": length,
                "gap": None,
                "lookalike_of": k,
            }
        )
    return out


# ----------------------------------------------------------------------------------------------- per frame


def entry_factor(o: dict, t: float) -> float:
    """Radius factor of object ``o`` at time ``t``: grows linearly to 1 over ENTRY_RAMP frames after each entry."""
    e = o.get("entry")
    if e is None:
        return 1.0
    # the latest entry up to half a frame ahead: sub-frames of a motion-blurred entry frame (times t - 0.5 ..
    # t + 0.5) all belong to that entry, and start small
    past = [x for x in e["times"] if x <= t + 0.5]
    if not past:
        return e["from"]
    since = max(0.0, t - max(past))
    if since >= ENTRY_RAMP:
        return 1.0
    return e["from"] + (1 - e["from"]) * since / ENTRY_RAMP


def deform_grid(
    o: dict, xx: np.ndarray, yy: np.ndarray, *, cx: float, cy: float, t: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel grids (H, W) warped so that a rigid shape tested on them is ``o``'s deformed shape at time ``t``:
    a radial wobble of ``lobes`` lobes travelling round the outline, and a squash/stretch along ``axis``."""
    d = o["deform"]
    du, dv = xx - cx, yy - cy
    wobble = 1 + d["amp"] * np.sin(d["lobes"] * np.arctan2(dv, du) + d["phase"] + d["speed"] * t)
    b = 1 + d["squash"] * math.sin(d["speed2"] * t + d["phase2"])
    c, s = math.cos(d["axis"]), math.sin(d["axis"])
    along, across = (c * du + s * dv) / b, (-s * du + c * dv) * b
    du2, dv2 = c * along - s * across, s * along + c * across
    return cx + du2 / wobble, cy + dv2 / wobble


def object_pixels(o: dict, m: np.ndarray, *, t: int, length: int) -> np.ndarray:
    """(N, 3) colours of object ``o`` on the pixels of mask ``m`` (H, W) in frame ``t`` (colour drift)."""
    d = o.get("drift")
    if d is None:
        return o["tex"][m]
    a = d["blend"] * _clip_phase(t, length)
    return ((1 - a) * o["tex"][m] + a * d["tex"][m]) * (1 + d["gain"] * _clip_phase(t, length))


def exposure_offsets(p) -> list[float]:
    """Sub-frame times (in frames) around a frame's time; [0.0] without motion blur. The middle one is 0."""
    if p.motion_blur <= 0:
        return [0.0]
    e, half = min(1.0, 0.8 * level(p, "motion_blur")), BLUR_SAMPLES // 2
    return [e * (j - half) / (2 * half) for j in range(BLUR_SAMPLES)]


def apply_lighting(
    img: np.ndarray, light: Lighting, *, t: int, length: int, xx: np.ndarray, yy: np.ndarray
) -> np.ndarray:
    """``img`` (H, W, 3) float under the lighting of frame ``t``: gain x tint x a linear light gradient."""
    h, w = img.shape[:2]
    s = light.still if length == 1 else 2 * _clip_phase(t, length) - 1  # -1 .. 1 over the clip
    a = light.angle + light.spin * t
    ramp = 1 + light.gradient * s * ((xx - w / 2) * math.cos(a) + (yy - h / 2) * math.sin(a)) / (
        max(h, w) / 2
    )
    factor = math.exp(light.gain * s) * np.clip(ramp, 0.2, None)
    return img * factor[..., None] * (1 + light.tint * s)[None, None]
