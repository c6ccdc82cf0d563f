"""Online association of per-frame detections into tracks.

The default is the official CrossVIS rule (``tools/test_vis.py``): every detection is compared with the
*last* detection of each existing track; other classes score -1, the same class scores embedding cosine +
box IoU; a detection joins its best track (first on ties) when that score is >= 0.4, otherwise it opens a new
track; within a frame a track keeps only its best-scoring detection and the others are dropped; tracks never
end. Improvements are explicit options, all off by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from crossvis.config import TrackerConfig


@dataclass
class Track:
    id: int
    category: int  # class of its first detection
    box: torch.Tensor  # (4,) last box
    embedding: torch.Tensor  # (D,) last embedding, or the moving average with embedding memory
    last_frame: int
    scores: list[float] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)

    @property
    def score(self) -> float:
        """Video-level score: the mean of its detections' scores."""
        return float(np.mean(self.scores)) if self.scores else 0.0


class OnlineTracker:
    """Associates detections frame by frame.

    Args:
        config: the tracker options (:class:`~crossvis.config.TrackerConfig`; default: the official rule).
            ``match_threshold`` is the minimum association score to join a track (0.4); ``memory_momentum``
            0 compares with the last detection (official), m > 0 keeps an embedding moving average
            e <- m e + (1 - m) e_new; ``max_missed`` 0 keeps tracks forever (official), N > 0 ends a track
            after N frames without a detection; ``min_new_score``: detections below it may join tracks but
            not open one; ``hungarian``: one-to-one optimal assignment instead of the official greedy rule;
            ``use_embedding`` False scores by box IoU only (for comparison).
        **changes: fields of ``config`` to replace, e.g. ``OnlineTracker(max_missed=30)``.
    """

    def __init__(self, config: TrackerConfig | None = None, **changes) -> None:
        self.config = replace(config or TrackerConfig(), **changes)
        self.tracks: list[Track] = []

    def _active(self, frame: int) -> list[Track]:
        if self.config.max_missed <= 0:
            return self.tracks
        return [t for t in self.tracks if frame - t.last_frame <= self.config.max_missed]

    def association_scores(
        self, active: list[Track], boxes: torch.Tensor, classes: torch.Tensor, embeddings: torch.Tensor
    ) -> torch.Tensor:
        """(N, K) scores of N detections against K tracks: cos + IoU, -1 across classes."""
        tb = torch.stack([t.box for t in active])
        score = box_iou(boxes.float(), tb.float())
        if self.config.use_embedding:
            te = torch.stack([t.embedding for t in active])
            score = score + F.normalize(embeddings.float(), dim=1) @ F.normalize(te.float(), dim=1).t()
        same = classes[:, None] == torch.tensor([t.category for t in active], device=classes.device)[None]
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

        Returns the track id of each detection, or -1 for a detection that was dropped.
        """
        n = int(scores.shape[0])
        if n == 0:
            return []
        boxes, scores, classes, embeddings = (x.detach().cpu() for x in (boxes, scores, classes, embeddings))
        active = self._active(frame)
        assigned = [-1] * n  # index into active, -1 = new
        assoc = [0.0] * n
        if active:
            sim = self.association_scores(active, boxes, classes, embeddings)
            if self.config.hungarian:
                from scipy.optimize import linear_sum_assignment

                cost = sim.numpy()
                rows, cols = linear_sum_assignment(-cost)
                for r, c in zip(rows.tolist(), cols.tolist()):
                    if cost[r, c] >= self.config.match_threshold:
                        assigned[r], assoc[r] = c, float(cost[r, c])
            else:
                best, arg = sim.max(1)  # first maximum on ties
                for d in range(n):
                    if float(best[d]) >= self.config.match_threshold:
                        assigned[d], assoc[d] = int(arg[d]), float(best[d])
        ids = [-1] * n
        granted: dict[int, tuple[float, int]] = {}  # active index -> (assoc score, detection)
        for d in range(n):
            k = assigned[d]
            if k < 0:
                if float(scores[d]) >= self.config.min_new_score:
                    ids[d] = self._new_track(frame, boxes[d], scores[d], classes[d], embeddings[d])
                continue
            prev = granted.get(k)
            if prev is None or assoc[d] > prev[0]:
                if prev is not None:
                    ids[prev[1]] = -1  # replaced: dropped
                granted[k] = (assoc[d], d)
                ids[d] = active[k].id
        for k, (_, d) in granted.items():
            self._extend(active[k], frame, boxes[d], scores[d], embeddings[d])
        return ids

    def _new_track(self, frame, box, score, cls, emb) -> int:
        t = Track(len(self.tracks), int(cls), box.clone(), emb.clone(), frame, [float(score)], [frame])
        self.tracks.append(t)
        return t.id

    def _extend(self, t: Track, frame, box, score, emb) -> None:
        t.box = box.clone()
        m = self.config.memory_momentum
        t.embedding = emb.clone() if m <= 0 else m * t.embedding + (1 - m) * emb
        t.last_frame = frame
        t.scores.append(float(score))
        t.frames.append(frame)
