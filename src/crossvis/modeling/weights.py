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
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from crossvis.config import (
    Config,
    apply_overrides,
    config_from_dict,
    drop_removed_keys,
    dump_config,
    parse_yaml,
)
from crossvis.data.safe_json import loads
from crossvis.errors import CrossVISError, brief
from crossvis.io import atomic_path
from crossvis.limits import MAX_CLASSES, MAX_METADATA_CHARS, MAX_WEIGHTS_BYTES

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


def _read_file(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file; the library checks the header against the file size."""
    size = path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise CrossVISError(path, f"{size} bytes: larger than the limit of {MAX_WEIGHTS_BYTES} for weights")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types on any corruption
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        raise CrossVISError(path, f"not a readable safetensors file ({type(e).__name__}: {msg})") from None
    for key, value in meta.items():
        if len(value) > MAX_METADATA_CHARS:
            raise CrossVISError(
                path, f"metadata '{brief(key)[1:-1]}' is longer than {MAX_METADATA_CHARS} characters"
            )
    return meta, state


def _json_meta(meta: dict[str, str], key: str, default: str, kind: type, where: str) -> Any:
    value = loads(meta.get(key, default), f"{where}: metadata '{key}'")
    if not isinstance(value, kind):
        raise CrossVISError(where, f"metadata '{key}' must be a JSON {kind.__name__}, got {brief(value)}")
    return value


def _check_finite(state: dict[str, torch.Tensor], where: Path) -> None:
    """NaN or Inf in a weight makes every prediction NaN: refused at load, naming the first such tensor."""
    for key, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n = int((~torch.isfinite(t)).sum())
            raise CrossVISError(where, f"tensor '{key}' holds {n} NaN/Inf values (a diverged training run?)")


def read_weights(name_or_path: str | os.PathLike) -> LoadedWeights:
    """A crossvis ``.safetensors`` file -> its tensors, config, class names, category ids and record, all
    validated (anything malformed is a one-line CrossVISError naming the file). Loading executes no code."""
    path = resolve_weights(name_or_path)
    if path.suffix != ".safetensors":
        raise CrossVISError(
            path,
            "crossvis weights are .safetensors files (use `crossvis convert` for official .pth checkpoints)",
        )
    meta, state = _read_file(path)
    if "crossvis_config" not in meta:
        raise CrossVISError(path, "no crossvis config in the file's metadata (not written by crossvis?)")
    where = f"{path} (metadata)"
    cfg = stored_config(meta["crossvis_config"], where)
    names = _json_meta(meta, "class_names", "[]", list, where)
    cats = _json_meta(meta, "category_ids", "[]", list, where)
    record = _json_meta(meta, "record", "{}", dict, where)
    n = cfg.model.fcos.num_classes
    _check_classes(names, cats, n, where)
    names = names or [str(i) for i in range(n)]
    cats = cats or list(range(1, n + 1))
    _check_finite(state, path)
    return LoadedWeights(state_dict=state, config=cfg, class_names=names, category_ids=cats, record=record)


def _check_classes(names: list, cats: list, num_classes: int, where: str) -> None:
    if len(names) > MAX_CLASSES or num_classes > MAX_CLASSES or num_classes < 1:
        raise CrossVISError(where, f"the number of classes must be 1..{MAX_CLASSES}")
    if not all(isinstance(n, str) for n in names):
        raise CrossVISError(where, "'class_names' must be a list of strings")
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in cats):
        raise CrossVISError(where, "'category_ids' must be a list of integers")
    for key, items in (("class names", names), ("category ids", cats)):
        if items and len(items) != num_classes:
            raise CrossVISError(
                where, f"{len(items)} {key} for a model of {num_classes} classes (model.fcos.num_classes)"
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


def _check_fits(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """The file's tensors against the model its config describes (built on the meta device, so nothing is
    allocated): the first missing, unexpected or mismatched tensor is named with both shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CrossVISError(
            where,
            f"weights do not fit the model: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})",
        )
    for key, t in own.items():
        if tuple(state[key].shape) != tuple(t.shape):
            raise CrossVISError(
                where,
                f"weights are for another architecture: tensor '{key}' is {tuple(state[key].shape)} in the "
                f"file but {tuple(t.shape)} in the model its config describes",
            )
        if t.is_floating_point() != state[key].is_floating_point():
            raise CrossVISError(where, f"tensor '{key}' has dtype {state[key].dtype}, expected {t.dtype}")


def _build(cfg: Config, where: str, device: str | torch.device) -> torch.nn.Module:
    from crossvis.modeling.builders import build_model

    try:
        with torch.device(device):
            return build_model(cfg, num_identities=0)
    except CrossVISError:
        raise
    except Exception as e:  # noqa: BLE001 - a config from a file that names no buildable model
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        raise CrossVISError(
            where, f"its config describes no buildable model ({type(e).__name__}: {msg})"
        ) from None


def stored_config(text: str, where: str) -> Config:
    """The config stored in a weights or ONNX file's metadata (YAML, parsed with the config loader's limits;
    keys that older versions accepted but never read are dropped)."""
    data = parse_yaml(text, where)
    if data is not None and not isinstance(data, dict):
        raise CrossVISError(where, "'crossvis_config' must be a YAML mapping")
    return config_from_dict(drop_removed_keys(data or {}), where)


def inference_config(stored: Config, config: Config | None, overrides: list[str] | None) -> Config:
    """The config to build a model for stored weights: ``config`` (or the stored one) with ``overrides``, and
    no ImageNet initialisation (every tensor is loaded next; it must not touch the network). A new object."""
    over = [*(overrides or []), "model.backbone.pretrained=false", "model.backbone.weights_file="]
    return apply_overrides(config or stored, over)


def load_model(
    name_or_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    config: Config | None = None,
    overrides: list[str] | None = None,
):
    """Build the model its weights describe and load them. Returns (model in eval mode, LoadedWeights).

    ``config`` replaces the config stored with the weights; ``overrides`` (``key.sub=value``) are applied on
    top of either. The caller's config object is never modified. The weights are checked against the model
    (built first on the meta device) before any memory is spent on it.
    """
    w = read_weights(name_or_path)
    cfg = inference_config(w.config, config, overrides)
    state = {k: v for k, v in w.state_dict.items() if not k.startswith("identity_classifier.")}
    _check_fits(_build(cfg, str(name_or_path), "meta"), state, str(name_or_path))
    model = _build(cfg, str(name_or_path), "cpu")
    model.load_state_dict(state, strict=False)
    w.config = cfg
    return model.to(device).eval(), w
