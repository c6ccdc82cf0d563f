"""Feature pyramid P3-P7: laterals and 3x3 outputs on C3-C5 (with bias, no norm), P6 and P7 from P5."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _c2_xavier(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)
    return conv


class FPN(nn.Module):
    """in_channels: channels of C3, C4, C5. Output: [P3, P4, P5, P6, P7], each (B, out_channels, H/s, W/s)."""

    def __init__(self, in_channels: list[int], out_channels: int = 256) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(_c2_xavier(nn.Conv2d(c, out_channels, 1)) for c in in_channels)
        self.output = nn.ModuleList(
            _c2_xavier(nn.Conv2d(out_channels, out_channels, 3, padding=1)) for _ in in_channels
        )
        self.p6 = _c2_xavier(nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1))
        self.p7 = _c2_xavier(nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        merged = self.lateral[-1](feats[-1])
        outs = [self.output[-1](merged)]
        for i in range(len(feats) - 2, -1, -1):
            # nearest x2 of the previous merged (pre-output-conv) map; inputs are padded to /32 so sizes agree
            merged = self.lateral[i](feats[i]) + F.interpolate(merged, scale_factor=2.0, mode="nearest")
            outs.insert(0, self.output[i](merged))
        p6 = self.p6(outs[-1])  # from P5, not C5
        p7 = self.p7(F.relu(p6))
        return [*outs, p6, p7]
