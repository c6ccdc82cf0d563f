"""The training loop's pieces in process: train_step's edge cases, build_optimizer, resume_from.

Most tests use a toy model whose losses are means over samples (float64), so that a step's result can be
computed independently by hand; the trainer's own subprocess tests are in test_train.py.
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from crossvis.config import SolverConfig, load_config
from crossvis.engine.checkpoint import save_checkpoint
from crossvis.engine.optim import NORM_TYPES, build_optimizer, lr_at
from crossvis.engine.train_state import TrainState, checkpoint_state, gather_rng, resume_from
from crossvis.engine.train_step import train_step
from crossvis.errors import CrossVISError

CPU = torch.device("cpu")


class Toy(nn.Module):
    """y = W x + b; losses: the mean squared error and the mean absolute error over the samples."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(3, 2).double()

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch  # (N, 3), (N, 2)
        err = self.lin(x) - y
        return {"loss_mse": (err**2).mean(), "loss_l1": err.abs().mean()}


def _data(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(
        n, 2, generator=g, dtype=torch.float64
    )


def _micro_batches(x: torch.Tensor, y: torch.Tensor, k: int):
    return iter(zip(x.chunk(k), y.chunk(k), strict=True))


def _step(model: nn.Module, batches, *, state: TrainState | None = None, opt=None, **solver):
    opt = opt or torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    return train_step(
        model,
        batches,
        optimizer=opt,
        scaler=scaler,
        state=state or TrainState(),
        solver=replace(SolverConfig(), **solver),
        device=CPU,
    )


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_nonfinite_loss_skips_the_step_and_too_many_in_a_row_stop_training():
    model, (x, y) = Toy(), _data(4)
    bad_x = x.clone()
    bad_x[1, 0] = float("nan")  # one sample of the first micro-batch: the whole step must be skipped
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = TrainState(iteration=5)
    before = _params(model)
    for expected_bad in (1, 2):
        step = _step(model, iter([(bad_x[:2], y[:2]), (x[2:], y[2:])]), state=state, opt=opt, grad_accum=2)
        assert not step.stepped and state.bad_in_row == expected_bad
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
        assert all(p.grad is None for p in model.parameters()) and not opt.state  # no momentum from NaN
    step = _step(model, iter([(x, y)]), state=state, opt=opt, max_nonfinite=3)
    assert step.stepped and state.bad_in_row == 0  # a finite step resets the count
    assert not torch.equal(before[0], model.lin.weight)
    for _ in range(2):
        _step(model, iter([(bad_x, y)]), state=state, opt=opt, max_nonfinite=3)
    with pytest.raises(CrossVISError, match="3 non-finite losses in a row") as e:
        _step(model, iter([(bad_x, y)]), state=state, opt=opt, max_nonfinite=3)
    assert e.value.where == "iteration 5"
    assert torch.isfinite(model.lin.weight).all()


@pytest.mark.parametrize("k", [2, 4])
def test_accumulating_k_micro_batches_equals_one_step_on_their_union(k):
    """k equal micro-batches of a mean-reduced loss, each backpropagated / k, give the gradient of the mean
    over all 8 samples; so the step and the logged losses equal one step on the large batch (to float64
    rounding). With per-micro-batch normalisers (FCOS's positives) it is the mean of the k losses instead."""
    x, y = _data(8)
    big, acc = Toy(), Toy()
    start = _params(big)
    hand = Toy()  # by hand: the first step is p - lr * grad of the large batch's loss
    loss = sum(hand((x, y)).values())
    by_hand = [
        p - 0.5 * g for p, g in zip(start, torch.autograd.grad(loss, list(hand.parameters())), strict=True)
    ]
    opt_big = torch.optim.SGD(big.parameters(), lr=0.5, momentum=0.9)
    opt_acc = torch.optim.SGD(acc.parameters(), lr=0.5, momentum=0.9)
    for i in range(2):  # the second step also checks that gradients do not leak from one step to the next
        a = _step(big, iter([(x, y)]), opt=opt_big, grad_accum=1)
        b = _step(acc, _micro_batches(x, y, k), opt=opt_acc, grad_accum=k)
        if i == 0:
            for p, q in zip(by_hand, acc.parameters(), strict=True):
                torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-15)
            assert a.losses["loss_mse"] + a.losses["loss_l1"] == pytest.approx(
                float(loss.detach()), rel=1e-12
            )
        assert a.losses.keys() == b.losses.keys() == {"loss_mse", "loss_l1"}
        for name in a.losses:
            assert b.losses[name] == pytest.approx(a.losses[name], rel=1e-12, abs=0)
        for p, q in zip(big.parameters(), acc.parameters(), strict=True):
            torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-15)


def test_clipping_limits_the_global_gradient_norm():
    x, y = _data(8)
    y = y * 100  # large errors: the gradient norm is far above the limit
    ref = Toy()
    sum(ref((x, y)).values()).backward()
    grads = [p.grad.clone() for p in ref.parameters()]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert norm > 10

    model = Toy()
    before = _params(model)
    _step(model, iter([(x, y)]), opt=torch.optim.SGD(model.parameters(), lr=1.0), clip_gradients=0.5)
    clipped = [p.grad for p in model.parameters()]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in clipped]))
    assert total == pytest.approx(0.5, rel=1e-6)
    for g, c, p0, p in zip(grads, clipped, before, model.parameters(), strict=True):
        torch.testing.assert_close(c, g * (0.5 / norm))  # same direction, scaled down
        torch.testing.assert_close(p, p0 - c)  # and the step used the clipped gradient (lr 1, no momentum)

    unclipped = Toy()
    _step(unclipped, iter([(x, y)]), clip_gradients=0.0)  # 0: off
    torch.testing.assert_close(unclipped.lin.weight.grad, grads[0])


