"""The review app through Streamlit's AppTest: each flow, then what the decisions database holds.

The workspace is real: talks 19-24 and talks 272-274 of both editions of Talks with
Sri Ramana Maharshi (so dedup finds exact and near copies across books), deduped
and judged by the offline critic. Not concept-scored: the app must show "not
scored yet" for that. Each test gets its own SQLite decisions database.
"""

from __future__ import annotations

import html
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from curation.responses import ResponseStore
from curation.workspace import Workspace

APP = Path(__file__).parents[1] / "dashboards" / "review_app.py"


@pytest.fixture(scope="module")
def workspace(critiqued_workspace) -> Workspace:
    return critiqued_workspace("review")


@pytest.fixture
def app(workspace, db_url, monkeypatch) -> AppTest:
    monkeypatch.setenv("SATSANG_WORKSPACE", str(workspace.root))
    monkeypatch.setenv("SATSANG_DB_URL", db_url)
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    return at


def store(workspace: Workspace, db_url: str) -> ResponseStore:
    return ResponseStore.open(workspace.root, url=db_url)


def state(workspace, db_url) -> pl.DataFrame:
    with_store = store(workspace, db_url)
    try:
        return with_store.state()
    finally:
        with_store.close()


def history(workspace, db_url, item_id):
    with_store = store(workspace, db_url)
    try:
        return with_store.history(item_id)
    finally:
        with_store.close()


def sign_in(at: AppTest, name: str = "ana") -> AppTest:
    at.text_input(key="reviewer").input(name).run()
    assert not at.exception, at.exception
    return at


def current(at: AppTest) -> tuple[str, str]:
    """(source_id, item_id) of the item on screen."""
    assert at.session_state["cursor"], "no item on screen"
    source_id, item_id = at.session_state["cursor"].split(":", 1)
    return source_id, item_id


def item_row(workspace: Workspace, source_id: str, item_id: str) -> dict:
    items = workspace.items()
    return items.filter((pl.col("source_id") == source_id) & (pl.col("item_id") == item_id)).row(0, named=True)


def button(at: AppTest, key: str):
    """The button `key`; an item's buttons are keyed "name@item key@content hash", so they name what they were drawn for."""
    for element in at.button:
        if element.key == key or (element.key or "").startswith(key + "@"):
            return element
    raise KeyError(key)


def click(at: AppTest, key: str) -> AppTest:
    button(at, key).click().run()
    assert not at.exception, at.exception
    return at


def toasts(at: AppTest) -> list[str]:
    return [toast.value for toast in at.toast]


def markdown_text(at: AppTest) -> str:
    return "\n".join(element.value for element in at.markdown)


# ---- the page ------------------------------------------------------------------------


def test_page_shows_item_provenance_and_suggestions_and_degrades_without_concept_scores(app, workspace):
    text = markdown_text(app)
    source_id, item_id = current(app)
    row = item_row(workspace, source_id, item_id)
    assert "Item 1 of " in text
    assert html.escape(row["question"]) in text and html.escape(row["answer"]) in text
    assert 'class="sat-source"' in text and "<mark" in text  # raw source with the item highlighted
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Concept score"] == "—"
    assert "not scored yet" in [caption.value for caption in app.caption]
    assert metrics["Critic score"].endswith("/ 10")
    # Without a name, nothing can be decided.
    assert button(app, "accept").disabled
    assert any("Enter your name" in warning.value for warning in app.sidebar.warning)


def test_workspace_argument_after_double_dash_wins(workspace):
    from dashboards.review_app import app_config

    config = app_config(["--workspace", str(workspace.root), "--db", "sqlite:///x.db"])
    assert config.workspace == workspace.root and config.db_url == "sqlite:///x.db"


# ---- flows: each asserts what the database holds afterwards -----------------------


