from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crossvis.config import load_config
from crossvis.engine.trainer import PairStream, lr_at, param_groups
from crossvis.modeling.builders import crossvis_tiny


def _overrides(synth_dir: Path, **extra) -> list[str]:
    base = {
        "data.train_json": synth_dir / "annotations.json",
        "data.train_images": synth_dir / "JPEGImages",
        "data.val_json": "''",
        "data.synth_train": "null",
        "data.synth_val": "null",
        "data.num_workers": 0,
        "input.min_size_train": "[96]",
        "input.max_size_train": 128,
        "solver.ims_per_batch": 2,
        "solver.reference_batch": 2,
        "solver.checkpoint_period": 0,
        "solver.warmup_iters": 2,
        "test.eval_period": 0,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def _train_cmd(out: Path, overrides: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "crossvis.cli.main",
        "-q",
        "train",
        "configs/synthetic_tiny.yaml",
        "--output",
        str(out),
        *overrides,
    ]


ROOT = Path(__file__).resolve().parent.parent


def test_lr_schedule_warmup_steps_and_scaling():
    cfg = load_config(None)  # official: 0.005 for 16 pairs, warm-up 1000 from 0.001x, steps 15k/21k
    assert lr_at(cfg, 0) == pytest.approx(0.005 * 0.001)
    assert lr_at(cfg, 500) == pytest.approx(0.005 * (0.001 * 0.5 + 0.5))
    assert lr_at(cfg, 1000) == pytest.approx(0.005)
    assert lr_at(cfg, 15000) == pytest.approx(0.0005) and lr_at(cfg, 21000) == pytest.approx(0.00005)
    half = load_config(None, ["solver.ims_per_batch=8"])
    assert lr_at(half, 2000) == pytest.approx(0.0025)  # linear scaling with the global batch
    assert lr_at(load_config(None, ["solver.ims_per_batch=8", "solver.scale_lr=false"]), 2000) == 0.005


def test_no_weight_decay_on_norm_layers():
    model = crossvis_tiny(num_identities=3)
    decay, no_decay = param_groups(model, weight_decay=1e-4, weight_decay_norm=0.0)
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 1e-4
    norm_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, torch.nn.GroupNorm | torch.nn.BatchNorm2d)
        for p in m.parameters(recurse=False)
    }
    assert {id(p) for p in no_decay["params"]} == norm_ids
    assert any(p is model.head.cls_logits.weight for p in decay["params"])


def test_pair_stream_shards_and_resumes():
    full = PairStream(10, seed=1)
    first = [x for _, x in zip(range(25), iter(full))]
    assert sorted(i for i, _ in first[:10]) == list(range(10))  # one epoch = a permutation
    r0 = [x for _, x in zip(range(6), iter(PairStream(10, 1, rank=0, world=2)))]
    r1 = [x for _, x in zip(range(6), iter(PairStream(10, 1, rank=1, world=2)))]
    assert r0 == first[0:12:2] and r1 == first[1:12:2]
    resumed = [x for _, x in zip(range(5), iter(PairStream(10, 1, start=7)))]
    assert resumed == first[7:12]


