from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crossvis.data.pairs import FrameTarget, boxes_from_masks
from crossvis.modeling.builders import crossvis_r50, crossvis_r101, crossvis_tiny
from crossvis.modeling.criterion import LossModules, Positives
from crossvis.modeling.losses import dice_loss, embedding_scale, giou_loss, global_identity_loss
from crossvis.modeling.mask_branch import DynamicMaskHead, aligned_bilinear
from crossvis.modeling.targets import (
    assign_targets,
    centerness_target,
    compute_locations,
    mask_centroids,
    size_ranges,
)

STRIDES = [8, 16, 32, 64, 128]
RANGES = size_ranges([64, 128, 256, 512])


def _count(m, exclude=None):
    return sum(p.numel() for n, p in m.named_parameters() if exclude is None or not n.startswith(exclude))


def test_parameter_counts_equal_the_official_models():
    m = crossvis_r50(num_classes=40, num_identities=3774)
    assert _count(m) == 37_417_569
    assert _count(m, "identity_classifier") == 36_447_651
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == 37_195_169
    assert _count(crossvis_r101(num_classes=40, num_identities=3774)) == 56_357_473


def test_msra_resnet_has_stride_on_the_1x1_and_frozen_stem():
    m = crossvis_r50(num_identities=10)
    body = m.backbone.body
    assert body.layer2[0].conv1.stride == (2, 2) and body.layer2[0].conv2.stride == (1, 1)
    assert not any(p.requires_grad for p in body.conv1.parameters())
    assert not any(p.requires_grad for p in body.layer1.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())
    assert type(body.bn1).__name__ == "FrozenBatchNorm2d" and body.bn1.eps == 1e-5
    feats = m.backbone(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(512, 8, 12), (1024, 4, 6), (2048, 2, 3)]


def _locations(h, w):
    locs, levels = [], []
    for lvl, s in enumerate(STRIDES):
        loc = compute_locations(math.ceil(h / s), math.ceil(w / s), s)
        locs.append(loc)
        levels.append(torch.full((len(loc),), lvl))
    return torch.cat(locs), torch.cat(levels)


def test_target_assignment_centre_sampling_on_the_mask_centroid():
    locs, levels = _locations(64, 64)
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 8:40, 8:40] = True
    boxes = boxes_from_masks(masks)
    assert boxes.tolist() == [[8, 8, 40, 40]]
    c = mask_centroids(masks, boxes)
    assert c.tolist() == [[23.5, 23.5]]
    gt, reg = assign_targets(locs, levels, strides=STRIDES, ranges=RANGES, boxes=boxes, centroids=c)
    pos = (gt >= 0).nonzero()[:, 0]
    # P3 cells strictly inside [23.5 - 12, 23.5 + 12]: x, y in {12, 20, 28}; none on P4 (max distance 16 < 64)
    assert sorted(map(tuple, locs[pos].tolist())) == [
        (x, y) for x in (12.0, 20.0, 28.0) for y in (12.0, 20.0, 28.0)
    ]
    assert (levels[pos] == 0).all()
    k = int(((locs[:, 0] == 12) & (locs[:, 1] == 20) & (levels == 0)).nonzero())
    assert reg[k].tolist() == [4, 12, 28, 20]


def test_centre_region_follows_the_mask_not_the_box():
    locs, levels = _locations(64, 64)
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 0:32, 0:16] = True
    boxes = torch.tensor([[0.0, 0.0, 64.0, 32.0]])  # a box larger than the mask: centroid (7.5, 15.5)
    gt, _ = assign_targets(
        locs, levels, strides=STRIDES, ranges=RANGES, boxes=boxes, centroids=mask_centroids(masks, boxes)
    )
    pos = (gt >= 0).nonzero()[:, 0]
    assert sorted(map(tuple, locs[pos].tolist())) == [(x, y) for x in (4.0, 12.0) for y in (4.0, 12.0, 20.0)]


def test_ambiguous_locations_go_to_the_smallest_box_and_ranges_pick_the_level():
    locs, levels = _locations(128, 128)
    boxes = torch.tensor([[0.0, 0.0, 48.0, 48.0], [8.0, 8.0, 40.0, 40.0], [0.0, 0.0, 128.0, 128.0]])
    cents = torch.tensor([[23.5, 23.5], [23.5, 23.5], [63.5, 63.5]])
    gt, _ = assign_targets(locs, levels, strides=STRIDES, ranges=RANGES, boxes=boxes, centroids=cents)
    assert (gt == 0).sum() == 0  # all of box 0's candidates are also box 1's, which is smaller
    assert (gt == 1).sum() == 9 and (levels[gt == 1] == 0).all()
    # the 128 x 128 box: max distance in [64, 128] -> P4 (s = 16), centre region 63.5 +- 24
    assert (gt == 2).sum() > 0 and (levels[gt == 2] == 1).all()


