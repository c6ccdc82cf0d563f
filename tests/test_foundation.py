from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import run_cli
from crossvis.config import Config, load_config, parse_overrides
from crossvis.errors import CrossVISError
from crossvis.io import atomic_write

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_the_official_r50_settings():
    cfg = Config()
    assert cfg.solver.base_lr == 0.005 and cfg.solver.max_iter == 23000 and cfg.solver.steps == [15000, 21000]
    assert (
        cfg.solver.ims_per_batch == 16
        and cfg.solver.warmup_iters == 1000
        and cfg.solver.warmup_factor == 0.001
    )
    assert cfg.model.fcos.nms_th == 0.6 and cfg.model.fcos.pre_nms_topk_test == 1000
    assert cfg.model.fcos.sizes_of_interest == [64, 128, 256, 512] and cfg.model.fcos.pos_radius == 1.5
    assert cfg.input.min_size_test == 360 and cfg.input.max_size_test == 640 and cfg.input.format == "BGR"
    assert cfg.model.crossvis.sample_region == 20 and cfg.model.condinst.max_proposals == 500


@pytest.mark.parametrize(
    "name", ["crossvis_R50_1x", "crossvis_R101_1x", "crossvis_lite_DLA34", "synthetic_tiny"]
)
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert isinstance(cfg, Config)


def test_base_inheritance_and_override(tmp_path):
    (tmp_path / "base.yaml").write_text("solver:\n  max_iter: 100\n  base_lr: 0.1\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nsolver:\n  max_iter: 7\n")
    cfg = load_config(tmp_path / "child.yaml", ["solver.steps=[1, 2]", "model.fcos.nms_th=0.5"])
    assert cfg.solver.max_iter == 7 and cfg.solver.base_lr == 0.1
    assert cfg.solver.steps == [1, 2] and cfg.model.fcos.nms_th == 0.5


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("solver:\n  max_itr: 5\n")
    with pytest.raises(CrossVISError) as e:
        load_config(p)
    assert e.value.where == str(p) and "solver.max_itr" in e.value.what


def test_wrong_type_is_an_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("solver:\n  max_iter: ten\n")
    with pytest.raises(CrossVISError, match="solver.max_iter"):
        load_config(p)
    with pytest.raises(CrossVISError, match="model.fcos.num_classes"):
        load_config(None, ["model.fcos.num_classes=1.5"])
    # ints are accepted where floats are expected
    assert load_config(None, ["solver.base_lr=1"]).solver.base_lr == 1.0


def test_override_parser():
    assert parse_overrides(["a.b=3", "a.c=x", "d=[1,2]"]) == {"a": {"b": 3, "c": "x"}, "d": [1, 2]}
    with pytest.raises(CrossVISError):
        parse_overrides(["novalue"])
    with pytest.raises(CrossVISError):
        parse_overrides(["a..b=1"])


def test_override_of_unknown_key():
    with pytest.raises(CrossVISError, match="unknown config key 'solver.nope'"):
        load_config(None, ["solver.nope=1"])


def test_atomic_write_replaces_only_on_success(tmp_path):
    p = tmp_path / "out.json"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write("half")
            raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"]  # no temp file left behind
    with atomic_write(p) as f:
        f.write("new")
    assert p.read_text() == "new" and os.listdir(tmp_path) == ["out.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask  # as open() would create it, not mkstemp's 0600


def test_cli_help_lists_every_subcommand():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ["synth", "evaluate", "infer", "predict", "train", "demo", "benchmark", "export", "convert"]:
        assert cmd in r.stdout


def test_cli_unknown_command_is_one_line_exit_2():
    r = run_cli("nosuch")
    assert r.returncode == 2
    assert r.stderr.startswith("crossvis: error: ") and r.stderr.count("\n") == 1 and "nosuch" in r.stderr


def test_cli_bad_config_key_is_one_line_exit_2(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  wrong_key: 1\n")
    r = run_cli("train", p, "--output", tmp_path / "run")
    assert r.returncode == 2
    assert r.stderr == f"crossvis: error: {p}: unknown config key 'model.wrong_key'\n"
    assert not (tmp_path / "run").exists()


def test_cli_debug_shows_traceback(tmp_path):
    r = run_cli("--debug", "evaluate", tmp_path / "missing.json", tmp_path / "r.json")
    assert r.returncode != 0 and "Traceback" in r.stderr


def _imports(package: Path) -> set[str]:
    import ast

    found = set()
    for f in package.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
    return found


@pytest.mark.parametrize("pkg", ["data", "modeling", "tracking", "evaluation"])
def test_layering(pkg):
    imports = _imports(ROOT / "src" / "crossvis" / pkg)
    assert not any(m.startswith(("crossvis.engine", "crossvis.cli")) for m in imports), imports
    if pkg == "evaluation":
        assert not any(m.startswith("crossvis.modeling") for m in imports)
