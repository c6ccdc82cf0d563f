"""HOTA/CLEAR/Identity through our wrapper equal a direct TrackEval run on the same files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from crossvis.data.masks import encode_uncompressed
from crossvis.data.synthetic import SynthParams, generate
from crossvis.evaluation import Evaluator
from crossvis.evaluation.hota import hota_metrics

trackeval = pytest.importorskip("trackeval")


def _rle(m: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": r["size"], "counts": r["counts"].decode("ascii")}


def _perturbed_results(gt: dict, rng: np.random.Generator) -> list[dict]:
    """Tracker output made from the GT: shifted masks, dropped frames, split/merged identities, wrong classes,
    random false positives, random scores."""
    videos = {v["id"]: v for v in gt["videos"]}
    ncat = len(gt["categories"])
    out = []
    for a in gt["annotations"]:
        v = videos[a["video_id"]]
        h, w, T = v["height"], v["width"], len(v["file_names"])
        segs = []
        for s in a["segmentations"]:
            if s is None or rng.uniform() < 0.15:
                segs.append(None)
                continue
            m = mask_utils.decode(mask_utils.frPyObjects(s, h, w) if isinstance(s["counts"], list) else s)
            m = np.roll(m, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
            segs.append(_rle(m) if m.any() else None)
        cat = a["category_id"] if rng.uniform() < 0.85 else int(rng.integers(1, ncat + 1))
        if T > 2 and rng.uniform() < 0.4:  # identity split at a random frame
            cut = int(rng.integers(1, T))
            out.append(
                {
                    "video_id": v["id"],
                    "category_id": cat,
                    "score": float(rng.uniform()),
                    "segmentations": segs[:cut] + [None] * (T - cut),
                }
            )
            segs = [None] * cut + segs[cut:]
        out.append(
            {"video_id": v["id"], "category_id": cat, "score": float(rng.uniform()), "segmentations": segs}
        )
    for v in gt["videos"]:  # false positives: random boxes
        h, w, T = v["height"], v["width"], len(v["file_names"])
        for _ in range(int(rng.integers(0, 3))):
            segs = []
            for _t in range(T):
                m = np.zeros((h, w), np.uint8)
                y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
                m[y : y + 8, x : x + 8] = 1
                segs.append(_rle(m) if rng.uniform() < 0.7 else None)
            out.append(
                {
                    "video_id": v["id"],
                    "category_id": int(rng.integers(1, ncat + 1)),
                    "score": float(rng.uniform()),
                    "segmentations": segs,
                }
            )
    return out


def _uncompressed(gt: dict) -> dict:
    """TrackEval's YouTube-VIS reader takes GT with uncompressed RLE only (it calls frPyObjects on them)."""
    gt = copy.deepcopy(gt)
    for a in gt["annotations"]:
        a["segmentations"] = [
            None
            if s is None
            else encode_uncompressed(mask_utils.decode(s))
            if isinstance(s["counts"], str)
            else s
            for s in a["segmentations"]
        ]
    return gt


def _direct_trackeval(tmp: Path, gt: dict, results: list) -> dict:
    """TrackEval's own Evaluator + YouTubeVIS dataset on files in its expected layout."""
    gt = _uncompressed(gt)
    (tmp / "gt" / "youtube_vis_valid").mkdir(parents=True)
    (tmp / "tr" / "youtube_vis_valid" / "ours" / "data").mkdir(parents=True)
    (tmp / "gt" / "youtube_vis_valid" / "gt.json").write_text(json.dumps(gt))
    (tmp / "tr" / "youtube_vis_valid" / "ours" / "data" / "results.json").write_text(json.dumps(results))
    ev = trackeval.Evaluator(
        {
            "USE_PARALLEL": False,
            "PRINT_RESULTS": False,
            "PRINT_CONFIG": False,
            "OUTPUT_SUMMARY": False,
            "OUTPUT_DETAILED": False,
            "PLOT_CURVES": False,
            "TIME_PROGRESS": False,
            "BREAK_ON_ERROR": True,
        }
    )
    dataset = trackeval.datasets.YouTubeVIS(
        {
            "GT_FOLDER": f"{tmp}/gt/",
            "TRACKERS_FOLDER": f"{tmp}/tr/",
            "OUTPUT_FOLDER": f"{tmp}/out/",
            "SPLIT_TO_EVAL": "valid",
            "PRINT_CONFIG": False,
        }
    )
    metrics = [
        trackeval.metrics.HOTA({"PRINT_CONFIG": False}),
        trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
        trackeval.metrics.Identity({"PRINT_CONFIG": False}),
    ]
    res, _ = ev.evaluate([dataset], metrics)
    return res["YouTubeVIS"]["ours"], metrics


