"""End to end in a real browser: `satsang review`'s server on loopback, Debian's chromium driven by playwright.

Opens the app, signs in, writes a note, leaves the note box with Esc, accepts the
item on screen with the keyboard (A), and checks that the decision and its note
are in the workspace's decisions database. Screenshots go
to the test's tmp dir; the last is also copied to /tmp/review-screenshot.png.

Needs /usr/bin/chromium (apt-get install chromium) and the playwright package
(pip install playwright; its own browser download is not needed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from critic.offline import OfflineCritic
from critic.stage import run_critique
from curation.dedup import run_dedup
from curation.responses import ResponseStore
from curation.workspace import init_workspace
from dashboards.launch import free_port, launch
from dashboards.queue import CHANGED, UNREVIEWED, QueueFilter, apply_filter, build_queue

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DATA = Path(__file__).parent / "data"
SHARED_SCREENSHOT = Path("/tmp/review-screenshot.png")

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium", allow_module_level=True)


def wait_until_serving(port: int, process: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the review server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as reply:
                if reply.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the review server did not answer within {timeout_s:g}s:\n{log.read_text()}")


def wait_for(condition, timeout_s: float = 15.0, step_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step_s)
    return condition()


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

    env = {name: value for name, value in os.environ.items() if name != "SATSANG_DB_URL"}  # SQLite in the workspace
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as log_file:
        server = launch(workspace.root, port=port, address="127.0.0.1", wait=False, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(port, server, log)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
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
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()

    assert len(rows) == 1, rows
    assert rows[0]["item_id"] == first["item_id"]
    assert rows[0]["content_hash"] == first["content_hash"]
    assert (rows[0]["decision"], rows[0]["reviewer"], rows[0]["note"]) == ("accept", "ana", "points back to the seer")
    assert (tmp_path / "before.png").stat().st_size > 10_000 and SHARED_SCREENSHOT.exists()
