"""A fast bit-exact resume check for ``make test`` (the kill-and-resume version in test_train.py is slow).

Straight through: 4 iterations, a checkpoint every 2. Interrupted: the same run stopped at iteration 2 (its
last checkpoint), then ``crossvis train ... --resume`` to 4. With ``deterministic=true`` the final weights
must be equal bit for bit: the model, optimizer and RNG states are restored, and the pair stream skips exactly
the pairs already used. Two accumulation steps of one pair each, so "pairs per step" and "pairs per
iteration" differ and a resume that skips by the wrong one is seen.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from test_train import ROOT, _overrides, _train_cmd  # noqa: E402


def _run(out: Path, overrides: list[str], resume: bool = False) -> None:
    cmd = _train_cmd(out, overrides)
    if resume:
        cmd = cmd[: -len(overrides)] + ["--resume", *overrides]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]


def test_resume_is_bit_exact(tmp_path, synth_dir):
    common = {
        "solver.checkpoint_period": 2,
        "solver.ims_per_batch": 2,
        "solver.grad_accum": 2,
        "input.min_size_train": "[64, 96]",
        "deterministic": "true",
    }
    straight = _overrides(synth_dir, **common, **{"solver.max_iter": 4})
    _run(tmp_path / "ref", straight)
    out = tmp_path / "resumed"
    _run(out, _overrides(synth_dir, **common, **{"solver.max_iter": 2}))  # "interrupted" at iteration 2
    assert (out / "checkpoints" / "model_0000002.safetensors").is_file()
    _run(out, straight, resume=True)
    assert "resumed from" in (out / "train.log").read_text()
    a = load_file(str(tmp_path / "ref" / "model_final.safetensors"))
    b = load_file(str(out / "model_final.safetensors"))
    c = load_file(str(out / "checkpoints" / "model_0000002.safetensors"))
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the last two iterations did change the weights
    for k in a:
        assert torch.equal(a[k], b[k]), k
