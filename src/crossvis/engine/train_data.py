"""The training data: the splits (generated first when synthetic and absent) and the frame-pair stream.

Determinism: the frame-pair stream is a pure function of (seed, position), sharded across ranks, so a run
resumed at iteration i continues with exactly the pairs an uninterrupted run would have drawn.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from crossvis.config import Config, SynthConfig
from crossvis.data.pairs import FramePairDataset, collate_pairs
from crossvis.data.synthetic import generate
from crossvis.data.ytvis import YTVISDataset
from crossvis.errors import CrossVISError

log = logging.getLogger("crossvis.train")


class PairStream(Sampler):
    """Infinite shuffled stream of (item index, item seed), rank r taking positions r, r + W, r + 2W, ...

    Position p of the global stream is item perm_e[p mod N] of epoch e = p // N, with perm_e drawn from
    (seed, e); its seed is derived from (seed, p). ``start`` skips the positions already consumed.
    """

    def __init__(self, size: int, seed: int, *, rank: int = 0, world: int = 1, start: int = 0) -> None:
        self.size, self.seed, self.rank, self.world, self.start = size, seed, rank, world, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        p = self.start + self.rank
        epoch, perm = -1, None
        while True:
            e = p // self.size
            if e != epoch:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
                perm, epoch = torch.randperm(self.size, generator=g).tolist(), e
            yield perm[p % self.size], (self.seed * 7_919 + p) % (2**62)
            p += self.world

    def __len__(self) -> int:  # pragma: no cover - infinite
        return 2**62


def num_workers(requested: int) -> int:
    """DataLoader workers: ``requested``, or for -1 what the machine has (min(4, CPUs - 1): one core stays
    with the training process; PyTorch warns when workers exceed the CPUs)."""
    if requested >= 0:
        return requested
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cpus - 1))


def _synth(cfg: SynthConfig, json_path: str) -> None:
    out = Path(json_path).parent
    log.info("generating synthetic data in %s (%d videos, seed %d)", out, cfg.videos, cfg.seed)
    generate(out, cfg)


def prepare_data(cfg: Config, rank: int = 0) -> tuple[YTVISDataset, YTVISDataset | None]:
    """Load the train (and val) splits, generating synthetic ones first when configured and absent."""
    d = cfg.data
    for synth, path in ((d.synth_train, d.train_json), (d.synth_val, d.val_json)):
        if synth is not None and path and not Path(path).is_file():
            if rank == 0:
                _synth(synth, path)
            if dist.is_initialized():
                dist.barrier()
    train = YTVISDataset(d.train_json, d.train_images)
    if not train.has_annotations or not any(v.annotations for v in train.videos):
        raise CrossVISError(d.train_json, "the training split has no annotations")
    val = YTVISDataset(d.val_json, d.val_images) if d.val_json else None
    return train, val


def train_loader(cfg: Config, train: YTVISDataset, *, rank: int, world: int, start_iter: int) -> DataLoader:
    """This rank's batches of ``ims_per_batch / (world x grad_accum)`` frame pairs, from iteration
    ``start_iter`` of the global stream on."""
    s = cfg.solver
    pairs = FramePairDataset(
        train,
        cfg.input.min_size_train,
        cfg.input.max_size_train,
        hflip=cfg.input.hflip_train,
        sample_region=cfg.model.crossvis.sample_region,
    )
    if len(pairs) == 0:
        raise CrossVISError(cfg.data.train_json, "no frame with a visible object to train on")
    stream = PairStream(len(pairs), cfg.seed, rank=rank, world=world, start=start_iter * s.ims_per_batch)
    workers = num_workers(cfg.data.num_workers)
    return DataLoader(
        pairs,
        batch_size=s.ims_per_batch // (world * s.grad_accum),
        sampler=stream,
        collate_fn=collate_pairs,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
