"""The synthetic generator's appearance-change options (crossvis.data.appearance)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest

from conftest import run_cli
from crossvis.cli.main import APPEARANCE_HELP
from crossvis.data.appearance import (
    APPEARANCE_OPTIONS,
    ENTRY_RAMP,
    appearance_strengths,
    exposure_offsets,
    prepare_appearance,
)
from crossvis.data.pairs import FramePairDataset
from crossvis.data.synth_texture import draw_texture_spec, paint_texture
from crossvis.data.synthetic import Scene, SynthParams, generate, object_mask, render_frame, render_video
from crossvis.data.ytvis import YTVISDataset

BASE = SynthParams(videos=4, frames=8, seed=5, height=96, width=128, difficulty=1.0)
H, W = 72, 96


def _render_hash(p: SynthParams) -> str:
    m = hashlib.sha256()
    for i in range(p.videos):
        frames, objects, _ = render_video(p, i)
        for f in frames:
            m.update(f.tobytes())
        for o in objects:
            m.update(str(o["cls"]).encode())
            for k in o["masks"]:
                m.update(b"-" if k is None else np.packbits(k).tobytes())
    return m.hexdigest()


def test_everything_off_is_byte_identical_to_the_generator_before_appearance_options(tmp_path):
    # Reference hashes computed with the generator at commit 46353ed, before the appearance options existed:
    # existing splits (reports/, the shipped weights' training data) must be reproduced exactly.
    p = replace(BASE, videos=3)
    assert _render_hash(p) == "3900d30ec0aa6479a64283f65666809135e61fa6dc9385410478b247e8dc9538"
    generate(tmp_path, p)
    got = hashlib.sha256((tmp_path / "annotations.json").read_bytes()).hexdigest()
    assert got == "925e07041f5c25a64808e5a9dd3fb8259831df6ebaf9702bb85e1aa9c1d48d1c"
    p2 = replace(p, difficulty=2.0)
    assert _render_hash(p2) == "850f0fce8935d3c50047f69680c0fafe7399616c89fce1502b32228d0065c6d4"


def test_all_options_on_are_deterministic_per_seed():
    every = {k: 1.0 for k in APPEARANCE_OPTIONS}
    p = replace(BASE, videos=2, **every)
    assert _render_hash(p) == _render_hash(p)
    assert _render_hash(p) != _render_hash(replace(p, seed=6))
    assert _render_hash(p) != _render_hash(replace(BASE, videos=2))


def _pair(name: str, video: int = 0, strength: float = 1.0):
    return render_video(BASE, video), render_video(replace(BASE, **{name: strength}), video)


def _masks_equal(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        all(
            (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
            for x, y in zip(oa["masks"], ob["masks"])
        )
        for oa, ob in zip(a, b)
    )


def test_lighting_drift_changes_brightness_over_time_not_masks():
    for video in range(3):
        (f0, o0, _), (f1, o1, _) = _pair("lighting_drift", video)
        assert _masks_equal(o0, o1)
        ratio = [f1[t].mean() / f0[t].mean() for t in range(len(f0))]
        # gain exp(+-0.35) from first to last frame (less where pixels saturate): far from 1 either way
        assert abs(np.log(ratio[-1] / ratio[0])) > 0.3


def test_color_drift_changes_object_pixels_only_and_grows_over_the_clip():
    (f0, o0, _), (f1, o1, _) = _pair("color_drift", 1)
    assert _masks_equal(o0, o1)
    assert np.array_equal(f0[0], f1[0])  # the drift starts at 0 in the first frame
    last = len(f0) - 1
    inside = np.zeros(f0[0].shape[:2], dtype=bool)
    for o in o0:
        if o["masks"][last] is not None:
            inside |= o["masks"][last]
    diff = np.abs(f0[last].astype(int) - f1[last].astype(int)).mean(axis=2)
    assert inside.any() and diff[inside].mean() > 15
    assert diff[~inside].max() == 0


def _square(**changes) -> dict:
    """One hand-made object: a spinning, growing square in the middle of an H x W frame."""
    spec = draw_texture_spec(np.random.default_rng(0), 1)
    return {
        "cls": 1,  # square
        "x": W / 2,
        "y": H / 2,
        "vx": 0.0,
        "vy": 0.0,
        "r0": 16.0,
        "growth": 0.3,
        "angle": 0.2,
        "spin": 0.1,
        "tex": paint_texture(spec, H, W),
        "tex_spec": spec,
        "z": 0.5,
        "start": 0,
        "stop": 8,
        "gap": None,
        **changes,
    }


def _phi1(m: np.ndarray) -> float:
    """Hu's first moment invariant: unchanged by translation, rotation and scaling (rigid motion + zoom)."""
    ys, xs = np.nonzero(m)
    n = len(xs)
    return float(((xs - xs.mean()) ** 2).sum() + ((ys - ys.mean()) ** 2).sum()) / n**2


