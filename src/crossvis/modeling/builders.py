"""Model builders: ``crossvis_r50``, ``crossvis_r101``, ``crossvis_lite_dla34``, ``crossvis_tiny``, and
``build_model`` from a :class:`~crossvis.config.Config`."""

from __future__ import annotations

from dataclasses import replace

from crossvis.config import Config, ModelConfig
from crossvis.modeling.backbone import Backbone
from crossvis.modeling.crossvis import CrossVIS


def build_model(cfg: Config, num_identities: int = 0) -> CrossVIS:
    """The model a config describes. ``num_identities`` (from the training set) sizes the identity
    classifier; ``cfg.model.crossvis.num_identities`` overrides it when non-zero."""
    m: ModelConfig = cfg.model
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
    n_id = m.crossvis.num_identities or num_identities
    return CrossVIS(
        backbone,
        num_classes=m.fcos.num_classes,
        num_identities=n_id,
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


def _with_overrides(cfg: Config, overrides: dict) -> Config:
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        setattr(getattr(cfg.model, section) if name else cfg.model, name or section, value)
    return cfg


def _build(
    backbone: str, num_classes: int, num_identities: int, pretrained_backbone: bool, **overrides
) -> CrossVIS:
    cfg = Config()
    cfg.model.backbone = replace(cfg.model.backbone, name=backbone, pretrained=pretrained_backbone)
    if backbone == "dla34":  # DLA has no MSRA stride form and no frozen stem convention
        cfg.model.backbone = replace(cfg.model.backbone, stride_in_1x1=False, freeze_at=0)
    cfg.model.fcos = replace(cfg.model.fcos, num_classes=num_classes)
    return build_model(_with_overrides(cfg, overrides), num_identities)


def crossvis_r50(
    num_classes: int = 40, num_identities: int = 3774, pretrained_backbone: bool = False, **overrides
) -> CrossVIS:
    """CrossVIS R-50 (official architecture: 37,417,569 parameters with 40 classes and 3,774 identities).

    ``overrides`` set model config fields, ``section__field=value`` (e.g. ``crossvis__crossover=False``).
    """
    return _build("resnet50", num_classes, num_identities, pretrained_backbone, **overrides)


def crossvis_r101(
    num_classes: int = 40, num_identities: int = 3774, pretrained_backbone: bool = False, **overrides
) -> CrossVIS:
    """CrossVIS R-101 (56,357,473 parameters with 40 classes and 3,774 identities)."""
    return _build("resnet101", num_classes, num_identities, pretrained_backbone, **overrides)


def crossvis_lite_dla34(
    num_classes: int = 40, num_identities: int = 3774, pretrained_backbone: bool = False, **overrides
) -> CrossVIS:
    """CrossVIS-Lite: a DLA-34 backbone (timm) with the same head."""
    return _build("dla34", num_classes, num_identities, pretrained_backbone, **overrides)


def tiny_config(num_classes: int = 5) -> Config:
    """The small CPU model of ``configs/synthetic_tiny.yaml`` (RegNetX-200MF, 64 channels, 2-conv towers)."""
    from crossvis.config import load_config, packaged_config

    cfg = load_config(packaged_config("synthetic_tiny"))
    cfg.model.fcos = replace(cfg.model.fcos, num_classes=num_classes)
    return cfg


def crossvis_tiny(num_classes: int = 5, num_identities: int = 0, **overrides) -> CrossVIS:
    """A tiny CrossVIS for CPU tests and the demo (RegNetX-200MF, 64 channels)."""
    return build_model(_with_overrides(tiny_config(num_classes), overrides), num_identities)
