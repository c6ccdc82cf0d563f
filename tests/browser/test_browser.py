"""The app in a real browser (headless Chromium): upload, watch the overlay play, read the tracks table, see an
error message, and save the screenshot that docs/app.md and the README show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = (
    pytest.mark.slow
)  # a browser and a server: `make test-browser` runs them, plain `-m "not slow"` not

DOCS = Path(__file__).resolve().parents[2] / "docs"
RESULT_TIMEOUT_MS = 120_000

# Play the overlay to its end; report what the element knows (duration, size, error) and how many frames
# requestVideoFrameCallback saw presented.
PLAY_TO_END = """async (v) => {
  v.muted = true; v.loop = false;
  if (v.readyState < 1) await new Promise(r => v.addEventListener('loadedmetadata', r, {once: true}));
  let presented = 0;
  const count = (now, md) => { presented = Math.max(presented, md.presentedFrames); v.requestVideoFrameCallback(count); };
  if ('requestVideoFrameCallback' in v) v.requestVideoFrameCallback(count);
  v.currentTime = 0;
  const ended = new Promise(r => v.addEventListener('ended', r, {once: true}));
  await v.play();
  await Promise.race([ended, new Promise(r => setTimeout(r, 30000))]);
  return {duration: v.duration, ended: v.ended, currentTime: v.currentTime, error: v.error && v.error.code,
          width: v.videoWidth, height: v.videoHeight, presented};
}"""

# Gradio's table renders only the rows in view: scroll through it and collect every row by its index.
TABLE_ROWS = """async (root) => {
  const viewport = root.querySelector('.virtual-table-viewport');
  const rows = {};
  for (let k = 0; k < 500; k++) {
    for (const row of root.querySelectorAll('.virtual-body [role=row][aria-rowindex]')) {
      rows[row.getAttribute('aria-rowindex')] = [...row.querySelectorAll('[role=gridcell], td')].map(c => c.innerText.trim());
    }
    const before = viewport.scrollTop;
    viewport.scrollTop += Math.max(40, viewport.clientHeight / 2);
    await new Promise(r => setTimeout(r, 80));
    if (viewport.scrollTop === before) break;
  }
  return rows;
}"""


def _wait_for_result(page) -> None:
    page.wait_for_selector("#downloads a[download='tracks.json']", timeout=RESULT_TIMEOUT_MS)
    page.wait_for_selector("#overlay video[src]", timeout=RESULT_TIMEOUT_MS)


def _tracks_json(page) -> dict:
    href = page.locator("#downloads a[download='tracks.json']").first.get_attribute("href")
    return json.loads(page.request.get(href).text())


def test_upload_plays_overlay_and_lists_tracks(page, clip_mp4):
    path, n_frames = clip_mp4
    page.locator("#upload input[type=file]").set_input_files(str(path))
    page.wait_for_selector("#upload :text('clip.mp4')")
    page.click("#run")
    _wait_for_result(page)
    tracks = _tracks_json(page)
    assert tracks["num_frames"] == n_frames

    video = page.eval_on_selector("#overlay video", PLAY_TO_END)
    assert video["error"] is None and (video["width"], video["height"]) == (160, 120)
    assert video["ended"], video  # it played through
    assert round(video["duration"] * tracks["fps"]) == n_frames  # every frame, at the clip's rate
    assert 0 < video["presented"] <= n_frames

    rows = page.eval_on_selector("#tracks", TABLE_ROWS)
    body = [rows[k] for k in sorted(rows, key=int)]  # aria-rowindex 2, 3, ... (1 is the header)
    assert sorted(map(int, rows)) == list(range(2, 2 + len(rows)))
    assert len(body) == len(tracks["tracks"]) > 0
    for row, t in zip(body, tracks["tracks"]):
        present = [i for i, s in enumerate(t["segmentations"]) if s is not None]
        assert row[0] == str(t["track_id"]) and row[1] == t["class_name"]
        assert [int(x) for x in row[3:6]] == [present[0], present[-1], len(present)]


def test_bad_upload_shows_the_message(page, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"definitely not a video")
    page.locator("#upload input[type=file]").set_input_files(str(bad))
    page.wait_for_selector("#upload :text('broken.mp4')")
    page.click("#run")
    toast = page.wait_for_selector("[data-testid='toast-body']", timeout=60_000)
    text = toast.inner_text()
    assert "broken.mp4: cannot open as a video" in text
    assert "Traceback" not in text and "/tmp/" not in text


def test_sample_clip_and_screenshot(page):
    page.click("#sample")
    _wait_for_result(page)
    page.wait_for_selector("#summary :text('identity switches')", timeout=RESULT_TIMEOUT_MS)
    assert "AP" in page.locator("#metrics").inner_text()
    page.eval_on_selector("#overlay video", "v => { v.pause(); v.currentTime = v.duration / 2; }")
    page.wait_for_timeout(500)
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "app_screenshot.png"), full_page=True)
    assert (DOCS / "app_screenshot.png").stat().st_size > 10_000
