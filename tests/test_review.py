"""Review state has one owner (curation.review): status, the queue, export and the card all read it."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from curation.responses import ResponseStore
from curation.workspace import Workspace, init_workspace
from satsang.cli import app

DATA = Path(__file__).parent / "data"
TALKS_EXCERPT = DATA / "talks-excerpt.txt"

runner = CliRunner()


def reviewed_per_status(root: Path) -> int:
    """The "reviewed" count `satsang status` prints."""
    result = runner.invoke(app, ["status", "--workspace", str(root)])
    assert result.exit_code == 0, result.output
    found = re.search(r"reviewed (\d+)\)", result.output)
    assert found, result.output
    return int(found.group(1))


def test_status_counts_the_stores_state_even_with_a_stale_copy_on_the_items(tmp_path: Path):
    # What `mark_reviewed` used to do: copy the store's decisions onto the items as a
    # `review_decision` column. Such a copy goes stale at the next response; status must
    # never read it, only the store's state.
    workspace = init_workspace(tmp_path / "ws")
    workspace.ingest([TALKS_EXCERPT], "dialogue")
    a, b, c, d = workspace.items().head(4).iter_rows(named=True)
    with ResponseStore.open(workspace.root) as store:
        store.record(a["item_id"], a["content_hash"], "ana", "accept")
        accepted = store.state()["item_id"].to_list()
        workspace.update_items(
            lambda items: items.with_columns(
                pl.when(pl.col("item_id").is_in(accepted)).then(pl.lit("accept")).otherwise(None).alias("review_decision")
            )
        )
        store.undo(a["item_id"], "ana")
        for item in (b, c, d):
            store.record(item["item_id"], item["content_hash"], "ana", "accept")
        assert store.state().height == 3
    assert reviewed_per_status(workspace.root) == 3


def test_status_counts_exactly_the_stores_state_through_undo_and_re_review(tmp_path: Path):
    workspace = init_workspace(tmp_path / "ws")
    workspace.ingest([TALKS_EXCERPT], "dialogue")
    rows = workspace.items().head(5).to_dicts()
    assert reviewed_per_status(workspace.root) == 0
    assert not (workspace.root / "reviews.db").exists()  # status never creates a database to say nobody reviewed
    steps = [
        ("record", 0, "ana", "accept"),
        ("record", 1, "bo", "reject"),
        ("undo", 0, "ana", None),
        ("record", 0, "bo", "edit"),
        ("record", 2, "ana", "accept"),
        ("undo", 1, "bo", None),
        ("undo", 0, "bo", None),
        ("record", 1, "ana", "accept"),
        ("record", 3, "ana", "accept"),
        ("record", 3, "bo", "reject"),  # a re-review: the later response is the state
    ]
    with ResponseStore.open(workspace.root) as store:
        for action, index, reviewer, decision in steps:
            item = rows[index]
            if action == "undo":
                store.undo(item["item_id"], reviewer)
            elif decision == "reject":
                store.record(item["item_id"], item["content_hash"], reviewer, "reject", reason="incomplete")
            elif decision == "edit":
                store.record(item["item_id"], item["content_hash"], reviewer, "edit", edited_answer="Who asks?")
            else:
                store.record(item["item_id"], item["content_hash"], reviewer, decision)
            expected = store.state()["item_id"].n_unique()
            n_rows = workspace.items().filter(pl.col("item_id").is_in(store.state()["item_id"].to_list())).height
            assert reviewed_per_status(workspace.root) == n_rows == expected, (action, index, reviewer, decision)
    assert expected == 3


# ---- one definition of agreement: the data card and the dashboard show the same numbers ---------


def card_agreement(card: str) -> dict[tuple[str, str], tuple[int, str, str]]:
    """(reviewer a, reviewer b) -> (shared items, agreement, kappa) as the card's agreement table prints them."""
    rows = re.findall(r"^\| (\w+) / (\w+) \| (\d+) \| ([\d.]+%) \| (-?[\d.]+|undefined) \|$", card, flags=re.MULTILINE)
    return {(a, b): (int(n), agreement, kappa) for a, b, n, agreement, kappa in rows}