def test_deformation_changes_shape_beyond_rigid_motion():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    rigid = [_square()]
    deformed = [_square()]
    prepare_appearance(replace(BASE, deformation=1.0), 0, deformed, length=8, h=H, w=W)
    assert "deform" in deformed[0] and "deform" not in rigid[0]

    def spread(o: dict) -> float:
        phi = [_phi1(object_mask(o, t, xx=xx, yy=yy, length=8)) for t in range(8)]
        return (max(phi) - min(phi)) / np.mean(phi)

    assert spread(rigid[0]) < 0.02  # spin + growth only: the invariant stays put (pixel rounding)
    assert spread(deformed[0]) > 0.1
    # and in rendered videos the visible masks change against the same seed without deformation
    (_, o0, _), (_, o1, _) = _pair("deformation")
    assert not _masks_equal(o0, o1)


def test_motion_blur_smears_along_the_motion_and_keeps_mid_exposure_masks():
    p = replace(BASE, motion_blur=1.0)
    offsets = exposure_offsets(p)
    assert offsets[len(offsets) // 2] == 0.0 and len(offsets) > 1
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    obj = _square(vx=8.0, spin=0.0, angle=0.0, growth=0.0, tex=np.full((H, W, 3), 200.0))
    scene = Scene(
        bg=np.zeros((2 * H, 2 * W, 3), np.float32), pan=np.zeros(2), objs=[obj], xx=xx, yy=yy, length=8
    )
    sharp, vis0 = render_frame(scene, t=3, offsets=[0.0])
    blurred, vis1 = render_frame(scene, t=3, offsets=offsets)
    assert np.array_equal(vis0, vis1)  # the annotation is the mid-exposure mask
    cy = int(np.nonzero(vis0 == 0)[0].mean())
    cx = int(np.nonzero(vis0 == 0)[1].mean())

    def partial(line: np.ndarray) -> int:
        return int(((line > 5) & (line < 195)).sum())

    assert partial(sharp[cy, :, 0]) == 0
    assert partial(blurred[cy, :, 0]) >= 6  # horizontal motion: ramps at the left and right edges
    assert partial(blurred[:, cx, 0]) == 0  # no smear across the motion


def test_motion_blur_masks_equal_unblurred_render():
    (f0, o0, _), (f1, o1, _) = _pair("motion_blur")
    assert _masks_equal(o0, o1)
    assert any(not np.array_equal(a, b) for a, b in zip(f0, f1))


def test_entry_scale_makes_objects_small_when_they_enter():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    objs = [_square(start=2, growth=0.0, spin=0.0)]
    prepare_appearance(replace(BASE, entry_scale=1.0), 0, objs, length=8, h=H, w=W)
    area = [int(object_mask(objs[0], t, xx=xx, yy=yy, length=8).sum()) for t in range(8)]
    full = area[2 + int(ENTRY_RAMP)]
    assert area[2] < 0.4 * full and area[3] < area[4] < full and area[-1] == full
    # in rendered videos: first visible frame smaller than three frames later, far more than without
    ratios = {}
    for name, p in (("off", BASE), ("on", replace(BASE, entry_scale=1.0))):
        r = []
        for video in range(BASE.videos):
            for o in render_video(p, video)[1]:
                seen = [t for t, m in enumerate(o["masks"]) if m is not None]
                if seen and seen[0] + 3 < len(o["masks"]) and o["masks"][seen[0] + 3] is not None:
                    r.append(o["masks"][seen[0]].sum() / o["masks"][seen[0] + 3].sum())
        ratios[name] = float(np.median(r))
    assert ratios["on"] < 0.75 * ratios["off"]


def test_lookalikes_add_objects_of_a_present_class_with_close_colours():
    for video in range(3):
        (f0, o0, _), (f1, o1, _) = _pair("lookalikes", video)
        added = [o for o in o1 if o["lookalike_of"] is not None]
        assert len(o1) == len(o0) + len(added) and added
        for o in added:
            src = o1[o["lookalike_of"]]
            assert o["cls"] == src["cls"] and src["lookalike_of"] is None
            both = [
                t
                for t in range(len(f1))
                if o["masks"][t] is not None
                and src["masks"][t] is not None
                and o["masks"][t].sum() > 80
                and src["masks"][t].sum() > 80
            ]
            for t in both[:1]:
                a = f1[t][o["masks"][t]].mean(axis=0)
                b = f1[t][src["masks"][t]].mean(axis=0)
                assert np.abs(a - b).max() < 40


def test_strengths_cli_and_params_record(tmp_path):
    assert set(APPEARANCE_HELP) == set(APPEARANCE_OPTIONS)
    s = appearance_strengths(0.5, {"motion_blur": 0.0, "lookalikes": None})
    assert s["motion_blur"] == 0.0 and s["lookalikes"] == 0.5 and s["lighting_drift"] == 0.5
    out = tmp_path / "s"
    r = run_cli(
        "synth",
        out,
        "--videos",
        "1",
        "--frames",
        "4",
        "--height",
        "64",
        "--width",
        "64",
        "--appearance-change",
        "--motion-blur",
        "0",
    )
    assert r.returncode == 0, r.stderr
    params = json.loads((out / "annotations.json").read_text())["info"]["params"]
    assert "motion_blur" not in params  # off: left out, as before the option existed
    assert all(params[k] == 1.0 for k in APPEARANCE_OPTIONS if k != "motion_blur")
    r = run_cli("synth", tmp_path / "bad", "--videos", "1", "--deformation", "-1")
    assert r.returncode == 2 and "--deformation" in r.stderr


def test_one_frame_videos_are_still_samples(tmp_path):
    p = SynthParams(videos=3, frames=1, seed=2, height=64, width=64, lighting_drift=1.0, motion_blur=1.0)
    generate(tmp_path, p)
    ds = YTVISDataset(tmp_path / "annotations.json", tmp_path / "JPEGImages")
    assert all(v.length == 1 for v in ds.videos)
    pairs = FramePairDataset(ds, [64], 96)
    t0, t1 = pairs[(0, 0)]
    assert t0.still and t1.still
    assert np.array_equal(t0.masks.numpy(), t1.masks.numpy())


@pytest.mark.parametrize("name", APPEARANCE_OPTIONS)
def test_each_option_changes_the_frames(name):
    (f0, _, _), (f1, _, _) = _pair(name, 2)
    assert len(f0) == len(f1) and any(not np.array_equal(a, b) for a, b in zip(f0, f1))


def test_entry_scale_with_motion_blur_has_no_full_size_ghost_at_entry():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    objs = [_square(start=3, growth=0.0, spin=0.0)]
    prepare_appearance(replace(BASE, entry_scale=1.0), 0, objs, length=8, h=H, w=W)
    full = object_mask(objs[0], 7.0, xx=xx, yy=yy, length=8).sum()
    offsets = exposure_offsets(replace(BASE, motion_blur=1.0))
    areas = [object_mask(objs[0], 3.0 + dt, xx=xx, yy=yy, length=8).sum() for dt in offsets]
    assert max(areas) < 0.5 * full  # every sub-frame of the entry frame is small, none full-size
    assert areas == sorted(areas)  # and it grows through the exposure
