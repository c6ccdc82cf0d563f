"""Model builders: ``crossvis_r50``, ``crossvis_r101``, ``crossvis_lite_dla34``, ``crossvis_tiny``, and
``build_model`` from a :class:`~crossvis.config.Config`.

Each builder is its packaged YAML config (``configs/*.yaml``) and nothing else: ``crossvis_r50()`` equals
``build_model(load_config("configs/crossvis_R50_1x.yaml"))`` without the config's ImageNet initialisation
(``pretrained_backbone=True`` keeps it: detectron2's MSRA ``R-50.pkl`` for the ResNets, timm's weights for
DLA-34). Keyword overrides name config fields under
``model`` as ``section__field=value`` (``crossvis__crossover=False``) and are validated like ``key=value``
overrides on the command line: an unknown field or a wrong type is a :class:`~crossvis.errors.CrossVISError`.
"""

from __future__ import annotations

from typing import Any

from crossvis.config import Config, apply_overrides, load_config, packaged_config
from crossvis.modeling.backbone import Backbone
from crossvis.modeling.crossvis import CrossVIS


def build_model(cfg: Config, num_identities: int = 0) -> CrossVIS:
    """The model a config describes. ``num_identities`` (from the training set) sizes the identity
    classifier; ``cfg.model.crossvis.num_identities`` overrides it when non-zero."""
    m = cfg.model
    b = m.backbone
    backbone = Backbone(
        b.name,
        freeze_at=b.freeze_at,
        stride_in_1x1=b.stride_in_1x1,
        frozen_bn=b.frozen_bn,
        pretrained=b.pretrained,
        # the whole-model checkpoint (model.weights) holds the backbone: its ImageNet file is then not read
        weights_file="" if m.weights else b.weights_file,
    )
    return CrossVIS(
        backbone,
        num_identities=m.crossvis.num_identities or num_identities,
        width=m.width,
        fcos=m.fcos,
        condinst=m.condinst,
        crossvis=m.crossvis,
        pixel_mean=tuple(cfg.input.pixel_mean),
        pixel_std=tuple(cfg.input.pixel_std),
        input_format=cfg.input.format,
        size_divisibility=cfg.input.size_divisibility,
        tfc=m.tfc,
    )


def builder_config(name: str, num_classes: int, **overrides: Any) -> Config:
    """The packaged config ``name`` with ``model.fcos.num_classes`` and ``section__field`` overrides of
    ``model`` applied (validated; the caller's values are not modified)."""
    items = {"model.fcos.num_classes": num_classes}
    items |= {"model." + k.replace("__", "."): v for k, v in overrides.items()}
    return apply_overrides(load_config(packaged_config(name)), items, where=f"builder of {name}.yaml")


def _backbone_init(pretrained_backbone: bool) -> dict[str, Any]:
    """Without ``pretrained_backbone`` the YAML's ImageNet initialisation (MSRA ``.pkl`` file or timm weights)
    is dropped: the weights are random, as torchvision's builders give with ``weights_backbone=None``."""
    return {} if pretrained_backbone else {"backbone__pretrained": False, "backbone__weights_file": ""}


def crossvis_r50(
    num_classes: int = 40, num_identities: int = 3774, pretrained_backbone: bool = False, **overrides: Any
) -> CrossVIS:
    """CrossVIS R-50 (``configs/crossvis_R50_1x.yaml``; the official architecture: 37,417,569 parameters
    with 40 classes and 3,774 identities).

    ``overrides`` set model config fields, ``section__field=value`` (e.g. ``crossvis__crossover=False``).
    """
    cfg = builder_config("crossvis_R50_1x", num_classes, **_backbone_init(pretrained_backbone), **overrides)
    return build_model(cfg, num_identities)


def crossvis_r101(
    num_classes: int = 40, num_identities: int = 3774, pretrained_backbone: bool = False, **overrides: Any
) -> CrossVIS:
    """CrossVIS R-101 (``configs/crossvis_R101_1x.yaml``; 56,357,473 parameters with 40 classes and 3,774
    identities)."""
    cfg = builder_config("crossvis_R101_1x", num_classes, **_backbone_init(pretrained_backbone), **overrides)
    return build_model(cfg, num_identities)


def crossvis_lite_dla34(
    num_classes: int = 40, num_identities: int = 3774, pretrained_backbone: bool = False, **overrides: Any
) -> CrossVIS:
    """CrossVIS-Lite (``configs/crossvis_lite_DLA34.yaml``): a DLA-34 backbone (timm, RGB input with the
    ImageNet mean and std) with the same head."""
    cfg = builder_config(
        "crossvis_lite_DLA34", num_classes, **_backbone_init(pretrained_backbone), **overrides
    )
    return build_model(cfg, num_identities)


def tiny_config(num_classes: int = 5) -> Config:
    """The small CPU model of ``configs/synthetic_tiny.yaml`` (RegNetX-200MF, 64 channels, 2-conv towers)."""
    return builder_config("synthetic_tiny", num_classes)


def crossvis_tiny(num_classes: int = 5, num_identities: int = 0, **overrides: Any) -> CrossVIS:
    """A tiny CrossVIS for CPU tests and the demo (``configs/synthetic_tiny.yaml``: RegNetX-200MF, 64
    channels)."""
    return build_model(builder_config("synthetic_tiny", num_classes, **overrides), num_identities)
