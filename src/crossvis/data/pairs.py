"""Training input: frame pairs (key frame + reference frame) with one shared transform, and the collate.

The official sampler: every kept frame (>= 1 visible non-crowd object) is a key frame; its reference is drawn
uniformly among the other kept frames of the same video within +-``sample_region`` JSON frames (the key frame
itself when there is none). Both frames get the SAME resize and the SAME horizontal flip.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from crossvis.data.masks import is_absent
from crossvis.data.ytvis import Video, YTVISDataset


@dataclass
class FrameTarget:
    """Targets of one frame, N objects.

    image: (3, H, W) uint8 RGB after the transform.
    masks: (N, H, W) bool. boxes: (N, 4) float xyxy, from the masks. classes: (N,) int64 contiguous.
    identities: (N,) int64 in 0..nID-1. links: (N,) int64 index of the same object in the other frame, or -1.
    still: True for still images (COCO-style one-frame videos), whose pair is the frame with itself.
    """

    image: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    classes: torch.Tensor
    identities: torch.Tensor
    links: torch.Tensor
    still: bool = False  # a still image (one-frame video): no crossover or identity loss


def resize_shape(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """Shortest side to ``short``, longest side at most ``max_size`` (detectron2 ResizeShortestEdge rounding)."""
    scale = short / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) xyxy with x1/y1 exclusive (pixel edges), zeros for empty masks."""
    if masks.numel() == 0:
        return torch.zeros((masks.shape[0], 4))
    rows, cols = masks.any(2), masks.any(1)
    h, w = masks.shape[1:]
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    y0 = torch.where(rows, ar_h, h).min(1).values
    y1 = torch.where(rows, ar_h, -1).max(1).values + 1
    x0 = torch.where(cols, ar_w, w).min(1).values
    x1 = torch.where(cols, ar_w, -1).max(1).values + 1
    return torch.stack([x0, y0, x1, y1], 1).float().clamp(min=0)


class FramePairDataset(Dataset):
    """Item i = (key frame i, a reference frame of the same video), both transformed identically.

    Args:
        dataset: a loaded :class:`YTVISDataset` with annotations.
        min_sizes: shortest-side choices (one drawn per pair). max_size: longest-side cap.
        hflip: random horizontal flip with p = 0.5. sample_region: reference window in JSON frames.
    """

    def __init__(
        self,
        dataset: YTVISDataset,
        min_sizes: list[int],
        max_size: int,
        hflip: bool = True,
        sample_region: int = 20,
    ) -> None:
        self.ds = dataset
        self.min_sizes, self.max_size, self.hflip = list(min_sizes), max_size, hflip
        self.sample_region = sample_region
        self.frames: list[tuple[Video, int]] = []  # kept (video, frame) key frames
        self.kept_by_video: dict[int, list[int]] = {}
        for v in dataset.annotated_videos():
            kept = [
                f
                for f in range(v.length)
                if any(
                    not a.get("iscrowd", 0) and not is_absent(a["segmentations"][f]) for a in v.annotations
                )
            ]
            self.kept_by_video[v.id] = kept
            self.frames.extend((v, f) for f in kept)

    def __len__(self) -> int:
        return len(self.frames)

    def reference_frame(self, video: Video, f: int, rng: random.Random) -> int:
        kept = self.kept_by_video[video.id]
        cands = [i for i in kept if i != f and abs(i - f) <= self.sample_region]
        return rng.choice(cands) if cands else f

    def __getitem__(self, idx: int | tuple[int, int]) -> tuple[FrameTarget, FrameTarget]:
        """``idx`` or ``(idx, seed)``: with a seed the pair (reference frame, size, flip) depends on it alone;
        without, on torch's RNG (seeded per DataLoader worker)."""
        idx, seed = idx if isinstance(idx, tuple) else (idx, int(torch.randint(0, 2**62, (1,)).item()))
        rng = random.Random(seed)
        video, f0 = self.frames[idx]
        f1 = self.reference_frame(video, f0, rng)
        short = rng.choice(self.min_sizes)
        flip = self.hflip and rng.random() < 0.5
        h, w = resize_shape(video.height, video.width, short, self.max_size)
        t0 = self._frame(video, f0, size=(h, w), flip=flip)
        t1 = self._frame(video, f1, size=(h, w), flip=flip)
        self._link(t0, t1)
        return t0, t1

    def _frame(self, video: Video, f: int, *, size: tuple[int, int], flip: bool) -> FrameTarget:
        """Frame ``f`` of ``video`` resized to ``size`` (H, W) and flipped, with its visible objects."""
        h, w = size
        img = Image.fromarray(self.ds.load_image(video, f))
        if img.size != (video.width, video.height):
            img = img.resize((video.width, video.height), Image.BILINEAR)
        img = np.asarray(img.resize((w, h), Image.BILINEAR))
        masks, classes, ids = [], [], []
        for a in video.annotations:
            if a.get("iscrowd", 0):
                continue
            m = self.ds.decode(video, a, f)
            if m is None:
                continue
            m = np.asarray(Image.fromarray(m.astype(np.uint8)).resize((w, h), Image.NEAREST), dtype=bool)
            if not m.any():
                continue  # filter_empty_instances: vanished after resizing
            masks.append(m)
            classes.append(self.ds.cat_to_class[a["category_id"]])
            ids.append(self.ds.identity_of[a["id"]])
        if flip:
            img = img[:, ::-1]
            masks = [m[:, ::-1] for m in masks]
        mt = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.bool)
        return FrameTarget(
            image=torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous(),
            masks=mt,
            boxes=boxes_from_masks(mt),
            classes=torch.tensor(classes, dtype=torch.int64),
            identities=torch.tensor(ids, dtype=torch.int64),
            links=torch.full((len(ids),), -1, dtype=torch.int64),
            still=video.length == 1,
        )

    @staticmethod
    def _link(t0: FrameTarget, t1: FrameTarget) -> None:
        pos1 = {int(i): k for k, i in enumerate(t1.identities)}
        pos0 = {int(i): k for k, i in enumerate(t0.identities)}
        t0.links = torch.tensor([pos1.get(int(i), -1) for i in t0.identities], dtype=torch.int64)
        t1.links = torch.tensor([pos0.get(int(i), -1) for i in t1.identities], dtype=torch.int64)


def pad_to(images: list[torch.Tensor], divisibility: int = 32) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Zero-pad (C, h, w) tensors bottom/right to one (B, C, H, W) batch, H and W multiples of ``divisibility``."""
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    H = -(-max(s[0] for s in sizes) // divisibility) * divisibility
    W = -(-max(s[1] for s in sizes) // divisibility) * divisibility
    out = images[0].new_zeros((len(images), images[0].shape[0], H, W))
    for i, im in enumerate(images):
        out[i, :, : im.shape[-2], : im.shape[-1]] = im
    return out, sizes


def collate_pairs(batch: list[tuple[FrameTarget, FrameTarget]]) -> dict:
    """-> {"frames": [targets of frame 0 (B), targets of frame 1 (B)]}; images are padded by the model,
    which normalises first (so padding equals the mean colour, as officially)."""
    return {"frames": [[p[0] for p in batch], [p[1] for p in batch]]}
