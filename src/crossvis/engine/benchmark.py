"""``crossvis benchmark``: CrossVIS speed side by side with torchvision peers, in one process.

Every timed model runs once per round, rounds interleaved (so a busy machine slows all of them alike), and
the median of the rounds is reported. ``--compare`` adds torchvision Mask R-CNN R50-FPN and FCOS R50-FPN
(random weights, score threshold 0 and the same detections-per-image cap). ``--stages`` adds a per-stage
breakdown of one CrossVIS frame (decode .. encode, via forward hooks), FLOPs (``FlopCounterMode``) and their
rate against a matmul roofline measured in the same run, and peak memory.
"""

from __future__ import annotations

import io
import json
import platform
import resource
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch

from crossvis.engine.precision import check_precision, network_autocast
from crossvis.engine.predictor import resolve_device
from crossvis.errors import CrossVISError
from crossvis.io import atomic_write

BUILDERS = ("resnet50", "resnet101", "dla34")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _parse_size(size: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise CrossVISError("--size", f"expected HxW like 360x640, got {size!r}") from None
    if not (32 <= h <= 4096 and 32 <= w <= 4096):
        raise CrossVISError("--size", f"height and width must be 32..4096, got {size}")
    return h, w


def interleaved(fns: dict[str, Callable[[], object]], iters: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each function, one call of each per round (after one warm-up round)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(iters + 1):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if r:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def matmul_roofline(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048) -> float:
    """Measured FLOP/s of an n x n matmul (best of 3), the practical peak the models are compared against."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(4):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def count_flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------------------------- models
def _crossvis(weights: str | None, backbone: str, device: torch.device, detections: int):
    """(model, label): a builder with random weights, or weights; score threshold off, top-``detections``."""
    from crossvis.modeling import builders
    from crossvis.modeling.weights import load_model

    changes = ["model.fcos.inference_th_test=0.0", f"model.fcos.post_nms_topk_test={detections}"]
    if backbone:
        build = {
            "resnet50": builders.crossvis_r50,
            "resnet101": builders.crossvis_r101,
            "dla34": builders.crossvis_lite_dla34,
        }.get(backbone)
        if build is None:
            raise CrossVISError("--backbone", f"one of {', '.join(BUILDERS)}, got {backbone!r}")
        torch.manual_seed(0)
        model = build(num_identities=0, fcos__inference_th_test=0.0, fcos__post_nms_topk_test=detections)
        return model.to(device).eval(), f"crossvis {backbone} (random weights)"
    model, _ = load_model(weights or "synthetic-tiny", device, overrides=changes)
    return model, f"crossvis ({weights or 'synthetic-tiny'})"


def _torchvision(kind: str, device: torch.device, detections: int, size: tuple[int, int]):
    import torchvision.models.detection as tvd

    torch.manual_seed(0)
    common = {"weights": None, "weights_backbone": None, "min_size": min(size), "max_size": max(size)}
    if kind == "maskrcnn":
        m = tvd.maskrcnn_resnet50_fpn(box_score_thresh=0.0, box_detections_per_img=detections, **common)
    else:
        m = tvd.fcos_resnet50_fpn(score_thresh=0.0, detections_per_img=detections, **common)
    return m.to(device).eval()


def _n_dets(out) -> int:
    if isinstance(out, list) and out and isinstance(out[0], dict):
        return int(out[0]["scores"].numel())
    return len(out[0])


# ----------------------------------------------------------------------------------------------- stages
@contextmanager
def _module_timers(model, device: torch.device, sink: dict[str, float]):
    """Accumulate the seconds spent in the model's parts (forward hooks) into ``sink``."""
    parts = {
        "backbone": model.backbone,
        "fpn": model.fpn,
        "towers": model.head,
        "controller": model.controller,
        "mask_branch": model.mask_branch,
        "mask_head": model.mask_head,
    }
    handles, start = [], {}
    for name, mod in parts.items():

        def pre(_m, _a, name=name):
            _sync(device)
            start[name] = time.perf_counter()

        def post(_m, _a, _o, name=name):
            _sync(device)
            sink[name] = sink.get(name, 0.0) + time.perf_counter() - start[name]

        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def stage_breakdown(model, frame: np.ndarray, device: torch.device, precision: str, iters: int) -> dict:
    """Median ms of each stage of one tracked frame: decode (JPEG of the frame), preprocess, the network's
    parts, post-process (candidates, NMS, box scaling), masks (dynamic mask head + pasting), tracking,
    encode (RLE of every mask)."""
    from PIL import Image

    from crossvis.data.masks import encode_mask
    from crossvis.modeling.paste import paste_masks
    from crossvis.tracking import OnlineTracker

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()
    runs: dict[str, list[float]] = {}
    tracker = OnlineTracker()
    for i in range(iters + 1):
        t: dict[str, float] = {}
        t0 = time.perf_counter()
        img = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
        t["decode"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        x = torch.from_numpy(img.copy()).permute(2, 0, 1)
        model.preprocess([x])
        t["preprocess"] = time.perf_counter() - t0
        parts: dict[str, float] = {}
        captured = {}
        hook = model.mask_head.register_forward_hook(
            lambda _m, _a, o, captured=captured: captured.setdefault("logits", o)
        )
        with _module_timers(model, device, parts), network_autocast(model, device, precision):
            _sync(device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                det = model.inference([x], [img.shape[:2]])[0]
            _sync(device)
            total = time.perf_counter() - t0
        hook.remove()
        paste = 0.0
        if "logits" in captured:
            probs = captured["logits"].float().sigmoid()
            padded = model.preprocess([x])[0].shape[-2:]
            _sync(device)
            t0 = time.perf_counter()
            paste_masks(
                probs, factor=padded[0] // probs.shape[-2], size=img.shape[:2], out_size=img.shape[:2]
            )
            _sync(device)
            paste = time.perf_counter() - t0
        t |= {k: parts.get(k, 0.0) for k in ("backbone", "fpn", "towers", "controller", "mask_branch")}
        t["masks"] = parts.get("mask_head", 0.0) + paste
        # the remainder of inference: normalisation, flattening, candidates, NMS, scaling (and the pasting,
        # which is counted under masks)
        t["post_process"] = max(0.0, total - sum(parts.values()) - paste)
        det = det.to("cpu")
        t0 = time.perf_counter()
        tracker.update(i, det.boxes.float(), det.scores.float(), det.classes, det.embeddings.float())
        t["tracking"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for m in det.masks.numpy():
            encode_mask(m)
        t["encode"] = time.perf_counter() - t0
        if i:
            for k, v in t.items():
                runs.setdefault(k, []).append(v)
    return {k: 1000 * statistics.median(v) for k, v in runs.items()}


# ----------------------------------------------------------------------------------------------- driver
def run_benchmark(
    weights: str | None = None,
    *,
    size: str = "360x640",
    backbone: str = "",
    iters: int = 10,
    device: str | None = None,
    precision: str = "fp32",
    compare: bool = False,
    detections: int = 100,
    stages: bool = False,
    onnx: str | list[str] | None = None,
    compile_: bool = False,
    json_path: str | None = None,
) -> list[str]:
    """Time CrossVIS (and peers) on one random frame; returns the report lines (and writes ``json_path``).

    ``backbone`` may name several builders, comma-separated (``resnet50,dla34``): all are timed together.
    ``onnx``: exported ``.onnx`` files of the same weights (fp32 or int8), timed with ONNX Runtime.
    """
    onnx = [onnx] if isinstance(onnx, str) else list(onnx or [])
    dev = resolve_device(device)
    check_precision(precision)
    h, w = _parse_size(size)
    if iters < 1 or detections < 1:
        raise CrossVISError("--iters/--detections", "must be at least 1")
    names = [b.strip() for b in backbone.split(",") if b.strip()] or [""]
    models = {}
    for b in names:
        model, label = _crossvis(weights, b, dev, detections)
        models[label] = model.to(memory_format=torch.channels_last)
    main_label, main = next(iter(models.items()))
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x, _ = main.preprocess([img])
    run_of = partial(_crossvis_run, img=img, device=dev)
    fns: dict[str, Callable[[], object]] = {label: run_of(m, precision) for label, m in models.items()}
    lines = [
        _command_line(weights, backbone, size, iters, detections, precision, compare, stages, onnx, compile_),
        f"input {h}x{w} (padded {tuple(x.shape[-2:])}); device: {device_name(dev)}; torch {torch.__version__}; "
        f"crossvis in channels_last with the fused head, {precision}; peers in fp32",
    ]
    rebuild = partial(_crossvis, weights, names[0], dev, detections)
    compile_s = _reference_runs(
        fns,
        main_label,
        main,
        rebuild,
        run_of,
        precision=precision,
        onnx=onnx,
        detections=detections,
        compile_=compile_,
        img=img,
    )
    if compile_s is not None:
        lines.append(f"torch.compile: first call (compilation) {compile_s:.1f} s")
    peers = _peer_runs(fns, dev, detections, img) if compare else {}
    ndet = {k: _n_dets(fn()) for k, fn in fns.items()}
    times = interleaved(fns, iters, dev)
    lines += _time_lines(times, ndet, base=times.get(peers.get("maskrcnn", "")), iters=iters)
    result = {
        "crossvis_ms": 1000 * times[main_label],
        "maskrcnn_ms": 1000 * times[peers["maskrcnn"]] if compare else None,
        "fcos_ms": 1000 * times[peers["fcos"]] if compare else None,
        "detections": ndet,
        "precision": precision,
        "device": device_name(dev),
        "size": [h, w],
        "iters": iters,
        "models_ms": {k: 1000 * v for k, v in times.items()},
        "compile_s": compile_s,
        "stages": None,
    }
    if stages:
        lines += _stage_lines(main, img, dev, precision, iters, result, fns, peers)
    if json_path:
        with atomic_write(json_path) as f:
            json.dump(result, f, indent=1)
        lines.append(f"wrote {json_path}")
    return lines


def _time_lines(times: dict, ndet: dict, *, base: float | None, iters: int) -> list[str]:
    """The timing table: ms per frame and detections of each run (and its ratio to Mask R-CNN)."""
    lines = [f"median of {iters} interleaved rounds (ms per frame, detections):"]
    for k, t in times.items():
        ratio = f"  {t / base:.2f}x Mask R-CNN" if base else ""
        lines.append(f"  {k}: {1000 * t:.1f} ms, {ndet[k]} detections{ratio}")
    return lines


def _crossvis_run(model, precision: str, *, img: torch.Tensor, device: torch.device) -> Callable[[], object]:
    """One timed call: ``model``'s inference on ``img`` in ``precision``."""

    def run():
        with network_autocast(model, device, precision), torch.inference_mode():
            return model.inference([img])

    return run


def _command_line(
    weights, backbone, size, iters, detections, precision, compare, stages, onnx, compile_
) -> str:
    return "command: crossvis benchmark " + " ".join(
        [
            f"--backbone {backbone}" if backbone else f"--weights {weights or 'synthetic-tiny'}",
            f"--size {size} --iters {iters} --detections {detections} --precision {precision}",
            *(["--compare"] if compare else []),
            *(["--stages"] if stages else []),
            *([f"--onnx {' '.join(onnx)}"] if onnx else []),
            *(["--compile"] if compile_ else []),
        ]
    )


def _reference_runs(
    fns: dict, main_label: str, main, rebuild, run_of, *, precision, onnx, detections, compile_, img
) -> float | None:
    """Add the comparison rows of the main model to ``fns``: the reference path (fp32: NCHW, per-tower head)
    or the model in fp32 (reduced precision), ONNX Runtime, torch.compile. Returns the compile seconds."""
    if precision == "fp32":
        ref = rebuild()[0]
        ref.head._forward_fused = ref.head._forward_levels  # type: ignore[method-assign]
        fns[f"{main_label} [reference: NCHW, unfused head]"] = run_of(ref, "fp32")
    else:  # the same model in fp32, for the speed-up of the reduced precision
        fns[f"{main_label} [fp32]"] = run_of(main, "fp32")
    if onnx:
        from crossvis.engine.onnx_runtime import OnnxModel

        changes = ["model.fcos.inference_th_test=0.0", f"model.fcos.post_nms_topk_test={detections}"]
        for path in onnx:
            om = OnnxModel(path, overrides=changes)
            kind = "ONNX Runtime int8" if om.precision == "int8" else "ONNX Runtime"
            fns[f"{main_label} [{kind}]"] = lambda om=om: om.inference([img])
    if not compile_:
        return None
    cm = rebuild()[0].to(memory_format=torch.channels_last)
    cm.network = torch.compile(cm.network, dynamic=False)  # type: ignore[method-assign]
    t0 = time.perf_counter()
    run_of(cm, precision)()
    fns[f"{main_label} [torch.compile]"] = run_of(cm, precision)
    return time.perf_counter() - t0


def _peer_runs(fns: dict, dev: torch.device, detections: int, img: torch.Tensor) -> dict[str, str]:
    """Add torchvision Mask R-CNN and FCOS R50-FPN (random weights, same size and detection cap) to ``fns``."""
    peers = {}
    for kind, label in (("maskrcnn", "torchvision Mask R-CNN R50-FPN"), ("fcos", "torchvision FCOS R50-FPN")):
        peers[kind] = label
        m = _torchvision(kind, dev, detections, tuple(img.shape[-2:]))
        xin = (img.float() / 255).to(dev)

        def run(m=m, xin=xin):
            with torch.inference_mode():
                return m([xin])

        fns[label] = run
    return peers


def _stage_lines(main, img, dev, precision, iters, result, fns, peers) -> list[str]:
    frame = img.permute(1, 2, 0).numpy().copy()
    st = stage_breakdown(main, frame, dev, precision, max(3, iters // 2))
    result["stages"] = st
    total = sum(st.values())
    lines = [f"stages of one tracked frame (median ms; sum {total:.1f}):"]
    lines += [f"  {k}: {v:.1f} ({100 * v / total:.1f}%)" for k, v in st.items()]
    small = st["tracking"] + st["encode"] + st["post_process"]
    lines.append(
        f"  tracking + RLE + post-processing: {small:.1f} ms = {100 * small / total:.1f}% of the frame"
    )
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    peak = matmul_roofline(dev, dtype)
    result["roofline_gflops"] = peak / 1e9
    lines.append(f"matmul roofline (2048^2, {precision}): {peak / 1e9:.0f} GFLOP/s")
    result["flops"] = {}
    for label, fn in fns.items():
        if "ONNX" in label or "compile" in label:
            continue
        flops = count_flops(fn)
        ms = result["models_ms"][label]
        rate = flops / (ms / 1000)
        result["flops"][label] = {
            "gflop": flops / 1e9,
            "gflops_per_s": rate / 1e9,
            "of_roofline": rate / peak,
        }
        lines.append(
            f"  {label}: {flops / 1e9:.1f} GFLOP, {rate / 1e9:.0f} GFLOP/s = {100 * rate / peak:.0f}% of the roofline"
        )
    if dev.type == "cuda":
        result["peak_memory_mb"] = {}
        for label, fn in fns.items():
            torch.cuda.reset_peak_memory_stats(dev)
            fn()
            result["peak_memory_mb"][label] = torch.cuda.max_memory_allocated(dev) / 2**20
            lines.append(f"  peak CUDA memory, {label}: {result['peak_memory_mb'][label]:.0f} MiB")
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["peak_memory_mb"] = rss
        lines.append(f"peak resident memory of the process (all models loaded): {rss:.0f} MiB")
    return lines
