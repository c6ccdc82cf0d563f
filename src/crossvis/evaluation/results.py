"""Results files in the official submission format, and the zip the evaluation servers accept."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from crossvis.io import atomic_path, atomic_write


def write_results(results: list[dict], path: str | os.PathLike, zip_: bool = False) -> list[Path]:
    """Write ``[{video_id, category_id, score, segmentations: [RLE or null per frame]}]`` to ``path``.

    With ``zip_``, also write ``<path stem>.zip`` holding the file under the name ``results.json`` at the
    archive's root, as the YouTube-VIS and OVIS servers require. Both writes are atomic.
    """
    path = Path(path)
    with atomic_write(path) as f:
        json.dump(results, f)
    written = [path]
    if zip_:
        zpath = path.with_suffix(".zip")
        with atomic_path(zpath) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(path, arcname="results.json")
        written.append(zpath)
    return written
