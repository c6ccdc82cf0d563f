"""The CrossVIS model: a per-frame CondInst (FCOS + controller + mask branch + dynamic mask head) with an
identity embedding, trained on frame pairs with the crossover loss and the global balanced embedding loss.

Training: ``model(batch)`` with ``batch = {"frames": [targets of frame t, targets of frame t+delta]}``
(see :func:`crossvis.data.pairs.collate_pairs`) returns a dict of losses.
Inference: ``model.inference(images, sizes)`` returns one :class:`Detections` per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, sigmoid_focal_loss

from crossvis.config import CondInstConfig, CrossVISConfig, FCOSConfig
from crossvis.data.pairs import FrameTarget, pad_to
from crossvis.modeling.backbone import Backbone
from crossvis.modeling.fcos_head import FCOSHead
from crossvis.modeling.fpn import FPN
from crossvis.modeling.losses import (
    dice_loss,
    embedding_scale,
    giou_loss,
    global_identity_loss,
    pairwise_identity_loss,
)
from crossvis.modeling.mask_branch import DynamicMaskHead, MaskBranch, aligned_bilinear
from crossvis.modeling.targets import (
    assign_targets,
    centerness_target,
    compute_locations,
    mask_centroids,
    size_ranges,
)
from crossvis.modeling.tfc import TemporalFeatureCalibration

IDENTITY_LOSSES = ("global_focal", "global_ce", "pairwise_ce", "pairwise_focal")


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
class _Positives:
    """The positive locations of one frame batch (P of them) and what the losses need of each."""

    im: torch.Tensor  # (P,) image index in the batch
    loc: torch.Tensor  # (P, 2) x, y in input pixels
    level: torch.Tensor  # (P,) FPN level
    params: torch.Tensor  # (P, K) controller outputs
    emb: torch.Tensor  # (P, D) identity embeddings
    gt: torch.Tensor  # (P,) GT index in the frame batch (concatenated over images)
    local_gt: torch.Tensor  # (P,) GT index within its image
    identity: torch.Tensor  # (P,) identity in 0..nID-1
    link: torch.Tensor  # (P,) GT index (batch-global) of the same object in the other frame, or -1
    still: torch.Tensor  # (P,) bool, still-image sample


def reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over distributed ranks (the official normalisers), identity when not distributed."""
    if dist.is_available() and dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
        x = x / dist.get_world_size()
    return x


def _grad_scale(x: torch.Tensor, s: float) -> torch.Tensor:
    # forward value unchanged, gradient multiplied by s (the official 0.1x backbone LR trick)
    return x if s == 1.0 else x * s + x.detach() * (1 - s)


def _subsample(n: int, cap: int, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, device=device)[:cap] if n > cap else torch.arange(n, device=device)


