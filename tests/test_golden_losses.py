"""Golden loss values: a fixed batch, fixed seeds, the tiny model -> the six losses, to 1e-6.

The values in ``fixtures/golden_losses.json`` were recorded once from the code before the losses moved into a
criterion (issue 13); they pin that restructuring (and any later one) to "no change to any number the model
computes". The test only reads the fixture; ``python tests/test_golden_losses.py --record`` rewrites it, which
is right only when a loss is changed on purpose (say why in the commit).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from crossvis.config import load_config, packaged_config
from crossvis.data.pairs import collate_pairs
from crossvis.modeling.builders import build_model

sys.path.insert(0, str(Path(__file__).parent))
from test_wiring import frame, image, l_shape, link, rect  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "golden_losses.json"
NAMES = ("loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask", "loss_crossover", "loss_identity")


def golden_batch() -> dict:
    """Two frame pairs: objects that move, change order between frames, appear in one frame only, an L-shaped
    mask, and two objects of one class; 6 identities in all."""
    p0 = link(
        frame(
            image(20),
            [rect(8, 8, 56, 64), l_shape(72, 16, 136, 80), rect(24, 88, 80, 124)],
            [0, 2, 2],
            [0, 1, 2],
        ),
        frame(image(21), [l_shape(80, 24, 144, 88), rect(16, 12, 64, 72)], [2, 0], [1, 0]),
    )
    p1 = link(
        frame(image(22), [rect(40, 30, 120, 110)], [4], [3]),
        frame(image(23), [rect(30, 20, 100, 100), rect(110, 8, 150, 40)], [4, 1], [3, 5]),
    )
    return collate_pairs([p0, p1])


def compute() -> dict[str, float]:
    cfg = load_config(packaged_config("synthetic_tiny"))  # 5 classes
    torch.manual_seed(0)
    model = build_model(cfg, num_identities=6).train()
    batch = golden_batch()
    torch.manual_seed(1)  # the crossover's random locations
    out = model(batch)
    return {k: float(v.detach()) for k, v in out.items()}


def test_the_six_losses_of_the_golden_batch():
    expected = json.loads(FIXTURE.read_text())["losses"]
    got = compute()
    assert set(got) == set(NAMES) == set(expected)
    for k in NAMES:
        assert got[k] == pytest.approx(expected[k], abs=1e-6, rel=1e-6), (k, got[k], expected[k])


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        print(json.dumps(compute(), indent=2))
    else:
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_text(
            json.dumps(
                {
                    "about": "tests/test_golden_losses.py: recorded from the code before issue 13's criterion move",
                    "torch": torch.__version__,
                    "losses": compute(),
                },
                indent=2,
            )
            + "\n"
        )
