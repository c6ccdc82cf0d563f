"""Configuration: plain dataclasses, small YAML files, ``key.sub=value`` overrides.

Keys are the official detectron2/AdelaiDet names in lower case (``MODEL.FCOS.NMS_TH`` -> ``model.fcos.nms_th``,
``SOLVER.MAX_ITER`` -> ``solver.max_iter``). Defaults are the official CrossVIS R-50 1x settings. A YAML file
may name a ``_base_`` file (relative to itself) whose values it overrides. Unknown keys and wrong types are
errors that name the key and the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from crossvis.errors import CrossVISError, brief
from crossvis.limits import MAX_BASE_CHAIN, MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES


@dataclass
class BackboneConfig:
    name: str = "resnet50"  # resnet50 | resnet101 | dla34 | any timm model with features_only
    freeze_at: int = 2  # 0: nothing frozen; 1: stem; 2: stem + first stage (official)
    stride_in_1x1: bool = True  # MSRA/detectron2 ResNet form: stride on the first 1x1 conv
    pretrained: bool = False  # load timm ImageNet weights (needs them cached, or `weights_file`)
    weights_file: str = ""  # local ImageNet weights (safetensors or .pth state dict) for the trunk
    frozen_bn: bool = True


@dataclass
class FCOSConfig:
    num_classes: int = 40
    fpn_strides: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    num_convs: int = 4  # cls, box and identity towers each (NUM_CLS_CONVS = NUM_BOX_CONVS = 4)
    norm: str = "GN"  # GN (32 groups) | none
    prior_prob: float = 0.01
    center_sample: bool = True
    pos_radius: float = 1.5
    sizes_of_interest: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    loss_alpha: float = 0.25
    loss_gamma: float = 2.0
    inference_th_test: float = 0.05
    pre_nms_topk_test: int = 1000
    post_nms_topk_test: int = 100
    nms_th: float = 0.6


@dataclass
class CondInstConfig:
    mask_out_stride: int = 4
    max_proposals: int = 500
    mask_head_channels: int = 8
    mask_head_num_layers: int = 3
    disable_rel_coords: bool = False
    mask_branch_channels: int = 128
    mask_branch_num_convs: int = 4
    mask_branch_out_channels: int = 8
    mask_branch_norm: str = "BN"  # BN | SyncBN | none


@dataclass
class CrossVISConfig:
    crossover: bool = True
    embedding_dim: int = 256
    # global_focal (the paper's global balanced embedding, default) | global_ce | pairwise_ce | pairwise_focal
    identity_loss: str = "global_focal"
    num_identities: int = 0  # 0: read from the training dataset (never hard-coded)
    sample_region: int = 20  # reference frame within +-N annotated frames of the key frame
    loss_weight_crossover: float = 1.0
    loss_weight_identity: float = 1.0
    loss_weight_det: float = 1.0
    backbone_grad_scale: float = 0.1  # gradient into FPN + backbone scaled by this (official 0.1x trick)


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fcos: FCOSConfig = field(default_factory=FCOSConfig)
    condinst: CondInstConfig = field(default_factory=CondInstConfig)
    crossvis: CrossVISConfig = field(default_factory=CrossVISConfig)
    width: int = 256  # FPN and head channels (MODEL.FPN.OUT_CHANNELS); the tiny CPU model uses less
    weights: str = ""  # initial weights: our .safetensors, a shipped name, or an official .pth/.pkl
    # How training starts (crossvis.engine.initialization): "pretrained" needs model.weights (e.g. a COCO
    # CondInst .pth), model.backbone.weights_file (e.g. MSRA R-50.pkl) or model.backbone.pretrained;
    # "scratch" starts from random weights on purpose (a warning is logged).
    init: str = "pretrained"
    # Copy COCO classifier rows into matching target classes: "" (off), "auto" (the shipped table whose
    # classes are the dataset's), a table name (ytvis2019 | ytvis2021 | ovis) or a JSON file {target: coco|null}
    init_class_map: str = ""
    tfc: bool = False  # temporal feature calibration (OVIS paper) on the FPN features; see modeling/tfc.py


@dataclass
class SynthConfig:
    """Settings of the synthetic video generator (`crossvis synth`); in a config, the split to generate
    when its folder is absent."""

    videos: int = 60
    frames: int = 12  # mean length; each video's length varies by +-25%
    seed: int = 0
    height: int = 192  # largest frame size; videos are 0.75-1x of it
    width: int = 256
    num_classes: int = 5
    difficulty: float = 1.0  # 0 easy .. 2 hard: objects, speed, clutter, gaps
    compressed_rle: bool = False  # write compressed (string) RLE instead of uncompressed counts
    # Appearance change (crossvis.data.appearance): strengths, 0 = off, 1 = documented; x (0.5 + 0.5 difficulty)
    lighting_drift: float = 0.0  # brightness, tint and a light gradient drift over the clip
    color_drift: float = 0.0  # each object's texture and colours drift
    deformation: float = 0.0  # non-rigid outline wobble and squash/stretch
    motion_blur: float = 0.0  # exposure over sub-frames; masks at mid-exposure
    entry_scale: float = 0.0  # entering objects grow from small to full size
    lookalikes: float = 0.0  # extra objects of an existing class with close colours


@dataclass
class DataConfig:
    train_json: str = "datasets/youtubevis/annotations/train.json"
    train_images: str = "datasets/youtubevis/train/JPEGImages"
    val_json: str = ""
    val_images: str = ""
    synth_train: SynthConfig | None = None  # generate the train split first when absent
    synth_val: SynthConfig | None = None
    num_workers: int = -1  # DataLoader workers; -1: what the machine has (min(4, CPUs - 1))


@dataclass
class InputConfig:
    min_size_train: list[int] = field(default_factory=lambda: [360])
    max_size_train: int = 640
    min_size_test: int = 360
    max_size_test: int = 640
    hflip_train: bool = True
    format: str = "BGR"  # BGR 0-255 (official weights) or RGB
    pixel_mean: list[float] = field(default_factory=lambda: [103.530, 116.280, 123.675])
    pixel_std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    size_divisibility: int = 32


@dataclass
class SolverConfig:
    ims_per_batch: int = 16  # frame pairs per iteration, over all ranks
    base_lr: float = 0.005
    reference_batch: int = (
        16  # base_lr is for this many pairs; lr = base_lr * ims_per_batch / reference_batch
    )
    scale_lr: bool = True
    optimizer: str = "SGD"  # SGD (official) | AdamW (trains small models from scratch faster)
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    steps: list[int] = field(default_factory=lambda: [15000, 21000])
    gamma: float = 0.1
    max_iter: int = 23000
    warmup_factor: float = 0.001
    warmup_iters: int = 1000
    checkpoint_period: int = 1900
    checkpoint_keep: int = 3
    grad_accum: int = 1  # micro-batches per optimizer step (per rank); global batch stays ims_per_batch
    clip_gradients: float = 0.0  # max global grad norm; 0 = off (official)
    amp: bool = False  # CUDA automatic mixed precision
    max_nonfinite: int = 5  # abort after this many non-finite losses in a row


@dataclass
class TrackerConfig:
    match_threshold: float = 0.4
    memory_momentum: float = 0.0  # 0: compare with the last detection (official); else EMA of embeddings
    max_missed: int = (
        0  # 0: tracks never end (official); N > 0: a track ends after N frames without a detection
    )
    # what streams (predict, webcam, URLs, VideoPredictor.track) use while max_missed is 0; 0: never end there
    # either. 30 from reports/stream_lifetime.md
    stream_max_missed: int = 30
    min_new_score: float = 0.0  # 0: every detection can open a track (official)
    hungarian: bool = False  # greedy (official) or Hungarian assignment
    use_embedding: bool = True  # False: IoU-only association (for comparison)


@dataclass
class TestConfig:
    eval_period: int = 0
    mask_threshold: float = 0.5
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    input: InputConfig = field(default_factory=InputConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    test: TestConfig = field(default_factory=TestConfig)
    seed: int = 0
    deterministic: bool = (
        False  # deterministic kernels, one thread on CPU: bit-identical reruns and resumes, slower
    )
    output_dir: str = "runs/crossvis"


# ---------------------------------------------------------------------------------------------------------------
# Values: the ranges and choices a config is checked against on load (a value outside them is the usual one-line
# error naming the key, not a crash deep inside training). Ranges are inclusive; None = unbounded; a list is
# checked item by item.

RANGES: dict[str, tuple[float | None, float | None]] = {
    "model.width": (1, None),
    "model.backbone.freeze_at": (0, 5),
    "model.fcos.num_classes": (1, None),
    "model.fcos.fpn_strides": (1, None),
    "model.fcos.num_convs": (0, None),
    "model.fcos.prior_prob": (1e-12, 1 - 1e-12),
    "model.fcos.pos_radius": (0, None),
    "model.fcos.sizes_of_interest": (1, None),
    "model.fcos.loss_alpha": (0, 1),
    "model.fcos.loss_gamma": (0, None),
    "model.fcos.inference_th_test": (0, 1),
    "model.fcos.pre_nms_topk_test": (1, None),
    "model.fcos.post_nms_topk_test": (1, None),
    "model.fcos.nms_th": (0, 1),
    "model.condinst.mask_out_stride": (1, None),
    "model.condinst.max_proposals": (1, None),
    "model.condinst.mask_head_channels": (1, None),
    "model.condinst.mask_head_num_layers": (2, None),
    "model.condinst.mask_branch_channels": (1, None),
    "model.condinst.mask_branch_num_convs": (0, None),
    "model.condinst.mask_branch_out_channels": (1, None),
    "model.crossvis.embedding_dim": (1, None),
    "model.crossvis.num_identities": (0, None),
    "model.crossvis.sample_region": (0, None),
    "model.crossvis.loss_weight_crossover": (0, None),
    "model.crossvis.loss_weight_identity": (0, None),
    "model.crossvis.loss_weight_det": (0, None),
    "model.crossvis.backbone_grad_scale": (0, 1),
    "data.num_workers": (-1, None),
    "input.min_size_train": (1, None),
    "input.max_size_train": (1, None),
    "input.min_size_test": (1, None),
    "input.max_size_test": (1, None),
    "input.pixel_std": (1e-12, None),
    "input.size_divisibility": (1, None),
    "solver.ims_per_batch": (1, None),
    "solver.base_lr": (0, None),
    "solver.reference_batch": (1, None),
    "solver.momentum": (0, 1),
    "solver.weight_decay": (0, None),
    "solver.weight_decay_norm": (0, None),
    "solver.steps": (0, None),
    "solver.gamma": (0, None),
    "solver.max_iter": (1, None),
    "solver.warmup_factor": (0, 1),
    "solver.warmup_iters": (0, None),
    "solver.checkpoint_period": (0, None),
    "solver.checkpoint_keep": (0, None),
    "solver.grad_accum": (1, None),
    "solver.clip_gradients": (0, None),
    "solver.max_nonfinite": (1, None),
    "test.eval_period": (0, None),
    "test.mask_threshold": (0, 1),
    "test.tracker.memory_momentum": (0, 1),
    "test.tracker.max_missed": (0, None),
    "test.tracker.min_new_score": (0, 1),
}

CHOICES: dict[str, tuple[str, ...]] = {
    "model.init": ("pretrained", "scratch"),
    "model.fcos.norm": ("GN", "none"),
    "model.condinst.mask_branch_norm": ("BN", "SyncBN", "none"),
    "model.crossvis.identity_loss": ("global_focal", "global_ce", "pairwise_ce", "pairwise_focal"),
    "input.format": ("BGR", "RGB"),
    "solver.optimizer": ("SGD", "AdamW"),
}


def _value(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def check_values(cfg: Config, where: str) -> Config:
    """Check ``cfg`` against :data:`RANGES` and :data:`CHOICES`; return it."""
    for key, (lo, hi) in RANGES.items():
        value = _value(cfg, key)
        for v in value if isinstance(value, list) else [value]:
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
                raise CrossVISError(where, f"config key '{key}' must be {bounds}, got {brief(value)}")
    for key, options in CHOICES.items():
        value = _value(cfg, key)
        if value not in options:
            raise CrossVISError(
                where, f"config key '{key}' must be one of {', '.join(options)}; got {brief(value)}"
            )
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# Loading


#: Keys that crossvis 0.1 accepted but never read, and what to use instead. Config files naming them are
#: refused with that hint; configs stored in weights files written by 0.1 have them dropped on load.
REMOVED_KEYS: dict[str, str] = {
    "model.fpn": "model.width (FPN and head channels)",
    "test.detections_per_image": "model.fcos.post_nms_topk_test",
    "data.filter_empty_annotations": "nothing (frames without a visible object are never sampled)",
}


def drop_removed_keys(data: dict) -> dict:
    """A copy of a config mapping without :data:`REMOVED_KEYS` (for configs stored by older versions)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for key in REMOVED_KEYS:
        section, _, name = key.partition(".")
        if isinstance(out.get(section), dict):
            out[section].pop(name, None)
    return out


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _yaml_shape_problem(data: Any) -> str | None:
    """Depth and size of parsed YAML, aliases expanded (an "alias bomb" is refused, not walked whole)."""
    stack, nodes = [(data, 0)], 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_YAML_NODES:
            return f"more than {MAX_YAML_NODES} values (aliases expanded)"
        if depth > MAX_YAML_DEPTH:
            return f"nested deeper than the limit of {MAX_YAML_DEPTH} levels"
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return None


