"""One source of truth from configuration to model: builders are their YAML, overrides are validated, no key is
accepted and then ignored, callers' configs are never modified."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from conftest import run_cli
from crossvis.config import REMOVED_KEYS, Config, config_to_dict, load_config, packaged_config
from crossvis.errors import CrossVISError
from crossvis.modeling import builders
from crossvis.modeling.builders import build_model
from crossvis.modeling.weights import load_model, read_weights, save_weights

BUILDERS = [
    (builders.crossvis_r50, "crossvis_R50_1x", 40),
    (builders.crossvis_r101, "crossvis_R101_1x", 40),
    (builders.crossvis_lite_dla34, "crossvis_lite_DLA34", 40),
    (builders.crossvis_tiny, "synthetic_tiny", 5),
]


def _same_model(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    for attr in ("input_format", "size_divisibility", "num_classes", "num_identities"):
        assert getattr(a, attr) == getattr(b, attr), attr
    assert torch.equal(a.pixel_mean, b.pixel_mean) and torch.equal(a.pixel_std, b.pixel_std)
    assert a.fcos_cfg == b.fcos_cfg and a.condinst_cfg == b.condinst_cfg and a.crossvis_cfg == b.crossvis_cfg


@pytest.mark.parametrize(("builder", "name", "num_classes"), BUILDERS, ids=[b[1] for b in BUILDERS])
def test_each_builder_equals_build_model_of_its_yaml(builder, name, num_classes):
    torch.manual_seed(0)
    built = builder(num_classes=num_classes, num_identities=7)
    torch.manual_seed(0)
    no_imagenet = ["model.backbone.pretrained=false", "model.backbone.weights_file="]
    from_yaml = build_model(load_config(packaged_config(name), no_imagenet), num_identities=7)
    _same_model(built, from_yaml)


def test_lite_builder_takes_rgb_imagenet_normalisation_from_its_yaml():
    m = builders.crossvis_lite_dla34(num_identities=0)
    assert m.input_format == "RGB"
    assert m.pixel_mean.flatten().tolist() == pytest.approx([123.675, 116.28, 103.53])
    assert m.pixel_std.flatten().tolist() == pytest.approx([58.395, 57.12, 57.375])


def test_builder_overrides_are_validated_like_command_line_overrides():
    with pytest.raises(CrossVISError, match="unknown config key 'model.crossvis.crossovr'"):
        builders.crossvis_tiny(crossvis__crossovr=False)
    with pytest.raises(CrossVISError, match="model.crossvis.crossover' must be bool"):
        builders.crossvis_tiny(crossvis__crossover="no")
    assert builders.crossvis_tiny(crossvis__crossover=False).crossvis_cfg.crossover is False


def test_num_classes_has_one_source():
    m = builders.crossvis_tiny(num_classes=3)
    assert m.num_classes == m.fcos_cfg.num_classes == 3
    assert m.head.cls_logits.out_channels == 3


@pytest.mark.parametrize("key", sorted(REMOVED_KEYS))
def test_removed_keys_are_refused_with_their_replacement(tmp_path, key):
    section, _, name = key.partition(".")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({section: {name: 1}}))
    with pytest.raises(CrossVISError, match=f"'{key}' was removed"):
        load_config(p)


def test_every_config_key_is_read_somewhere():
    """No key may be accepted and then do nothing: each dataclass field name appears in the code that uses
    the config (outside config.py)."""
    import dataclasses
    import re
    from pathlib import Path

    import crossvis
    import crossvis.config as C

    root = Path(crossvis.__file__).parent
    code = "\n".join(p.read_text() for p in root.rglob("*.py") if p.name != "config.py")
    unread = []
    for cls in (v for v in vars(C).values() if dataclasses.is_dataclass(v) and isinstance(v, type)):
        for f in dataclasses.fields(cls):
            if not re.search(rf"\.{f.name}\b", code):
                unread.append(f"{cls.__name__}.{f.name}")
    assert unread == []


def test_weights_written_with_removed_keys_still_load(tmp_path):
    """Configs stored by crossvis 0.1 (the shipped synthetic-tiny weights among them) name the removed keys."""
    from safetensors.torch import save_file

    w = read_weights("synthetic-tiny")
    old = config_to_dict(w.config)
    old["model"]["fpn"] = {"out_channels": 64}
    old["test"]["detections_per_image"] = 100
    meta = {"crossvis_config": yaml.safe_dump(old), "class_names": "[]", "category_ids": "[]"}
    path = tmp_path / "old.safetensors"
    save_file(w.state_dict, str(path), metadata=meta)
    assert read_weights(path).config == w.config


def test_load_model_leaves_the_callers_config_alone_and_layers_overrides(tmp_path):
    torch.manual_seed(0)
    cfg = builders.tiny_config(5)
    path = tmp_path / "w.safetensors"
    save_weights(build_model(cfg), path, cfg, list("abcde"))
    cfg.model.backbone.pretrained = True  # as a caller might have it
    before = copy.deepcopy(cfg)
    model, w = load_model(path, config=cfg, overrides=["model.fcos.inference_th_test=0.2"])
    assert cfg == before
    assert w.config.model.fcos.inference_th_test == 0.2 and model.fcos_cfg.inference_th_test == 0.2
    assert w.config.model.backbone.pretrained is False
    with pytest.raises(CrossVISError, match="unknown config key 'test.trackr'"):
        load_model(path, overrides=["test.trackr.hungarian=true"])


def test_predictor_takes_overrides_over_the_weights_config(tiny_weights):
    from crossvis.engine.predictor import VideoPredictor

    p = VideoPredictor.from_weights(tiny_weights, device="cpu", overrides=["test.tracker.max_missed=3"])
    assert p.tracker_cfg.max_missed == 3 and p.new_tracker().config.max_missed == 3
    with pytest.raises(TypeError, match="from_weights"):
        VideoPredictor(str(tiny_weights), Config())


def test_cli_overrides_anywhere_and_options_after_them(tmp_path, synth_dir, tiny_weights):
    bad = run_cli(
        "infer",
        "--weights",
        tiny_weights,
        "--annotations",
        synth_dir / "annotations.json",
        "--images",
        synth_dir / "JPEGImages",
        "--output",
        tmp_path / "r.json",
        "test.trackr.hungarian=true",
        "-q",
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("crossvis: error: command line: unknown config key")
    assert not (tmp_path / "r.json").exists()
    r = run_cli("train", "nosuch.yaml", "solver.max_iter=1", "-q", "--bogus")
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr
    assert "solver.max_iter" not in r.stderr  # only the real culprit is named


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("input.min_size_test=-5", "'input.min_size_test' must be at least 1"),
        ("model.fcos.nms_th=1.5", "'model.fcos.nms_th' must be between 0 and 1"),
        ("model.fcos.fpn_strides=[8, 0, 32, 64, 128]", "'model.fcos.fpn_strides' must be at least 1"),
        ("model.crossvis.identity_loss=focal", "'model.crossvis.identity_loss' must be one of"),
        ("solver.optimizer=Adam", "'solver.optimizer' must be one of SGD, AdamW"),
    ],
)
def test_values_out_of_range_are_config_errors(override, message):
    with pytest.raises(CrossVISError, match=message):
        load_config(None, [override])


def test_value_choices_agree_with_what_the_code_implements():
    from crossvis.config import CHOICES
    from crossvis.engine.initialization import INIT_MODES
    from crossvis.engine.optim import OPTIMIZERS
    from crossvis.modeling.criterion import IDENTITY_LOSSES

    assert set(CHOICES["model.crossvis.identity_loss"]) == set(IDENTITY_LOSSES)
    assert set(CHOICES["solver.optimizer"]) == set(OPTIMIZERS)
    assert set(CHOICES["model.init"]) == set(INIT_MODES)


def test_a_config_file_out_of_range_is_named_in_the_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("input:\n  max_size_test: 0\n")
    r = run_cli("train", p, "--output", tmp_path / "run")
    assert r.returncode == 2
    assert (
        r.stderr.strip()
        == f"crossvis: error: {p}: config key 'input.max_size_test' must be at least 1, got 0"
    )
