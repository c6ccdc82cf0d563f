"""Segmentation formats of YouTube-VIS/OVIS/COCO: RLE (compressed or not), polygons, null.

Thin, validated wrappers over pycocotools' mask functions.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.errors import CrossVISError


def is_absent(seg) -> bool:
    """Whether a per-frame segmentation says "not in this frame": null, or an empty list or mapping."""
    return seg is None or (isinstance(seg, list | dict) and len(seg) == 0)


def check_segmentation(seg, height: int, width: int, where: str, full: bool = False) -> None:
    """Structural check of one per-frame segmentation (cheap). ``full`` also checks RLE counts."""
    if is_absent(seg):
        return
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list | tuple) and len(size) == 2):
            raise CrossVISError(where, "RLE without a [height, width] 'size'")
        if list(size) != [height, width]:
            raise CrossVISError(
                where, f"RLE size {list(size)} differs from the video size [{height}, {width}]"
            )
        if isinstance(counts, list):
            if full and (
                not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width
            ):
                raise CrossVISError(where, f"malformed uncompressed RLE: counts must sum to {height * width}")
        elif isinstance(counts, str | bytes):
            if full:
                decode_segmentation(seg, height, width, where)
        else:
            raise CrossVISError(where, "malformed RLE: 'counts' must be a list or a string")
        return
    if isinstance(seg, list):
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                raise CrossVISError(
                    where, "malformed polygon: each part needs an even number (>= 6) of coordinates"
                )
            if full and not all(isinstance(v, int | float) for v in poly):
                raise CrossVISError(where, "malformed polygon: coordinates must be numbers")
        return
    raise CrossVISError(where, f"segmentation must be RLE, polygon list or null, got {type(seg).__name__}")


def to_rle(seg, height: int, width: int, where: str = "segmentation") -> dict | None:
    """Any supported segmentation -> compressed RLE dict (bytes counts), or None when absent."""
    if is_absent(seg):
        return None
    try:
        if isinstance(seg, list):
            return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        counts = seg["counts"]
        if isinstance(counts, list):
            if sum(counts) != height * width:
                raise CrossVISError(where, f"malformed uncompressed RLE: counts must sum to {height * width}")
            return mask_utils.frPyObjects(seg, height, width)
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        return {"size": [height, width], "counts": counts}
    except CrossVISError:
        raise
    except Exception as e:  # pycocotools raises TypeError/ValueError on garbage
        raise CrossVISError(where, f"malformed segmentation ({e})") from None


def decode_segmentation(seg, height: int, width: int, where: str = "segmentation") -> np.ndarray | None:
    """-> (H, W) bool array, or None when the object is absent in that frame."""
    rle = to_rle(seg, height, width, where)
    if rle is None:
        return None
    try:
        m = mask_utils.decode(rle)
    except Exception as e:
        raise CrossVISError(where, f"malformed RLE ({e})") from None
    if m.shape != (height, width):
        raise CrossVISError(where, f"RLE decodes to {m.shape}, expected ({height}, {width})")
    if isinstance(seg, dict) and isinstance(seg.get("counts"), str | bytes):
        # A corrupt compressed string can decode to the right shape; re-encoding must give it back.
        again = mask_utils.encode(np.asfortranarray(m))["counts"]
        given = seg["counts"].encode("ascii") if isinstance(seg["counts"], str) else seg["counts"]
        if again != given:
            raise CrossVISError(where, "malformed compressed RLE (does not decode to a consistent mask)")
    return m.astype(bool)


def encode_mask(mask: np.ndarray) -> dict:
    """(H, W) bool/uint8 -> compressed RLE with a str 'counts' (the submission format)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def encode_uncompressed(mask: np.ndarray) -> dict:
    """(H, W) bool -> uncompressed RLE (column-major run lengths starting with zeros), as YouTube-VIS JSON."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def mask_to_box(mask: np.ndarray) -> list[float] | None:
    """(H, W) bool -> [x, y, w, h] of the tight pixel box (COCO convention), None if empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return [float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1), float(ys[-1] - ys[0] + 1)]
