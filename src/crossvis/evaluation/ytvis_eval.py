"""The official YouTube-VIS video AP (youtubevos/cocoapi ``ytvoseval``), reproduced exactly and fast.

Protocol (see ``docs/evaluation.md``): video IoU = sum over frames of intersections / sum of unions;
per-track size = mean of the non-null, non-zero per-frame areas (GT: the ``areas`` field as given); area ranges
inclusive at both ends; maxDets 1/10/100 per (video, category); IoU thresholds 0.50:0.05:0.95; 101 recall
points; stable score sorts (cross-video ties in ascending video id); greedy matching where a non-ignored GT
beats an ignored one and equal IoU goes to the later GT; crowd GT ignored and never used up.

Speed: IoUs come from one pycocotools ``iou`` call per frame for all (result, GT) pairs of a video, turned
into exact integer intersections, and summed; unions are then ``area(d) + area(g) - inter`` summed over frames.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.data.masks import is_absent, rle_counts_problem, to_rle
from crossvis.data.ytvis import YTVISDataset, read_json
from crossvis.errors import CrossVISError, brief
from crossvis.limits import MAX_IOU_CELLS, MAX_RESULTS

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
AREA_RANGES = {
    "all": (0.0, 1e10),
    "small": (0.0, 128.0**2),
    "medium": (128.0**2, 256.0**2),
    "large": (256.0**2, 1e10),
}
STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


@dataclass
class _Track:
    """One GT or result track of a video, as the evaluator needs it."""

    id: int  # GT annotation id, or 1-based position in the results file
    category_id: int
    score: float
    iscrowd: bool
    area: float  # per-track size (official definition)
    frame_areas: np.ndarray  # (T,) int64 pixel count per frame, 0 where absent
    present: np.ndarray  # (T,) bool
    rles: list  # per frame compressed RLE or None


@dataclass
class EvalResult:
    stats: dict[str, float]
    per_category: dict[str, float]  # category name -> AP (-1 without GT)
    identity: dict[str, Any] = field(default_factory=dict)
    precision: np.ndarray | None = None  # (T, R, K, A, M)
    recall: np.ndarray | None = None  # (T, K, A, M)

    def to_dict(self) -> dict:
        return {**self.stats, "per_category_AP": self.per_category, "identity": self.identity}


# ------------------------------------------------------------------------------------------------ loading


def _load_gt(annotations: str | os.PathLike | dict | YTVISDataset) -> YTVISDataset:
    if isinstance(annotations, YTVISDataset):
        return annotations
    ds = YTVISDataset(annotations)
    if not ds.has_annotations:
        raise CrossVISError(ds.source, "has no 'annotations': it cannot be used as ground truth")
    return ds


def _rles_of(segs: list, h: int, w: int, where: str) -> list:
    """Per-frame segmentations -> RLEs pycocotools takes (None where absent).

    Compressed RLEs (str counts) are used as they are; uncompressed ones are compressed in one batch;
    polygons are rasterised at the video size.
    """
    rles: list = [None] * len(segs)
    batch = []
    for f, s in enumerate(segs):
        if is_absent(s):
            continue
        counts = s.get("counts") if isinstance(s, dict) else None
        if isinstance(counts, str):
            rles[f] = s
        elif isinstance(counts, list):
            batch.append(f)
        else:
            rles[f] = to_rle(s, h, w, f"{where}: frame {f}")
    if batch:
        objs = [segs[f] for f in batch]
        total = np.array([sum(o["counts"]) for o in objs])
        if (total != h * w).any():
            f = batch[int(np.flatnonzero(total != h * w)[0])]
            raise CrossVISError(
                f"{where}: frame {f}", f"malformed uncompressed RLE: counts must sum to {h * w}"
            )
        for f, r in zip(batch, mask_utils.frPyObjects(objs, h, w)):
            rles[f] = r
    return rles


def _make_track(
    tid: int, cid: int, score: float, crowd: bool, rles: list, length: int, areas: list | None
) -> _Track:
    present = np.fromiter((r is not None for r in rles), dtype=bool, count=length)
    frame_areas = np.zeros(length, dtype=np.int64)
    idx = np.flatnonzero(present)
    if idx.size:
        frame_areas[idx] = mask_utils.area([rles[i] for i in idx])
    if areas is None:  # results: the pixel counts; keep truthy (non-null, non-zero) entries
        kept = frame_areas[frame_areas > 0].tolist()
    else:  # GT: the `areas` field as given
        kept = [x for x in areas if x]
    area = float(np.mean(np.asarray(kept, dtype=np.float64))) if kept else 0.0
    return _Track(
        id=tid,
        category_id=cid,
        score=score,
        iscrowd=crowd,
        area=area,
        frame_areas=frame_areas,
        present=present,
        rles=rles,
    )


def _gt_tracks(ds: YTVISDataset) -> dict[int, list[_Track]]:
    _check_counts(
        [
            (s["counts"], v.height * v.width, (a["id"], f))
            for v in ds.videos
            for a in v.annotations
            for f, s in enumerate(a["segmentations"])
            if isinstance(s, dict) and s
        ],
        name=lambda at: f"{ds.source}: annotation id {at[0]}: frame {at[1]}",
    )
    out: dict[int, list[_Track]] = {}
    for v in ds.videos:
        tracks = []
        for a in v.annotations:
            where = f"{ds.source}: annotation id {a['id']}"
            rles = _rles_of(a["segmentations"], v.height, v.width, where)
            areas = a.get("areas")
            if areas is None:  # not in the official format, but common in users' files: size from the masks
                areas = (
                    [int(x) for x in mask_utils.area([r for r in rles if r is not None])]
                    if any(r is not None for r in rles)
                    else []
                )
            elif not isinstance(areas, list) or not all(
                x is None or isinstance(x, int | float) for x in areas
            ):
                raise CrossVISError(where, "'areas' must be a list of numbers or null")
            tracks.append(
                _make_track(a["id"], a["category_id"], 0.0, bool(a.get("iscrowd", 0)), rles, v.length, areas)
            )
        out[v.id] = tracks
    return out


def _check_counts(items: list[tuple[object, int, Any]], name=str) -> None:
    """All RLE counts of a file at once (vectorised): (counts, pixels, where) -> the first malformed one is a
    CrossVISError naming ``name(where)``. Runs that do not add up to the frame are refused before pycocotools
    sees them."""
    bad = rle_counts_problem([c for c, _, _ in items], [p for _, p, _ in items])
    if bad is not None:
        raise CrossVISError(name(items[bad[0]][2]), bad[1])


def _check_result(r: Any, w: str, ds: YTVISDataset, cats: set[int], rles: list) -> None:
    """One results entry's structure; its RLE counts are appended to ``rles`` for one batched check."""
    if not isinstance(r, dict):
        raise CrossVISError(w, "must be an object")
    vid = r.get("video_id")
    video = ds.video_by_id.get(vid) if isinstance(vid, int) and not isinstance(vid, bool) else None
    if video is None:
        raise CrossVISError(w, f"unknown video_id {brief(vid)}")
    cid = r.get("category_id")
    if isinstance(cid, bool) or not isinstance(cid, int) or cid not in cats:
        raise CrossVISError(w, f"unknown category_id {brief(cid)}")
    score = r.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise CrossVISError(w, f"score must be a finite number, got {brief(score)}")
    segs = r.get("segmentations")
    if not isinstance(segs, list):
        raise CrossVISError(w, "'segmentations' must be a list (one RLE or null per frame)")
    if len(segs) != video.length:
        raise CrossVISError(w, f"{len(segs)} segmentations for video {vid} of {video.length} frames")
    size = [video.height, video.width]
    for f, s in enumerate(segs):
        if is_absent(s):
            continue
        if not isinstance(s, dict) or "counts" not in s:
            raise CrossVISError(f"{w}: frame {f}", "segmentation must be an RLE {size, counts} or null")
        if s.get("size") != size:
            raise CrossVISError(
                f"{w}: frame {f}", f"RLE size {brief(s.get('size'))} differs from the video size {size}"
            )
        rles.append((s["counts"], video.height * video.width, f"{w}: frame {f}"))


