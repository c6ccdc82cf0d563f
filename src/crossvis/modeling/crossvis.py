"""The CrossVIS model: a per-frame CondInst (FCOS + controller + mask branch + dynamic mask head) with an
identity embedding.

Training: ``model(batch)`` with ``batch = {"frames": [targets of frame t, targets of frame t+delta]}``
(see :func:`crossvis.data.pairs.collate_pairs`) returns the loss dict of :class:`~crossvis.modeling.criterion.
CrossVISCriterion` (computed inside the forward, so DDP sees every parameter used).
Inference: ``model.inference(images, sizes)`` returns one :class:`~crossvis.modeling.postprocess.Detections`
per image.
"""

from __future__ import annotations

import torch
from torch import nn

from crossvis.config import CondInstConfig, CrossVISConfig, FCOSConfig
from crossvis.data.pairs import FrameTarget, pad_to
from crossvis.modeling.backbone import Backbone
from crossvis.modeling.criterion import IDENTITY_LOSSES, CrossVISCriterion, FrameOutputs, LossModules
from crossvis.modeling.fcos_head import FCOSHead
from crossvis.modeling.fpn import FPN
from crossvis.modeling.mask_branch import DynamicMaskHead, MaskBranch
from crossvis.modeling.postprocess import Detections, PostProcessor, image_sizes
from crossvis.modeling.targets import level_locations
from crossvis.modeling.tfc import TemporalFeatureCalibration

__all__ = ["CrossVIS", "Detections"]


def _grad_scale(x: torch.Tensor, s: float) -> torch.Tensor:
    # forward value unchanged, gradient multiplied by s (the official 0.1x backbone LR trick)
    return x if s == 1.0 else x * s + x.detach() * (1 - s)


