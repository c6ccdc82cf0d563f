"""Mask pasting: stride-4 mask probabilities of the padded input -> boolean masks at the output size.

:func:`paste_masks_full` is the reference (every instance upsampled over the whole padded image).
:func:`paste_masks` gives the same masks but upsamples each instance only inside its own region: the
low-resolution pixels whose probability can reach the threshold, grown by the one-pixel footprint of
bilinear interpolation. Bilinear interpolation is a convex combination of the neighbouring samples, so no
output pixel outside that region can exceed the threshold; inside it the same ``F.interpolate`` calls run on
a crop whose sample positions coincide with the full image's (the aligned upsampling factor is a power of two,
so its sample positions ``j / factor`` are exact). When the output size differs from the resized input size
(frames resized for the network), the second, ordinary bilinear resize is computed by explicit weights on the
crop: equal to the reference to float tolerance (about 1e-6 in probability).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crossvis.modeling.mask_branch import aligned_bilinear

_MARGIN = 1e-4  # a low-res sample this close below the threshold still counts (float rounding of the blend)


def paste_masks_full(
    probs: torch.Tensor,
    *,
    factor: int,
    size: tuple[int, int],
    out_size: tuple[int, int],
    threshold: float = 0.5,
) -> torch.Tensor:
    """The reference: probs (N, h, w) at 1/``factor`` of the padded input -> (N, *out_size) bool.

    The padded map is cropped to ``size`` (the resized image) and resized bilinearly to ``out_size``.
    """
    p = aligned_bilinear(probs[:, None], factor)[:, :, : size[0], : size[1]]
    if tuple(out_size) != tuple(size):
        p = F.interpolate(p, size=tuple(out_size), mode="bilinear", align_corners=False)
    return p[:, 0] > threshold


def _span(lo: int, hi: int, n: int, factor: int) -> tuple[int, int, int]:
    """Low-res support rows [lo, hi] of an axis with n samples -> crop [a, b) (b < n: sample b is read too)
    and the upsampled index of the crop's first output row."""
    a, b = max(0, lo - 1), min(n, hi + 2)
    return a, b, 0 if a == 0 else factor * a + factor // 2


def _upsample_crop(p: torch.Tensor, ys: tuple[int, int], xs: tuple[int, int], factor: int) -> torch.Tensor:
    """(h, w) probs, crop rows ys=[a, b), cols xs -> aligned upsampling of the crop (rows from the crop's
    origin), using the real next sample where the full map has one and replicate padding at its edge."""
    h, w = p.shape
    (a, b), (c, d) = ys, xs
    crop = p[a : min(b + 1, h), c : min(d + 1, w)][None, None]
    crop = F.pad(crop, (0, int(d == w), 0, int(b == h)), mode="replicate")
    t = F.interpolate(
        crop, size=(factor * (b - a) + 1, factor * (d - c) + 1), mode="bilinear", align_corners=True
    )
    t = F.pad(t, (factor // 2 if c == 0 else 0, 0, factor // 2 if a == 0 else 0, 0), mode="replicate")
    return t[0, 0]


def _resize_index(n_in: int, n_out: int, lo: int, hi: int, device) -> tuple:
    """Bilinear (align_corners=False, as ``F.interpolate``) sources of the outputs whose two sources both lie
    in input samples [lo, hi): (first output, i0 - lo, i1 - lo, weight of i1)."""
    d = torch.arange(n_out, device=device, dtype=torch.float32)
    src = ((d + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = i0 + (i0 < n_in - 1).long()
    inside = torch.nonzero((i0 >= lo) & (i1 < hi)).flatten()
    if inside.numel() == 0:
        return 0, i0[:0], i1[:0], src[:0]
    d0, d1 = int(inside[0]), int(inside[-1]) + 1
    return d0, i0[d0:d1] - lo, i1[d0:d1] - lo, (src - i0)[d0:d1]


def paste_masks(
    probs: torch.Tensor,
    *,
    factor: int,
    size: tuple[int, int],
    out_size: tuple[int, int],
    threshold: float = 0.5,
) -> torch.Tensor:
    """:func:`paste_masks_full`'s masks, computed only inside each instance's region.

    probs: (N, h, w) mask probabilities at 1/``factor`` of the padded input; size: the resized image (H, W)
    inside the padding; out_size: the output (H, W). Returns (N, *out_size) bool.
    """
    n, h, w = probs.shape
    out = torch.zeros((n, *out_size), dtype=torch.bool, device=probs.device)
    resize = tuple(out_size) != tuple(size)
    live = probs > threshold - _MARGIN
    rows_any, cols_any = live.any(2), live.any(1)
    for i in torch.nonzero(rows_any.any(1)).flatten().tolist():
        r = torch.nonzero(rows_any[i]).flatten()
        c = torch.nonzero(cols_any[i]).flatten()
        a, b, oy = _span(int(r[0]), int(r[-1]), h, factor)
        cc, dd, ox = _span(int(c[0]), int(c[-1]), w, factor)
        t = _upsample_crop(probs[i], (a, b), (cc, dd), factor)
        # rows/cols of the crop inside the resized image
        t = t[: max(0, size[0] - oy), : max(0, size[1] - ox)]
        if t.numel() == 0:
            continue
        if not resize:
            out[i, oy : oy + t.shape[0], ox : ox + t.shape[1]] = t > threshold
            continue
        # an output with a source outside the crop has its other source on the crop's border, outside every
        # instance-dependent sample, so it stays below the threshold (and False)
        y0, yi0, yi1, wy = _resize_index(size[0], out_size[0], oy, oy + t.shape[0], probs.device)
        x0, xi0, xi1, wx = _resize_index(size[1], out_size[1], ox, ox + t.shape[1], probs.device)
        rows = t[yi0] * (1 - wy)[:, None] + t[yi1] * wy[:, None]
        v = rows[:, xi0] * (1 - wx) + rows[:, xi1] * wx
        out[i, y0 : y0 + v.shape[0], x0 : x0 + v.shape[1]] = v > threshold
    return out
