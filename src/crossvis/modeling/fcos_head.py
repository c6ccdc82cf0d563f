"""FCOS head with three towers (class, box, identity), shared across the five pyramid levels.

Per location it predicts class logits, box distances (l, t, r, b in units of the level stride), centerness
(from the box tower), and the identity embedding (1x1 conv + BatchNorm on the identity tower). The controller
that generates the dynamic mask-head filters also reads the box tower; it lives in the model.

Inference under ``torch.no_grad``/``torch.inference_mode`` in eval mode takes a fused path with the same
outputs to float tolerance: the first convs of the three towers (which share their input) run as one
convolution with concatenated weights (and one GroupNorm with 3x the groups), ``bbox_pred`` and ``ctrness``
(which share the box tower) as one, and the eval-mode identity BatchNorm is folded into ``identity_pred``.
The fused weights are plain attributes built lazily from the parameters and rebuilt whenever a parameter
changes (``load_state_dict``, an optimiser step, ``.to()``): checkpoint keys and the training path are untouched.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _tower(width: int, num_convs: int, norm: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(width, width, 3, padding=1, bias=True))
        if norm == "GN":
            layers.append(nn.GroupNorm(32, width))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Scale(nn.Module):
    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([init]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


@dataclass
class _Fused:
    """Inference weights derived from the parameters (see the module docstring)."""

    key: tuple
    first_w: torch.Tensor  # (3 * width, width, 3, 3): cls | box | identity
    first_b: torch.Tensor
    gn_w: torch.Tensor | None  # (3 * width,) GroupNorm affine of the three towers, or None without norm
    gn_b: torch.Tensor | None
    boxctr_w: torch.Tensor  # (5, width, 3, 3): bbox_pred | ctrness
    boxctr_b: torch.Tensor
    id_w: torch.Tensor  # (D, width, 1, 1): identity_pred with the eval BatchNorm folded in
    id_b: torch.Tensor


def _like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` in the memory format of the 4-D parameter ``ref`` (channels_last models stay channels_last)."""
    if ref.dim() == 4 and ref.is_contiguous(memory_format=torch.channels_last) and not ref.is_contiguous():
        return t.contiguous(memory_format=torch.channels_last)
    return t.contiguous()


