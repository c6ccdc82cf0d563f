"""Post-training int8 quantisation of an exported CrossVIS network for ONNX Runtime on the CPU.

``crossvis export WEIGHTS --format onnx --int8 --calibration VIDEO_OR_FOLDER --output model_int8.onnx``

The network graph (backbone, FPN, head towers, mask branch) is quantised statically with ONNX Runtime's own
quantiser (``onnxruntime.quantization``: QDQ format, int8 weights per output channel, uint8 activations
with ranges from calibration frames); ONNX Runtime then runs those convolutions with int8 kernels (VNNI
where the CPU has it). What stays float32, on purpose:

- the prediction convolutions (class logits, box regression, centerness, identity embedding, controller):
  2% of the FLOPs, and the scores and the 169 dynamic filter weights are what NMS and the masks depend on
  (reduced precision there cost AP in the bf16 study of ``reports/performance.md``);
- the dynamic mask head graph (it runs on a few instances after NMS);
- normalisation layers (GroupNorm / BatchNorm run as float ops between the quantised convolutions).

Activation ranges are the 99.999th percentile of each activation's histogram over the calibration frames.

The result is an approximation of the fp32 network, not equal to it: measure its AP on your data
(``benchmarks/precision_ap.py``) before you deploy it. The file keeps the crossvis metadata (config, class
names, mask head graph), adds ``precision: int8`` and the calibration source, and runs everywhere an
exported ``.onnx`` does (``predict --weights``, ``infer``, ``benchmark --onnx``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from crossvis.errors import CrossVISError
from crossvis.io import atomic_path

# weights of the head's prediction layers: their convolutions stay float32 (see the module docstring)
FLOAT_LAYERS = ("cls_logits", "bbox_pred", "ctrness", "identity_pred", "identity_bn", "controller")


def float_convs(model) -> list[str]:
    """Names of the Conv nodes of an ONNX ``model`` whose weight derives from a :data:`FLOAT_LAYERS`
    parameter (directly, or through the exporter's concatenations and BN folding)."""
    producer = {out: n for n in model.graph.node for out in n.output}

    def sources(name: str, seen: set[str]) -> set[str]:
        if name in seen:
            return set()
        seen.add(name)
        node = producer.get(name)
        if node is None:  # an initializer or a graph input
            return {name}
        found: set[str] = set()
        for i in node.input:
            if i:
                found |= sources(i, seen)
        return found

    keep = []
    for n in model.graph.node:
        if n.op_type == "Conv" and any(
            f".{k}." in s for s in sources(n.input[1], set()) for k in FLOAT_LAYERS
        ):
            keep.append(n.name)
    return keep


def calibration_sources(source: str | os.PathLike) -> list:
    """The opened frame sources of ``source`` (see :func:`calibration_inputs`); checked before any export
    work starts, so a wrong path fails at once."""
    from crossvis.engine.video_io import expand_sources, open_source

    sources = [open_source(p) for p in (expand_sources(str(source)) or [source])]
    for src in sources:
        if src.live:
            raise CrossVISError(
                str(source), "calibration needs video files or folders of frames, not a stream"
            )
    return sources


def check_calibration(source: str | os.PathLike, frames: int) -> None:
    """Refuse a calibration setting that cannot work (CrossVISError), before any export or quantisation."""
    if frames < 1:
        raise CrossVISError("--calibration-frames", f"must be at least 1, got {frames}")
    calibration_sources(source)


def calibration_inputs(onnx_model, source: str | os.PathLike, frames: int) -> list[np.ndarray]:
    """Up to ``frames`` frames spread over ``source`` (a video, a folder of frames, or many of them as
    ``predict`` takes them: a folder of videos, a glob, a list file), resized and normalised as inference
    does: a list of (1, 3, H, W) float32 arrays."""
    from crossvis.engine.predictor import network_input

    sources = calibration_sources(source)
    per_source = -(-frames // len(sources))
    cfg = onnx_model.config.input
    out = []
    for src in sources:
        step = max(1, (src.count or per_source) // per_source)
        taken = 0
        for i, frame in enumerate(src):
            if i % step:
                continue
            x, _ = onnx_model.preprocess([network_input(frame, cfg.min_size_test, cfg.max_size_test)])
            out.append(x.numpy())
            taken += 1
            if taken == per_source or len(out) == frames:
                break
        if len(out) == frames:
            break
    if not out:
        raise CrossVISError(str(source), "no frames to calibrate with")
    return out


def quantize_int8(
    onnx_path: str | os.PathLike,
    output: str | os.PathLike,
    calibration: str | os.PathLike,
    *,
    frames: int = 32,
) -> Path:
    """Quantise an exported crossvis ``.onnx`` (see :mod:`crossvis.engine.onnx_export`) to int8.

    Args:
        onnx_path: the float32 file; output: the int8 ``.onnx`` to write (atomically);
        calibration: a video or a folder of frames like the ones the model will see (activation ranges
        are measured on it); frames: how many frames, spread over the source.
    """
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise CrossVISError("onnx", "int8 needs ONNX Runtime: pip install 'crossvis[onnx]'") from None
    from crossvis.engine.onnx_export import quiet_onnx_tools, write_metadata
    from crossvis.engine.onnx_runtime import OnnxModel

    check_calibration(calibration, frames)
    output = Path(output)
    if output.suffix != ".onnx":
        raise CrossVISError(str(output), "the ONNX output file must end in .onnx")
    fp32 = OnnxModel(onnx_path)
    inputs = calibration_inputs(fp32, calibration, frames)
    source = onnx.load(str(onnx_path))
    exclude = float_convs(source)

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.items: Iterator[np.ndarray] = iter(inputs)

        def get_next(self) -> dict | None:
            x = next(self.items, None)
            return None if x is None else {"image": x}

    with (
        tempfile.TemporaryDirectory(prefix="crossvis-int8-") as tmp,
        atomic_path(output) as dst,
        quiet_onnx_tools(),
    ):
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        names = {n.name for n in onnx.load(str(pre), load_external_data=False).graph.node}
        if not exclude or not set(exclude) <= names:  # never quantise the prediction layers by accident
            raise CrossVISError(str(onnx_path), "cannot find the head's prediction layers in the graph")
        quantize_static(
            str(pre),
            str(dst),
            Frames(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=exclude,
            # ranges from the 99.999th percentile of each activation's histogram, not its min/max: on the
            # 60-video synthetic split min/max cost 2.2 AP, the percentile +0.3 (reports/performance.md)
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"CalibPercentile": 99.999},
        )
        meta = {p.key: p.value for p in source.metadata_props}
        meta.update(precision="int8", calibration=f"{calibration} ({len(inputs)} frames)")
        write_metadata(dst, meta)
    return output
