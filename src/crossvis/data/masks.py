"""Segmentation formats of YouTube-VIS/OVIS/COCO: RLE (compressed or not), polygons, null.

Thin, validated wrappers over pycocotools' mask functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.errors import CrossVISError, brief
from crossvis.limits import MAX_POLYGON_COORDS, MAX_RLE_COUNT_CHARS

_MAX_RUN = 1 << 32  # pycocotools keeps runs as uint32
_BATCH_CHARS = 1 << 16  # compressed characters decoded at a time (small arrays: no page-fault churn)


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
        if isinstance(counts, list | str | bytes):
            _check_counts_length(counts, height * width, where)
            if full:
                check_rle_counts(counts, height * width, where)
        else:
            raise CrossVISError(where, "malformed RLE: 'counts' must be a list or a string")
        return
    if isinstance(seg, list):
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                raise CrossVISError(
                    where, "malformed polygon: each part needs an even number (>= 6) of coordinates"
                )
            if len(poly) > MAX_POLYGON_COORDS:
                raise CrossVISError(
                    where, f"polygon of {len(poly)} coordinates: more than the limit of {MAX_POLYGON_COORDS}"
                )
            if full and not all(isinstance(v, int | float) and not isinstance(v, bool) for v in poly):
                raise CrossVISError(where, "malformed polygon: coordinates must be numbers")
        return
    raise CrossVISError(where, f"segmentation must be RLE, polygon list or null, got {brief(seg)}")


def _check_polygons(seg: list, height: int, width: int, where: str) -> None:
    """Polygon parts must be numbers inside the frame (with one frame's margin on every side): pycocotools
    rasterises edges step by step and overflows on far-away points."""
    for poly in seg:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2 or len(poly) > MAX_POLYGON_COORDS:
            raise CrossVISError(
                where, "malformed polygon: each part needs an even number (>= 6) of coordinates"
            )
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in poly):
            raise CrossVISError(where, "malformed polygon: coordinates must be numbers")
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if not (np.abs(xy - [width / 2, height / 2]) <= [1.5 * width, 1.5 * height]).all():
            raise CrossVISError(where, f"polygon point outside the {height}x{width} frame (and its margin)")


def to_rle(seg, height: int, width: int, where: str = "segmentation") -> dict | None:
    """Any supported segmentation -> compressed RLE dict (bytes counts), or None when absent."""
    if is_absent(seg):
        return None
    try:
        if isinstance(seg, list):
            _check_polygons(seg, height, width, where)
            return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        counts = seg.get("counts")
        if not isinstance(counts, list | str | bytes):
            raise CrossVISError(where, "malformed RLE: 'counts' must be a list or a string")
        check_rle_counts(counts, height * width, where)
        if isinstance(counts, list):
            return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        return {"size": [height, width], "counts": counts}
    except CrossVISError:
        raise
    except Exception as e:  # pycocotools raises TypeError/ValueError on garbage
        raise CrossVISError(where, f"malformed segmentation ({brief(str(e))})") from None


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


# ------------------------------------------------------------------------------------------------ RLE counts
# pycocotools trusts RLE counts: runs that add up to more pixels than the mask holds make it write past its
# buffer or loop for minutes. Every count is therefore checked here first (vectorised, so a results file of a
# million RLEs is checked in about a second): a compressed string must decode (characters '0'..'o', each run
# at most MAX_RLE_COUNT_CHARS characters, ending complete), every run must be in [0, 2**32), and the runs
# must add up to height * width exactly.


def _check_counts_length(counts, pixels: int, where: str) -> None:
    """Cheap bound: a mask of ``pixels`` pixels has at most pixels + 1 runs."""
    limit = pixels + 1 if isinstance(counts, list) else MAX_RLE_COUNT_CHARS * (pixels + 1)
    if len(counts) > limit:
        raise CrossVISError(where, f"malformed RLE: {len(counts)} counts for a mask of {pixels} pixels")


def check_rle_counts(counts, pixels: int, where: str) -> None:
    """One RLE's ``counts`` (compressed str/bytes or uncompressed list) for a mask of ``pixels`` pixels."""
    bad = rle_counts_problem([counts], [pixels])
    if bad is not None:
        raise CrossVISError(where, bad[1])


def rle_counts_problem(counts: Sequence, pixels: Sequence[int]) -> tuple[int, str] | None:
    """Check many RLE ``counts`` at once -> (index of the first malformed one, what is wrong) or None.

    ``counts[i]`` is a compressed string (str/bytes) or an uncompressed list of runs of a mask of
    ``pixels[i]`` pixels.
    """
    found: list[tuple[int, str]] = []
    strings = [i for i, c in enumerate(counts) if isinstance(c, str | bytes)]
    lists = [i for i, c in enumerate(counts) if isinstance(c, list)]
    other = next((i for i, c in enumerate(counts) if not isinstance(c, str | bytes | list)), None)
    if other is not None:
        found.append((other, "malformed RLE: 'counts' must be a list or a string"))
    for batch in _batches(strings, counts):
        bad = _compressed_problem([counts[i] for i in batch], [pixels[i] for i in batch])
        if bad is not None:
            found.append((batch[bad[0]], bad[1]))
            break
    if lists:
        bad = _uncompressed_problem([counts[i] for i in lists], [pixels[i] for i in lists])
        if bad is not None:
            found.append((lists[bad[0]], bad[1]))
    return min(found) if found else None


def _batches(indices: list[int], counts: Sequence) -> list[list[int]]:
    out: list[list[int]] = [[]]
    size = 0
    for i in indices:
        if size > _BATCH_CHARS:
            out.append([])
            size = 0
        out[-1].append(i)
        size += len(counts[i])
    return [b for b in out if b]


def _first(flags: np.ndarray) -> int | None:
    idx = np.flatnonzero(flags)
    return int(idx[0]) if idx.size else None


def _compressed_problem(strings: list, pixels: list[int]) -> tuple[int, str] | None:
    """pycocotools' compressed RLE (rleFrString) decoded with numpy for a batch of strings.

    Per character only uint8/bool work is done; the runs (fewer) are assembled from their 1..6 characters.
    """
    raw = []
    for i, s in enumerate(strings):
        try:
            raw.append(s.encode("ascii") if isinstance(s, str) else bytes(s))
        except UnicodeEncodeError:
            return i, "malformed compressed RLE: characters outside '0'..'o'"
    lengths = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    empty = _first(lengths == 0)
    if empty is not None:
        return empty, "malformed compressed RLE: empty 'counts'"
    problems: list[tuple[int, str]] = []
    buf = np.frombuffer(b"".join(raw), dtype=np.uint8)
    ends = np.cumsum(lengths) - 1  # each string's last character
    bad = _first((buf < 48) | (buf > 111))
    if bad is not None:
        problems.append(
            (int(np.searchsorted(ends, bad)), "malformed compressed RLE: characters outside '0'..'o'")
        )
    v = buf - np.uint8(48)  # wraps for the characters flagged above
    last = (v & 0x20) == 0  # a run's last character
    bad = _first(~last[ends])
    if bad is not None:
        problems.append((bad, "malformed compressed RLE: the string ends inside a run"))
    last[ends] = True  # close every string's last run (flagged above) so runs never span two strings
    run_end = np.flatnonzero(last)
    run_start = np.concatenate([[0], run_end[:-1] + 1])
    run_len = run_end - run_start + 1
    string_of = np.searchsorted(ends, run_end)
    bad = _first(run_len > MAX_RLE_COUNT_CHARS)
    if bad is not None:
        problems.append(
            (
                int(string_of[bad]),
                f"malformed compressed RLE: a run of more than {MAX_RLE_COUNT_CHARS} characters",
            )
        )
    run_len = np.minimum(run_len, MAX_RLE_COUNT_CHARS)
    x = (v[run_start] & 0x1F).astype(np.int64)
    for j in range(1, MAX_RLE_COUNT_CHARS):  # 5 more bits from each further character
        sel = np.flatnonzero(run_len > j)
        if not sel.size:
            break
        x[sel] += (v[run_start[sel] + j] & 0x1F).astype(np.int64) << (5 * j)
    neg = np.flatnonzero(v[run_end] & 0x10)
    x[neg] -= np.int64(1) << (5 * run_len[neg])
    # runs 3, 4, ... are stored as differences to the run two places before (rleFrString): a run is the
    # running sum of the differences of its parity within its string
    first_run = np.searchsorted(string_of, np.arange(len(raw)))
    m = np.arange(x.size) - first_run[string_of]
    odd = (m & 1).astype(bool)
    later_even = ~odd & (m >= 2)
    runs = np.where(
        odd,
        _cumsum_per_string(np.where(odd, x, 0), first_run),
        np.where(later_even, _cumsum_per_string(np.where(later_even, x, 0), first_run), x),
    )
    bad = _first((runs < 0) | (runs >= _MAX_RUN))
    if bad is not None:
        problems.append((int(string_of[bad]), "malformed compressed RLE: a run outside [0, 2**32)"))
    totals = np.add.reduceat(runs, first_run)
    bad = _first(totals != np.asarray(pixels, dtype=np.int64))
    if bad is not None:
        problems.append(
            (bad, f"malformed compressed RLE: runs add up to {int(totals[bad])} pixels, not {pixels[bad]}")
        )
    return min(problems) if problems else None


def _cumsum_per_string(a: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``a`` restarting at each index of ``first`` (sorted, first[0] == 0)."""
    a = a.copy()
    sums = np.add.reduceat(a, first)
    a[first[1:]] -= sums[:-1]  # by induction the running sum is 0 just before each restart
    return np.cumsum(a)


def _uncompressed_problem(lists: list[list], pixels: list[int]) -> tuple[int, str] | None:
    """Uncompressed RLE counts: non-negative integers below 2**32 that add up to the mask's pixels."""
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    try:
        flat = np.array(list(chain.from_iterable(lists)))
    except (ValueError, TypeError, OverflowError):
        flat = None
    if flat is None or flat.ndim != 1 or (flat.size and flat.dtype.kind not in "iu"):
        for i, c in enumerate(lists):  # slow path, only to name the culprit
            if not all(isinstance(n, int) and not isinstance(n, bool) for n in c):
                return i, "malformed uncompressed RLE: counts must be integers"
        return 0, "malformed uncompressed RLE: counts must be integers"
    flat = flat.astype(np.int64, copy=False)
    problems: list[tuple[int, str]] = []
    owner = np.repeat(np.arange(len(lists)), lengths)
    bad = _first((flat < 0) | (flat >= _MAX_RUN))
    if bad is not None:
        problems.append((int(owner[bad]), "malformed uncompressed RLE: a count outside [0, 2**32)"))
    totals = np.bincount(owner, weights=np.clip(flat, 0, _MAX_RUN), minlength=len(lists))
    bad = _first(np.abs(totals - np.asarray(pixels, dtype=np.float64)) > 0.5)
    if bad is not None:
        problems.append((bad, f"malformed uncompressed RLE: counts must sum to {pixels[bad]}"))
    return min(problems) if problems else None