def test_no_gt_means_all_background():
    locs, levels = _locations(64, 64)
    gt, reg = assign_targets(
        locs, levels, strides=STRIDES, ranges=RANGES, boxes=torch.zeros(0, 4), centroids=torch.zeros(0, 2)
    )
    assert (gt == -1).all() and reg.shape == (len(locs), 4)


def test_giou_dice_and_centerness_against_hand_values():
    assert giou_loss(torch.tensor([[1.0, 2, 3, 4]]), torch.tensor([[1.0, 2, 3, 4]])).item() == pytest.approx(
        0.0
    )
    # pred 2x2, target 4x4 around the same point: inter 4, union 16, IoU (4+1)/(16+1), enclose = union
    assert giou_loss(torch.ones(1, 4), 2 * torch.ones(1, 4)).item() == pytest.approx(12 / 17)
    # weights multiply
    assert giou_loss(torch.ones(1, 4), 2 * torch.ones(1, 4), torch.tensor([0.5])).item() == pytest.approx(
        6 / 17
    )
    p = torch.full((1, 2, 2), 0.5)
    g = torch.tensor([[[1.0, 0], [0, 0]]])
    assert dice_loss(p, g).item() == pytest.approx(1 - 1.0 / (1.0 + 1.0 + 1e-5))
    assert centerness_target(torch.tensor([[1.0, 2, 3, 4]])).item() == pytest.approx(math.sqrt(1 / 3 * 2 / 4))


def test_identity_loss_hand_value_and_no_positive_case():
    assert embedding_scale(3774) == pytest.approx(math.sqrt(2) * math.log(3773))
    assert embedding_scale(3774) == pytest.approx(11.6469, abs=1e-4)
    cls = torch.nn.Linear(2, 3)
    with torch.no_grad():
        cls.weight.copy_(torch.tensor([[1.0, 0], [0, 1], [-1, 0]]))
        cls.bias.zero_()
    emb = torch.tensor([[3.0, 0.0]])  # normalised (1, 0), scale s -> logits (s, 0, -s)
    s = 2.0
    got = global_identity_loss(emb, torch.tensor([0]), cls, s).item()
    logits, target = torch.tensor([s, 0.0, -s]), torch.tensor([1.0, 0, 0])
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    alpha = 0.25 * target + 0.75 * (1 - target)
    assert got == pytest.approx(float((alpha * ce * (1 - p_t) ** 2).sum()))
    empty = global_identity_loss(
        torch.zeros(0, 2, requires_grad=True), torch.zeros(0, dtype=torch.long), cls, s
    )
    assert empty.item() == 0.0 and not torch.isnan(empty)
    empty.backward()  # still part of the graph: no crash in DDP or the optimizer


def test_dynamic_head_parameter_split():
    head = DynamicMaskHead(8, channels=8, num_layers=3)
    assert head.num_params == 169
    params = torch.arange(2 * 169, dtype=torch.float32).reshape(2, 169)
    w, b = head.split_params(params)
    assert [tuple(x.shape) for x in w] == [(16, 10, 1, 1), (16, 8, 1, 1), (2, 8, 1, 1)]
    assert [tuple(x.shape) for x in b] == [(16,), (16,), (2,)]
    assert w[0][3, 7, 0, 0] == 3 * 10 + 7  # w0 row-major (out, in)
    assert w[1][0, 0, 0, 0] == 80 and w[2][0, :, 0, 0].tolist() == list(range(144, 152))
    assert b[0].tolist()[:8] == list(range(152, 160)) and b[2].tolist() == [168, 169 + 168]


