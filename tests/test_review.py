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
