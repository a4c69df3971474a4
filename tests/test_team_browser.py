"""Blind double review end to end: two reviewers in two browser contexts on one `satsang review` server.

The workspace has a reviewer list (ana, bo) and a plan of one reviewer per item with a quarter
of the items at two. Checks, in Debian's chromium driven by playwright, against reviews.db:
a name not on the list is refused; the two reviewers get different items first, each one
an item assigned to them; neither sees the other's decision on a shared item before giving
theirs; every decision is stored on the item that was on screen; a decision given after the
reviewer was shown the other's (bo opens a shared item from Search, sees the history, and
changes his mind) is stored but not marked blind; and kappa is computed on blind overlaps only.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from browser import CHROMIUM, review_server_and_browser, wait_for
from critic.offline import OfflineCritic
from critic.stage import run_critique
from curation.responses import ResponseStore
from curation.review import blind_reviewer_agreement, cohen_kappa, keep_label, reviewer_agreement, reviewer_state
from curation.team import TeamSettings, add_reviewer, assignment, decisions_per_item, write_team_settings
from curation.workspace import init_workspace
from dashboards.queue import CHANGED, UNREVIEWED, QueueFilter, apply_filter, base_queue, queue_view, reviewer_view

DATA = Path(__file__).parent / "data"
PLAN = TeamSettings(reviewers_per_item=1, overlap_share=0.25, overlap_reviewers=2, blind=True)
KEYS = {"accept": "a", "reject": "2"}  # 2: reject as "not contemplative"

pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium", allow_module_level=True)


def first_words(text: str, n: int = 8) -> str:
    return " ".join(text.split()[:n])


def expected_order(items: pl.DataFrame, sources: pl.DataFrame, reviewer: str) -> list[dict]:
    """The reviewer's queue before anyone has decided, as the library orders it (unreviewed first)."""
    plan = assignment(items["item_id"], ["ana", "bo"], PLAN)
    own = queue_view(base_queue(items, sources), reviewer_state(None, reviewer))
    queue = reviewer_view(own, reviewer, plan, decisions_per_item(None)).ordered()
    queue = queue.join(plan.select("item_id", "assignees"), on="item_id", how="left")
    return apply_filter(queue, QueueFilter(decision_states=(UNREVIEWED, CHANGED))).unique("item_id", keep="first", maintain_order=True).to_dicts()


def settle(page, row: dict) -> None:
    """Wait until the card shows this item and the app has finished its run (so its buttons are this item's)."""
    page.locator(".sat-card").filter(has_text=first_words(row["question"])).first.wait_for(timeout=30_000)
    wait_for(lambda: page.locator('[data-testid="stStatusWidget"]').count() == 0 or
             not page.locator('[data-testid="stStatusWidget"]').first.is_visible(), timeout_s=20)
    page.wait_for_timeout(400)


def responses(root: Path) -> pl.DataFrame:
    with ResponseStore.open(root) as store:
        return store.responses()


