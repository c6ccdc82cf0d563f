"""Streams and many videos: track lifetime per mode, predict over a set of videos (resumable), infer sharded
over torchrun ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from conftest import run_cli
from crossvis.data.ytvis import YTVISDataset
from crossvis.engine.predictor import VideoPredictor
from crossvis.engine.tracks_writer import read_tracks_jsonl
from crossvis.engine.video_io import VideoWriter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory, synth_dir) -> Path:
    """A folder with two short synthetic mp4 clips."""
    ds = YTVISDataset(synth_dir / "annotations.json", synth_dir / "JPEGImages")
    folder = tmp_path_factory.mktemp("clips")
    for v in ds.videos[:2]:
        with VideoWriter(folder / f"clip{v.id}.mp4", Fraction(5)) as w:
            for f in range(min(v.length, 4)):
                w.write(ds.load_image(v, f))
    return folder


def test_streams_end_tracks_and_datasets_keep_the_official_rule(tiny_weights):
    p = VideoPredictor.from_weights(tiny_weights, device="cpu")
    assert p.tracker_cfg.max_missed == 0  # predict_video / infer: tracks never end
    assert p.new_tracker().config.max_missed == 0
    assert p.new_tracker(stream=True).config.max_missed == p.tracker_cfg.stream_max_missed > 0
    q = VideoPredictor.from_weights(tiny_weights, device="cpu", overrides=["test.tracker.max_missed=7"])
    assert q.new_tracker(stream=True).config.max_missed == 7 == q.new_tracker().config.max_missed
    r = VideoPredictor.from_weights(
        tiny_weights, device="cpu", overrides=["test.tracker.stream_max_missed=0"]
    )
    assert r.new_tracker(stream=True).config.max_missed == 0  # streams may keep tracks forever too


def test_predict_many_videos_is_resumable(tmp_path, clips, tiny_weights):
    out = tmp_path / "out"
    args = ["--weights", tiny_weights, "--output", out, "--device", "cpu"]
    r = run_cli("predict", clips, *args)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["clip1.mp4", "clip1.tracks.jsonl", "clip2.mp4", "clip2.tracks.jsonl"]
    assert read_tracks_jsonl(out / "clip2.tracks.jsonl")["end"]["num_frames"] == 4
    before = (out / "clip1.mp4").stat().st_mtime_ns
    (out / "clip2.tracks.jsonl").unlink()  # as if interrupted while on clip2
    r = run_cli("predict", str(clips / "*.mp4"), *args)
    assert r.returncode == 0, r.stderr
    assert "1 videos, 4 frames" in r.stdout and "1 done before" in r.stdout
    assert (out / "clip1.mp4").stat().st_mtime_ns == before and (out / "clip2.tracks.jsonl").is_file()


def test_predict_many_reports_a_bad_video_and_finishes_the_others(tmp_path, clips, tiny_weights):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.mp4").write_bytes((clips / "clip1.mp4").read_bytes())
    (folder / "b.mp4").write_bytes(b"not a video")
    (folder / "list.txt").write_text("a.mp4\nb.mp4\n")
    out = tmp_path / "out"
    r = run_cli("predict", folder / "list.txt", "--weights", tiny_weights, "--output", out, "--device", "cpu")
    assert r.returncode == 2 and "1 of 2 videos failed" in r.stderr.splitlines()[-1]
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "a.tracks.jsonl"]  # nothing partial for b


@pytest.mark.slow
def test_infer_with_torchrun_gives_the_same_results_file(tmp_path, synth_dir, tiny_weights):
    """2 gloo processes, videos sharded by rank, merged by rank 0: byte-identical to one process."""
    args = [
        "infer", "--weights", str(tiny_weights), "--annotations", str(synth_dir / "annotations.json"),
        "--images", str(synth_dir / "JPEGImages"), "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "-m", "crossvis.cli.main", *args, "--output", str(tmp_path / "one.json")],
        capture_output=True, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    assert "tracks never end (official CrossVIS rule" in one.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = subprocess.run(
        [*launcher, "-m", "crossvis.cli.main", *args, "--output", str(tmp_path / "two.json")],
        capture_output=True, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("wrote ") == 1  # rank 0 reports
    assert json.loads((tmp_path / "one.json").read_text())  # tracks were found
    assert (tmp_path / "two.json").read_bytes() == (tmp_path / "one.json").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.json", "two.json"]


def test_tracks_writer_masks_round_trip_and_file_is_atomic(tmp_path):
    import numpy as np
    from pycocotools import mask as mask_utils

    from crossvis.engine.predictor import FrameResult
    from crossvis.engine.tracks_writer import TracksWriter
    from crossvis.tracking import Track

    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(3, 7, 5)) > 0.5
    res = FrameResult(0, np.array([4, 1, 2]), np.array([0, 1, 0]), [], np.array([0.9, 0.5, 0.2]),
                      np.zeros((3, 4)), masks)  # fmt: skip
    path = tmp_path / "t.jsonl"
    w = TracksWriter(path, source="s", fps=2.0, class_names=["a", "b"], category_ids=[10, 20])
    w.frame(0, 0.0, res, (7, 5))
    assert not path.exists()  # appears whole on close
    w.finished([Track(1, 1, 0, 0, 1, 0.5)])
    w.close(skipped_frames=3)
    data = read_tracks_jsonl(path)
    got = [mask_utils.decode(i["segmentation"]).astype(bool) for i in data["frames"][0]["instances"]]
    assert all(np.array_equal(g, m) for g, m in zip(got, masks))
    assert data["tracks"] == [{"track_id": 1, "category_id": 20, "class_name": "b", "score": 0.5, "first_frame": 0,
                               "last_frame": 0, "num_detections": 1}]  # fmt: skip
    assert data["end"] == {"num_frames": 1, "num_tracks": 1, "skipped_frames": 3}
    w2 = TracksWriter(tmp_path / "u.jsonl", source="s", fps=2.0, class_names=["a"], category_ids=[1])
    w2.frame(0, 0.0, res, (7, 5))
    w2.close(ok=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl"]


@pytest.mark.parametrize("live", [True, False])
def test_ctrl_c_ends_a_live_stream_cleanly_and_aborts_a_file(tmp_path, synth_dir, tiny_weights, live):
    from crossvis.engine.inference import predict_stream
    from crossvis.engine.video_io import FrameSource

    ds = YTVISDataset(synth_dir / "annotations.json", synth_dir / "JPEGImages")
    v = ds.videos[0]

    def frames():
        for f in range(3):
            yield ds.load_image(v, f), None
        raise KeyboardInterrupt

    src = FrameSource(frames(), Fraction(5), None, "cam", live=live)
    p = VideoPredictor.from_weights(tiny_weights, device="cpu")
    out, js = tmp_path / "o.mp4", tmp_path / "t.jsonl"
    if live:
        r = predict_stream(p, src, out, js)
        assert r["frames"] == 3 and read_tracks_jsonl(js)["end"]["num_frames"] == 3 and out.is_file()
    else:
        with pytest.raises(KeyboardInterrupt):
            predict_stream(p, src, out, js)
        assert list(tmp_path.iterdir()) == []
