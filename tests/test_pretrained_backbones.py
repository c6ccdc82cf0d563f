"""Restricted unpickling, MSRA Caffe2 ResNets (R-50.pkl / R-101.pkl) and timm ImageNet weights."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from conftest import run_cli
from crossvis.errors import CrossVISError
from crossvis.modeling.safe_pickle import load_pickle

# ------------------------------------------------------------------------------------------ restricted pickle


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_code_in_a_pickle_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"conv1_w": _Evil(str(marker))}, protocol=protocol))
    with pytest.raises(CrossVISError) as e:
        load_pickle(path)
    assert "refused to unpickle" in str(e.value) and (
        "posix.system" in str(e.value) or "os.system" in str(e.value)
    )
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_other_globals_are_refused(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps([_EvalEvil()], protocol=2))
    with pytest.raises(CrossVISError, match=r"(__builtin__|builtins)\.eval"):
        load_pickle(path)
    # a numpy function that is not an array constructor is refused too
    path.write_bytes(b"cnumpy\nload\n(S'x'\ntR.")
    with pytest.raises(CrossVISError, match="numpy.load"):
        load_pickle(path)


def test_convert_cli_refuses_a_malicious_pkl(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"conv1_w": _Evil(str(marker))}, protocol=2))
    r = run_cli("convert", path, "--output", tmp_path / "out.safetensors")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "refused to unpickle" in r.stderr
    assert "Traceback" not in r.stderr
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_arrays_dicts_and_scalars_are_admitted(tmp_path, protocol):
    data = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "i": np.array([1, 2], dtype=np.int64),
        "meta": ["text", b"bytes", 1, 2.5, (True, None)],
        "s": np.float32(3.5),
    }
    path = tmp_path / "ok.pkl"
    raw = pickle.dumps(data, protocol=protocol)
    if protocol == 0:  # the name numpy 1.x (and Python 2 files) use for the array constructors
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(raw)
    out = load_pickle(path)
    assert np.array_equal(out["w"], data["w"]) and out["w"].dtype == np.float32
    assert np.array_equal(out["i"], data["i"])
    assert out["meta"] == data["meta"] and out["s"] == np.float32(3.5)


def test_latin1_strings_of_python2_pickles(tmp_path):
    # protocol-2 SHORT_BINSTRING (a Python 2 str) holding a non-ASCII byte: decoded as latin-1, not an error
    path = tmp_path / "py2.pkl"
    path.write_bytes(b"\x80\x02}q\x00U\x04nameq\x01U\x04caf\xe9q\x02s.")
    assert load_pickle(path) == {"name": "caf\xe9"}


def test_broken_and_missing_pickles_are_one_line_errors(tmp_path):
    path = tmp_path / "bad.pkl"
    path.write_bytes(b"\x80\x02}q\x00U")
    with pytest.raises(CrossVISError, match="not a readable pickle"):
        load_pickle(path)
    with pytest.raises(CrossVISError, match="file not found"):
        load_pickle(tmp_path / "nope.pkl")


# ------------------------------------------------------------------------------------------ MSRA ResNets

BLOCKS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}


def caffe2_resnet_blobs(depth: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Every blob of a Detectron (Caffe2) ImageNet ResNet, from the architecture: stem, bottleneck stages
    res2..res5 (widths 64..512, expansion 4, projection shortcut on block 0), fc1000; random values."""
    rng = np.random.default_rng(seed)
    blobs: dict[str, np.ndarray] = {}

    def conv(name, shape):
        blobs[f"{name}_w"] = rng.standard_normal(shape).astype(np.float32)

    def bn(name, n):
        blobs[f"{name}_bn_s"] = rng.uniform(0.5, 1.5, n).astype(np.float32)
        blobs[f"{name}_bn_b"] = rng.standard_normal(n).astype(np.float32)

    conv("conv1", (64, 3, 7, 7))
    bn("res_conv1", 64)
    c_in = 64
    for s, (n, w) in enumerate(zip(BLOCKS[depth], (64, 128, 256, 512)), start=2):
        out = 4 * w
        for b in range(n):
            pre = f"res{s}_{b}"
            conv(f"{pre}_branch2a", (w, c_in if b == 0 else out, 1, 1))
            conv(f"{pre}_branch2b", (w, w, 3, 3))
            conv(f"{pre}_branch2c", (out, w, 1, 1))
            for br in ("2a", "2b", "2c"):
                bn(f"{pre}_branch{br}", out if br == "2c" else w)
            if b == 0:
                conv(f"{pre}_branch1", (out, c_in, 1, 1))
                bn(f"{pre}_branch1", out)
        c_in = out
    blobs["fc1000_w"] = rng.standard_normal((1000, 2048)).astype(np.float32)
    blobs["fc1000_b"] = rng.standard_normal(1000).astype(np.float32)
    blobs["conv1_w_momentum"] = np.zeros((64, 3, 7, 7), np.float32)
    return blobs


def _caffe2_of(key: str) -> str:
    """Independent inverse map (timm key -> Caffe2 blob) for checking values after conversion."""
    parts = key.split(".")
    suffix = {"weight": "s", "bias": "b"}
    if parts[0] == "conv1":
        return "conv1_w"
    if parts[0] == "bn1":
        return f"res_conv1_bn_{suffix[parts[1]]}"
    stage, block, mod = int(parts[0][5:]) + 1, parts[1], parts[2]
    if mod == "downsample":
        return f"res{stage}_{block}_branch1_" + ("w" if parts[3] == "0" else f"bn_{suffix[parts[4]]}")
    branch = "2" + "abc"[int(mod[-1]) - 1]
    return f"res{stage}_{block}_branch{branch}_" + (
        "w" if mod.startswith("conv") else f"bn_{suffix[parts[3]]}"
    )


