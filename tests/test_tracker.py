"""Each clause of the official association rule, and each option, on hand-made detections."""

from __future__ import annotations

import pytest
import torch

from crossvis.tracking import OnlineTracker

E1, E2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])


def dets(*items):
    """items: (box, score, class, embedding)."""
    boxes = torch.tensor([b for b, *_ in items], dtype=torch.float32).reshape(-1, 4)
    scores = torch.tensor([s for _, s, *_ in items], dtype=torch.float32)
    classes = torch.tensor([c for *_, c, _ in items], dtype=torch.long)
    embs = torch.stack([e for *_, e in items]) if items else torch.zeros(0, 2)
    return boxes, scores, classes, embs


BOX = [0, 0, 10, 10]
FAR = [50, 50, 60, 60]


def test_same_object_joins_its_track_and_new_objects_open_tracks():
    t = OnlineTracker()
    assert t.update(0, *dets((BOX, 0.9, 0, E1))) == [0]
    assert t.update(1, *dets((BOX, 0.8, 0, E1), (FAR, 0.7, 0, E2))) == [0, 1]
    assert len(t.tracks) == 2 and t.tracks[0].frames == [0, 1]


def test_class_gate():
    t = OnlineTracker()
    t.update(0, *dets((BOX, 0.9, 0, E1)))
    # same box and embedding but another class: score -1 -> new track
    assert t.update(1, *dets((BOX, 0.9, 1, E1))) == [1]


def test_threshold_on_cosine_plus_iou():
    t = OnlineTracker(match_threshold=0.4)
    t.update(0, *dets((BOX, 0.9, 0, E1)))
    # cos = 0 (orthogonal), IoU of [0,0,10,10] and [0,0,10,4] = 0.4 -> exactly the threshold: joins
    assert t.update(1, *dets(([0, 0, 10, 4], 0.9, 0, E2))) == [0]
    t2 = OnlineTracker(match_threshold=0.4)
    t2.update(0, *dets((BOX, 0.9, 0, E1)))
    assert t2.update(1, *dets(([0, 0, 10, 3.9], 0.9, 0, E2))) == [1]  # IoU 0.39 < 0.4: new track


def test_compares_with_the_last_detection_of_each_track():
    t = OnlineTracker()
    t.update(0, *dets((BOX, 0.9, 0, E1)))
    t.update(1, *dets((FAR, 0.9, 0, E1)))  # moved far, same embedding: cos 1 + IoU 0 = 1 -> joins track 0
    # now back at the first place with another appearance: last detection is FAR -> cos 0 + IoU 0 -> new
    assert t.update(2, *dets((BOX, 0.9, 0, E2))) == [1]
    assert t.tracks[0].box.tolist() == FAR


def test_same_frame_conflict_keeps_the_best_and_drops_the_rest():
    t = OnlineTracker()
    t.update(0, *dets((BOX, 0.9, 0, E1)))
    # two detections want track 0; the second (lower detection score) has the higher association score
    a = ([0, 0, 10, 8], 0.9, 0, E1)  # cos 1 + IoU 0.8
    b = (BOX, 0.5, 0, E1)  # cos 1 + IoU 1
    ids = t.update(1, *dets(a, b))
    assert ids == [-1, 0]  # the replaced one is dropped, not turned into a new track
    assert len(t.tracks) == 1 and t.tracks[0].scores == pytest.approx([0.9, 0.5])
    # a later detection with a lower association score than the granted one is dropped
    t2 = OnlineTracker()
    t2.update(0, *dets((BOX, 0.9, 0, E1)))
    assert t2.update(1, *dets(b, a)) == [0, -1]


def test_video_score_is_the_mean_and_category_the_first_class():
    t = OnlineTracker()
    t.update(0, *dets((BOX, 0.9, 2, E1)))
    t.update(1, *dets((BOX, 0.5, 2, E1)))
    assert abs(t.tracks[0].score - 0.7) < 1e-6 and t.tracks[0].category == 2


def test_frames_without_detections_change_nothing():
    t = OnlineTracker()
    t.update(0, *dets((BOX, 0.9, 0, E1)))
    assert t.update(1, *dets()) == []
    assert t.update(2, *dets((BOX, 0.9, 0, E1))) == [0]


def test_option_track_termination():
    t = OnlineTracker(max_missed=1)
    t.update(0, *dets((BOX, 0.9, 0, E1)))
    assert t.update(3, *dets((BOX, 0.9, 0, E1))) == [1]  # 3 frames later: track 0 has ended
    t = OnlineTracker(max_missed=3)
    t.update(0, *dets((BOX, 0.9, 0, E1)))
    assert t.update(3, *dets((BOX, 0.9, 0, E1))) == [0]


def test_option_min_new_score():
    t = OnlineTracker(min_new_score=0.5)
    assert t.update(0, *dets((BOX, 0.3, 0, E1), (FAR, 0.6, 0, E2))) == [-1, 0]
    assert t.update(1, *dets((FAR, 0.3, 0, E2))) == [0]  # may still join


def test_option_embedding_memory():
    t = OnlineTracker(memory_momentum=0.5)
    t.update(0, *dets((BOX, 0.9, 0, E1)))
    t.update(1, *dets((BOX, 0.9, 0, E2)))
    assert torch.allclose(t.tracks[0].embedding, torch.tensor([0.5, 0.5]))
    t_last = OnlineTracker()
    t_last.update(0, *dets((BOX, 0.9, 0, E1)))
    t_last.update(1, *dets((BOX, 0.9, 0, E2)))
    assert torch.equal(t_last.tracks[0].embedding, E2)


def test_option_hungarian_assignment():
    # greedy: both detections prefer track 0, the second one is dropped; Hungarian gives it track 1
    t = OnlineTracker(hungarian=True)
    t.update(0, *dets((BOX, 0.9, 0, E1), ([0, 0, 10, 6], 0.8, 0, E2)))
    ids = t.update(1, *dets((BOX, 0.9, 0, E1), ([0, 0, 10, 7], 0.8, 0, (E1 + E2) / 2)))
    assert ids == [0, 1]
    g = OnlineTracker()
    g.update(0, *dets((BOX, 0.9, 0, E1), ([0, 0, 10, 6], 0.8, 0, E2)))
    assert g.update(1, *dets((BOX, 0.9, 0, E1), ([0, 0, 10, 7], 0.8, 0, E1)))[1] == -1


def test_option_iou_only():
    t = OnlineTracker(use_embedding=False)
    t.update(0, *dets((BOX, 0.9, 0, E1)))
    assert t.update(1, *dets((FAR, 0.9, 0, E1))) == [1]  # same embedding, no overlap: new track without cos


def test_option_min_new_score_is_inclusive():
    """A detection whose score equals min_new_score is not below it: it may open a track."""
    t = OnlineTracker(min_new_score=0.5)
    assert t.update(0, *dets((BOX, 0.5, 0, E1), (FAR, 0.25, 0, E2))) == [0, -1]


def test_same_frame_tie_keeps_the_first_detection():
    """Two detections with the same association score to one track: the first (higher detection score)
    keeps it, as only a strictly higher association score replaces a granted detection; the other is dropped."""
    t = OnlineTracker()
    t.update(0, *dets((BOX, 0.9, 0, E1)))
    assert t.update(1, *dets((BOX, 0.8, 0, E1), (BOX, 0.7, 0, E1))) == [0, -1]
    assert t.tracks[0].scores == pytest.approx([0.9, 0.8])
