from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from conftest import run_cli
from crossvis.data.ytvis import YTVISDataset
from crossvis.engine.predictor import VideoPredictor
from crossvis.engine.tracks_writer import read_tracks_jsonl
from crossvis.engine.video_io import VideoWriter, count_frames


@pytest.fixture(scope="module")
def synth_mp4(tmp_path_factory, synth_dir):
    ds = YTVISDataset(synth_dir / "annotations.json", synth_dir / "JPEGImages")
    v = ds.videos[0]
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with VideoWriter(path, Fraction(5)) as w:
        for f in range(v.length):
            w.write(ds.load_image(v, f))
    return path, v.length


def test_video_writer_keeps_frame_count(synth_mp4):
    path, n = synth_mp4
    assert count_frames(path) == n


def test_predict_on_mp4_writes_overlay_and_tracks(tmp_path, synth_mp4, tiny_weights):
    path, n = synth_mp4
    out, js = tmp_path / "o.mp4", tmp_path / "t.json"
    r = run_cli("predict", path, "--weights", tiny_weights, "--output", out, "--json", js, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert count_frames(out) == n
    data = read_tracks_jsonl(js)  # JSON Lines: one record per frame, one per track, an end line
    assert data["video"]["fps"] == 5.0 and data["end"]["num_frames"] == n == len(data["frames"])
    assert [f["frame"] for f in data["frames"]] == list(range(n))
    assert [f["time"] for f in data["frames"]] == pytest.approx([i / 5 for i in range(n)])
    ids = {i["track_id"] for f in data["frames"] for i in f["instances"]}
    assert ids and ids == {t["track_id"] for t in data["tracks"]} and data["end"]["num_tracks"] == len(ids)
    assert "end-to-end" in r.stdout and "model-only" in r.stdout


def test_predict_on_frame_folder(tmp_path, synth_dir, tiny_weights):
    folder = synth_dir / "JPEGImages" / "video_0002"
    n = len(list(folder.glob("*.jpg")))
    out = tmp_path / "o.mp4"
    r = run_cli("predict", folder, "--weights", tiny_weights, "--output", out, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert count_frames(out) == n


def test_predict_bad_source_is_one_line_and_writes_nothing(tmp_path, tiny_weights):
    r = run_cli("predict", tmp_path / "nope.mp4", "--weights", tiny_weights, "--output", tmp_path / "o.mp4")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nope.mp4" in r.stderr
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    r = run_cli("predict", tmp_path / "bad.mp4", "--weights", tiny_weights, "--output", tmp_path / "o.mp4")
    assert r.returncode == 2 and r.stderr.startswith("crossvis: error: ")
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.mp4"]
    r = run_cli(
        "predict",
        tmp_path / "bad.mp4",
        "--weights",
        tmp_path / "w.safetensors",
        "--output",
        tmp_path / "o.mp4",
    )
    assert r.returncode == 2 and "weights file not found" in r.stderr


def test_infer_writes_a_results_file_that_evaluate_accepts(tmp_path, synth_dir, tiny_weights):
    res = tmp_path / "results.json"
    r = run_cli(
        "infer",
        "--weights",
        tiny_weights,
        "--annotations",
        synth_dir / "annotations.json",
        "--images",
        synth_dir / "JPEGImages",
        "--output",
        res,
        "--zip",
        "--evaluate",
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "results.zip").is_file() and "AP50" in r.stdout
    results = json.loads(res.read_text())
    assert results and {"video_id", "category_id", "score", "segmentations"} <= set(results[0])
    r = run_cli("evaluate", synth_dir / "annotations.json", res)
    assert r.returncode == 0, r.stderr


def test_python_api_streams_frames(synth_dir, tiny_weights):
    ds = YTVISDataset(synth_dir / "annotations.json", synth_dir / "JPEGImages")
    v = ds.videos[1]
    frames = [ds.load_image(v, f) for f in range(v.length)]
    p = VideoPredictor.from_weights(tiny_weights, device="cpu")
    results = list(p.track(frames))
    assert [r.index for r in results] == list(range(v.length))
    r0 = results[0]
    n = len(r0.track_ids)
    assert r0.masks.shape == (n, v.height, v.width) and r0.boxes.shape == (n, 4) and len(r0.class_names) == n
    assert len(set(r0.track_ids.tolist())) == n  # one detection per track per frame
    vr = p.predict_video(frames)
    assert vr.num_frames == v.length and (vr.height, vr.width) == (v.height, v.width)
    assert all(len(t["segmentations"]) == v.length for t in vr.tracks)
    assert vr.to_results(v.id)[0]["video_id"] == v.id


def test_convert_official_checkpoint_names(tmp_path):
    """Official detectron2 key names (reference notes, section 6) map one-to-one onto our R-50."""
    from crossvis.modeling.builders import crossvis_r50
    from crossvis.modeling.weights import load_model

    ours = crossvis_r50(num_identities=3774).state_dict()
    off: dict[str, torch.Tensor] = {}
    bb = "backbone.bottom_up."

    def norm(prefix, c):
        for k in ("weight", "bias", "running_mean", "running_var"):
            off[f"{prefix}.norm.{k}"] = torch.rand(c)

    off[bb + "stem.conv1.weight"] = torch.rand(64, 3, 7, 7)
    norm(bb + "stem.conv1", 64)
    for s, blocks, w, cout, cin in [
        (2, 3, 64, 256, 64),
        (3, 4, 128, 512, 256),
        (4, 6, 256, 1024, 512),
        (5, 3, 512, 2048, 1024),
    ]:
        for b in range(blocks):
            p = f"{bb}res{s}.{b}"
            off[f"{p}.conv1.weight"] = torch.rand(w, cin if b == 0 else cout, 1, 1)
            off[f"{p}.conv2.weight"] = torch.rand(w, w, 3, 3)
            off[f"{p}.conv3.weight"] = torch.rand(cout, w, 1, 1)
            for c, n in (("conv1", w), ("conv2", w), ("conv3", cout)):
                norm(f"{p}.{c}", n)
            if b == 0:
                off[f"{p}.shortcut.weight"] = torch.rand(cout, cin, 1, 1)
                norm(f"{p}.shortcut", cout)
    for lvl, c in ((3, 512), (4, 1024), (5, 2048)):
        off[f"backbone.fpn_lateral{lvl}.weight"], off[f"backbone.fpn_lateral{lvl}.bias"] = (
            torch.rand(256, c, 1, 1),
            torch.rand(256),
        )
        off[f"backbone.fpn_output{lvl}.weight"], off[f"backbone.fpn_output{lvl}.bias"] = (
            torch.rand(256, 256, 3, 3),
            torch.rand(256),
        )
    for p in ("p6", "p7"):
        off[f"backbone.top_block.{p}.weight"], off[f"backbone.top_block.{p}.bias"] = (
            torch.rand(256, 256, 3, 3),
            torch.rand(256),
        )
    h = "proposal_generator.fcos_head."
    for t in ("cls", "bbox", "reid"):
        for i in (0, 3, 6, 9):
            off[f"{h}{t}_tower.{i}.weight"], off[f"{h}{t}_tower.{i}.bias"] = (
                torch.rand(256, 256, 3, 3),
                torch.rand(256),
            )
            off[f"{h}{t}_tower.{i + 1}.weight"], off[f"{h}{t}_tower.{i + 1}.bias"] = (
                torch.rand(256),
                torch.rand(256),
            )
    for name, co, k in (("cls_logits", 40, 3), ("bbox_pred", 4, 3), ("ctrness", 1, 3), ("reid_pred", 256, 1)):
        off[f"{h}{name}.weight"], off[f"{h}{name}.bias"] = torch.rand(co, 256, k, k), torch.rand(co)
    for i in range(5):
        off[f"{h}scales.{i}.scale"] = torch.rand(1)
    for k in ("weight", "bias", "running_mean", "running_var"):
        off[f"{h}reid_pred_bn.{k}"] = torch.rand(256)
    off[f"{h}reid_pred_bn.num_batches_tracked"] = torch.tensor(5)
    off["mask_head.sizes_of_interest"] = torch.tensor([64.0, 128, 256, 512, 1024])
    off["mask_head._iter"] = torch.zeros(1)
    for i in range(3):
        off[f"mask_branch.refine.{i}.0.weight"] = torch.rand(128, 256, 3, 3)
        for k in ("weight", "bias", "running_mean", "running_var"):
            off[f"mask_branch.refine.{i}.1.{k}"] = torch.rand(128)
        off[f"mask_branch.refine.{i}.1.num_batches_tracked"] = torch.tensor(1)
    for i in range(4):
        off[f"mask_branch.tower.{i}.0.weight"] = torch.rand(128, 128, 3, 3)
        for k in ("weight", "bias", "running_mean", "running_var"):
            off[f"mask_branch.tower.{i}.1.{k}"] = torch.rand(128)
        off[f"mask_branch.tower.{i}.1.num_batches_tracked"] = torch.tensor(1)
    off["mask_branch.tower.4.weight"], off["mask_branch.tower.4.bias"] = (
        torch.rand(8, 128, 1, 1),
        torch.rand(8),
    )
    off["controller.weight"], off["controller.bias"] = torch.rand(169, 256, 3, 3), torch.rand(169)
    off["cls.weight"], off["cls.bias"] = torch.rand(3774, 256), torch.rand(3774)
    assert len(off) == 397  # the reference notes' key count
    ckpt = tmp_path / "official.pth"
    torch.save({"model": off, "iteration": 23000}, ckpt)
    out = tmp_path / "converted.safetensors"
    r = run_cli("convert", ckpt, "--output", out)
    assert r.returncode == 0, r.stderr
    model, w = load_model(out)
    sd = model.state_dict()
    assert len(w.class_names) == 40 and w.class_names[0] == "person"
    assert torch.equal(sd["backbone.body.layer3.5.conv2.weight"], off[bb + "res4.5.conv2.weight"])
    assert torch.equal(
        sd["backbone.body.layer2.0.downsample.1.running_var"], off[bb + "res3.0.shortcut.norm.running_var"]
    )
    assert torch.equal(sd["fpn.lateral.2.weight"], off["backbone.fpn_lateral5.weight"])
    assert torch.equal(sd["head.identity_bn.running_mean"], off[h + "reid_pred_bn.running_mean"])
    assert torch.equal(sd["controller.bias"], off["controller.bias"])
    # every model tensor came from the checkpoint and every checkpoint tensor was used
    assert "not in the checkpoint" not in r.stderr and "unused" not in r.stderr
    assert len(ours) == len(sd) + 2  # ours minus the identity classifier (weight, bias) that inference drops


def test_demo_writes_every_output(tmp_path, tiny_weights):
    out = tmp_path / "demo"
    r = run_cli("demo", "--output", out, "--weights", tiny_weights, "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    from PIL import Image

    n = json.loads((out / "clip" / "annotations.json").read_text())["videos"][0]["length"]
    assert count_frames(out / "overlay.mp4") == n
    assert Image.open(out / "contact_sheet.png").size[0] == 4 * 256
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["AP"] <= 1 and "id_switches" in metrics["identity"] and "iou_only_tracker" in metrics
    assert isinstance(json.loads((out / "results.json").read_text()), list)
    assert json.loads((out / "tracks.json").read_text())["num_frames"] == n
    assert "model-only" in r.stdout and "identity switches" in r.stdout


def test_overlay_colours_by_id_and_skips_low_scores():
    from crossvis.engine.predictor import FrameResult
    from crossvis.engine.visualize import draw_result, track_color

    frame = np.zeros((40, 40, 3), np.uint8)
    masks = np.zeros((2, 40, 40), bool)
    masks[0, 25:35, 25:35] = True
    masks[1, 25:35, 2:12] = True
    res = FrameResult(
        index=0,
        track_ids=np.array([7, 3]),
        classes=np.array([0, 1]),
        class_names=["a", "b"],
        scores=np.array([0.2, 0.9]),
        boxes=np.array([[25, 25, 35, 35], [2, 25, 12, 35]], float),
        masks=masks,
    )
    out = draw_result(frame, res, min_score=0.3)
    assert out[30, 30].tolist() == [0, 0, 0]  # score 0.2: not drawn
    assert np.allclose(out[30, 7], np.array(track_color(3)) * 0.5, atol=1)  # id 3 colour, alpha 0.5
    assert track_color(3) == track_color(3) and track_color(3) != track_color(7)
