"""The one error type users see.

Any :class:`CrossVISError` raised in the library is printed by the CLI as one line
``crossvis: error: <where>: <what>`` and exits with code 2.
"""

from __future__ import annotations

import os


class CrossVISError(Exception):
    """A user-facing error: ``where`` is a file, record or argument; ``what`` says what is wrong."""

    def __init__(self, where: str | os.PathLike, what: str) -> None:
        self.where = str(where)
        self.what = what
        super().__init__(f"{self.where}: {what}")
