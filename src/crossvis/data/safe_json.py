"""Guarded JSON reading: size and nesting depth are checked before the parser runs, and anything Python's
``json`` accepts beyond the JSON standard (NaN, Infinity, numbers that overflow a float) is refused.

The depth check is a vectorised scan of the raw bytes (brackets outside strings), a fraction of a second for
a 1 GB file, so a file nested a million levels deep is refused before ``json`` recurses into it.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import numpy as np

from crossvis.errors import CrossVISError
from crossvis.limits import MAX_JSON_BYTES, MAX_JSON_DEPTH

_CHUNK = 1 << 20  # bytes scanned at a time (1 MiB)
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
# "[" 0x5B and "{" 0x7B (and only they) give 0x7B with bit 5 set; "]" 0x5D and "}" 0x7D give 0x7D
_OPENS, _CLOSES = ord("{"), ord("}")


_MAY_OVERFLOW = re.compile(rb"[eE][+]?0*[1-9][0-9]{2,}|[0-9]{300,}")


class _NotJSON(ValueError):
    """A value Python's json would accept but the JSON standard does not."""


def max_depth(data: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """Deepest nesting of ``[``/``{`` outside strings in ``data`` (JSON text), scanning no further than the
    first point deeper than ``limit``. Malformed text gives some number; the parser then rejects it."""
    in_string, odd_escape, depth, deepest = False, False, 0, 0
    buf = np.frombuffer(data, dtype=np.uint8)
    for start in range(0, buf.size, _CHUNK):
        c = buf[start : start + _CHUNK]
        quotes = np.flatnonzero(c == _QUOTE)
        slashes = np.flatnonzero(c == _BACKSLASH)
        if odd_escape:  # an odd run of backslashes ended the previous chunk: as if one stood at -1
            slashes = np.concatenate([[-1], slashes])
        if slashes.size and quotes.size:
            # a quote is escaped when the run of backslashes right before it is odd
            run_start = slashes.copy()
            breaks = np.flatnonzero(np.diff(slashes) != 1) + 1
            starts = np.zeros(slashes.size, dtype=np.int64)
            starts[breaks] = breaks
            np.maximum.accumulate(starts, out=starts)
            run_start = slashes[starts]
            last = np.searchsorted(slashes, quotes) - 1
            prev = np.where(last >= 0, slashes[np.maximum(last, 0)], -2)
            escaped = (prev == quotes - 1) & ((quotes - run_start[np.maximum(last, 0)]) % 2 == 1)
            quotes = quotes[~escaped]
        folded = c | 0x20
        brackets = np.flatnonzero((folded == _OPENS) | (folded == _CLOSES))
        if brackets.size:
            inside = (np.searchsorted(quotes, brackets) % 2 == 1) ^ in_string
            steps = np.where(folded[brackets[~inside]] == _OPENS, 1, -1)
            if steps.size:
                levels = depth + np.cumsum(steps)
                deepest = max(deepest, int(levels.max()))
                depth = int(levels[-1])
                if deepest > limit:
                    return deepest
        in_string ^= quotes.size % 2 == 1
        tail = c.size - 1
        if slashes.size and slashes[-1] == tail:
            run = np.flatnonzero(np.diff(slashes[::-1]) != -1)
            length = int(run[0]) + 1 if run.size else slashes.size
            odd_escape = length % 2 == 1
        else:
            odd_escape = False
    return deepest


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJSON(f"number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON value")


def loads(data: bytes | str, where: str | os.PathLike) -> Any:
    """Parse JSON text with the size, depth and standard checks; any failure is a one-line CrossVISError."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > MAX_JSON_BYTES:
        raise CrossVISError(where, f"{len(raw)} bytes: larger than the limit of {MAX_JSON_BYTES} bytes")
    deepest = max_depth(raw)
    if deepest > MAX_JSON_DEPTH:
        raise CrossVISError(where, f"JSON nested deeper than the limit of {MAX_JSON_DEPTH} levels")
    # Only a number with a 3-digit exponent or 300+ digits can overflow a float: the hook that refuses them
    # (1 us per number) is used only when the text holds such a run of characters.
    hook = _finite_float if _MAY_OVERFLOW.search(raw) else float
    try:
        return json.loads(raw, parse_float=hook, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise CrossVISError(where, f"malformed JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except _NotJSON as e:
        raise CrossVISError(where, f"malformed JSON ({e})") from None
    except UnicodeDecodeError:
        raise CrossVISError(where, "not a text file (JSON must be UTF-8)") from None
    except RecursionError:  # the depth scan should have caught it; never a traceback
        raise CrossVISError(where, "JSON nested too deep") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise CrossVISError(where, f"malformed JSON ({str(e).splitlines()[0][:100]})") from None
    except MemoryError:
        raise CrossVISError(where, "not enough memory to load this JSON file") from None


def read_text_bytes(f, limit: int, where: str | os.PathLike, kind: str) -> bytes:
    """The content of an open binary text file (JSON, YAML) of at most ``limit`` bytes; a larger file or one
    with NUL bytes (binary data, /dev/zero) is a CrossVISError. Read in pieces, never further than
    ``limit + 1`` bytes and stopping at the first NUL, without reserving ``limit`` bytes up front as
    ``f.read(limit + 1)`` would."""
    too_big = CrossVISError(where, f"larger than the limit of {limit} bytes for {kind}")
    if os.fstat(f.fileno()).st_size > limit:
        raise too_big
    parts, total = [], 0
    while total <= limit:
        part = f.read(min(1 << 24, limit + 1 - total))
        if not part:
            break
        if b"\0" in part:
            raise CrossVISError(where, f"not {kind} (binary data)")
        parts.append(part)
        total += len(part)
    if total > limit:
        raise too_big
    return b"".join(parts)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file (at most ``MAX_JSON_BYTES``, nested at most ``MAX_JSON_DEPTH``); any failure is a
    one-line CrossVISError naming the file."""
    try:
        with open(path, "rb") as f:
            data = read_text_bytes(f, MAX_JSON_BYTES, path, "a JSON file")
    except FileNotFoundError:
        raise CrossVISError(path, "file not found") from None
    except IsADirectoryError:
        raise CrossVISError(path, "is a folder, not a JSON file") from None
    except OSError as e:
        raise CrossVISError(path, f"cannot read: {e.strerror or e}") from None
    except MemoryError:
        raise CrossVISError(path, "not enough memory to read this file") from None
    return loads(data, path)
