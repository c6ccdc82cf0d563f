"""YouTube-VIS JSON, normalised: compressed RLE with str counts, videos in id order, boxes and areas from the
masks, annotation ids 1.. (annotations) or a results list in file order (results).

Layout written by :func:`write_ytvis`: ``OUT/annotations.json`` or ``OUT/results.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from crossvis.data.formats.common import TrackSet, segmentations, to_ytvis
from crossvis.io import atomic_write


def results_list(ts: TrackSet) -> list[dict]:
    """A results TrackSet as the official submission list (video id order, then track order)."""
    return [
        {
            "video_id": v.id,
            "category_id": t.category_id,
            "score": t.score if t.score is not None else 1.0,
            "segmentations": segmentations(t, v.height, v.width),
        }
        for v in sorted(ts.videos, key=lambda v: v.id)
        for t in sorted(ts.tracks.get(v.id, []), key=lambda t: t.id)
    ]


def write_ytvis(ts: TrackSet, out: Path) -> None:
    """Write ``ts`` as one normalised YouTube-VIS JSON under ``out`` (an empty folder)."""
    if ts.is_results:
        with atomic_write(out / "results.json") as f:
            json.dump(results_list(ts), f)
    else:
        with atomic_write(out / "annotations.json") as f:
            json.dump(to_ytvis(ts), f)


__all__ = ["results_list", "write_ytvis"]
