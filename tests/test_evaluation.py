"""Each test encodes one rule of the official YouTube-VIS protocol with a hand-computed expectation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from crossvis.data.masks import encode_mask, encode_uncompressed
from crossvis.data.ytvis import YTVISDataset
from crossvis.errors import CrossVISError
from crossvis.evaluation import evaluate, write_results
from crossvis.evaluation.ytvis_eval import _gt_tracks, load_results, video_ious

H, W = 8, 8


def box(y0, y1, x0, x1, h=H, w=W):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def gt_file(videos, anns, cats=(1,)):
    """videos: [(id, T)] of H x W; anns: [(id, video, cat, [mask or None per frame], crowd, areas or None)]."""
    out = {
        "videos": [
            {"id": v, "file_names": [f"{v}/{t}.jpg" for t in range(T)], "height": H, "width": W}
            for v, T in videos
        ],
        "categories": [{"id": c, "name": f"c{c}"} for c in cats],
        "annotations": [],
    }
    for aid, vid, cat, masks, crowd, areas in anns:
        out["annotations"].append(
            {
                "id": aid,
                "video_id": vid,
                "category_id": cat,
                "iscrowd": int(crowd),
                "segmentations": [encode_uncompressed(m) if m is not None else None for m in masks],
                "areas": areas
                if areas is not None
                else [int(m.sum()) if m is not None else None for m in masks],
                "bboxes": [None] * len(masks),
            }
        )
    return out


def res(vid, cat, score, masks):
    return {
        "video_id": vid,
        "category_id": cat,
        "score": score,
        "segmentations": [encode_mask(m) if m is not None else None for m in masks],
    }


A, B = box(0, 2, 0, 2), box(4, 6, 4, 6)  # 4 pixels each, disjoint


def test_perfect_prediction_scores_one():
    gt = gt_file([(1, 2)], [(1, 1, 1, [A, B], 0, None)])
    s = evaluate(gt, [res(1, 1, 0.9, [A, B])]).stats
    assert (
        s["AP"] == pytest.approx(1.0, abs=1e-12)
        and s["AP50"] == pytest.approx(1.0, abs=1e-12)
        and s["AR1"] == pytest.approx(1.0, abs=1e-12)
        and s["APs"] == pytest.approx(1.0, abs=1e-12)
    )
    assert s["APm"] == -1.0 and s["APl"] == -1.0 and s["ARl"] == -1.0


def test_video_iou_is_sum_of_intersections_over_sum_of_unions():
    # frame 0 exact (I=4, U=4), frame 1 disjoint (I=0, U=8): video IoU 4/12, not the per-frame mean 0.5
    gt = gt_file([(1, 2)], [(1, 1, 1, [A, A], 0, None)])
    ds = YTVISDataset(gt)
    g, d = _gt_tracks(ds)[1], load_results([res(1, 1, 0.9, [A, B])], ds)[1]
    ious, _ = video_ious(d, g, 2)
    assert ious[0, 0] == pytest.approx(4 / 12, abs=1e-15)
    assert evaluate(gt, [res(1, 1, 0.9, [A, B])]).stats["AP50"] == 0.0
    # a frame where only one side is present adds its area to the union: (4) / (4 + 4) = 0.5
    gt2 = gt_file([(1, 2)], [(1, 1, 1, [A, None], 0, None)])
    ds2 = YTVISDataset(gt2)
    ious2, _ = video_ious(load_results([res(1, 1, 0.9, [A, B])], ds2)[1], _gt_tracks(ds2)[1], 2)
    assert ious2[0, 0] == 0.5
    # at IoU exactly 0.5 the threshold 0.5 matches (>=) and 0.55 does not: AP50 1, AP = 1/10
    s = evaluate(gt2, [res(1, 1, 0.9, [A, B])]).stats
    assert s["AP50"] == pytest.approx(1.0, abs=1e-12) and s["AP"] == pytest.approx(0.1, abs=1e-12)


def test_area_ranges_are_inclusive_and_use_the_gt_areas_field():
    # GT declares area 16384 = 128^2: both small and medium; the result (4 px, small) matches it in both
    gt = gt_file([(1, 1)], [(1, 1, 1, [A], 0, [16384])])
    s = evaluate(gt, [res(1, 1, 0.9, [A])]).stats
    assert (
        s["APs"] == pytest.approx(1.0, abs=1e-12)
        and s["APm"] == pytest.approx(1.0, abs=1e-12)
        and s["APl"] == -1.0
    )
    gt = gt_file([(1, 1)], [(1, 1, 1, [A], 0, [16385])])
    s = evaluate(gt, [res(1, 1, 0.9, [A])]).stats
    assert s["APs"] == -1.0 and s["APm"] == pytest.approx(
        1.0, abs=1e-12
    )  # matched to an ignored GT: ignored, no GT in range -> -1
    # null and zero per-frame areas are left out of the mean: (0, None, 100) -> 100
    gt = gt_file([(1, 3)], [(1, 1, 1, [A, None, A], 0, [0, None, 70000])])
    assert evaluate(gt, [res(1, 1, 0.9, [A, None, A])]).stats["APl"] == pytest.approx(1.0, abs=1e-12)


def test_equal_iou_goes_to_the_later_gt_and_gt_id_zero_counts_as_unmatched():
    # two identical GTs; the result matches the *later* one (id 5) -> TP, recall 1/2: AP = 51/101
    gt = gt_file([(1, 1)], [(0, 1, 1, [A], 0, None), (5, 1, 1, [A], 0, None)])
    assert evaluate(gt, [res(1, 1, 0.9, [A])]).stats["AP"] == pytest.approx(51 / 101, abs=1e-12)
    # a lone GT with id 0: the match is recorded as id 0, which the protocol reads as "unmatched"
    gt = gt_file([(1, 1)], [(0, 1, 1, [A], 0, None)])
    s = evaluate(gt, [res(1, 1, 0.9, [A])]).stats
    assert s["AP"] == 0.0 and s["AR100"] == 0.0


def test_crowd_gt_is_ignored_and_absorbs_any_number_of_results():
    gt = gt_file([(1, 1)], [(1, 1, 1, [B], 1, None), (2, 1, 1, [A], 0, None)])
    results = [res(1, 1, 0.95, [B]), res(1, 1, 0.9, [B]), res(1, 1, 0.5, [A])]
    s = evaluate(gt, results).stats
    assert s["AP"] == pytest.approx(
        1.0, abs=1e-12
    )  # both results on the crowd region are ignored, not false positives
    # without the crowd flag they would be FP ahead of the TP: precision 1/3 at full recall
    gt_nc = gt_file([(1, 1)], [(1, 1, 1, [B], 0, None), (2, 1, 1, [A], 0, None)])
    assert evaluate(gt_nc, results).stats["AP"] < 1.0


def test_cross_video_score_ties_follow_ascending_video_id_not_file_order():
    gt = gt_file([(1, 1), (2, 1)], [(1, 1, 1, [A], 0, None), (2, 2, 1, [A], 0, None)])
    # equal scores: video 1's result is a FP, video 2's a TP; the file lists video 2 first
    results = [res(2, 1, 0.5, [A]), res(1, 1, 0.5, [B])]
    # FP first (video 1), then TP: precision 1/2 at recall 1/2 -> 51 recall points x 0.5 / 101
    assert evaluate(gt, results).stats["AP"] == pytest.approx(51 * 0.5 / 101, abs=1e-12)


def test_max_dets_are_per_video_and_category():
    gt = gt_file([(1, 1)], [(1, 1, 1, [A], 0, None), (2, 1, 2, [B], 0, None)], cats=(1, 2))
    s = evaluate(gt, [res(1, 1, 0.9, [A]), res(1, 2, 0.8, [B])]).stats
    assert s["AR1"] == pytest.approx(
        1.0, abs=1e-12
    )  # one detection allowed per (video, category), not per video


def test_only_the_top_100_results_of_a_video_and_category_exist():
    gt = gt_file([(1, 1)], [(1, 1, 1, [A], 0, None)])
    results = [res(1, 1, 0.9, [B]) for _ in range(100)] + [res(1, 1, 0.1, [A])]
    s = evaluate(gt, results).stats
    assert s["AR100"] == 0.0 and s["AP"] == 0.0


def test_categories_without_gt_drop_out_and_their_predictions_change_nothing():
    gt = gt_file([(1, 1)], [(1, 1, 1, [A], 0, None)], cats=(1, 2))
    base = evaluate(gt, [res(1, 1, 0.9, [A])])
    more = evaluate(gt, [res(1, 1, 0.9, [A]), res(1, 2, 0.99, [B])])
    assert base.stats == more.stats and base.stats["AP"] == pytest.approx(1.0, abs=1e-12)
    assert more.per_category == {"c1": pytest.approx(1.0, abs=1e-12), "c2": -1.0}


def test_recall_is_zero_not_undefined_for_a_category_with_gt_but_no_results():
    gt = gt_file([(1, 1)], [(1, 1, 1, [A], 0, None), (2, 1, 2, [B], 0, None)], cats=(1, 2))
    r = evaluate(gt, [res(1, 1, 0.9, [A])])
    assert (
        r.stats["AR100"] == pytest.approx(0.5, abs=1e-12)
        and r.stats["AP"] == pytest.approx(0.5, abs=1e-12)
        and r.per_category["c2"] == 0.0
    )


def test_empty_results_are_valid():
    gt = gt_file([(1, 1)], [(1, 1, 1, [A], 0, None)])
    s = evaluate(gt, []).stats
    assert s["AP"] == 0.0 and s["AR10"] == 0.0 and s["APl"] == -1.0


def test_score_order_within_a_video_decides_precision():
    gt = gt_file([(1, 1)], [(1, 1, 1, [A], 0, None)])
    # the FP has the higher score: precision at recall 1 is 1/2
    assert evaluate(gt, [res(1, 1, 0.4, [A]), res(1, 1, 0.6, [B])]).stats["AP"] == pytest.approx(0.5)
    assert evaluate(gt, [res(1, 1, 0.6, [A]), res(1, 1, 0.4, [B])]).stats["AP"] == pytest.approx(
        1.0, abs=1e-12
    )


@pytest.mark.parametrize(
    "results, message",
    [
        ({"a": 1}, "must be a JSON list"),
        ([res(9, 1, 0.5, [A])], "unknown video_id 9"),
        ([res(1, 7, 0.5, [A])], "unknown category_id 7"),
        ([res(1, 1, float("nan"), [A])], "finite"),
        ([res(1, 1, "high", [A])], "finite"),
        ([res(1, 1, 0.5, [A, A])], "2 segmentations for video 1 of 1 frames"),
        (
            [{**res(1, 1, 0.5, [A]), "segmentations": [encode_mask(box(0, 1, 0, 1, 4, 4))]}],
            "differs from the video size",
        ),
        ([{**res(1, 1, 0.5, [A]), "segmentations": [[[1, 2, 3, 4, 5, 6]]]}], "must be an RLE"),
    ],
)
def test_results_validation(results, message):
    gt = gt_file([(1, 1)], [(1, 1, 1, [A], 0, None)])
    with pytest.raises(CrossVISError, match=message):
        evaluate(gt, results)


def test_identity_switches_and_fragmentations():
    # one GT over 4 frames; result track X covers frames 0-1, track Y frames 3 (gap at 2): 1 switch, 1 frag
    gt = gt_file([(1, 4)], [(1, 1, 1, [A, A, A, A], 0, None)])
    r = evaluate(gt, [res(1, 1, 0.9, [A, A, None, None]), res(1, 1, 0.8, [None, None, None, A])])
    assert r.identity["id_switches"] == 1 and r.identity["fragmentations"] == 1
    r = evaluate(gt, [res(1, 1, 0.9, [A, A, A, A])])
    assert r.identity["id_switches"] == 0 and r.identity["fragmentations"] == 0
    # a duplicate that overlaps better in one frame does not steal a still-valid correspondence
    A2 = box(0, 2, 0, 3)  # IoU with A: 4/6
    r = evaluate(gt, [res(1, 1, 0.9, [A2, A2, A2, A2]), res(1, 1, 0.5, [None, A, None, None])])
    assert r.identity["id_switches"] == 0


def test_cli_evaluate_writes_metrics_and_results_zip(tmp_path):
    gt = gt_file([(1, 2)], [(1, 1, 1, [A, B], 0, None)])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    written = write_results([res(1, 1, 0.9, [A, B])], tmp_path / "results.json", zip_=True)
    import zipfile

    assert zipfile.ZipFile(written[1]).namelist() == ["results.json"]
    r = run_cli("evaluate", tmp_path / "gt.json", tmp_path / "results.json", "--output", tmp_path / "m.json")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["AP"] == pytest.approx(1.0, abs=1e-12) and set(m) >= {
        "AP",
        "AP50",
        "AP75",
        "APs",
        "APm",
        "APl",
        "AR1",
        "AR10",
        "AR100",
        "ARs",
        "ARm",
        "ARl",
        "per_category_AP",
    }
    assert "AP50" in r.stdout