class CrossVIS(nn.Module):
    """CrossVIS.

    Args:
        backbone: a :class:`Backbone` (C3, C4, C5).
        num_classes: object classes (40 for YouTube-VIS 2019).
        num_identities: training identities for the global embedding classifier (from the dataset; 0 = none,
            as for inference-only models).
        width: FPN and head channels (256).
        fcos, condinst, crossvis: the head, mask and CrossVIS settings (official defaults).
        pixel_mean, pixel_std, input_format: normalisation of 0-255 input, "BGR" (official) or "RGB".
        size_divisibility: inputs are padded to a multiple of this.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_classes: int = 40,
        num_identities: int = 0,
        width: int = 256,
        fcos: FCOSConfig | None = None,
        condinst: CondInstConfig | None = None,
        crossvis: CrossVISConfig | None = None,
        pixel_mean: tuple[float, ...] = (103.530, 116.280, 123.675),
        pixel_std: tuple[float, ...] = (1.0, 1.0, 1.0),
        input_format: str = "BGR",
        size_divisibility: int = 32,
        tfc: bool = False,
    ) -> None:
        super().__init__()
        self.fcos_cfg = fcos = fcos or FCOSConfig(num_classes=num_classes)
        self.condinst_cfg = ci = condinst or CondInstConfig()
        self.crossvis_cfg = cv = crossvis or CrossVISConfig()
        if cv.identity_loss not in IDENTITY_LOSSES:
            raise ValueError(f"identity_loss must be one of {IDENTITY_LOSSES}")
        self.num_classes = num_classes
        self.num_identities = num_identities
        self.strides = list(fcos.fpn_strides)
        self.backbone = backbone
        self.fpn = FPN(backbone.out_channels, width)
        self.head = FCOSHead(
            width,
            num_classes,
            fcos.num_convs,
            fcos.norm,
            fcos.prior_prob,
            cv.embedding_dim,
            len(self.strides),
        )
        soi = [*fcos.sizes_of_interest, fcos.sizes_of_interest[-1] * 2]
        self.mask_head = DynamicMaskHead(
            ci.mask_branch_out_channels,
            ci.mask_head_channels,
            ci.mask_head_num_layers,
            tuple(soi),
            ci.mask_out_stride,
            ci.disable_rel_coords,
        )
        self.controller = nn.Conv2d(width, self.mask_head.num_params, 3, padding=1)
        nn.init.normal_(self.controller.weight, std=0.01)
        nn.init.zeros_(self.controller.bias)
        self.mask_branch = MaskBranch(
            width,
            ci.mask_branch_channels,
            ci.mask_branch_num_convs,
            ci.mask_branch_out_channels,
            ci.mask_branch_norm,
        )
        self.identity_classifier: nn.Linear | None = None
        if cv.identity_loss.startswith("global") and num_identities > 0:
            self.identity_classifier = nn.Linear(cv.embedding_dim, num_identities)
            nn.init.normal_(self.identity_classifier.weight, std=0.01)
            nn.init.constant_(self.identity_classifier.bias, -4.59512)
        self.input_format = input_format
        self.size_divisibility = size_divisibility
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.ranges = size_ranges(list(fcos.sizes_of_interest))
        # temporal feature calibration (OVIS): training calibrates each frame of a pair with the other;
        # inference with the previous frame's maps (stream state, reset by reset_stream())
        self.tfc = TemporalFeatureCalibration(width) if tfc else None
        self.tfc_state: list[torch.Tensor] | None = None

    def reset_stream(self) -> None:
        """Forget the previous frame (TFC stream state): the next frame starts a new video."""
        self.tfc_state = None

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.fpn(self.backbone(x))
        if self.training:
            feats = [_grad_scale(f, self.crossvis_cfg.backbone_grad_scale) for f in feats]
        return feats

    def _calibrate_stream(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """TFC at inference: batch item i (a frame) with item i-1, item 0 with the stream's previous frame
        (or itself at the start of a stream, or when the size changed)."""
        prev = self.tfc_state
        if prev is None or any(p.shape[1:] != f.shape[1:] for p, f in zip(prev, feats)):
            prev = [f[:1] for f in feats]
        refs = [torch.cat([p, f[:-1]]) for p, f in zip(prev, feats)]
        self.tfc_state = [f[-1:].detach() for f in feats]
        return self.tfc(feats, refs)

    # ------------------------------------------------------------------------------------------- shared
    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """uint8 RGB (3, h, w) images -> normalised (B, 3, H, W) padded to the size divisibility, and sizes."""
        normed = []
        for im in images:
            x = im.to(self.device, non_blocking=True).float()
            if self.input_format == "BGR":
                x = x.flip(0)
            normed.append((x - self.pixel_mean) / self.pixel_std)
        return pad_to(normed, self.size_divisibility)

    def _flatten(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Per-level (B, C, h, w) -> (B, sum h*w, C), levels concatenated in order."""
        return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1]) for m in maps], 1)

    def _run(
        self, x: torch.Tensor, feats: list[torch.Tensor] | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Backbone -> FPN -> head, controller, mask branch. Returns flattened head outputs, mask_feats,
        locations (L, 2) and the level of each location (L,)."""
        if feats is None:
            feats = self._pyramid(x)
            if self.tfc is not None:
                feats = self._calibrate_stream(feats)
        mask_feats = self.mask_branch(feats)
        out = self.head(feats)
        flat = {k: self._flatten(v) for k, v in out.items() if k != "box_tower"}
        flat["params"] = self._flatten([self.controller(t) for t in out["box_tower"]])
        locs, levels = [], []
        for lvl, (f, s) in enumerate(zip(feats, self.strides)):
            loc = compute_locations(f.shape[-2], f.shape[-1], s, f.device)
            locs.append(loc)
            levels.append(torch.full((loc.shape[0],), lvl, dtype=torch.long, device=f.device))
        return flat, mask_feats, torch.cat(locs), torch.cat(levels)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Training: the loss dict of a batch of frame pairs."""
        return self.forward_train(batch)

    # ------------------------------------------------------------------------------------------- training
    def forward_train(self, batch: dict) -> dict[str, torch.Tensor]:
        frames: list[list[FrameTarget]] = batch["frames"]
        per_frame, pos, mask_feats, gt_masks = [], [], [], []
        n_gt = [[len(t.classes) for t in f] for f in frames]
        calibrated: list[list[torch.Tensor] | None] = [None, None]
        if self.tfc is not None:  # each frame calibrated with the other frame of its pair
            raw = [self._pyramid(self.preprocess([t.image for t in f])[0]) for f in frames]
            calibrated = [self.tfc(raw[0], raw[1]), self.tfc(raw[1], raw[0])]
        for f, targets in enumerate(frames):
            other = n_gt[1 - f]
            losses, p, mf, gm = self._frame_losses(targets, other, calibrated[f])
            per_frame.append(losses)
            pos.append(p)
            mask_feats.append(mf)
            gt_masks.append(gm)
        w_det = self.crossvis_cfg.loss_weight_det
        out = {k: w_det * (per_frame[0][k] + per_frame[1][k]) / 2 for k in per_frame[0]}
        if self.crossvis_cfg.crossover:
            a = self._crossover(pos[1], pos[0], mask_feats[0], gt_masks[0])  # frame-1 filters on frame 0
            b = self._crossover(pos[0], pos[1], mask_feats[1], gt_masks[1])  # frame-0 filters on frame 1
            out["loss_crossover"] = self.crossvis_cfg.loss_weight_crossover * 0.5 * (a + b)
        out["loss_identity"] = self.crossvis_cfg.loss_weight_identity * self._identity_loss(pos[0], pos[1])
        return out

    def _frame_losses(
        self, targets: list[FrameTarget], n_gt_other: list[int], feats: list[torch.Tensor] | None = None
    ):
        images, sizes = self.preprocess([t.image for t in targets])
        flat, mask_feats, locations, level_of = self._run(images, feats)
        B, L, C = flat["logits"].shape
        dev = images.device
        H, W = images.shape[-2:]
        gt_ind_all, reg_all, gt_masks = [], [], []
        classes, identities, links, local_of, still_of = [], [], [], [], []
        offset, offset_other = 0, 0
        for i, t in enumerate(targets):
            boxes, masks = t.boxes.to(dev), t.masks.to(dev)
            gt_ind, reg = assign_targets(
                locations,
                level_of,
                self.strides,
                self.ranges,
                boxes,
                mask_centroids(masks, boxes),
                self.fcos_cfg.center_sample,
                self.fcos_cfg.pos_radius,
            )
            gt_ind_all.append(torch.where(gt_ind >= 0, gt_ind + offset, gt_ind))
            reg_all.append(reg)
            full = masks.new_zeros((masks.shape[0], H, W))
            full[:, : masks.shape[1], : masks.shape[2]] = masks
            s = self.condinst_cfg.mask_out_stride
            gt_masks.append(full[:, s // 2 :: s, s // 2 :: s])  # stride-4 GT, as officially sampled
            classes.append(t.classes.to(dev))
            identities.append(t.identities.to(dev))
            links.append(torch.where(t.links >= 0, t.links + offset_other, t.links).to(dev))
            local_of.append(torch.arange(len(t.classes), device=dev))
            still_of.append(torch.full((len(t.classes),), t.still, dtype=torch.bool, device=dev))
            offset += len(t.classes)
            offset_other += n_gt_other[i]
        gt_ind = torch.stack(gt_ind_all)  # (B, L)
        reg = torch.stack(reg_all)  # (B, L, 4)
        classes, identities, links = torch.cat(classes), torch.cat(identities), torch.cat(links)
        local_of, still_of = torch.cat(local_of), torch.cat(still_of)
        gt_masks = torch.cat(gt_masks).float() if gt_masks else images.new_zeros((0, H // 4, W // 4))

        pos_b, pos_l = torch.nonzero(gt_ind >= 0, as_tuple=True)
        pos_gt = gt_ind[pos_b, pos_l]
        num_pos = pos_b.numel()
        normalizer = reduce_mean(torch.tensor(float(num_pos), device=dev)).clamp(min=1.0)

        cls_target = torch.zeros_like(flat["logits"])
        cls_target[pos_b, pos_l, classes[pos_gt]] = 1.0
        a, g = self.fcos_cfg.loss_alpha, self.fcos_cfg.loss_gamma
        loss_cls = sigmoid_focal_loss(flat["logits"], cls_target, a, g, reduction="sum") / normalizer

        strides = torch.tensor(self.strides, dtype=torch.float32, device=dev)[level_of[pos_l]]
        reg_t = reg[pos_b, pos_l] / strides[:, None]
        reg_p = flat["bbox_reg"][pos_b, pos_l]
        ctr_logit = flat["ctrness"][pos_b, pos_l, 0]
        if num_pos > 0:
            ctr_t = centerness_target(reg_t)
            ctr_norm = reduce_mean(ctr_t.sum().detach()).clamp(min=1e-6)
            loss_loc = giou_loss(reg_p, reg_t, ctr_t) / ctr_norm
            loss_ctr = F.binary_cross_entropy_with_logits(ctr_logit, ctr_t, reduction="sum") / normalizer
        else:
            loss_loc = reg_p.sum() * 0
            loss_ctr = ctr_logit.sum() * 0

        p = _Positives(
            im=pos_b,
            loc=locations[pos_l],
            level=level_of[pos_l],
            params=flat["params"][pos_b, pos_l],
            emb=flat["embedding"][pos_b, pos_l],
            gt=pos_gt,
            local_gt=local_of[pos_gt] if num_pos else pos_gt,
            identity=identities[pos_gt],
            link=links[pos_gt],
            still=still_of[pos_gt],
        )
        keep = _subsample(num_pos, self.condinst_cfg.max_proposals, dev)
        if keep.numel():
            logits = self.mask_head(
                mask_feats,
                self.mask_branch.out_stride,
                p.params[keep],
                p.loc[keep],
                p.level[keep],
                p.im[keep],
            )
            loss_mask = dice_loss(logits.sigmoid(), gt_masks[p.gt[keep]]).mean()
        else:
            loss_mask = mask_feats.sum() * 0 + flat["params"].sum() * 0
        losses = {
            "loss_fcos_cls": loss_cls,
            "loss_fcos_loc": loss_loc,
            "loss_fcos_ctr": loss_ctr,
            "loss_mask": loss_mask,
        }
        return losses, p, mask_feats, gt_masks

    def _crossover(
        self, src: _Positives, dst: _Positives, dst_mask_feats: torch.Tensor, dst_gt_masks: torch.Tensor
    ) -> torch.Tensor:
        """Filters of ``src`` positives segment the same object in the other frame (``dst``), with relative
        coordinates taken at a random positive location of that object there; dice vs its mask."""
        dev = dst_mask_feats.device
        cap = self.condinst_cfg.max_proposals
        s_keep = _subsample(src.im.numel(), cap, dev)
        d_keep = _subsample(dst.im.numel(), cap, dev)
        s_link, s_params, s_still = src.link[s_keep], src.params[s_keep], src.still[s_keep]
        d_gt = dst.gt[d_keep]
        n_dst_gt = dst_gt_masks.shape[0]
        if s_link.numel() == 0 or d_gt.numel() == 0 or n_dst_gt == 0:
            return dst_mask_feats.sum() * 0 + src.params.sum() * 0
        counts = torch.bincount(d_gt, minlength=n_dst_gt)
        valid = (s_link >= 0) & ~s_still
        valid &= counts[s_link.clamp(min=0)] > 0
        if not valid.any():
            return dst_mask_feats.sum() * 0 + src.params.sum() * 0
        tgt = s_link[valid]
        order = torch.argsort(d_gt, stable=True)  # dst positives grouped by their GT
        starts = torch.cumsum(counts, 0) - counts
        pick = order[
            starts[tgt]
            + (torch.rand(tgt.numel(), device=dev) * counts[tgt]).long().clamp(max=counts[tgt] - 1)
        ]
        sel = d_keep[pick]
        logits = self.mask_head(
            dst_mask_feats,
            self.mask_branch.out_stride,
            s_params[valid],
            dst.loc[sel],
            dst.level[sel],
            dst.im[sel],
        )
        return dice_loss(logits.sigmoid(), dst_gt_masks[tgt]).mean()

    def _identity_loss(self, p0: _Positives, p1: _Positives) -> torch.Tensor:
        kind = self.crossvis_cfg.identity_loss
        a, g = self.fcos_cfg.loss_alpha, self.fcos_cfg.loss_gamma
        if kind.startswith("global"):
            if self.identity_classifier is None:
                return p0.emb.sum() * 0 + p1.emb.sum() * 0
            emb = torch.cat([p0.emb[~p0.still], p1.emb[~p1.still]])
            ids = torch.cat([p0.identity[~p0.still], p1.identity[~p1.still]])
            return global_identity_loss(
                emb,
                ids,
                self.identity_classifier,
                embedding_scale(self.num_identities),
                focal=kind == "global_focal",
                alpha=a,
                gamma=g,
            )
        # pair-wise: key = frame 0, reference = frame 1; link is the batch-global GT index in frame 1
        k, r = ~p0.still, ~p1.still
        ref_local = self._local_link(p0, p1)
        return pairwise_identity_loss(
            p0.emb[k],
            p0.im[k],
            ref_local[k],
            p1.emb[r],
            p1.im[r],
            p1.local_gt[r],
            focal=kind == "pairwise_focal",
            alpha=a,
            gamma=g,
        )

    @staticmethod
    def _local_link(p0: _Positives, p1: _Positives) -> torch.Tensor:
        """Frame-0 positives' links as object indices within the pair's frame-1 GT list (-1: none)."""
        if p1.gt.numel() == 0:
            return torch.full_like(p0.link, -1)
        n = int(max(p1.gt.max().item(), p0.link.max().item() if p0.link.numel() else 0)) + 1
        table = torch.full((n,), -1, dtype=torch.long, device=p0.link.device)
        table[p1.gt] = p1.local_gt
        # an object without positives in frame 1 keeps -1 there: it can only be "new" for the pair-wise loss
        return torch.where(p0.link >= 0, table[p0.link.clamp(min=0)], p0.link)

    # ------------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def inference(
        self,
        images: list[torch.Tensor],
        output_sizes: list[tuple[int, int]] | None = None,
        mask_threshold: float = 0.5,
    ) -> list[Detections]:
        """Detect and segment each (3, h, w) uint8 RGB image (already resized to the test size).

        output_sizes: the original (H, W) of each image to map boxes and masks back to (default: as given).
        Official post-processing: score = sqrt(cls * ctr), candidates where cls * ctr > 0.05, top-1000 per
        level, class-aware NMS at 0.6, top-100, masks > 0.5 at the original size.
        """
        x, sizes = self.preprocess(images)
        flat, mask_feats, locations, level_of = self._run(x)
        probs = flat["logits"].sigmoid() * flat["ctrness"].sigmoid()  # (B, L, C)
        level_ends = torch.bincount(level_of, minlength=len(self.strides)).cumsum(0).tolist()
        results = []
        for i in range(x.shape[0]):
            loc, cls, score = self._candidates(probs[i], level_ends)
            out_size = output_sizes[i] if output_sizes else sizes[i]
            results.append(
                self._detections(
                    i,
                    loc,
                    cls,
                    score,
                    flat,
                    mask_feats,
                    locations,
                    level_of,
                    (tuple(x.shape[-2:]), sizes[i], tuple(out_size)),
                    mask_threshold,
                )
            )
        return results

    def _candidates(self, probs: torch.Tensor, level_ends: list[int]):
        """(L, C) cls*ctr of one image -> candidate (location, class, cls*ctr): above the threshold, at most
        ``pre_nms_topk_test`` per level."""
        cfg = self.fcos_cfg
        locs, classes, scores = [], [], []
        start = 0
        for end in level_ends:
            pr = probs[start:end]
            cand = pr > cfg.inference_th_test
            loc, cls = cand.nonzero(as_tuple=True)
            sc = pr[loc, cls]
            if sc.numel() > cfg.pre_nms_topk_test:
                sc, top = sc.topk(cfg.pre_nms_topk_test, sorted=False)
                loc, cls = loc[top], cls[top]
            locs.append(loc + start)
            classes.append(cls)
            scores.append(sc)
            start = end
        return torch.cat(locs), torch.cat(classes), torch.cat(scores)

    def _detections(
        self, i, loc, cls, scores, flat, mask_feats, locations, level_of, sizes, mask_threshold
    ) -> Detections:
        """Candidates of image ``i`` -> NMS, top-k, masks; ``sizes`` = (padded, resized, output) (H, W)."""
        padded, size, out_size = sizes
        dev = mask_feats.device
        if loc.numel() == 0:
            D = flat["embedding"].shape[-1]
            return Detections(
                torch.zeros((0, 4), device=dev),
                torch.zeros(0, device=dev),
                torch.zeros(0, dtype=torch.long, device=dev),
                torch.zeros((0, *out_size), dtype=torch.bool, device=dev),
                torch.zeros((0, D), device=dev),
            )
        scores = scores.sqrt()
        strides = torch.tensor(self.strides, dtype=torch.float32, device=dev)[level_of[loc]]
        reg = flat["bbox_reg"][i, loc] * strides[:, None]
        xy = locations[loc]
        boxes = torch.stack(
            [xy[:, 0] - reg[:, 0], xy[:, 1] - reg[:, 1], xy[:, 0] + reg[:, 2], xy[:, 1] + reg[:, 3]], 1
        )
        keep = batched_nms(boxes, scores, cls, self.fcos_cfg.nms_th)[: self.fcos_cfg.post_nms_topk_test]
        loc, cls, scores, boxes = loc[keep], cls[keep], scores[keep], boxes[keep]
        # masks: stride-4 probabilities of the padded input -> padded size -> crop -> original size
        logits = self.mask_head(
            mask_feats,
            self.mask_branch.out_stride,
            flat["params"][i, loc],
            locations[loc],
            level_of[loc],
            torch.full_like(loc, i),
        )
        probs = aligned_bilinear(logits.sigmoid()[:, None], padded[0] // logits.shape[-2])
        probs = probs[:, :, : size[0], : size[1]]
        if tuple(out_size) != tuple(size):
            probs = F.interpolate(probs, size=tuple(out_size), mode="bilinear", align_corners=False)
        masks = probs[:, 0] > mask_threshold
        sy, sx = out_size[0] / size[0], out_size[1] / size[1]
        boxes = boxes * torch.tensor([sx, sy, sx, sy], device=dev)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, out_size[1])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, out_size[0])
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return Detections(boxes[ok], scores[ok], cls[ok], masks[ok], flat["embedding"][i, loc][ok])
