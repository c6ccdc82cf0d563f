"""The initialisation chain: COCO CondInst checkpoints, class-row maps, the explicit-choice rule, input checks."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from crossvis.config import load_config
from crossvis.data.categories import COCO_CATEGORIES, OVIS_CATEGORIES, YTVIS2021_CATEGORIES, class_map_tables
from crossvis.data.ytvis import YTVIS2019_CATEGORIES
from crossvis.engine.initialization import check_input, class_map_table, initialize
from crossvis.errors import CrossVISError
from crossvis.modeling.builders import build_model

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------ a fake CondInst


def condinst_state(num_classes: int = 80, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of an AdelaiDet CondInst R-50 (reference notes section 6 minus reid_* and cls), random."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def t(key, *shape):
        sd[key] = torch.randn(*shape, generator=g)

    def frozen_bn(key, n):
        for f in ("weight", "bias", "running_mean"):
            t(f"{key}.{f}", n)
        sd[f"{key}.running_var"] = torch.rand(n, generator=g) + 0.5

    bb = "backbone.bottom_up."
    t(bb + "stem.conv1.weight", 64, 3, 7, 7)
    frozen_bn(bb + "stem.conv1.norm", 64)
    c_in = 64
    for s, n, w in ((2, 3, 64), (3, 4, 128), (4, 6, 256), (5, 3, 512)):
        out = 4 * w
        for b in range(n):
            pre = f"{bb}res{s}.{b}."
            t(pre + "conv1.weight", w, c_in if b == 0 else out, 1, 1)
            t(pre + "conv2.weight", w, w, 3, 3)
            t(pre + "conv3.weight", out, w, 1, 1)
            for k, ch in ((1, w), (2, w), (3, out)):
                frozen_bn(f"{pre}conv{k}.norm", ch)
            if b == 0:
                t(pre + "shortcut.weight", out, c_in, 1, 1)
                frozen_bn(pre + "shortcut.norm", out)
        c_in = out
    for lvl, ch in ((3, 512), (4, 1024), (5, 2048)):
        t(f"backbone.fpn_lateral{lvl}.weight", 256, ch, 1, 1)
        t(f"backbone.fpn_lateral{lvl}.bias", 256)
        t(f"backbone.fpn_output{lvl}.weight", 256, 256, 3, 3)
        t(f"backbone.fpn_output{lvl}.bias", 256)
    for p in ("p6", "p7"):
        t(f"backbone.top_block.{p}.weight", 256, 256, 3, 3)
        t(f"backbone.top_block.{p}.bias", 256)
    h = "proposal_generator.fcos_head."
    for tower in ("cls_tower", "bbox_tower"):
        for i in (0, 3, 6, 9):
            t(f"{h}{tower}.{i}.weight", 256, 256, 3, 3)
            t(f"{h}{tower}.{i}.bias", 256)
            t(f"{h}{tower}.{i + 1}.weight", 256)
            t(f"{h}{tower}.{i + 1}.bias", 256)
    t(h + "cls_logits.weight", num_classes, 256, 3, 3)
    t(h + "cls_logits.bias", num_classes)
    t(h + "bbox_pred.weight", 4, 256, 3, 3)
    t(h + "bbox_pred.bias", 4)
    t(h + "ctrness.weight", 1, 256, 3, 3)
    t(h + "ctrness.bias", 1)
    for i in range(5):
        t(f"{h}scales.{i}.scale", 1)
    sd["mask_head.sizes_of_interest"] = torch.tensor([64.0, 128, 256, 512, 1024])
    sd["mask_head._iter"] = torch.zeros(1)
    for i in range(3):
        t(f"mask_branch.refine.{i}.0.weight", 128, 256, 3, 3)
        frozen_bn(f"mask_branch.refine.{i}.1", 128)
        sd[f"mask_branch.refine.{i}.1.num_batches_tracked"] = torch.tensor(5)
    for i in range(4):
        t(f"mask_branch.tower.{i}.0.weight", 128, 128, 3, 3)
        frozen_bn(f"mask_branch.tower.{i}.1", 128)
        sd[f"mask_branch.tower.{i}.1.num_batches_tracked"] = torch.tensor(5)
    t("mask_branch.tower.4.weight", 8, 128, 1, 1)
    t("mask_branch.tower.4.bias", 8)
    t("controller.weight", 169, 256, 3, 3)
    t("controller.bias", 169)
    return sd


def ours_of(key: str) -> str:
    """Independent statement of the official -> crossvis naming, for checking values after loading."""
    k = key.replace("backbone.bottom_up.stem.conv1.norm.", "backbone.body.bn1.")
    k = k.replace("backbone.bottom_up.stem.conv1.", "backbone.body.conv1.")
    if k.startswith("backbone.bottom_up.res"):
        _, _, rest = k.partition("backbone.bottom_up.res")
        stage, block, tail = rest.split(".", 2)
        tail = tail.replace("shortcut.norm.", "downsample.1.").replace("shortcut.", "downsample.0.")
        for i in (1, 2, 3):
            tail = tail.replace(f"conv{i}.norm.", f"bn{i}.")
        k = f"backbone.body.layer{int(stage) - 1}.{block}.{tail}"
    for lvl in (3, 4, 5):
        k = k.replace(f"backbone.fpn_lateral{lvl}.", f"fpn.lateral.{lvl - 3}.")
        k = k.replace(f"backbone.fpn_output{lvl}.", f"fpn.output.{lvl - 3}.")
    k = k.replace("backbone.top_block.", "fpn.").replace("proposal_generator.fcos_head.", "head.")
    return k


@pytest.fixture(scope="module")
def condinst_pth(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = condinst_state()
    path = tmp_path_factory.mktemp("condinst") / "CondInst_MS_R_50_1x.pth"
    torch.save({"model": sd, "iteration": 89999}, path)
    return path, sd


def _r50(overrides: list[str]):
    cfg = load_config(ROOT / "configs" / "crossvis_R50_1x.yaml", overrides)
    torch.manual_seed(0)
    return cfg, build_model(cfg, num_identities=12)


def test_condinst_checkpoint_loads_equal_and_lists_the_rest(condinst_pth, caplog):
    path, sd = condinst_pth
    cfg, model = _r50([f"model.weights={path}", "model.init_class_map=auto"])
    fresh_before = {k: v.clone() for k, v in model.state_dict().items() if "identity" in k}
    with caplog.at_level(logging.INFO, logger="crossvis.init"):
        rep = initialize(model, cfg, YTVIS2019_CATEGORIES)
    own = model.state_dict()
    for k, v in sd.items():
        if k in ("mask_head._iter",) or "cls_logits" in k:
            continue
        assert torch.equal(own[ours_of(k)], v), k
    assert set(rep.mismatched) == {"head.cls_logits.weight", "head.cls_logits.bias"}
    assert rep.unused == ["mask_head._iter"]
    fresh = set(rep.fresh)
    new = {
        k for k in own if k.startswith(("head.identity_", "identity_classifier.")) and "num_batches" not in k
    }
    assert new and new <= fresh and fresh - new == set(rep.mismatched)
    for k, v in fresh_before.items():  # identity parts keep their fresh initialisation
        assert torch.equal(own[k], v), k
    text = caplog.text
    assert (
        "head.identity_tower.*" in text
        and "identity_classifier.weight" in text
        and "head.cls_logits.weight" in text
    )
    assert "mask_head._iter" in text and "classifier rows copied from COCO" in text

    # class rows: per the ytvis2019 table; unmapped classes keep the prior bias
    w, b = (
        sd["proposal_generator.fcos_head.cls_logits.weight"],
        sd["proposal_generator.fcos_head.cls_logits.bias"],
    )
    for target, coco in [("person", "person"), ("sedan", "car"), ("duck", "bird"), ("giant_panda", "bear")]:
        t, c = YTVIS2019_CATEGORIES.index(target), COCO_CATEGORIES.index(coco)
        assert torch.equal(own["head.cls_logits.weight"][t], w[c]) and own["head.cls_logits.bias"][t] == b[c]
    for target in ("ape", "hand", "mouse"):
        t = YTVIS2019_CATEGORIES.index(target)
        assert own["head.cls_logits.bias"][t].item() == pytest.approx(-4.59512, abs=1e-4)
    assert rep.class_rows["tennis_racket"] == "tennis racket" and "ape" not in rep.class_rows


def test_no_weights_is_an_error_unless_scratch(caplog):
    cfg, model = _r50(["model.backbone.weights_file=''"])
    with pytest.raises(CrossVISError, match="model.init=scratch"):
        initialize(model, cfg, YTVIS2019_CATEGORIES)
    cfg, model = _r50(["model.backbone.weights_file=''", "model.init=scratch"])
    with caplog.at_level(logging.WARNING, logger="crossvis.init"):
        rep = initialize(model, cfg, YTVIS2019_CATEGORIES)
    assert "random weights" in caplog.text and rep.source.startswith("random")
    cfg, model = _r50(["model.init=scratch", "model.backbone.weights_file=''", "model.weights=x.pth"])
    with pytest.raises(CrossVISError, match="contradicts model.weights"):
        initialize(model, cfg, YTVIS2019_CATEGORIES)


def test_mismatch_cases_are_clear(condinst_pth, tmp_path):
    path, sd = condinst_pth
    cfg, model = _r50([f"model.weights={path}", "model.init_class_map=ytvis2021"])
    with pytest.raises(CrossVISError, match="no entry for the dataset's class 'sedan'"):
        initialize(model, cfg, YTVIS2019_CATEGORIES)
    bad = tmp_path / "map.json"
    bad.write_text(json.dumps({n: "lion" for n in YTVIS2019_CATEGORIES}))
    with pytest.raises(CrossVISError, match="'lion' is not a COCO class"):
        class_map_table(str(bad), YTVIS2019_CATEGORIES)
    forty = tmp_path / "forty.pth"
    torch.save({"model": condinst_state(num_classes=40)}, forty)
    cfg, model = _r50([f"model.weights={forty}", "model.init_class_map=auto"])
    with pytest.raises(CrossVISError, match="80-class COCO classifier, found 40"):
        initialize(model, cfg, YTVIS2019_CATEGORIES)
    other = tmp_path / "other.pth"
    torch.save({"model": {"something.else": torch.zeros(3)}}, other)
    cfg, model = _r50([f"model.weights={other}"])
    with pytest.raises(CrossVISError, match="no tensor of the checkpoint fits"):
        initialize(model, cfg, YTVIS2019_CATEGORIES)


def test_shipped_class_maps_cover_their_datasets():
    tables = class_map_tables()
    assert list(tables["ytvis2019"]) == YTVIS2019_CATEGORIES
    assert list(tables["ytvis2021"]) == YTVIS2021_CATEGORIES and len(YTVIS2021_CATEGORIES) == 40
    assert list(tables["ovis"]) == OVIS_CATEGORIES and len(OVIS_CATEGORIES) == 25
    assert len(COCO_CATEGORIES) == 80 and len(set(COCO_CATEGORIES)) == 80
    for t in tables.values():
        assert all(c is None or c in COCO_CATEGORIES for c in t.values())
    # the documented judgement calls
    assert tables["ytvis2019"]["ape"] is None and tables["ytvis2019"]["truck"] == "truck"
    assert tables["ytvis2019"]["sedan"] == "car" and tables["ytvis2019"]["mouse"] is None
    assert tables["ovis"]["Vehical"] == "car" and tables["ovis"]["Poultry"] == "bird"
    assert tables["ytvis2021"]["flying_disc"] == "frisbee"


def test_input_must_match_the_imagenet_weights():
    from crossvis.modeling.backbone import Backbone, timm_input_requirements

    cfg = load_config(ROOT / "configs" / "crossvis_R50_1x.yaml", ["model.backbone.name=resnet26"])
    model = torch.nn.Module()
    model.backbone = Backbone("resnet26", freeze_at=0)
    model.backbone.weights_input = timm_input_requirements("resnet26")  # as after loading timm's weights
    with pytest.raises(CrossVISError) as e:
        check_input(model, cfg)
    msg = str(e.value)
    for k in ("input.format=RGB", "input.pixel_std=[58.395", "model.backbone.stride_in_1x1=false"):
        assert k in msg, msg
    good = load_config(
        ROOT / "configs" / "crossvis_R50_1x.yaml",
        [
            "input.format=RGB",
            "input.pixel_mean=[123.675,116.28,103.53]",
            "input.pixel_std=[58.395,57.12,57.375]",
            "model.backbone.stride_in_1x1=false",
        ],
    )
    check_input(model, good)  # no error
    # MSRA weights and a timm-style RGB config: stopped too
    from crossvis.modeling.msra import MSRA_INPUT

    model.backbone.weights_input = dict(MSRA_INPUT)
    with pytest.raises(CrossVISError, match="input.format=BGR"):
        check_input(model, good)


def test_training_without_an_explicit_choice_stops(tmp_path, synth_dir):
    r = run_cli(
        "train",
        ROOT / "configs" / "synthetic_tiny.yaml",
        "--output",
        tmp_path / "run",
        "model.init=pretrained",
        f"data.train_json={synth_dir / 'annotations.json'}",
        f"data.train_images={synth_dir / 'JPEGImages'}",
        "data.synth_train=null",
        "data.val_json=''",
        "data.synth_val=null",
        "solver.max_iter=1",
    )
    assert r.returncode == 2 and "model.init=scratch" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "name",
    [
        "crossvis_R50_1x_ytvis2021",
        "crossvis_R50_1x_ovis",
        "crossvis_R50_1x_ovis_tfc",
        "condinst_R50_coco",
        "crossvis_R101_1x",
        "crossvis_lite_DLA34",
    ],
)
def test_recipe_configs_load_and_state_their_init(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    m = cfg.model
    assert m.init == "pretrained" and (m.weights or m.backbone.weights_file or m.backbone.pretrained)
    classes = {"ovis": 25, "coco": 80}
    want = next((n for k, n in classes.items() if k in name), 40)
    assert m.fcos.num_classes == want
    assert m.tfc == name.endswith("_tfc")
    if m.backbone.weights_file.endswith(".pkl"):  # MSRA weights: the official BGR input
        assert (
            cfg.input.format == "BGR" and cfg.input.pixel_std == [1.0, 1.0, 1.0] and m.backbone.stride_in_1x1
        )