def test_blind_double_review_with_two_reviewers_in_two_browsers(tmp_path):
    workspace = init_workspace(tmp_path / "ws")
    workspace.ingest([DATA / "talks-19-24.txt"], kind="dialogue", title="Talks with Sri Ramana Maharshi")
    workspace.ingest([DATA / "talks-excerpt.txt"], kind="dialogue", title="Talks (excerpt)")
    run_critique(workspace, OfflineCritic(), progress=False)
    with ResponseStore.open(workspace.root) as store:
        add_reviewer(store, "Ana")
        add_reviewer(store, "bo")
    write_team_settings(workspace.root, PLAN)

    items, sources = workspace.items(), workspace.sources()
    order = {name: expected_order(items, sources, name) for name in ("ana", "bo")}
    # Each decides the head of their queue, long enough to share three items with the other.
    k = next(k for k in range(3, 40) if len({r["item_id"] for r in order["ana"][:k]} & {r["item_id"] for r in order["bo"][:k]}) >= 3)
    todo = {name: order[name][:k] for name in order}
    shared = [r["item_id"] for r in todo["bo"] if r["item_id"] in {x["item_id"] for x in todo["ana"]}]
    ana_label = {r["item_id"]: ("accept" if i % 2 == 0 else "reject") for i, r in enumerate(todo["ana"])}
    flip = {"accept": "reject", "reject": "accept"}
    bo_label = {r["item_id"]: (flip[ana_label[r["item_id"]]] if r["item_id"] == shared[0] else ana_label.get(r["item_id"], "accept"))
                for r in todo["bo"]}
    expected_blind_kappa = cohen_kappa([keep_label(ana_label[i]) for i in shared], [keep_label(bo_label[i]) for i in shared])
    assert expected_blind_kappa is not None and expected_blind_kappa < 1.0

    with review_server_and_browser(workspace.root, tmp_path) as (browser, port):
        pages = {}
        for name in ("zoea", "ana", "bo"):
            context = browser.new_context(viewport={"width": 1400, "height": 900})  # separate cookies, separate sessions
            pages[name] = context.new_page()
            pages[name].goto(f"http://127.0.0.1:{port}/?reviewer={name}", wait_until="domcontentloaded")

        # A name not on the list is refused, and nothing can be decided under it.
        pages["zoea"].get_by_text("'zoea' is not on this workspace's reviewer list").wait_for(timeout=30_000)
        assert pages["zoea"].get_by_role("button", name="Accept").count() == 0
        pages["zoea"].screenshot(path=str(tmp_path / "refused.png"))

        # Different items first, each the reviewer's own.
        assert todo["ana"][0]["item_id"] != todo["bo"][0]["item_id"]
        assert "ana" in todo["ana"][0]["assignees"] and "bo" in todo["bo"][0]["assignees"]
        settle(pages["ana"], todo["ana"][0])
        settle(pages["bo"], todo["bo"][0])
        pages["bo"].screenshot(path=str(tmp_path / "bo-first.png"))

        for name, labels in (("ana", ana_label), ("bo", bo_label)):
            page = pages[name]
            for n, row in enumerate(todo[name], start=1):
                settle(page, row)
                if name == "bo" and row["item_id"] in shared:
                    # Blind: ana decided this item, and bo sees neither her decision nor the history.
                    assert page.get_by_text("by ana").count() == 0
                    assert page.get_by_text("History:").count() == 0
                    assert page.get_by_text("appear once you have given yours").count() == 1
                page.keyboard.press(KEYS[labels[row["item_id"]]])
                stored = wait_for(lambda: responses(workspace.root).filter(pl.col("reviewer") == name).height == n)
                assert stored, f"{name}'s decision {n} on {row['item_id']} was not stored"
            page.screenshot(path=str(tmp_path / f"{name}-done.png"))

        # bo opens the item he disagreed on from Search: now he may see ana's decision, and changes his.
        page = pages["bo"]
        page.get_by_role("radio", name="Search").or_(page.get_by_text("Search", exact=True)).first.click()
        target = next(r for r in todo["bo"] if r["item_id"] == shared[0])
        box = page.get_by_placeholder("every word must occur, in any of them")
        box.fill(first_words(target["question"], 12))
        box.press("Enter")
        page.get_by_text("match.").first.wait_for(timeout=15_000)
        page.screenshot(path=str(tmp_path / "bo-search.png"))
        page.locator(f".st-key-team_open_found-{target['source_id']}-{target['item_id']} button").click()
        settle(page, target)
        page.get_by_text("History:").first.wait_for(timeout=15_000)
        page.screenshot(path=str(tmp_path / "bo-revealed.png"))
        page.keyboard.press(KEYS[ana_label[shared[0]]])
        assert wait_for(lambda: responses(workspace.root).filter(pl.col("reviewer") == "bo").height == k + 1)
        # The progress view puts kappa on blind overlaps beside the count of all overlaps.
        page.get_by_role("radio", name="Progress").or_(page.get_by_text("Progress", exact=True)).first.click()
        heading = page.get_by_text("Between reviewers, blind overlaps only")
        heading.wait_for(timeout=30_000)
        page.wait_for_timeout(800)
        heading.scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "bo-progress.png"))

    with ResponseStore.open(workspace.root) as store:
        log_rows = store.responses()
        blind = store.blind_response_ids()
        bo_marks = store.marks("bo")
    # Every decision is on the item that was on screen, with its content hash, once.
    for name, labels in (("ana", ana_label), ("bo", bo_label)):
        mine = log_rows.filter(pl.col("reviewer") == name).head(k)
        assert mine["item_id"].to_list() == [r["item_id"] for r in todo[name]]
        assert mine["content_hash"].to_list() == [r["content_hash"] for r in todo[name]]
        assert mine["decision"].to_list() == [labels[r["item_id"]] for r in todo[name]]
    last = log_rows.row(-1, named=True)
    assert (last["reviewer"], last["item_id"], last["decision"]) == ("bo", shared[0], ana_label[shared[0]])
    assert set(blind) == set(log_rows["id"].to_list()) - {last["id"]}  # the informed decision is not blind
    assert ("seen" in bo_marks.filter(pl.col("item_id") == shared[0])["kind"].to_list())

    blind_pair = blind_reviewer_agreement(log_rows, blind).row(0, named=True)
    all_pair = reviewer_agreement(log_rows).row(0, named=True)
    assert blind_pair["n_items"] == len(shared) == all_pair["n_items"]
    assert blind_pair["kappa"] == pytest.approx(expected_blind_kappa)
    assert all_pair["agreement"] == 1.0  # bo's informed change of mind would have hidden the disagreement
