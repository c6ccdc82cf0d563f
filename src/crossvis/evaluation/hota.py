"""Tracking metrics beside AP: HOTA, DetA, AssA, LocA (HOTA), IDF1 (Identity), MOTA and ID switches (CLEAR),
computed by the ``trackeval`` package's own metric classes.

What is ours is only the data preparation, and it follows TrackEval's YouTube-VIS dataset
(``trackeval.datasets.YouTubeVIS``) rule for rule: every category is evaluated on its own; per frame, the
similarity of GT and result masks is pycocotools' mask IoU (``iou(gt, results)``, GT rows in annotation order,
result columns in file order); ids are relabelled to 0..n-1 in ascending order; classes are combined
class-averaged (empty classes count, as TrackEval's evaluator does) and detection-averaged. Two additions,
both documented in ``docs/interop.md``:

- ``score_threshold``: results scored below it are dropped first (TrackEval's YouTube-VIS class keeps all; the
  default 0 does the same).
- crowd GT (``iscrowd: 1``) is not ground truth here but an ignore region, with TrackEval's MOTS rule: per
  frame and category, results are matched one-to-one to the non-crowd GT (Hungarian, IoU >= 0.5), and an
  unmatched result lying more than 50 % inside the category's crowd regions is removed. (TrackEval's
  YouTube-VIS class would count crowd GT as ordinary GT.)
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.errors import CrossVISError

HEADLINE = ["HOTA", "DetA", "AssA", "LocA", "IDF1", "MOTA", "IDSW"]
_EPS = np.finfo("float").eps


def _trackeval():
    try:
        import trackeval
    except ImportError:
        raise CrossVISError(
            "--metrics hota", "needs the trackeval package: pip install 'crossvis[interop]' (or trackeval)"
        ) from None
    return trackeval


def _metrics():
    te = _trackeval()
    quiet = {"PRINT_CONFIG": False}
    return [te.metrics.HOTA(quiet), te.metrics.CLEAR(quiet), te.metrics.Identity(quiet)]


def _ious(a: list, b: list, ioa: bool = False) -> np.ndarray:
    """(len(a), len(b)) mask IoU (or IoA of ``a`` in ``b``), the call TrackEval makes."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    return np.asarray(mask_utils.iou(a, b, [ioa] * len(b)), dtype=float).reshape(len(a), len(b))


def _crowd_filter(sim: np.ndarray, dt_rles: list, crowd_rles: list) -> np.ndarray:
    """Indices (into the frame's results) to drop: unmatched and > 50 % inside the crowd regions (MOTS rule)."""
    unmatched = np.arange(len(dt_rles))
    if sim.shape[0] and sim.shape[1]:
        from scipy.optimize import linear_sum_assignment

        score = sim.copy()
        score[score < 0.5 - _EPS] = -10000
        rows, cols = linear_sum_assignment(-score)
        cols = cols[score[rows, cols] > 0 + _EPS]
        unmatched = np.delete(unmatched, cols, axis=0)
    if not len(unmatched):
        return unmatched
    region = mask_utils.merge(crowd_rles, intersect=False)
    inside = _ious([dt_rles[i] for i in unmatched], [region], ioa=True)
    return unmatched[np.any(inside > 0.5 + _EPS, axis=1)]


