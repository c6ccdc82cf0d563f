"""How a training run starts: :func:`initialize` (called by the trainer right after the model is built).

The initialisation chain (paper and official README): MSRA ImageNet ResNet -> CondInst trained on COCO ->
CrossVIS on the video dataset. Each link:

- ``model.weights``: a whole-model start. A crossvis ``.safetensors`` or an official detectron2/AdelaiDet
  ``.pth`` (CondInst or CrossVIS; read with ``torch.load(weights_only=True)``). Tensors whose name and shape
  match are loaded; every other model tensor keeps its fresh initialisation and is *listed* in the log
  (for a COCO CondInst: the 80-class ``cls_logits``, the identity tower/embedding and the identity classifier).
  Checkpoint tensors the model has no place for are listed too.
- ``model.init_class_map``: then copies the COCO classifier rows of matching classes (person, dog, car, ...)
  into the target classes (:mod:`crossvis.data.categories`).
- ``model.backbone.weights_file`` / ``model.backbone.pretrained``: an ImageNet trunk only (loaded when the
  backbone is built; only when ``model.weights`` is empty).
- ``model.init: scratch``: random weights on purpose (warning). Without any of the above and without
  ``scratch`` the run stops: random initialisation is never an accident.

Before anything is trained the input the ImageNet weights expect (timm's ``pretrained_cfg``, or MSRA: BGR
0-255, MSRA mean, std 1, stride in the 1x1 conv) is compared with ``input.*`` and
``model.backbone.stride_in_1x1``; a mismatch stops the run with the settings to use.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from crossvis.config import Config
from crossvis.data.categories import COCO_CATEGORIES, class_map_tables
from crossvis.errors import CrossVISError

log = logging.getLogger("crossvis.init")

INIT_MODES = ("pretrained", "scratch")


@dataclass
class InitReport:
    """What :func:`initialize` did. Tensor names are the model's state-dict keys."""

    source: str = "random"
    loaded: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)  # model tensors left at their fresh initialisation
    mismatched: list[str] = field(default_factory=list)  # in the checkpoint with another shape (also fresh)
    unused: list[str] = field(default_factory=list)  # checkpoint tensors the model has no place for
    class_rows: dict[str, str] = field(default_factory=dict)  # target class -> COCO class copied into it

    def lines(self) -> list[str]:
        """The report as log lines (nothing is left out)."""
        out = [f"initialised from {self.source}: {len(self.loaded)} tensors loaded"]
        if self.mismatched:
            out.append(
                f"shape differs, initialised fresh ({len(self.mismatched)}): {', '.join(self.mismatched)}"
            )
        new = [k for k in self.fresh if k not in self.mismatched]
        if new:
            out.append(f"not in the checkpoint, initialised fresh ({len(new)}): {', '.join(_modules(new))}")
        if self.unused:
            out.append(f"checkpoint tensors not used ({len(self.unused)}): {', '.join(self.unused)}")
        if self.class_rows:
            pairs = ", ".join(f"{t}<-{c}" for t, c in self.class_rows.items())
            out.append(f"classifier rows copied from COCO ({len(self.class_rows)}): {pairs}")
        return out


def _modules(keys: list[str]) -> list[str]:
    """Tensor names grouped by module (``head.identity_tower.0.weight`` ... -> ``head.identity_tower.*``)."""
    seen: dict[str, None] = {}
    for k in keys:
        parts = k.split(".")
        seen[".".join(parts[:2]) + ".*" if len(parts) > 2 else k] = None
    return list(seen)


