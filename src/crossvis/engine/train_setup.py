"""A training run's environment: config checks, distributed group, device, output folder, file log, seeds."""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from crossvis.config import Config, dump_config
from crossvis.engine.optim import OPTIMIZERS
from crossvis.errors import CrossVISError
from crossvis.io import atomic_write


@dataclass(frozen=True)
class Run:
    """Where and how this process trains: ``cfg`` (its ``output_dir`` is ``out``), ``rank`` of ``world``
    processes, ``local`` rank on this node, and the ``device`` it computes on."""

    cfg: Config
    out: Path
    rank: int
    world: int
    local: int
    device: torch.device


def setup(cfg: Config, output: str | Path | None) -> Run:
    """Check the solver settings, join the process group (under torchrun), pick the device, create the output
    folder with ``train.log`` and ``config.yaml`` (rank 0) and seed every RNG from ``cfg.seed``."""
    out = Path(output or cfg.output_dir)
    cfg = replace(cfg, output_dir=str(out))
    rank, world, local = init_distributed()
    check_solver(cfg, world)
    device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        setup_file_log(out / "train.log")
        with atomic_write(out / "config.yaml") as f:
            f.write(dump_config(cfg))
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        if device.type == "cpu":
            # multi-threaded CPU convolution backward sums in a thread-dependent order: two identical runs
            # with 2 threads differed in the FPN's P6/P7 weights (with oneDNN and NNPACK off as well)
            torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    return Run(cfg=cfg, out=out, rank=rank, world=world, local=local, device=device)


def check_solver(cfg: Config, world: int) -> None:
    """Raise :class:`CrossVISError` for solver settings no run can use, before any time is spent."""
    s = cfg.solver
    if s.ims_per_batch % (world * s.grad_accum):
        raise CrossVISError(
            "solver.ims_per_batch",
            f"{s.ims_per_batch} pairs cannot be split over {world} "
            f"rank(s) x {s.grad_accum} accumulation step(s)",
        )
    if s.max_iter <= 0:
        raise CrossVISError("solver.max_iter", "must be positive")
    if s.optimizer not in OPTIMIZERS:
        raise CrossVISError("solver.optimizer", f"must be SGD or AdamW, got {s.optimizer!r}")


def init_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank), joining the process group torchrun describes when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, dist.get_world_size() if dist.is_initialized() else 1, local


def setup_file_log(path: Path) -> None:
    """Copy the ``crossvis`` loggers' INFO (and above) records to ``path`` (once per path)."""
    root = logging.getLogger("crossvis")
    if not any(
        isinstance(h, logging.FileHandler) and h.baseFilename == str(path.resolve()) for h in root.handlers
    ):
        h = logging.FileHandler(path)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)
        root.setLevel(min(root.level or logging.INFO, logging.INFO))
