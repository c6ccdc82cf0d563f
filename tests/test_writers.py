"""Every output writer, made to fail part-way: no partial file appears, an earlier file at the target stays
byte-for-byte as it was, and no temporary file is left behind.

Two ways to fail: a bad entry in the data (something JSON or pickle cannot write, a frame of the wrong shape),
which fails in the middle of writing; and a full disk (``os.fsync`` raising ENOSPC), which fails after all the
bytes were written -- a writer that skips ``crossvis.io`` never calls fsync, so it "succeeds" and the test sees
the target overwritten.
"""

from __future__ import annotations

import errno
import json
import os
import types
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from crossvis.errors import CrossVISError
from crossvis.io import atomic_path, atomic_write

OLD = b"an earlier file that must survive\n"


def _listing(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def _prepare(tmp_path: Path, name: str) -> tuple[Path, set[str]]:
    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(OLD)
    return target, _listing(tmp_path)


def _untouched(tmp_path: Path, target: Path, before: set[str]) -> None:
    assert target.read_bytes() == OLD
    assert _listing(tmp_path) == before  # no temporary or partial file next to it


@pytest.fixture
def full_disk(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)


class Unserialisable:
    pass


# ------------------------------------------------------------------------------------------------ crossvis.io
def test_atomic_write_when_a_write_fails_with_enospc(tmp_path):
    target, before = _prepare(tmp_path, "out.json")
    with pytest.raises(CrossVISError) as e, atomic_write(target) as f:
        f.write('{"partial": ' + "1" * 100_000)
        f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    # the one-line error names the output and the system's reason
    assert e.value.where == str(target) and os.strerror(errno.ENOSPC) in e.value.what
    _untouched(tmp_path, target, before)


def test_atomic_write_binary_and_atomic_path_when_fsync_fails(tmp_path, full_disk):
    target, before = _prepare(tmp_path, "out.bin")
    with pytest.raises(CrossVISError, match="(?i)no space"), atomic_write(target, "wb") as f:
        f.write(b"\0" * 1000)
    _untouched(tmp_path, target, before)
    with pytest.raises(CrossVISError, match="(?i)no space"), atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    _untouched(tmp_path, target, before)


def test_atomic_write_success_replaces_the_file(tmp_path):
    target, _ = _prepare(tmp_path, "out.txt")
    with atomic_write(target) as f:
        f.write("new")
    assert target.read_text() == "new" and _listing(tmp_path) == {"out.txt"}


# ------------------------------------------------------------------------------------------------ results
def _result(video_id: int = 1) -> dict:
    return {"video_id": video_id, "category_id": 1, "score": 0.5, "segmentations": [None]}


def test_write_results_with_an_entry_json_cannot_write(tmp_path):
    from crossvis.evaluation import write_results

    target, before = _prepare(tmp_path, "results.json")
    good = [_result(i) for i in range(2000)]  # enough that a streaming writer has flushed bytes already
    with pytest.raises(TypeError):
        write_results([*good, {**_result(), "score": Unserialisable()}], target)
    _untouched(tmp_path, target, before)


def test_write_results_zip_fails(tmp_path, full_disk):
    from crossvis.evaluation import write_results

    target, before = _prepare(tmp_path, "results.json")
    zpath = tmp_path / "results.zip"
    zpath.write_bytes(OLD)
    before = _listing(tmp_path)
    with pytest.raises(CrossVISError, match="(?i)no space"):
        write_results([_result()], target, zip_=True)
    _untouched(tmp_path, target, before)
    assert zpath.read_bytes() == OLD


def test_write_results_zip_when_zipping_fails(tmp_path, monkeypatch):
    import zipfile

    from crossvis.evaluation import write_results

    zpath = tmp_path / "results.zip"
    zpath.write_bytes(OLD)

    def broken(self, *a, **k):
        self.fp.write(b"PK partial")
        raise OSError(errno.ENOSPC, "no space")

    monkeypatch.setattr(zipfile.ZipFile, "write", broken)
    with pytest.raises(CrossVISError, match="(?i)no space"):
        write_results([_result()], tmp_path / "results.json", zip_=True)
    assert zpath.read_bytes() == OLD
    assert _listing(tmp_path) == {"results.zip", "results.json"}


def test_write_results_success_and_zip_layout(tmp_path):
    import zipfile

    from crossvis.evaluation import write_results

    written = write_results([_result()], tmp_path / "r.json", zip_=True)
    assert [p.name for p in written] == ["r.json", "r.zip"]
    with zipfile.ZipFile(tmp_path / "r.zip") as z:
        assert z.namelist() == ["results.json"] and json.loads(z.read("results.json")) == [_result()]
    assert _listing(tmp_path) == {"r.json", "r.zip"}


# ------------------------------------------------------------------------------------------------ JSON outputs
def test_tracks_json_with_a_bad_track(tmp_path):
    from crossvis.engine.inference import write_tracks_json

    target, before = _prepare(tmp_path, "tracks.json")
    tracks = [{"id": i, "frames": list(range(50))} for i in range(500)] + [{"id": 1, "bad": Unserialisable()}]
    vr = types.SimpleNamespace(num_frames=50, height=10, width=10, tracks=tracks)
    with pytest.raises(TypeError):
        write_tracks_json(vr, target, "video.mp4", 10.0)
    _untouched(tmp_path, target, before)


def test_tracks_json_on_a_full_disk(tmp_path, full_disk):
    from crossvis.engine.inference import write_tracks_json

    target, before = _prepare(tmp_path, "tracks.json")
    vr = types.SimpleNamespace(num_frames=1, height=10, width=10, tracks=[])
    with pytest.raises(CrossVISError, match="(?i)no space"):
        write_tracks_json(vr, target, "video.mp4", 10.0)
    _untouched(tmp_path, target, before)


def test_metrics_json_with_a_bad_value(tmp_path):
    from crossvis.cli.commands import write_metrics

    target, before = _prepare(tmp_path, "metrics.json")
    result = types.SimpleNamespace(
        to_dict=lambda: {"stats": {f"s{i}": 0.5 for i in range(5000)}, "x": {1, 2}}
    )
    with pytest.raises(TypeError):
        write_metrics(result, str(target))
    _untouched(tmp_path, target, before)


def test_metrics_json_of_the_evaluate_command_on_a_full_disk(tmp_path):
    """``crossvis evaluate --output``: the CLI path, with fsync failing inside the subprocess."""
    import subprocess
    import sys

    gt = {
        "videos": [{"id": 1, "width": 4, "height": 4, "length": 1, "file_names": ["a.jpg"]}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {
                "id": 1,
                "video_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentations": [{"size": [4, 4], "counts": [0, 4, 12]}],
                "areas": [4],
            }
        ],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps([]))
    target = tmp_path / "metrics.json"
    target.write_bytes(OLD)
    before = _listing(tmp_path)

    def run(fail: bool) -> subprocess.CompletedProcess:
        code = (
            "import errno, os, sys\n"
            + (
                "os.fsync = lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, 'No space left'))\n"
                if fail
                else ""
            )
            + "from crossvis.cli.main import main\n"
            "sys.exit(main(sys.argv[1:]))\n"
        )
        args = ["evaluate", str(tmp_path / "gt.json"), str(tmp_path / "res.json"), "--output", str(target)]
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)

    r = run(fail=True)
    assert r.returncode != 0 and "No space left" in r.stderr, r.stdout + r.stderr
    _untouched(tmp_path, target, before)
    r = run(fail=False)  # the same command without the fault writes the metrics
    assert r.returncode == 0, r.stderr
    assert json.loads(target.read_text())["AP"] == 0.0


