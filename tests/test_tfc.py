"""Temporal feature calibration (OVIS paper): correlation, shapes, first frame, gradients, parameter count."""

from __future__ import annotations

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