def test_build_optimizer_puts_norm_layers_in_the_weight_decay_norm_group():
    from crossvis.modeling.builders import crossvis_tiny

    model = crossvis_tiny(num_identities=3)
    model.backbone.requires_grad_(False)  # frozen parameters are left out
    cfg = load_config(
        None, ["solver.weight_decay=0.01", "solver.weight_decay_norm=0.002", "solver.momentum=0.8"]
    )
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.SGD)
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    assert set(by_decay) == {0.01, 0.002}
    norm = {
        id(p)
        for m in model.modules()
        if isinstance(m, NORM_TYPES)
        for p in m.parameters(recurse=False)
        if p.requires_grad
    }
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert norm and by_decay[0.002] == norm
    assert by_decay[0.01] == trainable - norm
    assert id(model.head.cls_logits.weight) in by_decay[0.01]
    assert not {id(p) for p in model.backbone.parameters()} & (by_decay[0.01] | by_decay[0.002])
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(lr_at(cfg, 0)) and g["momentum"] == 0.8
    adamw = build_optimizer(model, load_config(None, ["solver.optimizer=AdamW"]))
    assert isinstance(adamw, torch.optim.AdamW)
    with pytest.raises(CrossVISError, match="solver.optimizer"):
        build_optimizer(model, load_config(None, ["solver.optimizer=Adam"]))


def _save(out, model, opt, *, iteration: int, best_ap: float) -> None:
    state = TrainState(iteration=iteration, best_ap=best_ap, bad_in_row=2)
    save_checkpoint(
        out,
        iteration=iteration,
        model=model,
        cfg=load_config(None, ["model.fcos.num_classes=1"]),  # one class, as the names say
        class_names=["a"],
        category_ids=[1],
        state=checkpoint_state(
            state, optimizer=opt, scaler=torch.amp.GradScaler("cuda", enabled=False), rng=gather_rng(1)
        ),
    )


def test_resume_restores_iteration_best_ap_optimizer_weights_and_rng(tmp_path):
    x, y = _data(8)
    model = Toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _step(model, iter([(x, y)]), opt=opt)
    _save(tmp_path, model, opt, iteration=4, best_ap=0.1)
    _step(model, iter([(x, y)]), opt=opt)
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    _save(tmp_path, model, opt, iteration=7, best_ap=0.25)
    draws = (torch.rand(3), np.random.rand(3), random.random())
    _step(model, iter([(x, y)]), opt=opt)  # the uninterrupted run's next step
    expected = _params(model)

    other = Toy(seed=9)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    state = resume_from(
        tmp_path,
        model=other,
        optimizer=other_opt,
        scaler=torch.amp.GradScaler("cuda", enabled=False),
        rank=0,
        world=1,
    )
    assert state == TrainState(iteration=7, best_ap=0.25, bad_in_row=0)  # the newest checkpoint
    assert torch.equal(torch.rand(3), draws[0]) and np.array_equal(np.random.rand(3), draws[1])
    assert random.random() == draws[2]
    buffers = [other_opt.state[p]["momentum_buffer"] for p in other.parameters()]
    assert all(b is not None and b.abs().sum() > 0 for b in buffers)
    _step(other, iter([(x, y)]), opt=other_opt)
    for p, q in zip(expected, other.parameters(), strict=True):
        assert torch.equal(p, q)  # weights + momentum restored: the next step is bit-identical


def test_resume_without_a_checkpoint_starts_from_scratch(tmp_path):
    model = Toy()
    before = _params(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    state = resume_from(tmp_path, model=model, optimizer=opt, scaler=scaler, rank=0, world=1)
    assert state == TrainState() and state.best_ap == -1.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def _rank_steps(rank: int, world: int, init_file: str, out: str) -> None:
    """One process of the two-rank test: a finite step, then a step where only rank 1's loss is NaN."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, (x, y) = Toy(), _data(4, seed=10 + rank)  # each rank its own data
        opt, state = torch.optim.SGD(model.parameters(), lr=0.1), TrainState()
        first = _step(model, iter([(x, y)]), state=state, opt=opt)
        after_first = model.lin.weight.detach().clone()
        if rank == 1:
            x = x.clone()
            x[0, 0] = float("nan")
        second = _step(model, iter([(x, y)]), state=state, opt=opt)
        torch.save(
            {
                "first": (first.stepped, first.losses),
                "second": (second.stepped, state.bad_in_row),
                "unchanged": torch.equal(after_first, model.lin.weight),
            },
            f"{out}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: about 30 s on a busy 2-core machine
def test_two_ranks_agree_to_skip_and_log_the_mean_loss(tmp_path):
    """Only rank 1's loss is non-finite: both ranks skip the step. Logged losses are the ranks' mean."""
    import torch.multiprocessing as mp

    mp.spawn(_rank_steps, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r = [torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2)]
    by_hand = [{k: float(v.detach()) for k, v in Toy()(_data(4, seed=10 + i)).items()} for i in range(2)]
    for rank in r:
        stepped, losses = rank["first"]
        assert stepped and losses.keys() == by_hand[0].keys()
        for k, v in losses.items():
            assert v == pytest.approx((by_hand[0][k] + by_hand[1][k]) / 2, rel=1e-12)
        assert rank["second"] == (False, 1) and rank["unchanged"]