def test_train_cli_runs_validates_and_exports_weights_that_predict_uses(tmp_path, synth_dir):
    out = tmp_path / "run"
    ov = _overrides(
        synth_dir,
        **{
            "solver.max_iter": 3,
            "test.eval_period": 3,
            "data.val_json": synth_dir / "annotations.json",
            "data.val_images": synth_dir / "JPEGImages",
        },
    )
    r = subprocess.run(_train_cmd(out, ov), capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    final = out / "model_final.safetensors"
    assert final.is_file() and (out / "train.log").is_file() and (out / "config.yaml").is_file()
    assert list((out / "checkpoints").glob("model_0000003.*"))  # saved at the end
    val = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [v["iteration"] for v in val] == [3] and 0 <= val[0]["AP"] <= 1
    assert (out / "model_best.safetensors").is_file()
    from crossvis.modeling.weights import load_model

    model, w = load_model(final)
    assert w.class_names == ["circle", "square", "triangle", "star", "cross"] and w.record["seed"] == 0


def test_train_guards(tmp_path, synth_dir):
    r = subprocess.run(
        _train_cmd(
            tmp_path / "r", _overrides(synth_dir, **{"solver.ims_per_batch": 3, "solver.grad_accum": 2})
        ),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2 and "solver.ims_per_batch" in r.stderr and r.stderr.count("\n") == 1
    empty = tmp_path / "empty.json"
    empty.write_text('{"videos": [], "categories": [{"id": 1, "name": "a"}], "annotations": []}')
    r = subprocess.run(
        _train_cmd(tmp_path / "r2", _overrides(synth_dir, **{"data.train_json": empty})),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2 and "no annotations" in r.stderr


def _last_losses(log: Path) -> dict[str, float]:
    line = [l for l in log.read_text().splitlines() if " iter " in l][-1]
    return {k: float(v) for k, v in re.findall(r"(loss_\w+)=([-\d.e]+)", line)}


def test_two_process_gloo_run_matches_one_process_loss(tmp_path, synth_dir):
    """torchrun, 2 CPU processes x 2 pairs vs 1 process x 4 pairs, first iteration.

    The FCOS losses use normalisers averaged over ranks, so they agree to float rounding (rel 1e-4). The
    backbone BN is frozen for the comparison: train-mode BN statistics depend on the per-rank batch.
    """
    ov = _overrides(
        synth_dir,
        **{
            "solver.max_iter": 1,
            "solver.ims_per_batch": 4,
            "solver.reference_batch": 4,
            "model.backbone.frozen_bn": "true",
        },
    )
    one = subprocess.run(_train_cmd(tmp_path / "one", ov), capture_output=True, text=True, cwd=ROOT)
    assert one.returncode == 0, one.stderr[-2000:]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    torchrun = (
        launcher + _train_cmd(tmp_path / "two", ov)[1:]
    )  # "python -m crossvis.cli.main ..." minus python
    two = subprocess.run(
        torchrun, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _last_losses(tmp_path / "one" / "train.log"), _last_losses(tmp_path / "two" / "train.log")
    for k in ("loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"):
        assert b[k] == pytest.approx(a[k], rel=1e-4), (k, a, b)


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_weights(tmp_path, synth_dir):
    ov = _overrides(
        synth_dir, **{"solver.max_iter": 12, "solver.checkpoint_period": 4, "deterministic": "true"}
    )
    ref = subprocess.run(_train_cmd(tmp_path / "ref", ov), capture_output=True, text=True, cwd=ROOT)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "killed"
    p = subprocess.Popen(_train_cmd(out, ov), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + 600
    while not (out / "checkpoints" / "model_0000008.safetensors").exists():
        assert time.time() < deadline and p.poll() is None
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "model_final.safetensors").exists()
    shutil.rmtree(out / "tensorboard", ignore_errors=True)
    r = subprocess.run(
        _train_cmd(out, ov)[: -len(ov)] + ["--resume", *ov], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr[-2000:]
    a = load_file(str(tmp_path / "ref" / "model_final.safetensors"))
    b = load_file(str(out / "model_final.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_tiny_model_overfits_one_synthetic_pair(synth_dir):
    """400 CPU steps on one pair: masks IoU > 0.8, crossover and identity losses decrease."""
    from crossvis.data.pairs import FramePairDataset, collate_pairs
    from crossvis.data.ytvis import YTVISDataset

    torch.manual_seed(0)
    ds = YTVISDataset(synth_dir / "annotations.json", synth_dir / "JPEGImages")
    pairs = FramePairDataset(ds, [128], 192, hflip=False)
    pair = next(p for p in (pairs[(i, 7)] for i in range(len(pairs))) if (p[0].links >= 0).sum() >= 2)
    batch = collate_pairs([pair])
    model = crossvis_tiny(num_classes=5, num_identities=ds.num_identities).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(400):
        losses = model(batch)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append({k: float(v) for k, v in losses.items()})
    first = {k: sum(h[k] for h in history[:10]) / 10 for k in history[0]}
    last = {k: sum(h[k] for h in history[-10:]) / 10 for k in history[0]}
    assert last["loss_crossover"] < 0.5 * first["loss_crossover"]
    assert last["loss_identity"] < 0.5 * first["loss_identity"]
    model.eval()
    (det,) = model.inference([pair[0].image])
    gt = pair[0].masks
    for g in gt:
        inter = (det.masks & g).flatten(1).sum(1).float()
        union = (det.masks | g).flatten(1).sum(1).float()
        assert (inter / union).max() > 0.8


def test_init_from_weights_reinitialises_only_mismatched_layers(tmp_path, synth_dir):
    from crossvis.modeling.builders import build_model, tiny_config
    from crossvis.modeling.weights import save_weights

    torch.manual_seed(1)
    cfg3 = tiny_config(num_classes=3)
    donor = build_model(cfg3, num_identities=7)
    init = tmp_path / "init.safetensors"
    save_weights(donor, init, cfg3, ["a", "b", "c"], include_identity_classifier=True)
    out = tmp_path / "run"
    ov = _overrides(
        synth_dir,
        **{"solver.max_iter": 1, "model.weights": init, "solver.base_lr": 0.0, "model.init": "pretrained"},
    )
    r = subprocess.run(_train_cmd(out, ov), capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    log = (out / "train.log").read_text()
    assert (
        "head.cls_logits.weight" in log and "identity_classifier.weight" in log
    )  # 3 -> 5 classes, 7 -> n ids
    trained = load_file(str(out / "model_final.safetensors"))
    donor_sd = donor.state_dict()
    # lr 0: every tensor that fits comes from the donor (BN running stats move in train mode; skip them)
    for k in ("head.bbox_pred.weight", "controller.weight", "mask_branch.tower.0.0.weight", "fpn.p6.weight"):
        assert torch.equal(trained[k], donor_sd[k]), k
    assert trained["head.cls_logits.weight"].shape[0] == 5
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))  # TensorBoard scalars


def test_backbone_weights_from_a_local_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    from crossvis.modeling.backbone import Backbone

    torch.manual_seed(2)
    ref = timm.create_model("resnet18", features_only=True)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    b = Backbone("resnet18", freeze_at=0, stride_in_1x1=False, frozen_bn=False, weights_file=str(path))
    assert torch.equal(
        b.body.state_dict()["layer3.1.conv2.weight"], ref.state_dict()["layer3.1.conv2.weight"]
    )
