"""Backbones through timm ``features_only``: ResNet-50/101 in the MSRA (detectron2) form, DLA-34, or any timm
model. Returns the stride-8/16/32 feature maps (C3, C4, C5) that the FPN takes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import timm
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from crossvis.errors import CrossVISError
from crossvis.modeling.msra import MSRA_INPUT, read_msra_pkl

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


def _create(name: str, *, pretrained: bool, weights_file: str) -> nn.Module:
    """timm feature extractor; with ``pretrained`` its ImageNet weights come from ``weights_file`` when given
    (timm's own file for that model), else from timm's cache (nothing can be downloaded offline)."""
    overlay = {"file": weights_file} if pretrained and weights_file else None
    if overlay and not Path(weights_file).is_file():
        raise CrossVISError(weights_file, "backbone weights file not found")
    try:
        return timm.create_model(
            name, features_only=True, pretrained=pretrained, pretrained_cfg_overlay=overlay
        )
    except RuntimeError as e:
        if pretrained and overlay:
            raise CrossVISError(
                weights_file, f"not timm weights of {name}: {str(e).splitlines()[0]}"
            ) from None
        raise CrossVISError(f"model.backbone.name={name}", str(e).splitlines()[0]) from None
    except Exception as e:  # no network: pretrained weights unavailable
        if pretrained:
            raise CrossVISError(
                f"model.backbone.pretrained ({name})",
                f"cannot load ImageNet weights ({type(e).__name__}); put timm's weights file for it in a local "
                "file and set model.backbone.weights_file",
            ) from None
        raise


def timm_input_requirements(name: str) -> dict:
    """The input timm's ImageNet weights of ``name`` expect, from its ``pretrained_cfg`` (metadata only,
    nothing is downloaded): RGB, mean and std scaled to 0-255, the stride where timm puts it (3x3 conv)."""
    cfg = timm.get_pretrained_cfg(name)
    if cfg is None:
        raise CrossVISError(f"model.backbone.name={name}", "timm has no pretrained_cfg for this model")
    return {
        "input_format": "RGB",
        "pixel_mean": [round(m * 255.0, 3) for m in cfg.mean],
        "pixel_std": [round(s * 255.0, 3) for s in cfg.std],
        "stride_in_1x1": False,
        "source": f"timm pretrained_cfg of {name}",
    }


def read_trunk_file(path: str) -> tuple[dict[str, torch.Tensor], dict | None]:
    """A trunk weights file -> (state dict, the input it expects or None when the file does not say)."""
    p = Path(path)
    if not p.is_file():
        raise CrossVISError(
            path,
            "backbone weights file not found (model.backbone.weights_file; the R-50/R-101 configs expect "
            "detectron2's ImageNetPretrained/MSRA/R-50.pkl or R-101.pkl there, see docs/recipes.md; or set "
            "model.weights, or model.init=scratch model.backbone.weights_file='')",
        )
    if p.suffix == ".pkl":
        sd, _ = read_msra_pkl(p)
        return sd, {**MSRA_INPUT, "source": f"MSRA weights {p.name}"}
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:
            raise CrossVISError(path, f"not a readable safetensors file ({type(e).__name__})") from None
        wanted = json.loads(meta["input"]) if "input" in meta else None
        return sd, ({**wanted, "source": meta.get("source", p.name)} if wanted else None)
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CrossVISError(path, f"cannot load weights safely ({type(e).__name__})") from None
    sd = sd.get("state_dict", sd.get("model", sd)) if isinstance(sd, dict) else sd
    if not isinstance(sd, dict):
        raise CrossVISError(path, "no state dict in the file")
    return sd, None


class Backbone(nn.Module):
    """A timm feature extractor returning [C3, C4, C5] (strides 8, 16, 32).

    Args:
        name: timm model name (resnet50, resnet101, dla34, resnet18, ...).
        freeze_at: 0 trains everything; 1 freezes the stem; 2 the stem and the first stage (official).
        stride_in_1x1: MSRA ResNet form: the stride-2 of each stage's first bottleneck on its 1x1 conv.
        frozen_bn: use frozen BatchNorm (eps 1e-5), as the official model does.
        pretrained: load timm's ImageNet weights (from ``weights_file`` when given, else timm's cache; nothing
            can be downloaded offline); :attr:`weights_input` is then timm's ``pretrained_cfg`` input.
        weights_file: local ImageNet weights for the trunk: with ``pretrained``, timm's file for the model;
            else an MSRA ``.pkl`` (detectron2 R-50.pkl / R-101.pkl), ``.safetensors`` or ``.pth`` state dict.

    Attributes:
        weights_input: what input the loaded weights expect ({input_format, pixel_mean, pixel_std,
            stride_in_1x1, source}), or None when no weights were loaded or the file does not say.
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
        self.weights_input: dict | None = None  # the input the loaded ImageNet weights expect (see below)
        self.body = _create(name, pretrained=pretrained, weights_file=weights_file)
        if pretrained:
            self.weights_input = timm_input_requirements(name)
        reductions = self.body.feature_info.reduction()
        keep = [reductions.index(r) for r in (8, 16, 32) if r in reductions]
        if len(keep) != 3:
            raise CrossVISError(
                f"model.backbone.name={name}", f"needs stride 8/16/32 features, has {reductions}"
            )
        self.keep = keep
        self.out_channels = [self.body.feature_info.channels()[i] for i in keep]
        if weights_file and not pretrained:
            self.load_trunk(weights_file, stride_in_1x1=stride_in_1x1)
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

    def load_trunk(self, path: str, stride_in_1x1: bool = True) -> None:
        """Load ImageNet weights for the trunk: an MSRA Caffe2 ``.pkl`` (read without running code), a
        ``.safetensors`` (e.g. from ``crossvis convert R-50.pkl``) or a ``.pth`` state dict.

        Every trunk tensor must be in the file (else a CrossVISError names the first missing one); the file's
        unused tensors (e.g. the ImageNet classifier) are listed in the log. Sets :attr:`weights_input` when the
        file says what input it expects (MSRA files: BGR 0-255, MSRA mean, std 1, stride in the 1x1 conv).
        """
        sd, self.weights_input = read_trunk_file(path)
        if self.weights_input and self.weights_input.get("stride_in_1x1") is True and not stride_in_1x1:
            raise CrossVISError(
                path, "MSRA weights have the stride on the 1x1 conv: set model.backbone.stride_in_1x1=true"
            )
        own = self.body.state_dict()
        missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
        if missing:
            raise CrossVISError(
                path,
                f"{len(missing)} backbone tensors missing from the weights file, e.g. '{missing[0]}' "
                f"(is it the weights of model.backbone.name={type(self.body).__name__}?)",
            )
        bad = [k for k in own if k in sd and own[k].shape != sd[k].shape]
        if bad:
            raise CrossVISError(
                path,
                f"'{bad[0]}' has shape {tuple(sd[bad[0]].shape)}, the backbone {tuple(own[bad[0]].shape)}",
            )
        unused = sorted(k for k in sd if k not in own)
        self.body.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
        log.info(
            "backbone weights %s: %d tensors loaded, %d unused%s",
            path,
            len(own) - sum(k.endswith("num_batches_tracked") for k in own),
            len(unused),
            f" ({', '.join(unused[:6])}{', ...' if len(unused) > 6 else ''})" if unused else "",
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, H, W) normalised, H and W multiples of 32 -> [C3 (B, c3, H/8, W/8), C4, C5]."""
        feats = self.body(x)
        return [feats[i] for i in self.keep]
