"""Inference precision: ``fp32`` (default, exact), ``bf16`` or ``fp16`` through ``torch.autocast``.

On a CPU, bf16 autocast runs convolutions and matmuls in bfloat16 (oneDNN uses AVX-512 BF16 / AMX units where
the CPU has them, and emulates them, slowly, where it does not); on CUDA both use automatic mixed precision.
Outputs are returned in float32 whatever the precision.
"""

from __future__ import annotations

import contextlib

import torch

from crossvis.errors import CrossVISError

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, where: str = "--precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a :class:`CrossVISError`."""
    if precision not in PRECISIONS:
        raise CrossVISError(where, f"one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])
