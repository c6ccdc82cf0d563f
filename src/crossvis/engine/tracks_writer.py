"""Tracks of a video as JSON Lines, written as they are produced (nothing but the open file is held).

One JSON object per line, each with a ``type``:

- ``video``: ``source``, ``fps``, ``height``, ``width`` (the first line);
- ``frame``: ``frame`` (index), ``time`` (seconds from the first frame, from the input's timestamps),
  ``instances``: [{``track_id``, ``score``, ``box`` [x0, y0, x1, y1], ``segmentation`` (compressed RLE)}];
- ``track``: a track that has ended (or every remaining one at the end): ``track_id``, ``category_id``,
  ``class_name``, ``score`` (mean of its detections), ``first_frame``, ``last_frame``, ``num_detections``;
- ``end``: ``num_frames``, ``num_tracks``, ``skipped_frames`` (the last line; a file without it is
  incomplete, which atomic writing prevents).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.io import atomic_write


def encode_masks(masks: np.ndarray) -> list[dict]:
    """(N, H, W) bool -> N compressed RLEs with str counts (one pycocotools call for the frame)."""
    if len(masks) == 0:
        return []
    # (N, W, H) C-order is (H, W, N) Fortran-order: one transposing copy, and bool -> uint8 as a view
    cols = np.ascontiguousarray(masks.astype(bool, copy=False).transpose(0, 2, 1))
    rles = mask_utils.encode(cols.view(np.uint8).transpose(2, 1, 0))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


class TracksWriter:
    """Write a video's tracks as JSON Lines (format above), atomically: the file appears on :meth:`close`.

    Args:
        path: the ``.jsonl`` file to write.
        source, fps: recorded in the first line.
        class_names, category_ids: per contiguous class, to name finished tracks.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        source: str,
        fps: float,
        class_names: list[str],
        category_ids: list[int],
    ) -> None:
        self.class_names, self.category_ids = class_names, category_ids
        self.source, self.fps = source, fps
        self._ctx = atomic_write(Path(path))
        self._f = self._ctx.__enter__()
        self.frames = 0
        self.tracks = 0

    def _line(self, record: dict) -> None:
        self._f.write(json.dumps(record, separators=(",", ":")) + "\n")

    def frame(self, index: int, time: float, result, size: tuple[int, int]) -> None:
        """One :class:`~crossvis.engine.predictor.FrameResult` of a frame of ``size`` (H, W); its masks are
        encoded here, then dropped."""
        if self.frames == 0:
            h, w = size
            self._line({"type": "video", "source": self.source, "fps": self.fps, "height": h, "width": w})
        rles = encode_masks(result.masks)
        self._line(
            {
                "type": "frame",
                "frame": index,
                "time": round(time, 6),
                "instances": [
                    {"track_id": t, "score": round(s, 5), "box": [round(v, 2) for v in b], "segmentation": r}
                    for t, s, b, r in zip(
                        result.track_ids.tolist(), result.scores.tolist(), result.boxes.tolist(), rles
                    )
                ],
            }
        )
        self.frames += 1

    def finished(self, tracks) -> None:
        """Records of ended :class:`~crossvis.tracking.Track` s."""
        for t in tracks:
            self._line(
                {
                    "type": "track",
                    "track_id": t.id,
                    "category_id": int(self.category_ids[t.category]),
                    "class_name": self.class_names[t.category],
                    "score": t.score,
                    "first_frame": t.first_frame,
                    "last_frame": t.last_frame,
                    "num_detections": t.num_detections,
                }
            )
            self.tracks += 1

    def close(self, ok: bool = True, *, skipped_frames: int = 0) -> None:
        """Write the end line and publish the file (``ok``), or remove it."""
        if ok:
            self._line(
                {
                    "type": "end",
                    "num_frames": self.frames,
                    "num_tracks": self.tracks,
                    "skipped_frames": skipped_frames,
                }
            )
            self._ctx.__exit__(None, None, None)
        else:
            err = RuntimeError("tracks not completed")
            self._ctx.__exit__(type(err), err, None)


def video_tracks(data: dict) -> list[dict]:
    """A tracks file read by :func:`read_tracks_jsonl` -> whole-video tracks as
    :meth:`~crossvis.engine.predictor.VideoPredictor.predict_video` gives them (``track_id``, ``category_id``,
    ``class_name``, ``score``, ``segmentations``: one RLE or None per frame)."""
    n = data["end"]["num_frames"]
    masks: dict[int, list] = {}
    for fr in data["frames"]:
        for inst in fr["instances"]:
            masks.setdefault(inst["track_id"], [None] * n)[fr["frame"]] = inst["segmentation"]
    keys = ("track_id", "category_id", "class_name", "score")
    return [
        {**{k: t[k] for k in keys}, "segmentations": masks[t["track_id"]]}
        for t in sorted(data["tracks"], key=lambda t: t["track_id"])
        if t["track_id"] in masks
    ]


def read_tracks_jsonl(path: str | os.PathLike) -> dict:
    """Read a tracks JSON Lines file back into {"video", "frames": [...], "tracks": [...], "end"} (small
    videos and tests; streaming readers should iterate the lines)."""
    out: dict = {"video": None, "frames": [], "tracks": [], "end": None}
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            kind = r.pop("type")
            if kind in ("video", "end"):
                out[kind] = r
            else:
                out[f"{kind}s"].append(r)
    return out
