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


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when the process gets SIGTERM or SIGHUP, so that it unwinds exactly as on
    Ctrl-C: atomic writers remove their temporary files and earlier outputs stay intact."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signum)


def brief(value: object) -> str:
    """A short repr of a value from a user's file for an error message: never huge, never deep (an
    alias-expanded YAML value or a deeply nested JSON one is cut, not printed whole)."""
    import reprlib

    from crossvis.limits import MAX_SHOWN_CHARS

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxtuple = 2, 4, 4, 4
    r.maxstring = r.maxother = r.maxlong = MAX_SHOWN_CHARS
    try:
        text = r.repr(value)
    except Exception:  # noqa: BLE001 - a message helper never fails
        text = f"<{type(value).__name__}>"
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."
