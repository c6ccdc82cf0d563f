"""Weights as documented objects: safetensors files that carry their own config and class names.

A crossvis weights file is a ``.safetensors`` state dict whose metadata holds ``crossvis_config`` (the YAML
of the :class:`~crossvis.config.Config` that built it), ``class_names`` (JSON list, contiguous class order),
``category_ids`` (the dataset ids the results file uses) and ``record`` (how they were made). Loading never
executes code.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from crossvis.config import Config, apply_overrides, config_from_dict, drop_removed_keys, dump_config
from crossvis.errors import CrossVISError
from crossvis.io import atomic_path

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class WeightsInfo:
    """A weight set shipped inside the package."""

    name: str
    file: str
    description: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


SHIPPED = {
    "synthetic-tiny": WeightsInfo(
        "synthetic-tiny",
        "synthetic_tiny.safetensors",
        "Tiny CrossVIS (RegNetX-200MF, 64 channels) trained on the default synthetic videos "
        "(configs/synthetic_tiny.yaml); see reports/ for its metrics and the command that made it.",
    ),
}


def resolve_weights(name_or_path: str | os.PathLike) -> Path:
    """A shipped weight-set name or a file path -> an existing file path."""
    s = str(name_or_path)
    if s in SHIPPED:
        p = SHIPPED[s].path
        if not p.is_file():
            raise CrossVISError(s, f"shipped weights are missing from this installation ({p})")
        return p
    p = Path(s)
    if not p.is_file():
        known = ", ".join(SHIPPED)
        raise CrossVISError(s, f"weights file not found (shipped weight sets: {known})")
    return p


@dataclass
class LoadedWeights:
    state_dict: dict[str, torch.Tensor]
    config: Config
    class_names: list[str]
    category_ids: list[int]
    record: dict


def read_weights(name_or_path: str | os.PathLike) -> LoadedWeights:
    path = resolve_weights(name_or_path)
    if path.suffix != ".safetensors":
        raise CrossVISError(
            path,
            "crossvis weights are .safetensors files (use `crossvis convert` for official .pth checkpoints)",
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CrossVISError(path, f"not a readable safetensors file ({type(e).__name__}: {e})") from None
    if "crossvis_config" not in meta:
        raise CrossVISError(path, "no crossvis config in the file's metadata (not written by crossvis?)")
    stored = drop_removed_keys(yaml.safe_load(meta["crossvis_config"]) or {})
    cfg = config_from_dict(stored, f"{path} (metadata)")
    names = json.loads(meta.get("class_names", "[]"))
    cats = json.loads(meta.get("category_ids", "[]")) or list(range(1, len(names) + 1))
    return LoadedWeights(
        state_dict=state,
        config=cfg,
        class_names=names,
        category_ids=cats,
        record=json.loads(meta.get("record", "{}")),
    )


def save_weights(
    model: torch.nn.Module,
    path: str | os.PathLike,
    cfg: Config,
    class_names: list[str],
    category_ids: list[int] | None = None,
    record: dict | None = None,
    include_identity_classifier: bool = False,
) -> Path:
    """Write the model's weights (atomically) with everything ``predict`` needs to run them."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if not include_identity_classifier:
        state = {k: v for k, v in state.items() if not k.startswith("identity_classifier.")}
    meta = {
        "format": "crossvis-1",
        "crossvis_config": dump_config(cfg),
        "class_names": json.dumps(list(class_names)),
        "category_ids": json.dumps(list(category_ids or range(1, len(class_names) + 1))),
        "record": json.dumps(record or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def load_model(
    name_or_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    config: Config | None = None,
    overrides: list[str] | None = None,
):
    """Build the model its weights describe and load them. Returns (model in eval mode, LoadedWeights).

    ``config`` replaces the config stored with the weights; ``overrides`` (``key.sub=value``) are applied on
    top of either. The caller's config object is never modified.
    """
    from crossvis.modeling.builders import build_model

    w = read_weights(name_or_path)
    # ImageNet initialisation is irrelevant (every tensor is loaded next) and must not touch the network
    cfg = apply_overrides(config or w.config, [*(overrides or []), "model.backbone.pretrained=false"])
    cfg.model.backbone.weights_file = ""
    model = build_model(cfg, num_identities=0)
    state = {k: v for k, v in w.state_dict.items() if not k.startswith("identity_classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CrossVISError(
            name_or_path,
            f"weights do not fit the model: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})",
        )
    w.config = cfg
    return model.to(device).eval(), w
