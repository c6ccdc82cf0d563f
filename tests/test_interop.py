"""Interop formats: exact round trips, the overlap rule, bad input, and the CVAT -> train -> CVAT loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from conftest import run_cli
from crossvis.data.formats import export_results, import_annotations
from crossvis.data.formats.cvat import cvat_to_mask, mask_to_cvat
from crossvis.data.masks import mask_to_box
from crossvis.data.synthetic import SynthParams, generate
from crossvis.data.ytvis import YTVISDataset
from crossvis.errors import CrossVISError

ROOT = Path(__file__).resolve().parent.parent
IMPORT_OF = {"mots": "mots", "png": "davis", "cvat": "cvat"}


def _tracks(ds: YTVISDataset) -> dict:
    """Per video: the sorted (category, per-frame mask bytes) of every track: pixels and identities, no ids."""
    out = {}
    for v in ds.videos:
        tr = []
        for a in v.annotations:
            frames = []
            for f in range(v.length):
                m = ds.decode(v, a, f)
                frames.append(b"" if m is None else np.packbits(m).tobytes())
            tr.append((a["category_id"], tuple(frames)))
        out[v.id] = sorted(tr)
    return out


@pytest.fixture(scope="module", params=[False, True], ids=["uncompressed", "compressed"])
def synth(request, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("interop")
    generate(out, SynthParams(videos=3, frames=5, seed=7, height=48, width=64, compressed_rle=request.param))
    return out


@pytest.mark.parametrize("fmt", ["mots", "png", "cvat"])
def test_round_trip_keeps_every_pixel_and_identity(tmp_path, synth, fmt):
    ann = synth / "annotations.json"
    ref = YTVISDataset(ann)
    export_results(ann, None, fmt, tmp_path / "out")
    back = YTVISDataset(import_annotations(tmp_path / "out", IMPORT_OF[fmt], output=tmp_path / "back.json"))
    assert _tracks(back) == _tracks(ref)
    assert sum(len(v.annotations) for v in ref.videos) > 3  # a real test: several tracks
    assert [(v.id, v.file_names, v.height, v.width) for v in back.videos] == [
        (v.id, v.file_names, v.height, v.width) for v in ref.videos
    ]
    assert back.categories == ref.categories
    assert json.loads((tmp_path / "back.json").read_text())["annotations"]


@pytest.mark.parametrize("fmt", ["mots", "png", "cvat"])
def test_import_without_videos_json_takes_frames_from_images(tmp_path, synth, fmt):
    ann = synth / "annotations.json"
    export_results(ann, None, fmt, tmp_path / "out")
    (tmp_path / "out" / "videos.json").unlink()
    back = YTVISDataset(
        import_annotations(
            tmp_path / "out", IMPORT_OF[fmt], images=synth / "JPEGImages", categories=str(ann)
        ),
        synth / "JPEGImages",
        check=True,
    )
    ref = YTVISDataset(ann)
    assert _tracks(back) == _tracks(ref)
    assert [v.file_names for v in back.videos] == [v.file_names for v in ref.videos]


def test_ytvis_copy_is_normalised_and_equal(tmp_path, synth):
    ann = synth / "annotations.json"
    export_results(ann, None, "ytvis", tmp_path / "out")
    data = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert all(isinstance(s["counts"], str) for a in data["annotations"] for s in a["segmentations"] if s)
    assert _tracks(YTVISDataset(data)) == _tracks(YTVISDataset(ann))


def test_mot_keeps_boxes_and_ids(tmp_path, synth):
    ann = synth / "annotations.json"
    ref = YTVISDataset(ann)
    export_results(ann, None, "mot", tmp_path / "out")
    for v in ref.videos:
        name = v.file_names[0].split("/")[0]
        rows = [line.split(",") for line in (tmp_path / "out" / f"{name}.txt").read_text().splitlines()]
        want = set()
        for k, a in enumerate(v.annotations, start=1):
            for f in range(v.length):
                m = ref.decode(v, a, f)
                if m is not None:
                    want.add((f + 1, k, *mask_to_box(m)))
        got = {(int(r[0]), int(r[1]), *map(float, r[2:6])) for r in rows}
        assert got == want and all(len(r) == 10 for r in rows)
    classes = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert (
        classes[ref.videos[0].file_names[0].split("/")[0]]["1"]
        == ref.categories[ref.category_ids.index(ref.videos[0].annotations[0]["category_id"])]["name"]
    )


def _overlapping_results(ann: Path) -> tuple[list, YTVISDataset]:
    """Two results on video 1 that overlap in every frame; the second has the lower score."""
    ds = YTVISDataset(ann)
    v = ds.videos[0]
    a = np.zeros((v.height, v.width), np.uint8)
    b = np.zeros_like(a)
    a[5:25, 5:25] = 1
    b[15:35, 15:35] = 1

    def rle(m):
        r = mask_utils.encode(np.asfortranarray(m))
        return {"size": r["size"], "counts": r["counts"].decode()}

    res = [
        {"video_id": v.id, "category_id": 1, "score": 0.9, "segmentations": [rle(a)] * v.length},
        {"video_id": v.id, "category_id": 2, "score": 0.4, "segmentations": [rle(b)] * v.length},
    ]
    return res, ds


@pytest.mark.parametrize("fmt", ["mots", "png"])
def test_one_object_per_pixel_formats_give_overlaps_to_the_higher_score(tmp_path, synth, fmt):
    res, ds = _overlapping_results(synth / "annotations.json")
    export_results(res, synth / "annotations.json", fmt, tmp_path / "out")
    back = YTVISDataset(import_annotations(tmp_path / "out", IMPORT_OF[fmt]))
    v = back.videos[0]
    masks = {a["category_id"]: back.decode(v, a, 0) for a in v.annotations}
    assert masks[1][15:25, 15:25].all()  # the 0.9 track keeps the contested pixels
    assert not masks[2][15:25, 15:25].any() and masks[2][25:35, 25:35].all()


def test_cvat_keeps_overlaps_exactly(tmp_path, synth):
    res, ds = _overlapping_results(synth / "annotations.json")
    export_results(res, synth / "annotations.json", "cvat", tmp_path / "out")
    back = YTVISDataset(import_annotations(tmp_path / "out", "cvat"))
    v = back.videos[0]
    masks = {a["category_id"]: back.decode(v, a, 0) for a in v.annotations}
    assert masks[1].sum() == 400 and masks[2].sum() == 400 and (masks[1] & masks[2]).sum() == 100


def test_cvat_rle_is_row_major_over_the_box_background_first():
    m = np.zeros((4, 5), bool)
    m[1, 2] = m[1, 3] = m[2, 3] = True  # box: left 2, top 1, width 2, height 2 -> rows [1 1][0 1]
    rle, left, top, w, h = mask_to_cvat(m)
    assert (rle, left, top, w, h) == ([0, 2, 1, 1], 2, 1, 2, 2)
    assert (cvat_to_mask(rle, (left, top, w, h), 4, 5, "x") == m).all()


# ------------------------------------------------------------------------------------------------ bad input


def _cvat_file(tmp_path: Path, synth: Path) -> Path:
    export_results(synth / "annotations.json", None, "cvat", tmp_path / "cv")
    return sorted((tmp_path / "cv").glob("*.xml"))[0]


def test_malformed_cvat_xml_names_file_and_line_and_writes_nothing(tmp_path, synth):
    xml = _cvat_file(tmp_path, synth)
    text = xml.read_text().splitlines()
    text[20] = text[20].replace(">", "", 1)  # break a tag on line 21
    xml.write_text("\n".join(text))
    out = tmp_path / "ann.json"
    r = run_cli("import", xml, "--format", "cvat", "--output", out)
    assert (
        r.returncode == 2 and r.stderr.startswith(f"crossvis: error: {xml}:2") and "malformed XML" in r.stderr
    )
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_cvat_entity_expansion_is_refused(tmp_path):
    bomb = tmp_path / "bomb.xml"
    bomb.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x "xxxxxxxxxx"><!ENTITY y "&x;&x;&x;&x;&x;&x;&x;&x;">]>\n'
        "<annotations>&y;</annotations>\n"
    )
    with pytest.raises(CrossVISError, match="DTD"):
        import_annotations(bomb, "cvat")


def test_cvat_bad_mask_and_unknown_label(tmp_path, synth):
    xml = _cvat_file(tmp_path, synth)
    text = xml.read_text()
    bad = text.replace('rle="', 'rle="7, ', 1)  # the runs no longer sum to width*height
    xml.write_text(bad)
    with pytest.raises(CrossVISError, match=r"track id 0 frame \d+.*sum to width\*height"):
        import_annotations(xml, "cvat")
    xml.write_text(text)
    with pytest.raises(CrossVISError, match=r"track id 0: unknown class name '\w+' \(known: dog, cat\)"):
        import_annotations(xml, "cvat", categories="dog,cat")


def test_mots_wrong_field_count_names_line(tmp_path, synth):
    export_results(synth / "annotations.json", None, "mots", tmp_path / "m")
    txt = sorted((tmp_path / "m" / "instances_txt").glob("*.txt"))[0]
    lines = txt.read_text().splitlines()
    lines[1] = lines[1].rsplit(" ", 1)[0]  # drop the rle field of line 2
    txt.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ann.json"
    r = run_cli("import", tmp_path / "m", "--format", "mots", "--output", out)
    assert r.returncode == 2 and f"crossvis: error: {txt}:2: expected 6" in r.stderr and not out.exists()


def test_png_palette_mismatch_and_non_palette_png(tmp_path, synth):
    export_results(synth / "annotations.json", None, "png", tmp_path / "p")
    folder = sorted(p for p in (tmp_path / "p").iterdir() if p.is_dir())[0]
    frame = sorted(folder.glob("*.png"))[1]
    im = Image.open(frame)
    pal = im.getpalette()
    pal[3:6] = [1, 2, 3]  # index 1 gets another colour than in the first frame
    im.putpalette(pal)
    im.save(frame)
    with pytest.raises(CrossVISError, match=r"palette differs from the video's first frame at index 1") as e:
        import_annotations(tmp_path / "p", "davis")
    assert e.value.where == str(frame)
    Image.open(frame).convert("RGB").save(frame)
    with pytest.raises(CrossVISError, match="not a palette"):
        import_annotations(tmp_path / "p", "davis")


def test_failed_export_leaves_an_earlier_folder_untouched(tmp_path, synth, monkeypatch):
    out = tmp_path / "out"
    export_results(synth / "annotations.json", None, "mots", out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    import crossvis.data.formats.mots as mots

    calls = {"n": 0}
    real = mots.video_lines

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise CrossVISError("video 2", "boom")
        return real(*a, **k)

    monkeypatch.setattr(mots, "video_lines", failing)
    with pytest.raises(CrossVISError, match="boom"):
        export_results(synth / "annotations.json", None, "mots", out)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left behind


# ------------------------------------------------------------------------------------------------ CLI


def test_evaluate_cli_hota_and_per_video(tmp_path, synth):
    ann = synth / "annotations.json"
    res = export_results(ann, None, "ytvis", tmp_path / "r")  # GT as a results file: perfect tracking
    assert res["tracks"]
    gt = json.loads((tmp_path / "r" / "annotations.json").read_text())
    results = [
        {
            "video_id": a["video_id"],
            "category_id": a["category_id"],
            "score": 1.0,
            "segmentations": a["segmentations"],
        }
        for a in gt["annotations"]
    ]
    (tmp_path / "res.json").write_text(json.dumps(results))
    r = run_cli(
        "evaluate",
        ann,
        tmp_path / "res.json",
        "--metrics",
        "ytvis,hota",
        "--per-video",
        "--per-video-csv",
        tmp_path / "pv.csv",
        "--output",
        tmp_path / "m.json",
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["AP"] == pytest.approx(1.0) and m["hota"]["detection_averaged"]["HOTA"] == pytest.approx(1.0)
    assert m["hota"]["detection_averaged"]["IDSW"] == 0 and "HOTA" in r.stdout and "per video" in r.stdout
    rows = (tmp_path / "pv.csv").read_text().splitlines()
    assert rows[0].startswith("video_id,video,frames") and len(rows) == 1 + len(gt["videos"])
    r = run_cli("evaluate", ann, tmp_path / "res.json", "--metrics", "ytvis,mota")
    assert r.returncode == 2 and "unknown metric 'mota'" in r.stderr


def test_per_video_report_finds_the_broken_clip(tmp_path, synth):
    """Swapping two tracks' identities half-way in one video shows up in that video's row only."""
    from crossvis.evaluation.suite import evaluate_report

    ds = YTVISDataset(synth / "annotations.json")
    gt = json.loads((synth / "annotations.json").read_text())
    results = [
        {
            "video_id": a["video_id"],
            "category_id": a["category_id"],
            "score": 1.0,
            "segmentations": list(a["segmentations"]),
        }
        for a in gt["annotations"]
    ]
    v = next(v for v in ds.videos if len(v.annotations) >= 2)
    i, j = [k for k, r in enumerate(results) if r["video_id"] == v.id][:2]
    half = v.length // 2
    si, sj = results[i]["segmentations"], results[j]["segmentations"]
    results[i]["segmentations"], results[j]["segmentations"] = si[:half] + sj[half:], sj[:half] + si[half:]
    rep = evaluate_report(
        synth / "annotations.json", results, metrics=["ytvis"], per_video=True, per_track=True
    )
    by = {r["video_id"]: r for r in rep.per_video}
    switched = [vid for vid, r in by.items() if r["id_switches"]]
    assert switched == [v.id]
    # per track: exactly the two swapped GT tracks switch once each, and each was covered by two results
    ids = {v.annotations[0]["id"], v.annotations[1]["id"]}
    rows = [r for r in rep.per_track if r["id_switches"]]
    assert {r["annotation_id"] for r in rows} == ids and all(r["id_switches"] == 1 for r in rows)
    assert all(r["result_tracks"] == 2 for r in rows)
    assert all(r["matched_frames"] == r["frames"] for r in rep.per_track)  # the masks themselves are exact


@pytest.mark.slow
def test_cvat_import_train_infer_export_loop(tmp_path):
    """A CVAT export -> train-ready JSON -> a few training iterations -> inference -> CVAT again."""
    data = tmp_path / "d"
    generate(data, SynthParams(videos=4, frames=4, seed=5, height=64, width=96))
    export_results(data / "annotations.json", None, "cvat", tmp_path / "cvat_in")
    (tmp_path / "cvat_in" / "videos.json").unlink()  # as a real CVAT export: XML only
    ann = tmp_path / "imported.json"
    r = run_cli(
        "import", tmp_path / "cvat_in", "--format", "cvat", "--output", ann, "--images", data / "JPEGImages"
    )
    assert r.returncode == 0, r.stderr
    YTVISDataset(ann, data / "JPEGImages", check=True)
    out = tmp_path / "run"
    ov = {
        "data.train_json": ann,
        "data.train_images": data / "JPEGImages",
        "data.val_json": "''",
        "data.synth_train": "null",
        "data.synth_val": "null",
        "data.num_workers": 0,
        "input.min_size_train": "[64]",
        "input.max_size_train": 96,
        "solver.ims_per_batch": 2,
        "solver.reference_batch": 2,
        "solver.checkpoint_period": 0,
        "solver.warmup_iters": 1,
        "test.eval_period": 0,
        "solver.max_iter": 2,
    }
    cmd = [
        sys.executable,
        "-m",
        "crossvis.cli.main",
        "-q",
        "train",
        "configs/synthetic_tiny.yaml",
        "--output",
        str(out),
    ]
    r = subprocess.run(cmd + [f"{k}={v}" for k, v in ov.items()], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    res = tmp_path / "res.json"
    r = run_cli(
        "infer",
        "--weights",
        out / "model_final.safetensors",
        "--annotations",
        ann,
        "--images",
        data / "JPEGImages",
        "--output",
        res,
        "--device",
        "cpu",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    r = run_cli(
        "export-results", res, "--annotations", ann, "--format", "cvat", "--output", tmp_path / "cvat_out"
    )
    assert r.returncode == 0, r.stderr
    xmls = sorted((tmp_path / "cvat_out").glob("*.xml"))
    assert [x.stem for x in xmls] == [f"video_{i:04d}" for i in range(1, 5)]
    back = import_annotations(tmp_path / "cvat_out", "cvat", categories=str(ann))  # CVAT's output reads back
    n_results = sum(1 for t in json.loads(res.read_text()) if any(t["segmentations"]))
    assert len(back["annotations"]) == n_results


@pytest.mark.slow
def test_predict_writes_a_format(tmp_path, synth_dir, tiny_weights):
    folder = synth_dir / "JPEGImages" / "video_0001"
    r = run_cli(
        "predict",
        folder,
        "--weights",
        tiny_weights,
        "--output",
        tmp_path / "o.mp4",
        "--device",
        "cpu",
        "--format",
        "cvat",
        "--max-frames",
        "3",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    xml = tmp_path / "o_cvat" / "video_0001.xml"
    assert xml.is_file()
    back = import_annotations(tmp_path / "o_cvat", "cvat")
    assert back["videos"][0]["length"] == 3


def test_cvat_polygons_are_close_but_lossy(tmp_path, synth):
    """Polygon tracks keep each frame's largest outline: close to the masks, not exact (documented)."""
    ann = synth / "annotations.json"
    ref = YTVISDataset(ann)
    export_results(ann, None, "cvat", tmp_path / "out", cvat_shape="polygon")
    assert "<polygon " in next((tmp_path / "out").glob("*.xml")).read_text()
    back = YTVISDataset(import_annotations(tmp_path / "out", "cvat"))
    ious = []
    for v, w in zip(ref.videos, back.videos):
        for a, b in zip(v.annotations, w.annotations):
            for f in range(v.length):
                m, n = ref.decode(v, a, f), back.decode(w, b, f)
                if m is not None and n is not None:
                    ious.append((m & n).sum() / (m | n).sum())
    assert len(ious) > 10 and 0.75 < np.mean(ious) < 1


