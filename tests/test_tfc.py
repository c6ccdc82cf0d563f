"""Temporal feature calibration (OVIS paper): correlation, shapes, first frame, gradients, parameter count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from crossvis.modeling.tfc import TemporalFeatureCalibration, local_correlation, tfc_parameter_count


def _naive_correlation(x, ref, displacements):
    b, c, h, w = x.shape
    out = torch.zeros(b, len(displacements), h, w)
    for k, (dy, dx) in enumerate(displacements):
        for i in range(h):
            for j in range(w):
                y2, x2 = i + dy, j + dx
                if 0 <= y2 < h and 0 <= x2 < w:
                    out[:, k, i, j] = (x[:, :, i, j] * ref[:, :, y2, x2]).sum(1) / c
    return torch.nn.functional.leaky_relu(out, 0.1)


def test_local_correlation_matches_the_definition():
    torch.manual_seed(0)
    x, ref = torch.randn(2, 5, 6, 7), torch.randn(2, 5, 6, 7)
    # patch 4, step 2: displacements -3, -1, 1, 3 in y and x (the official 16/2 gives -15..15)
    disp = [(dy, dx) for dy in (-3, -1, 1, 3) for dx in (-3, -1, 1, 3)]
    got = local_correlation(x, ref, patch=4, step=2)
    assert got.shape == (2, 16, 6, 7)
    assert torch.allclose(got, _naive_correlation(x, ref, disp), atol=1e-6)


def test_official_displacements_are_odd_from_minus_15_to_15():
    # a reference equal to the current map moved by (+3, -5): the (3, -5) channel holds |x|^2 / C
    torch.manual_seed(1)
    x = torch.randn(1, 8, 40, 40)
    ref = torch.zeros_like(x)
    ref[:, :, 3:, : 40 - 5] = x[:, :, : 40 - 3, 5:]  # ref[p + (3, -5)] = x[p]
    corr = local_correlation(x, ref)
    k = ((3 + 15) // 2) * 16 + (-5 + 15) // 2
    assert corr.shape[1] == 256
    inner = (slice(None), slice(0, 30), slice(6, 40))
    expect = (x**2).sum(1) / 8
    assert torch.allclose(corr[0, k][inner[1:]], expect[0][inner[1:]], atol=1e-5)


def test_shapes_first_frame_and_gradients():
    torch.manual_seed(2)
    tfc = TemporalFeatureCalibration(16, patch=4, step=2)
    cur = [torch.randn(2, 16, 12, 10, requires_grad=True), torch.randn(2, 16, 6, 5, requires_grad=True)]
    prev = [torch.randn(2, 16, 12, 10, requires_grad=True), torch.randn(2, 16, 6, 5, requires_grad=True)]
    out = tfc(cur, prev)
    assert [o.shape for o in out] == [c.shape for c in cur]
    # first frame of a stream: calibrated with itself
    first = tfc(cur)
    again = tfc(cur, cur)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.allclose(first[0], cur[0])  # it does change the features
    sum(o.sum() for o in out).backward()
    for name, p in tfc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in cur + prev)


def test_zero_deformable_weight_leaves_the_current_frame():
    tfc = TemporalFeatureCalibration(8, patch=2, step=2)
    torch.nn.init.zeros_(tfc.weight)
    x, r = torch.randn(1, 8, 5, 5), torch.randn(1, 8, 5, 5)
    assert torch.allclose(tfc([x], [r])[0], x)


def test_parameter_count_of_the_official_setting():
    tfc = TemporalFeatureCalibration(256)
    n = sum(p.numel() for p in tfc.parameters())
    # official layer shapes: 3 convs (256->256 3x3 + bias), 256->18 3x3 + bias, deformable 256->256 3x3
    assert n == 3 * (256 * 256 * 9 + 256) + (256 * 18 * 9 + 18) + 256 * 256 * 9 == 2_401_554
    assert tfc_parameter_count(256) == n
    small = TemporalFeatureCalibration(64)
    assert tfc_parameter_count(64) == sum(p.numel() for p in small.parameters())


# ------------------------------------------------------------------------------------------ wired into CrossVIS


def _tiny(tfc: bool, n_id: int = 0):
    from crossvis.modeling.builders import crossvis_tiny

    torch.manual_seed(0)
    return crossvis_tiny(num_classes=5, num_identities=n_id, tfc=tfc)


def test_tfc_option_trains_on_pairs(synth_dir):
    from crossvis.data.pairs import FramePairDataset, collate_pairs
    from crossvis.data.ytvis import YTVISDataset

    ds = YTVISDataset(synth_dir / "annotations.json", synth_dir / "JPEGImages")
    pairs = FramePairDataset(ds, [96], 128, hflip=False)
    batch = collate_pairs([pairs[(0, 1)], pairs[(3, 2)]])
    assert _tiny(False).tfc is None
    model = _tiny(True, ds.num_identities).train()
    assert sum(p.numel() for p in model.tfc.parameters()) == TemporalFeatureCalibration(
        64
    ).weight.numel() + sum(
        p.numel() for n, p in TemporalFeatureCalibration(64).named_parameters() if n != "weight"
    )
    losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name, p in model.tfc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_tfc_stream_state_online():
    model = _tiny(True).eval()
    torch.nn.init.constant_(model.head.cls_logits.bias, 0.0)  # make the untrained head fire
    torch.manual_seed(3)
    a = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    b = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    model.reset_stream()
    da = model.inference([a])[0]
    assert model.tfc_state is not None and model.tfc_state[0].shape[0] == 1
    db = model.inference([b])[0]  # b calibrated with a (the previous frame)
    model.reset_stream()
    both = model.inference([a, b])  # the same stream as one batch: item 1 uses item 0
    assert torch.allclose(both[0].scores, da.scores) and torch.allclose(both[1].scores, db.scores)
    model.reset_stream()
    db_first = model.inference([b])[0]  # b first in a new stream: calibrated with itself
    raw = model.pyramid(model.preprocess([b])[0])
    assert all(torch.equal(s, r) for s, r in zip(model.tfc_state, raw))
    model.reset_stream()
    assert model.tfc_state is None
    assert len(db) > 0 and (
        db_first.scores.shape != db.scores.shape or not torch.allclose(db_first.scores, db.scores)
    )


def test_predictor_resets_the_stream_per_video(synth_dir):
    import numpy as np

    from crossvis.config import apply_overrides
    from crossvis.engine.predictor import VideoPredictor
    from crossvis.modeling.builders import tiny_config

    model = _tiny(True).eval()
    torch.nn.init.constant_(model.head.cls_logits.bias, 0.0)  # make the untrained head fire
    cfg = apply_overrides(tiny_config(5), ["model.tfc=true"])
    pred = VideoPredictor(model, cfg, [f"c{i}" for i in range(5)], [1, 2, 3, 4, 5])
    rng = np.random.default_rng(0)
    v1 = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(3)]
    v2 = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(2)]
    list(pred.track(v1))
    after_v1 = [r.scores for r in pred.track(v2)]
    fresh = VideoPredictor(_tiny(True).eval(), cfg, [f"c{i}" for i in range(5)], [1, 2, 3, 4, 5])
    fresh.model.load_state_dict(model.state_dict())
    alone = [r.scores for r in fresh.track(v2)]
    assert len(after_v1) == len(alone) and all(np.array_equal(x, y) for x, y in zip(after_v1, alone))
    assert any(len(x) for x in alone)
    # without the reset, the second video's first frame would be calibrated with the first video's last
    list(pred.track(v1))
    model.reset_stream = lambda: None
    leaked = [r.scores for r in pred.track(v2)]
    assert not all(x.shape == y.shape and np.allclose(x, y) for x, y in zip(leaked, alone))


@pytest.mark.slow
def test_tfc_trains_and_runs_online_from_the_cli(tmp_path, synth_dir):
    from conftest import run_cli

    out = tmp_path / "run"
    r = run_cli(
        "train",
        "configs/synthetic_tiny.yaml",
        "--output",
        out,
        "model.tfc=true",
        f"data.train_json={synth_dir / 'annotations.json'}",
        f"data.train_images={synth_dir / 'JPEGImages'}",
        "data.synth_train=null",
        "data.val_json=''",
        "data.synth_val=null",
        "data.num_workers=0",
        "input.min_size_train=[96]",
        "input.max_size_train=128",
        "solver.ims_per_batch=2",
        "solver.reference_batch=2",
        "solver.max_iter=2",
        "solver.checkpoint_period=0",
        "test.eval_period=0",
        cwd=Path(__file__).resolve().parents[1],
    )
    assert r.returncode == 0, r.stderr[-2000:]
    from safetensors import safe_open

    with safe_open(str(out / "model_final.safetensors"), framework="pt") as f:
        assert "tfc.weight" in f.keys()
    r = run_cli(
        "infer",
        "--weights",
        out / "model_final.safetensors",
        "--annotations",
        synth_dir / "annotations.json",
        "--images",
        synth_dir / "JPEGImages",
        "--output",
        tmp_path / "results.json",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert isinstance(json.loads((tmp_path / "results.json").read_text()), list)
