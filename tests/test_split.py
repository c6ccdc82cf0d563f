"""crossvis split: a disjoint, deterministic, class-covering video-level split."""

from __future__ import annotations

import json
import random

import pytest

from conftest import run_cli
from crossvis.data.split import choose_val_videos, split_dataset
from crossvis.errors import CrossVISError


def _dataset(num_videos: int, seed: int = 0) -> dict:
    """A YouTube-VIS JSON with uneven classes: 'rare' in 2 videos, 'single' in 1, the rest random."""
    rng = random.Random(seed)
    cats = [{"id": i, "name": n} for i, n in enumerate(["common", "medium", "rare", "single"], start=1)]
    videos, anns = [], []
    for v in range(1, num_videos + 1):
        videos.append(
            {"id": v, "file_names": [f"v{v}/0.jpg", f"v{v}/1.jpg"], "height": 4, "width": 4, "length": 2}
        )
        present = {1} if rng.random() < 0.7 else {2}
        if v in (3, 17):
            present.add(3)
        if v == 8:
            present.add(4)
        for c in sorted(present):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "video_id": v,
                    "category_id": c,
                    "iscrowd": 0,
                    "segmentations": [None, None],
                    "bboxes": [None, None],
                    "areas": [None, None],
                }
            )
    return {"info": {"x": 1}, "videos": videos, "annotations": anns, "categories": cats}


@pytest.fixture()
def train_json(tmp_path):
    p = tmp_path / "train.json"
    p.write_text(json.dumps(_dataset(40)))
    return p


def _classes(part: dict) -> set[int]:
    return {a["category_id"] for a in part["annotations"]}


def test_split_is_disjoint_covering_and_complete(train_json, tmp_path):
    r = run_cli("split", train_json, "--val-fraction", "0.1", "--seed", "0", "--output", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    src = json.loads(train_json.read_text())
    tr = json.loads((tmp_path / "out" / "train.json").read_text())
    va = json.loads((tmp_path / "out" / "val.json").read_text())
    tv, vv = {v["id"] for v in tr["videos"]}, {v["id"] for v in va["videos"]}
    assert not tv & vv and tv | vv == {v["id"] for v in src["videos"]}
    assert len(vv) == 4  # 10% of 40
    assert all(a["video_id"] in tv for a in tr["annotations"]) and all(
        a["video_id"] in vv for a in va["annotations"]
    )
    assert len(tr["annotations"]) + len(va["annotations"]) == len(src["annotations"])
    assert _classes(tr) == {1, 2, 3, 4}  # every class stays in train
    assert _classes(va) == {1, 2, 3}  # and in val where it has 2+ videos ('single' cannot be)
    assert tr["categories"] == src["categories"] == va["categories"] and tr["info"] == src["info"]
    assert "single" in r.stdout


def test_split_is_deterministic_and_seeded(train_json, tmp_path):
    a = split_dataset(train_json, val_fraction=0.2, seed=5, output=tmp_path / "a")
    b = split_dataset(train_json, val_fraction=0.2, seed=5, output=tmp_path / "b")
    c = split_dataset(train_json, val_fraction=0.2, seed=6, output=tmp_path / "c")
    assert a.val.read_bytes() == b.val.read_bytes() and a.train.read_bytes() == b.train.read_bytes()
    ids = [{v["id"] for v in json.loads(x.val.read_text())["videos"]} for x in (a, c)]
    assert ids[0] != ids[1]


def test_rule_never_empties_a_class_from_train():
    # class 9 in exactly two videos: one may go to val, never both, even if val wants many videos
    classes = {1: {9}, 2: {9}, 3: {1}, 4: {1}, 5: set()}
    for seed in range(20):
        val = choose_val_videos(classes, 4, seed)
        assert not {1, 2} <= val and not {3, 4} <= val
        assert len(val & {1, 2}) == 1 and len(val & {3, 4}) == 1  # covered in val too


def test_bad_inputs_are_clear_and_write_nothing(train_json, tmp_path):
    out = tmp_path / "out"
    for frac in ("0", "1", "1.5"):
        r = run_cli("split", train_json, "--val-fraction", frac, "--output", out)
        assert r.returncode == 2 and "--val-fraction" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = run_cli("split", bad, "--output", out)
    assert r.returncode == 2 and "bad.json" in r.stderr
    one = tmp_path / "one.json"
    d = _dataset(1)
    one.write_text(json.dumps(d))
    with pytest.raises(CrossVISError, match="at least 2"):
        split_dataset(one, val_fraction=0.5, seed=0, output=out)
    no_ann = tmp_path / "noann.json"
    d = _dataset(5)
    del d["annotations"]
    no_ann.write_text(json.dumps(d))
    with pytest.raises(CrossVISError, match="'annotations'"):
        split_dataset(no_ann, val_fraction=0.5, seed=0, output=out)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(CrossVISError, match="must be a folder"):
        split_dataset(train_json, val_fraction=0.5, seed=0, output=a_file)
    assert not out.exists()


def test_outputs_are_atomic(train_json, tmp_path, monkeypatch):
    out = tmp_path / "out"
    split_dataset(train_json, val_fraction=0.1, seed=0, output=out)
    before = (out / "val.json").read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(json, "dump", boom)
    with pytest.raises(RuntimeError):
        split_dataset(train_json, val_fraction=0.3, seed=1, output=out)
    assert (out / "val.json").read_bytes() == before  # earlier output untouched
    assert sorted(p.name for p in out.iterdir()) == ["train.json", "val.json"]  # no temp files left
