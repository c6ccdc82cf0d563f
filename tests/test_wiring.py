"""Wiring tests through the public training entry point, ``model(batch)`` -> loss dict.

The loss pieces (targets, focal loss, dice, identity loss) have their own unit tests; these check how the model
connects them: which centre the FCOS targets use, which frame's filters meet which frame's features and masks in
the crossover loss, and how the identity loss is normalised. Batches are hand-built ``FrameTarget`` pairs, so
nothing depends on the data pipeline.
"""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from crossvis.config import load_config, packaged_config
from crossvis.data.pairs import FrameTarget, boxes_from_masks, collate_pairs
from crossvis.modeling.builders import build_model
from crossvis.modeling.targets import assign_targets, compute_locations, mask_centroids, size_ranges

H, W = 128, 160
TINY = load_config(packaged_config("synthetic_tiny"))  # the settings the expected values are computed from


def rect(x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    """(H, W) bool mask of the pixel rectangle [x0, x1) x [y0, y1)."""
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def l_shape(x0: int, y0: int, x1: int, y1: int, arm: int = 8) -> torch.Tensor:
    """An L (left column + bottom row) filling the box [x0, x1) x [y0, y1): its centroid lies far from the
    box centre, towards the bottom-left corner."""
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0 : x0 + arm] = True
    m[y1 - arm : y1, x0:x1] = True
    return m


