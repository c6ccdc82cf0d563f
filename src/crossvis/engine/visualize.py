"""Overlays: each track's mask in a colour fixed by its id, with box, class name, id and score."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def track_color(track_id: int) -> tuple[int, int, int]:
    """A bright colour that depends only on the id (golden-ratio hue steps)."""
    h = (track_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_overlay(
    frame: np.ndarray,
    *,
    track_ids: list[int],
    masks: np.ndarray,
    boxes: np.ndarray,
    labels: list[str],
    scores: list[float],
    alpha: float = 0.5,
) -> np.ndarray:
    """frame (H, W, 3) uint8 RGB; masks (N, H, W) bool; boxes (N, 4) xyxy -> a new overlaid frame."""
    out = frame.astype(np.float32)
    for tid, m in zip(track_ids, masks):
        c = np.array(track_color(tid), dtype=np.float32)
        out[m] = out[m] * (1 - alpha) + c * alpha
    img = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for tid, box, label, score in zip(track_ids, boxes, labels, scores):
        c = track_color(tid)
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, x1, y1], outline=c, width=2)
        text = f"#{tid} {label} {score:.2f}"
        tw = draw.textlength(text, font=font)
        ty = max(0.0, y0 - 12)
        draw.rectangle([x0, ty, x0 + tw + 4, ty + 12], fill=c)
        draw.text((x0 + 2, ty), text, fill=(0, 0, 0), font=font)
    return np.asarray(img)


def contact_sheet(frames: list[np.ndarray], columns: int = 4, width: int = 256) -> Image.Image:
    """Tile frames (resized to ``width``) into one image."""
    tiles = [Image.fromarray(f) for f in frames]
    tiles = [t.resize((width, max(1, round(t.height * width / t.width)))) for t in tiles]
    h = max(t.height for t in tiles)
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * width, rows * h), (20, 20, 20))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % columns) * width, (i // columns) * h))
    return sheet


def draw_result(frame: np.ndarray, result, min_score: float = 0.5) -> np.ndarray:
    """Overlay a :class:`~crossvis.engine.predictor.FrameResult`, drawing tracks scored >= ``min_score``."""
    keep = np.flatnonzero(result.scores >= min_score)
    return draw_overlay(
        frame,
        track_ids=result.track_ids[keep].tolist(),
        masks=result.masks[keep],
        boxes=result.boxes[keep],
        labels=[result.class_names[i] for i in keep],
        scores=result.scores[keep].tolist(),
    )
