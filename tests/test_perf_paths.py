"""The inference speed-ups give today's outputs: fused head vs the per-tower path, channels_last vs NCHW,
region-limited mask pasting vs the full-image path; precision and benchmark plumbing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crossvis.engine.predictor import VideoPredictor
from crossvis.errors import CrossVISError
from crossvis.modeling.builders import crossvis_r50, crossvis_tiny
from crossvis.modeling.paste import paste_masks, paste_masks_full
from crossvis.modeling.weights import load_model

HEAD_KEYS = ("logits", "bbox_reg", "ctrness", "params", "embedding")


def _run(model, x, fused: bool):
    """The model's flattened outputs with the fused head (eval, no grad) or the reference per-tower path."""
    head = model.head
    with torch.no_grad():
        if not fused:
            head._forward_fused = head._forward_levels  # the reference path in eval mode
        try:
            flat, mask_feats, _ = model.network(x)
        finally:
            head.__dict__.pop("_forward_fused", None)
    return flat, mask_feats


def _close(a: dict, b: dict, tol: float) -> None:
    for k in HEAD_KEYS:
        scale = max(1.0, a[k].abs().max().item())
        assert (a[k] - b[k]).abs().max().item() <= tol * scale, k


def _frame(seed: int = 0, h: int = 192, w: int = 256) -> torch.Tensor:
    """A frame with flat-coloured rectangles (something for the trained tiny model to find)."""
    g = np.random.default_rng(seed)
    img = np.full((h, w, 3), 90, np.uint8)
    for _ in range(4):
        y, x = g.integers(0, h - 40), g.integers(0, w - 40)
        img[y : y + g.integers(20, 40), x : x + g.integers(20, 40)] = g.integers(0, 255, 3)
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()


def _same_detections(a, b, tol: float = 1e-4) -> None:
    assert len(a) == len(b) > 0
    assert torch.equal(a.classes, b.classes)
    assert torch.allclose(a.scores, b.scores, atol=tol) and torch.allclose(a.boxes, b.boxes, atol=tol * 100)
    assert torch.allclose(a.embeddings, b.embeddings, atol=tol * 10)
    # a mask pixel may flip only where its probability is within float noise of the threshold
    assert (a.masks != b.masks).float().mean().item() < 1e-4


def test_tiny_fused_head_and_channels_last_keep_the_detections():
    model, _ = load_model("synthetic-tiny")
    img = _frame()
    x, _ = model.preprocess([img])
    ref, ref_mf = _run(model, x, fused=False)
    fused, fused_mf = _run(model, x, fused=True)
    _close(ref, fused, 1e-5)
    with torch.no_grad():
        ref_dets = model.inference([img])[0]
    model.head._forward_fused = model.head._forward_levels
    with torch.no_grad():
        unfused_dets = model.inference([img])[0]
    del model.head._forward_fused
    _same_detections(unfused_dets, ref_dets)
    model = model.to(memory_format=torch.channels_last)
    cl, cl_mf = _run(model, x, fused=True)
    _close(ref, cl, 1e-4)
    assert torch.allclose(ref_mf, cl_mf, atol=1e-4)
    with torch.no_grad():
        _same_detections(ref_dets, model.inference([img])[0])


def test_r50_fused_and_channels_last_match_the_reference_path():
    torch.manual_seed(0)
    model = crossvis_r50(num_identities=0).eval()
    # non-trivial GroupNorm affines and BN statistics, so that folding and concatenation are exercised
    with torch.no_grad():
        for name, p in model.head.named_parameters():
            if "tower" in name and p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
        bn = model.head.identity_bn
        bn.running_mean.normal_(0, 0.1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2)
        bn.bias.normal_(0, 0.5)
    x = torch.randn(1, 3, 96, 128)
    ref, ref_mf = _run(model, x, fused=False)
    _close(ref, _run(model, x, fused=True)[0], 1e-4)
    cl, cl_mf = _run(model.to(memory_format=torch.channels_last), x, fused=True)
    _close(ref, cl, 1e-4)
    assert torch.allclose(ref_mf, cl_mf, atol=1e-4)


def test_fused_weights_follow_parameter_changes_and_leave_the_checkpoint_alone():
    model = crossvis_tiny().eval()
    keys = list(model.state_dict())
    x = torch.randn(1, 3, 64, 96)
    _run(model, x, fused=True)  # builds the fused weights
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        model.head.cls_tower[0].weight.add_(0.05)  # an in-place update (as an optimiser step)
        model.head.identity_bn.running_mean.add_(0.3)
    _close(_run(model, x, fused=False)[0], _run(model, x, fused=True)[0], 1e-5)
    other = crossvis_tiny()
    model.load_state_dict(other.state_dict())  # load_state_dict copies in place
    _close(_run(model, x, fused=False)[0], _run(model, x, fused=True)[0], 1e-5)
    # with gradients (or in training) the reference path runs, so gradients reach every tower parameter
    model.train()
    model.head([torch.randn(2, 64, 8, 8)])["logits"][0].sum().backward()
    assert model.head.cls_tower[0].weight.grad is not None


