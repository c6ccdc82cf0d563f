"""``crossvis benchmark``: model-only speed (full inference and backbone+FPN alone) on random input."""

from __future__ import annotations

import platform
import time

import torch

from crossvis.engine.predictor import resolve_device
from crossvis.errors import CrossVISError


def _time(fn, iters: int, device: torch.device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_benchmark(
    weights: str | None = None,
    *,
    size: str = "360x640",
    backbone: str = "",
    iters: int = 10,
    device: str | None = None,
) -> list[str]:
    """Time full inference and backbone+FPN alone on random input; returns the report lines."""
    from crossvis.modeling import builders
    from crossvis.modeling.weights import load_model

    dev = resolve_device(device)
    try:
        h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise CrossVISError("--size", f"expected HxW like 360x640, got {size!r}") from None
    if backbone:
        build = {
            "resnet50": builders.crossvis_r50,
            "resnet101": builders.crossvis_r101,
            "dla34": builders.crossvis_lite_dla34,
        }.get(backbone)
        if build is None:
            raise CrossVISError("--backbone", "one of resnet50, resnet101, dla34")
        model, name = build(num_identities=0).to(dev).eval(), f"crossvis ({backbone}, random weights)"
        flag = f"--backbone {backbone}"
    else:
        model, _ = load_model(weights or "synthetic-tiny", dev)
        name = f"crossvis ({weights or 'synthetic-tiny'})"
        flag = f"--weights {weights or 'synthetic-tiny'}"
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    x, _ = model.preprocess([img])
    with torch.inference_mode():
        full = _time(lambda: model.inference([img]), iters, dev)
        trunk = _time(lambda: model.fpn(model.backbone(x)), iters, dev)
    return [
        f"command: crossvis benchmark {flag} --size {size} --iters {iters}",
        f"model: {name}; input {h}x{w} (padded {tuple(x.shape[-2:])}); device: {device_name(dev)}; "
        f"torch {torch.__version__}",
        f"full inference (backbone, FPN, head, masks, post-processing): {1000 * full:.1f} ms/frame "
        f"({1 / full:.2f} FPS)",
        f"backbone + FPN alone: {1000 * trunk:.1f} ms/frame ({100 * trunk / full:.0f}% of the total)",
    ]
