"""Backbones through timm ``features_only``: ResNet-50/101 in the MSRA (detectron2) form, DLA-34, or any timm
model. Returns the stride-8/16/32 feature maps (C3, C4, C5) that the FPN takes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from crossvis.errors import CrossVISError

log = logging.getLogger(__name__)


def freeze_batchnorm(module: nn.Module, eps: float = 1e-5) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d (statistics and affine as buffers), copying its state."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=eps)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.running_mean is not None:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = freeze_batchnorm(child, eps)
        if new is not child:
            setattr(module, name, new)
    return module


class Backbone(nn.Module):
    """A timm feature extractor returning [C3, C4, C5] (strides 8, 16, 32).

    Args:
        name: timm model name (resnet50, resnet101, dla34, resnet18, ...).
        freeze_at: 0 trains everything; 1 freezes the stem; 2 the stem and the first stage (official).
        stride_in_1x1: MSRA ResNet form: the stride-2 of each stage's first bottleneck on its 1x1 conv.
        frozen_bn: use frozen BatchNorm (eps 1e-5), as the official model does.
        pretrained: load timm's ImageNet weights (from its cache; nothing can be downloaded offline).
        weights_file: local ImageNet weights for the trunk (.safetensors or a .pth state dict).
    """

    def __init__(
        self,
        name: str = "resnet50",
        freeze_at: int = 2,
        stride_in_1x1: bool = True,
        frozen_bn: bool = True,
        pretrained: bool = False,
        weights_file: str = "",
    ) -> None:
        super().__init__()
        try:
            self.body = timm.create_model(name, features_only=True, pretrained=pretrained)
        except RuntimeError as e:
            raise CrossVISError(f"model.backbone.name={name}", str(e).splitlines()[0]) from None
        except Exception as e:  # no network: pretrained weights unavailable
            if pretrained:
                raise CrossVISError(
                    f"model.backbone.pretrained ({name})",
                    f"cannot load ImageNet weights ({type(e).__name__}); put them in a local "
                    "file and set model.backbone.weights_file",
                ) from None
            raise
        reductions = self.body.feature_info.reduction()
        keep = [reductions.index(r) for r in (8, 16, 32) if r in reductions]
        if len(keep) != 3:
            raise CrossVISError(
                f"model.backbone.name={name}", f"needs stride 8/16/32 features, has {reductions}"
            )
        self.keep = keep
        self.out_channels = [self.body.feature_info.channels()[i] for i in keep]
        if weights_file:
            self.load_trunk(weights_file)
        if stride_in_1x1:
            self._move_stride_to_1x1()
        if frozen_bn:
            freeze_batchnorm(self.body)
        self._freeze(freeze_at)

    def _move_stride_to_1x1(self) -> None:
        for stage in ("layer2", "layer3", "layer4"):
            block = getattr(self.body, stage, None)
            if block is None:
                continue
            first = block[0]
            if hasattr(first, "conv3"):  # bottleneck: 1x1 -> 3x3 -> 1x1
                first.conv1.stride, first.conv2.stride = (2, 2), (1, 1)

    def _freeze(self, freeze_at: int) -> None:
        if freeze_at <= 0:
            return
        names = [n for n, _ in self.body.named_children()]
        # the stem is everything before the first stride-4 stage; stage 1 is the first stride-4 stage
        info = self.body.feature_info
        stage_names = [m.split(".")[0] for m in info.module_name()]
        first_stage = next((s for s, r in zip(stage_names, info.reduction()) if r == 4), None)
        frozen = []
        for n in names:
            if n == first_stage:
                if freeze_at >= 2:
                    frozen.append(n)
                break
            frozen.append(n)
        for n in frozen:
            for p in getattr(self.body, n).parameters():
                p.requires_grad_(False)

    def load_trunk(self, path: str) -> None:
        p = Path(path)
        if not p.is_file():
            raise CrossVISError(path, "backbone weights file not found")
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            try:
                sd = torch.load(p, map_location="cpu", weights_only=True)
            except Exception as e:
                raise CrossVISError(path, f"cannot load weights safely ({type(e).__name__})") from None
            sd = sd.get("state_dict", sd.get("model", sd)) if isinstance(sd, dict) else sd
        missing, unexpected = self.body.load_state_dict(sd, strict=False)
        log.info("backbone weights %s: %d missing, %d unexpected keys", path, len(missing), len(unexpected))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, H, W) normalised, H and W multiples of 32 -> [C3 (B, c3, H/8, W/8), C4, C5]."""
        feats = self.body(x)
        return [feats[i] for i in self.keep]
