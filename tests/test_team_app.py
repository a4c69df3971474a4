"""The review app's team features through Streamlit's AppTest, each checked against the review database:
the reviewer list and normalised names, drafts and skips that outlive the session, comments (blind),
guidelines from the workspace, agents, sorting by a score, search and open, the duplicates word diff,
and the likely-mistakes view on embeddings stored as `satsang score` stores them."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from curation.responses import ResponseStore
from curation.team import TeamSettings, add_reviewer, write_team_settings
from curation.workspace import Workspace
from test_dashboard import button  # an item's buttons are keyed "name@item key@content hash"

APP = Path(__file__).parents[1] / "dashboards" / "review_app.py"


@pytest.fixture(scope="module")
def workspace(critiqued_workspace) -> Workspace:
    return critiqued_workspace("team")


def open_app(workspace: Workspace, db_url: str, monkeypatch, reviewer: str | None = None, via_url: bool = False) -> AppTest:
    """A new session (as a new browser tab); `via_url`: the name comes from ?reviewer=, so the first run has it."""
    monkeypatch.setenv("SATSANG_WORKSPACE", str(workspace.root))
    monkeypatch.setenv("SATSANG_DB_URL", db_url)
    at = AppTest.from_file(str(APP), default_timeout=60)
    if via_url:
        at.query_params["reviewer"] = reviewer
        reviewer = None
    at.run()
    assert not at.exception, at.exception
    if reviewer is not None:
        at.text_input(key="reviewer").input(reviewer).run()
        assert not at.exception, at.exception
    return at


def db(workspace: Workspace, db_url: str) -> ResponseStore:
    return ResponseStore.open(workspace.root, url=db_url)


def item_id(at: AppTest) -> str:
    return at.session_state["cursor"].split(":", 1)[1]


def click(at: AppTest, key: str) -> AppTest:
    button(at, key).click().run()
    assert not at.exception, at.exception
    return at


def text(at: AppTest) -> str:
    return "\n".join(e.value for e in at.markdown) + "\n".join(e.value for e in at.caption)


def test_unknown_names_are_refused_and_names_are_normalised(workspace, db_url, monkeypatch):
    with db(workspace, db_url) as store:
        add_reviewer(store, "Ana")
    at = open_app(workspace, db_url, monkeypatch, reviewer="zoea")
    assert any("'zoea' is not on this workspace's reviewer list" in e.value for e in at.error)
    assert not [b.key for b in at.button if (b.key or "").split("@")[0] == "accept"]  # nothing can be decided under it
    at.text_input(key="reviewer").input("  ANA ").run()
    assert not at.error
    first = item_id(at)
    click(at, "accept")
    with db(workspace, db_url) as store:
        assert store.state().select("item_id", "reviewer").rows() == [(first, "ana")]


def register(workspace: Workspace, db_url: str, *names: str) -> None:
    """A reviewer list: the workspace becomes a team's, and review blind."""
    with db(workspace, db_url) as store:
        for name in names:
            add_reviewer(store, name)


def test_drafts_and_skips_outlive_the_session(workspace, db_url, monkeypatch):
    register(workspace, db_url, "ana")
    at = open_app(workspace, db_url, monkeypatch, reviewer="ana")
    first = item_id(at)
    at.text_input(key="note").input("half a thought about the seer").run()
    click(at, "team_draft")
    click(at, "skip")
    skipped = first
    second = item_id(at)
    assert second != first
    with db(workspace, db_url) as store:
        marks = store.marks("ana")
    assert {(r["item_id"], r["kind"]) for r in marks.to_dicts()} == {(first, "draft"), (first, "skip")}

    skipped_key = at.session_state["skipped"][-1]

    later = open_app(workspace, db_url, monkeypatch, reviewer="ana", via_url=True)  # a new session: nothing in its memory
    assert later.session_state["skipped"] == []
    assert item_id(later) == second  # the store kept the skip: the skipped item went to the back
    # Go back to the skipped item: its draft is restored into the note box.
    later.session_state["cursor"] = skipped_key
    later.run()
    assert item_id(later) == skipped
    assert later.text_input(key="note").value == "half a thought about the seer"
    click(later, "accept")
    with db(workspace, db_url) as store:
        assert store.marks("ana").height == 0  # the decision withdrew the draft and the skip
        decided = store.state().filter(pl.col("item_id") == skipped).row(0, named=True)
        assert decided["note"] == "half a thought about the seer"
        assert store.blind_response_ids() == [decided["response_id"]]


