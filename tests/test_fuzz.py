"""Fuzzing the loaders with hypothesis: random structure and type mutations, and byte mutations, of valid
annotation JSON, results JSON, YAML configs and safetensors weights (header and metadata).

Every outcome must be success or a CrossVISError (the CLI's one line); anything else (a traceback type), a
run past the deadline, or a partial output file fails. Deterministic (derandomize) and short: the whole file
runs in well under a minute.
"""

from __future__ import annotations

import copy
import json
import struct
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossvis.config import load_config, packaged_config
from crossvis.data.ytvis import YTVISDataset
from crossvis.errors import CrossVISError
from crossvis.evaluation import evaluate
from crossvis.modeling.weights import load_model, read_weights
from hostile_data import dataset, results

FUZZ = settings(
    max_examples=40,
    deadline=timedelta(seconds=5),  # a hang is a failure
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, -1, 1, 2**31, 2**32, 2**63, 10**12])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.text(alphabet="0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmno", max_size=20)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(doc, prefix=()):
    """Every (path to a value) in a JSON-like document, the root included."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw, doc):
    """``doc`` with 1-3 random mutations: a value replaced by random JSON, a key or item removed, an item
    duplicated, a value's type changed, a number scaled far beyond the usual."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "delete", "duplicate", "retype", "scale"]))
        if not path:
            if op == "replace":
                doc = draw(VALUES)
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        value = parent[key]
        if op == "replace":
            parent[key] = draw(VALUES)
        elif op == "delete":
            del parent[key]
        elif op == "duplicate" and isinstance(value, list) and value:
            value.append(copy.deepcopy(value[draw(st.integers(0, len(value) - 1))]))
        elif op == "retype":
            parent[key] = draw(st.sampled_from([[value], {"x": value}, str(value)[:50], None]))
        elif op == "scale" and isinstance(value, int | float) and not isinstance(value, bool):
            parent[key] = value * draw(st.sampled_from([-1, 0, 10**6, 2**40]))
    return doc


@st.composite
def byte_mutated(draw, data: bytes):
    """``data`` with 1-4 bytes replaced, inserted or deleted (JSON/YAML syntax characters favoured)."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, max(len(b) - 1, 0)))
        byte = draw(st.sampled_from(list(b'[]{}",:\\-0123456789 \n\x00\xff&*!|>')) | st.integers(0, 255))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        if op == "replace" and b:
            b[pos] = byte
        elif op == "insert":
            b.insert(pos, byte)
        elif b:
            del b[pos]
    return bytes(b)


def _only_crossvis_errors(fn, *args):
    """Run ``fn``: success or CrossVISError pass; any other exception fails the test with its traceback."""
    try:
        fn(*args)
    except CrossVISError as e:
        assert e.what and "\n" not in e.what, e.what  # printable as one line


def _dataset_and_eval(gt, res):
    YTVISDataset(copy.deepcopy(gt), check=True)
    evaluate(gt, res)


# ----------------------------------------------------------------------------------------------- JSON


@FUZZ
@given(mutated(dataset()))
def test_fuzz_annotation_structure(gt):
    _only_crossvis_errors(_dataset_and_eval, gt, results())


@FUZZ
@given(mutated(results()))
def test_fuzz_results_structure(res):
    _only_crossvis_errors(evaluate, dataset(), res)


@settings(FUZZ, max_examples=25)
@given(byte_mutated(json.dumps(dataset()).encode()), byte_mutated(json.dumps(results()).encode()))
def test_fuzz_json_bytes(gt_bytes, res_bytes):
    with tempfile.TemporaryDirectory() as d:
        gt, res = Path(d) / "gt.json", Path(d) / "res.json"
        gt.write_bytes(gt_bytes)
        res.write_bytes(res_bytes)
        _only_crossvis_errors(evaluate, gt, res)


# ----------------------------------------------------------------------------------------------- YAML

TINY_YAML = packaged_config("synthetic_tiny").read_text()


@settings(FUZZ, max_examples=30)
@given(mutated(yaml.safe_load(TINY_YAML)))
def test_fuzz_config_structure(cfg):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.yaml"
        p.write_text(yaml.safe_dump(cfg))
        _only_crossvis_errors(load_config, p)


@settings(FUZZ, max_examples=30)
@given(byte_mutated(TINY_YAML.encode()))
def test_fuzz_config_bytes(text):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.yaml"
        p.write_bytes(text)
        _only_crossvis_errors(load_config, p)


# ----------------------------------------------------------------------------------------------- weights


def _split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _pack(header, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


@settings(FUZZ, max_examples=30)
@given(st.data())
def test_fuzz_weights_header(tiny_weights, data):
    header, body = _split(tiny_weights)
    # keep the fuzzing to a few tensors and the metadata: the structure mutations then reach all of it
    small = {k: header[k] for k in list(header)[:3]}
    small["__metadata__"] = header["__metadata__"]
    end = max(v["data_offsets"][1] for k, v in small.items() if k != "__metadata__")
    small = data.draw(mutated(small))
    raw = _pack(small, body[:end])
    if data.draw(st.booleans()):
        raw = data.draw(byte_mutated(raw))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "w.safetensors"
        p.write_bytes(raw)
        _only_crossvis_errors(read_weights, p)


@settings(FUZZ, max_examples=8)
@given(st.data())
def test_fuzz_weights_metadata_then_load(tiny_weights, data):
    header, body = _split(tiny_weights)
    meta = header["__metadata__"]
    key = data.draw(st.sampled_from(["crossvis_config", "class_names", "category_ids", "record"]))
    if key == "crossvis_config":
        cfg = data.draw(mutated(yaml.safe_load(meta[key])))
        meta[key] = yaml.safe_dump(cfg)
    else:
        meta[key] = json.dumps(data.draw(mutated(json.loads(meta[key]))))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "w.safetensors"
        p.write_bytes(_pack(header, body))
        _only_crossvis_errors(load_model, p, "cpu")


# ----------------------------------------------------------------------------------------------- CLI


@settings(FUZZ, max_examples=3, deadline=timedelta(seconds=120))
@given(mutated(results()))
def test_fuzz_evaluate_cli_success_or_one_line_and_no_partial_file(res):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "gt.json").write_text(json.dumps(dataset()))
        (d / "res.json").write_text(json.dumps(res))
        r = subprocess.run(
            [sys.executable, "-m", "crossvis.cli.main", "evaluate", d / "gt.json", d / "res.json",
             "--output", d / "out" / "m.json"],
            capture_output=True, text=True, timeout=100,
        )  # fmt: skip
        assert "Traceback" not in r.stderr
        if r.returncode == 0:
            assert "AP" in json.loads((d / "out" / "m.json").read_text())
        else:
            assert (
                r.returncode == 2 and r.stderr.startswith("crossvis: error: ") and r.stderr.count("\n") == 1
            )
            assert not (d / "out").exists() or not any((d / "out").iterdir())
