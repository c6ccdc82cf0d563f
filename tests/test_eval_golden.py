"""``crossvis.evaluation.evaluate`` against the OFFICIAL YouTube-VIS evaluation on 50 random cases.

``fixtures/ytvis_eval_golden.json`` holds each case's inputs (ground truth and results) and the 12 stats that
youtubevos/cocoapi's ``ytvoseval`` computed for them (run once, outside this repository; its code is not
kept here). The cases mix crowd GT, GT ``areas`` exactly on the small/medium/large boundaries (128^2, 256^2)
and one pixel either side, results of the wrong class, absent frames, several videos and score ties, so every
rule of the protocol (area ranges, crowd, tie order, maxDets, matching) is exercised. Equality is exact.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from crossvis.evaluation import STAT_NAMES, evaluate

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "ytvis_eval_golden.json").read_text())


def test_fixture_is_the_standard_stat_order():
    assert GOLDEN["stat_order"] == list(STAT_NAMES)
    assert len(GOLDEN["cases"]) >= 50


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: f"seed{c['seed']}")
def test_official_stats(case):
    result = evaluate(copy.deepcopy(case["gt"]), copy.deepcopy(case["results"]), with_identity=False)
    got = [result.stats[k] for k in GOLDEN["stat_order"]]
    assert got == case["official_stats"]


def _gt(areas: list[int], iscrowd: int = 0) -> dict:
    return {
        "videos": [{"id": 1, "height": 300, "width": 300, "length": 1, "file_names": ["0.jpg"]}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {
                "id": 1,
                "video_id": 1,
                "category_id": 1,
                "iscrowd": iscrowd,
                "segmentations": [{"size": [300, 300], "counts": [0, 100 * 300, 300 * 300 - 100 * 300]}],
                "areas": areas,
            }
        ],
    }


def _box_result(x1: int, score: float) -> dict:
    """A result covering columns [0, x1) of a 300 x 300 frame (area 300 * x1), as uncompressed RLE."""
    return {
        "video_id": 1,
        "category_id": 1,
        "score": score,
        "segmentations": [{"size": [300, 300], "counts": [0, 300 * x1, 300 * (300 - x1)]}],
    }


def test_an_unmatched_result_outside_an_area_range_is_not_a_false_positive_there():
    """GT of area 30000 (medium): a perfect result scores 1 everywhere it is defined. An extra, unmatched,
    large result (area 90000) with a higher score is a false positive for "all" but is ignored for "medium"
    (outside that range), so APm stays 1 while AP drops."""
    perfect = _box_result(100, 0.5)
    r = evaluate(_gt([30000]), [perfect, {**_box_result(300, 0.9)}], with_identity=False)
    assert r.stats["APm"] == pytest.approx(1.0) and r.stats["AP"] < 1.0
    assert r.stats["APs"] == -1.0 and r.stats["APl"] == -1.0  # no GT in those ranges


def test_a_gt_outside_an_area_range_is_ignored_there_and_its_match_too():
    """GT whose `areas` say 70000 (large) though its mask has 30000 pixels: sized by the field, so it is
    only in "large"; the matching result is ignored in "medium" and "small" (no GT there: -1)."""
    r = evaluate(_gt([70000]), [_box_result(100, 0.5)], with_identity=False)
    assert r.stats["APl"] == pytest.approx(1.0) and r.stats["APm"] == -1.0 and r.stats["APs"] == -1.0


# ------------------------------------------------------------------ cases the mutation run found untested
def test_ap_and_per_category_ap_count_up_to_100_results_not_10():
    """Ten wrong results outscore the right one, the 11th: AR10 is 0, but AP and the per-category AP (both
    at maxDets 100) see precision 1/11 at full recall, at every IoU threshold."""
    from test_evaluation import A, B, gt_file, res

    gt = gt_file([(1, 1)], [(1, 1, 1, [A], 0, None)])
    r = evaluate(gt, [res(1, 1, 0.9, [B]) for _ in range(10)] + [res(1, 1, 0.5, [A])], with_identity=False)
    assert r.stats["AR10"] == 0.0 and r.stats["AR100"] == 1.0
    assert r.stats["AP"] == pytest.approx(1 / 11, abs=1e-12)
    assert r.per_category == {"c1": pytest.approx(1 / 11, abs=1e-12)}


def test_a_malformed_uncompressed_rle_is_reported_at_its_frame():
    from crossvis.data.masks import encode_uncompressed
    from crossvis.errors import CrossVISError
    from test_evaluation import A, gt_file, res

    gt = gt_file([(1, 3)], [(1, 1, 1, [A, A, A], 0, None)])
    good = encode_uncompressed(A)
    bad = {**good, "counts": [*good["counts"][:-1], good["counts"][-1] + 1]}
    result = {**res(1, 1, 0.5, [A, A, A]), "segmentations": [good, bad, good]}
    with pytest.raises(CrossVISError, match="frame 1"):
        evaluate(gt, [result])


def test_fragmentation_with_a_single_result_track_and_a_single_gt():
    """One GT over 3 frames, one result track that misses frame 1: a fragmentation (each frame's IoU
    matrix is 1 x 1)."""
    from test_evaluation import A, gt_file, res

    gt = gt_file([(1, 3)], [(1, 1, 1, [A, A, A], 0, None)])
    r = evaluate(gt, [res(1, 1, 0.9, [A, None, A])])
    assert r.identity["fragmentations"] == 1 and r.identity["id_switches"] == 0


@pytest.mark.parametrize("vid", [True, [1], "1", 1.0])
def test_a_result_video_id_must_be_an_integer_id(vid):
    """``True == 1`` in Python and a list is unhashable: neither may reach the video lookup."""
    from crossvis.errors import CrossVISError
    from test_evaluation import A, gt_file, res

    gt = gt_file([(1, 1)], [(1, 1, 1, [A], 0, None)])
    with pytest.raises(CrossVISError, match="unknown video_id"):
        evaluate(gt, [{**res(1, 1, 0.5, [A]), "video_id": vid}])


def test_identity_matches_need_mask_iou_of_one_half_inclusive():
    """GT over 2 frames; track X is the GT mask in frame 0, track Y a mask of IoU exactly 0.5 in frame 1: Y
    is matched there (IoU >= 0.5), so the GT switches identity once."""
    from test_evaluation import A, box, gt_file, res

    half = box(0, 2, 0, 1)  # 2 of A's 4 pixels: IoU 0.5
    gt = gt_file([(1, 2)], [(1, 1, 1, [A, A], 0, None)])
    r = evaluate(gt, [res(1, 1, 0.9, [A, None]), res(1, 1, 0.8, [None, half])])
    assert r.identity["id_switches"] == 1


def test_a_gt_without_iscrowd_is_not_a_crowd():
    """The official format always has ``iscrowd``; crossvis accepts files without it, as non-crowd GT (a
    perfect result then scores 1; were it a crowd, there would be nothing to detect: -1)."""
    from test_evaluation import A, gt_file, res

    gt = gt_file([(1, 1)], [(1, 1, 1, [A], 0, None)])
    del gt["annotations"][0]["iscrowd"]
    r = evaluate(gt, [res(1, 1, 0.9, [A])], with_identity=False)
    assert r.stats["AP"] == pytest.approx(1.0)


def test_per_category_ap_is_over_all_areas():
    """A medium GT (``areas`` 30000) found perfectly: its category's AP is 1 (the "all" range), not -1 (what
    the "small" range, which has no GT here, would give)."""
    from test_evaluation import A, gt_file, res

    gt = gt_file([(1, 1)], [(1, 1, 1, [A], 0, [30000])])
    r = evaluate(gt, [res(1, 1, 0.9, [A])], with_identity=False)
    assert r.per_category == {"c1": pytest.approx(1.0)} and r.stats["APs"] == -1.0
