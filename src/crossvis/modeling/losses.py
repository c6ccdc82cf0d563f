"""Losses: sigmoid focal, GIoU (official form), dice, and the identity losses (global or pair-wise)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss


def giou_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of (1 - GIoU) over (P, 4) l, t, r, b distance pairs, with the official +1 IoU smoothing.

    inter = (min l + min r)(min t + min b); IoU = (inter + 1) / (union + 1);
    GIoU = IoU - (enclose - union) / enclose.
    """
    pl, pt, pr, pb = pred.unbind(1)
    tl, tt, tr, tb = target.unbind(1)
    pa = (pl + pr) * (pt + pb)
    ta = (tl + tr) * (tt + tb)
    inter = (torch.minimum(pl, tl) + torch.minimum(pr, tr)) * (torch.minimum(pt, tt) + torch.minimum(pb, tb))
    union = pa + ta - inter
    iou = (inter + 1.0) / (union + 1.0)
    enclose = (torch.maximum(pl, tl) + torch.maximum(pr, tr)) * (
        torch.maximum(pt, tt) + torch.maximum(pb, tb)
    )
    giou = iou - (enclose - union) / enclose.clamp(min=1e-7)
    loss = 1 - giou
    return (loss * weight).sum() if weight is not None else loss.sum()


def dice_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(N, H, W) probabilities and binary targets -> (N,) 1 - 2 sum(pg) / (sum p^2 + sum g^2 + eps)."""
    p, g = probs.flatten(1), target.flatten(1).to(probs.dtype)
    return 1 - 2 * (p * g).sum(1) / ((p * p).sum(1) + (g * g).sum(1) + eps)


def embedding_scale(num_identities: int) -> float:
    """sqrt(2) * ln(nID - 1), the JDE scale of the normalised embedding (11.6469 for 3774 identities)."""
    return math.sqrt(2) * math.log(max(num_identities - 1, 2))


def global_identity_loss(
    embeddings: torch.Tensor,
    identities: torch.Tensor,
    classifier: torch.nn.Linear,
    scale: float,
    focal: bool = True,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """The global balanced embedding loss: classify the scaled, L2-normalised embedding over all identities.

    embeddings: (P, D); identities: (P,) in 0..nID-1. Focal: sum / P (zero, not NaN, when P = 0 — the official
    code divides by zero there); CE: mean softmax cross-entropy.
    """
    if embeddings.shape[0] == 0:
        return embeddings.sum() * 0 + sum(p.sum() * 0 for p in classifier.parameters())
    logits = classifier(scale * F.normalize(embeddings, dim=1))
    if not focal:
        return F.cross_entropy(logits, identities)
    onehot = F.one_hot(identities, logits.shape[1]).to(logits.dtype)
    return sigmoid_focal_loss(logits, onehot, alpha=alpha, gamma=gamma, reduction="sum") / embeddings.shape[0]


def pairwise_identity_loss(
    *,
    key_emb: torch.Tensor,
    key_img: torch.Tensor,
    key_link: torch.Tensor,
    ref_emb: torch.Tensor,
    ref_img: torch.Tensor,
    ref_obj: torch.Tensor,
    focal: bool = False,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """The pair-wise (MaskTrack R-CNN style) identity loss the paper compares against.

    Each key-frame positive is classified among its pair's reference-frame instances plus "new" (slot 0);
    a reference instance is represented by the mean embedding of its positives.
    key_emb (P, D), key_img (P,), key_link (P,) index of the same object in the reference frame's list or -1;
    ref_emb (Q, D), ref_img (Q,), ref_obj (Q,) object index (within its frame) of each reference positive.
    """
    losses = []
    for img in key_img.unique().tolist():
        k = key_img == img
        r = ref_img == img
        objs = ref_obj[r]
        n_obj = int(objs.max().item()) + 1 if objs.numel() else 0
        protos = key_emb.new_zeros((n_obj, key_emb.shape[1]))
        if n_obj:
            protos.index_add_(0, objs, ref_emb[r])
            counts = torch.bincount(objs, minlength=n_obj).clamp(min=1).to(protos.dtype)
            protos = protos / counts[:, None]
        logits = torch.cat([key_emb.new_zeros((int(k.sum()), 1)), key_emb[k] @ protos.t()], 1)
        target = key_link[k] + 1  # 0 = new
        if n_obj:
            # objects without positives in the reference frame cannot be picked: their slot is "new"
            has_pos = torch.bincount(objs, minlength=n_obj) > 0
            linked = (target > 0) & (target <= n_obj)
            ok = linked & has_pos[(target - 1).clamp(0, n_obj - 1)]
            target = torch.where(ok, target, torch.zeros_like(target))
            logits[:, 1:] = logits[:, 1:].masked_fill(~has_pos[None], -1e4)
        else:
            target = torch.zeros_like(target)
        if focal:
            onehot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
            losses.append(
                sigmoid_focal_loss(logits, onehot, alpha, gamma, reduction="sum") / max(1, len(target))
            )
        else:
            losses.append(F.cross_entropy(logits, target))
    if not losses:
        return key_emb.sum() * 0 + ref_emb.sum() * 0
    return torch.stack(losses).mean()
