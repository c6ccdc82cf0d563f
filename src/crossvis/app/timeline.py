"""The tracks of a video as a table and as a timeline image (track x frame presence), drawn with Pillow.

An identity switch shows in the timeline as one track ending where another of the same class begins."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from crossvis.engine.visualize import track_color

TRACK_COLUMNS = ["track", "class", "score", "first", "last", "frames"]  # frames: how many it is present in
TOP = 40  # pixels above the first row: frame numbers, and room for the label Gradio lays over the image


def track_rows(tracks: list[dict]) -> list[list]:
    """One row per track of a ``VideoResult.tracks`` list (``segmentations``: one RLE or None per frame):
    [id, class name, score, first frame, last frame, number of frames present], frames counted from 0."""
    rows = []
    for t in tracks:
        present = [i for i, s in enumerate(t["segmentations"]) if s is not None]
        rows.append(
            [
                int(t["track_id"]),
                str(t["class_name"]),
                round(float(t["score"]), 3),
                present[0] if present else -1,
                present[-1] if present else -1,
                len(present),
            ]
        )
    return rows


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _ticks(num_frames: int) -> list[int]:
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 10**9) if num_frames / s <= 12)
    return list(range(0, num_frames, step))


def draw_timeline(
    tracks: list[dict], num_frames: int, *, width: int = 640, row_height: int = 20, label_width: int = 130
) -> Image.Image:
    """An RGB image: one row per track (labelled ``#id class``), a cell in the track's overlay colour for
    each frame it is present in, frame numbers along the top."""
    font = _font(13)
    top, n = TOP, max(1, num_frames)
    cell = max(1.0, (width - label_width - 10) / n)
    height = top + row_height * max(1, len(tracks)) + 6
    img = Image.new("RGB", (int(label_width + cell * n + 10), height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for f in _ticks(n):
        x = label_width + f * cell
        draw.line([(x, top - 4), (x, height - 4)], fill=(225, 225, 225))
        draw.text((x + 2, top - 18), str(f), fill=(90, 90, 90), font=font)
    draw.text((4, top - 18), "frame ->", fill=(90, 90, 90), font=font)
    if not tracks:
        draw.text((4, top + 2), "no tracks", fill=(90, 90, 90), font=font)
    for r, t in enumerate(tracks):
        y = top + r * row_height
        color = track_color(int(t["track_id"]))
        draw.text((4, y + 2), f"#{t['track_id']} {t['class_name']}"[:16], fill=(0, 0, 0), font=font)
        for f, seg in enumerate(t["segmentations"]):
            if seg is not None:
                x = label_width + f * cell
                draw.rectangle([x, y + 2, x + max(1.0, cell - 1), y + row_height - 3], fill=color)
    return img