def test_accept(app, workspace, db_url):
    sign_in(app)
    source_id, item_id = current(app)
    app.text_input(key="note").input("clear pointing").run()
    click(app, "accept")
    rows = state(workspace, db_url).to_dicts()
    assert len(rows) == 1
    assert rows[0]["item_id"] == item_id
    assert rows[0]["decision"] == "accept" and rows[0]["reviewer"] == "ana" and rows[0]["note"] == "clear pointing"
    assert rows[0]["content_hash"] == item_row(workspace, source_id, item_id)["content_hash"]
    assert current(app)[1] != item_id  # moved on; the accepted item left the to-do queue
    assert any("Accepted" in toast for toast in toasts(app))
    assert app.text_input(key="note").value == ""  # a note goes with one decision only


def test_reject_with_reason(app, workspace, db_url):
    sign_in(app)
    _, first = current(app)
    click(app, "reject:not contemplative")
    _, second = current(app)
    # "other" needs a note: refused without one, recorded with it.
    click(app, "reject:other")
    assert any("needs a note" in toast for toast in toasts(app))
    assert current(app)[1] == second
    app.text_input(key="note").input("a page header got in").run()
    click(app, "reject:other")
    decided = {row["item_id"]: row for row in state(workspace, db_url).to_dicts()}
    assert set(decided) == {first, second}
    assert decided[first]["decision"] == "reject" and decided[first]["reason"] == "not contemplative"
    assert decided[second]["reason"] == "other" and decided[second]["note"] == "a page header got in"


def test_edit_shows_a_diff_and_stores_only_what_changed(app, workspace, db_url):
    sign_in(app)
    source_id, item_id = current(app)
    original = item_row(workspace, source_id, item_id)
    click(app, "edit")
    click(app, "save_edit")  # nothing changed yet: nothing recorded
    assert any("Nothing changed" in toast for toast in toasts(app)) and state(workspace, db_url).height == 0
    app.text_area(key="edit_answer").input(original["answer"] + " Who asks?").run()
    diff = markdown_text(app)
    assert "<ins>Who asks?</ins>" in diff
    assert "<b>Question</b>: unchanged" in diff
    click(app, "save_edit")
    rows = state(workspace, db_url).to_dicts()
    assert len(rows) == 1
    assert rows[0]["decision"] == "edit" and rows[0]["item_id"] == item_id
    assert rows[0]["edited_answer"] == original["answer"] + " Who asks?"
    assert rows[0]["edited_question"] is None  # the question was kept
    assert app.session_state["editing"] is None


def test_edit_cancel_records_nothing(app, workspace, db_url):
    sign_in(app)
    click(app, "edit")
    app.text_area(key="edit_question").input("Something else?").run()
    click(app, "cancel_edit")
    assert state(workspace, db_url).height == 0
    assert button(app, "accept")  # back to the action bar


def test_undo_reverts_the_latest_decision_of_this_session(app, workspace, db_url):
    sign_in(app)
    _, first = current(app)
    click(app, "accept")
    _, second = current(app)
    click(app, "reject:duplicate")
    click(app, "undo")
    assert current(app)[1] == second  # back on the undone item
    assert set(state(workspace, db_url)["item_id"]) == {first}
    click(app, "undo")
    assert current(app)[1] == first
    assert state(workspace, db_url).height == 0
    decisions = [response.decision for response in history(workspace, db_url, first)]
    assert decisions == ["accept", "undo"]  # append-only: the accept is still there, reverted


def test_undo_never_reverts_another_reviewers_decision(app, workspace, db_url):
    source_id, item_id = current(app)
    other = store(workspace, db_url)
    other.record(item_id, item_row(workspace, source_id, item_id)["content_hash"], "bo", "accept")
    other.close()
    sign_in(app, "ana")
    app.multiselect(key="f_states").set_value([]).run()  # every item, decided ones too
    app.session_state["cursor"] = f"{source_id}:{item_id}"
    app.run()
    click(app, "undo")
    assert any("bo's" in toast for toast in toasts(app))
    assert state(workspace, db_url)["reviewer"].to_list() == ["bo"]


