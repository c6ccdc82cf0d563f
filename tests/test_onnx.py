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