def load_results(results: str | os.PathLike | list, ds: YTVISDataset) -> dict[int, list[_Track]]:
    """Validate a results list against the GT videos/categories -> result tracks per video.

    Everything is checked before any mask work: structure, ids, sizes, and every RLE's counts (they must
    decode and add up to the frame's pixels), so a malformed file is refused whole, never half-evaluated.
    """
    from_file = isinstance(results, str | os.PathLike)
    where = str(results) if from_file else "<results>"
    data = read_json(results) if from_file else results
    if not isinstance(data, list):
        raise CrossVISError(
            where, "results must be a JSON list of {video_id, category_id, score, segmentations}"
        )
    if len(data) > MAX_RESULTS:
        raise CrossVISError(where, f"{len(data)} results: more than the limit of {MAX_RESULTS}")
    cats = set(ds.category_ids)
    rles: list[tuple[object, int, str]] = []
    for i, r in enumerate(data):
        _check_result(r, f"{where}: result {i}", ds, cats, rles)
    _check_counts(rles)
    out: dict[int, list[_Track]] = defaultdict(list)
    for i, r in enumerate(data):
        w = f"{where}: result {i}"
        video = ds.video_by_id[r["video_id"]]
        rles_i = _rles_of(r["segmentations"], video.height, video.width, w)
        try:
            track = _make_track(i + 1, r["category_id"], float(r["score"]), False, rles_i, video.length, None)
        except CrossVISError:
            raise
        except Exception as e:
            raise CrossVISError(w, f"malformed RLE ({brief(str(e))})") from None
        out[video.id].append(track)
    _check_iou_size(ds, out)
    return out


