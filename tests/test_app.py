"""The web app (`crossvis app`): its endpoints driven with gradio_client, upload checks, the missing extra."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossvis.app.timeline import TOP, draw_timeline, track_rows
from crossvis.app.uploads import AppLimits, extract_frames_zip, limited, open_upload
from crossvis.data.synthetic import SynthParams, generate
from crossvis.data.ytvis import YTVISDataset
from crossvis.engine.video_io import FrameSource, VideoWriter, count_frames
from crossvis.engine.visualize import track_color
from crossvis.errors import CrossVISError

gradio_client = pytest.importorskip("gradio_client")

TRACKER_DEFAULTS = (0.4, 0.0, 0, 0.0, False, True)  # the official rule, as the page's controls start


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict:
    """A short synthetic clip as an mp4 and as a zip of frames, with its annotations."""
    root = tmp_path_factory.mktemp("appclip")
    generate(root / "clip", SynthParams(videos=1, frames=8, seed=5, height=96, width=128))
    ds = YTVISDataset(root / "clip" / "annotations.json", root / "clip" / "JPEGImages")
    video = ds.videos[0]
    frames = [ds.load_image(video, f) for f in range(video.length)]
    with VideoWriter(root / "clip.mp4", Fraction(6)) as w:
        for f in frames:
            w.write(f)
    with zipfile.ZipFile(root / "frames.zip", "w") as z:
        for i, name in enumerate(video.file_names):  # numbered 1..T without padding: natural order matters
            z.write(root / "clip" / "JPEGImages" / name, f"clip/frame{i + 1}.jpg")
        z.writestr("__MACOSX/clip/._frame1.jpg", b"resource fork")
    return {
        "mp4": root / "clip.mp4",
        "zip": root / "frames.zip",
        "annotations": root / "clip" / "annotations.json",
        "frames": len(frames),
        "video_id": video.id,
        "root": root,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app():
    from crossvis.app import launch

    demo = launch("synthetic-tiny", port=_free_port(), device="cpu", block=False, quiet=True)
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def client(app, tmp_path_factory):
    return gradio_client.Client(
        app.local_url, verbose=False, download_files=tmp_path_factory.mktemp("downloads")
    )


def _process(client, upload, annotations=None, fps=10.0, threshold=0.5):
    h = gradio_client.handle_file
    return client.predict(
        h(str(upload)),
        h(str(annotations)) if annotations else None,
        "synthetic-tiny",
        threshold,
        fps,
        *TRACKER_DEFAULTS,
        api_name="/process",
    )


def test_binds_localhost_by_default(app):
    assert app.server_name == "127.0.0.1"
    assert app.local_url.startswith("http://127.0.0.1:")


def test_video_upload_gives_every_output(client, clip):
    summary, overlay, sheet, table, timeline, metrics, files = _process(
        client, clip["mp4"], clip["annotations"]
    )
    names = {Path(f).name: Path(f) for f in files}
    assert set(names) == {"tracks.json", "results.json", "results.zip"}
    tracks = json.loads(names["tracks.json"].read_text())
    assert tracks["num_frames"] == clip["frames"] and tracks["fps"] == 6.0
    assert len(tracks["tracks"]) > 0
    # the table lists exactly the tracks of tracks.json, with their frame spans
    assert [r[0] for r in table["data"]] == [t["track_id"] for t in tracks["tracks"]]
    for row, t in zip(table["data"], tracks["tracks"]):
        present = [i for i, s in enumerate(t["segmentations"]) if s is not None]
        assert row[1:] == [t["class_name"], round(t["score"], 3), present[0], present[-1], len(present)]
    assert count_frames(overlay) == clip["frames"]
    assert Image.open(sheet).format == "PNG" and Image.open(timeline).height > 20
    results = json.loads(names["results.json"].read_text())
    assert len(results) == len(tracks["tracks"])
    assert {r["video_id"] for r in results} == {clip["video_id"]}
    with zipfile.ZipFile(names["results.zip"]) as z:
        assert json.loads(z.read("results.json")) == results
    # the evaluation shown is that of the downloaded results file, evaluated independently here
    from crossvis.evaluation import evaluate
    from crossvis.evaluation.report import format_metrics

    assert metrics.splitlines()[1:] == format_metrics(evaluate(clip["annotations"], results)).splitlines()
    assert "identity switches" in metrics and "identity switches" in summary


def test_zip_of_frames_in_natural_order(client, clip):
    _, overlay, _, table, _, metrics, files = _process(client, clip["zip"], fps=5.0)
    tracks = json.loads(next(Path(f) for f in files if Path(f).name == "tracks.json").read_text())
    assert tracks["num_frames"] == clip["frames"] and tracks["fps"] == 5.0
    assert count_frames(overlay) == clip["frames"]
    assert len(table["data"]) == len(tracks["tracks"])
    assert "annotations JSON" in metrics  # none given: the text says how to get metrics


def test_bad_upload_reads_as_one_message(client, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("this is not a video")
    with pytest.raises(Exception, match=r"bad\.mp4: cannot open as a video") as err:
        _process(client, bad)
    assert "Traceback" not in str(err.value) and str(tmp_path) not in str(err.value)


def test_annotations_of_another_clip_are_refused(client, clip, tmp_path):
    data = json.loads(clip["annotations"].read_text())
    data["videos"][0]["file_names"] = data["videos"][0]["file_names"][:-1]
    data["videos"][0].pop("length", None)
    for a in data["annotations"]:
        for key in ("segmentations", "bboxes", "areas"):
            a[key] = a[key][:-1]
    short = tmp_path / "short.json"
    short.write_text(json.dumps(data))
    with pytest.raises(Exception, match=rf"{clip['frames']} frames, but the annotations describe"):
        _process(client, clip["mp4"], short)


def test_sample_clip_is_evaluated(client):
    summary, overlay, _, table, _, metrics, _ = client.predict(
        "synthetic-tiny", 0.5, *TRACKER_DEFAULTS, api_name="/sample"
    )
    assert count_frames(overlay) >= 18 and len(table["data"]) > 0
    assert metrics.splitlines()[1].split() == ["AP", "AP50", "AP75", "APs", "APm", "APl"] + [
        "AR1",
        "AR10",
        "AR100",
        "ARs",
        "ARm",
        "ARl",
    ]


def test_serves_only_its_own_outputs(app, clip):
    import httpx

    raw = gradio_client.Client(app.local_url, verbose=False, download_files=False)  # files as server paths
    overlay = _process(raw, clip["mp4"])[1]  # {"path": ..., "url": ...}
    assert Path(overlay["path"]).name == "overlay.mp4"
    assert not Path(overlay["path"]).is_relative_to(app.crossvis_workdir)  # a copy in Gradio's cache
    served = httpx.get(overlay["url"])
    assert served.status_code == 200 and served.content[4:8] == b"ftyp"  # its own output, an mp4
    for other in (clip["mp4"], Path(__file__).resolve(), Path(app.crossvis_workdir)):
        assert httpx.get(f"{app.local_url}gradio_api/file={other}").status_code in (403, 404)
    # working files: at most keep_runs runs, and no extracted frames or sample clips left behind
    runs = list(Path(app.crossvis_workdir).glob("run-*"))
    assert 0 < len(runs) <= 4
    assert not [p for r in runs for p in r.iterdir() if p.name in ("frames", "sample")]


# ------------------------------------------------------------------------------------------ without a server


def test_zip_path_traversal_is_refused(tmp_path):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("frames/0.jpg", b"x")
        f.writestr("../escaped.jpg", b"x")
    with pytest.raises(CrossVISError, match="unsafe path"):
        extract_frames_zip(z, tmp_path / "out", AppLimits(), "evil.zip")
    assert not (tmp_path / "escaped.jpg").exists() and not (tmp_path / "out").exists()


def test_upload_limits(tmp_path, clip):
    with pytest.raises(CrossVISError, match="over the upload limit of 0.001 MB"):
        open_upload(clip["mp4"], tmp_path, AppLimits(max_upload_mb=0.001))
    with pytest.raises(CrossVISError, match="over the limit of 3 frames"):
        open_upload(clip["zip"], tmp_path / "a", AppLimits(max_frames=3))
    # a video's length (6-10 frames at 6 fps) is checked against max_seconds before any frame is decoded
    with pytest.raises(
        CrossVISError,
        match=rf"clip.mp4: {clip['frames']} frames at 6 fps is over the limit of 1500 frames and 1 s",
    ):
        open_upload(clip["mp4"], tmp_path / "b", AppLimits(max_seconds=1))
    # a source of unknown length stops at the limit while reading
    endless = FrameSource(iter([(np.zeros((4, 4, 3), np.uint8), None)] * 5), Fraction(2), None, "stream")
    frames = limited(endless, AppLimits(max_seconds=1.5), "stream")
    got = []
    with pytest.raises(CrossVISError, match="stream: more than 3 frames at 2 fps"):
        for f in frames:
            got.append(f)
    assert len(got) == 3
    with pytest.raises(CrossVISError, match="upload a video"):
        (tmp_path / "x.txt").write_text("hello")
        open_upload(tmp_path / "x.txt", tmp_path, AppLimits())


def test_zip_declared_sizes_checked_first(tmp_path):
    z = tmp_path / "big.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as f:
        f.writestr("0.png", b"\0" * (3 * 1024 * 1024))  # compresses to a few KB
    with pytest.raises(CrossVISError, match="unzips to 3 MB"):
        extract_frames_zip(z, tmp_path / "out", AppLimits(max_unzipped_mb=1), "big.zip")
    assert not (tmp_path / "out").exists()


def test_onnx_weights_get_a_clear_message(tmp_path):
    pytest.importorskip("gradio")
    from crossvis.app.ui import load_predictor

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07")
    with pytest.raises(CrossVISError, match="ONNX weights are not supported"):
        load_predictor(str(onnx), "cpu")


def test_timeline_marks_presence_in_track_colours():
    seg = {"size": [4, 4], "counts": [16]}
    tracks = [
        {"track_id": 3, "class_name": "a", "score": 0.9, "segmentations": [seg, None, seg]},
        {"track_id": 7, "class_name": "b", "score": 0.5, "segmentations": [None, seg, None]},
    ]
    assert track_rows(tracks) == [[3, "a", 0.9, 0, 2, 2], [7, "b", 0.5, 1, 1, 1]]
    img = np.asarray(draw_timeline(tracks, 3, width=450, row_height=20, label_width=150))
    cell = (450 - 150 - 10) / 3
    centre = [round(150 + (f + 0.5) * cell) for f in range(3)]
    y0, y1 = TOP + 10, TOP + 20 + 10  # the middle of each row
    assert tuple(img[y0, centre[0]]) == track_color(3) and tuple(img[y0, centre[2]]) == track_color(3)
    assert tuple(img[y0, centre[1]]) == (255, 255, 255)
    assert tuple(img[y1, centre[1]]) == track_color(7) and tuple(img[y1, centre[0]]) == (255, 255, 255)


def test_runner_keeps_recent_runs_and_few_weights(tmp_path):
    pytest.importorskip("gradio")
    from crossvis.app.ui import Runner

    runner = Runner("synthetic-tiny", "cpu", AppLimits(), keep_runs=2)
    active = runner.new_run()  # in progress: never removed
    done = []
    for _ in range(4):
        run = runner.new_run()
        (run / "frames").mkdir()
        runner._finish(run)
        done.append(run)
    assert active.is_dir() and not (done[-1] / "frames").exists()
    assert sorted(p for p in runner.root.iterdir() if p != active) == sorted(done[-2:])
    # weights typed into the page: the starting ones stay loaded, at most MAX_EXTRA_WEIGHTS others
    from crossvis.modeling.weights import SHIPPED

    for i in range(3):
        w = tmp_path / f"w{i}.safetensors"
        w.write_bytes(SHIPPED["synthetic-tiny"].path.read_bytes())
        runner.predictor(str(w))
    assert list(runner._predictors) == ["synthetic-tiny", str(tmp_path / "w1.safetensors"), str(w)]
    assert runner.predictor("synthetic-tiny") is runner.default


def test_missing_extra_is_one_line(monkeypatch):
    from crossvis.app import INSTALL_HINT, require_gradio

    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError
    with pytest.raises(CrossVISError, match=r"pip install 'crossvis\[app\]'"):
        require_gradio()
    code = "import sys; sys.modules['gradio'] = None; from crossvis.cli.main import main; sys.exit(main(['app']))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == f"crossvis: error: crossvis app: {INSTALL_HINT}"


def test_cli_lists_app():
    r = subprocess.run(
        [sys.executable, "-m", "crossvis.cli.main", "app", "--help"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "--max-upload-mb" in r.stdout and "127.0.0.1" in r.stdout


def test_page_errors_are_escaped_and_name_uploads_not_paths():
    pytest.importorskip("gradio")
    from crossvis.app.ui import _page_error, _readable

    e = CrossVISError("/tmp/gradio/abc/<img src=x onerror=alert(1)>.mp4", "cannot open as a video")
    text = _readable(
        e, {"/tmp/gradio/abc/<img src=x onerror=alert(1)>.mp4": "<img src=x onerror=alert(1)>.mp4"}
    )
    assert text == "<img src=x onerror=alert(1)>.mp4: cannot open as a video"
    assert _page_error(text).message == "&lt;img src=x onerror=alert(1)&gt;.mp4: cannot open as a video"
