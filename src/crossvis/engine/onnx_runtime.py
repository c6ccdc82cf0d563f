"""Run an exported ``.onnx`` CrossVIS (see :mod:`crossvis.engine.onnx_export`) with ONNX Runtime.

:class:`OnnxModel` has the model's inference interface, ``inference(images, output_sizes, mask_threshold)``
-> list of :class:`~crossvis.modeling.crossvis.Detections`, so :class:`~crossvis.engine.predictor.VideoPredictor`
(and with it ``crossvis infer`` / ``predict --weights model.onnx``) runs it with the project's own
normalisation, candidate selection, NMS, mask pasting and tracker. Both graphs (network, dynamic mask head)
run in ONNX Runtime; the post-processing is the PyTorch model's own code, reached through a weightless copy of
the model (no backbone, FPN or head) for pre-processing, and the model's post-processing with a mask head that
calls the second ONNX graph.
"""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crossvis.config import Config
from crossvis.engine.onnx_export import NETWORK_OUTPUTS
from crossvis.errors import CrossVISError
from crossvis.modeling.criterion import FrameOutputs
from crossvis.modeling.postprocess import PostProcessor, image_sizes
from crossvis.modeling.targets import level_locations
from crossvis.modeling.weights import LoadedWeights, inference_config, stored_config


def _session(model: bytes | str, threads: int):
    try:
        import onnxruntime as ort
    except ImportError:
        raise CrossVISError("onnx", "ONNX Runtime is not installed: pip install 'crossvis[onnx]'") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


class _OrtMaskHead(nn.Module):
    """Stands in for the model's DynamicMaskHead: runs the exported mask-head graph (one image per call)."""

    def __init__(self, session, num_params: int) -> None:
        super().__init__()
        self.session, self.num_params = session, num_params

    def forward(self, mask_feats, mask_feat_stride, *, params, locations, levels, im_inds) -> torch.Tensor:
        """The DynamicMaskHead call: mask_feats (B, C, H, W) ... -> (N, H*s, W*s) logits."""
        outs = []
        for b in torch.unique(im_inds).tolist():
            sel = im_inds == b
            feeds = {
                "mask_feats": mask_feats[b : b + 1].float().contiguous().numpy(),
                "params": params[sel].float().contiguous().numpy(),
                "locations": locations[sel].float().contiguous().numpy(),
                "levels": levels[sel].long().contiguous().numpy(),
            }
            outs.append((sel, torch.from_numpy(self.session.run(None, feeds)[0])))
        n = params.shape[0]
        H, W = outs[0][1].shape[-2:]
        logits = params.new_zeros((n, H, W), dtype=torch.float32)
        for sel, out in outs:
            logits[sel] = out
        return logits


class OnnxModel:
    """An exported CrossVIS run by ONNX Runtime on the CPU, with the model's inference interface.

    Args:
        path: the ``.onnx`` file; config: replaces the config stored in it; overrides: ``key.sub=value``
        (post-processing keys such as ``model.fcos.inference_th_test`` take effect; architecture keys must
        match the exported graph); threads: ONNX Runtime intra-op threads (default: torch's).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        config: Config | None = None,
        overrides: list[str] | None = None,
        threads: int | None = None,
    ) -> None:
        from crossvis.modeling.builders import build_model

        path = Path(path)
        if not path.is_file():
            raise CrossVISError(str(path), "ONNX file not found")
        threads = threads or torch.get_num_threads()
        try:
            self.session = _session(str(path), threads)
        except CrossVISError:
            raise
        except Exception as e:
            raise CrossVISError(str(path), f"not a loadable ONNX model ({type(e).__name__})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "crossvis_config" not in meta or "crossvis_mask_head_onnx" not in meta:
            raise CrossVISError(
                str(path), "not written by `crossvis export --format onnx` (no crossvis metadata)"
            )
        cfg = inference_config(
            stored_config(meta["crossvis_config"], f"{path} (metadata)"), config, overrides
        )
        self.config = cfg
        self.precision = meta.get("precision", "fp32")  # "int8": quantised (crossvis.engine.onnx_quantize)
        self.class_names = json.loads(meta.get("class_names", "[]"))
        self.category_ids = json.loads(meta.get("category_ids", "[]")) or list(
            range(1, len(self.class_names) + 1)
        )
        # the model's own pre- and post-processing on a weightless copy (heavy parts dropped)
        shell = build_model(cfg, num_identities=0).eval()
        shell.backbone, shell.fpn, shell.head, shell.controller = (nn.Identity() for _ in range(4))
        mask_session = _session(base64.b64decode(meta["crossvis_mask_head_onnx"]), threads)
        self.postprocess = PostProcessor(
            fcos=cfg.model.fcos,
            strides=shell.strides,
            mask_head=_OrtMaskHead(mask_session, shell.mask_head.num_params),
            mask_stride=shell.mask_branch.out_stride,
        )
        self.shell = shell
        self.num_classes = shell.num_classes
        self.device = torch.device("cpu")
        self.strides = list(shell.strides)

    def run(self, x: torch.Tensor) -> FrameOutputs:
        """The model's :meth:`~crossvis.modeling.crossvis.CrossVIS.run` contract: normalised (B, 3, H, W) ->
        :class:`FrameOutputs` (flattened head outputs, mask features, locations and their levels)."""
        per_image = [
            self.session.run(None, {"image": x[i : i + 1].float().contiguous().numpy()})
            for i in range(x.shape[0])
        ]
        outs = {
            k: torch.from_numpy(np.concatenate([o[j] for o in per_image]))
            for j, k in enumerate(NETWORK_OUTPUTS)
        }
        mask_feats = outs.pop("mask_feats")
        H, W = x.shape[-2:]
        sizes, h, w = [], H, W
        for lvl, s in enumerate(self.strides):  # P3-P5 from the backbone strides, P6-P7 by stride-2 convs
            h, w = (H // s, W // s) if lvl < 3 else (math.ceil(h / 2), math.ceil(w / 2))
            sizes.append((h, w))
        locations, levels = level_locations(sizes, self.strides, x.device)
        return FrameOutputs(
            flat=outs,
            mask_feats=mask_feats,
            locations=locations,
            levels=levels,
            padded_size=(int(H), int(W)),
        )

    def preprocess(self, images: list[torch.Tensor]):
        return self.shell.preprocess(images)

    @torch.no_grad()
    def inference(self, images, output_sizes=None, mask_threshold: float = 0.5):
        """Same as :meth:`CrossVIS.inference <crossvis.modeling.crossvis.CrossVIS.inference>`."""
        x, sizes = self.shell.preprocess(images)
        return self.postprocess(self.run(x), image_sizes(x, sizes, output_sizes), mask_threshold)


def load_onnx_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    config: Config | None = None,
    overrides: list[str] | None = None,
) -> tuple[OnnxModel, LoadedWeights]:
    """(OnnxModel, LoadedWeights without tensors) of an exported file, as ``load_model`` returns."""
    if torch.device(device).type != "cpu":
        raise CrossVISError("--device", "ONNX models run on the CPU (ONNX Runtime's CPU provider)")
    m = OnnxModel(path, config=config, overrides=overrides)
    return m, LoadedWeights({}, m.config, m.class_names, m.category_ids, {"onnx": str(path)})