def test_the_data_card_and_the_dashboard_agree_on_agreement(tmp_path: Path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from curation.export import ExportConfig, export_version

    workspace = init_workspace(tmp_path / "ws")
    workspace.ingest([TALKS_EXCERPT], "dialogue")
    pairs = workspace.items().filter(pl.col("kind") == "pair").unique("item_id", keep="first", maintain_order=True)
    rows = pairs.head(8).to_dicts()
    assert len(rows) == 8
    # Three reviewers over overlapping items. ana and bo: an accept against an edit is one
    # label (keep), an undo leaves the earlier decision standing, a re-review replaces it.
    # cy shares items only with bo.
    plan = {
        "ana": ["accept", "reject", "accept", "edit", "reject", "accept", None, None],
        "bo": ["edit", "reject", "reject", "accept", "accept", "accept", "reject", None],
        "cy": [None, None, None, None, "reject", "accept", "reject", "accept"],
    }
    with ResponseStore.open(workspace.root) as store:
        for reviewer, decisions in plan.items():
            for row, decision in zip(rows, decisions):
                if decision is None:
                    continue
                fields = {"reason": "incomplete"} if decision == "reject" else {"edited_answer": "Who asks?"} if decision == "edit" else {}
                store.record(row["item_id"], row["content_hash"], reviewer, decision, **fields)
        store.record(rows[2]["item_id"], rows[2]["content_hash"], "bo", "accept")  # bo re-reviews: now keep
        store.record(rows[0]["item_id"], rows[0]["content_hash"], "ana", "reject", reason="incomplete")
        store.undo(rows[0]["item_id"], "ana")  # ana's accept on item 0 stands again

    result = export_version(workspace, ExportConfig(name="agree", include_unreviewed=True, representatives_only=False))
    card = result.card_path.read_text(encoding="utf-8")
    on_card = card_agreement(card)

    monkeypatch.setenv("SATSANG_WORKSPACE", str(workspace.root))
    monkeypatch.delenv("SATSANG_DB_URL", raising=False)
    app = AppTest.from_file(str(Path(__file__).parents[1] / "dashboards" / "review_app.py"), default_timeout=60)
    app.run()
    app.text_input(key="reviewer").input("ana").run()
    app.button_group(key="view").set_value("Progress").run()
    assert not app.exception, app.exception
    frames = [frame.value for frame in app.dataframe]
    shown = next(frame for frame in frames if "reviewer_a" in frame.columns)
    on_dashboard = {
        (a, b): (int(n), f"{100 * agreement:.1f}%", "undefined" if kappa != kappa or kappa is None else f"{kappa:.3f}")
        for a, b, n, agreement, kappa in shown[["reviewer_a", "reviewer_b", "n_items", "agreement", "kappa"]].itertuples(index=False)
    }
    # ana/bo share items 0-5 and keep/reject on 0, 1, 2 (bo re-reviewed), 3, 5 alike, 4 not: 5 of 6.
    assert on_card[("ana", "bo")][:2] == (6, "83.3%")
    assert set(on_card) == {("ana", "bo"), ("ana", "cy"), ("bo", "cy")}
    assert on_card == on_dashboard

    # The overall line pools the same pairs.
    n_compared = sum(n for n, _, _ in on_card.values())
    assert f"of the {n_compared} reviewer pairs" in card
    # Per reviewer, too: standing decisions by decision, and responses made (undos included).
    assert "| ana | 6 | 3 | 2 | 1 | 8 |" in card
    per_reviewer = next(frame for frame in frames if "responses" in frame.columns)
    for reviewer, n_items, accept, reject, edit, responses in per_reviewer.itertuples(index=False):
        assert f"| {reviewer} | {n_items} | {accept} | {reject} | {edit} | {responses} |" in card


def test_reviewer_names_are_normalised():
    from curation.review import normalise_reviewer_name

    assert normalise_reviewer_name("  Asha \t Rao ") == normalise_reviewer_name("asha rao") == "asha rao"
    assert normalise_reviewer_name(None) == ""