def test_comments_are_stored_and_hidden_from_others_until_they_decide(workspace, db_url, monkeypatch):
    register(workspace, db_url, "ana", "bo")
    ana = open_app(workspace, db_url, monkeypatch, reviewer="ana")
    target = item_id(ana)
    ana.text_area(key="team_comment").input("the answer is cut at a page break").run()
    click(ana, "team_add_comment")
    with db(workspace, db_url) as store:
        assert store.comments(target).select("reviewer", "body").rows() == [("ana", "the answer is cut at a page break")]
    bo = open_app(workspace, db_url, monkeypatch, reviewer="bo")
    bo.multiselect(key="f_states").set_value([]).run()
    bo.session_state["cursor"] = ana.session_state["cursor"]
    bo.run()
    assert "cut at a page break" not in text(bo) and "1 comment(s) by others" in text(bo)
    click(bo, "accept")
    bo.session_state["cursor"] = ana.session_state["cursor"]
    bo.run()
    assert "cut at a page break" in text(bo)
    with db(workspace, db_url) as store:
        assert "seen" in store.marks("bo")["kind"].to_list()  # bo was shown ana's comment, and it is logged


def accepted_by_ana_then_opened_by_bo(workspace: Workspace, db_url: str, monkeypatch) -> tuple[AppTest, AppTest, str]:
    """ana accepts her first item; bo opens that item (every state shown). Returns both sessions and the item's key."""
    ana = open_app(workspace, db_url, monkeypatch, reviewer="ana")
    key = ana.session_state["cursor"]
    click(ana, "accept")
    bo = open_app(workspace, db_url, monkeypatch, reviewer="bo")
    bo.multiselect(key="f_states").set_value([]).run()
    bo.session_state["cursor"] = key
    bo.run()
    return ana, bo, key


def test_blind_undo_reverts_ones_own_decision_and_shows_nobody_elses(workspace, db_url, monkeypatch):
    register(workspace, db_url, "ana", "bo")
    ana, bo, key = accepted_by_ana_then_opened_by_bo(workspace, db_url, monkeypatch)
    click(bo, "undo")  # bo has no decision here: nothing to undo, and ana's is not named
    assert not any("ana" in toast.value for toast in bo.toast)
    bo.session_state["cursor"] = key
    bo.run()
    click(bo, "reject:incomplete")
    click(ana, "undo")  # ana's own accept is undone although bo's reject came after it
    with db(workspace, db_url) as store:
        assert store.state().select("reviewer", "decision").rows() == [("bo", "reject")]
        assert [r.decision for r in store.history(key.split(":")[1])] == ["accept", "reject", "undo"]
        assert store.integrity_check() == []


def test_without_a_reviewer_list_review_is_open(workspace, db_url, monkeypatch):
    ana, bo, key = accepted_by_ana_then_opened_by_bo(workspace, db_url, monkeypatch)
    assert "accepted by ana" in text(bo)  # anyone may type any name, so hiding would protect nothing
    with db(workspace, db_url) as store:
        assert store.blind_response_ids() == []


def test_guidelines_agents_and_keyboard_are_beside_the_item(workspace, db_url, monkeypatch, tmp_path):
    at = open_app(workspace, db_url, monkeypatch, reviewer="ana")
    page = text(at)
    assert "<b>contemplative</b>: A contemplative answer turns" in page and "From the default guidelines." in page
    assert any(e.label.startswith("Made by: dedup by") and "critic by offline" in e.label for e in at.expander)
    assert "<kbd>D</kbd>" in page and "<kbd>F</kbd>" in page
    own = workspace.root / "guidelines.md"
    own.write_text("## contemplative\nOur own words for it.\n")
    try:
        at.run()
        page = text(at)
        assert "Our own words for it." in page and "Not defined there: parse error" in page
    finally:
        own.unlink()