def image(seed: int) -> torch.Tensor:
    """A fixed random (3, H, W) uint8 image."""
    return torch.randint(0, 256, (3, H, W), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def frame(img: torch.Tensor, masks: list[torch.Tensor], classes: list[int], ids: list[int]) -> FrameTarget:
    m = torch.stack(masks) if masks else torch.zeros((0, H, W), dtype=torch.bool)
    return FrameTarget(
        image=img,
        masks=m,
        boxes=boxes_from_masks(m),
        classes=torch.tensor(classes, dtype=torch.int64),
        identities=torch.tensor(ids, dtype=torch.int64),
        links=torch.full((len(ids),), -1, dtype=torch.int64),
    )


def link(f0: FrameTarget, f1: FrameTarget) -> tuple[FrameTarget, FrameTarget]:
    """Set each frame's ``links`` to the index of the same identity in the other frame (-1: absent)."""
    pos0 = {int(i): k for k, i in enumerate(f0.identities)}
    pos1 = {int(i): k for k, i in enumerate(f1.identities)}
    f0.links = torch.tensor([pos1.get(int(i), -1) for i in f0.identities], dtype=torch.int64)
    f1.links = torch.tensor([pos0.get(int(i), -1) for i in f1.identities], dtype=torch.int64)
    return f0, f1


def tiny_model(num_identities: int = 6, seed: int = 0, overrides: list[str] | None = None) -> torch.nn.Module:
    """The packaged tiny config's model (5 classes) in training mode, initialised from ``seed``."""
    cfg = load_config(packaged_config("synthetic_tiny"), overrides)
    torch.manual_seed(seed)
    return build_model(cfg, num_identities).train()


def losses(model: torch.nn.Module, pairs: list[tuple[FrameTarget, FrameTarget]], seed: int = 1) -> dict:
    """The loss dict of ``pairs`` as floats, with torch's RNG (crossover sampling) seeded first."""
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model(collate_pairs(pairs))
    return {k: float(v) for k, v in out.items()}


def three_objects(order1: tuple[int, ...]) -> tuple[FrameTarget, FrameTarget]:
    """Frame 0: objects 0, 1, 2 (identities 0, 3, 5); frame 1: the objects listed in ``order1``, moved."""
    boxes0 = [(8, 8, 56, 64), (72, 16, 136, 72), (24, 80, 88, 124)]
    boxes1 = [(16, 12, 64, 68), (84, 36, 148, 92), (40, 72, 104, 116)]
    ids, classes = [0, 3, 5], [1, 2, 4]
    f0 = frame(image(10), [rect(*b) for b in boxes0], classes, ids)
    f1 = frame(
        image(11), [rect(*boxes1[k]) for k in order1], [classes[k] for k in order1], [ids[k] for k in order1]
    )
    return link(f0, f1)


# --------------------------------------------------------------------------------------------- FCOS targets
def _expected_cls_loss(masks: torch.Tensor, bias: float, centre: str) -> tuple[float, int]:
    """loss_fcos_cls of one frame whose class logits are all ``bias``: focal loss over every location and
    class, over the number of positives that the official rule (centre sampling around the mask centroid,
    or around the box centre for ``centre="box"``) gives."""
    cfg = TINY.model.fcos
    strides = list(cfg.fpn_strides)
    ph, pw = -(-H // 32) * 32, -(-W // 32) * 32
    locs, levels = [], []
    for lvl, s in enumerate(strides):
        loc = compute_locations(-(-ph // s), -(-pw // s), s)
        locs.append(loc)
        levels.append(torch.full((loc.shape[0],), lvl, dtype=torch.long))
    locations, level_of = torch.cat(locs), torch.cat(levels)
    boxes = boxes_from_masks(masks)
    if centre == "box":
        centres = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    else:
        centres = mask_centroids(masks, boxes)
    gt_ind, _ = assign_targets(
        locations,
        level_of,
        strides=strides,
        ranges=size_ranges(list(cfg.sizes_of_interest)),
        boxes=boxes,
        centroids=centres,
        center_sample=cfg.center_sample,
        radius=cfg.pos_radius,
    )
    num_pos = int((gt_ind >= 0).sum())
    n_loc, n_cls = locations.shape[0], cfg.num_classes
    one = torch.full((1,), bias)
    pos = float(sigmoid_focal_loss(one, torch.ones(1), cfg.loss_alpha, cfg.loss_gamma))
    neg = float(sigmoid_focal_loss(one, torch.zeros(1), cfg.loss_alpha, cfg.loss_gamma))
    return (num_pos * pos + (num_pos * (n_cls - 1) + (n_loc - num_pos) * n_cls) * neg) / max(
        num_pos, 1
    ), num_pos


def test_fcos_targets_are_centred_on_the_mask_centroid_not_the_box_centre():
    """An L-shaped mask (centroid far from its box centre): with constant class logits, loss_fcos_cls is a
    closed-form function of the number of positive locations, which must be the mask-centroid count."""
    model = tiny_model()
    bias = -2.0
    with torch.no_grad():
        model.head.cls_logits.weight.zero_()
        model.head.cls_logits.bias.fill_(bias)
    mask0 = l_shape(20, 20, 60, 60)
    mask1 = l_shape(30, 20, 100, 100)
    f0, f1 = link(frame(image(0), [mask0], [2], [1]), frame(image(1), [mask1], [2], [1]))
    got = losses(model, [(f0, f1)])["loss_fcos_cls"]
    e0, n0 = _expected_cls_loss(mask0[None], bias, "centroid")
    e1, n1 = _expected_cls_loss(mask1[None], bias, "centroid")
    b0, nb0 = _expected_cls_loss(mask0[None], bias, "box")
    b1, nb1 = _expected_cls_loss(mask1[None], bias, "box")
    assert (n0, n1) != (nb0, nb1)  # the case tells the two centres apart
    w_det = TINY.model.crossvis.loss_weight_det
    assert got == pytest.approx(w_det * (e0 + e1) / 2, rel=1e-5)
    assert abs(got - w_det * (b0 + b1) / 2) > 1e-3


def test_the_l_shape_and_its_filled_box_give_different_box_losses():
    """Same image, same box; only the mask (hence its centroid) differs: the positive locations, and so the
    FCOS class, box and centerness losses, must differ. With targets around the box centre they would be
    identical."""
    model = tiny_model()
    box = (20, 20, 60, 60)
    mirrored = rect(52, 20, 60, 60) | rect(20, 52, 60, 60)  # right column + bottom row: the same box
    out = {}
    for name, m in (("L", l_shape(*box)), ("filled", rect(*box)), ("mirrored", mirrored)):
        f0, f1 = link(frame(image(0), [m], [2], [1]), frame(image(1), [m], [2], [1]))
        out[name] = losses(model, [(f0, f1)])
    for a, b in (("L", "filled"), ("L", "mirrored"), ("filled", "mirrored")):
        for k in ("loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"):
            assert abs(out[a][k] - out[b][k]) > 1e-6, (a, b, k, out)


# --------------------------------------------------------------------------------------------- crossover
def test_crossover_pairs_each_frames_filters_with_the_other_frames_features_and_masks():
    """Reordering the objects of frame 1 (with the links following them) is only a relabelling: every loss,
    the crossover included, must stay the same. A crossover that mixes up the two frames' positives (their
    GT indices are then read in the wrong frame's list) changes with the order."""
    model = tiny_model()
    ref = losses(model, [three_objects((0, 1, 2))])
    assert ref["loss_crossover"] > 0.05
    for order in ((2, 0, 1), (1, 2, 0), (2, 1, 0)):
        got = losses(model, [three_objects(order)])
        for k in ref:
            assert got[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-6), (order, k, ref, got)


def test_crossover_with_an_object_missing_from_one_frame():
    """Frame 1 holds only object 2 (at index 0), frame 0 all three: only that object crosses over, and the
    loss must not depend on how frame 0's other objects are ordered around it."""
    model = tiny_model()
    a = losses(model, [three_objects((2,))])
    f0, f1 = three_objects((2,))
    perm = [2, 0, 1]  # frame 0 reordered: object 2 first
    g0 = frame(
        f0.image,
        [f0.masks[k] for k in perm],
        [int(f0.classes[k]) for k in perm],
        [int(f0.identities[k]) for k in perm],
    )
    g0, g1 = link(g0, f1)
    b = losses(model, [(g0, g1)])
    assert a["loss_crossover"] > 0.05
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), (k, a, b)


def test_crossover_reaches_both_frames_mask_features_and_filters():
    """Frame-1 filters segment frame 0's mask features and frame-0 filters frame 1's: the crossover loss has
    a gradient into the mask-branch output of both frames and into the controller of both frames. (Each
    frame's own mask loss uses its own features and filters; only the crossover mixes them.)"""
    model = tiny_model()
    feats: list[torch.Tensor] = []
    params: list[torch.Tensor] = []
    h1 = model.mask_branch.register_forward_hook(lambda m, i, o: feats.append(o))
    h2 = model.controller.register_forward_hook(lambda m, i, o: params.append(o))
    try:
        torch.manual_seed(1)
        out = model(collate_pairs([three_objects((2, 0, 1))]))
    finally:
        h1.remove()
        h2.remove()
    grads = torch.autograd.grad(out["loss_crossover"], feats + params, allow_unused=True)

    def per_image(gs):
        return [float(g[i].abs().sum()) if g is not None else 0.0 for g in gs for i in range(len(g))]

    feat_grads = per_image(grads[: len(feats)])
    assert len(feat_grads) == 2 and min(feat_grads) > 0, feat_grads  # frame 0 and frame 1
    # controller outputs: one per FPN level and frame; both frames' filters take part
    n_levels = len(TINY.model.fcos.fpn_strides)
    by_frame = [0.0, 0.0]
    for j, g in enumerate(grads[len(feats) :]):
        if g is None:
            continue
        if len(params) == 2 * n_levels:  # one call per frame
            by_frame[j // n_levels] += float(g.abs().sum())
        else:  # both frames in one batch
            for i in range(len(g)):
                by_frame[i] += float(g[i].abs().sum())
    assert min(by_frame) > 0, by_frame


def test_crossover_is_zero_without_a_shared_object():
    model = tiny_model()
    f0 = frame(image(0), [rect(8, 8, 56, 64)], [1], [0])
    f1 = frame(image(1), [rect(72, 16, 136, 72)], [1], [3])
    out = losses(model, [link(f0, f1)])
    assert out["loss_crossover"] == 0.0 and out["loss_mask"] > 0


# --------------------------------------------------------------------------------------------- identity
def test_identity_loss_is_the_mean_over_positive_locations():
    """With a zeroed identity classifier every positive location has the same logits (the bias), so the
    global balanced embedding loss (sigmoid focal over all identities, summed, divided by the number of
    positives) is a closed-form constant, whatever the number of positives (here many, > 2)."""
    n_id = 6
    model = tiny_model(num_identities=n_id)
    bias = -1.5
    with torch.no_grad():
        model.identity_classifier.weight.zero_()
        model.identity_classifier.bias.fill_(bias)
    out = losses(model, [three_objects((0, 1, 2))])
    cfg = TINY.model.fcos
    p = 1 / (1 + math.exp(-bias))
    pos = cfg.loss_alpha * (1 - p) ** cfg.loss_gamma * -math.log(p)
    neg = (1 - cfg.loss_alpha) * p**cfg.loss_gamma * -math.log(1 - p)
    expected = TINY.model.crossvis.loss_weight_identity * (pos + (n_id - 1) * neg)
    assert out["loss_identity"] == pytest.approx(expected, rel=1e-5)


def test_a_duplicated_pair_gives_the_same_normalised_losses():
    """The same pair twice in a batch doubles every positive: each loss is a mean (or normalised by the
    positive count), so nothing may change. A sum instead of a mean doubles it."""
    model = tiny_model()
    pair = three_objects((2, 0, 1))
    one = losses(model, [pair])
    two = losses(model, [pair, three_objects((2, 0, 1))])
    for k in ("loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask", "loss_identity"):
        assert two[k] == pytest.approx(one[k], rel=1e-4), (k, one, two)


def test_every_loss_has_a_gradient_path_to_the_parameters():
    model = tiny_model()
    torch.manual_seed(1)
    out = model(collate_pairs([three_objects((1, 0, 2))]))
    assert set(out) == {
        "loss_fcos_cls",
        "loss_fcos_loc",
        "loss_fcos_ctr",
        "loss_mask",
        "loss_crossover",
        "loss_identity",
    }
    for k, v in out.items():
        assert v.requires_grad and torch.isfinite(v), k
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(v, params, allow_unused=True, retain_graph=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), k


def test_loss_weights_scale_their_losses():
    """model.crossvis.loss_weight_{det,crossover,identity} multiply exactly their own losses."""
    pair = three_objects((1, 2, 0))
    base = losses(tiny_model(), [pair])
    weights = {"loss_weight_det": 2.0, "loss_weight_crossover": 3.0, "loss_weight_identity": 0.5}
    scaled = losses(tiny_model(overrides=[f"model.crossvis.{k}={v}" for k, v in weights.items()]), [pair])
    factor = {
        "loss_fcos_cls": 2.0,
        "loss_fcos_loc": 2.0,
        "loss_fcos_ctr": 2.0,
        "loss_mask": 2.0,
        "loss_crossover": 3.0,
        "loss_identity": 0.5,
    }
    for k, f in factor.items():
        assert scaled[k] == pytest.approx(f * base[k], rel=1e-5), (k, base, scaled)