def _blobs(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """(n, h, w) probabilities: a Gaussian blob per instance over low noise, some never above 0.5."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    cy, cx = torch.rand(n, 1, 1, generator=g) * h, torch.rand(n, 1, 1, generator=g) * w
    s = torch.rand(n, 1, 1, generator=g) * 8 + 0.5
    amp = 0.2 + torch.rand(n, 1, 1, generator=g)
    p = amp * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return (p + 0.05 * torch.rand(n, h, w, generator=g)).clamp(0, 1)


@pytest.mark.parametrize(
    "low, size, out",
    [
        ((48, 64), (192, 256), (192, 256)),  # the common case: output = network input size
        ((48, 64), (180, 250), (180, 250)),  # padding cropped
        ((48, 64), (180, 250), (360, 500)),  # frames resized down for the network
        ((48, 64), (190, 256), (120, 170)),  # ... and up
        ((96, 160), (360, 640), (720, 1280)),
    ],
)
def test_region_paste_equals_the_full_image_paste(low, size, out):
    probs = _blobs(24, *low, seed=sum(out))
    ref = paste_masks_full(probs, factor=4, size=size, out_size=out)
    fast = paste_masks(probs, factor=4, size=size, out_size=out)
    assert ref.shape == fast.shape == (24, *out)
    assert ref.any() and not ref.all(1).all()  # something to paste, and not everywhere
    assert torch.equal(ref, fast)


def test_region_paste_at_the_image_border_and_for_empty_masks():
    probs = torch.zeros(3, 8, 8)
    probs[0, 0, 0] = probs[0, 7, 7] = 0.9  # corners: the replicate padding of the aligned upsampling
    probs[1, :, 7] = 0.6
    for out in ((32, 32), (30, 29), (50, 61)):
        ref = paste_masks_full(probs, factor=4, size=(30, 29), out_size=out)
        assert torch.equal(ref, paste_masks(probs, factor=4, size=(30, 29), out_size=out))
        assert not ref[2].any()


def test_precision_runs_in_reduced_precision_and_returns_float32():
    frame = _frame(1).permute(1, 2, 0).numpy()
    ref = VideoPredictor.from_weights("synthetic-tiny", device="cpu").detect([frame])[0]
    bf = VideoPredictor.from_weights("synthetic-tiny", device="cpu", precision="bf16")
    seen = []
    hooks = [
        bf.model.backbone.body.register_forward_hook(lambda _m, _a, o: seen.append(o[0].dtype)),
        bf.model.head.cls_logits.register_forward_hook(lambda _m, _a, o: seen.append(o.dtype)),
    ]
    det = bf.detect([frame])[0]
    for h in hooks:
        h.remove()
    # the network runs in bf16; the final class convs (5 levels) in float32 (bf16 scores cost AP)
    assert seen == [torch.bfloat16] + [torch.float32] * 5
    assert det.scores.dtype == det.boxes.dtype == det.embeddings.dtype == torch.float32
    # bf16 has 8 mantissa bits: the confident detections agree closely
    assert abs(det.scores[0].item() - ref.scores[0].item()) < 0.02
    with pytest.raises(CrossVISError, match="precision"):
        VideoPredictor.from_weights("synthetic-tiny", device="cpu", precision="int8")


def test_benchmark_json_has_the_documented_fields(tmp_path):
    from crossvis.engine.benchmark import run_benchmark

    out = tmp_path / "b.json"
    lines = run_benchmark(size="64x96", iters=1, stages=True, json_path=str(out), detections=5)
    data = json.loads(out.read_text())
    assert {"crossvis_ms", "maskrcnn_ms", "fcos_ms", "detections", "precision", "device", "stages"} <= set(
        data
    )
    assert data["maskrcnn_ms"] is None and data["precision"] == "fp32" and data["crossvis_ms"] > 0
    stages = {"decode", "preprocess", "backbone", "fpn", "towers", "controller", "mask_branch"}
    assert stages | {"post_process", "masks", "tracking", "encode"} == set(data["stages"])
    assert all(0 < n <= 5 for n in data["detections"].values())
    assert lines[0].startswith("command: crossvis benchmark")
    with pytest.raises(CrossVISError, match="--size"):
        run_benchmark(size="64by96")


def test_cli_precision_flags(tmp_path):
    from conftest import run_cli

    out = tmp_path / "b.json"
    r = run_cli("benchmark", "--size", "64x96", "--iters", "1", "--precision", "bf16", "--json", out)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["precision"] == "bf16"
    assert any(k.endswith("[fp32]") for k in data["models_ms"])  # the fp32 model timed beside it
    r = run_cli(
        "predict",
        tmp_path,
        "--weights",
        "synthetic-tiny",
        "--output",
        tmp_path / "o.mp4",
        "--precision",
        "fp8",
    )
    assert r.returncode == 2 and "--precision" in r.stderr and "Traceback" not in r.stderr


def test_region_paste_reproduces_the_models_masks():
    """Drop-in for the model's own pasting: the same masks from the mask head's real logits."""
    model, _ = load_model("synthetic-tiny")
    img = _frame(2)
    captured = []
    hook = model.mask_head.register_forward_hook(lambda _m, _a, o: captured.append(o))
    with torch.no_grad():
        det = model.inference([img], [(300, 400)])[0]  # output larger than the network input
    hook.remove()
    logits = captured[0]
    assert logits.shape[0] == len(det) > 0
    padded = model.preprocess([img])[0].shape[-2:]
    kw = {"factor": padded[0] // logits.shape[-2], "size": tuple(img.shape[-2:]), "out_size": (300, 400)}
    assert torch.equal(paste_masks(logits.sigmoid(), **kw), det.masks)
