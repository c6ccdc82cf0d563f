"""The optimizer and its learning-rate schedule.

Schedule (official by default): SGD momentum 0.9, linear warm-up from ``warmup_factor`` over ``warmup_iters``,
x``gamma`` at each of ``steps``, weight decay on weights and biases, ``weight_decay_norm`` on norm layers.
LR scaling rule: lr = base_lr * ims_per_batch / reference_batch (linear scaling; off with scale_lr=false).
"""

from __future__ import annotations

import torch
from torch import nn

from crossvis.config import Config
from crossvis.errors import CrossVISError

NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.SyncBatchNorm, nn.LayerNorm)
OPTIMIZERS = ("SGD", "AdamW")


def param_groups(model: nn.Module, *, weight_decay: float, weight_decay_norm: float) -> list[dict]:
    """Two groups of the trainable parameters: ``[others (weight_decay), norm layers (weight_decay_norm)]``."""
    norm, other = [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad:
                continue
            (norm if isinstance(module, NORM_TYPES) else other).append(p)
    return [
        {"params": other, "weight_decay": weight_decay},
        {"params": norm, "weight_decay": weight_decay_norm},
    ]


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """``cfg.solver.optimizer`` (SGD or AdamW) over :func:`param_groups`, at the learning rate of iteration 0."""
    s = cfg.solver
    if s.optimizer not in OPTIMIZERS:
        raise CrossVISError("solver.optimizer", f"must be SGD or AdamW, got {s.optimizer!r}")
    groups = param_groups(model, weight_decay=s.weight_decay, weight_decay_norm=s.weight_decay_norm)
    if s.optimizer == "SGD":
        return torch.optim.SGD(groups, lr=lr_at(cfg, 0), momentum=s.momentum, nesterov=s.nesterov)
    return torch.optim.AdamW(groups, lr=lr_at(cfg, 0))


def lr_at(cfg: Config, it: int) -> float:
    """The learning rate of iteration ``it`` (0-based): scaled base rate x warm-up x step decay."""
    s = cfg.solver
    base = s.base_lr * (s.ims_per_batch / s.reference_batch if s.scale_lr else 1.0)
    warm = 1.0
    if it < s.warmup_iters:
        a = it / s.warmup_iters
        warm = s.warmup_factor * (1 - a) + a
    return base * warm * s.gamma ** sum(1 for st in s.steps if st <= it)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to ``lr``."""
    for g in optimizer.param_groups:
        g["lr"] = lr
