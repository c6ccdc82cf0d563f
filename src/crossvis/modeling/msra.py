"""MSRA ImageNet ResNets (detectron2's ``R-50.pkl`` / ``R-101.pkl``): Caffe2 names -> the backbone's keys.

The files are Python 2 pickles of a dict ``name -> numpy array`` in the Detectron (Caffe2) name scheme::

    conv1_w                          -> conv1.weight                   (64, 3, 7, 7)
    res_conv1_bn_s / _b              -> bn1.weight / bn1.bias          (64,)
    res{S}_{B}_branch2{a,b,c}_w      -> layer{S-1}.{B}.conv{1,2,3}.weight
    res{S}_{B}_branch2{a,b,c}_bn_s/_b-> layer{S-1}.{B}.bn{1,2,3}.weight / .bias
    res{S}_0_branch1_w               -> layer{S-1}.0.downsample.0.weight   (projection shortcut)
    res{S}_0_branch1_bn_s/_b         -> layer{S-1}.0.downsample.1.weight / .bias
    fc1000_w / fc1000_b              -> not used (ImageNet classifier)
    *_momentum                       -> not used (solver state)

Batch norm is frozen and folded: only scale ``_s`` and bias ``_b`` are stored; the running mean is 0 and the
running variance 1 (as detectron2 fills them). ``_bn_rm`` / ``_bn_riv`` (running mean / variance), present in
some Detectron files, are used when there. Keys are timm's ResNet names, which :class:`Backbone` uses.

The weights expect **BGR 0-255 input with the MSRA mean [103.530, 116.280, 123.675] and std 1**, and the
stride of each stage's first block on its 1x1 conv (``stride_in_1x1``): :data:`MSRA_INPUT`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from crossvis.errors import CrossVISError
from crossvis.modeling.safe_pickle import load_pickle

MSRA_INPUT = {
    "input_format": "BGR",
    "pixel_mean": [103.530, 116.280, 123.675],
    "pixel_std": [1.0, 1.0, 1.0],
    "stride_in_1x1": True,
}

_BLOCK = re.compile(r"res(\d)_(\d+)_branch(2[abc]|1)_(w|bn_s|bn_b|bn_rm|bn_riv)$")
_STEM = {"conv1_w": "conv1.weight", "res_conv1_bn_s": "bn1.weight", "res_conv1_bn_b": "bn1.bias"}
_STEM.update({"res_conv1_bn_rm": "bn1.running_mean", "res_conv1_bn_riv": "bn1.running_var"})
_BN_FIELD = {"bn_s": "weight", "bn_b": "bias", "bn_rm": "running_mean", "bn_riv": "running_var"}


def caffe2_name_to_timm(name: str) -> str | None:
    """One Caffe2 ResNet blob name -> the timm ResNet key, or None for blobs the backbone has no use for."""
    if name in _STEM:
        return _STEM[name]
    m = _BLOCK.match(name)
    if m is None:
        return None
    stage, block, branch, kind = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    if not 2 <= stage <= 5:
        return None
    prefix = f"layer{stage - 1}.{block}."
    if branch == "1":
        module = "downsample.0" if kind == "w" else "downsample.1"
    else:
        k = "abc".index(branch[1]) + 1
        module = f"conv{k}" if kind == "w" else f"bn{k}"
    return prefix + module + (".weight" if kind == "w" else f".{_BN_FIELD[kind]}")


def caffe2_to_state_dict(blobs: dict, where: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A Caffe2 ResNet blob dict -> (timm ResNet state dict, names of the blobs not used).

    Frozen-BN statistics absent from the file are filled with mean 0 / variance 1. Raises a CrossVISError when
    a blob is not a numeric numpy array.
    """
    if isinstance(blobs, dict) and isinstance(blobs.get("blobs"), dict):
        blobs = blobs["blobs"]  # Detectron detection models keep their arrays under "blobs"
    if not isinstance(blobs, dict) or not blobs:
        raise CrossVISError(where, "not a Caffe2 weights file (expected a dict of name -> array)")
    state: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for name, value in blobs.items():
        key = caffe2_name_to_timm(str(name))
        if key is None:
            unused.append(str(name))
            continue
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
            raise CrossVISError(where, f"'{name}' is not a numeric array ({type(value).__name__})")
        state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    for key in [k for k in state if k.endswith(".weight") and not _is_conv(k)]:
        base = key[: -len("weight")]
        n = state[key].shape[0]
        state.setdefault(base + "running_mean", torch.zeros(n))
        state.setdefault(base + "running_var", torch.ones(n))
    return state, sorted(unused)


def _is_conv(key: str) -> bool:
    return bool(re.search(r"(^|\.)conv\d\.weight$|downsample\.0\.weight$", key))


def read_msra_pkl(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read an MSRA ``.pkl`` safely (no code runs) -> (timm ResNet state dict, unused blob names)."""
    data = load_pickle(path)
    if isinstance(data, dict) and isinstance(data.get("model"), dict) and "__author__" in data:
        raise CrossVISError(
            path, "a detectron2 model-zoo .pkl (detectron2 names), not a Caffe2 ImageNet backbone"
        )
    return caffe2_to_state_dict(data, str(Path(path)))


def resnet_depth(state: dict[str, torch.Tensor]) -> int:
    """50 or 101 (or 152) from the number of blocks in stage res4 (6, 23, 36)."""
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("layer3.")}
    return {6: 50, 23: 101, 36: 152}.get(len(blocks), 0)
