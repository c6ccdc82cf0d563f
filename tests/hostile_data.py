"""Small valid inputs for the hostile-input tests, and an RLE encoder written from pycocotools' C
(``rleToString``) so tests can build compressed strings of any runs, including ones no mask has."""

from __future__ import annotations

import numpy as np

from crossvis.data.masks import encode_mask, encode_uncompressed

H, W, T = 6, 8, 3  # every test video: 3 frames of 6x8 pixels


def runs_to_string(runs: list[int]) -> str:
    """Runs -> pycocotools' compressed counts string (runs 3, 4, ... as differences to run i-2)."""
    out = []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def mask(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((H, W)) < 0.4


def dataset() -> dict:
    """Two videos (one compressed, one uncompressed RLE, a polygon, absent frames), two categories."""
    poly = [[1.0, 1.0, 6.0, 1.0, 6.0, 4.0, 1.0, 4.0]]
    return {
        "videos": [
            {"id": 1, "file_names": [f"v1/{i}.jpg" for i in range(T)], "height": H, "width": W, "length": T},
            {"id": 2, "file_names": [f"v2/{i}.jpg" for i in range(T)], "height": H, "width": W},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {
                "id": 10,
                "video_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentations": [encode_mask(mask(0)), encode_mask(mask(1)), None],
                "areas": [int(mask(0).sum()), int(mask(1).sum()), None],
                "bboxes": [None, None, None],
            },
            {
                "id": 11,
                "video_id": 2,
                "category_id": 2,
                "iscrowd": 0,
                "segmentations": [encode_uncompressed(mask(2)), poly, encode_uncompressed(mask(3))],
            },
        ],
    }


def results() -> list[dict]:
    return [
        {"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [encode_mask(mask(0)), None, None]},
        {
            "video_id": 2,
            "category_id": 2,
            "score": 0.5,
            "segmentations": [encode_mask(mask(2)), encode_mask(mask(4)), encode_mask(mask(3))],
        },
    ]
