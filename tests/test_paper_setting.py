"""benchmarks/paper_setting.py: commands, statistics and the cached re-tracking of its study runner."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import paper_setting as ps  # noqa: E402

from crossvis.config import load_config  # noqa: E402


def _args(**kw) -> argparse.Namespace:
    base = {"pretrain_iters": 30, "iters": 20, "still_videos": 5, "train_videos": 4, "val_videos": 2}
    return argparse.Namespace(**{**base, **kw})


def test_commands_start_every_row_from_the_pretrained_still_model(tmp_path):
    args = _args()
    pre = ps.pretrain_command(args, tmp_path)
    cfg = load_config("configs/synthetic_tiny.yaml", pre[5:])
    assert cfg.data.synth_train.frames == 1 and cfg.data.val_json == ""
    assert cfg.data.synth_train.motion_blur == 1.0 and cfg.model.crossvis.crossover is False
    for name in ps.STUDY_ROWS:
        cmd = ps.row_command(args, name, 1, tmp_path)
        cfg = load_config("configs/synthetic_tiny.yaml", cmd[5:])
        assert cfg.model.weights == str(ps.pretrained(tmp_path)) and cfg.model.init == "pretrained"
        assert cfg.seed == 1 and cfg.solver.max_iter == 20
        assert cfg.data.synth_val.lookalikes == 1.0 and cfg.data.synth_val.videos == 2
        assert cfg.data.synth_train.difficulty == ps.APPEARANCE["difficulty"]
        assert cfg.model.crossvis.crossover == ("+crossover" in name)
        assert cfg.model.crossvis.sample_region == (2 if "@d2" in name else 20)


def test_bootstrap_interval_and_paired_comparison():
    lo, hi = ps.bootstrap_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert 1.0 < lo < 3.0 < hi < 5.0
    assert ps.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    # normal data: the interval of the mean holds the true mean in about 95% of samples
    rng = np.random.default_rng(0)
    hits = sum(
        lo <= 0 <= hi for lo, hi in (ps.bootstrap_ci(rng.normal(0, 1, 20), n=2000) for _ in range(200))
    )
    assert 170 <= hits <= 198
    text = ps.paired({0: 0.20, 1: 0.30, 2: 0.25}, {0: 0.22, 1: 0.31, 2: 0.24}, "AP")
    assert text.startswith("+0.7") and "(2/3 seeds better)" in text  # percent: +2, +1, -1
    text = ps.paired({0: 10, 1: 12}, {0: 8, 1: 13}, "id_switches")
    assert "(1/2 seeds better)" in text  # fewer switches is better


def test_report_has_every_table(tmp_path):
    m = {k: 0.5 for k in ps.METRICS} | {"id_switches": 3}
    records = [
        {
            "row": row,
            "seed": s,
            "iters": 20,
            "threads": 1,
            "train_minutes": 1.0,
            "command": "crossvis train x",
            "trackers": {t: dict(m) for t in ps.TRACKERS},
        }
        for row in ps.STUDY_ROWS
        for s in (0, 1)
    ]
    path = tmp_path / "r.md"
    path.write_text("# kept\n\n" + ps.BEGIN + "\nold\n" + ps.END + "\ntail\n")
    ps.write_report(path, records)
    text = path.read_text()
    assert text.startswith("# kept") and text.endswith("tail\n") and "\nold\n" not in text
    assert "| global_focal+crossover vs global_focal | +0.0" in text
    assert all(f"| {t} |" in text for t in ps.TRACKERS)
    assert "### Every run" in text and "crossvis train x" in text
    short = tmp_path / "s.md"
    ps.write_report(short, records, full=False)
    text = short.read_text()
    assert "| global_focal+crossover vs global_focal |" in text and "### Every run" not in text
    assert text.rstrip().endswith(ps.END)
    pytest.importorskip("matplotlib")
    ps.plot(tmp_path / "r.png", records)
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prepare_generates_every_split_once(tmp_path, capsys):
    args = _args(still_videos=2, train_videos=1, val_videos=1)
    ps.prepare(args, tmp_path)
    assert "generated still, train, val" in capsys.readouterr().out
    for split, frames in (("still", 1), ("train", 12), ("val", 12)):
        data = json.loads((tmp_path / split / "annotations.json").read_text())
        assert len(data["videos"]) == ps.splits(args)[split]["videos"]
        assert frames == 1 or all(v["length"] > 1 for v in data["videos"])
    ps.prepare(args, tmp_path)  # nothing left to generate
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_cached_retracking_equals_tracking_from_scratch(tmp_path, synth_dir):
    from crossvis.data.ytvis import YTVISDataset
    from crossvis.engine.inference import infer_videos
    from crossvis.engine.predictor import VideoPredictor
    from crossvis.evaluation import evaluate

    out = tmp_path
    (out / "val").symlink_to(synth_dir)
    ds = YTVISDataset(synth_dir / "annotations.json", synth_dir / "JPEGImages")
    got = ps.track_all(Path("synthetic-tiny"), out)
    for name in ("official", "iou_only", "hungarian"):
        pred = VideoPredictor.from_weights("synthetic-tiny").with_tracker(**ps.TRACKERS[name])
        r = evaluate(ds, infer_videos(pred, ds, progress=False))
        assert got[name]["AP"] == r.stats["AP"] and got[name]["id_switches"] == r.identity["id_switches"]
    assert got["official"]["AP"] > 0.1


def test_settings_are_fixed_per_study_folder(tmp_path):
    ps.check_settings(_args(), tmp_path)
    ps.check_settings(_args(), tmp_path)  # same settings: fine
    with pytest.raises(SystemExit, match="other settings"):
        ps.check_settings(_args(val_videos=5), tmp_path)
