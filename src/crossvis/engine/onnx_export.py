"""``crossvis export WEIGHTS --format onnx``: the per-frame CrossVIS network as ONNX, for ONNX Runtime.

One ``.onnx`` file holds two graphs:

- the **network** (the file's main graph): ``image`` (1, 3, H, W) float32, normalised and padded to a multiple
  of 32 (H and W are dynamic) -> ``logits`` (1, L, C), ``bbox_reg`` (1, L, 4), ``ctrness`` (1, L, 1),
  ``params`` (1, L, K), ``embedding`` (1, L, D) over the L locations of P3-P7 (row-major per level, levels
  concatenated) and ``mask_feats`` (1, 8, H/8, W/8);
- the **dynamic mask head** (a second small graph, serialised base64 in the metadata entry
  ``crossvis_mask_head_onnx``): ``mask_feats``, ``params`` (N, K), ``locations`` (N, 2) x, y in input pixels,
  ``levels`` (N,) int64 -> ``mask_logits`` (N, H/4, W/4). It runs after NMS, in between the project's own
  post-processing, so it cannot live in the network graph.

The metadata (``metadata_props``) also carries ``crossvis_config`` (the YAML config), ``class_names`` and
``category_ids`` (JSON), as crossvis ``.safetensors`` files do. Normalisation, padding, candidate selection,
NMS, mask pasting and tracking stay in Python (:mod:`crossvis.engine.onnx_runtime`).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from crossvis.config import dump_config
from crossvis.errors import CrossVISError
from crossvis.io import atomic_path
from crossvis.modeling.crossvis import CrossVIS
from crossvis.modeling.mask_branch import DynamicMaskHead, aligned_bilinear

OPSET = 18
FORMAT = "crossvis-onnx-1"
NETWORK_OUTPUTS = ("logits", "bbox_reg", "ctrness", "params", "embedding", "mask_feats")


class FrameNetwork(nn.Module):
    """The per-frame network of a :class:`CrossVIS` (eval mode): normalised padded image -> head outputs
    flattened over locations, and the mask features (see the module docstring for shapes)."""

    def __init__(self, model: CrossVIS) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        flat, mask_feats, _ = self.model.network(image)
        return (*(flat[k] for k in NETWORK_OUTPUTS[:-1]), mask_feats)


class MaskHeadGraph(nn.Module):
    """The dynamic mask head written with batched matrix products (ONNX has no convolution whose group
    count is an input): the same logits as :class:`DynamicMaskHead` to float tolerance, for one image."""

    def __init__(self, head: DynamicMaskHead, mask_feat_stride: int) -> None:
        super().__init__()
        self.head, self.stride = head, mask_feat_stride

    def forward(
        self, mask_feats: torch.Tensor, params: torch.Tensor, locations: torch.Tensor, levels: torch.Tensor
    ) -> torch.Tensor:
        """mask_feats (1, C, H, W); params (N, K); locations (N, 2); levels (N,) -> (N, H*s, W*s) logits."""
        h, s = self.head, self.stride
        n = params.shape[0]
        _, C, H, W = mask_feats.shape
        feats = mask_feats.expand(n, C, H, W)
        if h.rel_coords:
            xs = torch.arange(W, device=params.device, dtype=torch.float32) * s + s // 2
            ys = torch.arange(H, device=params.device, dtype=torch.float32) * s + s // 2
            gx = xs.reshape(1, 1, W).expand(1, H, W)
            gy = ys.reshape(1, H, 1).expand(1, H, W)
            soi = h.sizes_of_interest[levels].reshape(n, 1, 1)
            rx = (locations[:, 0].reshape(n, 1, 1) - gx) / soi
            ry = (locations[:, 1].reshape(n, 1, 1) - gy) / soi
            feats = torch.cat([rx[:, None], ry[:, None], feats], dim=1)
        x = feats.reshape(n, feats.shape[1], H * W)
        chunks = torch.split(params, h.num_weights + h.num_biases, dim=1)
        L = h.num_layers
        for i, (o, k) in enumerate(h.weight_shapes):
            w = chunks[i].reshape(n, o, k)
            b = chunks[L + i].reshape(n, o, 1)
            x = torch.bmm(w, x) + b
            if i < L - 1:
                x = F.relu(x)
        logits = aligned_bilinear(x.reshape(n, 1, H, W), s // h.mask_out_stride)
        return logits[:, 0]


@contextlib.contextmanager
def quiet_onnx_tools() -> Iterator[None]:
    """The exporter's and quantiser's progress prints and notes (stdout, their loggers) off the CLI's output."""
    loggers = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "onnxruntime")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def write_metadata(path: str | os.PathLike, meta: dict[str, str]) -> None:
    """Set the ``metadata_props`` of the ``.onnx`` file at ``path`` to ``meta`` (rewrites the file)."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _export(module: nn.Module, args: tuple, path: Path, *, inputs, outputs, dynamic_shapes) -> None:
    """torch.onnx.export with the dynamo exporter (torch 2.9+ default; the TorchScript one is deprecated)."""
    with quiet_onnx_tools():
        prog = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    prog.save(str(path))


def export_onnx(
    weights: str | os.PathLike,
    output: str | os.PathLike,
    *,
    example_size: int = 256,
    int8_calibration: str | os.PathLike | None = None,
    calibration_frames: int = 32,
) -> Path:
    """Export a crossvis weights file (or shipped name) to one ``.onnx`` file (see the module docstring).

    ``int8_calibration``: a video or frame folder; the network is then quantised to int8 with activation
    ranges from ``calibration_frames`` of its frames (:mod:`crossvis.engine.onnx_quantize`)."""
    output = Path(output)
    if output.suffix != ".onnx":
        raise CrossVISError(str(output), "the ONNX output file must end in .onnx")
    if int8_calibration is not None:
        from crossvis.engine.onnx_quantize import check_calibration, quantize_int8

        check_calibration(int8_calibration, calibration_frames)  # before the export's minute of work
        with tempfile.TemporaryDirectory(prefix="crossvis-onnx-") as tmp:
            fp32 = export_onnx(weights, Path(tmp) / "fp32.onnx", example_size=example_size)
            return quantize_int8(fp32, output, int8_calibration, frames=calibration_frames)
    from crossvis.modeling.weights import load_model

    model, w = load_model(weights, "cpu")
    net = FrameNetwork(model).eval()
    hd = torch.export.Dim("h32", min=1, max=128)
    wd = torch.export.Dim("w32", min=1, max=128)
    image = torch.randn(1, 3, example_size, example_size + 64)
    nd = torch.export.Dim("n", min=1, max=100_000)
    with torch.no_grad():
        mask_feats = net(image)[-1]
        k = model.mask_head.num_params
        mh_args = (mask_feats, torch.randn(3, k), torch.rand(3, 2) * 100, torch.tensor([0, 1, 2]))
    tmp_dir = output.parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    mask_path = tmp_dir / f".{output.name}.mask_head.tmp"
    try:
        with torch.no_grad():
            mh = MaskHeadGraph(model.mask_head, model.mask_branch.out_stride).eval()
            mh_dyn = {
                "mask_feats": {2: torch.export.Dim("mh"), 3: torch.export.Dim("mw")},
                "params": {0: nd},
                "locations": {0: nd},
                "levels": {0: nd},
            }
            _export(mh, mh_args, mask_path, inputs=mh_dyn, outputs=["mask_logits"], dynamic_shapes=mh_dyn)
            mask_bytes = mask_path.read_bytes()
            with atomic_path(output) as tmp:
                _export(
                    net,
                    (image,),
                    Path(tmp),
                    inputs=["image"],
                    outputs=NETWORK_OUTPUTS,
                    dynamic_shapes={"image": {2: 32 * hd, 3: 32 * wd}},
                )
                write_metadata(
                    tmp,
                    {
                        "format": FORMAT,
                        "crossvis_config": dump_config(w.config),
                        "class_names": json.dumps(list(w.class_names)),
                        "category_ids": json.dumps(list(w.category_ids)),
                        "crossvis_mask_head_onnx": base64.b64encode(mask_bytes).decode("ascii"),
                    },
                )
    finally:
        mask_path.unlink(missing_ok=True)
    return output