def parse_yaml(text: str, where: str | Path) -> Any:
    """YAML text -> plain data (safe loader); malformed, too deep or too big YAML is a CrossVISError."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CrossVISError(where, f"invalid YAML: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise CrossVISError(where, f"YAML nested deeper than the limit of {MAX_YAML_DEPTH} levels") from None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. a timestamp out of range
        raise CrossVISError(where, f"invalid YAML value ({brief(str(e))})") from None
    problem = _yaml_shape_problem(data)
    if problem:
        raise CrossVISError(where, f"invalid config: {problem}")
    return data


def _read_text(path: Path) -> str:
    """A config file's text, read no further than ``MAX_YAML_BYTES``."""
    from crossvis.data.safe_json import read_text_bytes

    try:
        with open(path, "rb") as f:
            raw = read_text_bytes(f, MAX_YAML_BYTES, path, "a YAML config file")
    except OSError as e:
        raise CrossVISError(path, f"cannot read config: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CrossVISError(path, "not a YAML config file (not UTF-8 text)") from None


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise CrossVISError(path, "_base_ inheritance loops back to this file")
    if len(seen) > MAX_BASE_CHAIN:
        raise CrossVISError(path, f"_base_ chain longer than the limit of {MAX_BASE_CHAIN} inheritances")
    data = parse_yaml(_read_text(path), path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CrossVISError(path, "a config file must be a mapping of keys to values")
    base = data.pop("_base_", None)
    if base is not None and not isinstance(base, str):
        raise CrossVISError(path, f"'_base_' must be a file name, got {brief(base)}")
    if base:
        data = _merge(_read_yaml(path.parent / base, (*seen, path)), data)
    return data


def _is_instance(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check ``value`` against a (simple) type annotation; return (ok, value converted where safe)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return True, None
        for arg in typing.get_args(tp):
            if arg is not type(None):
                ok, conv = _is_instance(value, arg)
                if ok:
                    return True, conv
        return False, value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            return False, value
        out = []
        for v in value:
            ok, conv = _is_instance(v, item_tp)
            if not ok:
                return False, value
            out.append(conv)
        return True, out
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False, value
        return True, float(value)
    if tp is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    return isinstance(value, tp), value


def _build(cls: type, data: dict, where: str, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            if full in REMOVED_KEYS:
                raise CrossVISError(
                    where, f"config key '{full}' was removed (never read): use {REMOVED_KEYS[full]}"
                )
            raise CrossVISError(where, f"unknown config key '{full}'")
        tp = hints[key]
        sub = _dataclass_of(tp)
        if sub is not None and isinstance(value, dict):
            kwargs[key] = _build(sub, value, where, f"{full}.")
            continue
        if sub is not None and value is not None:
            raise CrossVISError(where, f"config key '{full}' must be a mapping, got {brief(value)}")
        ok, conv = _is_instance(value, tp)
        if not ok:
            raise CrossVISError(where, f"config key '{full}' must be {_type_name(tp)}, got {brief(value)}")
        kwargs[key] = conv
    return cls(**kwargs)


def _dataclass_of(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def parse_overrides(overrides: list[str]) -> dict:
    """``["solver.max_iter=20", "model.fcos.nms_th=0.5"]`` -> nested dict (values parsed as YAML)."""
    items: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise CrossVISError(item, "an override must look like key.sub=value")
        try:
            items[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            items[key] = raw
    return nest_overrides(items)


def nest_overrides(items: dict[str, Any]) -> dict:
    """``{"solver.max_iter": 20}`` -> ``{"solver": {"max_iter": 20}}``."""
    out: dict = {}
    for key, value in items.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CrossVISError(key, f"'{part}' is set both as a value and as a group")
        node[parts[-1]] = value
    return out


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict, where: str = "<config>") -> Config:
    return check_values(_build(Config, data, where, ""), where)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (with ``_base_``) and apply ``key.sub=value`` overrides on top of the defaults."""
    data: dict = {}
    where = "<defaults>"
    if path is not None:
        path = Path(path)
        data = _read_yaml(path)
        where = str(path)
    return apply_overrides(check_values(_build(Config, data, where, ""), where), overrides)


def apply_overrides(
    cfg: Config, overrides: list[str] | dict[str, Any] | None, where: str = "command line"
) -> Config:
    """A new config: ``cfg`` with overrides, validated as a YAML file is (``cfg`` itself is left unchanged).

    ``overrides``: ``["key.sub=value", ...]`` (values parsed as YAML) or ``{"key.sub": value}``.
    """
    if isinstance(overrides, dict):
        over = nest_overrides(overrides)
    else:
        over = parse_overrides(overrides or [])
    return check_values(_build(Config, _merge(config_to_dict(cfg), over), where, ""), where)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


CONFIG_DIR = Path(__file__).parent / "configs"


def packaged_config(name: str) -> Path:
    """Path of a config shipped inside the package (``synthetic_tiny``, ``crossvis_R50_1x``, ...)."""
    return CONFIG_DIR / f"{name.removesuffix('.yaml')}.yaml"


def resolve_config_path(path: str | Path) -> Path:
    """A config path as given, or else the packaged config of that name."""
    p = Path(path)
    if p.is_file():
        return p
    q = packaged_config(p.name)
    if q.is_file():
        return q
    raise CrossVISError(path, "config file not found")
