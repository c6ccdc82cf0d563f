"""Contact sheet of the synthetic generator's appearance-change options: docs/synthetic_appearance.png.

    python benchmarks/synthetic_appearance.py [--out docs/synthetic_appearance.png] [--video 3]

One row per option (strength 1 at difficulty 1, the others off), the first row with every option off, the
last with all of them on at difficulty 2; 6 frames spread over the clip. The "motion_blur + masks" row draws
the outlines of the mid-exposure masks (the annotation) on the blurred frames.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw

from crossvis.data.appearance import APPEARANCE_OPTIONS
from crossvis.data.synthetic import SynthParams, render_video
from crossvis.engine.visualize import contact_sheet
from crossvis.io import atomic_path

COLUMNS, TILE = 6, 192


def outlined(frame: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """``frame`` with each mask's boundary pixels painted white."""
    out = frame.copy()
    for m in masks:
        inner = m.copy()
        inner[1:-1, 1:-1] &= m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        out[m & ~inner] = 255
    return out


def row(p: SynthParams, video: int, *, masks: bool = False) -> Image.Image:
    frames, objects, _ = render_video(p, video)
    pick = np.linspace(0, len(frames) - 1, COLUMNS).round().astype(int)
    if masks:
        frames = [
            outlined(f, [o["masks"][t] for o in objects if o["masks"][t] is not None])
            for t, f in enumerate(frames)
        ]
    return contact_sheet([frames[t] for t in pick], columns=COLUMNS, width=TILE)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/synthetic_appearance.png")
    ap.add_argument("--video", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1000)
    args = ap.parse_args()
    base = SynthParams(videos=args.video + 1, frames=12, seed=args.seed, difficulty=1.0)
    rows = [("off", row(base, args.video))]
    for name in APPEARANCE_OPTIONS:
        rows.append((name, row(replace(base, **{name: 1.0}), args.video)))
    rows.append(("motion_blur + masks", row(replace(base, motion_blur=1.0), args.video, masks=True)))
    every = {name: 1.0 for name in APPEARANCE_OPTIONS}
    rows.append(("all, difficulty 2", row(replace(base, difficulty=2.0, **every), args.video)))
    label_w = 150
    h = max(r.height for _, r in rows)
    sheet = Image.new("RGB", (label_w + COLUMNS * TILE, h * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (name, r) in enumerate(rows):
        sheet.paste(r, (label_w, i * h))
        draw.text((6, i * h + h // 2 - 6), name, fill=(0, 0, 0))
    with atomic_path(args.out) as tmp:
        sheet.save(tmp, format="PNG")
    print(f"wrote {args.out} ({len(rows)} rows x {COLUMNS} frames, video {args.video}, seed {args.seed})")


if __name__ == "__main__":
    main()
