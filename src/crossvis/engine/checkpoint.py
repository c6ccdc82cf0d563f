"""Training checkpoints (atomic: weights as .safetensors + a small .pt of optimizer, iteration, RNG and
sampler state), export, and conversion of official detectron2 checkpoints."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from crossvis.config import Config, load_config, resolve_config_path
from crossvis.data.ytvis import YTVIS2019_CATEGORIES
from crossvis.errors import CrossVISError
from crossvis.io import atomic_path
from crossvis.modeling.weights import read_weights, save_weights

log = logging.getLogger(__name__)

_NAME = re.compile(r"model_(\d{7})\.safetensors$")


def save_checkpoint(
    out_dir: Path,
    *,
    iteration: int,
    model: torch.nn.Module,
    cfg: Config,
    class_names: list[str],
    category_ids: list[int],
    state: dict,
    keep: int = 3,
    record: dict | None = None,
) -> Path:
    """Write ``out_dir/checkpoints/model_{iteration:07d}.safetensors`` (``model``'s weights, identity
    classifier included, with ``cfg``, class names, category ids and ``record``) and ``.state.pt`` (``state``,
    the trainer's state); keep the last ``keep`` of them (all when ``keep`` <= 0).

    The state file is written first and the weights last, so a checkpoint counts only when complete.
    """
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stem = ckpt_dir / f"model_{iteration:07d}"
    with atomic_path(stem.with_suffix(".state.pt")) as tmp:
        torch.save(state, tmp)
    save_weights(
        model,
        stem.with_suffix(".safetensors"),
        cfg=cfg,
        class_names=class_names,
        category_ids=category_ids,
        record=record,
        include_identity_classifier=True,
    )
    for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
        old.with_name(old.name.replace(".safetensors", ".state.pt")).unlink(missing_ok=True)
    return stem.with_suffix(".safetensors")


def list_checkpoints(out_dir: Path) -> list[Path]:
    """The checkpoints' weights files in ``out_dir/checkpoints``, oldest iteration first."""
    d = out_dir / "checkpoints"
    if not d.is_dir():
        return []
    found = [p for p in d.iterdir() if _NAME.search(p.name)]
    return sorted(found, key=lambda p: int(_NAME.search(p.name).group(1)))


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, trainer state) of a checkpoint; loading executes no code (weights_only)."""
    w = read_weights(path)
    state_path = path.with_name(path.name.replace(".safetensors", ".state.pt"))
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CrossVISError(state_path, "checkpoint state file missing") from None
    except Exception as e:
        raise CrossVISError(state_path, f"cannot load checkpoint state ({type(e).__name__})") from None
    return w.state_dict, state


def export_weights(checkpoint: str | os.PathLike, output: str | os.PathLike) -> Path:
    """A training checkpoint -> inference weights (identity classifier dropped) with config and class names."""
    from crossvis.modeling.weights import load_model

    model, w = load_model(checkpoint, "cpu")
    return save_weights(
        model,
        output,
        cfg=w.config,
        class_names=w.class_names,
        category_ids=w.category_ids,
        record=w.record,
    )


def _official_to_ours(key: str) -> str | None:
    """Map a detectron2/AdelaiDet CrossVIS key to ours (None: not part of our model)."""
    k = key
    if k.startswith("backbone.bottom_up."):
        k = k[len("backbone.bottom_up.") :]
        k = k.replace("stem.conv1.norm.", "bn1.").replace("stem.conv1.", "conv1.")
        m = re.match(r"res(\d)\.(\d+)\.(.*)", k)
        if m:
            stage, block, rest = int(m.group(1)), m.group(2), m.group(3)
            rest = re.sub(r"conv(\d)\.norm\.", r"bn\1.", rest)
            rest = rest.replace("shortcut.norm.", "downsample.1.").replace("shortcut.", "downsample.0.")
            k = f"layer{stage - 1}.{block}.{rest}"
        return f"backbone.body.{k}"
    for src, dst in (("backbone.fpn_lateral", "fpn.lateral."), ("backbone.fpn_output", "fpn.output.")):
        if k.startswith(src):
            level, rest = k[len(src)], k[len(src) + 2 :]
            return f"{dst}{int(level) - 3}.{rest}"
    if k.startswith("backbone.top_block."):
        return "fpn." + k[len("backbone.top_block.") :]
    if k.startswith("proposal_generator.fcos_head."):
        k = k[len("proposal_generator.fcos_head.") :]
        k = k.replace("reid_tower.", "identity_tower.").replace("reid_pred_bn.", "identity_bn.")
        k = k.replace("reid_pred.", "identity_pred.")
        return f"head.{k}"
    if k.startswith("mask_branch."):
        m = re.match(r"mask_branch\.tower\.4\.(.*)", k)
        return f"mask_branch.tower.4.{m.group(1)}" if m else k
    if k.startswith("cls."):
        return "identity_classifier." + k[4:]
    if k.startswith(("controller.", "mask_head.sizes_of_interest")):
        return k
    return None


def convert_official(
    checkpoint: str | os.PathLike, output: str | os.PathLike, config: str | None = None
) -> Path:
    """An official CrossVIS (or CondInst) detectron2 ``.pth`` -> crossvis ``.safetensors``; an MSRA ImageNet
    ``.pkl`` (detectron2's R-50.pkl / R-101.pkl) -> backbone weights (see :func:`convert_msra_backbone`).

    The file is read with ``torch.load(weights_only=True)``: pickled code is never run. Official models take
    BGR 0-255 input with the MSRA mean; the default R-50 config already says so.
    """
    from crossvis.modeling.builders import build_model

    path = Path(checkpoint)
    if not path.is_file():
        raise CrossVISError(path, "checkpoint not found")
    if path.suffix == ".pkl":
        if config:
            raise CrossVISError(path, "--config is for .pth checkpoints; a .pkl backbone needs none")
        return convert_msra_backbone(path, output)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CrossVISError(
            path,
            f"not a loadable weights-only checkpoint ({type(e).__name__}); "
            "official .pth files are plain state dicts",
        ) from None
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise CrossVISError(path, "no state dict ('model') in the checkpoint")
    cfg = (
        load_config(resolve_config_path(config))
        if config
        else load_config(resolve_config_path("crossvis_R50_1x"))
    )
    cfg.model.backbone.weights_file = ""  # every backbone tensor comes from the checkpoint
    mapped = {}
    for k, v in state.items():
        nk = _official_to_ours(k)
        if nk is not None and not k.endswith("._iter"):
            mapped[nk] = torch.as_tensor(v)
    n_id = int(mapped["identity_classifier.weight"].shape[0]) if "identity_classifier.weight" in mapped else 0
    model = build_model(cfg, n_id)
    own = model.state_dict()
    bad = [k for k, v in mapped.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise CrossVISError(
            path,
            f"shapes differ from the config's model, e.g. {bad[0]}: "
            f"{tuple(mapped[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}",
        )
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        log.warning(
            "%d model keys not in the checkpoint (kept initialised), e.g. %s", len(missing), missing[:3]
        )
    if unexpected:
        log.warning("%d checkpoint keys unused, e.g. %s", len(unexpected), unexpected[:3])
    names = YTVIS2019_CATEGORIES[: cfg.model.fcos.num_classes]
    return save_weights(
        model,
        output,
        cfg=cfg,
        class_names=names,
        category_ids=list(range(1, len(names) + 1)),
        record={"converted_from": str(path)},
        include_identity_classifier=True,
    )


def convert_msra_backbone(pkl: str | os.PathLike, output: str | os.PathLike) -> Path:
    """An MSRA ImageNet ResNet ``.pkl`` (Caffe2 names; read without running code) -> a ``.safetensors`` of
    the backbone trunk in timm's names, usable as ``model.backbone.weights_file``.

    Every trunk tensor of the matching ResNet (50/101/152, from the number of res4 blocks) must be in the file;
    the metadata records the input the weights expect (BGR 0-255, MSRA mean, std 1, stride in the 1x1 conv),
    which training checks against the config. Returns the output path.
    """
    import json

    from safetensors.torch import save_file

    from crossvis.modeling.backbone import Backbone
    from crossvis.modeling.msra import MSRA_INPUT, read_msra_pkl, resnet_depth

    path = Path(pkl)
    state, unused = read_msra_pkl(path)
    depth = resnet_depth(state)
    if not depth:
        raise CrossVISError(path, "not a ResNet-50/101/152 in Caffe2 names (no res4 blocks of a known count)")
    own = Backbone(f"resnet{depth}", freeze_at=0, stride_in_1x1=True, frozen_bn=True).body.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise CrossVISError(path, f"{len(missing)} ResNet-{depth} tensors missing, e.g. '{missing[0]}'")
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise CrossVISError(
            path, f"'{bad[0]}': shape {tuple(state[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}"
        )
    extra = sorted(k for k in state if k not in own)
    meta = {
        "format": "crossvis-backbone-1",
        "source": f"MSRA ImageNet ResNet-{depth} ({path.name})",
        "backbone": f"resnet{depth}",
        "input": json.dumps(MSRA_INPUT),
        "unused": json.dumps(unused + extra),
    }
    log.info(
        "%s: ResNet-%d, %d tensors; not used: %s", path, depth, len(own), ", ".join(unused + extra) or "none"
    )
    with atomic_path(output) as tmp:
        save_file({k: state[k].contiguous() for k in own}, str(tmp), metadata=meta)
    return Path(output)
