"""Reading pickled weight files (detectron2's ``R-50.pkl``, ``R-101.pkl``) without running code.

A pickle is a small program: every ``GLOBAL`` it names is imported and may be called. :func:`load_pickle`
uses an unpickler whose ``find_class`` admits only what a file of numpy arrays needs:

- ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct`` (rebuild an array),
- ``numpy.ndarray`` and ``numpy.dtype`` (the array's type and element type),
- ``numpy.core.multiarray.scalar`` / ``numpy._core.multiarray.scalar`` (a numpy scalar),
- ``_codecs.encode`` with the latin-1 codec only (how Python 3 pickles byte strings in protocols 0-2),
- ``collections.OrderedDict``.

Dicts, lists, tuples, strings, bytes, numbers, booleans and None need no global. Everything else is refused
with a one-line :class:`~crossvis.errors.CrossVISError` naming the refused global, before it is imported.
Python 2 pickles (the Detectron/Caffe2 files) are read with ``encoding="latin1"``.
"""

from __future__ import annotations

import codecs
import collections
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from crossvis.errors import CrossVISError

_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")


def _latin1_encode(obj: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    # protocol 0-2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1")
    if codecs.lookup(encoding).name != "iso8859-1" or not isinstance(obj, str):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} refused")
    return obj.encode("latin1", errors)


def _allowed(module: str, name: str) -> Any | None:
    if module in _NUMPY_MODULES and name in ("_reconstruct", "scalar"):
        return getattr(np._core.multiarray if hasattr(np, "_core") else np.core.multiarray, name)
    if module == "numpy" and name == "ndarray":
        return np.ndarray
    if module == "numpy" and name == "dtype":
        return np.dtype
    if module == "_codecs" and name == "encode":
        return _latin1_encode
    if module == "collections" and name == "OrderedDict":
        return collections.OrderedDict
    return None


class _Refused(Exception):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that imports nothing but numpy's array constructors (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed(module, name)
        if obj is None:
            raise _Refused(module, name)
        return obj


def load_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (latin-1 for Python 2 strings).

    Returns the unpickled object (for a Caffe2 weights file: a dict of name -> numpy array). Raises a one-line
    CrossVISError for a missing or unreadable file, and for any global outside the allowed set (the pickle
    tried to construct or call something else; nothing of it ran).
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return RestrictedUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise CrossVISError(p, "file not found") from None
    except _Refused as e:
        raise CrossVISError(
            p, f"refused to unpickle '{e.qualname}': only numpy arrays, dicts, lists, strings and numbers"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CrossVISError(p, f"not a readable pickle ({type(e).__name__}: {str(e)[:120]})") from None
    except OSError as e:
        raise CrossVISError(p, f"cannot read file: {e.strerror or e}") from None