class FCOSHead(nn.Module):
    """Args: width (FPN channels, 256), num_classes, num_convs per tower (4), norm ("GN" or "none"),
    prior_prob for the class bias, embedding_dim (256), num_levels (5).

    forward(features) -> dict of per-level lists:
        logits (B, C, H, W), bbox_reg (B, 4, H, W) >= 0, ctrness (B, 1, H, W), box_tower (B, width, H, W),
        embedding (B, D, H, W).
    """

    def __init__(
        self,
        width: int = 256,
        num_classes: int = 40,
        num_convs: int = 4,
        norm: str = "GN",
        prior_prob: float = 0.01,
        embedding_dim: int = 256,
        num_levels: int = 5,
    ) -> None:
        super().__init__()
        self.cls_tower = _tower(width, num_convs, norm)
        self.bbox_tower = _tower(width, num_convs, norm)
        self.identity_tower = _tower(width, num_convs, norm)
        self.cls_logits = nn.Conv2d(width, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(width, 4, 3, padding=1)
        self.ctrness = nn.Conv2d(width, 1, 3, padding=1)
        self.identity_pred = nn.Conv2d(width, embedding_dim, 1)
        # one BN shared by all levels (official); each level is normalised with its own batch statistics
        self.identity_bn = nn.BatchNorm2d(embedding_dim)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        self.num_convs, self.norm = num_convs, norm
        self._fused_cache: _Fused | None = None

    def forward(self, features: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        if not self.training and not torch.is_grad_enabled() and self.num_convs > 0:
            return self._forward_fused(features)
        return self._forward_levels(features)

    def _forward_levels(self, features: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        """The reference path (training, or inference with gradients)."""
        out: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("logits", "bbox_reg", "ctrness", "box_tower", "embedding")
        }
        for level, x in enumerate(features):
            cls_t, box_t, id_t = self.cls_tower(x), self.bbox_tower(x), self.identity_tower(x)
            out["logits"].append(self.cls_logits(cls_t))
            out["ctrness"].append(self.ctrness(box_t))
            out["bbox_reg"].append(F.relu(self.scales[level](self.bbox_pred(box_t))))
            out["box_tower"].append(box_t)
            out["embedding"].append(self._identity_norm(self.identity_pred(id_t)))
        return out

    def _identity_norm(self, e: torch.Tensor) -> torch.Tensor:
        # A level with one value per channel (batch 1, 1x1 map) has no batch statistics: use the running ones.
        if self.training and e.shape[0] * e.shape[2] * e.shape[3] == 1:
            bn = self.identity_bn
            return F.batch_norm(e, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return self.identity_bn(e)

    # ------------------------------------------------------------------------------------------- fused inference
    def _fusion_key(self) -> tuple:
        params = [*self.parameters(), *self.identity_bn.buffers()]
        return tuple((p.data_ptr(), p._version, p.dtype, p.stride()) for p in params)

    def fused(self) -> _Fused:
        """The fused inference weights, rebuilt when any parameter or BN statistic changed (built afresh,
        as graph operations, under torch.compile / torch.export tracing)."""
        tracing = torch.compiler.is_compiling() or torch.compiler.is_exporting()
        key = () if tracing else self._fusion_key()
        if not tracing and self._fused_cache is not None and self._fused_cache.key == key:
            return self._fused_cache
        with torch.no_grad():
            towers = (self.cls_tower, self.bbox_tower, self.identity_tower)
            first = [t[0] for t in towers]
            w0 = self.cls_tower[0].weight
            gn = [t[1] for t in towers] if self.norm == "GN" else None
            bn = self.identity_bn
            k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fused = _Fused(
                key=key,
                first_w=_like(torch.cat([c.weight for c in first]), w0),
                first_b=torch.cat([c.bias for c in first]),
                gn_w=torch.cat([g.weight for g in gn]) if gn else None,
                gn_b=torch.cat([g.bias for g in gn]) if gn else None,
                boxctr_w=_like(torch.cat([self.bbox_pred.weight, self.ctrness.weight]), w0),
                boxctr_b=torch.cat([self.bbox_pred.bias, self.ctrness.bias]),
                id_w=_like(self.identity_pred.weight * k[:, None, None, None], w0),
                id_b=(self.identity_pred.bias - bn.running_mean) * k + bn.bias,
            )
        if not tracing:
            self._fused_cache = fused
        return fused

    def _forward_fused(self, features: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        """Eval-mode inference without gradients: the outputs of :meth:`_forward_levels` to float tolerance."""
        f = self.fused()
        width = self.cls_logits.in_channels
        per_conv = 3 if self.norm == "GN" else 2  # conv, [GN], ReLU
        rest = [t[per_conv:] for t in (self.cls_tower, self.bbox_tower, self.identity_tower)]
        out: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("logits", "bbox_reg", "ctrness", "box_tower", "embedding")
        }
        for level, x in enumerate(features):
            y = F.conv2d(x, f.first_w, f.first_b, padding=1)
            if f.gn_w is not None:
                g = self.cls_tower[1]
                y = F.group_norm(y, 3 * g.num_groups, f.gn_w, f.gn_b, g.eps)
            cls_t, box_t, id_t = (r(t) for r, t in zip(rest, F.relu(y).split(width, 1)))
            with _float32_outputs(x.device.type) as cast:
                out["logits"].append(self.cls_logits(cast(cls_t)))
                bc = F.conv2d(cast(box_t), f.boxctr_w, f.boxctr_b, padding=1)
                out["bbox_reg"].append(F.relu(self.scales[level](bc[:, :4])))
                out["ctrness"].append(bc[:, 4:])
                out["embedding"].append(F.conv2d(cast(id_t), f.id_w, f.id_b))
            out["box_tower"].append(box_t)
        return out


@contextlib.contextmanager
def _float32_outputs(device_type: str):
    """Under autocast, the prediction convs run in float32 on float32 tower outputs (yields the cast): bf16
    logits have 8 significant bits and reorder near-equal scores (on synthetic-tiny's 12-video check they
    changed a track: -5.6 AP; see reports/performance.md), while the towers, 98% of the head's FLOPs, stay in
    reduced precision. Without autocast: nothing changes."""
    if not torch.is_autocast_enabled(device_type):
        yield lambda t: t
        return
    with torch.autocast(device_type, enabled=False):
        yield lambda t: t.float()