def _summary(metrics, r: dict) -> dict:
    out = {}
    for m in metrics:
        for k in m.summary_fields:
            v = r[m.get_name()][k]
            out[k] = float(np.mean(v))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_hota_equals_direct_trackeval(tmp_path, seed):
    generate(
        tmp_path / "s",
        SynthParams(
            videos=3, frames=5, seed=seed, height=48, width=64, num_classes=3, compressed_rle=seed % 2 == 1
        ),
    )
    gt = json.loads((tmp_path / "s" / "annotations.json").read_text())
    results = _perturbed_results(gt, np.random.default_rng(seed))
    ours = hota_metrics(Evaluator(copy.deepcopy(gt)), copy.deepcopy(results))
    direct, metrics = _direct_trackeval(tmp_path / "te", copy.deepcopy(gt), copy.deepcopy(results))
    comb = direct["COMBINED_SEQ"]
    assert ours["class_averaged"].keys() == _summary(metrics, comb["cls_comb_cls_av"]).keys()
    for key, theirs in (
        ("class_averaged", comb["cls_comb_cls_av"]),
        ("detection_averaged", comb["cls_comb_det_av"]),
    ):
        t = _summary(metrics, theirs)
        for k, v in t.items():
            assert ours[key][k] == pytest.approx(v, rel=1e-12, abs=1e-12), (key, k)
    names = [c["name"] for c in gt["categories"]]
    for name in names:
        t = _summary(metrics, comb[name])
        for k, v in t.items():
            assert ours["per_category"][name][k] == pytest.approx(v, rel=1e-12, abs=1e-12), (name, k)
    # per video: TrackEval's per-sequence, per-class results combined over classes the same way
    for v in gt["videos"]:
        seq = direct[v["file_names"][0].split("/")[0]]
        combined = {
            m.get_name(): m.combine_classes_det_averaged({c: seq[c][m.get_name()] for c in names})
            for m in metrics
        }
        t = _summary(metrics, combined)
        for k, val in t.items():
            assert ours["per_video"][v["id"]][k] == pytest.approx(val, rel=1e-12, abs=1e-12), (v["id"], k)
    # the case is not degenerate: some association errors and some misses
    assert 0 < ours["detection_averaged"]["HOTA"] < 1


def _mots_line(frame: int, oid: int, cls: int, m: np.ndarray) -> str:
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return f"{frame} {oid} {cls} {m.shape[0]} {m.shape[1]} {r['counts'].decode('ascii')}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crowd_regions_follow_trackeval_mots_ignore_rule(tmp_path, seed):
    """Crowd GT as ignore regions: equal to TrackEval's MOTSChallenge (class 10 ignore regions) on one class."""
    generate(tmp_path / "s", SynthParams(videos=2, frames=5, seed=seed, height=48, width=64, num_classes=1))
    gt = json.loads((tmp_path / "s" / "annotations.json").read_text())
    gt["categories"] = [{"id": 2, "name": "pedestrian"}]
    rng = np.random.default_rng(seed)
    results, seq_info = [], {}
    (tmp_path / "gt").mkdir()
    (tmp_path / "tr" / "ours" / "data").mkdir(parents=True)
    for v in gt["videos"]:
        h, w, T = v["height"], v["width"], len(v["file_names"])
        seq = v["file_names"][0].split("/")[0]
        seq_info[seq] = T
        anns = [a for a in gt["annotations"] if a["video_id"] == v["id"]]
        for k, a in enumerate(anns):
            a["category_id"] = 2
            a["iscrowd"] = int(k == 0)  # the first object of every video is a crowd region
        gt_lines, tr_lines, tr_maps = [], [], np.zeros((T, h, w), np.int32)
        for t in range(T):
            for k, a in enumerate(anns):
                s = a["segmentations"][t]
                if s is None:
                    continue
                m = mask_utils.decode(mask_utils.frPyObjects(s, h, w))
                gt_lines.append(
                    _mots_line(t + 1, 10000 if a["iscrowd"] else 2000 + k, 10 if a["iscrowd"] else 2, m)
                )
                if rng.uniform() < 0.8:  # tracker: shifted copies (also of the crowd object), later wins
                    shifted = np.roll(m, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
                    tr_maps[t][shifted.astype(bool)] = k + 1
        for k in range(len(anns)):
            segs = []
            for t in range(T):
                m = tr_maps[t] == k + 1
                segs.append(_rle(m) if m.any() else None)
                if m.any():
                    tr_lines.append(_mots_line(t + 1, 5000 + k, 2, m))
            if any(segs):
                results.append({"video_id": v["id"], "category_id": 2, "score": 1.0, "segmentations": segs})
        (tmp_path / "gt" / f"{seq}.txt").write_text("\n".join(gt_lines) + "\n")
        (tmp_path / "tr" / "ours" / "data" / f"{seq}.txt").write_text(
            "\n".join(sorted(tr_lines, key=lambda s: int(s.split()[0]))) + "\n"
        )
    ours = hota_metrics(Evaluator(copy.deepcopy(gt)), results)["per_category"]["pedestrian"]
    ev = trackeval.Evaluator(
        {
            "USE_PARALLEL": False,
            "PRINT_RESULTS": False,
            "PRINT_CONFIG": False,
            "OUTPUT_SUMMARY": False,
            "OUTPUT_DETAILED": False,
            "PLOT_CURVES": False,
            "TIME_PROGRESS": False,
            "BREAK_ON_ERROR": True,
        }
    )
    dataset = trackeval.datasets.MOTSChallenge(
        {
            "GT_FOLDER": str(tmp_path / "gt"),
            "TRACKERS_FOLDER": str(tmp_path / "tr"),
            "OUTPUT_FOLDER": str(tmp_path / "out"),
            "SEQ_INFO": seq_info,
            "SKIP_SPLIT_FOL": True,
            "GT_LOC_FORMAT": "{gt_folder}/{seq}.txt",
            "PRINT_CONFIG": False,
        }
    )
    metrics = [
        trackeval.metrics.HOTA({"PRINT_CONFIG": False}),
        trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
        trackeval.metrics.Identity({"PRINT_CONFIG": False}),
    ]
    res, _ = ev.evaluate([dataset], metrics)
    theirs = _summary(metrics, res["MOTSChallenge"]["ours"]["COMBINED_SEQ"]["pedestrian"])
    for k, v in theirs.items():
        assert ours[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k
    # the rule matters here: counting the crowd object as GT (TrackEval's YouTube-VIS class) changes the score
    for a in gt["annotations"]:
        a["iscrowd"] = 0
    plain = hota_metrics(Evaluator(gt), results)["per_category"]["pedestrian"]
    assert plain["HOTA"] != pytest.approx(ours["HOTA"])
