"""Online association of per-frame detections into tracks.

The default is the official CrossVIS rule (``tools/test_vis.py``): every detection is compared with the
*last* detection of each existing track; other classes score -1, the same class scores embedding cosine +
box IoU; a detection joins its best track (first on ties) when that score is >= 0.4, otherwise it opens a new
track; within a frame a track keeps only its best-scoring detection and the others are dropped; tracks never
end. Improvements are explicit options, all off by default.

State is kept in preallocated tensors (:class:`~crossvis.tracking.table.ColumnTable`): the *active* tracks'
last box, embedding, class and last frame, and a compact record (id, class, first/last frame, detection count,
score sum) of the *finished* ones. With ``max_missed`` > 0 a track that misses more than that many frames
moves from the first table to the second, so a frame's cost depends on the active tracks only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from crossvis.config import TrackerConfig
from crossvis.tracking.table import ColumnTable

_RECORD = {  # 32 bytes per track
    "id": ((), torch.int64),
    "category": ((), torch.int32),
    "first_frame": ((), torch.int32),  # 2^31 frames: two years at 30 FPS
    "last_frame": ((), torch.int32),
    "count": ((), torch.int32),
    "score_sum": ((), torch.float64),
}


@dataclass
class Track:
    """One track, as :attr:`OnlineTracker.tracks` reports it.

    ``category`` is the class of its first detection; ``box`` (4,) and ``embedding`` (D,) are its last box and
    embedding (or the moving average with embedding memory) while it is active, None once it has finished.
    """

    id: int
    category: int
    first_frame: int
    last_frame: int
    num_detections: int
    score_sum: float
    box: torch.Tensor | None = None
    embedding: torch.Tensor | None = None

    @property
    def score(self) -> float:
        """Video-level score: the mean of its detections' scores."""
        return self.score_sum / self.num_detections if self.num_detections else 0.0

    @property
    def finished(self) -> bool:
        return self.box is None


