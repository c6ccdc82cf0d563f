"""Training: ``crossvis train CONFIG`` and :func:`train` — one CPU to many GPUs/nodes through torchrun.

The loop is assembled from small pieces, one idea per module:

- :mod:`crossvis.engine.train_setup` — config checks, process group, device, output folder and log, seeds;
- :mod:`crossvis.engine.train_data` — the splits and the deterministic, sharded frame-pair stream;
- :mod:`crossvis.engine.optim` — :func:`build_optimizer` (norm layers in their own weight-decay group) and
  the learning-rate schedule :func:`lr_at`;
- :mod:`crossvis.engine.train_state` — :class:`TrainState`, and :func:`resume_from` a checkpoint;
- :mod:`crossvis.engine.train_step` — :func:`train_step`: accumulation, non-finite guard, clipping, AMP;
- :mod:`crossvis.engine.hooks` — after each step: logging, checkpoints, validation, the best model.

``ims_per_batch`` counts frame pairs over all ranks and accumulation steps. The checkpoint stores the
iteration (hence the stream's position) and every RNG state, so ``--resume`` continues exactly.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from crossvis.config import Config
from crossvis.engine.hooks import Checkpointer, StepLogger, tensorboard
from crossvis.engine.initialization import initialize
from crossvis.engine.optim import build_optimizer, lr_at, param_groups, set_lr
from crossvis.engine.train_data import PairStream, num_workers, prepare_data, train_loader
from crossvis.engine.train_setup import Run, setup
from crossvis.engine.train_state import TrainState, resume_from
from crossvis.engine.train_step import train_step
from crossvis.modeling.builders import build_model

log = logging.getLogger("crossvis.train")


def train(
    cfg: Config,
    output: str | Path | None = None,
    *,
    resume: bool = False,
    max_seconds: float | None = None,
    progress: bool = True,
) -> Path:
    """Train per ``cfg`` and return the path of the final weights (``OUTPUT/model_final.safetensors``).

    ``resume`` continues from the newest checkpoint in OUTPUT; ``max_seconds`` stops (with a checkpoint)
    after that much wall time; ``progress`` shows the tqdm bar.
    """
    run = setup(cfg, output)
    cfg, s = run.cfg, run.cfg.solver
    train_ds, val_ds = prepare_data(cfg, run.rank)
    model = _build_model(run, num_identities=train_ds.num_identities, class_names=train_ds.class_names)
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=s.amp and run.device.type == "cuda")
    state = TrainState()
    if resume:
        state = resume_from(
            run.out, model=model, optimizer=optimizer, scaler=scaler, rank=run.rank, world=run.world
        )
    ddp = _data_parallel(model, run)
    loader = train_loader(cfg, train_ds, rank=run.rank, world=run.world, start_iter=state.iteration)
    writer = tensorboard(run.out) if run.rank == 0 else None
    checkpointer = Checkpointer(
        run,
        model=model,
        optimizer=optimizer,
        scaler=scaler,
        val=val_ds,
        class_names=train_ds.class_names,
        category_ids=train_ds.category_ids,
        record=_record(cfg),
        writer=writer,
    )
    batches = iter(loader)
    logger = StepLogger(run, start_iter=state.iteration, progress=progress, writer=writer)
    t_start = time.perf_counter()
    while state.iteration < s.max_iter:
        t0 = time.perf_counter()
        lr = lr_at(cfg, state.iteration)
        set_lr(optimizer, lr)
        step = train_step(
            ddp, batches, optimizer=optimizer, scaler=scaler, state=state, solver=s, device=run.device
        )
        state.iteration += 1
        logger(state, step, lr=lr, step_time=time.perf_counter() - t0)
        stop_early = max_seconds is not None and time.perf_counter() - t_start > max_seconds
        checkpointer(state, last=state.iteration == s.max_iter, stop_early=stop_early)
        if stop_early:
            log.info("stopping after %.0f s at iteration %d (time budget)", max_seconds, state.iteration)
            break
    logger.close()
    return _finish(run, checkpointer, state, writer)


def _build_model(run: Run, *, num_identities: int, class_names: list[str]) -> nn.Module:
    """The model of ``run.cfg`` with its initial weights, SyncBN across ranks if asked, on the device."""
    model = build_model(run.cfg, num_identities)
    initialize(model, run.cfg, class_names)  # the init chain: model.weights, ImageNet backbone or scratch
    if run.cfg.model.condinst.mask_branch_norm == "SyncBN" and run.world > 1:
        model.mask_branch = nn.SyncBatchNorm.convert_sync_batchnorm(model.mask_branch)
    return model.to(run.device).train()


def _data_parallel(model: nn.Module, run: Run) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when there are several ranks, else itself."""
    if run.world == 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[run.local] if run.device.type == "cuda" else None,
        broadcast_buffers=False,
        find_unused_parameters=True,
    )


def _record(cfg: Config) -> dict:
    """How the weights were made, stored in every weights file the run writes."""
    return {
        "command": os.environ.get("CROSSVIS_COMMAND", ""),
        "seed": cfg.seed,
        "train_json": cfg.data.train_json,
        "synth_train": None if cfg.data.synth_train is None else vars(cfg.data.synth_train),
    }


def _finish(run: Run, checkpointer: Checkpointer, state: TrainState, writer) -> Path:
    """Write the final weights (rank 0), close TensorBoard and wait for every rank; return the weights' path."""
    final = checkpointer.save_final(state)
    if writer is not None:
        writer.close()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return final


__all__ = [
    "PairStream",
    "TrainState",
    "build_optimizer",
    "lr_at",
    "num_workers",
    "param_groups",
    "prepare_data",
    "resume_from",
    "train",
    "train_step",
]