def test_dynamic_head_relative_coordinates_and_upsampling():
    head = DynamicMaskHead(8, channels=8, num_layers=3, sizes_of_interest=(64, 128, 256, 512, 1024))
    # params that output just the x relative coordinate: layer0 ch0 = dx, ReLU kills negatives, so use dx+10
    params = torch.zeros(1, 169)
    params[0, 0] = 1.0  # w0[0, 0] (dx)
    params[0, 152] = 10.0  # b0[0]
    params[0, 80] = 1.0  # w1[0, 0]
    params[0, 144] = 1.0  # w2[0, 0]
    feats = torch.zeros(1, 8, 4, 4)
    out = head(
        feats,
        8,
        params=params,
        locations=torch.tensor([[4.0, 4.0]]),
        levels=torch.tensor([0]),
        im_inds=torch.tensor([0]),
    )
    assert out.shape == (1, 8, 8)
    # at stride-8 cell (0, j): dx = (4 - (8 j + 4)) / 64 -> logit 10 - j/8
    lowres = out[0, 1::2, 1::2]  # aligned: input cell j lands on output 2j + 1
    assert torch.allclose(lowres[0], torch.tensor([10.0, 10 - 1 / 8, 10 - 2 / 8, 10 - 3 / 8]))


def test_aligned_bilinear_shape_and_constant():
    x = torch.full((1, 1, 3, 5), 2.0)
    y = aligned_bilinear(x, 4)
    assert y.shape == (1, 1, 12, 20) and torch.allclose(y, torch.full_like(y, 2.0))
    assert aligned_bilinear(x, 1) is x


def _frame(masks, classes, ids, links, size=(64, 64)):
    m = torch.zeros((len(masks), *size), dtype=torch.bool)
    for i, (y0, y1, x0, x1) in enumerate(masks):
        m[i, y0:y1, x0:x1] = True
    return FrameTarget(
        torch.randint(0, 255, (3, *size), dtype=torch.uint8),
        m,
        boxes_from_masks(m),
        torch.tensor(classes, dtype=torch.long),
        torch.tensor(ids, dtype=torch.long),
        torch.tensor(links, dtype=torch.long),
    )


def _positives(im, gt, link, n_params=169):
    n = len(im)
    return Positives(
        im=torch.tensor(im),
        loc=torch.tensor([[12.0, 12.0]] * n),
        level=torch.zeros(n, dtype=torch.long),
        params=torch.randn(n, n_params),
        emb=torch.randn(n, 8),
        gt=torch.tensor(gt),
        local_gt=torch.tensor(gt),
        identity=torch.tensor(gt),
        link=torch.tensor(link),
        still=torch.zeros(n, dtype=torch.bool),
    )


def test_crossover_pairs_filters_with_the_same_object_in_the_other_frame():
    torch.manual_seed(0)
    model = crossvis_tiny(num_classes=5, num_identities=4)
    feats = torch.randn(1, 8, 8, 8)
    gt_masks = torch.zeros(2, 16, 16)
    gt_masks[0, :8, :8] = 1
    gt_masks[1, 8:, 8:] = 1
    # src: positive 0 -> object linked to dst GT 1; positive 1 -> object absent in dst (link -1)
    src = _positives([0, 0], [0, 1], [1, -1])
    dst = _positives([0], [1], [0])
    dst.loc = torch.tensor([[36.0, 44.0]])
    modules = LossModules(model.mask_head, 8, model.identity_classifier)
    loss = model.criterion.crossover_loss(src, dst, feats, gt_masks, modules=modules)
    logits = model.mask_head(
        feats, 8, params=src.params[:1], locations=dst.loc, levels=dst.level, im_inds=dst.im
    )
    assert loss.item() == pytest.approx(dice_loss(logits.sigmoid(), gt_masks[1:2]).mean().item(), rel=1e-6)
    # an object with no positive location in the other frame is skipped: only dummy zero remains
    dst_none = _positives([0], [0], [0])
    src_only1 = _positives([0], [0], [1])
    assert model.criterion.crossover_loss(src_only1, dst_none, feats, gt_masks, modules=modules).item() == 0.0


def test_training_losses_both_directions_and_a_batch_without_objects():
    torch.manual_seed(0)
    model = crossvis_tiny(num_classes=5, num_identities=4).train()
    f0 = [_frame([(4, 30, 4, 30), (34, 60, 30, 62)], [0, 1], [0, 1], [0, -1])]
    f1 = [_frame([(6, 32, 6, 32), (0, 20, 40, 60)], [0, 2], [0, 2], [0, -1])]
    losses = model({"frames": [f0, f1]})
    assert set(losses) == {
        "loss_fcos_cls",
        "loss_fcos_loc",
        "loss_fcos_ctr",
        "loss_mask",
        "loss_crossover",
        "loss_identity",
    }
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    empty = [_frame([], [], [], [])]
    losses = model({"frames": [empty, empty]})
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_identity"].item() == 0.0 and losses["loss_crossover"].item() == 0.0
    sum(losses.values()).backward()


