"""What runs after each optimizer step: logging (tqdm, ``train.log``, TensorBoard) and checkpoints with
periodic validation and the best model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from crossvis.data.ytvis import YTVISDataset
from crossvis.engine.checkpoint import save_checkpoint
from crossvis.engine.train_setup import Run
from crossvis.engine.train_state import TrainState, checkpoint_state, gather_rng
from crossvis.engine.train_step import StepResult
from crossvis.evaluation import Evaluator
from crossvis.modeling.weights import save_weights

log = logging.getLogger("crossvis.train")

LOG_PERIOD = 20  # iterations between train.log lines


def tensorboard(out: Path):
    """A TensorBoard ``SummaryWriter`` on ``out/tensorboard``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard not installed: no event files (pip install 'crossvis[extras]')")
        return None
    return SummaryWriter(str(out / "tensorboard"))


class StepLogger:
    """After each step on rank 0: the tqdm bar and its loss postfix, a ``train.log`` line every
    :data:`LOG_PERIOD` iterations and at the end, and the step's scalars in TensorBoard."""

    def __init__(self, run: Run, *, start_iter: int, progress: bool, writer) -> None:
        self.run, self.writer, self.max_iter = run, writer, run.cfg.solver.max_iter
        self.bar = tqdm(
            total=self.max_iter,
            initial=start_iter,
            disable=run.rank != 0 or not progress,
            unit="it",
            dynamic_ncols=True,
        )

    def __call__(self, state: TrainState, step: StepResult, *, lr: float, step_time: float) -> None:
        if self.run.rank != 0:
            return
        it, logged = state.iteration, dict(step.losses)
        logged["total_loss"] = sum(v for k, v in logged.items() if k.startswith("loss"))
        self.bar.update(1)
        self.bar.set_postfix(
            {k.replace("loss_", ""): f"{v:.3f}" for k, v in logged.items()} | {"lr": f"{lr:.2g}"}
        )
        if it % LOG_PERIOD == 0 or it == self.max_iter:
            log.info(
                "iter %d lr %.3g time %.3fs data %.3fs %s",
                it,
                lr,
                step_time,
                step.data_time,
                " ".join(f"{k}={v:.4f}" for k, v in logged.items()),
            )
        if self.writer is not None:
            for k, v in logged.items():
                self.writer.add_scalar(f"train/{k}", v, it)
            self.writer.add_scalar("train/lr", lr, it)
            self.writer.add_scalar("time/iteration", step_time, it)
            self.writer.add_scalar("time/data", step.data_time, it)

    def close(self) -> None:
        self.bar.close()


class Checkpointer:
    """Checkpoints every ``solver.checkpoint_period`` iterations, at ``max_iter`` and when stopped early.

    On a checkpoint iteration that is also a multiple of ``test.eval_period`` (or the last), rank 0 first
    validates on ``val`` and writes ``model_best.safetensors`` when the AP beats ``state.best_ap``. Every
    rank must call it (the RNG states are gathered from all ranks). ``model`` is the unwrapped model.
    """

    def __init__(
        self,
        run: Run,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        val: YTVISDataset | None,
        class_names: list[str],
        category_ids: list[int],
        record: dict,
        writer,
    ) -> None:
        self.run, self.model, self.optimizer, self.scaler, self.val = run, model, optimizer, scaler, val
        self.class_names, self.category_ids, self.record, self.writer = (
            class_names,
            category_ids,
            record,
            writer,
        )
        self.evaluator: Evaluator | None = None  # ground truth prepared once, at the first validation

    def __call__(self, state: TrainState, *, last: bool, stop_early: bool) -> None:
        s, it = self.run.cfg.solver, state.iteration
        if not ((s.checkpoint_period and it % s.checkpoint_period == 0) or last or stop_early):
            return
        rng = gather_rng(self.run.world)
        if self.run.rank == 0:
            period = self.run.cfg.test.eval_period
            if period and self.val is not None and (it % period == 0 or last):
                self._validate_and_keep_best(state)
            save_checkpoint(
                self.run.out,
                iteration=it,
                model=self.model,
                cfg=self.run.cfg,
                class_names=self.class_names,
                category_ids=self.category_ids,
                state=checkpoint_state(state, optimizer=self.optimizer, scaler=self.scaler, rng=rng),
                keep=s.checkpoint_keep,
                record=self.record,
            )
        if dist.is_initialized():
            dist.barrier()

    def save_final(self, state: TrainState) -> Path:
        """Write ``OUTPUT/model_final.safetensors`` (rank 0) and return its path."""
        final = self.run.out / "model_final.safetensors"
        if self.run.rank == 0:
            self._save(final, {**self.record, "iteration": state.iteration})
            log.debug("wrote %s", final)
        return final

    def _save(self, path: Path, record: dict) -> None:
        save_weights(
            self.model,
            path,
            cfg=self.run.cfg,
            class_names=self.class_names,
            category_ids=self.category_ids,
            record=record,
        )

    def _validate_and_keep_best(self, state: TrainState) -> None:
        if self.evaluator is None:
            self.evaluator = Evaluator(self.val)
        ap = self._validate(state.iteration)
        if ap > state.best_ap:
            state.best_ap = ap
            record = {**self.record, "iteration": state.iteration, "val_AP": ap}
            self._save(self.run.out / "model_best.safetensors", record)

    def _validate(self, it: int) -> float:
        """Run the model over the validation videos, log and record the metrics; return the AP."""
        from crossvis.engine.inference import infer_videos
        from crossvis.engine.predictor import VideoPredictor

        model, was_training = self.model, self.model.training
        model.eval()
        predictor = VideoPredictor(model, self.run.cfg, self.class_names, self.category_ids)
        r = self.evaluator.evaluate(infer_videos(predictor, self.evaluator.dataset, progress=False))
        model.train(was_training)
        log.info(
            "iteration %d validation: AP %.4f AP50 %.4f AR10 %.4f id-switches %d",
            it,
            r.stats["AP"],
            r.stats["AP50"],
            r.stats["AR10"],
            r.identity.get("id_switches", -1),
        )
        with open(self.run.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(
                json.dumps({"iteration": it, **r.stats, "id_switches": r.identity.get("id_switches")}) + "\n"
            )
        if self.writer is not None:
            for k, v in r.stats.items():
                self.writer.add_scalar(f"val/{k}", v, it)
        return r.stats["AP"]