def _relabel(ids_per_t: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    uniq = np.unique(np.concatenate(ids_per_t)) if any(len(x) for x in ids_per_t) else np.array([], int)
    lut = {int(u): k for k, u in enumerate(uniq.tolist())}
    return [np.array([lut[int(i)] for i in x], dtype=int) for x in ids_per_t], len(uniq)


def sequence_data(gts: list, dts: list, crowd: list, length: int) -> dict:
    """TrackEval's per-(video, category) input dict from our tracks (``crossvis.evaluation.ytvis_eval._Track``)."""
    data: dict[str, Any] = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    n_gt = n_dt = 0
    for t in range(length):
        g_at = [k for k, g in enumerate(gts) if g.rles[t] is not None]
        d_at = [k for k, d in enumerate(dts) if d.rles[t] is not None]
        g_rles, d_rles = [gts[k].rles[t] for k in g_at], [dts[k].rles[t] for k in d_at]
        sim = _ious(g_rles, d_rles)
        c_rles = [c.rles[t] for c in crowd if c.rles[t] is not None]
        if c_rles and d_at:
            drop = _crowd_filter(sim, d_rles, c_rles)
            d_at = [k for i, k in enumerate(d_at) if i not in set(drop.tolist())]
            sim = np.delete(sim, drop, axis=1)
        data["gt_ids"].append(np.array([gts[k].id for k in g_at], dtype=int))
        data["tracker_ids"].append(np.array([dts[k].id for k in d_at], dtype=int))
        data["similarity_scores"].append(sim)
        n_gt, n_dt = n_gt + len(g_at), n_dt + len(d_at)
    data["gt_ids"], data["num_gt_ids"] = _relabel(data["gt_ids"])
    data["tracker_ids"], data["num_tracker_ids"] = _relabel(data["tracker_ids"])
    data.update(num_gt_dets=n_gt, num_tracker_dets=n_dt, num_timesteps=length)
    return data


def _summary(metrics: list, res: dict) -> dict[str, float]:
    """TrackEval's summary numbers (array fields averaged over the alpha thresholds, as it prints them)."""
    out: dict[str, float] = {}
    for m in metrics:
        r = res[m.get_name()]
        for k in m.summary_fields:
            v = r[k]
            out[k] = float(np.mean(v)) if isinstance(v, np.ndarray) else float(v)
    return out


def hota_metrics(evaluator, results: str | os.PathLike | list, *, score_threshold: float = 0.0) -> dict:
    """HOTA/CLEAR/Identity metrics of ``results`` against an :class:`~crossvis.evaluation.Evaluator`'s GT.

    Returns {"class_averaged": {...}, "detection_averaged": {...}, "per_category": {name: {...}},
    "per_video": {video_id: {...} detection-averaged over categories}, "score_threshold": t}; every entry holds
    TrackEval's summary fields (HOTA, DetA, AssA, LocA, ..., MOTA, IDSW, ..., IDF1, ...) with ratios in [0, 1].
    """
    from crossvis.evaluation.ytvis_eval import load_results

    dts_all = load_results(results, evaluator.dataset)
    return hota_from_tracks(evaluator, dts_all, score_threshold=score_threshold)


def hota_from_tracks(evaluator, dts_all: dict, *, score_threshold: float = 0.0) -> dict:
    """:func:`hota_metrics` on already loaded result tracks (``load_results`` output)."""
    ds, metrics = evaluator.dataset, _metrics()
    names = {c["id"]: c["name"] for c in ds.categories}
    per_seq: dict[int, dict[int, dict]] = {}  # video -> category -> {metric name: res}
    with contextlib.redirect_stdout(io.StringIO()):  # trackeval prints progress/warnings of its own
        for video in ds.videos:
            gts = evaluator.gt_tracks.get(video.id, [])
            dts = [d for d in dts_all.get(video.id, []) if d.score >= score_threshold]
            for cid in ds.category_ids:
                g = [x for x in gts if x.category_id == cid and not x.iscrowd]
                c = [x for x in gts if x.category_id == cid and x.iscrowd]
                d = [x for x in dts if x.category_id == cid]
                data = sequence_data(g, d, c, video.length)
                per_seq.setdefault(video.id, {})[cid] = {m.get_name(): m.eval_sequence(data) for m in metrics}
        per_cls = {
            cid: {
                m.get_name(): m.combine_sequences({v: per_seq[v][cid][m.get_name()] for v in per_seq})
                for m in metrics
            }
            for cid in ds.category_ids
        }
        cls_av = {
            m.get_name(): m.combine_classes_class_averaged({c: per_cls[c][m.get_name()] for c in per_cls})
            for m in metrics
        }
        det_av = {
            m.get_name(): m.combine_classes_det_averaged({c: per_cls[c][m.get_name()] for c in per_cls})
            for m in metrics
        }
        per_video = {
            vid: _summary(
                metrics,
                {
                    m.get_name(): m.combine_classes_det_averaged({c: r[c][m.get_name()] for c in r})
                    for m in metrics
                },
            )
            for vid, r in per_seq.items()
        }
    return {
        "class_averaged": _summary(metrics, cls_av),
        "detection_averaged": _summary(metrics, det_av),
        "per_category": {names[c]: _summary(metrics, per_cls[c]) for c in per_cls},
        "per_video": per_video,
        "score_threshold": score_threshold,
    }


def format_hota(h: dict) -> str:
    """The headline numbers (HOTA, DetA, AssA, LocA, IDF1, MOTA in %, IDSW) as a small table."""
    lines = ["tracking (TrackEval)  " + "  ".join(f"{k:>6s}" for k in HEADLINE)]
    for label, key in (("class-averaged", "class_averaged"), ("detection-averaged", "detection_averaged")):
        r = h[key]
        cells = [f"{r[k]:6.0f}" if k == "IDSW" else f"{100 * r[k]:6.2f}" for k in HEADLINE]
        lines.append(f"{label:21s} " + "  ".join(cells))
    if h.get("score_threshold"):
        lines.append(f"(results scored below {h['score_threshold']} left out)")
    return "\n".join(lines)
