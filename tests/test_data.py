from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from conftest import run_cli
from crossvis.data.masks import encode_mask, encode_uncompressed
from crossvis.data.pairs import FramePairDataset, collate_pairs, pad_to, resize_shape
from crossvis.data.synthetic import SynthParams, generate, render_video
from crossvis.data.ytvis import YTVISDataset, coco_as_videos
from crossvis.errors import CrossVISError


def test_synth_round_trip_masks_exact(synth_dir):
    ds = YTVISDataset(synth_dir / "annotations.json", synth_dir / "JPEGImages", check=True)
    p = SynthParams(videos=6, frames=6, seed=3, height=96, width=128)
    for vi, video in enumerate(ds.videos):
        frames, objects, (h, w) = render_video(p, vi)
        assert (video.height, video.width, video.length) == (h, w, len(frames))
        present = [o for o in objects if any(m is not None for m in o["masks"])]
        assert len(present) == len(video.annotations)
        for o, ann in zip(present, video.annotations):
            assert ann["category_id"] == o["cls"] + 1
            for f, m in enumerate(o["masks"]):
                got = ds.decode(video, ann, f)
                if m is None:
                    assert got is None and ann["bboxes"][f] is None
                else:
                    assert np.array_equal(got, m)
                    ys, xs = np.nonzero(m)
                    assert ann["bboxes"][f] == [
                        xs.min(),
                        ys.min(),
                        xs.max() - xs.min() + 1,
                        ys.max() - ys.min() + 1,
                    ]
                    assert ann["areas"][f] == int(m.sum())
        img = ds.load_image(video, 0)
        assert img.shape == (h, w, 3) and img.dtype == np.uint8


def test_synth_is_deterministic_and_meets_default_statistics(tmp_path):
    a = generate(tmp_path / "a", SynthParams(videos=40, frames=12, seed=5))
    b = generate(tmp_path / "b", SynthParams(videos=40, frames=12, seed=5))
    assert (tmp_path / "a/annotations.json").read_text() == (tmp_path / "b/annotations.json").read_text()
    assert len(a["categories"]) >= 5
    assert a["instances_per_video"] >= 2.5
    assert a["late_or_returning_fraction"] >= 0.2
    assert a == b


def test_category_and_identity_maps(synth_dir):
    ds = YTVISDataset(synth_dir / "annotations.json")
    assert ds.category_ids == [1, 2, 3, 4, 5] and ds.class_names[0] == "circle"
    assert ds.cat_to_class == {1: 0, 2: 1, 3: 2, 4: 3, 5: 4} and ds.class_to_category(4) == 5
    ids = sorted(a["id"] for v in ds.videos for a in v.annotations)
    assert ds.num_identities == len(ids) and [ds.identity_of[i] for i in ids] == list(range(len(ids)))


def _one_video(segs, h=4, w=5, extra=None):
    ann = {
        "id": 7,
        "video_id": 1,
        "category_id": 1,
        "iscrowd": 0,
        "segmentations": segs,
        "bboxes": [None] * len(segs),
        "areas": [None] * len(segs),
    }
    ann.update(extra or {})
    return {
        "videos": [
            {"id": 1, "file_names": [f"v/{i}.jpg" for i in range(len(segs))], "height": h, "width": w}
        ],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [ann],
    }


def test_loader_accepts_every_segmentation_format():
    m = np.zeros((4, 5), bool)
    m[1:3, 1:4] = True
    poly = [[1.0, 1.0, 4.0, 1.0, 4.0, 3.0, 1.0, 3.0]]
    ds = YTVISDataset(_one_video([encode_uncompressed(m), encode_mask(m), None, poly]), check=True)
    v = ds.videos[0]
    a = v.annotations[0]
    assert np.array_equal(ds.decode(v, a, 0), m)
    assert np.array_equal(ds.decode(v, a, 1), m)
    assert ds.decode(v, a, 2) is None
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, 4, 5))).astype(bool)
    assert np.array_equal(ds.decode(v, a, 3), expected) and expected.any()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["annotations"][0].update(video_id=9), "unknown video_id 9"),
        (lambda d: d["annotations"][0].update(category_id=9), "unknown category_id 9"),
        (
            lambda d: d["annotations"][0]["segmentations"].append(None),
            "2 segmentations for a video of 1 frames",
        ),
        (
            lambda d: d["annotations"][0]["segmentations"].__setitem__(0, {"size": [3, 5], "counts": [20]}),
            "RLE size [3, 5] differs",
        ),
        (
            lambda d: d["annotations"][0]["segmentations"].__setitem__(0, {"size": [4, 5], "counts": [3, 2]}),
            "counts must sum to 20",
        ),
        (
            lambda d: d["annotations"][0]["segmentations"].__setitem__(0, {"size": [4, 5], "counts": 5}),
            "'counts' must be a list or a string",
        ),
        (lambda d: d["annotations"][0]["segmentations"].__setitem__(0, [[1, 2, 3]]), "malformed polygon"),
        (lambda d: d["annotations"].append(copy.deepcopy(d["annotations"][0])), "duplicate annotation id"),
        (lambda d: d["videos"].append(copy.deepcopy(d["videos"][0])), "duplicate video id 1"),
        (lambda d: d.pop("videos"), "'videos' must be a list"),
    ],
)
def test_loader_rejects_malformed(mutate, message):
    m = np.ones((4, 5), bool)
    data = _one_video([encode_uncompressed(m)])
    mutate(data)
    with pytest.raises(CrossVISError, match=message.replace("[", r"\[").replace("]", r"\]")):
        YTVISDataset(data, check=True)