# ------------------------------------------------------------------------------------------------ weights
def _tiny():
    from crossvis.modeling.builders import build_model, tiny_config

    torch.manual_seed(0)
    cfg = tiny_config(num_classes=2)
    return build_model(cfg), cfg


def test_save_weights_on_a_full_disk(tmp_path, full_disk):
    from crossvis.modeling.weights import save_weights

    model, cfg = _tiny()
    target, before = _prepare(tmp_path, "w.safetensors")
    with pytest.raises(CrossVISError, match="(?i)no space"):
        save_weights(model, target, cfg, ["a", "b"])
    _untouched(tmp_path, target, before)


def test_save_weights_with_a_bad_class_list(tmp_path):
    from crossvis.modeling.weights import save_weights

    model, cfg = _tiny()
    target, before = _prepare(tmp_path, "w.safetensors")
    with pytest.raises(TypeError):
        save_weights(model, target, cfg, ["a", Unserialisable()])
    _untouched(tmp_path, target, before)


def test_save_checkpoint_with_a_state_that_cannot_be_pickled(tmp_path):
    from crossvis.engine.checkpoint import save_checkpoint

    model, cfg = _tiny()
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    (ckpt / "model_0000004.state.pt").write_bytes(OLD)
    (ckpt / "model_0000004.safetensors").write_bytes(OLD)
    before = _listing(tmp_path)
    state = {"optimizer": {"big": torch.zeros(100_000)}, "bad": lambda: 0}
    with pytest.raises(Exception):  # noqa: B017 - pickling error type differs by Python version
        save_checkpoint(
            tmp_path,
            iteration=4,
            model=model,
            cfg=cfg,
            class_names=["a", "b"],
            category_ids=[1, 2],
            state=state,
        )
    assert (ckpt / "model_0000004.state.pt").read_bytes() == OLD
    assert (ckpt / "model_0000004.safetensors").read_bytes() == OLD
    assert _listing(tmp_path) == before


