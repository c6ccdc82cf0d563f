"""Online tracking: per-frame detections -> video instances."""

from crossvis.tracking.tracker import OnlineTracker, Track

__all__ = ["OnlineTracker", "Track"]