@pytest.mark.parametrize("kind", ["global_ce", "pairwise_ce", "pairwise_focal"])
def test_identity_loss_variants_train(kind):
    torch.manual_seed(0)
    model = crossvis_tiny(num_classes=5, num_identities=4, crossvis__identity_loss=kind).train()
    f0 = [_frame([(4, 30, 4, 30), (34, 60, 30, 62)], [0, 1], [0, 1], [0, -1])]
    f1 = [_frame([(6, 32, 6, 32), (0, 20, 40, 60)], [0, 2], [0, 2], [0, -1])]
    loss = model({"frames": [f0, f1]})["loss_identity"]
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.head.identity_pred.weight.grad.abs().sum() > 0
    if kind.startswith("pairwise"):
        assert model.identity_classifier is None


def test_crossover_switch_removes_the_loss():
    model = crossvis_tiny(num_classes=5, num_identities=4, crossvis__crossover=False).train()
    f = [_frame([(4, 30, 4, 30)], [0], [0], [0])]
    assert "loss_crossover" not in model({"frames": [f, f]})


def test_inference_returns_documented_tensors():
    torch.manual_seed(0)
    model = crossvis_tiny(num_classes=5).eval()
    torch.nn.init.constant_(model.head.cls_logits.bias, 3.0)
    img = torch.randint(0, 255, (3, 60, 90), dtype=torch.uint8)
    (det,) = model.inference([img], [(120, 180)])
    n = len(det)
    assert 0 < n <= 100
    assert det.boxes.shape == (n, 4) and det.masks.shape == (n, 120, 180) and det.masks.dtype == torch.bool
    assert det.embeddings.shape == (n, 64) and det.classes.max() < 5
    assert (det.scores[:-1] >= det.scores[1:]).all()  # descending
    assert (det.boxes[:, 0::2] <= 180).all() and (det.boxes[:, 1::2] <= 120).all() and (det.boxes >= 0).all()
    dets = model.inference([img, img], [(60, 90), (60, 90)])  # batch inference
    assert len(dets) == 2 and torch.equal(dets[0].scores, dets[1].scores)


def test_dla34_lite_backbone_strides():
    from crossvis.modeling.builders import crossvis_lite_dla34

    m = crossvis_lite_dla34(num_identities=0).eval()
    feats = m.backbone(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 12), (4, 6), (2, 3)]
    assert m.backbone.out_channels == [128, 256, 512]
    (det,) = m.inference([torch.zeros(3, 50, 70, dtype=torch.uint8)])  # padded to 64 x 96 inside
    assert det.masks.shape[1:] == (50, 70)


def test_tall_images_keep_their_gt_masks_aligned():
    """Frames taller than wide (and padded to 32): the GT masks are placed into the padded frame row for row."""
    torch.manual_seed(0)
    model = crossvis_tiny(num_classes=5, num_identities=4).train()
    f0 = [_frame([(10, 60, 8, 40)], [0], [0], [0], size=(80, 48))]
    f1 = [_frame([(14, 66, 6, 38)], [0], [0], [0], size=(80, 48))]
    batch = {"frames": [f0, f1]}
    outputs = [model.run(model.preprocess([t.image for t in f])[0]) for f in batch["frames"]]
    gt = model.criterion.match_pair(outputs, batch["frames"])[0].gt_masks
    s = model.condinst_cfg.mask_out_stride
    expected = torch.zeros(96, 64)
    expected[10:60, 8:40] = 1  # the mask in the top-left of the 96 x 64 padded input
    assert gt.shape == (1, 96 // s, 64 // s) and torch.equal(gt[0], expected[s // 2 :: s, s // 2 :: s])
    assert all(torch.isfinite(v) for v in model(batch).values())


def test_a_frame_with_exactly_one_positive_location_has_box_and_centerness_losses():
    """A 3 x 3 object holds one stride-8 location: the box and centerness losses are computed, not skipped."""
    torch.manual_seed(0)
    model = crossvis_tiny(num_classes=5, num_identities=4).train()
    f = [_frame([(10, 13, 10, 13)], [0], [0], [0])]
    batch = {"frames": [f, f]}
    outputs = [model.run(model.preprocess([t.image for t in fr])[0]) for fr in batch["frames"]]
    match = model.criterion.match_pair(outputs, batch["frames"])[0]
    assert match.reg_pred.shape[0] == 1  # exactly one positive
    losses = model(batch)
    assert losses["loss_fcos_loc"].item() > 0 and losses["loss_fcos_ctr"].item() > 0