def test_skip_and_navigation_record_nothing(app, workspace, db_url):
    sign_in(app)
    _, first = current(app)
    click(app, "skip")
    _, second = current(app)
    assert second != first
    click(app, "next")
    _, third = current(app)
    click(app, "prev")
    assert current(app)[1] == second and third != second
    assert state(workspace, db_url).height == 0
    # the skipped item went to the back of the queue
    keys = app.session_state["skipped"]
    assert keys and keys[-1].endswith(first)


# ---- filters -------------------------------------------------------------------------


def test_filters_narrow_the_queue(app, workspace, db_url):
    sign_in(app)
    sources = workspace.sources()
    vol2 = sources.filter(pl.col("title") == "Talks (2006)")["source_id"][0]
    n_vol2 = workspace.items().filter(pl.col("source_id") == vol2)["item_id"].n_unique()
    app.multiselect(key="f_sources").set_value([vol2]).run()
    assert current(app)[0] == vol2
    assert f"of {n_vol2} in this queue" in markdown_text(app)

    app.multiselect(key="f_sources").set_value([]).run()
    app.text_input(key="f_talks").input("20-21").run()
    source_id, item_id = current(app)
    assert item_row(workspace, source_id, item_id)["section"] in ("Talk 20", "Talk 21")
    n_talks = workspace.items().filter(pl.col("section").is_in(["Talk 20", "Talk 21"]))["item_id"].n_unique()
    assert f"of {n_talks} in this queue" in markdown_text(app)
    app.text_input(key="f_talks").input("twenty").run()  # not a range: said so, and no restriction
    assert any("talks: write a range" in error.value for error in app.sidebar.error)

    app.text_input(key="f_talks").input("").run()
    app.multiselect(key="f_flags").set_value(["prescriptive", "verbosity"]).run()
    source_id, item_id = current(app)
    assert "prescriptive" in item_row(workspace, source_id, item_id)["critic_flags"]
    assert "of 1 in this queue" in markdown_text(app)  # the offline critic flags one pair here

    app.multiselect(key="f_flags").set_value([]).run()
    app.slider(key="f_critic").set_value((8.0, 10.0)).run()
    source_id, item_id = current(app)
    assert item_row(workspace, source_id, item_id)["critic_score"] >= 8.0
    app.slider(key="f_critic").set_value((0.0, 10.0)).run()

    # Decision state and reviewer: accept one item, then find it (only it) through the filters.
    _, accepted = current(app)
    click(app, "accept")
    app.multiselect(key="f_states").set_value(["accept"]).run()
    app.multiselect(key="f_reviewers").set_value(["ana"]).run()
    assert current(app)[1] == accepted
    assert "Item 1 of 1 in this queue" in markdown_text(app)  # one item, even where it is in two books

    click(app, "reset_filters")
    assert app.multiselect(key="f_states").value == ["unreviewed", "changed since review"]
    assert (app.multiselect(key="f_reviewers").value, app.text_input(key="f_talks").value) == ([], "")


def test_cluster_filter_shows_the_members_side_by_side(app, workspace):
    app.selectbox(key="f_cluster_mode").set_value("non-representatives").run()
    source_id, item_id = current(app)
    row = item_row(workspace, source_id, item_id)
    assert not row["dedup_is_representative"]
    text = markdown_text(app)
    assert f"of {row['dedup_cluster_size']}: this item is" in text
    assert text.count('class="sat-member"') == min(row["dedup_cluster_size"], 4)
    app.text_input(key="f_cluster").input(row["dedup_cluster"][:10]).run()
    app.selectbox(key="f_cluster_mode").set_value("all").run()
    members = workspace.items().filter(pl.col("dedup_cluster") == row["dedup_cluster"])["item_id"].n_unique()
    assert f"of {members} in this queue" in markdown_text(app)


# ---- bulk ----------------------------------------------------------------------------


def open_bulk(app: AppTest) -> AppTest:
    app.button_group(key="view").set_value("Bulk actions").run()
    assert not app.exception, app.exception
    return app