class CrossVIS(nn.Module):
    """CrossVIS.

    Args:
        backbone: a :class:`Backbone` (C3, C4, C5).
        num_identities: training identities for the global embedding classifier (from the dataset; 0 = none,
            as for inference-only models).
        width: FPN and head channels (256).
        fcos, condinst, crossvis: the head, mask and CrossVIS settings (official defaults); the number of
            object classes is ``fcos.num_classes`` (40 for YouTube-VIS 2019).
        pixel_mean, pixel_std, input_format: normalisation of 0-255 input, "BGR" (official) or "RGB".
        size_divisibility: inputs are padded to a multiple of this.
        tfc: temporal feature calibration (OVIS): each FPN level calibrated with the same level of another
            frame (the other frame of a training pair; the previous frame of the stream at inference).
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_identities: int = 0,
        width: int = 256,
        fcos: FCOSConfig | None = None,
        condinst: CondInstConfig | None = None,
        crossvis: CrossVISConfig | None = None,
        pixel_mean: tuple[float, ...] = (103.530, 116.280, 123.675),
        pixel_std: tuple[float, ...] = (1.0, 1.0, 1.0),
        input_format: str = "BGR",
        size_divisibility: int = 32,
        tfc: bool = False,
    ) -> None:
        super().__init__()
        self.fcos_cfg = fcos = fcos or FCOSConfig()
        self.condinst_cfg = ci = condinst or CondInstConfig()
        self.crossvis_cfg = cv = crossvis or CrossVISConfig()
        if cv.identity_loss not in IDENTITY_LOSSES:
            raise ValueError(f"identity_loss must be one of {tuple(IDENTITY_LOSSES)}")
        self.num_identities = num_identities
        self.strides = list(fcos.fpn_strides)
        self.backbone = backbone
        self.fpn = FPN(backbone.out_channels, width)
        self.head = FCOSHead(
            width,
            num_classes=fcos.num_classes,
            num_convs=fcos.num_convs,
            norm=fcos.norm,
            prior_prob=fcos.prior_prob,
            embedding_dim=cv.embedding_dim,
            num_levels=len(self.strides),
        )
        soi = [*fcos.sizes_of_interest, fcos.sizes_of_interest[-1] * 2]
        self.mask_head = DynamicMaskHead(
            ci.mask_branch_out_channels,
            channels=ci.mask_head_channels,
            num_layers=ci.mask_head_num_layers,
            sizes_of_interest=tuple(soi),
            mask_out_stride=ci.mask_out_stride,
            disable_rel_coords=ci.disable_rel_coords,
        )
        self.controller = nn.Conv2d(width, self.mask_head.num_params, 3, padding=1)
        nn.init.normal_(self.controller.weight, std=0.01)
        nn.init.zeros_(self.controller.bias)
        self.mask_branch = MaskBranch(
            width,
            channels=ci.mask_branch_channels,
            num_convs=ci.mask_branch_num_convs,
            out_channels=ci.mask_branch_out_channels,
            norm=ci.mask_branch_norm,
        )
        self.identity_classifier: nn.Linear | None = None
        if cv.identity_loss.startswith("global") and num_identities > 0:
            self.identity_classifier = nn.Linear(cv.embedding_dim, num_identities)
            nn.init.normal_(self.identity_classifier.weight, std=0.01)
            nn.init.constant_(self.identity_classifier.bias, -4.59512)
        self.input_format = input_format
        self.size_divisibility = size_divisibility
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        # temporal feature calibration: the previous frame's FPN maps are stream state (reset_stream())
        self.tfc = TemporalFeatureCalibration(width) if tfc else None
        self.tfc_state: list[torch.Tensor] | None = None
        self.criterion = CrossVISCriterion(
            fcos=fcos, condinst=ci, crossvis=cv, strides=self.strides, num_identities=num_identities
        )
        self.postprocess = PostProcessor(
            fcos=fcos, strides=self.strides, mask_head=self.mask_head, mask_stride=self.mask_branch.out_stride
        )

    # ------------------------------------------------------------------------------------------- shared
    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def num_classes(self) -> int:
        return self.fcos_cfg.num_classes

    def preprocess(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """uint8 RGB (3, h, w) images -> normalised (B, 3, H, W) padded to the size divisibility, and sizes."""
        normed = []
        for im in images:
            x = im.to(self.device, non_blocking=True).float()
            if self.input_format == "BGR":
                x = x.flip(0)
            normed.append((x - self.pixel_mean) / self.pixel_std)
        return pad_to(normed, self.size_divisibility)

    def _flatten(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Per-level (B, C, h, w) -> (B, sum h*w, C), levels concatenated in order."""
        return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1]) for m in maps], 1)

    def reset_stream(self) -> None:
        """Forget the previous frame (TFC stream state): the next frame starts a new video."""
        self.tfc_state = None

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalised (B, 3, H, W) input -> backbone -> FPN: [P3, ..., P7], each (B, width, h, w)."""
        feats = self.fpn(self.backbone(x))
        if self.training:
            feats = [_grad_scale(f, self.crossvis_cfg.backbone_grad_scale) for f in feats]
        return feats

    def _calibrate_stream(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """TFC online: batch item i (a frame) with item i-1, item 0 with the stream's previous frame (itself at
        the start of a stream, or when the size changed)."""
        prev = self.tfc_state
        if prev is None or any(p.shape[1:] != f.shape[1:] for p, f in zip(prev, feats)):
            prev = [f[:1] for f in feats]
        refs = [torch.cat([p, f[:-1]]) for p, f in zip(prev, feats)]
        self.tfc_state = [f[-1:].detach() for f in feats]
        return self.tfc(feats, refs)

    def network(
        self, x: torch.Tensor, *, feats: list[torch.Tensor] | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[tuple[int, int]]]:
        """Normalised (B, 3, H, W) input -> backbone -> FPN (-> TFC) -> head, controller and mask branch.

        ``feats``: FPN maps computed (and calibrated) already, as training with TFC does. Returns the
        flattened head outputs (``logits``, ``bbox_reg``, ``ctrness``, ``embedding``, ``params``: (B, L, *)), the
        mask features (B, C_m, H/8, W/8) and each FPN level's (h, w).
        """
        if feats is None:
            feats = self.pyramid(x)
            if self.tfc is not None:
                feats = self._calibrate_stream(feats)
        mask_feats = self.mask_branch(feats)
        out = self.head(feats)
        flat = {k: self._flatten(v) for k, v in out.items() if k != "box_tower"}
        flat["params"] = self._flatten([self.controller(t) for t in out["box_tower"]])
        return flat, mask_feats, [(f.shape[-2], f.shape[-1]) for f in feats]

    def run(self, x: torch.Tensor, *, feats: list[torch.Tensor] | None = None) -> FrameOutputs:
        """Normalised (B, 3, H, W) input -> :class:`FrameOutputs` (network outputs and their locations)."""
        flat, mask_feats, level_sizes = self.network(x, feats=feats)
        locations, levels = level_locations(level_sizes, self.strides, x.device)
        return FrameOutputs(
            flat=flat,
            mask_feats=mask_feats,
            locations=locations,
            levels=levels,
            padded_size=(int(x.shape[-2]), int(x.shape[-1])),
        )

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Training: the loss dict of a batch of frame pairs (``batch["frames"]``: two lists of
        :class:`FrameTarget`, frame t and frame t+delta of each pair)."""
        frames: list[list[FrameTarget]] = batch["frames"]
        xs = [self.preprocess([t.image for t in targets])[0] for targets in frames]
        if self.tfc is None:
            outputs = [self.run(x) for x in xs]
        else:  # each frame calibrated with the other frame of its pair
            raw = [self.pyramid(x) for x in xs]
            calibrated = [self.tfc(raw[0], raw[1]), self.tfc(raw[1], raw[0])]
            outputs = [self.run(x, feats=f) for x, f in zip(xs, calibrated)]
        modules = LossModules(self.mask_head, self.mask_branch.out_stride, self.identity_classifier)
        return self.criterion(outputs, frames, modules)

    @torch.no_grad()
    def inference(
        self,
        images: list[torch.Tensor],
        output_sizes: list[tuple[int, int]] | None = None,
        mask_threshold: float = 0.5,
    ) -> list[Detections]:
        """Detect and segment each (3, h, w) uint8 RGB image (already resized to the test size).

        output_sizes: the original (H, W) of each image to map boxes and masks back to (default: as given).
        Post-processing: :class:`~crossvis.modeling.postprocess.PostProcessor` (the official rule).
        """
        x, sizes = self.preprocess(images)
        return self.postprocess(self.run(x), image_sizes(x, sizes, output_sizes), mask_threshold)