class OnlineTracker:
    """Associates detections frame by frame.

    Args:
        config: the tracker options (:class:`~crossvis.config.TrackerConfig`; default: the official rule).
            ``match_threshold`` is the minimum association score to join a track (0.4); ``memory_momentum``
            0 compares with the last detection (official), m > 0 keeps an embedding moving average
            e <- m e + (1 - m) e_new; ``max_missed`` 0 keeps tracks forever (official), N > 0 ends a track
            after N frames without a detection; ``min_new_score``: detections below it may join tracks but
            not open one; ``hungarian``: one-to-one optimal assignment instead of the official greedy rule;
            ``use_embedding`` False scores by box IoU only (for comparison). ``stream_max_missed`` is read by
            the video predictor, not here.
        **changes: fields of ``config`` to replace, e.g. ``OnlineTracker(max_missed=30)``.

    Frame indices passed to :meth:`update` must increase.
    """

    def __init__(self, config: TrackerConfig | None = None, **changes) -> None:
        self.config = replace(config or TrackerConfig(), **changes)
        self._active: ColumnTable | None = None  # created at the first detection (embedding size)
        self._finished = ColumnTable(_RECORD)
        self._drained = 0  # finished records already handed out by drain_finished()
        self.next_id = 0

    # ----------------------------------------------------------------------------------------- views
    @property
    def num_active(self) -> int:
        return len(self._active) if self._active is not None else 0

    @property
    def num_tracks(self) -> int:
        """Tracks opened so far (active + finished)."""
        return self.next_id

    @property
    def tracks(self) -> list[Track]:
        """Every track so far, finished and active, in id order (built on call: O(tracks))."""
        out = _records(self._finished.slice(0, len(self._finished)))
        if self._active is not None and len(self._active):
            a = self._active
            out += _records({k: a.col(k) for k in _RECORD}, boxes=a.col("box"), embeddings=a.col("embedding"))
        return sorted(out, key=lambda t: t.id)

    def drain_finished(self) -> list[Track]:
        """Tracks that finished since the last call (for writers that emit a record per finished track)."""
        n, start = len(self._finished), self._drained
        self._drained = n
        return _records(self._finished.slice(start, n)) if n > start else []

    def finish_all(self) -> list[Track]:
        """End every active track (end of the video) and return the tracks not yet drained."""
        if self._active is not None and len(self._active):
            self._retire(torch.ones(len(self._active), dtype=torch.bool))
        return self.drain_finished()

    # ----------------------------------------------------------------------------------------- update
    def association_scores(
        self, boxes: torch.Tensor, classes: torch.Tensor, embeddings: torch.Tensor
    ) -> torch.Tensor:
        """(N, K) scores of N detections against the K active tracks: cos + IoU, -1 across classes."""
        a = self._active
        score = box_iou(boxes.float(), a.col("box"))
        if self.config.use_embedding:
            te = F.normalize(a.col("embedding"), dim=1)
            score = score + F.normalize(embeddings.float(), dim=1) @ te.t()
        same = classes[:, None] == a.col("category")[None]
        return torch.where(same, score, torch.full_like(score, -1.0))

    def update(
        self,
        frame: int,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        classes: torch.Tensor,
        embeddings: torch.Tensor,
    ) -> list[int]:
        """Associate one frame's N detections (in descending score order, as the model returns them).

        boxes (N, 4) xyxy; scores (N,); classes (N,) int; embeddings (N, D). Returns the track id of each
        detection, or -1 for a detection that was dropped.
        """
        self._expire(frame)
        n = int(scores.shape[0])
        if n == 0:
            return []
        boxes, scores, classes, embeddings = (x.detach().cpu() for x in (boxes, scores, classes, embeddings))
        if self._active is None:
            self._active = ColumnTable(
                {
                    **_RECORD,
                    "box": ((4,), torch.float32),
                    "embedding": ((int(embeddings.shape[1]),), torch.float32),
                }
            )
        assigned, assoc = self._assign(boxes, classes, embeddings)
        ids, granted, new = self._resolve(assigned, assoc, scores.tolist())
        self._extend(granted, frame, boxes, scores, embeddings)
        self._open(new, frame, boxes, scores, classes, embeddings, ids)
        return ids

    def _assign(self, boxes, classes, embeddings) -> tuple[list[int], list[float]]:
        """Each detection's chosen active track (-1: none above the threshold) and its score."""
        n, thr = int(boxes.shape[0]), self.config.match_threshold
        assigned, assoc = [-1] * n, [0.0] * n
        if not self.num_active:
            return assigned, assoc
        sim = self.association_scores(boxes, classes, embeddings)
        if self.config.hungarian:
            from scipy.optimize import linear_sum_assignment

            cost = sim.numpy()
            rows, cols = linear_sum_assignment(-cost)
            for r, c in zip(rows.tolist(), cols.tolist()):
                if cost[r, c] >= thr:
                    assigned[r], assoc[r] = c, float(cost[r, c])
            return assigned, assoc
        best, arg = sim.max(1)  # first maximum on ties
        best64 = (
            best.double()
        )  # compare as Python floats do: exact, whatever the threshold's float32 rounding
        ok = (best64 >= thr).tolist()
        for d, (b, k, good) in enumerate(zip(best64.tolist(), arg.tolist(), ok)):
            if good:
                assigned[d], assoc[d] = k, b
        return assigned, assoc

    def _resolve(self, assigned, assoc, scores) -> tuple[list[int], dict[int, int], list[int]]:
        """Same-frame conflicts: a track keeps its best detection, the others are dropped; detections
        matching no track open one (when scored >= min_new_score). Returns ids (-1 for dropped and new),
        granted {active row: detection} and the detections that open tracks."""
        ids = [-1] * len(assigned)
        granted: dict[int, tuple[float, int]] = {}
        new: list[int] = []
        track_id = self._active.col("id").tolist() if self.num_active else []
        for d, k in enumerate(assigned):
            if k < 0:
                if scores[d] >= self.config.min_new_score:
                    new.append(d)
                continue
            prev = granted.get(k)
            if prev is None or assoc[d] > prev[0]:
                if prev is not None:
                    ids[prev[1]] = -1  # replaced: dropped
                granted[k] = (assoc[d], d)
                ids[d] = track_id[k]
        return ids, {k: d for k, (_, d) in granted.items()}, new

    def _extend(self, granted: dict[int, int], frame: int, boxes, scores, embeddings) -> None:
        if not granted:
            return
        a = self._active
        rows = torch.tensor(list(granted.keys()), dtype=torch.long)
        dets = torch.tensor(list(granted.values()), dtype=torch.long)
        a.col("box")[rows] = boxes[dets].float()
        m = self.config.memory_momentum
        emb = embeddings[dets].float()
        a.col("embedding")[rows] = emb if m <= 0 else m * a.col("embedding")[rows] + (1 - m) * emb
        a.col("last_frame")[rows] = frame
        a.col("count")[rows] += 1
        a.col("score_sum")[rows] += scores[dets].double()

    def _open(self, new: list[int], frame: int, boxes, scores, classes, embeddings, ids: list[int]) -> None:
        if not new:
            return
        d = torch.tensor(new, dtype=torch.long)
        r = len(new)
        track_ids = torch.arange(self.next_id, self.next_id + r, dtype=torch.int64)
        for i, det in enumerate(new):
            ids[det] = self.next_id + i
        self.next_id += r
        full = torch.full((r,), frame, dtype=torch.int32)
        self._active.append(
            id=track_ids,
            category=classes[d].int(),
            first_frame=full,
            last_frame=full.clone(),
            count=torch.ones(r, dtype=torch.int32),
            score_sum=scores[d].double(),
            box=boxes[d].float(),
            embedding=embeddings[d].float(),
        )

    def _expire(self, frame: int) -> None:
        """Move tracks without a detection for more than ``max_missed`` frames to the finished record."""
        if self.config.max_missed <= 0 or not self.num_active:
            return
        gone = frame - self._active.col("last_frame") > self.config.max_missed
        if bool(gone.any()):
            self._retire(gone)

    def _retire(self, mask: torch.Tensor) -> None:
        self._finished.append(**{k: v for k, v in self._active.rows(mask).items() if k in _RECORD})
        self._active.keep(~mask)


def _records(cols: dict[str, torch.Tensor], boxes=None, embeddings=None) -> list[Track]:
    lists = {k: cols[k].tolist() for k in _RECORD}
    return [
        Track(
            id=lists["id"][i],
            category=lists["category"][i],
            first_frame=lists["first_frame"][i],
            last_frame=lists["last_frame"][i],
            num_detections=lists["count"][i],
            score_sum=lists["score_sum"][i],
            box=None if boxes is None else boxes[i].clone(),
            embedding=None if embeddings is None else embeddings[i].clone(),
        )
        for i in range(len(lists["id"]))
    ]
