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
    tr = t.tracks
    assert len(tr) == 2 and (tr[0].first_frame, tr[0].last_frame, tr[0].num_detections) == (0, 1, 2)


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
    assert len(t.tracks) == 1 and t.tracks[0].num_detections == 2
    assert t.tracks[0].score == pytest.approx((0.9 + 0.5) / 2)
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
    assert t.tracks[0].num_detections == 2 and t.tracks[0].score == pytest.approx(0.85)


# ------------------------------------------------------------------------------------------------------------
# The tensor state against the list-based implementation it replaced (kept here as the oracle)


class _ListTracker:
    """The previous implementation (one Python object per track, tracks stacked every frame), verbatim in
    its association logic: the tensor tracker must give the same ids, scores and last boxes."""

    def __init__(self, threshold=0.4, max_missed=0, momentum=0.0, min_new=0.0):
        self.thr, self.max_missed, self.m, self.min_new = threshold, max_missed, momentum, min_new
        self.tracks = []  # [id, cat, box, emb, last, scores]

    def update(self, frame, boxes, scores, classes, embs):
        import torch.nn.functional as F
        from torchvision.ops import box_iou

        n = int(scores.shape[0])
        if n == 0:
            return []
        active = [t for t in self.tracks if self.max_missed <= 0 or frame - t[4] <= self.max_missed]
        assigned, assoc = [-1] * n, [0.0] * n
        if active:
            score = box_iou(boxes.float(), torch.stack([t[2] for t in active]).float())
            te = torch.stack([t[3] for t in active])
            score = score + F.normalize(embs.float(), dim=1) @ F.normalize(te.float(), dim=1).t()
            same = classes[:, None] == torch.tensor([t[1] for t in active])[None]
            sim = torch.where(same, score, torch.full_like(score, -1.0))
            best, arg = sim.max(1)
            for d in range(n):
                if float(best[d]) >= self.thr:
                    assigned[d], assoc[d] = int(arg[d]), float(best[d])
        ids, granted = [-1] * n, {}
        for d in range(n):
            k = assigned[d]
            if k < 0:
                if float(scores[d]) >= self.min_new:
                    self.tracks.append(
                        [len(self.tracks), int(classes[d]), boxes[d], embs[d], frame, [float(scores[d])]]
                    )
                    ids[d] = len(self.tracks) - 1
                continue
            prev = granted.get(k)
            if prev is None or assoc[d] > prev[0]:
                if prev is not None:
                    ids[prev[1]] = -1
                granted[k] = (assoc[d], d)
                ids[d] = active[k][0]
        for k, (_, d) in granted.items():
            t = active[k]
            t[2] = boxes[d]
            t[3] = embs[d] if self.m <= 0 else self.m * t[3] + (1 - self.m) * embs[d]
            t[4] = frame
            t[5].append(float(scores[d]))
        return ids


def _random_stream(seed: int, frames: int = 60, objects: int = 12, dim: int = 8):
    """Objects that drift, vanish for a while and come back, with noisy embeddings and a few classes."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(objects, 2, generator=g) * 200
    identity = torch.randn(objects, dim, generator=g)
    cls = torch.randint(0, 3, (objects,), generator=g)
    for f in range(frames):
        centre += torch.randn(objects, 2, generator=g) * 4
        present = torch.rand(objects, generator=g) > 0.3
        idx = torch.nonzero(present, as_tuple=True)[0]
        # boxes on a coarse grid so that ties and exact-threshold scores happen
        c = (centre[idx] / 2).round() * 2
        boxes = torch.cat([c - 10, c + 10], 1)
        embs = identity[idx] + 0.5 * torch.randn(len(idx), dim, generator=g)
        scores = torch.rand(len(idx), generator=g).sort(descending=True).values
        yield f, boxes, scores, cls[idx], embs


@pytest.mark.parametrize("max_missed,momentum,min_new", [(0, 0.0, 0.0), (2, 0.0, 0.0), (5, 0.5, 0.3)])
def test_tensor_state_gives_the_same_ids_as_the_list_implementation(max_missed, momentum, min_new):
    for seed in range(3):
        new = OnlineTracker(max_missed=max_missed, memory_momentum=momentum, min_new_score=min_new)
        old = _ListTracker(max_missed=max_missed, momentum=momentum, min_new=min_new)
        for f, *d in _random_stream(seed):
            assert new.update(f, *d) == old.update(f, *d), (seed, f)
        got = new.tracks
        assert [t.id for t in got] == [t[0] for t in old.tracks]
        for t, o in zip(got, old.tracks):
            assert t.num_detections == len(o[5]) and t.score == pytest.approx(sum(o[5]) / len(o[5]))
            assert t.last_frame == o[4] and t.category == o[1]
            if not t.finished:
                assert torch.equal(t.box, o[2].float())


def test_ended_tracks_leave_the_active_state_and_are_reported_once():
    t = OnlineTracker(max_missed=2)
    t.update(0, *dets((BOX, 0.9, 0, E1), (FAR, 0.8, 1, E2)))
    t.update(1, *dets((BOX, 0.7, 0, E1)))
    assert t.num_active == 2 and t.drain_finished() == []
    t.update(3, *dets((BOX, 0.5, 0, E1)))  # FAR last seen at 0: 3 - 0 > 2 -> finished; BOX: 3 - 1 = 2 stays
    assert t.num_active == 1
    done = t.drain_finished()
    assert [(d.id, d.category, d.first_frame, d.last_frame, d.num_detections) for d in done] == [
        (1, 1, 0, 0, 1)
    ]
    assert done[0].finished and t.drain_finished() == []
    rest = t.finish_all()
    assert [(d.id, d.last_frame, d.num_detections) for d in rest] == [(0, 3, 3)]
    assert rest[0].score == pytest.approx((0.9 + 0.7 + 0.5) / 3)
    assert [x.id for x in t.tracks] == [0, 1] and t.num_active == 0


def test_active_state_stays_bounded_on_a_long_stream():
    """2,000 frames of 5 new objects each: with max_missed the active table holds only recent tracks."""
    t = OnlineTracker(max_missed=3)
    for f in range(2000):
        x = float(f * 30 % 10_000)
        boxes = torch.tensor([[x, 20.0 * i, x + 10, 20.0 * i + 10] for i in range(5)])
        embs = torch.eye(64)[[(5 * f + i) % 64 for i in range(5)]]  # orthogonal to the last 12 frames'
        t.update(f, boxes, torch.full((5,), 0.9), torch.zeros(5, dtype=torch.long), embs)
    assert t.num_tracks == 10_000 and t.num_active <= 5 * 4
    assert t._active.capacity <= 64  # never grew beyond what the active tracks need
