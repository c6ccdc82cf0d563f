from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crossvis.data.synthetic import SynthParams, generate


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic YouTube-VIS dataset (6 videos)."""
    out = tmp_path_factory.mktemp("synth")
    generate(out, SynthParams(videos=6, frames=6, seed=3, height=96, width=128))
    return out


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory, synth_dir) -> Path:
    """Randomly initialised tiny-model weights with config and class names (no training)."""
    from crossvis.modeling.builders import build_model, tiny_config
    from crossvis.modeling.weights import save_weights

    torch.manual_seed(0)
    cfg = tiny_config(num_classes=5)
    model = build_model(cfg)
    # make the untrained head fire: high class prior so detections (and tracks) exist
    torch.nn.init.constant_(model.head.cls_logits.bias, 0.0)
    names = [c["name"] for c in json.loads((synth_dir / "annotations.json").read_text())["categories"]]
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(model, path, cfg, names, list(range(1, 6)))
    return path


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script in a subprocess (as a user would)."""
    return subprocess.run(
        [sys.executable, "-m", "crossvis.cli.main", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )
