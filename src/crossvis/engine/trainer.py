"""Training: ``crossvis train CONFIG`` and :func:`train` — one CPU to many GPUs/nodes through torchrun.

Schedule (official by default): SGD momentum 0.9, linear warm-up from ``warmup_factor`` over ``warmup_iters``,
x``gamma`` at each of ``steps``, weight decay on weights and biases, ``weight_decay_norm`` on norm layers.
LR scaling rule: lr = base_lr * ims_per_batch / reference_batch (linear scaling; off with scale_lr=false).
``ims_per_batch`` counts frame pairs over all ranks and accumulation steps.

Determinism: the frame-pair stream is a pure function of (seed, position), sharded across ranks, and the
checkpoint stores the position and every RNG state, so ``--resume`` continues exactly.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from crossvis.config import Config, SynthConfig, dump_config
from crossvis.data.pairs import FramePairDataset, collate_pairs
from crossvis.data.synthetic import generate
from crossvis.data.ytvis import YTVISDataset
from crossvis.engine.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from crossvis.errors import CrossVISError
from crossvis.evaluation import Evaluator
from crossvis.io import atomic_write
from crossvis.modeling.builders import build_model
from crossvis.modeling.weights import save_weights

log = logging.getLogger("crossvis.train")

NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.SyncBatchNorm, nn.LayerNorm)


# ------------------------------------------------------------------------------------------------ data


class PairStream(Sampler):
    """Infinite shuffled stream of (item index, item seed), rank r taking positions r, r + W, r + 2W, ...

    Position p of the global stream is item perm_e[p mod N] of epoch e = p // N, with perm_e drawn from
    (seed, e); its seed is derived from (seed, p). ``start`` skips the positions already consumed.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1, start: int = 0) -> None:
        self.size, self.seed, self.rank, self.world, self.start = size, seed, rank, world, start

    def __iter__(self):
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


# ------------------------------------------------------------------------------------------------ optim


def param_groups(model: nn.Module, weight_decay: float, weight_decay_norm: float) -> list[dict]:
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


def lr_at(cfg: Config, it: int) -> float:
    s = cfg.solver
    base = s.base_lr * (s.ims_per_batch / s.reference_batch if s.scale_lr else 1.0)
    warm = 1.0
    if it < s.warmup_iters:
        a = it / s.warmup_iters
        warm = s.warmup_factor * (1 - a) + a
    return base * warm * s.gamma ** sum(1 for st in s.steps if st <= it)


# ------------------------------------------------------------------------------------------------ distributed


def _init_distributed() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, dist.get_world_size() if dist.is_initialized() else 1, local


