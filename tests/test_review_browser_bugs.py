"""The review app in headless Chromium, used the way a curator works for hours (issue 13, bugs 1-11).

Each test starts `satsang review`'s server on loopback with its own SQLite decisions
database, drives Debian's chromium with playwright at 1400x900, and asserts what the
database holds afterwards. The workspace (module-wide) has talks 19-24 and talks
272-274 in both editions (exact copies share an item id across sources: 69 rows, 47
items), and the passages of Nan Yar?, deduped and judged by the offline critic.

Needs /usr/bin/chromium and the playwright package, like tests/test_review_browser.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from critic.offline import OfflineCritic
from critic.stage import run_critique
from curation.dedup import run_dedup
from curation.responses import ResponseStore
from curation.review import critic_agreement
from curation.workspace import Workspace
from dashboards.launch import free_port, launch, review_command
from dashboards.queue import UNREVIEWED, CHANGED, QueueFilter, apply_filter, build_queue, progress_by_source

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
from browser import CHROMIUM, CHROMIUM_ARGS, wait_until_serving  # noqa: E402  (tests/browser.py: what the browser tests share)
from browser import wait_for as wait_a_while  # noqa: E402

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium", allow_module_level=True)

DATA = Path(__file__).parent / "data"
VIEWPORT = {"width": 1400, "height": 900}

# Every toast the page shows, kept in window.__toasts: they vanish after a few seconds.
RECORD_TOASTS = """
window.__toasts = [];
new MutationObserver(() => {
  for (const toast of document.querySelectorAll('[data-testid="stToast"]')) {
    const text = toast.innerText.trim();
    if (text && !toast.__seen) { toast.__seen = true; window.__toasts.push(text); }
  }
}).observe(document, {childList: true, subtree: true});
"""


LONG_ANSWER = " ".join(
    f"The {n}th reflection: what is seen changes, the seer does not; turn the attention to the one who sees." for n in range(1, 45)
)


@pytest.fixture(scope="module")
def workspace(new_workspace, tmp_path_factory) -> Workspace:
    ws = new_workspace("browser-bugs")
    long_talk = tmp_path_factory.mktemp("long") / "long-answer.txt"
    long_talk.write_text(f"1st January, 1936\nTalk 300.\nD.: What is the way to peace?\nM.: {LONG_ANSWER}\n", encoding="utf-8")
    ws.ingest([DATA / "talks-19-24.txt"], kind="dialogue", title="Talks 19-24")
    ws.ingest([DATA / "dedup-talks-272-274.txt"], kind="dialogue", title="Talks (1955)")
    ws.ingest([DATA / "dedup-talks-vol2-272-274.txt"], kind="dialogue", title="Talks (2006)")
    ws.ingest([DATA / "nan-yar-excerpt.txt"], kind="prose", title="Nan Yar")
    ws.ingest([long_talk], kind="dialogue", title="Long answers")
    run_dedup(ws, progress=False)
    run_critique(ws, OfflineCritic(), progress=False)
    return ws


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Review:
    """One server on its own decisions database, and a way to open pages on it."""

    workspace: Workspace
    db_url: str
    port: int
    browser: object

    def open(self, reviewer: str | None = None, **query: str):
        context = self.browser.new_context(viewport=VIEWPORT)
        context.add_init_script(RECORD_TOASTS)
        page = context.new_page()
        params = dict(query, **({"reviewer": reviewer} if reviewer else {}))
        page.goto(f"http://127.0.0.1:{self.port}/?{urllib.parse.urlencode(params)}", wait_until="domcontentloaded")
        page.locator(".sat-card, [data-testid=stAlert]").first.wait_for(timeout=30_000)
        if reviewer:
            page.get_by_role("button", name="Accept").and_(page.locator(":enabled")).wait_for(timeout=15_000)
        return page

    def responses(self) -> list[dict]:
        with ResponseStore.open(self.workspace.root, url=self.db_url) as store:
            return store.responses().to_dicts()

    def queue(self) -> pl.DataFrame:
        with ResponseStore.open(self.workspace.root, url=self.db_url) as store:
            return build_queue(self.workspace.items(), self.workspace.sources(), store.state())


@pytest.fixture
def review(workspace, browser, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'reviews.db'}"
    env = {name: value for name, value in os.environ.items() if name != "SATSANG_DB_URL"}
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as log_file:
        server = launch(workspace.root, db_url=db_url, port=port, wait=False, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(port, server, log)
        yield Review(workspace, db_url, port, browser)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def wait_for(condition, timeout_s: float = 15.0):
    """tests/browser.py's wait_for, with this module's 15 s."""
    return wait_a_while(condition, timeout_s)


def settle(page, quiet_ms: int = 700) -> None:
    """Wait until the app has finished its reruns (no element marked stale, the running indicator gone)."""
    page.wait_for_timeout(quiet_ms)
    page.wait_for_function(
        """() => !document.querySelector('[data-stale="true"]')
                 && !document.querySelector('[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]')""",
        timeout=20_000,
    )


def header_counts(page) -> tuple[int, int, int, int]:
    """(position, queue length, reviewed, items) from "Item i of N in this queue · k of M reviewed"."""
    text = page.locator(".sat-position").first.inner_text()
    found = re.search(r"Item ([\d,]+) of ([\d,]+).*?([\d,]+) of ([\d,]+) (?:items )?reviewed", text, re.S)
    assert found, text
    return tuple(int(group.replace(",", "")) for group in found.groups())


def shown_item(page) -> tuple[str, str]:
    """The item id and content hash of the item card on screen."""
    card = page.locator(".sat-card").first
    return card.get_attribute("data-item-id"), card.get_attribute("data-content-hash")


def blur(page) -> None:
    """Leave whatever has the focus (as a reviewer clicking on the page's background would)."""
    page.evaluate("document.activeElement && document.activeElement.blur()")


def toasts(page) -> list[str]:
    return page.evaluate("window.__toasts")


def focused(page) -> dict:
    return page.evaluate(
        "({tag: document.activeElement.tagName, label: document.activeElement.getAttribute('aria-label'),"
        " placeholder: document.activeElement.getAttribute('placeholder')})"
    )


def type_filter(page, label: str, value: str) -> None:
    box = page.get_by_role("textbox", name=label)
    box.fill(value)
    box.press("Enter")
    settle(page)


def pick(page, label: str, option: str) -> None:
    """Choose an option of a multiselect in the sidebar."""
    settle(page)
    for attempt in range(3):  # the list is redrawn if a rerun lands while it is open
        page.get_by_role("combobox", name=label).click()
        try:
            page.get_by_role("option", name=option, exact=True).first.click(timeout=5_000)
            break
        except sync_api.TimeoutError:
            page.keyboard.press("Escape")
            settle(page)
    page.keyboard.press("Escape")
    settle(page)


def live_by_item(rows: list[dict]) -> dict[tuple[str, str], int]:
    """How many live (not undone, not undo) responses each (item, reviewer) has."""
    undone = {row["undoes"] for row in rows if row["undoes"] is not None}
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        if row["decision"] != "undo" and row["id"] not in undone:
            counts[(row["item_id"], row["reviewer"])] = counts.get((row["item_id"], row["reviewer"]), 0) + 1
    return counts


# ---- 1: every keypress decides the item shown, never one twice -------------------------------------


def test_fast_keypresses_never_decide_one_item_twice(review):
    page = review.open("ana")
    blur(page)
    settle(page)
    queue = review.queue()
    hashes = dict(zip(queue["item_id"], queue["content_hash"]))
    for _ in range(5):
        page.keyboard.press("a")
        page.wait_for_timeout(100)
    settle(page, 1500)
    rows = review.responses()
    assert rows, "no keypress was recorded"
    duplicates = {key: n for key, n in live_by_item(rows).items() if n > 1}
    assert not duplicates, f"decided more than once: {duplicates} ({len(rows)} responses)"
    assert len({row["item_id"] for row in rows}) == len(rows)
    assert all(row["content_hash"] == hashes[row["item_id"]] for row in rows)  # the text that was on screen
    if len(rows) < 5:  # the extra presses were refused, and said so: by the server (a toast) or the page (a notice)
        refused = [text for text in toasts(page) if "not recorded" in text.lower()]
        assert len(refused) + page.evaluate("window.__satsangRefusedKeys || 0") >= 1, toasts(page)
    # and the app is still on a fresh item, ready for the next key
    page.keyboard.press("a")
    assert wait_for(lambda: len(review.responses()) == len(rows) + 1)
    assert not {key: n for key, n in live_by_item(review.responses()).items() if n > 1}


# ---- 2: Reset filters resets the widgets too -------------------------------------------------------


def test_reset_filters_resets_every_widget(review, workspace):
    page = review.open("ana")
    flagged = workspace.items().filter(pl.col("critic_flags").list.len() > 0)
    flag = flagged["critic_flags"][0][0]
    pick(page, "Critic flags (any of)", flag)
    type_filter(page, "Text contains", "the")
    assert header_counts(page)[1] <= flagged.height
    page.get_by_role("button", name="Reset filters").click()
    settle(page)
    assert page.get_by_role("textbox", name="Text contains").input_value() == ""
    chips = page.locator('[data-testid="stMultiSelect"]').filter(has=page.get_by_role("combobox", name="Critic flags (any of)"))
    assert flag not in chips.inner_text()
    pick(page, "Kind", "pair")  # the stale filters must not come back with the next change
    queue = apply_filter(review.queue(), QueueFilter(kinds=("pair",), decision_states=(UNREVIEWED, CHANGED)))
    assert header_counts(page)[1] == queue["item_id"].n_unique()
    shown = shown_item(page)
    page.keyboard.press("a")
    rows = wait_for(review.responses)
    assert [(row["item_id"], row["content_hash"]) for row in rows] == [shown]
    assert shown[0] in set(queue["item_id"])


# ---- 3: Enter leaves a text box, so the next key is a shortcut --------------------------------------


def test_enter_in_a_text_box_leaves_it(review):
    page = review.open()
    name = page.get_by_role("textbox", name="Your name")
    name.fill("zoe")
    name.press("Enter")
    page.get_by_role("button", name="Accept").and_(page.locator(":enabled")).wait_for(timeout=15_000)
    settle(page)
    assert focused(page)["tag"] == "BODY"
    first = review.queue().filter(pl.col("decision_state") == UNREVIEWED)["item_id"][0]
    page.keyboard.press("a")
    rows = wait_for(review.responses)
    assert [(row["item_id"], row["reviewer"], row["decision"]) for row in rows] == [(first, "zoe", "accept")]
    settle(page)
    assert page.get_by_role("textbox", name="Your name").input_value() == "zoe"

    note = page.get_by_placeholder("why, in a few words")
    note.fill("points back to the seer")
    note.press("Enter")
    settle(page)
    page.keyboard.press("a")
    rows = wait_for(lambda: review.responses()[1:])
    assert [(row["decision"], row["note"]) for row in rows] == [("accept", "points back to the seer")]


# ---- 4: a bulk action is undone with U ------------------------------------------------------------


def test_undo_after_a_bulk_accept_undoes_the_whole_bulk(review):
    page = review.open("ana")
    pick(page, "Source", "Talks 19-24")
    page.get_by_role("radio", name="Bulk actions").click()
    settle(page)
    page.get_by_text("Accept every item in the selection").click()
    settle(page)
    page.get_by_text(re.compile(r"Yes, accept these \d+ items")).click()
    settle(page)
    page.get_by_role("button", name=re.compile(r"Apply to \d+ items")).click()
    bulk = wait_for(review.responses)
    assert len(bulk) > 3 and {row["decision"] for row in bulk} == {"accept"}
    settle(page)
    page.get_by_role("radio", name="Review").click()
    settle(page)
    blur(page)
    page.keyboard.press("u")
    rows = wait_for(lambda: [row for row in review.responses() if row["decision"] == "undo"])
    assert sorted(row["undoes"] for row in rows) == sorted(row["id"] for row in bulk)
    with ResponseStore.open(review.workspace.root, url=review.db_url) as store:
        assert store.state().height == 0


# ---- 5: keyboard only: edit and the note for "other" ----------------------------------------------


def test_edit_and_other_reason_without_the_mouse(review):
    page = review.open("ana")
    blur(page)
    settle(page)
    item_id, content_hash = shown_item(page)
    page.keyboard.press("e")
    page.wait_for_function("document.activeElement && document.activeElement.getAttribute('aria-label') === 'Answer'",
                           timeout=10_000)
    page.keyboard.press("End")
    page.keyboard.type(" Be still.")
    page.keyboard.press("Control+Enter")  # once
    rows = wait_for(review.responses)
    assert [(row["item_id"], row["content_hash"], row["decision"]) for row in rows] == [(item_id, content_hash, "edit")]
    assert rows[0]["edited_answer"].endswith(" Be still.") and rows[0]["edited_question"] is None
    settle(page)

    item_id, _ = shown_item(page)
    page.keyboard.press("6")  # reject, reason "other": the note box takes the focus
    page.wait_for_function("document.activeElement && document.activeElement.getAttribute('placeholder') === 'why, in a few words'",
                           timeout=10_000)
    page.keyboard.type("a lecture, not a dialogue")
    page.keyboard.press("Enter")
    rows = wait_for(lambda: review.responses()[1:])
    assert [(row["item_id"], row["decision"], row["reason"], row["note"]) for row in rows] == [
        (item_id, "reject", "other", "a lecture, not a dialogue")
    ]


# ---- 6: counts are of items, everywhere -------------------------------------------------------------


def test_counts_are_distinct_items(review, workspace):
    page = review.open("ana")
    items = workspace.items()
    n_items = items["item_id"].n_unique()
    assert items.height > n_items  # the two editions share exact copies
    position, queue_length, reviewed, total = header_counts(page)
    assert (position, queue_length, reviewed, total) == (1, n_items, 0, n_items)
    blur(page)
    page.keyboard.press("a")
    rows = wait_for(review.responses)
    settle(page)
    assert header_counts(page) == (1, n_items - 1, 1, n_items)
    assert len(rows) == 1
    per_source = progress_by_source(review.queue())
    expected = items.group_by("source_id").agg(pl.col("item_id").n_unique()).sort("source_id")
    assert sorted(per_source["items"].to_list()) == sorted(expected["item_id"].to_list())


# ---- 7: passages: no critic promise, and editable ---------------------------------------------------


def test_passages_are_editable_and_not_awaiting_the_critic(review):
    page = review.open("ana")
    pick(page, "Kind", "passage")
    assert shown_item(page)[0] in set(review.workspace.items().filter(pl.col("kind") == "passage")["item_id"])
    # the concept score is "not scored yet" (this workspace was not scored); the critic never scores passages
    captions = page.locator('[data-testid="stCaptionContainer"]')
    assert captions.filter(has_text="not scored yet").count() == 1
    assert page.get_by_text("the critic reads question-and-answer pairs only").count() == 1
    item_id, content_hash = shown_item(page)
    blur(page)
    page.keyboard.press("e")
    page.wait_for_function("document.activeElement && document.activeElement.getAttribute('aria-label') === 'Passage'",
                           timeout=10_000)
    page.keyboard.press("Control+End")
    page.keyboard.type(" (edited)")
    page.keyboard.press("Control+Enter")
    rows = wait_for(review.responses)
    assert [(row["item_id"], row["content_hash"], row["decision"]) for row in rows] == [(item_id, content_hash, "edit")]
    assert rows[0]["edited_answer"].endswith(" (edited)") and rows[0]["edited_question"] is None


# ---- 8: layout at 1400x900 -------------------------------------------------------------------------


def test_layout_keeps_buttons_and_provenance_in_view(review, workspace, tmp_path):
    page = review.open("ana")
    longest = workspace.items().filter(pl.col("kind") == "pair").sort(pl.col("answer").str.len_chars(), descending=True).row(0, named=True)
    assert len(longest["answer"]) > 3000
    type_filter(page, "Text contains", longest["answer"][:60])
    assert shown_item(page)[0] == longest["item_id"]
    accept = page.get_by_role("button", name="Accept").bounding_box()
    assert accept and accept["y"] + accept["height"] <= VIEWPORT["height"], accept
    provenance = page.get_by_text("Provenance").first.bounding_box()
    assert provenance and provenance["y"] < VIEWPORT["height"], provenance
    page.screenshot(path=str(tmp_path / "long.png"))
    blur(page)
    page.keyboard.press("a")
    rows = wait_for(review.responses)
    assert [row["item_id"] for row in rows] == [longest["item_id"]]
    type_filter(page, "Text contains", "")
    blur(page)
    page.keyboard.press("a")  # a toast while Prev / Next are on screen
    toast = page.locator('[data-testid="stToast"]').first
    toast.wait_for(timeout=15_000)
    box = toast.bounding_box()
    for name in ("Prev", "Next"):
        button = page.get_by_role("button", name=name).first.bounding_box()
        overlap = not (box["x"] > button["x"] + button["width"] or button["x"] > box["x"] + box["width"]
                       or box["y"] > button["y"] + button["height"] or button["y"] > box["y"] + box["height"])
        assert not overlap, (name, box, button)
    assert wait_for(lambda: len(review.responses()) == 2)


# ---- 9: histograms without unreviewed items; kappa without duplicate rejections ---------------------


def test_progress_leaves_out_unreviewed_and_duplicate_rejections(review):
    page = review.open("ana")
    page.get_by_role("radio", name="Bulk actions").click()
    settle(page)
    page.get_by_text(re.compile(r"Yes, reject these \d+ items")).click()  # the default action: reject duplicates
    settle(page)
    page.get_by_role("button", name=re.compile(r"Apply to \d+ items")).click()
    rows = wait_for(review.responses)
    assert rows and {row["reason"] for row in rows} == {"duplicate"}
    settle(page)
    page.get_by_role("radio", name="Progress").click()
    settle(page)
    assert not page.get_by_role("switch", name="Include items not reviewed yet").is_checked()
    # every decision is a duplicate rejection: nothing for the critic's kappa to count
    assert critic_agreement(review.queue()).n_items == 0
    assert page.get_by_text("No item has both a critic score and a curator decision yet").count() == 1


# ---- 10: talk range typed, and no flood of reruns from held keys ------------------------------------


def test_talk_range_is_typed_and_held_keys_do_not_flood(review):
    page = review.open("ana")
    sent: list[str] = []
    page.on("websocket", lambda socket: socket.on("framesent", lambda payload: sent.append(payload)))
    page.reload(wait_until="domcontentloaded")
    page.locator(".sat-card").first.wait_for(timeout=30_000)
    settle(page)
    talks = page.get_by_role("textbox", name="Talks")
    talks.fill("20-21")
    talks.press("Enter")
    settle(page)
    queue = apply_filter(review.queue(), QueueFilter(talk_range=(20, 21), decision_states=(UNREVIEWED, CHANGED)))
    assert header_counts(page)[1] == queue["item_id"].n_unique() > 0
    talks.focus()
    before = len(sent)
    for _ in range(30):  # a held arrow key
        page.keyboard.press("ArrowUp")
        page.keyboard.press("ArrowRight")
    page.wait_for_timeout(1500)
    assert len(sent) - before <= 2, f"{len(sent) - before} messages to the server while an arrow key was held"
    page.keyboard.press("Escape")
    page.keyboard.press("a")
    rows = wait_for(review.responses)
    assert [row["item_id"] for row in rows] == [queue["item_id"][0]]


# ---- 11: loopback by default; one reviewer whatever the case ----------------------------------------


def test_reviewer_names_are_normalised_and_the_server_listens_on_loopback(review):
    from curation.review import normalise_reviewer_name

    assert normalise_reviewer_name("  Asha   Rao ") == normalise_reviewer_name("asha rao") == "asha rao"
    command = review_command("ws")
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    from typer.testing import CliRunner

    from satsang.cli import app

    help_text = CliRunner().invoke(app, ["review", "--help"], env={"COLUMNS": "200"}).output
    assert "--address" in help_text and "[default: 127.0.0.1]" in help_text
    page = review.open("Asha")
    blur(page)
    page.keyboard.press("a")
    wait_for(review.responses)
    page.context.close()
    page = review.open(" asha ")
    blur(page)
    page.keyboard.press("a")
    rows = wait_for(lambda: review.responses()[1:] and review.responses())
    assert [row["reviewer"] for row in rows] == ["asha", "asha"]
    assert len({row["item_id"] for row in rows}) == 2
