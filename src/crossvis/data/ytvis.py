"""YouTube-VIS 2019/2021 and OVIS datasets (one JSON format), and COCO still images as one-frame videos.

Loading is cheap and validated structurally (ids, lengths, sizes, segmentation shapes); masks are decoded
lazily, and image files are checked only with ``check=True``, so a 3,000-video JSON loads in seconds.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from crossvis.data.masks import check_segmentation, decode_segmentation
from crossvis.data.safe_json import read_json
from crossvis.errors import CrossVISError, brief
from crossvis.limits import (
    MAX_ANNOTATIONS,
    MAX_CLASSES,
    MAX_FRAMES,
    MAX_PIXELS,
    MAX_SIDE,
    MAX_VIDEOS,
    pixels_ok,
)

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


def _int(rec: dict, key: str, where: str) -> int:
    v = rec.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise CrossVISError(where, f"'{key}' must be an integer, got {brief(v)}")
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
        *,
        source: str | None = None,
    ) -> None:
        if not isinstance(annotations, str | os.PathLike):  # already-loaded JSON (checked like a file)
            data, self.source = annotations, source or "<annotations>"
        else:
            self.source = str(annotations)
            data = read_json(annotations)
        if isinstance(data, dict) and "videos" not in data and isinstance(data.get("images"), list):
            data = coco_as_videos(data, self.source)  # a COCO still-image dataset: one-frame videos
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
        for key, items, limit in (
            ("videos", data["videos"], MAX_VIDEOS),
            ("categories", data["categories"], MAX_CLASSES),
            ("annotations", anns, MAX_ANNOTATIONS),
        ):
            if len(items) > limit:
                raise CrossVISError(src, f"{len(items)} {key}: more than the limit of {limit}")
        self.has_annotations = "annotations" in data and data["annotations"] is not None
        self._parse_categories(data["categories"])
        self._parse_videos(data["videos"])
        self._parse_annotations(anns, check)
        # Identities: annotation ids -> 0..nID-1 (sorted), over non-crowd annotations.
        ids = sorted(a["id"] for v in self.videos for a in v.annotations if not a.get("iscrowd", 0))
        self.identity_of = {aid: i for i, aid in enumerate(ids)}
        self.num_identities = len(ids)

    def _parse_categories(self, categories: list) -> None:
        self.categories = []
        seen_cat: set[int] = set()
        for i, c in enumerate(categories):
            where = f"{self.source}: categories[{i}]"
            if not isinstance(c, dict):
                raise CrossVISError(where, "must be an object")
            cid = _int(c, "id", where)
            if cid in seen_cat:
                raise CrossVISError(where, f"duplicate category id {cid}")
            seen_cat.add(cid)
            name = c.get("name", str(cid))
            if not isinstance(name, str | int) or isinstance(name, bool):
                raise CrossVISError(where, f"'name' must be a string, got {brief(name)}")
            self.categories.append({"id": cid, "name": str(name)})
        self.categories.sort(key=lambda c: c["id"])
        self.category_ids = [c["id"] for c in self.categories]
        self.class_names = [c["name"] for c in self.categories]
        self.cat_to_class = {cid: i for i, cid in enumerate(self.category_ids)}

    def _parse_videos(self, videos: list) -> None:
        self.videos: list[Video] = []
        by_id: dict[int, Video] = {}
        for i, v in enumerate(videos):
            where = f"{self.source}: videos[{i}]"
            if not isinstance(v, dict):
                raise CrossVISError(where, "must be an object")
            vid = _int(v, "id", where)
            if vid in by_id:
                raise CrossVISError(where, f"duplicate video id {vid}")
            names = v.get("file_names")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise CrossVISError(where, "'file_names' must be a list of strings")
            if not names:
                raise CrossVISError(where, "'file_names' is empty: a video needs at least one frame")
            if len(names) > MAX_FRAMES:
                raise CrossVISError(where, f"{len(names)} frames: more than the limit of {MAX_FRAMES}")
            h, w = _int(v, "height", where), _int(v, "width", where)
            if not pixels_ok(h, w):
                raise CrossVISError(
                    where,
                    f"invalid size {h}x{w} (each side 1..{MAX_SIDE}, at most {MAX_PIXELS} pixels)",
                )
            if "length" in v and v["length"] != len(names):
                raise CrossVISError(
                    where, f"'length' {brief(v['length'])} differs from {len(names)} file_names"
                )
            video = Video(vid, names, h, w)
            by_id[vid] = video
            self.videos.append(video)
        self.videos.sort(key=lambda v: v.id)
        self.video_by_id = by_id

    def _parse_annotations(self, anns: list, check: bool) -> None:
        src, by_id = self.source, self.video_by_id
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
                raise CrossVISError(where, f"'iscrowd' must be 0 or 1, got {brief(a.get('iscrowd'))}")
            video.annotations.append(a)

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
        """(H, W, 3) uint8 RGB; grayscale, palette and RGBA images become 3-channel RGB.

        The image must have the video's declared size (masks and results are in that size): a frame of
        another size is an error naming the file, found from its header before it is decoded.
        """
        return load_rgb(self.image_path(video, frame), expected=(video.height, video.width))

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


def load_rgb(path: str | os.PathLike, expected: tuple[int, int] | None = None) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB. Its size is checked from the header before decoding: within
    the limits (``crossvis.limits``), and equal to ``expected`` (H, W) when given."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if not pixels_ok(h, w):
                raise CrossVISError(
                    path,
                    f"image size {h}x{w} exceeds the limits (each side <= {MAX_SIDE}, {MAX_PIXELS} pixels)",
                )
            if expected is not None and (h, w) != tuple(expected):
                raise CrossVISError(
                    path,
                    f"image is {h}x{w} but its video is declared {expected[0]}x{expected[1]} (height x width)",
                )
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise CrossVISError(path, "image file not found") from None
    except IsADirectoryError:
        raise CrossVISError(path, "is a folder, not an image file") from None
    except UnidentifiedImageError:
        raise CrossVISError(path, "not an image file (or a corrupt one)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # PIL raises OSError for unreadable/truncated files, SyntaxError/ValueError from some plugins
        raise CrossVISError(
            path, f"cannot read image: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None


def coco_as_videos(coco: dict | str | os.PathLike, where: str = "<coco>") -> dict:
    """A COCO instance-segmentation JSON as a YouTube-VIS-format dict of one-frame videos.

    Lets the per-frame model be pretrained on still images; such one-frame "pairs" are a frame with itself,
    and the trainer switches the crossover and identity losses off for them (``still`` flag on videos).
    Missing or mistyped fields are passed on as they are, for :class:`YTVISDataset` to name.
    """
    if not isinstance(coco, dict):
        where = str(coco)
        coco = read_json(coco)
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise CrossVISError(where, "a COCO JSON needs an 'images' list")
    anns = coco.get("annotations", [])
    if not isinstance(anns, list):
        raise CrossVISError(where, "'annotations' must be a list")
    for key, items in (("images", coco["images"]), ("annotations", anns)):
        bad = next((i for i, x in enumerate(items) if not isinstance(x, dict)), None)
        if bad is not None:
            raise CrossVISError(f"{where}: {key}[{bad}]", "must be an object")
    videos = [
        {
            "id": im.get("id"),
            "file_names": [im.get("file_name")],
            "height": im.get("height"),
            "width": im.get("width"),
            "length": 1,
            "still": True,
        }
        for im in coco["images"]
    ]
    anns = [
        {
            "id": a.get("id"),
            "video_id": a.get("image_id"),
            "category_id": a.get("category_id"),
            "iscrowd": a.get("iscrowd", 0),
            "segmentations": [a.get("segmentation")],
            "bboxes": [a.get("bbox")],
            "areas": [a.get("area")],
        }
        for a in anns
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