@pytest.mark.parametrize("depth", [50, pytest.param(101, marks=pytest.mark.slow)])
def test_msra_pkl_converts_with_every_value_equal(tmp_path, depth):
    from safetensors import safe_open

    from crossvis.modeling.backbone import Backbone

    blobs = caffe2_resnet_blobs(depth)
    pkl = tmp_path / f"R-{depth}.pkl"
    pkl.write_bytes(pickle.dumps(blobs, protocol=2))
    out = tmp_path / f"r{depth}_msra.safetensors"
    r = run_cli("convert", pkl, "--output", out)
    assert r.returncode == 0, r.stderr
    body = Backbone(f"resnet{depth}", freeze_at=0, stride_in_1x1=True, frozen_bn=True).body
    own = body.state_dict()
    with safe_open(str(out), framework="pt") as f:
        got = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    assert set(got) == set(own)  # every backbone tensor covered, nothing else
    for k, v in got.items():
        if k.endswith("running_mean"):
            assert torch.equal(v, torch.zeros_like(v)), k
        elif k.endswith("running_var"):
            assert torch.equal(v, torch.ones_like(v)), k
        else:
            assert torch.equal(v, torch.from_numpy(blobs[_caffe2_of(k)])), k
    assert '"BGR"' in meta["input"] and "fc1000_w" in meta["unused"]
    # the .pkl directly and the converted file give the same trunk
    a = Backbone(f"resnet{depth}", weights_file=str(pkl)).body.state_dict()
    b = Backbone(f"resnet{depth}", weights_file=str(out)).body.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(a["layer3.5.conv2.weight"], torch.from_numpy(blobs["res4_5_branch2b_w"]))


def test_msra_frozen_bn_is_scale_and_bias(tmp_path):
    from crossvis.modeling.backbone import Backbone

    blobs = caffe2_resnet_blobs(50, seed=1)
    pkl = tmp_path / "R-50.pkl"
    pkl.write_bytes(pickle.dumps(blobs, protocol=2))
    bn = Backbone("resnet50", weights_file=str(pkl)).body.layer1[0].bn1
    x = torch.randn(1, 64, 3, 3)
    s, b = torch.from_numpy(blobs["res2_0_branch2a_bn_s"]), torch.from_numpy(blobs["res2_0_branch2a_bn_b"])
    expect = x * (s / torch.sqrt(torch.tensor(1 + 1e-5))).view(1, -1, 1, 1) + b.view(1, -1, 1, 1)
    assert torch.allclose(bn(x), expect, atol=1e-6)


def test_msra_mismatches_are_clear(tmp_path):
    from crossvis.modeling.backbone import Backbone

    blobs = caffe2_resnet_blobs(50)
    pkl = tmp_path / "R-50.pkl"
    pkl.write_bytes(pickle.dumps(blobs, protocol=2))
    with pytest.raises(CrossVISError, match="tensors missing from the weights file"):
        Backbone("resnet101", weights_file=str(pkl))  # R-50 weights for an R-101
    with pytest.raises(CrossVISError, match="stride_in_1x1=true"):
        Backbone("resnet50", stride_in_1x1=False, weights_file=str(pkl))
    del blobs["res3_2_branch2b_w"]
    pkl.write_bytes(pickle.dumps(blobs, protocol=2))
    r = run_cli("convert", pkl, "--output", tmp_path / "x.safetensors")
    assert r.returncode == 2 and "layer2.2.conv2.weight" in r.stderr
    blobs = caffe2_resnet_blobs(50)
    blobs["res2_0_branch2b_w"] = blobs["res2_0_branch2b_w"][:, :, :1, :1]
    pkl.write_bytes(pickle.dumps(blobs, protocol=2))
    r = run_cli("convert", pkl, "--output", tmp_path / "x.safetensors")
    assert r.returncode == 2 and "layer1.0.conv2.weight" in r.stderr and "shape" in r.stderr
    assert not (tmp_path / "x.safetensors").exists()


# ------------------------------------------------------------------------------------------ timm weights


def test_timm_requirements_come_from_pretrained_cfg():
    import timm

    from crossvis.modeling.backbone import timm_input_requirements

    want = timm_input_requirements("resnet18")
    cfg = timm.get_pretrained_cfg("resnet18")
    assert want["input_format"] == "RGB" and want["stride_in_1x1"] is False
    assert want["pixel_mean"] == pytest.approx([m * 255 for m in cfg.mean])
    assert want["pixel_std"] == pytest.approx([s * 255 for s in cfg.std])


def test_timm_weights_from_a_local_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    from crossvis.modeling.backbone import Backbone

    torch.manual_seed(3)
    full = timm.create_model("resnet18")  # timm's own file holds the classifier too
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    b = Backbone("resnet18", freeze_at=0, stride_in_1x1=False, pretrained=True, weights_file=str(path))
    assert torch.equal(
        b.body.state_dict()["layer4.1.conv1.weight"], full.state_dict()["layer4.1.conv1.weight"]
    )
    assert b.weights_input["input_format"] == "RGB"
    with pytest.raises(CrossVISError, match="not found"):
        Backbone("resnet18", pretrained=True, weights_file=str(tmp_path / "none.safetensors"))