def _check_iou_size(ds: YTVISDataset, dts: dict[int, list[_Track]]) -> None:
    """The per-frame IoUs of a video (frames x results x GT tracks) must fit ``MAX_IOU_CELLS``."""
    for video in ds.videos:
        cells = video.length * len(dts.get(video.id, ())) * len(video.annotations)
        if cells > MAX_IOU_CELLS:
            raise CrossVISError(
                f"video {video.id}",
                f"{len(dts[video.id])} results x {len(video.annotations)} GT tracks x {video.length} frames: "
                f"more per-frame IoUs than the limit of {MAX_IOU_CELLS}",
            )


# ------------------------------------------------------------------------------------------------ IoU


def video_ious(dts: list[_Track], gts: list[_Track], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Video IoU matrix (D, G) and the per-frame mask IoUs (T, D, G) (0 where either side is absent)."""
    D, G = len(dts), len(gts)
    frame_iou = np.zeros((length, D, G))
    if D == 0 or G == 0:
        return np.zeros((D, G)), frame_iou
    ad = np.stack([d.frame_areas for d in dts]).T.astype(np.float64)  # (T, D)
    ag = np.stack([g.frame_areas for g in gts]).T.astype(np.float64)  # (T, G)
    # per frame, which tracks are present (plain lists: this loop runs once per frame and video)
    d_at = [np.flatnonzero(c).tolist() for c in np.stack([d.present for d in dts]).T]
    g_at = [np.flatnonzero(c).tolist() for c in np.stack([g.present for g in gts]).T]
    for t in range(length):
        di, gi = d_at[t], g_at[t]
        if di and gi:
            iou = mask_utils.iou([dts[k].rles[t] for k in di], [gts[k].rles[t] for k in gi], [0] * len(gi))
            frame_iou[t][np.ix_(di, gi)] = np.asarray(iou, dtype=np.float64).reshape(len(di), len(gi))
    # iou = i / (a_d + a_g - i)  =>  i = iou (a_d + a_g) / (1 + iou), an integer: recover it exactly
    inter = np.rint(frame_iou * (ad[:, :, None] + ag[:, None, :]) / (1.0 + frame_iou)).sum(0)
    union = ad.sum(0)[:, None] + ag.sum(0)[None, :] - inter
    ious = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return ious, frame_iou


# ------------------------------------------------------------------------------------------------ matching


def _match(
    ious: np.ndarray, gt_ids: list[int], gt_ignore: np.ndarray, crowd: list[bool], n_dt: int
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching at every IoU threshold -> dt_match (T, D) GT ids (0 = none), dt_ignore (T, D)."""
    T, G = len(IOU_THRESHOLDS), len(gt_ids)
    dtm = np.zeros((T, n_dt), dtype=np.int64)
    dtig = np.zeros((T, n_dt), dtype=bool)
    if G == 0 or n_dt == 0:
        return dtm, dtig
    rows = ious.tolist()
    ign = gt_ignore.tolist()
    for ti, thr in enumerate(IOU_THRESHOLDS.tolist()):
        taken = [False] * G
        for d in range(n_dt):
            best = min(thr, 1 - 1e-10)
            m = -1
            row = rows[d]
            for g in range(G):
                if taken[g] and not crowd[g]:
                    continue
                if m > -1 and not ign[m] and ign[g]:
                    break
                if row[g] < best:
                    continue
                best = row[g]
                m = g
            if m == -1:
                continue
            dtig[ti, d] = ign[m]
            dtm[ti, d] = gt_ids[m]
            taken[m] = True
    return dtm, dtig


# ------------------------------------------------------------------------------------------------ main


def evaluate(
    annotations: str | os.PathLike | dict | YTVISDataset,
    results: str | os.PathLike | list,
    with_identity: bool = True,
) -> EvalResult:
    """Official YouTube-VIS AP/AR of ``results`` against ``annotations`` (paths or loaded objects).

    Returns an :class:`EvalResult` whose ``stats`` hold the 12 standard numbers in [0, 1] (-1 where undefined),
    ``per_category`` the AP of each category, and ``identity`` the identity-switch diagnostics.
    To evaluate many results files against one ground truth (e.g. during training), prepare it once with
    :class:`Evaluator`.
    """
    return Evaluator(annotations).evaluate(results, with_identity)


class Evaluator:
    """Ground truth loaded, validated and converted to RLE once; ``evaluate(results)`` as often as needed."""

    def __init__(self, annotations: str | os.PathLike | dict | YTVISDataset) -> None:
        self.dataset = _load_gt(annotations)
        self.gt_tracks = _gt_tracks(self.dataset)

    def evaluate(self, results: str | os.PathLike | list, with_identity: bool = True) -> EvalResult:
        return _evaluate(self.dataset, self.gt_tracks, load_results(results, self.dataset), with_identity)


def _evaluate(
    ds: YTVISDataset, gts: dict[int, list[_Track]], dts: dict[int, list[_Track]], with_identity: bool
) -> EvalResult:
    cat_ids = ds.category_ids
    K, A, M = len(cat_ids), len(AREA_RANGES), len(MAX_DETS)
    T, R = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    ranges = list(AREA_RANGES.values())
    # per (category, area) -> list over videos (ascending id) of (scores, dtm, dtig, dt_area_out, n_gt_non_ignored)
    per_ka: dict[tuple[int, int], list] = defaultdict(list)
    identity_frames: dict[int, tuple[list[_Track], list[_Track], np.ndarray]] = {}

    for video in ds.videos:
        vg, vd = gts.get(video.id, []), dts.get(video.id, [])
        if not vg and not vd:
            continue
        ious_all, per_frame = video_ious(vd, vg, video.length)
        if with_identity:
            identity_frames[video.id] = (vd, vg, per_frame)
        for k, cid in enumerate(cat_ids):
            gi = [j for j, g in enumerate(vg) if g.category_id == cid]
            di = [j for j, d in enumerate(vd) if d.category_id == cid]
            if not gi and not di:
                continue
            # results by descending score, stable; only the top 100 exist for every stat
            order = sorted(di, key=lambda j: -vd[j].score)[: MAX_DETS[-1]]
            scores = np.array([vd[j].score for j in order], dtype=np.float64)
            d_area = np.array([vd[j].area for j in order], dtype=np.float64)
            sub = ious_all[np.ix_(order, gi)] if order and gi else np.zeros((len(order), len(gi)))
            for a, (lo, hi) in enumerate(ranges):
                g_ign = np.array(
                    [vg[j].iscrowd or vg[j].area < lo or vg[j].area > hi for j in gi], dtype=bool
                )
                perm = np.argsort(g_ign, kind="mergesort")  # non-ignored first, stable
                gids = [vg[gi[j]].id for j in perm]
                crowd = [vg[gi[j]].iscrowd for j in perm]
                dtm, dtig = _match(sub[:, perm], gids, g_ign[perm], crowd, len(order))
                out_range = (d_area < lo) | (d_area > hi)
                dtig = dtig | ((dtm == 0) & out_range[None, :])
                per_ka[k, a].append((scores, dtm, dtig, int((~g_ign).sum())))

    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    for (k, a), entries in per_ka.items():
        for m, max_det in enumerate(MAX_DETS):
            scores = np.concatenate([e[0][:max_det] for e in entries])
            npig = sum(e[3] for e in entries)
            if npig == 0:
                continue
            inds = np.argsort(-scores, kind="mergesort")
            dtm = np.concatenate([e[1][:, :max_det] for e in entries], axis=1)[:, inds]
            dtig = np.concatenate([e[2][:, :max_det] for e in entries], axis=1)[:, inds]
            tps = (dtm != 0) & ~dtig
            fps = (dtm == 0) & ~dtig
            tp_sum = np.cumsum(tps, axis=1).astype(np.float64)
            fp_sum = np.cumsum(fps, axis=1).astype(np.float64)
            nd = tp_sum.shape[1]
            for t in range(T):
                tp, fp = tp_sum[t], fp_sum[t]
                rc = tp / npig
                pr = tp / (fp + tp + np.spacing(1))
                recall[t, k, a, m] = rc[-1] if nd else 0
                q = np.zeros(R)
                if nd:
                    pr = np.maximum.accumulate(pr[::-1])[::-1]
                    idx = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
                    ok = idx < nd
                    q[ok] = pr[idx[ok]]
                precision[t, :, k, a, m] = q

    stats = _summarize(precision, recall)
    names = {c["id"]: c["name"] for c in ds.categories}
    per_cat = {}
    for k, cid in enumerate(cat_ids):
        s = precision[:, :, k, 0, M - 1]
        per_cat[names[cid]] = float(np.mean(s[s > -1])) if (s > -1).any() else -1.0
    identity = identity_diagnostics(identity_frames) if with_identity else {}
    return EvalResult(
        stats=stats, per_category=per_cat, identity=identity, precision=precision, recall=recall
    )


def _summarize(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    def mean(x: np.ndarray) -> float:
        return float(np.mean(x[x > -1])) if (x > -1).any() else -1.0

    t50, t75 = 0, 5
    m100 = len(MAX_DETS) - 1
    return {
        "AP": mean(precision[:, :, :, 0, m100]),
        "AP50": mean(precision[t50, :, :, 0, m100]),
        "AP75": mean(precision[t75, :, :, 0, m100]),
        "APs": mean(precision[:, :, :, 1, m100]),
        "APm": mean(precision[:, :, :, 2, m100]),
        "APl": mean(precision[:, :, :, 3, m100]),
        "AR1": mean(recall[:, :, 0, 0]),
        "AR10": mean(recall[:, :, 0, 1]),
        "AR100": mean(recall[:, :, 0, m100]),
        "ARs": mean(recall[:, :, 1, m100]),
        "ARm": mean(recall[:, :, 2, m100]),
        "ARl": mean(recall[:, :, 3, m100]),
    }


# ------------------------------------------------------------------------------------------------ identity


def identity_diagnostics(
    frames: dict[int, tuple[list[_Track], list[_Track], np.ndarray]], iou_threshold: float = 0.5
) -> dict[str, Any]:
    """Identity switches and fragmentations per video (CLEAR-MOT style, on masks, class-agnostic).

    In every frame, GT objects and result tracks present there are matched one-to-one with mask IoU >=
    ``iou_threshold``: first each GT keeps the result track it was last matched to while that pair still has
    IoU >= the threshold (the CLEAR-MOT rule, so overlapping duplicates do not flip the match), then the
    remaining pairs are matched greedily by descending IoU. For each GT track:
    an *identity switch* is a frame where it is matched to a different result track than at its previous
    matched frame; a *fragmentation* is a frame where it is matched again after one or more frames in which
    it was present but unmatched. Results are not penalised for frames where the GT is absent.
    """
    per_video = {}
    tot_sw = tot_fr = tot_gt = 0
    for vid, (_, gts, per_frame) in frames.items():
        last: dict[int, int] = {}
        gap: dict[int, bool] = {}
        switches = frags = 0
        # per GT track: [switches, fragmentations, frames present, frames matched, result tracks matched]
        per_gt = [[0, 0, int(g.present.sum()), 0, set()] for g in gts]
        for t, iou in enumerate(per_frame):
            if iou.size == 0:
                continue
            used_d, used_g = set(), set()
            for g, d in last.items():  # previous correspondences that are still valid
                if iou[d, g] >= iou_threshold and d not in used_d:
                    used_d.add(d)
                    used_g.add(g)
                    per_gt[g][3] += 1
                    if gap.get(g):
                        frags += 1
                        per_gt[g][1] += 1
                    gap[g] = False
            pairs = np.argwhere(iou >= iou_threshold)
            order = np.argsort(-iou[pairs[:, 0], pairs[:, 1]], kind="mergesort")
            for d, g in pairs[order].tolist():
                if d in used_d or g in used_g:
                    continue
                used_d.add(d)
                used_g.add(g)
                per_gt[g][3] += 1
                per_gt[g][4].add(d)
                if g in last and last[g] != d:
                    switches += 1
                    per_gt[g][0] += 1
                if gap.get(g):
                    frags += 1
                    per_gt[g][1] += 1
                last[g] = d
                gap[g] = False
            for g, gt in enumerate(gts):
                if gt.present[t] and g not in used_g and g in last:
                    gap[g] = True
        per_video[vid] = {
            "id_switches": switches,
            "fragmentations": frags,
            "gt_tracks": len(gts),
            "per_track": {
                gt.id: {
                    "id_switches": sw,
                    "fragmentations": fr,
                    "frames": n,
                    "matched_frames": nm,
                    "result_tracks": len(ds_),
                }
                for gt, (sw, fr, n, nm, ds_) in zip(gts, per_gt)
            },
        }
        tot_sw += switches
        tot_fr += frags
        tot_gt += len(gts)
    return {"id_switches": tot_sw, "fragmentations": tot_fr, "gt_tracks": tot_gt, "per_video": per_video}
