"""What a training run carries from one iteration to the next, and how a checkpoint saves and restores it.

A checkpoint's ``.state.pt`` holds the iteration, the best validation AP, the optimizer and AMP-scaler state
and every rank's RNG states; with the data stream's position (a function of the iteration) that makes
``--resume`` continue bit-exactly.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from crossvis.engine.checkpoint import list_checkpoints, load_checkpoint

log = logging.getLogger("crossvis.train")


@dataclass
class TrainState:
    """The loop's counters: ``iteration`` (optimizer steps taken, skipped ones included), ``best_ap`` (best
    validation AP so far, -1 before the first), ``bad_in_row`` (non-finite steps in a row)."""

    iteration: int = 0
    best_ap: float = -1.0
    bad_in_row: int = 0


def rng_state() -> dict:
    """This process's torch, numpy, Python and CUDA RNG states, in a form ``torch.load(weights_only)`` reads."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state()[1].tolist(),
        "python": json.dumps(random.getstate()),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(s: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(s["torch"])
    st = np.random.get_state()
    np.random.set_state((st[0], np.array(s["numpy"], dtype=np.uint32), *st[2:]))
    py = json.loads(s["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def gather_rng(world: int) -> list[dict] | dict:
    """Every rank's :func:`rng_state` (a list in rank order), or this one's alone when ``world == 1``.

    A collective when ``world > 1``: every rank must call it.
    """
    state = rng_state()
    if world == 1:
        return state
    states: list = [None] * world
    dist.all_gather_object(states, state)
    return states


def checkpoint_state(
    state: TrainState, *, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, rng: list | dict
) -> dict:
    """The ``.state.pt`` content of a checkpoint (``rng`` from :func:`gather_rng`)."""
    return {
        "iteration": state.iteration,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,
        "best_ap": state.best_ap,
    }


def resume_from(
    out: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    rank: int,
    world: int,
) -> TrainState:
    """Load the newest checkpoint in ``out/checkpoints`` into ``model``, ``optimizer``, ``scaler`` and this
    rank's RNGs and return its :class:`TrainState`; a fresh state when there is none.

    RNG states are restored only when the checkpoint has as many ranks as now: with another number of ranks
    the data stream still resumes exactly, model randomness does not.
    """
    ckpts = list_checkpoints(out)
    if not ckpts:
        log.info("no checkpoint in %s: starting from scratch", out)
        return TrainState()
    state_dict, st = load_checkpoint(ckpts[-1])
    model.load_state_dict(state_dict)
    optimizer.load_state_dict(st["optimizer"])
    if st.get("scaler"):
        scaler.load_state_dict(st["scaler"])
    state = TrainState(iteration=int(st["iteration"]), best_ap=float(st.get("best_ap", -1.0)))
    rngs = st["rng"] if isinstance(st["rng"], list) else [st["rng"]]
    if len(rngs) == world:
        set_rng_state(rngs[rank])
    else:
        log.warning("checkpoint from %d rank(s), now %d: RNG states not restored", len(rngs), world)
    log.info("resumed from %s at iteration %d", ckpts[-1], state.iteration)
    return state
