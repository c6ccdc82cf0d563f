"""FCOS target assignment with mask-centroid centre sampling (the official CondInst/CrossVIS rule)."""

from __future__ import annotations

import torch

INF = 1e8


def compute_locations(h: int, w: int, stride: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(h*w, 2) (x, y) of each feature-map cell in input pixels: (j*s + s//2, i*s + s//2), row-major."""
    xs = torch.arange(w, device=device, dtype=torch.float32) * stride + stride // 2
    ys = torch.arange(h, device=device, dtype=torch.float32) * stride + stride // 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)


def level_locations(
    sizes: list[tuple[int, int]], strides: list[int], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every level's locations, concatenated: sizes (h, w) and strides per level -> locations (L, 2) and the
    level of each (L,)."""
    locs = [compute_locations(h, w, s, device) for (h, w), s in zip(sizes, strides)]
    levels = [torch.full((len(loc),), lvl, dtype=torch.long, device=device) for lvl, loc in enumerate(locs)]
    return torch.cat(locs), torch.cat(levels)


def size_ranges(sizes_of_interest: list[int]) -> list[tuple[float, float]]:
    """[64, 128, 256, 512] -> [(-1, 64), (64, 128), (128, 256), (256, 512), (512, INF)]."""
    bounds = [-1.0, *map(float, sizes_of_interest), INF]
    return list(zip(bounds[:-1], bounds[1:]))


def mask_centroids(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 2) mean (x, y) of mask pixels (0-based indices); the box centre if empty."""
    n = masks.shape[0]
    if n == 0:
        return boxes.new_zeros((0, 2))
    m = masks.float()
    area = m.sum((1, 2))
    ys = torch.arange(m.shape[1], dtype=torch.float32, device=m.device)
    xs = torch.arange(m.shape[2], dtype=torch.float32, device=m.device)
    cx = (m.sum(1) * xs).sum(1) / area.clamp(min=1)
    cy = (m.sum(2) * ys).sum(1) / area.clamp(min=1)
    box_c = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    return torch.where((area > 0)[:, None], torch.stack([cx, cy], 1), box_c)


def assign_targets(
    locations: torch.Tensor,
    level_of: torch.Tensor,
    *,
    strides: list[int],
    ranges: list[tuple[float, float]],
    boxes: torch.Tensor,
    centroids: torch.Tensor,
    center_sample: bool = True,
    radius: float = 1.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign each location of one image to a GT or background.

    locations: (L, 2) (x, y) of all levels, concatenated; level_of: (L,) level index of each;
    boxes: (N, 4) xyxy; centroids: (N, 2).
    Returns gt_ind (L,) index of the assigned GT or -1, and reg (L, 4) l, t, r, b in input pixels.
    """
    L, N = locations.shape[0], boxes.shape[0]
    if N == 0:
        return torch.full((L,), -1, dtype=torch.long, device=locations.device), locations.new_zeros((L, 4))
    x, y = locations[:, 0:1], locations[:, 1:2]
    l, t = x - boxes[None, :, 0], y - boxes[None, :, 1]
    r, b = boxes[None, :, 2] - x, boxes[None, :, 3] - y
    reg = torch.stack([l, t, r, b], 2)  # (L, N, 4)
    if center_sample:
        s = torch.tensor(strides, dtype=torch.float32, device=locations.device)[level_of][:, None] * radius
        cx, cy = centroids[None, :, 0], centroids[None, :, 1]
        x0 = torch.maximum(cx - s, boxes[None, :, 0])
        y0 = torch.maximum(cy - s, boxes[None, :, 1])
        x1 = torch.minimum(cx + s, boxes[None, :, 2])
        y1 = torch.minimum(cy + s, boxes[None, :, 3])
        inside = torch.stack([x - x0, y - y0, x1 - x, y1 - y], 2).min(2).values > 0
    else:
        inside = reg.min(2).values > 0
    rng = torch.tensor(ranges, dtype=torch.float32, device=locations.device)[level_of]  # (L, 2)
    max_reg = reg.max(2).values
    in_range = (max_reg >= rng[:, 0:1]) & (max_reg <= rng[:, 1:2])
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(L, N).clone()
    area[~(inside & in_range)] = INF
    min_area, gt_ind = area.min(1)
    gt_ind[min_area == INF] = -1
    return gt_ind, reg[torch.arange(L, device=locations.device), gt_ind.clamp(min=0)]


def centerness_target(reg: torch.Tensor) -> torch.Tensor:
    """(P, 4) l, t, r, b -> (P,) sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))."""
    lr, tb = reg[:, [0, 2]], reg[:, [1, 3]]
    return torch.sqrt((lr.min(1).values / lr.max(1).values) * (tb.min(1).values / tb.max(1).values))