def _rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state()[1].tolist(),
        "python": json.dumps(random.getstate()),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    st = np.random.get_state()
    np.random.set_state((st[0], np.array(s["numpy"], dtype=np.uint32), *st[2:]))
    py = json.loads(s["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


# ------------------------------------------------------------------------------------------------ main loop


def train(
    cfg: Config,
    output: str | Path | None = None,
    resume: bool = False,
    max_seconds: float | None = None,
    progress: bool = True,
) -> Path:
    """Train per ``cfg`` and return the path of the final weights (``OUTPUT/model_final.safetensors``).

    ``max_seconds`` stops (with a checkpoint) after that much wall time; ``progress`` shows the tqdm bar.
    """
    out = Path(output or cfg.output_dir)
    cfg = replace(cfg, output_dir=str(out))
    rank, world, local = _init_distributed()
    s = cfg.solver
    if s.ims_per_batch % (world * s.grad_accum):
        raise CrossVISError(
            "solver.ims_per_batch",
            f"{s.ims_per_batch} pairs cannot be split over {world} "
            f"rank(s) x {s.grad_accum} accumulation step(s)",
        )
    if s.max_iter <= 0:
        raise CrossVISError("solver.max_iter", "must be positive")
    if s.optimizer not in ("SGD", "AdamW"):
        raise CrossVISError("solver.optimizer", f"must be SGD or AdamW, got {s.optimizer!r}")
    per_step = s.ims_per_batch // (world * s.grad_accum)
    device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _setup_file_log(out / "train.log")
        with atomic_write(out / "config.yaml") as f:
            f.write(dump_config(cfg))
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)

    train_ds, val_ds = prepare_data(cfg, rank)
    model = build_model(cfg, train_ds.num_identities)
    _init_weights(model, cfg, train_ds.class_names)
    if cfg.model.condinst.mask_branch_norm == "SyncBN" and world > 1:
        model.mask_branch = nn.SyncBatchNorm.convert_sync_batchnorm(model.mask_branch)
    model.to(device).train()
    groups = param_groups(model, s.weight_decay, s.weight_decay_norm)
    if s.optimizer == "SGD":
        optimizer = torch.optim.SGD(groups, lr=lr_at(cfg, 0), momentum=s.momentum, nesterov=s.nesterov)
    else:
        optimizer = torch.optim.AdamW(groups, lr=lr_at(cfg, 0))
    scaler = torch.amp.GradScaler("cuda", enabled=s.amp and device.type == "cuda")

    start_iter, best_ap = 0, -1.0
    ckpts = list_checkpoints(out)
    if resume and ckpts:
        state_dict, st = load_checkpoint(ckpts[-1])
        model.load_state_dict(state_dict)
        optimizer.load_state_dict(st["optimizer"])
        if st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        start_iter, best_ap = int(st["iteration"]), float(st.get("best_ap", -1.0))
        rngs = st["rng"] if isinstance(st["rng"], list) else [st["rng"]]
        if len(rngs) == world:
            _set_rng_state(rngs[rank])
        else:  # another number of ranks: the data stream still resumes exactly, model randomness does not
            log.warning("checkpoint from %d rank(s), now %d: RNG states not restored", len(rngs), world)
        log.info("resumed from %s at iteration %d", ckpts[-1], start_iter)
    elif resume:
        log.info("no checkpoint in %s: starting from scratch", out)

    ddp = (
        nn.parallel.DistributedDataParallel(
            model,
            device_ids=[local] if device.type == "cuda" else None,
            broadcast_buffers=False,
            find_unused_parameters=True,
        )
        if world > 1
        else model
    )
    pairs = FramePairDataset(
        train_ds,
        cfg.input.min_size_train,
        cfg.input.max_size_train,
        cfg.input.hflip_train,
        cfg.model.crossvis.sample_region,
    )
    if len(pairs) == 0:
        raise CrossVISError(cfg.data.train_json, "no frame with a visible object to train on")
    stream = PairStream(len(pairs), cfg.seed, rank, world, start=start_iter * s.ims_per_batch)
    workers = num_workers(cfg.data.num_workers)
    loader = DataLoader(
        pairs,
        batch_size=per_step,
        sampler=stream,
        collate_fn=collate_pairs,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    writer = _tensorboard(out) if rank == 0 else None
    record = {
        "command": os.environ.get("CROSSVIS_COMMAND", ""),
        "seed": cfg.seed,
        "train_json": cfg.data.train_json,
        "synth_train": None if cfg.data.synth_train is None else vars(cfg.data.synth_train),
    }
    class_names, cat_ids = train_ds.class_names, train_ds.category_ids

    it = start_iter
    data_iter = iter(loader)
    bar = tqdm(
        total=s.max_iter, initial=start_iter, disable=rank != 0 or not progress, unit="it", dynamic_ncols=True
    )
    bad_in_row = 0
    val_eval = None
    t_start = time.perf_counter()
    while it < s.max_iter:
        t0 = time.perf_counter()
        lr = lr_at(cfg, it)
        for g in optimizer.param_groups:
            g["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        logged: dict[str, float] = {}
        data_time = 0.0
        finite = True
        for _ in range(s.grad_accum):
            td = time.perf_counter()
            batch = next(data_iter)
            data_time += time.perf_counter() - td
            with torch.autocast(device.type, enabled=s.amp and device.type == "cuda"):
                losses = ddp(batch)
                total = sum(losses.values())
            if not torch.isfinite(total):
                finite = False
            scaler.scale(total / s.grad_accum).backward()
            for k, v in losses.items():
                logged[k] = logged.get(k, 0.0) + float(v.detach()) / s.grad_accum
        finite_t = torch.tensor(float(finite), device=device)
        if dist.is_initialized():
            dist.all_reduce(finite_t, op=dist.ReduceOp.MIN)
            # log the mean over ranks (the loss of the global batch, for the normalised FCOS terms)
            vals = torch.tensor(list(logged.values()), dtype=torch.float64, device=device)
            dist.all_reduce(vals)
            logged = dict(zip(logged, (vals / world).tolist()))
        if finite_t.item() < 1:
            bad_in_row += 1
            log.warning("iteration %d: non-finite loss %s, step skipped", it, logged)
            if bad_in_row >= s.max_nonfinite:
                raise CrossVISError(
                    f"iteration {it}",
                    f"{bad_in_row} non-finite losses in a row: stopping "
                    "(lower solver.base_lr or enable solver.clip_gradients)",
                )
            optimizer.zero_grad(set_to_none=True)
        else:
            bad_in_row = 0
            if s.clip_gradients > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip_gradients)
            scaler.step(optimizer)
            scaler.update()
        it += 1
        step_time = time.perf_counter() - t0
        if rank == 0:
            logged["total_loss"] = sum(v for k, v in logged.items() if k.startswith("loss"))
            bar.update(1)
            bar.set_postfix(
                {k.replace("loss_", ""): f"{v:.3f}" for k, v in logged.items()} | {"lr": f"{lr:.2g}"}
            )
            if it % 20 == 0 or it == s.max_iter:
                log.info(
                    "iter %d lr %.3g time %.3fs data %.3fs %s",
                    it,
                    lr,
                    step_time,
                    data_time,
                    " ".join(f"{k}={v:.4f}" for k, v in logged.items()),
                )
            if writer is not None:
                for k, v in logged.items():
                    writer.add_scalar(f"train/{k}", v, it)
                writer.add_scalar("train/lr", lr, it)
                writer.add_scalar("time/iteration", step_time, it)
                writer.add_scalar("time/data", data_time, it)
        last = it == s.max_iter
        stop_early = max_seconds is not None and time.perf_counter() - t_start > max_seconds
        if (s.checkpoint_period and it % s.checkpoint_period == 0) or last or stop_early:
            rng = _gather_rng(world)
            if rank == 0:
                if cfg.test.eval_period and val_ds is not None and (it % cfg.test.eval_period == 0 or last):
                    if val_eval is None:  # ground truth prepared once for every validation
                        val_eval = Evaluator(val_ds)
                    ap = _validate(model, cfg, val_eval, class_names, cat_ids, writer, it, out)
                    if ap > best_ap:
                        best_ap = ap
                        save_weights(
                            model,
                            out / "model_best.safetensors",
                            cfg,
                            class_names,
                            cat_ids,
                            {**record, "iteration": it, "val_AP": ap},
                        )
                save_checkpoint(
                    out,
                    it,
                    model,
                    cfg,
                    class_names,
                    cat_ids,
                    {
                        "iteration": it,
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": rng,
                        "best_ap": best_ap,
                    },
                    keep=s.checkpoint_keep,
                    record=record,
                )
            if dist.is_initialized():
                dist.barrier()
        if stop_early:
            log.info("stopping after %.0f s at iteration %d (time budget)", max_seconds, it)
            break
    bar.close()
    final = out / "model_final.safetensors"
    if rank == 0:
        save_weights(model, final, cfg, class_names, cat_ids, {**record, "iteration": it})
        log.debug("wrote %s", final)
        if writer is not None:
            writer.close()
    if dist.is_initialized():
        dist.barrier()
    return final


def _gather_rng(world: int) -> list[dict] | dict:
    state = _rng_state()
    if world == 1:
        return state
    states: list = [None] * world
    dist.all_gather_object(states, state)
    return states


def _init_weights(model: nn.Module, cfg: Config, class_names: list[str]) -> None:
    """Initial weights per the config's init chain (see crossvis.engine.initialization)."""
    from crossvis.engine.initialization import initialize

    initialize(model, cfg, class_names)


def _validate(
    model: nn.Module, cfg: Config, val_eval, class_names, cat_ids, writer, it: int, out: Path
) -> float:
    from crossvis.engine.inference import infer_videos
    from crossvis.engine.predictor import VideoPredictor

    was_training = model.training
    model.eval()
    predictor = VideoPredictor(model, cfg, class_names, cat_ids)
    results = infer_videos(predictor, val_eval.dataset, progress=False)
    r = val_eval.evaluate(results)
    model.train(was_training)
    log.info(
        "iteration %d validation: AP %.4f AP50 %.4f AR10 %.4f id-switches %d",
        it,
        r.stats["AP"],
        r.stats["AP50"],
        r.stats["AR10"],
        r.identity.get("id_switches", -1),
    )
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"iteration": it, **r.stats, "id_switches": r.identity.get("id_switches")}) + "\n")
    if writer is not None:
        for k, v in r.stats.items():
            writer.add_scalar(f"val/{k}", v, it)
    return r.stats["AP"]


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard not installed: no event files (pip install 'crossvis[extras]')")
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _setup_file_log(path: Path) -> None:
    root = logging.getLogger("crossvis")
    if not any(
        isinstance(h, logging.FileHandler) and h.baseFilename == str(path.resolve()) for h in root.handlers
    ):
        h = logging.FileHandler(path)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)
        root.setLevel(min(root.level or logging.INFO, logging.INFO))


__all__ = ["PairStream", "lr_at", "param_groups", "prepare_data", "train"]