def initialize(model: nn.Module, cfg: Config, class_names: list[str]) -> InitReport:
    """Initialise ``model`` (built from ``cfg``) for training on a dataset with ``class_names``.

    Checks the input normalisation against the ImageNet weights, loads ``model.weights`` when given, copies
    classifier rows per ``model.init_class_map``, logs every line of the returned :class:`InitReport`.
    Raises CrossVISError for a contradiction, a mismatch or a missing explicit choice.
    """
    m = cfg.model
    if m.init not in INIT_MODES:
        raise CrossVISError("model.init", f"must be one of {', '.join(INIT_MODES)}, got {m.init!r}")
    sources = [
        s
        for s, on in (
            (f"model.weights={m.weights}", bool(m.weights)),
            (f"model.backbone.weights_file={m.backbone.weights_file}", bool(m.backbone.weights_file)),
            ("model.backbone.pretrained=true", m.backbone.pretrained),
        )
        if on
    ]
    if m.init == "scratch" and sources:
        raise CrossVISError("model.init=scratch", f"contradicts {sources[0]}: choose one")
    if m.init == "pretrained" and not sources:
        raise CrossVISError(
            "model.init=pretrained",
            "no initial weights: set model.weights (e.g. a COCO CondInst .pth), model.backbone.weights_file "
            "(e.g. the MSRA R-50.pkl) or model.backbone.pretrained=true; or model.init=scratch to train "
            "from random weights on purpose",
        )
    check_input(model, cfg)
    if m.weights:
        report = load_initial_weights(model, m.weights)
    elif m.backbone.weights_file or m.backbone.pretrained:
        what = m.backbone.weights_file or f"timm ImageNet weights of {m.backbone.name}"
        report = InitReport(source=f"ImageNet backbone ({what}); FPN and heads random")
    else:
        report = InitReport(source="random weights (model.init=scratch)")
        log.warning(
            "training from random weights (model.init=scratch): on a real dataset expect far lower AP "
            "than the paper's MSRA -> COCO CondInst -> CrossVIS chain"
        )
    if m.init_class_map:
        if not m.weights:
            raise CrossVISError("model.init_class_map", "needs model.weights (a COCO CondInst checkpoint)")
        report.class_rows = copy_class_rows(model, m.weights, m.init_class_map, class_names)
    if m.weights and m.backbone.weights_file:
        log.info("model.weights holds the backbone: model.backbone.weights_file was not read")
    for line in report.lines():
        log.info("%s", line)
    return report


# ------------------------------------------------------------------------------------------ input check


def check_input(model: nn.Module, cfg: Config) -> None:
    """Stop when ``input.*`` / ``model.backbone.stride_in_1x1`` differ from what the loaded ImageNet weights
    expect (the backbone's ``weights_input``); the error names each mismatch and the values to set."""
    backbone = getattr(model, "backbone", None)
    want = getattr(backbone, "weights_input", None)
    if not want:
        if cfg.model.backbone.weights_file and not cfg.model.weights:
            log.warning(
                "%s does not say what input it expects: make sure input.format/pixel_mean/pixel_std "
                "match how it was trained",
                cfg.model.backbone.weights_file,
            )
        return
    have = {
        "input.format": cfg.input.format,
        "input.pixel_mean": list(cfg.input.pixel_mean),
        "input.pixel_std": list(cfg.input.pixel_std),
        "model.backbone.stride_in_1x1": cfg.model.backbone.stride_in_1x1,
    }
    need = {
        "input.format": want["input_format"],
        "input.pixel_mean": want["pixel_mean"],
        "input.pixel_std": want["pixel_std"],
        "model.backbone.stride_in_1x1": want["stride_in_1x1"],
    }
    if not _moves_stride(backbone):  # the stride placement only matters for bottleneck ResNets
        del have["model.backbone.stride_in_1x1"], need["model.backbone.stride_in_1x1"]
    bad = [k for k in need if not _same(have[k], need[k])]
    if bad:
        fix = " ".join(f"{k}={_fmt(need[k])}" for k in bad)
        got = ", ".join(f"{k} is {_fmt(have[k])}" for k in bad)
        raise CrossVISError(
            want.get("source", "backbone weights"), f"the weights expect other input: {got}; set {fix}"
        )


def _moves_stride(backbone: nn.Module) -> bool:
    body = getattr(backbone, "body", None)
    stage = getattr(body, "layer2", None)
    return stage is not None and hasattr(stage[0], "conv3")


def _same(a: object, b: object) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(abs(float(x) - float(y)) <= 0.01 for x, y in zip(a, b))
    return a == b


def _fmt(v: object) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ",".join(f"{float(x):g}" for x in v) + "]"
    return str(v)


# ------------------------------------------------------------------------------------------ whole-model start


