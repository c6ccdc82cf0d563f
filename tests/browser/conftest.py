"""Fixtures for the real-browser tests (`make test-browser`): the app served on 127.0.0.1, headless Chromium
through Playwright, a short synthetic clip. Without Playwright or Chromium these tests are skipped, unless
CROSSVIS_REQUIRE_BROWSER=1 (set by `make test-browser`), where that is an error."""

from __future__ import annotations

import os
import shutil
import socket
from fractions import Fraction
from pathlib import Path

import pytest

from crossvis.data.synthetic import SynthParams, generate
from crossvis.data.ytvis import YTVISDataset
from crossvis.engine.video_io import VideoWriter

CHROMIUM = os.environ.get("CROSSVIS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _unavailable(what: str) -> None:
    if os.environ.get("CROSSVIS_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"browser tests need {what} (`make test-browser` installs it)")
    pytest.skip(f"needs {what}", allow_module_level=True)


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        _unavailable(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root without it
        b = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def app_url():
    from crossvis.app import launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = launch("synthetic-tiny", port=port, device="cpu", block=False, quiet=True)
    yield demo.local_url
    demo.close()


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(90_000)  # a loaded shared CPU: uploads and clicks can take a while
    page.goto(app_url)
    page.wait_for_selector("#run")
    yield page
    page.close()


@pytest.fixture(scope="session")
def clip_mp4(tmp_path_factory) -> tuple[Path, int]:
    """A short synthetic clip as an H.264 mp4 at 6 fps, and its frame count."""
    root = tmp_path_factory.mktemp("browserclip")
    generate(root / "clip", SynthParams(videos=1, frames=10, seed=11, height=120, width=160))
    ds = YTVISDataset(root / "clip" / "annotations.json", root / "clip" / "JPEGImages")
    video = ds.videos[0]
    with VideoWriter(root / "clip.mp4", Fraction(6)) as w:
        for f in range(video.length):
            w.write(ds.load_image(video, f))
    return root / "clip.mp4", video.length
