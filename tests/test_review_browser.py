"""End to end in a real browser: `satsang review`'s server on loopback, Debian's chromium driven by playwright.

Opens the app, signs in, writes a note, leaves the note box with Esc, accepts the
item on screen with the keyboard (A), and checks that the decision and its note
are in the workspace's decisions database. Screenshots go
to the test's tmp dir; the last is also copied to /tmp/review-screenshot.png.

Needs /usr/bin/chromium (apt-get install chromium) and the playwright package
(pip install playwright; its own browser download is not needed).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from browser import CHROMIUM, review_server_and_browser, wait_for
from critic.offline import OfflineCritic
from critic.stage import run_critique
from curation.dedup import run_dedup
from curation.responses import ResponseStore
from curation.workspace import init_workspace
from dashboards.queue import CHANGED, UNREVIEWED, QueueFilter, apply_filter, build_queue

DATA = Path(__file__).parent / "data"
SHARED_SCREENSHOT = Path("/tmp/review-screenshot.png")

pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium", allow_module_level=True)


def test_review_an_item_with_the_keyboard_in_chromium(tmp_path):
    workspace = init_workspace(tmp_path / "ws")
    workspace.ingest([DATA / "talks-19-24.txt"], kind="dialogue", title="Talks with Sri Ramana Maharshi")
    workspace.ingest([DATA / "dedup-talks-272-274.txt"], kind="dialogue", title="Talks (1955)")
    workspace.ingest([DATA / "dedup-talks-vol2-272-274.txt"], kind="dialogue", title="Talks (2006)")
    run_dedup(workspace, progress=False)
    run_critique(workspace, OfflineCritic(), progress=False)
    # The item the app shows first: the head of the default queue (what still needs a human).
    queue = apply_filter(build_queue(workspace.items(), workspace.sources()), QueueFilter(decision_states=(UNREVIEWED, CHANGED)))
    first = queue.row(0, named=True)

    with review_server_and_browser(workspace.root, tmp_path) as (browser, port):
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
        page.get_by_text("Suggestions").wait_for(timeout=30_000)
        assert page.get_by_text(first["question"][:40]).first.is_visible()

        name = page.get_by_role("textbox", name="Your name")
        name.fill("ana")
        name.press("Enter")  # commits the name; the Accept button comes alive
        page.get_by_role("button", name="Accept").and_(page.locator(":enabled")).wait_for(timeout=15_000)
        note = page.get_by_placeholder("why, in a few words")
        note.fill("points back to the seer")
        note.press("Escape")  # Esc leaves the text box, so the next key is a shortcut, not a letter
        assert page.evaluate("document.activeElement.tagName") == "BODY"
        page.screenshot(path=str(tmp_path / "before.png"), full_page=False)

        page.keyboard.press("a")

        def stored() -> list[dict]:
            store = ResponseStore.open(workspace.root)
            try:
                return store.state().to_dicts()
            finally:
                store.close()

        rows = wait_for(stored)
        page.get_by_text("Accepted. U undoes it.").wait_for(timeout=15_000)
        page.wait_for_timeout(500)  # let the next item settle before the picture
        after = tmp_path / "after.png"
        page.screenshot(path=str(after), full_page=False)
        shutil.copyfile(after, SHARED_SCREENSHOT)

    assert len(rows) == 1, rows
    assert rows[0]["item_id"] == first["item_id"]
    assert rows[0]["content_hash"] == first["content_hash"]
    assert (rows[0]["decision"], rows[0]["reviewer"], rows[0]["note"]) == ("accept", "ana", "points back to the seer")
    assert (tmp_path / "before.png").stat().st_size > 10_000 and SHARED_SCREENSHOT.exists()