def test_save_checkpoint_on_a_full_disk_leaves_no_checkpoint(tmp_path, full_disk):
    from crossvis.engine.checkpoint import list_checkpoints, save_checkpoint

    model, cfg = _tiny()
    with pytest.raises(CrossVISError, match="(?i)no space"):
        save_checkpoint(
            tmp_path, iteration=8, model=model, cfg=cfg, class_names=["a", "b"], category_ids=[1, 2], state={}
        )
    assert list_checkpoints(tmp_path) == []
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == set()


# ------------------------------------------------------------------------------------------------ synthetic data
def test_synthetic_generate_on_a_full_disk_keeps_the_earlier_annotations(tmp_path, full_disk):
    from crossvis.data.synthetic import SynthParams, generate

    target, _ = _prepare(tmp_path, "annotations.json")
    with pytest.raises(CrossVISError, match="(?i)no space"):
        generate(tmp_path, SynthParams(videos=1, frames=2, seed=0, height=32, width=32))
    assert target.read_bytes() == OLD
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


# ------------------------------------------------------------------------------------------------ video
def test_video_writer_with_a_bad_frame(tmp_path):
    from crossvis.engine.video_io import VideoWriter

    target, before = _prepare(tmp_path, "out.mp4")
    frame = np.zeros((32, 48, 3), dtype=np.uint8)
    with pytest.raises(Exception), VideoWriter(target, Fraction(10)) as w:  # noqa: B017 - av's error type
        for _ in range(5):
            w.write(frame)
        w.write(np.zeros((32, 48), dtype=np.float64))  # not an RGB frame
    _untouched(tmp_path, target, before)


def test_video_writer_when_the_caller_fails(tmp_path):
    from crossvis.engine.video_io import VideoWriter

    target, before = _prepare(tmp_path, "out.mp4")
    with pytest.raises(KeyboardInterrupt), VideoWriter(target, Fraction(10)) as w:
        w.write(np.zeros((32, 48, 3), dtype=np.uint8))
        raise KeyboardInterrupt
    _untouched(tmp_path, target, before)


def test_video_writer_on_a_full_disk(tmp_path, full_disk):
    from crossvis.engine.video_io import VideoWriter

    target, before = _prepare(tmp_path, "out.mp4")
    with pytest.raises(CrossVISError, match="(?i)no space"), VideoWriter(target, Fraction(10)) as w:
        w.write(np.zeros((32, 48, 3), dtype=np.uint8))
    _untouched(tmp_path, target, before)
