"""Temporal feature calibration (TFC), from the OVIS paper's CMaskTrack R-CNN (Qi et al., "Occluded Video
Instance Segmentation", 2021), used for the CrossVIS OVIS results.

A frame's features are calibrated with a reference frame's (online: the previous frame; the first frame with
itself), at every pyramid level with one shared module:

1. local correlation: for each location of the current map ``x`` (B, C, H, W), the dot product with the
   reference map ``r`` at 16 x 16 displacements (dy, dx) in {-15, -13, ..., 13, 15} (stride 2), divided by
   C, then leaky ReLU (slope 0.1) -> (B, 256, H, W); outside the map the reference is zero;
2. three 3x3 convs (with bias, ReLU) -> C channels, then a 3x3 conv -> 18 offsets (a 3x3 kernel's (dy, dx));
3. a 3x3 deformable convolution (no bias) of the *reference* map with these offsets
   (``torchvision.ops.deform_conv2d``, CPU and GPU), which aligns the reference to the current frame;
4. output = current + aligned reference.

Parameters for C = 256 (the official setting): offset convs 3 x (256*256*9 + 256) = 1,770,240; offset
prediction 256*18*9 + 18 = 41,490; deformable conv 256*256*9 = 589,824; **total 2,401,554**.
With C channels in general: 256*C*9 + C + 2*(C*C*9 + C) + C*18*9 + 18 + C*C*9.

Matches the official ``TrackHead.feature_mixup`` (correlation: ``SpatialCorrelationSampler(kernel_size=1,
patch_size=16, dilation_patch=2)`` whose forward kernel uses displacements ``2*i - 15``; ``ConvModule`` convs with
kaiming init; ``DeformConv(256, 256, 3, padding=1)`` without bias, uniform init). In CMaskTrack R-CNN the
RoI heads read the calibrated maps while the RPN and track head read the raw ones; crossvis feeds the
calibrated maps to every head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d


def local_correlation(x: torch.Tensor, ref: torch.Tensor, *, patch: int = 16, step: int = 2) -> torch.Tensor:
    """(B, C, H, W) x2 -> (B, patch*patch, H, W): leaky_relu(<x[p], ref[p + d]> / C, 0.1) for the displacements
    d = (step*i - radius, step*j - radius), radius = step*(patch - 1)//2, in row-major (dy, dx) order."""
    b, c, h, w = x.shape
    radius = step * (patch - 1) // 2
    padded = F.pad(ref, (radius, radius, radius, radius))
    out = []
    for i in range(patch):
        dy = step * i
        for j in range(patch):
            dx = step * j
            out.append((x * padded[:, :, dy : dy + h, dx : dx + w]).sum(1))
    return F.leaky_relu(torch.stack(out, 1) / c, 0.1)


class TemporalFeatureCalibration(nn.Module):
    """TFC over a feature pyramid. Args: channels (C, the FPN width), patch (16) and step (2) of the
    correlation, num_convs (3) of the offset branch.

    forward(current, reference) with lists of per-level (B, C, H_l, W_l) maps -> the calibrated maps (same
    shapes); ``reference=None`` calibrates each frame with itself (the first frame of a stream).
    """

    def __init__(self, channels: int = 256, *, patch: int = 16, step: int = 2, num_convs: int = 3) -> None:
        super().__init__()
        self.patch, self.step = patch, step
        convs: list[nn.Module] = []
        for i in range(num_convs):
            conv = nn.Conv2d(patch * patch if i == 0 else channels, channels, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            convs += [conv, nn.ReLU()]
        self.offset_convs = nn.Sequential(*convs)
        self.conv_offset = nn.Conv2d(channels, 2 * 3 * 3, 3, padding=1)
        self.weight = nn.Parameter(torch.empty(channels, channels, 3, 3))
        bound = 1.0 / math.sqrt(channels * 9)
        nn.init.uniform_(self.weight, -bound, bound)

    def calibrate(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """One level: (B, C, H, W) current and reference -> (B, C, H, W) calibrated current."""
        corr = local_correlation(x, ref, patch=self.patch, step=self.step)
        offsets = self.conv_offset(self.offset_convs(corr))  # (B, 18, H, W)
        return x + deform_conv2d(ref, offsets, self.weight, padding=(1, 1))

    def forward(
        self, current: list[torch.Tensor], reference: list[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        reference = current if reference is None else reference
        return [self.calibrate(x, r) for x, r in zip(current, reference)]


def tfc_parameter_count(channels: int = 256, patch: int = 16, num_convs: int = 3) -> int:
    """Learnable parameters of :class:`TemporalFeatureCalibration` (2,401,554 for the official 256 / 16 / 3)."""
    first = patch * patch * channels * 9 + channels
    rest = (num_convs - 1) * (channels * channels * 9 + channels)
    return first + rest + channels * 18 * 9 + 18 + channels * channels * 9
