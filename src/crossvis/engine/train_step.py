"""One optimizer step: gradient accumulation, the non-finite guard across ranks, clipping, AMP scaling."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from crossvis.config import SolverConfig
from crossvis.engine.train_state import TrainState
from crossvis.errors import CrossVISError

log = logging.getLogger("crossvis.train")


@dataclass
class StepResult:
    """``losses``: each loss term averaged over the micro-batches and ranks (the loss of the global batch for
    mean-reduced terms); ``data_time``: seconds spent waiting for batches; ``stepped``: False when the step
    was skipped for a non-finite loss."""

    losses: dict[str, float]
    data_time: float
    stepped: bool


def train_step(
    model: nn.Module,
    batches: Iterator,
    *,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: TrainState,
    solver: SolverConfig,
    device: torch.device,
) -> StepResult:
    """Accumulate gradients over ``solver.grad_accum`` micro-batches from ``batches`` and take one step.

    ``model(batch)`` returns a dict of scalar losses; their sum, divided by ``grad_accum``, is backpropagated,
    so k micro-batches of mean-reduced losses give the gradient of the mean over their union. When any
    rank's loss is non-finite every rank skips the step (gradients dropped, ``state.bad_in_row`` counted);
    ``solver.max_nonfinite`` of them in a row raise :class:`CrossVISError`. Otherwise the global gradient
    norm is clipped to ``solver.clip_gradients`` (when > 0) and the optimizer steps through ``scaler``.
    ``state.iteration`` (used in messages) is left to the caller to advance.
    """
    optimizer.zero_grad(set_to_none=True)
    losses, data_time, finite = _accumulate(model, batches, scaler=scaler, solver=solver, device=device)
    finite, losses = _agree_across_ranks(finite, losses, device=device)
    if not finite:
        state.bad_in_row += 1
        log.warning("iteration %d: non-finite loss %s, step skipped", state.iteration, losses)
        if state.bad_in_row >= solver.max_nonfinite:
            raise CrossVISError(
                f"iteration {state.iteration}",
                f"{state.bad_in_row} non-finite losses in a row: stopping "
                "(lower solver.base_lr or enable solver.clip_gradients)",
            )
        optimizer.zero_grad(set_to_none=True)
        return StepResult(losses, data_time, stepped=False)
    state.bad_in_row = 0
    if solver.clip_gradients > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), solver.clip_gradients)
    scaler.step(optimizer)
    scaler.update()
    return StepResult(losses, data_time, stepped=True)


def _accumulate(
    model: nn.Module,
    batches: Iterator,
    *,
    scaler: torch.amp.GradScaler,
    solver: SolverConfig,
    device: torch.device,
) -> tuple[dict[str, float], float, bool]:
    """Backpropagate ``grad_accum`` micro-batches: (mean loss terms, data wait in s, all losses finite)."""
    losses: dict[str, float] = {}
    data_time, finite = 0.0, True
    for _ in range(solver.grad_accum):
        td = time.perf_counter()
        batch = next(batches)
        data_time += time.perf_counter() - td
        with torch.autocast(device.type, enabled=solver.amp and device.type == "cuda"):
            terms = model(batch)
            total = sum(terms.values())
        if not torch.isfinite(total):
            finite = False
        scaler.scale(total / solver.grad_accum).backward()
        for k, v in terms.items():
            losses[k] = losses.get(k, 0.0) + float(v.detach()) / solver.grad_accum
    return losses, data_time, finite


def _agree_across_ranks(
    finite: bool, losses: dict[str, float], *, device: torch.device
) -> tuple[bool, dict[str, float]]:
    """(finite on every rank, each loss term's mean over ranks); unchanged without a process group."""
    finite_t = torch.tensor(float(finite), device=device)
    if dist.is_initialized():
        dist.all_reduce(finite_t, op=dist.ReduceOp.MIN)
        # log the mean over ranks (the loss of the global batch, for the normalised FCOS terms)
        vals = torch.tensor(list(losses.values()), dtype=torch.float64, device=device)
        dist.all_reduce(vals)
        losses = dict(zip(losses, (vals / dist.get_world_size()).tolist()))
    return finite_t.item() >= 1, losses
