"""A local validation split of a YouTube-VIS-format training JSON (YouTube-VIS and OVIS keep their validation
labels private): ``crossvis split train.json --val-fraction 0.1 --seed 0 --output DIR``.

Videos (never frames) are divided, so no object is seen in both parts. The split is a pure function of the
file's content, the fraction and the seed. Every class with at least two videos is kept in both parts:

1. classes are visited from the rarest (fewest videos) up; a class with no video in val yet gets one of its
   videos (the first in seeded order) moved to val, if that leaves each of that video's classes at least one
   video in train;
2. val is then filled in seeded order with videos whose move leaves every class in train.

A class that is in a single video stays in train only (reported). Both JSONs keep the input's other top-level
keys (``info``, ``licenses``, ``categories``) and are written atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from crossvis.data.ytvis import YTVISDataset, read_json
from crossvis.errors import CrossVISError
from crossvis.io import atomic_write

log = logging.getLogger(__name__)


@dataclass
class SplitResult:
    """train/val: output paths; *_videos: video counts; train_only: class names without a val video."""

    train: Path
    val: Path
    train_videos: int
    val_videos: int
    train_only: list[str]


def choose_val_videos(video_classes: dict[int, set[int]], n_val: int, seed: int) -> set[int]:
    """Pick ``n_val`` video ids for val (see the module docstring for the rule).

    ``video_classes``: video id -> set of class ids in it (may be empty).
    """
    order = sorted(video_classes)
    random.Random(seed).shuffle(order)
    in_train = Counter(c for cs in video_classes.values() for c in cs)
    val: set[int] = set()

    def can_move(v: int) -> bool:
        return v not in val and all(in_train[c] >= 2 for c in video_classes[v])

    def move(v: int) -> None:
        val.add(v)
        for c in video_classes[v]:
            in_train[c] -= 1

    covered: set[int] = set()
    for c in sorted(in_train, key=lambda c: (in_train[c], c)):
        if len(val) >= n_val or c in covered:
            continue
        v = next((v for v in order if c in video_classes[v] and can_move(v)), None)
        if v is not None:
            move(v)
            covered |= video_classes[v]
    for v in order:
        if len(val) >= n_val:
            break
        if can_move(v):
            move(v)
    return val


def split_dataset(
    annotations: str | os.PathLike, *, val_fraction: float, seed: int, output: str | os.PathLike
) -> SplitResult:
    """Write ``OUTPUT/train.json`` and ``OUTPUT/val.json``: a video-level split of ``annotations``."""
    if not 0.0 < val_fraction < 1.0:
        raise CrossVISError("--val-fraction", f"must be between 0 and 1 (exclusive), got {val_fraction}")
    data = read_json(annotations)
    ds = YTVISDataset(data, source=str(annotations))  # validates the structure: ids, lengths, categories
    if "videos" not in data or not ds.has_annotations:
        raise CrossVISError(annotations, "needs a YouTube-VIS training JSON with 'videos' and 'annotations'")
    n = len(ds.videos)
    if n < 2:
        raise CrossVISError(annotations, f"{n} video(s): at least 2 are needed to split")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise CrossVISError(out, "--output must be a folder")
    n_val = expected_val_count(n, val_fraction)
    classes = {v.id: {a["category_id"] for a in v.annotations} for v in ds.videos}
    val = choose_val_videos(classes, n_val, seed)
    if len(val) < n_val:
        log.warning(
            "only %d of %d val videos could be taken without removing a class from train", len(val), n_val
        )
    parts = {
        "train": _subset(data, keep=lambda vid: vid not in val),
        "val": _subset(data, keep=lambda vid: vid in val),
    }
    names = {c["id"]: c["name"] for c in ds.categories}
    in_val = {c for v in val for c in classes[v]}
    train_only = sorted(names[c] for c in {c for cs in classes.values() for c in cs} - in_val)
    if train_only:
        log.warning("classes with no video in val (too few videos): %s", ", ".join(train_only))
    out.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        with atomic_write(out / f"{name}.json") as f:
            json.dump(part, f)
    return SplitResult(out / "train.json", out / "val.json", n - len(val), len(val), train_only)


def _subset(data: dict, keep) -> dict:
    part = {k: v for k, v in data.items() if k not in ("videos", "annotations")}
    part["videos"] = [v for v in data["videos"] if keep(v["id"])]
    part["annotations"] = [a for a in data.get("annotations") or [] if keep(a["video_id"])]
    return part


def expected_val_count(n_videos: int, val_fraction: float) -> int:
    """How many val videos :func:`split_dataset` aims for (at least 1, at most n - 1)."""
    return min(n_videos - 1, max(1, math.floor(val_fraction * n_videos + 0.5)))
