"""Mask branch (CondInst "bottom module"): P3-P5 -> shared mask features at stride 8, and the dynamic mask head
that turns each instance's 169 controller outputs into a tiny FCN over those features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def aligned_bilinear(t: torch.Tensor, factor: int) -> torch.Tensor:
    """Upsample (N, C, h, w) by an integer ``factor`` to (N, C, f*h, f*w), keeping pixel centres aligned
    (replicate-pad right/bottom, bilinear with align_corners=True, pad f//2 top/left, crop)."""
    if factor == 1:
        return t
    h, w = t.shape[-2:]
    t = F.pad(t, (0, 1, 0, 1), mode="replicate")
    t = F.interpolate(t, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    t = F.pad(t, (factor // 2, 0, factor // 2, 0), mode="replicate")
    return t[..., : factor * h, : factor * w]


def _conv_norm_relu(cin: int, cout: int, norm: str) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=norm == "none")
    nn.init.kaiming_uniform_(conv.weight, a=1)
    layers: list[nn.Module] = [conv]
    if norm in ("BN", "SyncBN"):
        layers.append(nn.BatchNorm2d(cout))  # converted to SyncBatchNorm by the trainer for SyncBN
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MaskBranch(nn.Module):
    """in_channels (FPN width) -> mask features (B, out_channels, H/8, W/8), no final activation."""

    def __init__(
        self,
        in_channels: int = 256,
        *,
        channels: int = 128,
        num_convs: int = 4,
        out_channels: int = 8,
        norm: str = "BN",
        num_inputs: int = 3,
    ) -> None:
        super().__init__()
        self.refine = nn.ModuleList(_conv_norm_relu(in_channels, channels, norm) for _ in range(num_inputs))
        self.tower = nn.Sequential(
            *[_conv_norm_relu(channels, channels, norm) for _ in range(num_convs)],
            nn.Conv2d(channels, out_channels, 1),
        )
        self.out_stride = 8

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """features: [P3, P4, P5, ...] -> (B, out_channels, H3, W3)."""
        x = self.refine[0](features[0])
        for i in range(1, len(self.refine)):
            y = self.refine[i](features[i])
            factor = x.shape[-2] // y.shape[-2]
            x = x + aligned_bilinear(y, factor)
        return self.tower(x)


class DynamicMaskHead(nn.Module):
    """The per-instance mask FCN whose weights come from the controller (no learnable parameters).

    Layers: (2 + C) -> ch -> ch -> 1 with 1x1 convs and ReLUs between (C = mask feature channels, ch = 8).
    The flat parameter vector is [w0 | w1 | w2 | b0 | b1 | b2] (169 numbers for C = ch = 8); the two extra
    input channels are the relative coordinates (instance location - pixel location) / size of the level.
    """

    def __init__(
        self,
        in_channels: int = 8,
        *,
        channels: int = 8,
        num_layers: int = 3,
        sizes_of_interest: tuple[int, ...] = (64, 128, 256, 512, 1024),
        mask_out_stride: int = 4,
        disable_rel_coords: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.channels, self.num_layers = in_channels, channels, num_layers
        self.rel_coords = not disable_rel_coords
        first_in = in_channels + (2 if self.rel_coords else 0)
        self.weight_shapes = (
            [(channels, first_in)] + [(channels, channels)] * (num_layers - 2) + [(1, channels)]
        )
        self.num_weights = [o * i for o, i in self.weight_shapes]
        self.num_biases = [o for o, _ in self.weight_shapes]
        self.num_params = sum(self.num_weights) + sum(self.num_biases)
        self.register_buffer("sizes_of_interest", torch.tensor(sizes_of_interest, dtype=torch.float32))
        self.mask_out_stride = mask_out_stride

    def split_params(self, params: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """params (N, num_params) -> weights [(N*out, in, 1, 1)...], biases [(N*out,)...] for a grouped conv."""
        n = params.shape[0]
        chunks = torch.split(params, self.num_weights + self.num_biases, dim=1)
        L = self.num_layers
        weights = [w.reshape(n * o, i, 1, 1) for w, (o, i) in zip(chunks[:L], self.weight_shapes)]
        biases = [b.reshape(n * o) for b, (o, _) in zip(chunks[L:], self.weight_shapes)]
        return weights, biases

    def forward(
        self,
        mask_feats: torch.Tensor,
        mask_feat_stride: int,
        *,
        params: torch.Tensor,
        locations: torch.Tensor,
        levels: torch.Tensor,
        im_inds: torch.Tensor,
    ) -> torch.Tensor:
        """Mask logits of N instances at stride ``mask_out_stride``.

        mask_feats: (B, C, H, W) at stride ``mask_feat_stride``; params: (N, num_params);
        locations: (N, 2) instance (x, y) in input pixels; levels: (N,) FPN level; im_inds: (N,) image of each.
        Returns (N, H * s, W * s) logits with s = mask_feat_stride / mask_out_stride.
        """
        n = params.shape[0]
        B, C, H, W = mask_feats.shape
        feats = mask_feats[im_inds]  # (N, C, H, W)
        if self.rel_coords:
            shift_x = torch.arange(W, device=mask_feats.device, dtype=torch.float32) * mask_feat_stride
            shift_y = torch.arange(H, device=mask_feats.device, dtype=torch.float32) * mask_feat_stride
            ys, xs = torch.meshgrid(
                shift_y + mask_feat_stride // 2, shift_x + mask_feat_stride // 2, indexing="ij"
            )
            grid = torch.stack([xs, ys], 0).reshape(1, 2, H, W)  # (1, 2, H, W)
            rel = (locations.float().reshape(n, 2, 1, 1) - grid) / self.sizes_of_interest[levels].reshape(
                n, 1, 1, 1
            )
            feats = torch.cat([rel.to(feats.dtype), feats], dim=1)
        x = feats.reshape(1, -1, H, W)
        weights, biases = self.split_params(params)
        for i, (w, b) in enumerate(zip(weights, biases)):
            x = F.conv2d(x, w, b, groups=n)
            if i < self.num_layers - 1:
                x = F.relu(x)
        logits = x.reshape(n, 1, H, W)
        logits = aligned_bilinear(logits, mask_feat_stride // self.mask_out_stride)
        return logits[:, 0]
