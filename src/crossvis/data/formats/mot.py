"""MOT challenge txt: boxes only (``frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1``).

Layout written by :func:`write_mot`::

    OUT/<video>.txt     frames count from 1; the box is the tight pixel box of the mask; conf = score (1 for
                        annotations)
    OUT/videos.json     videos and categories; MOT lines carry no class, so OUT/classes.json maps id -> category

MOT keeps boxes only: masks cannot be recovered from it, so there is no MOT import. Every track is written,
overlapping or not (boxes may overlap); crowd annotations are not written.
"""

from __future__ import annotations

import json
from pathlib import Path

from crossvis.data.formats.common import TrackSet, decode, skeleton
from crossvis.data.masks import mask_to_box
from crossvis.io import atomic_write


def mot_lines(tracks, length: int) -> list[str]:
    """MOT lines of one video's tracks (track id = MOT id), sorted by frame then id."""
    lines = []
    for f in range(length):
        for t in tracks:
            rle = t.masks[f]
            if t.iscrowd or rle is None:
                continue
            x, y, w, h = mask_to_box(decode(rle))
            conf = 1.0 if t.score is None else t.score
            lines.append(f"{f + 1},{t.id},{x:g},{y:g},{w:g},{h:g},{conf:.6g},-1,-1,-1")
    return lines


def write_mot(ts: TrackSet, out: Path) -> None:
    """Write ``ts`` in the MOT layout under ``out`` (an empty folder)."""
    classes = {}
    for video in ts.videos:
        tracks = ts.tracks.get(video.id, [])
        with atomic_write(out / f"{video.name}.txt") as f:
            f.write("".join(line + "\n" for line in mot_lines(tracks, video.length)))
        classes[video.name] = {str(t.id): ts.category_name(t.category_id) for t in tracks if not t.iscrowd}
    with atomic_write(out / "classes.json") as f:
        json.dump(classes, f)
    with atomic_write(out / "videos.json") as f:
        json.dump(skeleton(ts), f)


__all__ = ["mot_lines", "write_mot"]