def test_bulk_reject_duplicates_needs_confirmation_and_writes_one_transaction(app, workspace, db_url):
    items = workspace.items()
    copies = items.filter(~pl.col("dedup_is_representative"))
    expected = set(copies.filter(pl.col("item_id") != pl.col("dedup_representative"))["item_id"])
    assert expected, "the fixture must hold near copies with ids of their own"
    sign_in(app)
    open_bulk(app)
    app.radio(key="bulk_action").set_value("reject-duplicates").run()
    assert f"reject {len(expected)} item" in markdown_text(app)
    assert app.button(key="bulk_apply").disabled  # not before the confirm box
    assert state(workspace, db_url).height == 0
    app.checkbox(key="bulk_confirm").check().run()
    click(app, "bulk_apply")
    rows = state(workspace, db_url)
    assert set(rows["item_id"]) == expected
    assert set(rows["decision"]) == {"reject"} and set(rows["reason"]) == {"duplicate"}
    assert not app.checkbox(key="bulk_confirm").value  # the confirmation is spent
    assert any(f"recorded {len(expected)} decisions" in toast for toast in toasts(app))
    assert "reject 0 items" in markdown_text(app)  # nothing left to do: they are decided now


def test_bulk_accept_all_in_a_filtered_selection(app, workspace, db_url):
    sign_in(app)
    talks = workspace.sources().filter(pl.col("title") == "Talks 19-24")["source_id"][0]
    app.multiselect(key="f_sources").set_value([talks]).run()
    app.text_input(key="f_talks").input("21").run()
    selected = workspace.items().filter((pl.col("source_id") == talks) & (pl.col("section") == "Talk 21"))
    assert selected.height
    open_bulk(app)
    app.radio(key="bulk_action").set_value("accept-all").run()
    assert f"accept {selected['item_id'].n_unique()} item" in markdown_text(app)
    app.checkbox(key="bulk_confirm").check().run()
    click(app, "bulk_apply")
    rows = state(workspace, db_url)
    assert set(rows["item_id"]) == set(selected["item_id"])
    assert set(rows["decision"]) == {"accept"} and set(rows["reviewer"]) == {"ana"}


# ---- progress ------------------------------------------------------------------------


def test_progress_view_shows_counts_charts_and_agreement(app, workspace, db_url):
    items = workspace.items().filter(pl.col("kind") == "pair").unique("item_id", keep="first", maintain_order=True)
    both = items.head(6)
    with_store = store(workspace, db_url)
    for n, row in enumerate(both.iter_rows(named=True)):
        with_store.record(row["item_id"], row["content_hash"], "ana", "accept" if n % 2 else "reject", reason=None if n % 2 else "duplicate")
        with_store.record(row["item_id"], row["content_hash"], "bo", "accept" if n % 3 else "reject", reason=None if n % 3 else "off-topic")
    with_store.close()
    sign_in(app)
    app.button_group(key="view").set_value("Progress").run()
    assert not app.exception, app.exception
    metrics = {metric.label.split(" (")[0]: metric.value for metric in app.metric}
    assert metrics[f"Reviewed of {workspace.items()['item_id'].n_unique()}"] == "6"
    # The effective decision is the latest: bo's, who accepted n % 3 != 0.
    assert (metrics["Accepted"], metrics["Rejected"]) == ("4", "2")
    text = markdown_text(app)
    assert "Between reviewers" in text and "Critic vs curators" in text
    frames = [frame.value for frame in app.dataframe]
    pairs = next(frame for frame in frames if "reviewer_a" in frame.columns)
    assert pairs[["reviewer_a", "reviewer_b", "n_items"]].values.tolist() == [["ana", "bo", 6]]
    # ana keeps 1,3,5 and bo keeps 1,2,4,5: agreement 3/6, chance 1/2, so kappa 0
    assert pairs["agreement"].tolist() == [0.5] and pairs["kappa"].tolist() == [0.0]
    per_reviewer = next(frame for frame in frames if "responses" in frame.columns)
    assert sorted(per_reviewer["reviewer"].tolist()) == ["ana", "bo"]
    assert "over 6 items" in text  # the critic against the curators, on the same six
