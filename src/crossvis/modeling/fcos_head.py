"""FCOS head with three towers (class, box, identity), shared across the five pyramid levels.

Per location it predicts class logits, box distances (l, t, r, b in units of the level stride), centerness
(from the box tower), and the identity embedding (1x1 conv + BatchNorm on the identity tower). The controller
that generates the dynamic mask-head filters also reads the box tower; it lives in the model.
"""

from __future__ import annotations

import math

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

    def forward(self, features: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
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
