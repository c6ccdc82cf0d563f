"""Write randomly initialised CrossVIS R-50 / Lite weights (seed 0) as a crossvis weights file, so that the
ONNX export and `crossvis benchmark --weights ... --onnx ...` can time the full-size networks:

    python benchmarks/random_weights.py --backbone resnet50 --output /tmp/r50_random.safetensors
    crossvis export /tmp/r50_random.safetensors --format onnx --output /tmp/r50_random.onnx
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from crossvis.config import Config
from crossvis.modeling.builders import build_model
from crossvis.modeling.weights import save_weights


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="resnet50", choices=("resnet50", "resnet101", "dla34"))
    ap.add_argument("--output", required=True)
    args = ap.parse_args()
    cfg = Config()
    cfg.model.backbone = replace(cfg.model.backbone, name=args.backbone, pretrained=False)
    if args.backbone == "dla34":
        cfg.model.backbone = replace(cfg.model.backbone, stride_in_1x1=False, freeze_at=0)
    torch.manual_seed(0)
    model = build_model(cfg)
    names = [f"class{i}" for i in range(cfg.model.fcos.num_classes)]
    save_weights(model, args.output, cfg, names, record={"note": "random initialisation, seed 0"})
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
