"""YouTube-VIS 2019/2021 and OVIS datasets (one JSON format), and COCO still images as one-frame videos.

Loading is cheap and validated structurally (ids, lengths, sizes, segmentation shapes); masks are decoded
lazily, and image files are checked only with ``check=True``, so a 3,000-video JSON loads in seconds.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from crossvis.data.masks import check_segmentation, decode_segmentation
from crossvis.errors import CrossVISError

log = logging.getLogger(__name__)


@dataclass
class Video:
    id: int
    file_names: list[str]
    height: int
    width: int
    annotations: list[dict] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.file_names)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; any failure is a one-line CrossVISError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CrossVISError(path, "file not found") from None
    except json.JSONDecodeError as e:
        raise CrossVISError(path, f"malformed JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CrossVISError(path, f"cannot read: {e}") from None


def _int(rec: dict, key: str, where: str) -> int:
    v = rec.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise CrossVISError(where, f"'{key}' must be an integer, got {v!r}")
    return v


class YTVISDataset:
    """A YouTube-VIS-format dataset.

    Args:
        annotations: path of the JSON file, or the already-loaded dict (a COCO instance JSON is read as
            one-frame videos).
        image_root: folder that the videos' ``file_names`` are relative to.
        check: also check every segmentation fully and (with an ``image_root``) that every image file exists.

    Attributes:
        videos: list of :class:`Video` in ascending id order, with their annotations attached.
        class_names: category names in contiguous class order (sorted category ids).
        num_identities: number of annotated object tracks (the identity classifier's size).
    """

    def __init__(
        self,
        annotations: str | os.PathLike | dict,
        image_root: str | os.PathLike | None = None,
        check: bool = False,
    ) -> None:
        if isinstance(annotations, dict):
            data, self.source = annotations, "<annotations>"
        else:
            self.source = str(annotations)
            data = read_json(annotations)
        if isinstance(data, dict) and "videos" not in data and isinstance(data.get("images"), list):
            data = coco_as_videos(data)  # a COCO still-image dataset: one-frame videos
        self.image_root = Path(image_root) if image_root is not None else None
        self._parse(data, check)
        if check and self.image_root is not None:
            self.check_images()

    # ----------------------------------------------------------------------------------------------- parsing
    def _parse(self, data: Any, check: bool) -> None:
        src = self.source
        if not isinstance(data, dict):
            raise CrossVISError(src, "top level must be a JSON object with 'videos' and 'categories'")
        for key in ("videos", "categories"):
            if not isinstance(data.get(key), list):
                raise CrossVISError(src, f"'{key}' must be a list")
        anns = data.get("annotations") or []
        if not isinstance(anns, list):
            raise CrossVISError(src, "'annotations' must be a list")
        self.has_annotations = "annotations" in data and data["annotations"] is not None

        self.categories = []
        seen_cat: set[int] = set()
        for i, c in enumerate(data["categories"]):
            where = f"{src}: categories[{i}]"
            if not isinstance(c, dict):
                raise CrossVISError(where, "must be an object")
            cid = _int(c, "id", where)
            if cid in seen_cat:
                raise CrossVISError(where, f"duplicate category id {cid}")
            seen_cat.add(cid)
            self.categories.append({"id": cid, "name": str(c.get("name", cid))})
        self.categories.sort(key=lambda c: c["id"])
        self.category_ids = [c["id"] for c in self.categories]
        self.class_names = [c["name"] for c in self.categories]
        self.cat_to_class = {cid: i for i, cid in enumerate(self.category_ids)}

        self.videos: list[Video] = []
        by_id: dict[int, Video] = {}
        for i, v in enumerate(data["videos"]):
            where = f"{src}: videos[{i}]"
            if not isinstance(v, dict):
                raise CrossVISError(where, "must be an object")
            vid = _int(v, "id", where)
            if vid in by_id:
                raise CrossVISError(where, f"duplicate video id {vid}")
            names = v.get("file_names")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise CrossVISError(where, "'file_names' must be a list of strings")
            h, w = _int(v, "height", where), _int(v, "width", where)
            if h <= 0 or w <= 0:
                raise CrossVISError(where, f"invalid size {h}x{w}")
            if "length" in v and v["length"] != len(names):
                raise CrossVISError(where, f"'length' {v['length']} differs from {len(names)} file_names")
            video = Video(vid, names, h, w)
            by_id[vid] = video
            self.videos.append(video)
        self.videos.sort(key=lambda v: v.id)
        self.video_by_id = by_id

        seen_ann: set[int] = set()
        for i, a in enumerate(anns):
            where = f"{src}: annotations[{i}]"
            if not isinstance(a, dict):
                raise CrossVISError(where, "must be an object")
            aid = _int(a, "id", where)
            where = f"{src}: annotation id {aid}"
            if aid in seen_ann:
                raise CrossVISError(where, "duplicate annotation id")
            seen_ann.add(aid)
            vid = _int(a, "video_id", where)
            video = by_id.get(vid)
            if video is None:
                raise CrossVISError(where, f"unknown video_id {vid}")
            cid = _int(a, "category_id", where)
            if cid not in self.cat_to_class:
                raise CrossVISError(where, f"unknown category_id {cid}")
            segs = a.get("segmentations")
            if not isinstance(segs, list):
                raise CrossVISError(where, "'segmentations' must be a list (one entry per frame)")
            if len(segs) != video.length:
                raise CrossVISError(where, f"{len(segs)} segmentations for a video of {video.length} frames")
            for f, seg in enumerate(segs):
                check_segmentation(seg, video.height, video.width, f"{where}: frame {f}", full=check)
            boxes = a.get("bboxes")
            if boxes is not None and (not isinstance(boxes, list) or len(boxes) != video.length):
                raise CrossVISError(where, f"'bboxes' must be a list of {video.length} entries")
            if a.get("iscrowd", 0) not in (0, 1, False, True):
                raise CrossVISError(where, f"'iscrowd' must be 0 or 1, got {a.get('iscrowd')!r}")
            video.annotations.append(a)

        # Identities: annotation ids -> 0..nID-1 (sorted), over non-crowd annotations.
        ids = sorted(a["id"] for v in self.videos for a in v.annotations if not a.get("iscrowd", 0))
        self.identity_of = {aid: i for i, aid in enumerate(ids)}
        self.num_identities = len(ids)

    # ----------------------------------------------------------------------------------------------- access
    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def class_to_category(self, cls: int) -> int:
        return self.category_ids[cls]

    def decode(self, video: Video, ann: dict, frame: int) -> np.ndarray | None:
        """(H, W) bool mask of annotation ``ann`` in ``frame``, or None where absent."""
        return decode_segmentation(
            ann["segmentations"][frame],
            video.height,
            video.width,
            f"{self.source}: annotation id {ann['id']}: frame {frame}",
        )

    def image_path(self, video: Video, frame: int) -> Path:
        root = self.image_root if self.image_root is not None else Path(".")
        return root / video.file_names[frame]

    def load_image(self, video: Video, frame: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB; grayscale, palette and RGBA images become 3-channel RGB."""
        return load_rgb(self.image_path(video, frame))

    def check_images(self) -> None:
        for v in self.videos:
            for f in range(v.length):
                p = self.image_path(v, f)
                if not p.is_file():
                    raise CrossVISError(p, f"missing image (video {v.id}, frame {f})")

    def annotated_videos(self) -> list[Video]:
        """Videos with at least one annotation; the others are skipped for training with one warning."""
        kept = [v for v in self.videos if v.annotations]
        skipped = len(self.videos) - len(kept)
        if skipped:
            log.warning("%s: %d video(s) without annotations skipped for training", self.source, skipped)
        return kept


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise CrossVISError(path, "image file not found") from None
    except OSError as e:
        raise CrossVISError(path, f"cannot read image: {e}") from None


def coco_as_videos(coco: dict | str | os.PathLike) -> dict:
    """A COCO instance-segmentation JSON as a YouTube-VIS-format dict of one-frame videos.

    Lets the per-frame model be pretrained on still images; such one-frame "pairs" are a frame with itself,
    and the trainer switches the crossover and identity losses off for them (``still`` flag on videos).
    """
    if not isinstance(coco, dict):
        coco = read_json(coco)
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise CrossVISError("<coco>", "a COCO JSON needs an 'images' list")
    videos = [
        {
            "id": im["id"],
            "file_names": [im["file_name"]],
            "height": im["height"],
            "width": im["width"],
            "length": 1,
            "still": True,
        }
        for im in coco["images"]
    ]
    anns = [
        {
            "id": a["id"],
            "video_id": a["image_id"],
            "category_id": a["category_id"],
            "iscrowd": a.get("iscrowd", 0),
            "segmentations": [a.get("segmentation")],
            "bboxes": [a.get("bbox")],
            "areas": [a.get("area")],
        }
        for a in coco.get("annotations", [])
    ]
    return {"videos": videos, "categories": coco.get("categories", []), "annotations": anns}


# The 40 YouTube-VIS 2019 categories in id order (ids 1..40), for converted official weights.
YTVIS2019_CATEGORIES = [
    "person",
    "giant_panda",
    "lizard",
    "parrot",
    "skateboard",
    "sedan",
    "ape",
    "dog",
    "snake",
    "monkey",
    "hand",
    "rabbit",
    "duck",
    "cat",
    "cow",
    "fish",
    "train",
    "horse",
    "turtle",
    "bear",
    "motorbike",
    "giraffe",
    "leopard",
    "fox",
    "deer",
    "owl",
    "surfboard",
    "airplane",
    "truck",
    "zebra",
    "tiger",
    "elephant",
    "snowboard",
    "boat",
    "shark",
    "mouse",
    "frog",
    "eagle",
    "earless_seal",
    "tennis_racket",
]
