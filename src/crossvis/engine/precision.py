"""Inference precision: ``fp32`` (default, exact), ``bf16`` or ``fp16`` through ``torch.autocast``.

On a CPU, bf16 autocast runs convolutions and matmuls in bfloat16 (oneDNN uses AVX-512 BF16 / AMX units where
the CPU has them, and emulates them, slowly, where it does not); on CUDA both use automatic mixed precision.

:func:`network_autocast` applies it to the dense network only (backbone, FPN, head towers, controller, mask
branch), whose outputs are cast back to float32: scores, box decoding, NMS, the dynamic mask head (its relative
coordinates need more than bf16's 8 bits) and mask thresholding stay in float32, and so do the head's final
prediction convs (see :mod:`crossvis.modeling.fcos_head`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from crossvis.errors import CrossVISError

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, where: str = "--precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a :class:`CrossVISError`."""
    if precision not in PRECISIONS:
        raise CrossVISError(where, f"one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def _to_float(x):
    if isinstance(x, torch.Tensor):
        return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
    if isinstance(x, list | tuple):
        return type(x)(_to_float(v) for v in x)
    if isinstance(x, dict):
        return {k: _to_float(v) for k, v in x.items()}
    return x


NETWORK_PARTS = ("backbone", "fpn", "head", "controller", "mask_branch")


@contextlib.contextmanager
def network_autocast(model: nn.Module, device: torch.device, precision: str) -> Iterator[None]:
    """Within the block, the model's dense parts (:data:`NETWORK_PARTS`) run under ``precision`` autocast and
    return float32; everything else (post-processing, the dynamic mask head) runs in float32."""
    check_precision(precision)
    if precision == "fp32":
        yield
        return
    stack: list[contextlib.AbstractContextManager] = []

    def enter(_m, _args):
        ctx = torch.autocast(device.type, dtype=_DTYPES[precision])
        ctx.__enter__()
        stack.append(ctx)

    def leave(_m, _args, out):
        stack.pop().__exit__(None, None, None)
        return _to_float(out)

    handles = []
    for name in NETWORK_PARTS:
        part = getattr(model, name, None)
        if isinstance(part, nn.Module):
            handles.append(part.register_forward_pre_hook(enter))
            handles.append(part.register_forward_hook(leave, always_call=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
