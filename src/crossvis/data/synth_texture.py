"""Textures of the synthetic generator: a small random spec (pattern, two colours, period, angle) and its
painting as a full-frame (H, W, 3) float image. Split so that look-alike objects can reuse a spec with
close colours (:mod:`crossvis.data.appearance`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TextureSpec:
    """``kind``: 0 stripes, 1 checks, 2 dots, 3 smooth blend; ``c1``, ``c2``: (3,) RGB in [0, 255]."""

    kind: int
    c1: np.ndarray
    c2: np.ndarray
    period: float
    angle: float


def draw_texture_spec(rng: np.random.Generator, kind: int) -> TextureSpec:
    """Draw the colours, period and angle of a texture of pattern ``kind`` (in this order, from ``rng``)."""
    c1, c2 = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    period = rng.uniform(4, 10)
    a = rng.uniform(0, math.pi)
    return TextureSpec(kind=kind, c1=c1, c2=c2, period=period, angle=a)


def paint_texture(spec: TextureSpec, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float texture in [0, 255]: stripes, checks, dots or smooth blend of two colours."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period, a = spec.period, spec.angle
    if spec.kind == 0:
        t = (np.sin((xx * math.cos(a) + yy * math.sin(a)) * 2 * math.pi / period) > 0).astype(np.float32)
    elif spec.kind == 1:
        t = ((xx // period + yy // period) % 2).astype(np.float32)
    elif spec.kind == 2:
        t = ((np.sin(xx * 2 * math.pi / period) * np.sin(yy * 2 * math.pi / period)) > 0.3).astype(np.float32)
    else:
        t = (0.5 + 0.5 * np.sin(xx / (period * 2) + a) * np.cos(yy / (period * 2))).astype(np.float32)
    return spec.c1[None, None] * (1 - t[..., None]) + spec.c2[None, None] * t[..., None]
