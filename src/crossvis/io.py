"""Atomic file writing: every output crossvis writes appears whole or not at all.

A writer gets a temporary file next to the target; on success it is fsynced and renamed over the target, on any
exception (bad input, Ctrl-C, SIGTERM, disk full) it is removed and an earlier file at the target is left
untouched. An OSError while writing (disk full, no permission) becomes a CrossVISError naming the file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from crossvis.errors import CrossVISError


def _default_mode() -> int:
    """0o666 minus the process umask: what open() would give (mkstemp files are 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for writers that need a file name (video encoders,
    safetensors, zip); it is renamed over ``path`` on success and removed on failure."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix or path.suffix, dir=path.parent)
    except OSError as e:  # no such folder, a file in the way, no permission: about the output itself
        raise CrossVISError(path, f"cannot write: {e.strerror or e}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, BrokenPipeError):
            raise _write_error(path, e, tmp) from None
        raise


def _write_error(path: Path, e: OSError, tmp: str) -> CrossVISError:
    """An OSError while writing ``path`` (disk full, no permission, ...) as the one-line error. An error
    about another file (one being read while writing) names that file instead."""
    what = e.strerror or str(e) or type(e).__name__
    other = e.filename is not None and str(e.filename) not in (str(path), str(tmp))
    return CrossVISError(e.filename if other else path, what if other else f"cannot write: {what}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success fsync it and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched, so a crash or bad
    input never leaves a half-written output behind.
    """
    with (
        atomic_path(path, suffix=".tmp") as tmp,
        open(tmp, mode, encoding=None if "b" in mode else encoding) as f,
    ):
        yield f
