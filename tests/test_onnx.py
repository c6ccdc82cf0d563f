"""ONNX export and ONNX Runtime inference: the same outputs as PyTorch (1e-4) and the same AP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_cli
from crossvis.engine.onnx_export import FrameNetwork, MaskHeadGraph
from crossvis.engine.predictor import VideoPredictor
from crossvis.engine.tracks_writer import read_tracks_jsonl
from crossvis.modeling.weights import load_model

ort = pytest.importorskip("onnxruntime", reason="the optional `onnx` extra")


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    """synthetic-tiny exported through the CLI (one export for the module: it takes ~20 s of CPU)."""
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    r = run_cli("export", "synthetic-tiny", "--format", "onnx", "--output", path)
    assert r.returncode == 0, r.stderr
    assert f"wrote {path}" in r.stdout
    return path


@pytest.fixture(scope="module")
def torch_model():
    return load_model("synthetic-tiny")[0]


def test_network_outputs_match_pytorch_at_two_sizes(onnx_file, torch_model):
    from crossvis.engine.onnx_runtime import OnnxModel

    om = OnnxModel(onnx_file)
    for h, w in ((192, 256), (224, 320)):  # dynamic height and width
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            ref = FrameNetwork(torch_model)(x)
        got = om.session.run(None, {"image": x.numpy()})
        assert len(got) == len(ref) == 6
        for r, g in zip(ref, got):
            assert r.shape == g.shape
            assert np.abs(r.numpy() - g).max() <= 1e-4


def test_mask_head_graph_matches_the_dynamic_mask_head(onnx_file, torch_model):
    from crossvis.engine.onnx_runtime import OnnxModel

    om = OnnxModel(onnx_file)
    torch.manual_seed(0)
    mh = torch_model.mask_head
    feats = torch.randn(1, 8, 24, 40)
    params = torch.randn(7, mh.num_params) * 0.3
    locs = torch.rand(7, 2) * torch.tensor([320.0, 192.0])
    levels = torch.tensor([0, 1, 2, 3, 4, 0, 2])
    ref = mh(feats, 8, params=params, locations=locs, levels=levels, im_inds=torch.zeros(7, dtype=torch.long))
    assert torch.allclose(MaskHeadGraph(mh, 8)(feats, params, locs, levels), ref, atol=1e-5)
    got = om.postprocess.mask_head(
        feats, 8, params=params, locations=locs, levels=levels, im_inds=torch.zeros(7, dtype=torch.long)
    )
    assert got.shape == ref.shape == (7, 48, 80)
    assert (got - ref).abs().max().item() <= 1e-4


def test_metadata_carries_config_and_class_names(onnx_file):
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_file), load_external_data=False).metadata_props}
    _, w = load_model("synthetic-tiny")
    assert json.loads(meta["class_names"]) == w.class_names
    assert "regnetx_002" in meta["crossvis_config"]
    assert meta["format"] == "crossvis-onnx-1"


def test_same_detections_and_ap_on_a_synthetic_split(onnx_file, tmp_path):
    from crossvis.data.synthetic import SynthParams, generate
    from crossvis.data.ytvis import YTVISDataset
    from crossvis.engine.inference import infer_videos
    from crossvis.evaluation import evaluate

    generate(tmp_path, SynthParams(videos=3, frames=5, seed=1000))
    ds = YTVISDataset(tmp_path / "annotations.json", tmp_path / "JPEGImages")
    pt = VideoPredictor.from_weights("synthetic-tiny", device="cpu")
    ox = VideoPredictor.from_weights(onnx_file, device="cpu")
    frame = ds.load_image(ds.videos[0], 0)
    a, b = pt.detect([frame])[0], ox.detect([frame])[0]
    assert len(a) == len(b) > 0 and torch.equal(a.classes, b.classes)
    assert torch.allclose(a.scores, b.scores, atol=1e-4) and torch.allclose(a.boxes, b.boxes, atol=1e-3)
    ap_pt = evaluate(ds, infer_videos(pt, ds, progress=False)).stats["AP"]
    ap_ox = evaluate(ds, infer_videos(ox, ds, progress=False)).stats["AP"]
    assert ap_pt > 0.3  # the trained weights find the objects, so the comparison means something
    assert ap_ox == pytest.approx(ap_pt, abs=1e-6)


@pytest.mark.slow
def test_cli_predict_runs_an_onnx_file(onnx_file, tmp_path):
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    g = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(g.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(frames / f"{i:05d}.jpg")
    r = run_cli(
        "predict",
        frames,
        "--weights",
        onnx_file,
        "--output",
        tmp_path / "o.mp4",
        "--json",
        tmp_path / "t.jsonl",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    assert read_tracks_jsonl(tmp_path / "t.jsonl")["end"]["num_frames"] == 3
    r = run_cli(
        "predict", frames, "--weights", onnx_file, "--output", tmp_path / "p.mp4", "--precision", "bf16"
    )
    assert r.returncode == 2 and "ONNX" in r.stderr


# ------------------------------------------------------------------------------------------------- int8


@pytest.fixture(scope="module")
def calibration_videos(tmp_path_factory):
    """Three synthetic videos (seed 3000, not the evaluation seeds) as folders of frames."""
    from crossvis.data.synthetic import SynthParams, generate

    root = tmp_path_factory.mktemp("calib")
    generate(root, SynthParams(videos=3, frames=6, seed=3000))
    return root / "JPEGImages"


@pytest.fixture(scope="module")
def int8_file(tmp_path_factory, calibration_videos):
    """synthetic-tiny exported and quantised through the CLI, calibrated on a glob of frame folders."""
    path = tmp_path_factory.mktemp("int8") / "tiny_int8.onnx"
    r = run_cli(
        "export", "synthetic-tiny", "--format", "onnx", "--int8",
        "--calibration", f"{calibration_videos}/*", "--calibration-frames", "9", "--output", path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"wrote {path}"  # the quantiser's own chatter stays off the output
    return path


def _conv_weight_types(path) -> dict[str, str]:
    """{weight parameter name: 'int8' when a Conv reads it through DequantizeLinear, else 'float'}."""
    import onnx

    g = onnx.load(str(path)).graph
    producer = {o: n for n in g.node for o in n.output}
    out = {}
    for n in g.node:
        if n.op_type != "Conv":
            continue
        w = producer.get(n.input[1])
        if w is not None and w.op_type == "DequantizeLinear":
            out[w.input[0]] = "int8"
        else:
            out[n.input[1]] = "float"
    return out


def test_int8_quantises_the_network_but_not_the_prediction_layers(int8_file, calibration_videos):
    import onnx

    kinds = _conv_weight_types(int8_file)
    inits = {i.name: i for i in onnx.load(str(int8_file)).graph.initializer}
    int8 = [k for k, v in kinds.items() if v == "int8"]
    assert all(inits[k].data_type == onnx.TensorProto.INT8 for k in int8)
    assert any("backbone" in k for k in int8) and any("cls_tower" in k for k in int8)
    assert any("mask_branch" in k for k in int8)
    floats = [k for k, v in kinds.items() if v == "float"]
    for layer in ("cls_logits", "controller"):
        assert any(layer in k for k in floats), layer
        assert not any(layer in k for k in int8), layer
    meta = {p.key: p.value for p in onnx.load(str(int8_file), load_external_data=False).metadata_props}
    assert meta["precision"] == "int8" and meta["calibration"] == f"{calibration_videos}/* (9 frames)"
    assert "regnetx_002" in meta["crossvis_config"] and "crossvis_mask_head_onnx" in meta


def test_int8_detections_approximate_fp32(int8_file, onnx_file, tmp_path):
    from torchvision.ops import box_iou

    from crossvis.data.synthetic import SynthParams, generate
    from crossvis.data.ytvis import YTVISDataset

    generate(tmp_path, SynthParams(videos=1, frames=2, seed=1000))
    ds = YTVISDataset(tmp_path / "annotations.json", tmp_path / "JPEGImages")
    frame = ds.load_image(ds.videos[0], 0)
    q = VideoPredictor.from_weights(int8_file, device="cpu")
    f = VideoPredictor.from_weights(onnx_file, device="cpu")
    assert q.model.precision == "int8" and f.model.precision == "fp32"
    a, b = f.detect([frame])[0], q.detect([frame])[0]
    assert len(a) > 0 and len(b) > 0
    # quantised: not the same numbers ...
    x = torch.randn(1, 3, 192, 256)
    ra = f.model.session.run(None, {"image": x.numpy()})
    rb = q.model.session.run(None, {"image": x.numpy()})
    assert max(float(np.abs(u - v).max()) for u, v in zip(ra, rb)) > 1e-4
    # ... but the same objects: each fp32 detection above 0.5 has an int8 one of its class on it
    for box, cls in zip(a.boxes[a.scores > 0.5], a.classes[a.scores > 0.5]):
        same = b.classes == cls
        assert same.any() and box_iou(box[None], b.boxes[same]).max() > 0.8


def test_int8_needs_onnx_and_calibration(tmp_path, calibration_videos):
    out = tmp_path / "m.onnx"
    r = run_cli("export", "synthetic-tiny", "--format", "onnx", "--int8", "--output", out)
    assert (
        r.returncode == 2 and r.stderr.startswith("crossvis: error: --int8:") and "--calibration" in r.stderr
    )
    r = run_cli("export", "synthetic-tiny", "--int8", "--calibration", calibration_videos, "--output", out)
    assert r.returncode == 2 and "--format onnx" in r.stderr and len(r.stderr.splitlines()) == 1
    missing = tmp_path / "missing.mp4"
    r = run_cli(
        "export", "synthetic-tiny", "--format", "onnx", "--int8", "--calibration", missing, "--output", out
    )  # fmt: skip
    assert (
        r.returncode == 2
        and r.stderr == f"crossvis: error: {missing}: no such video file, frame folder or webcam index\n"
    )
    assert not out.exists() and list(tmp_path.iterdir()) == []
    r = run_cli(
        "export", "synthetic-tiny", "--format", "onnx", "--int8", "--calibration", calibration_videos,
        "--calibration-frames", "0", "--output", out,
    )  # fmt: skip
    assert (
        r.returncode == 2 and r.stderr == "crossvis: error: --calibration-frames: must be at least 1, got 0\n"
    )
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_int8_calibration_frames_spread_over_sources(onnx_file, calibration_videos):
    from crossvis.engine.onnx_quantize import calibration_inputs
    from crossvis.engine.onnx_runtime import OnnxModel
    from crossvis.errors import CrossVISError

    om = OnnxModel(onnx_file)
    xs = calibration_inputs(om, f"{calibration_videos}/*", 6)  # 3 videos: 2 frames each
    assert len(xs) == 6 and all(x.shape[:2] == (1, 3) and x.dtype == np.float32 for x in xs)
    assert all(x.shape[2] % 32 == 0 and min(x.shape[2:]) >= 192 for x in xs)  # test size, padded
    firsts = {calibration_inputs(om, str(v), 1)[0].tobytes() for v in sorted(calibration_videos.iterdir())}
    assert len(firsts) == 3 and xs[0].tobytes() in firsts and xs[2].tobytes() in firsts
    with pytest.raises(CrossVISError, match="no such video"):
        calibration_inputs(om, calibration_videos / "nope", 4)


def test_benchmark_times_fp32_and_int8_onnx_files(onnx_file, int8_file, tmp_path):
    from crossvis.engine.benchmark import run_benchmark

    out = tmp_path / "b.json"
    lines = run_benchmark(
        "synthetic-tiny", size="96x128", iters=1, detections=5, onnx=[str(onnx_file), str(int8_file)],
        json_path=str(out),
    )  # fmt: skip
    assert f"--onnx {onnx_file} {int8_file}" in lines[0]
    ms = json.loads(out.read_text())["models_ms"]
    onnx_rows = sorted(k.split("[")[-1] for k in ms if "ONNX" in k)
    assert onnx_rows == ["ONNX Runtime int8]", "ONNX Runtime]"]
    assert all(ms[k] > 0 for k in ms)
