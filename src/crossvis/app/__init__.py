"""A web page for crossvis (``crossvis app``): upload a clip, watch masks and ids, download the results.

Needs the optional extra ``crossvis[app]`` (Gradio). :func:`build_app` returns the ``gradio.Blocks`` (to mount or
embed it), :func:`launch` serves it. The processing itself (:mod:`crossvis.app.pipeline`,
:mod:`crossvis.app.uploads`) is plain Python and does not need Gradio.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from crossvis.app.uploads import AppLimits
from crossvis.errors import CrossVISError

if TYPE_CHECKING:
    import gradio

INSTALL_HINT = "needs Gradio: pip install 'crossvis[app]'"


def require_gradio() -> Any:
    """The ``gradio`` module, or the one-line error that says what to install."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise CrossVISError("crossvis app", INSTALL_HINT) from None
    return gradio


def build_app(
    weights: str = "synthetic-tiny",
    *,
    device: str | None = None,
    limits: AppLimits | None = None,
    keep_runs: int = 4,
) -> gradio.Blocks:
    """The page as a ``gradio.Blocks``; see :func:`crossvis.app.ui.build_app`."""
    require_gradio()
    from crossvis.app.ui import build_app as _build

    return _build(weights, device=device, limits=limits or AppLimits(), keep_runs=keep_runs)


def launch(
    weights: str = "synthetic-tiny",
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    device: str | None = None,
    limits: AppLimits | None = None,
    block: bool = True,
    quiet: bool = False,
) -> gradio.Blocks:
    """Serve the page on ``host:port`` (127.0.0.1 unless told otherwise); see :func:`crossvis.app.ui.launch`."""
    require_gradio()
    from crossvis.app.ui import launch as _launch

    return _launch(
        weights, host=host, port=port, device=device, limits=limits or AppLimits(), block=block, quiet=quiet
    )


__all__ = ["INSTALL_HINT", "AppLimits", "build_app", "launch", "require_gradio"]