def test_loader_error_through_cli_is_one_line(tmp_path):
    bad = tmp_path / "gt.json"
    data = _one_video([encode_uncompressed(np.ones((4, 5), bool))], extra={"video_id": 3})
    bad.write_text(json.dumps(data))
    res = tmp_path / "res.json"
    res.write_text("[]")
    r = run_cli("evaluate", bad, res)
    assert r.returncode == 2
    assert r.stderr == f"crossvis: error: {bad}: annotation id 7: unknown video_id 3\n"
    (tmp_path / "broken.json").write_text("{not json")
    r = run_cli("evaluate", tmp_path / "broken.json", res)
    assert r.returncode == 2 and "malformed JSON" in r.stderr and r.stderr.count("\n") == 1


def test_missing_images_found_by_check(synth_dir, tmp_path):
    with pytest.raises(CrossVISError, match="missing image"):
        YTVISDataset(synth_dir / "annotations.json", tmp_path, check=True)


def test_videos_without_annotations_are_skipped_with_a_warning(caplog):
    data = _one_video([encode_uncompressed(np.ones((4, 5), bool))])
    data["videos"].append({"id": 2, "file_names": ["w/0.jpg"], "height": 4, "width": 5})
    ds = YTVISDataset(data)
    with caplog.at_level("WARNING"):
        kept = ds.annotated_videos()
    assert [v.id for v in kept] == [1] and "1 video(s) without annotations" in caplog.text


def test_coco_images_as_one_frame_videos():
    coco = {
        "images": [{"id": 4, "file_name": "a.jpg", "height": 4, "width": 5}],
        "categories": [{"id": 2, "name": "x"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 4,
                "category_id": 2,
                "iscrowd": 0,
                "area": 6.0,
                "bbox": [1, 1, 3, 2],
                "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]],
            }
        ],
    }
    ds = YTVISDataset(coco_as_videos(coco))
    assert (
        ds.videos[0].length == 1
        and ds.num_identities == 1
        and ds.decode(ds.videos[0], ds.videos[0].annotations[0], 0).any()
    )


def test_pair_sampler_window_shared_transform_and_links(synth_dir):
    ds = YTVISDataset(synth_dir / "annotations.json", synth_dir / "JPEGImages")
    pairs = FramePairDataset(ds, [64, 80], 200, hflip=True, sample_region=2)
    assert len(pairs) == sum(len(k) for k in pairs.kept_by_video.values())
    rng = random.Random(0)
    for i in range(len(pairs)):
        video, f = pairs.frames[i]
        for _ in range(5):
            r = pairs.reference_frame(video, f, rng)
            others = [k for k in pairs.kept_by_video[video.id] if k != f and abs(k - f) <= 2]
            assert (r in others) if others else r == f
    for i in range(0, len(pairs), 3):
        t0, t1 = pairs[(i, 1234 + i)]
        assert t0.image.shape == t1.image.shape and min(t0.image.shape[1:]) in (64, 80)
        assert t0.masks.shape[1:] == t0.image.shape[1:]
        for k, link in enumerate(t0.links.tolist()):
            if link >= 0:
                assert t1.identities[link] == t0.identities[k] and t1.links[link] == k
            else:
                assert t0.identities[k] not in t1.identities
        # boxes are the tight boxes of the masks
        for m, b in zip(t0.masks, t0.boxes):
            ys, xs = torch.nonzero(m, as_tuple=True)
            assert b.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    # same seed -> same pair; the flip is shared (frame 0 flipped iff frame 1 flipped): compare with no-flip
    a, b = pairs[(0, 99)], pairs[(0, 99)]
    assert torch.equal(a[0].image, b[0].image) and torch.equal(a[1].masks, b[1].masks)
    noflip = FramePairDataset(ds, [64, 80], 200, hflip=False, sample_region=2)
    c = noflip[(0, 99)]
    flipped = not torch.equal(a[0].image, c[0].image)
    assert torch.equal(a[1].image, c[1].image.flip(-1) if flipped else c[1].image)


def test_resize_and_pad_to_32():
    assert resize_shape(720, 1280, 360, 640) == (360, 640)
    assert resize_shape(100, 1000, 360, 640) == (64, 640)
    x, sizes = pad_to([torch.ones(3, 50, 70), torch.ones(3, 64, 33)], 32)
    assert x.shape == (2, 3, 64, 96) and sizes == [(50, 70), (64, 33)] and x[0, :, 50:].sum() == 0


def test_collate_keeps_pairs(synth_dir):
    ds = YTVISDataset(synth_dir / "annotations.json", synth_dir / "JPEGImages")
    pairs = FramePairDataset(ds, [64], 200)
    batch = collate_pairs([pairs[(0, 1)], pairs[(1, 2)]])
    assert len(batch["frames"]) == 2 and len(batch["frames"][0]) == 2


def test_large_json_loads_fast_enough_to_not_matter(tmp_path):
    # 300 videos x 10 annotations x 20 frames; the benchmark does 3,000 x 100,000
    segs = [{"size": [72, 128], "counts": [100, 50, 9066]}] * 20
    data = {
        "videos": [
            {"id": v, "file_names": [f"{v}/{t}.jpg" for t in range(20)], "height": 72, "width": 128}
            for v in range(1, 301)
        ],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {
                "id": i + 1,
                "video_id": i // 10 + 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentations": segs,
                "bboxes": [None] * 20,
                "areas": [None] * 20,
            }
            for i in range(3000)
        ],
    }
    ds = YTVISDataset(data)
    assert ds.num_identities == 3000 and len(ds.videos) == 300