def test_sort_by_any_score_and_the_duplicates_word_diff(workspace, db_url, monkeypatch):
    at = open_app(workspace, db_url, monkeypatch, reviewer="ana")
    at.selectbox(key="f_team_sort").set_value("critic_score").run()
    best = workspace.items()["critic_score"].max()
    assert workspace.items().filter(pl.col("item_id") == item_id(at))["critic_score"][0] == best
    at.toggle(key="f_team_sort_desc").set_value(False).run()
    assert workspace.items().filter(pl.col("item_id") == item_id(at))["critic_score"][0] == workspace.items()["critic_score"].min()
    at.selectbox(key="f_team_filter").set_value("critic_score").run()
    top = workspace.items()["critic_score"].max()
    at.slider(key="f_team_range_critic_score").set_value((8.0, top)).run()
    n_high = workspace.items().filter(pl.col("critic_score") >= 8.0)["item_id"].n_unique()  # an item in two sources is one
    assert f"of {n_high:,} in this queue" in text(at) and n_high < workspace.items()["item_id"].n_unique()
    click(at, "reset_filters")  # Reset sets the team's sort and score filter back too
    assert (at.selectbox(key="f_team_sort").value, at.selectbox(key="f_team_filter").value) == ("queue order (need)", "no score filter")
    assert f"of {workspace.items()['item_id'].n_unique():,} in this queue" in text(at)
    at.selectbox(key="f_cluster_mode").set_value("non-representatives").run()
    near = workspace.items().filter(pl.col("dedup_kind") == "near")
    at.session_state["cursor"] = f"{near['source_id'][0]}:{near['item_id'][0]}"
    at.run()
    assert any(e.label == "What differs from the other copies (word diff)" for e in at.expander)
    assert "<del>" in text(at) or "<ins>" in text(at)


def test_search_finds_by_question_answer_or_context_and_opens_the_item(workspace, db_url, monkeypatch):
    at = open_app(workspace, db_url, monkeypatch, reviewer="ana")
    target = workspace.items().filter(pl.col("kind") == "pair").row(3, named=True)
    words = " ".join(target["answer"].split()[:6])
    at.segmented_control(key="view").set_value("Search").run()
    at.text_input(key="team_search").input(words).run()
    assert "match." in text(at)
    click(at, f"team_open_found:{target['source_id']}:{target['item_id']}")
    assert at.session_state["view"] == "Review" and item_id(at) == target["item_id"]


def test_likely_mistakes_view_lists_decisions_the_classifier_contradicts(workspace, db_url, monkeypatch, tmp_path):
    import shutil

    from sentence_transformers import SentenceTransformer

    from curation.score import PACKAGED_MODEL, EmbeddingStore, ScoreConfig, resolve_model, scored_texts, text_key

    items = workspace.items()
    texts = sorted({t for t in scored_texts(items)[0] if t is not None})
    model = SentenceTransformer(resolve_model(PACKAGED_MODEL), device="cpu")
    # The default engine's store, where `satsang score` leaves them (ONNX float32 gives torch's vectors).
    store_path = EmbeddingStore.for_workspace(workspace.root, PACKAGED_MODEL, ScoreConfig().backend).path
    store = EmbeddingStore(store_path)
    store.add([text_key(t) for t in texts], model.encode(texts, normalize_embeddings=True))
    store.save()
    write_team_settings(workspace.root, TeamSettings(blind=False))
    try:
        pairs = items.filter(pl.col("kind") == "pair").unique("item_id", keep="first", maintain_order=True)
        with db(workspace, db_url) as review:
            # The critic's view as decisions, with two of them turned round: those should come back.
            records = []
            for n, row in enumerate(pairs.to_dicts()):
                keep = (row["critic_score"] or 0) >= 6.5
                if n in (0, 1):
                    keep = not keep
                records.append({"item_id": row["item_id"], "content_hash": row["content_hash"], "reviewer": "ana",
                                "decision": "accept" if keep else "reject", "reason": None if keep else "not contemplative"})
            review.record_many(records)
        at = open_app(workspace, db_url, monkeypatch, reviewer="bo")
        at.multiselect(key="f_states").set_value([]).run()
        click(at, "team_similar")  # F: the nearest items by the stored embeddings, each with Open
        similar = [button.key for button in at.button if button.key and button.key.startswith("team_open_similar:")]
        assert len(similar) == 5 and all(key.split(":")[2] != item_id(at) for key in similar)
        click(at, similar[0])
        assert at.session_state["cursor"] == similar[0].split(":", 1)[1]
        at.segmented_control(key="view").set_value("Likely mistakes").run()
        assert not at.exception, at.exception
        page = text(at)
        assert "decisions about the concept" in page and "look like mistakes" in page
        assert "out of fold" in page
    finally:
        (workspace.root / "review.json").unlink()
        shutil.rmtree(store_path.parent)