def test_declared_sizes_are_checked_first(tmp_path, synth):
    xml = _cvat_file(tmp_path, synth)
    xml.write_text(xml.read_text().replace("<size>", "<size>9999999", 1))
    with pytest.raises(CrossVISError, match="not a frame count"):
        import_annotations(xml, "cvat")
    export_results(synth / "annotations.json", None, "mots", tmp_path / "m")
    txt = sorted((tmp_path / "m" / "instances_txt").glob("*.txt"))[0]
    first, *rest = txt.read_text().splitlines()
    f, i, c, h, w, rle = first.split(" ")
    txt.write_text("\n".join([" ".join([f, i, c, "100000", "100000", rle]), *rest]) + "\n")
    with pytest.raises(CrossVISError, match=rf"{txt.name}:1: frame size 100000x100000 is not valid"):
        import_annotations(tmp_path / "m", "mots")


def test_export_video_tracks_writes_a_predicted_video(tmp_path):
    """What `predict --format` calls: VideoResult.tracks (str-count RLE, None where absent) -> a format."""
    from crossvis.data.formats import export_video_tracks

    m = np.zeros((20, 30), np.uint8)
    m[2:9, 3:12] = 1
    r = mask_utils.encode(np.asfortranarray(m))
    seg = {"size": [20, 30], "counts": r["counts"].decode()}
    empty = mask_utils.encode(np.asfortranarray(np.zeros_like(m)))
    tracks = [
        {"track_id": 4, "category_id": 2, "score": 0.8, "segmentations": [seg, None, seg]},
        {
            "track_id": 7,
            "category_id": 1,
            "score": 0.3,
            "segmentations": [None, {"size": [20, 30], "counts": empty["counts"].decode()}, None],
        },
    ]
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    export_video_tracks(
        tracks,
        name="clip",
        num_frames=3,
        height=20,
        width=30,
        categories=cats,
        fmt="cvat",
        out_dir=tmp_path / "o",
    )
    back = import_annotations(tmp_path / "o", "cvat")
    assert back["videos"][0]["file_names"] == ["clip/00000.jpg", "clip/00001.jpg", "clip/00002.jpg"]
    (a,) = back["annotations"]  # the track whose only mask is empty is absent everywhere
    assert a["category_id"] == 2 and [s is not None for s in a["segmentations"]] == [True, False, True]
    assert a["segmentations"][0]["counts"] == seg["counts"]
