"""Regression value: the shipped ``synthetic-tiny`` weights on a fixed synthetic split.

A small split (6 videos x 8 frames, the generator settings the weights were validated on, seed 31337, which no
training or validation split uses) is generated, run through ``VideoPredictor`` + the online tracker, and
evaluated. The numbers were recorded from the code before issue 13's restructuring; a change in
preprocessing, post-processing, mask pasting, tracking or evaluation moves them. If a change is intended
(new weights, a fixed bug), re-record them and say why in the commit.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from crossvis.data.synthetic import generate
from crossvis.data.ytvis import YTVISDataset
from crossvis.engine.inference import infer_videos
from crossvis.engine.predictor import VideoPredictor
from crossvis.evaluation import evaluate

SEED = 31337
PINNED = {"AP": 0.669901, "AP50": 0.853465, "AP75": 0.708911, "AR1": 0.514333, "AR10": 0.672333}


def test_shipped_weights_ap_on_a_fixed_synthetic_split(tmp_path):
    predictor = VideoPredictor.from_weights("synthetic-tiny", device="cpu")
    generate(tmp_path, replace(predictor.cfg.data.synth_val, videos=6, frames=8, seed=SEED))
    ds = YTVISDataset(tmp_path / "annotations.json", tmp_path / "JPEGImages")
    result = evaluate(ds, infer_videos(predictor, ds, progress=False))
    got = {k: result.stats[k] for k in PINNED}
    assert got == pytest.approx(PINNED, abs=1e-4), got
