"""The limits crossvis enforces on what a file declares, in one place (documented in ``docs/errors.md``).

Every size or count read from a user's file (JSON, YAML, weights) is checked against these before memory or
time is spent on it, so a hostile or corrupt file gives the one-line error instead of a hang or an
out-of-memory kill. The values are far above anything a real dataset needs (YouTube-VIS 2021 train JSON:
~0.6 GB, 2,985 videos, <= 36 annotated frames each; OVIS: <= 500 frames, <= 1080p).
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------------- JSON files
MAX_JSON_BYTES = 4 * 1024**3  # annotations / results file size (4 GiB)
MAX_JSON_DEPTH = 64  # nesting of [ and { (a YouTube-VIS file needs 5)

# ------------------------------------------------------------------------------------------- datasets
MAX_VIDEOS = 1_000_000  # videos (or COCO images) in one dataset JSON
MAX_ANNOTATIONS = 10_000_000  # annotations in one dataset JSON
MAX_RESULTS = 10_000_000  # entries of one results file
MAX_FRAMES = 100_000  # frames of one video (file_names / segmentations)
MAX_SIDE = 16_384  # video / image height and width, pixels
MAX_PIXELS = 16_384 * 8_192  # height * width of one frame (8K UHD is 7,680 x 4,320)
MAX_POLYGON_COORDS = 1_000_000  # numbers in one polygon part
MAX_RLE_COUNT_CHARS = (
    6  # characters of one run in a compressed RLE string (any run within MAX_PIXELS needs <= 6)
)
# Evaluation compares every result with every GT track of a video in every frame:
# (frames x results x GT tracks) per-frame IoUs of one video are held at once.
MAX_IOU_CELLS = 200_000_000  # 1.6 GB of float64

# ------------------------------------------------------------------------------------------- configs
MAX_YAML_BYTES = 1024**2  # a config file (1 MiB; the shipped ones are < 4 KB)
MAX_YAML_DEPTH = 16  # nesting of a config (the deepest key, test.tracker.x, is 3)
MAX_YAML_NODES = 100_000  # values in a config, aliases expanded (an "alias bomb" stops here)
MAX_BASE_CHAIN = 16  # `_base_` inheritances one config may go through

# ------------------------------------------------------------------------------------------- weights
MAX_WEIGHTS_BYTES = 8 * 1024**3  # a .safetensors weights file (8 GiB)
MAX_METADATA_CHARS = 1024**2  # one metadata entry (config YAML, class names, record)
MAX_CLASSES = 100_000  # classes a weights file may declare

# ------------------------------------------------------------------------------------------- messages
MAX_SHOWN_CHARS = 80  # a value quoted in an error message is cut to this


def pixels_ok(height: int, width: int) -> bool:
    """A declared frame size within the limits (both sides positive)."""
    return 0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE and height * width <= MAX_PIXELS
