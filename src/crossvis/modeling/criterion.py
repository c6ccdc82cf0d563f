"""The CrossVIS training losses as one criterion: a table of named losses over a pair of frame batches.

Per frame (averaged over the two frames, weight ``loss_weight_det``): the FCOS class (sigmoid focal), box
(GIoU weighted by centerness) and centerness (BCE) losses, and the CondInst mask loss (dice). Across the pair:
the crossover loss (frame t's dynamic filters segment the same object in frame t+delta and the reverse) and the
identity loss (the global balanced embedding by default; the pair-wise variants of Table 7 for comparison).

Like DETR's ``SetCriterion`` the criterion holds no parameters: the model passes the two modules the losses
run through (the dynamic mask head and the identity classifier) in :class:`LossModules`, and calls the
criterion inside its own forward, so DDP sees every parameter used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from crossvis.config import CondInstConfig, CrossVISConfig, FCOSConfig
from crossvis.data.pairs import FrameTarget
from crossvis.modeling.losses import (
    dice_loss,
    embedding_scale,
    giou_loss,
    global_identity_loss,
    pairwise_identity_loss,
)
from crossvis.modeling.mask_branch import DynamicMaskHead
from crossvis.modeling.targets import assign_targets, centerness_target, mask_centroids, size_ranges


@dataclass
class FrameOutputs:
    """The per-frame network outputs of a batch of B images, levels flattened to L locations.

    flat: ``logits`` (B, L, C), ``bbox_reg`` (B, L, 4) in units of the level stride, ``ctrness`` (B, L, 1),
    ``embedding`` (B, L, D), ``params`` (B, L, K) controller outputs; mask_feats: (B, C_m, H/8, W/8);
    locations: (L, 2) x, y in input pixels; levels: (L,) FPN level of each location; padded_size: (H, W).
    """

    flat: dict[str, torch.Tensor]
    mask_feats: torch.Tensor
    locations: torch.Tensor
    levels: torch.Tensor
    padded_size: tuple[int, int]


@dataclass
class Positives:
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


@dataclass
class FrameMatch:
    """The FCOS assignment of one frame batch: per-location targets, positives and GT masks.

    cls_target: (B, L, C) one-hot; reg_target / reg_pred: (P, 4) in stride units; ctr_target (P,);
    ctr_logit (P,); gt_masks: (G, H/4, W/4) float at the mask output stride; normalizer: the positive count
    averaged over ranks, at least 1 (the official normaliser).
    """

    positives: Positives
    cls_target: torch.Tensor
    reg_target: torch.Tensor
    reg_pred: torch.Tensor
    ctr_target: torch.Tensor
    ctr_logit: torch.Tensor
    gt_masks: torch.Tensor
    normalizer: torch.Tensor


@dataclass
class LossModules:
    """The model's modules the losses run through (the criterion owns no parameters)."""

    mask_head: DynamicMaskHead
    mask_stride: int  # stride of the mask features (8)
    identity_classifier: nn.Linear | None


def reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over distributed ranks (the official normalisers), identity when not distributed."""
    if dist.is_available() and dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
        x = x / dist.get_world_size()
    return x


def subsample(n: int, cap: int, device: torch.device) -> torch.Tensor:
    """Indices of at most ``cap`` of ``n`` items, a random subset when there are more (CondInst's cap)."""
    return torch.randperm(n, device=device)[:cap] if n > cap else torch.arange(n, device=device)


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    # a zero that keeps the graph connected to its inputs (DDP needs every used parameter in the graph)
    return sum(t.sum() * 0 for t in tensors)


class CrossVISCriterion:
    """The losses of a pair of frame batches, by name (see :meth:`frame_losses` and :meth:`__call__`).

    Args:
        fcos, condinst, crossvis: the head, mask and CrossVIS settings (focal alpha/gamma, sampling radius,
            proposal cap, loss weights, identity-loss variant, crossover switch).
        strides: the FPN strides (8, 16, 32, 64, 128).
        num_identities: training identities (sizes the global embedding's scale).
    """

    def __init__(
        self,
        *,
        fcos: FCOSConfig,
        condinst: CondInstConfig,
        crossvis: CrossVISConfig,
        strides: list[int],
        num_identities: int,
    ) -> None:
        if crossvis.identity_loss not in IDENTITY_LOSSES:
            raise ValueError(f"identity_loss must be one of {tuple(IDENTITY_LOSSES)}")
        self.fcos, self.condinst, self.crossvis = fcos, condinst, crossvis
        self.strides = list(strides)
        self.ranges = size_ranges(list(fcos.sizes_of_interest))
        self.num_identities = num_identities
        self.identity_loss = IDENTITY_LOSSES[crossvis.identity_loss]
        # every loss weight in one place; the per-frame losses are averaged over the two frames first
        w_det = crossvis.loss_weight_det
        self.weights = {
            "loss_fcos_cls": w_det,
            "loss_fcos_loc": w_det,
            "loss_fcos_ctr": w_det,
            "loss_mask": w_det,
            "loss_crossover": crossvis.loss_weight_crossover,
            "loss_identity": crossvis.loss_weight_identity,
        }

    def __call__(
        self,
        outputs: list[FrameOutputs],
        frames: list[list[FrameTarget]],
        modules: LossModules,
    ) -> dict[str, torch.Tensor]:
        """outputs / frames: the two frame batches (t, t+delta) -> the weighted loss dict."""
        matches = self.match_pair(outputs, frames)
        per_frame = [self.frame_losses(out, match, modules) for out, match in zip(outputs, matches)]
        raw = {k: (per_frame[0][k] + v) / 2 for k, v in per_frame[1].items()}
        if self.crossvis.crossover:
            p0, p1 = matches[0].positives, matches[1].positives
            # frame-1 filters segment frame 0, and frame-0 filters segment frame 1
            a = self.crossover_loss(p1, p0, outputs[0].mask_feats, matches[0].gt_masks, modules=modules)
            b = self.crossover_loss(p0, p1, outputs[1].mask_feats, matches[1].gt_masks, modules=modules)
            raw["loss_crossover"] = 0.5 * (a + b)
        raw["loss_identity"] = self.identity_loss(self, matches[0].positives, matches[1].positives, modules)
        return {k: self.weights[k] * v for k, v in raw.items()}

    # ------------------------------------------------------------------------------------------ assignment
    def match_pair(self, outputs: list[FrameOutputs], frames: list[list[FrameTarget]]) -> list[FrameMatch]:
        """Both frames' assignments; each frame's links index the other frame's batch-global GT list."""
        n_gt = [[len(t.classes) for t in f] for f in frames]
        return [self.match(outputs[f], frames[f], n_gt[1 - f]) for f in range(2)]

    def match(self, out: FrameOutputs, targets: list[FrameTarget], n_gt_other: list[int]) -> FrameMatch:
        """FCOS assignment around each object's mask centroid, and the positives' per-object attributes."""
        dev = out.locations.device
        H, W = out.padded_size
        s = self.condinst.mask_out_stride
        gt_ind_all, reg_all, gt_masks, attrs = [], [], [], []
        offset, offset_other = 0, 0
        for i, t in enumerate(targets):
            boxes, masks = t.boxes.to(dev), t.masks.to(dev)
            gt_ind, reg = assign_targets(
                out.locations,
                out.levels,
                strides=self.strides,
                ranges=self.ranges,
                boxes=boxes,
                centroids=mask_centroids(masks, boxes),
                center_sample=self.fcos.center_sample,
                radius=self.fcos.pos_radius,
            )
            gt_ind_all.append(torch.where(gt_ind >= 0, gt_ind + offset, gt_ind))
            reg_all.append(reg)
            full = masks.new_zeros((masks.shape[0], H, W))
            full[:, : masks.shape[1], : masks.shape[2]] = masks
            gt_masks.append(full[:, s // 2 :: s, s // 2 :: s])  # stride-4 GT, as officially sampled
            n = len(t.classes)
            attrs.append(
                (
                    t.classes.to(dev),
                    t.identities.to(dev),
                    torch.where(t.links >= 0, t.links + offset_other, t.links).to(dev),
                    torch.arange(n, device=dev),
                    torch.full((n,), t.still, dtype=torch.bool, device=dev),
                )
            )
            offset += n
            offset_other += n_gt_other[i]
        classes, identities, links, local_of, still_of = (torch.cat(a) for a in zip(*attrs))
        gt_ind = torch.stack(gt_ind_all)  # (B, L)
        reg = torch.stack(reg_all)  # (B, L, 4)
        gt_masks = torch.cat(gt_masks).float() if gt_masks else out.mask_feats.new_zeros((0, H // 4, W // 4))

        pos_b, pos_l = torch.nonzero(gt_ind >= 0, as_tuple=True)
        pos_gt = gt_ind[pos_b, pos_l]
        num_pos = pos_b.numel()
        cls_target = torch.zeros_like(out.flat["logits"])
        cls_target[pos_b, pos_l, classes[pos_gt]] = 1.0
        strides = torch.tensor(self.strides, dtype=torch.float32, device=dev)[out.levels[pos_l]]
        reg_target = reg[pos_b, pos_l] / strides[:, None]
        positives = Positives(
            im=pos_b,
            loc=out.locations[pos_l],
            level=out.levels[pos_l],
            params=out.flat["params"][pos_b, pos_l],
            emb=out.flat["embedding"][pos_b, pos_l],
            gt=pos_gt,
            local_gt=local_of[pos_gt] if num_pos else pos_gt,
            identity=identities[pos_gt],
            link=links[pos_gt],
            still=still_of[pos_gt],
        )
        return FrameMatch(
            positives=positives,
            cls_target=cls_target,
            reg_target=reg_target,
            reg_pred=out.flat["bbox_reg"][pos_b, pos_l],
            ctr_target=centerness_target(reg_target) if num_pos else reg_target.new_zeros(0),
            ctr_logit=out.flat["ctrness"][pos_b, pos_l, 0],
            gt_masks=gt_masks,
            normalizer=reduce_mean(torch.tensor(float(num_pos), device=dev)).clamp(min=1.0),
        )

    # ------------------------------------------------------------------------------------------ per frame
    def frame_losses(
        self, out: FrameOutputs, match: FrameMatch, modules: LossModules
    ) -> dict[str, torch.Tensor]:
        """The per-frame losses of one frame batch, unweighted (in this order: the normalisers are collectives)."""
        return {
            "loss_fcos_cls": self.loss_fcos_cls(out, match),
            "loss_fcos_loc": self.loss_fcos_loc(match),
            "loss_fcos_ctr": self.loss_fcos_ctr(match),
            "loss_mask": self.loss_mask(out, match, modules),
        }

    def loss_fcos_cls(self, out: FrameOutputs, match: FrameMatch) -> torch.Tensor:
        """Sigmoid focal loss over every location and class, / the number of positives."""
        a, g = self.fcos.loss_alpha, self.fcos.loss_gamma
        focal = sigmoid_focal_loss(out.flat["logits"], match.cls_target, a, g, reduction="sum")
        return focal / match.normalizer

    def loss_fcos_loc(self, match: FrameMatch) -> torch.Tensor:
        """GIoU of the positives' boxes weighted by their centerness target, / the centerness sum."""
        if match.reg_pred.shape[0] == 0:
            return match.reg_pred.sum() * 0
        ctr_norm = reduce_mean(match.ctr_target.sum().detach()).clamp(min=1e-6)
        return giou_loss(match.reg_pred, match.reg_target, match.ctr_target) / ctr_norm

    def loss_fcos_ctr(self, match: FrameMatch) -> torch.Tensor:
        """Centerness BCE of the positives, / the number of positives."""
        if match.ctr_logit.shape[0] == 0:
            return match.ctr_logit.sum() * 0
        bce = F.binary_cross_entropy_with_logits(match.ctr_logit, match.ctr_target, reduction="sum")
        return bce / match.normalizer

    def loss_mask(self, out: FrameOutputs, match: FrameMatch, modules: LossModules) -> torch.Tensor:
        """Dice of each positive's dynamic mask against its object's mask (at most ``max_proposals``)."""
        p = match.positives
        keep = subsample(p.im.numel(), self.condinst.max_proposals, out.mask_feats.device)
        if not keep.numel():
            return _zero(out.mask_feats, out.flat["params"])
        logits = modules.mask_head(
            out.mask_feats,
            modules.mask_stride,
            params=p.params[keep],
            locations=p.loc[keep],
            levels=p.level[keep],
            im_inds=p.im[keep],
        )
        return dice_loss(logits.sigmoid(), match.gt_masks[p.gt[keep]]).mean()

    # ------------------------------------------------------------------------------------------ across the pair
    def crossover_loss(
        self,
        src: Positives,
        dst: Positives,
        dst_mask_feats: torch.Tensor,
        dst_gt_masks: torch.Tensor,
        *,
        modules: LossModules,
    ) -> torch.Tensor:
        """Filters of ``src`` positives segment the same object in the other frame (``dst``), with relative
        coordinates taken at a random positive location of that object there; mean dice vs its mask.

        Still-image samples and objects without positives in ``dst`` take no part.
        """
        dev = dst_mask_feats.device
        cap = self.condinst.max_proposals
        s_keep = subsample(src.im.numel(), cap, dev)
        d_keep = subsample(dst.im.numel(), cap, dev)
        s_link, s_params, s_still = src.link[s_keep], src.params[s_keep], src.still[s_keep]
        d_gt = dst.gt[d_keep]
        n_dst_gt = dst_gt_masks.shape[0]
        if s_link.numel() == 0 or d_gt.numel() == 0 or n_dst_gt == 0:
            return _zero(dst_mask_feats, src.params)
        counts = torch.bincount(d_gt, minlength=n_dst_gt)
        valid = (s_link >= 0) & ~s_still & (counts[s_link.clamp(min=0)] > 0)
        if not valid.any():
            return _zero(dst_mask_feats, src.params)
        tgt = s_link[valid]
        order = torch.argsort(d_gt, stable=True)  # dst positives grouped by their GT
        starts = torch.cumsum(counts, 0) - counts
        offset = (torch.rand(tgt.numel(), device=dev) * counts[tgt]).long().clamp(max=counts[tgt] - 1)
        sel = d_keep[order[starts[tgt] + offset]]
        logits = modules.mask_head(
            dst_mask_feats,
            modules.mask_stride,
            params=s_params[valid],
            locations=dst.loc[sel],
            levels=dst.level[sel],
            im_inds=dst.im[sel],
        )
        return dice_loss(logits.sigmoid(), dst_gt_masks[tgt]).mean()

    def global_identity(
        self, p0: Positives, p1: Positives, modules: LossModules, *, focal: bool
    ) -> torch.Tensor:
        """The global balanced embedding: both frames' positives classified over all training identities."""
        if modules.identity_classifier is None:
            return _zero(p0.emb, p1.emb)
        return global_identity_loss(
            torch.cat([p0.emb[~p0.still], p1.emb[~p1.still]]),
            torch.cat([p0.identity[~p0.still], p1.identity[~p1.still]]),
            modules.identity_classifier,
            embedding_scale(self.num_identities),
            focal=focal,
            alpha=self.fcos.loss_alpha,
            gamma=self.fcos.loss_gamma,
        )

    def pairwise_identity(
        self, p0: Positives, p1: Positives, modules: LossModules, *, focal: bool
    ) -> torch.Tensor:
        """The pair-wise loss: each key-frame (0) positive classified among its pair's frame-1 objects."""
        k, r = ~p0.still, ~p1.still
        ref_local = local_links(p0, p1)
        return pairwise_identity_loss(
            key_emb=p0.emb[k],
            key_img=p0.im[k],
            key_link=ref_local[k],
            ref_emb=p1.emb[r],
            ref_img=p1.im[r],
            ref_obj=p1.local_gt[r],
            focal=focal,
            alpha=self.fcos.loss_alpha,
            gamma=self.fcos.loss_gamma,
        )


def local_links(p0: Positives, p1: Positives) -> torch.Tensor:
    """Frame-0 positives' links as object indices within the pair's frame-1 GT list (-1: none)."""
    if p1.gt.numel() == 0:
        return torch.full_like(p0.link, -1)
    n = int(max(p1.gt.max().item(), p0.link.max().item() if p0.link.numel() else 0)) + 1
    table = torch.full((n,), -1, dtype=torch.long, device=p0.link.device)
    table[p1.gt] = p1.local_gt
    # an object without positives in frame 1 keeps -1 there: it can only be "new" for the pair-wise loss
    return torch.where(p0.link >= 0, table[p0.link.clamp(min=0)], p0.link)


#: ``model.crossvis.identity_loss`` -> the loss (Table 7 of the paper); global_focal is the paper's method.
IDENTITY_LOSSES: dict[str, Callable] = {
    "global_focal": partial(CrossVISCriterion.global_identity, focal=True),
    "global_ce": partial(CrossVISCriterion.global_identity, focal=False),
    "pairwise_ce": partial(CrossVISCriterion.pairwise_identity, focal=False),
    "pairwise_focal": partial(CrossVISCriterion.pairwise_identity, focal=True),
}
