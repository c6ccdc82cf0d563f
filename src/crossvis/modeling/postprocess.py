"""Inference post-processing: per-location predictions -> the detections of each image (official rule).

score = sqrt(cls * ctr); candidates where cls * ctr > ``inference_th_test``, at most ``pre_nms_topk_test`` per
level; class-aware NMS at ``nms_th``; the best ``post_nms_topk_test``; dynamic masks of the kept detections,
upsampled to the input, cropped, resized to the original image and thresholded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms

from crossvis.config import FCOSConfig
from crossvis.modeling.criterion import FrameOutputs
from crossvis.modeling.mask_branch import DynamicMaskHead
from crossvis.modeling.paste import paste_masks


@dataclass
class Detections:
    """Detections of one frame (N instances), in the original image's pixels.

    boxes: (N, 4) xyxy float; scores: (N,) in [0, 1]; classes: (N,) int64 contiguous class index;
    masks: (N, H, W) bool; embeddings: (N, D) raw identity embeddings (the tracker uses cosine similarity).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    masks: torch.Tensor
    embeddings: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to(self, device: torch.device | str) -> Detections:
        return Detections(
            *(getattr(self, f).to(device) for f in ("boxes", "scores", "classes", "masks", "embeddings"))
        )


@dataclass
class ImageSize:
    """The sizes (H, W) of one image: ``padded`` network input, ``resized`` content in it, ``output`` the
    original image that boxes and masks are mapped back to."""

    padded: tuple[int, int]
    resized: tuple[int, int]
    output: tuple[int, int]


def image_sizes(
    x: torch.Tensor, sizes: list[tuple[int, int]], output_sizes: list[tuple[int, int]] | None
) -> list[ImageSize]:
    """The :class:`ImageSize` of each image of a padded (B, 3, H, W) batch: ``sizes`` (h, w) of the content,
    ``output_sizes`` the original images (default: the content sizes)."""
    padded = (int(x.shape[-2]), int(x.shape[-1]))
    return [ImageSize(padded, tuple(s), tuple(o)) for s, o in zip(sizes, output_sizes or sizes)]


@dataclass
class Candidates:
    """Candidate detections of one image before NMS: flat location index (N,), class (N,), cls*ctr (N,)."""

    loc: torch.Tensor
    cls: torch.Tensor
    score: torch.Tensor


class PostProcessor:
    """Turns a frame batch's :class:`FrameOutputs` into one :class:`Detections` per image.

    Args:
        fcos: thresholds and top-k of the official inference (``inference_th_test``, ``pre_nms_topk_test``,
            ``nms_th``, ``post_nms_topk_test``).
        strides: the FPN strides.
        mask_head: the model's dynamic mask head; mask_stride: stride of its input features (8).
    """

    def __init__(
        self, *, fcos: FCOSConfig, strides: list[int], mask_head: DynamicMaskHead, mask_stride: int
    ) -> None:
        self.fcos, self.strides = fcos, list(strides)
        self.mask_head, self.mask_stride = mask_head, mask_stride

    def __call__(
        self, out: FrameOutputs, sizes: list[ImageSize], mask_threshold: float = 0.5
    ) -> list[Detections]:
        probs = out.flat["logits"].sigmoid() * out.flat["ctrness"].sigmoid()  # (B, L, C)
        level_ends = torch.bincount(out.levels, minlength=len(self.strides)).cumsum(0).tolist()
        return [
            self.detections(out, i, self.candidates(probs[i], level_ends), sizes[i], mask_threshold)
            for i in range(probs.shape[0])
        ]

    def candidates(self, probs: torch.Tensor, level_ends: list[int]) -> Candidates:
        """(L, C) cls*ctr of one image -> candidates above the threshold, at most ``pre_nms_topk_test`` per
        level (levels are contiguous runs of locations ending at ``level_ends``)."""
        cfg = self.fcos
        locs, classes, scores = [], [], []
        start = 0
        for end in level_ends:
            pr = probs[start:end]
            loc, cls = (pr > cfg.inference_th_test).nonzero(as_tuple=True)
            sc = pr[loc, cls]
            if sc.numel() > cfg.pre_nms_topk_test:
                sc, top = sc.topk(cfg.pre_nms_topk_test, sorted=False)
                loc, cls = loc[top], cls[top]
            locs.append(loc + start)
            classes.append(cls)
            scores.append(sc)
            start = end
        return Candidates(torch.cat(locs), torch.cat(classes), torch.cat(scores))

    def detections(
        self, out: FrameOutputs, i: int, cand: Candidates, size: ImageSize, mask_threshold: float
    ) -> Detections:
        """Candidates of image ``i`` -> NMS, top-k, boxes and masks at ``size.output``."""
        dev = out.mask_feats.device
        if cand.loc.numel() == 0:
            return _empty(out.flat["embedding"].shape[-1], size.output, dev)
        loc, cls, scores = cand.loc, cand.cls, cand.score.sqrt()
        strides = torch.tensor(self.strides, dtype=torch.float32, device=dev)[out.levels[loc]]
        reg = out.flat["bbox_reg"][i, loc] * strides[:, None]
        xy = out.locations[loc]
        boxes = torch.cat([xy - reg[:, :2], xy + reg[:, 2:]], 1)  # l, t, r, b distances -> x1, y1, x2, y2
        keep = batched_nms(boxes, scores, cls, self.fcos.nms_th)[: self.fcos.post_nms_topk_test]
        loc, cls, scores, boxes = loc[keep], cls[keep], scores[keep], boxes[keep]
        masks = self.masks(out, i, loc, size=size, mask_threshold=mask_threshold)
        boxes = _rescale_boxes(boxes, size)
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return Detections(
            boxes=boxes[ok],
            scores=scores[ok],
            classes=cls[ok],
            masks=masks[ok],
            embeddings=out.flat["embedding"][i, loc][ok],
        )

    def masks(
        self, out: FrameOutputs, i: int, loc: torch.Tensor, *, size: ImageSize, mask_threshold: float
    ) -> torch.Tensor:
        """(N,) kept locations of image ``i`` -> (N, H, W) bool masks at the original size: stride-4
        probabilities of the padded input -> padded size -> crop -> original size -> threshold, computed only
        inside each instance's region (:func:`~crossvis.modeling.paste.paste_masks`; the same masks as
        doing it over the whole image)."""
        logits = self.mask_head(
            out.mask_feats,
            self.mask_stride,
            params=out.flat["params"][i, loc],
            locations=out.locations[loc],
            levels=out.levels[loc],
            im_inds=torch.full_like(loc, i),
        )
        return paste_masks(
            logits.sigmoid(),
            factor=size.padded[0] // logits.shape[-2],
            size=size.resized,
            out_size=size.output,
            threshold=mask_threshold,
        )


def _rescale_boxes(boxes: torch.Tensor, size: ImageSize) -> torch.Tensor:
    """(N, 4) xyxy in resized-input pixels -> original-image pixels, clamped to the image."""
    (oh, ow), (h, w) = size.output, size.resized
    sy, sx = oh / h, ow / w
    boxes = boxes * torch.tensor([sx, sy, sx, sy], device=boxes.device)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ow)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, oh)
    return boxes


def _empty(dim: int, out_size: tuple[int, int], dev: torch.device) -> Detections:
    return Detections(
        boxes=torch.zeros((0, 4), device=dev),
        scores=torch.zeros(0, device=dev),
        classes=torch.zeros(0, dtype=torch.long, device=dev),
        masks=torch.zeros((0, *out_size), dtype=torch.bool, device=dev),
        embeddings=torch.zeros((0, dim), device=dev),
    )
