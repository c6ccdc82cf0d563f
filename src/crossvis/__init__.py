"""crossvis: fast online video instance segmentation (CrossVIS, ICCV 2021) in plain PyTorch."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

from crossvis.errors import CrossVISError

if TYPE_CHECKING:
    from crossvis.engine.predictor import VideoPredictor, VideoResult

__all__ = ["CrossVISError", "VideoPredictor", "VideoResult", "__version__"]


def __getattr__(name: str):
    # Heavy imports (torch, the model) only when the predictor is asked for.
    if name in ("VideoPredictor", "VideoResult"):
        from crossvis.engine import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'crossvis' has no attribute {name!r}")