def read_initial_state(path: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``model.weights`` -> (state dict in our names, checkpoint keys that have no counterpart in our model).

    crossvis ``.safetensors`` (or a shipped name) are read as they are; detectron2/AdelaiDet ``.pth`` files
    (CondInst, CrossVIS) are read with ``weights_only=True`` and renamed.
    """
    from crossvis.engine.checkpoint import _official_to_ours
    from crossvis.modeling.weights import read_weights

    p = Path(path)
    if p.suffix != ".pth":
        return read_weights(path).state_dict, []
    if not p.is_file():
        raise CrossVISError(path, "initial weights file not found")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CrossVISError(path, f"not a loadable weights-only checkpoint ({type(e).__name__})") from None
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state:
        raise CrossVISError(path, "no state dict ('model') in the checkpoint")
    mapped, unused = {}, []
    for k, v in state.items():
        nk = _official_to_ours(k)
        if nk is None or not isinstance(v, torch.Tensor):
            unused.append(k)
        else:
            mapped[nk] = v
    return mapped, unused


def load_initial_weights(model: nn.Module, path: str) -> InitReport:
    """Load every tensor of ``path`` whose name and shape match the model; report the rest."""
    state, unused = read_initial_state(path)
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    mismatched = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    unused = sorted(unused + [k for k in state if k not in own])
    if not fitting:
        raise CrossVISError(path, "no tensor of the checkpoint fits the model (another architecture?)")
    model.load_state_dict(fitting, strict=False)
    fresh = [k for k in own if k not in fitting and not k.endswith("num_batches_tracked")]
    return InitReport(
        source=str(path), loaded=sorted(fitting), fresh=fresh, mismatched=mismatched, unused=unused
    )


# ------------------------------------------------------------------------------------------ class rows


def class_map_table(spec: str, class_names: list[str]) -> dict[str, str | None]:
    """``model.init_class_map`` -> {target class: COCO class or None}, checked against the dataset's classes."""
    tables = class_map_tables()
    if spec == "auto":
        found = [n for n, t in tables.items() if list(t) == list(class_names)]
        if not found:
            raise CrossVISError(
                "model.init_class_map=auto",
                f"no shipped table ({', '.join(tables)}) has the dataset's classes; give a JSON file",
            )
        table = tables[found[0]]
    elif spec in tables:
        table = tables[spec]
    else:
        p = Path(spec)
        if not p.is_file():
            raise CrossVISError(spec, f"model.init_class_map: not a table ({', '.join(tables)}) or a file")
        try:
            table = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CrossVISError(spec, f"not a JSON object ({type(e).__name__})") from None
        if not isinstance(table, dict):
            raise CrossVISError(spec, "must be a JSON object {target class: COCO class or null}")
    missing = [n for n in class_names if n not in table]
    if missing:
        raise CrossVISError(
            f"model.init_class_map={spec}", f"has no entry for the dataset's class '{missing[0]}'"
        )
    extra = [n for n in table if n not in class_names]
    if extra:
        raise CrossVISError(f"model.init_class_map={spec}", f"names class '{extra[0]}', not in the dataset")
    bad = [c for c in table.values() if c is not None and c not in COCO_CATEGORIES]
    if bad:
        raise CrossVISError(f"model.init_class_map={spec}", f"'{bad[0]}' is not a COCO class")
    return table


def copy_class_rows(model: nn.Module, weights: str, spec: str, class_names: list[str]) -> dict[str, str]:
    """Copy ``cls_logits`` rows (weight and bias) of the COCO checkpoint into the mapped target classes."""
    table = class_map_table(spec, class_names)
    state, _ = read_initial_state(weights)
    w, b = state.get("head.cls_logits.weight"), state.get("head.cls_logits.bias")
    if w is None or b is None or w.shape[0] != len(COCO_CATEGORIES):
        rows = None if w is None else w.shape[0]
        raise CrossVISError(
            weights, f"model.init_class_map needs an 80-class COCO classifier, found {rows} rows"
        )
    head = model.head.cls_logits
    if w.shape[1:] != head.weight.shape[1:]:
        raise CrossVISError(
            weights, f"cls_logits shape {tuple(w.shape)} does not fit {tuple(head.weight.shape)}"
        )
    copied = {}
    with torch.no_grad():
        for t, name in enumerate(class_names):
            coco = table[name]
            if coco is None:
                continue
            c = COCO_CATEGORIES.index(coco)
            head.weight[t].copy_(w[c])
            head.bias[t].copy_(b[c])
            copied[name] = coco
    return copied
