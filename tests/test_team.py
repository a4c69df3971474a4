"""Team review: the reviewer list, comments, drafts/skips/reveals (migration 4) on SQLite and PostgreSQL;
the review plan file, deterministic assignment, a reviewer's blind queue, and agreement on blind overlaps."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from postgres import Database, PostgresServer, database, postgres_server  # noqa: F401  (fixtures)

from curation.responses import COMMENT_SCHEMA, MARK_SCHEMA, InvalidResponse, ResponseStore
from curation.review import (
    blind_reviewer_agreement,
    normalise_reviewer_name,
    reviewer_agreement,
    reviewer_state,
)
from curation.team import (
    COMPLETE,
    DONE_BY_ME,
    MINE,
    NEEDS_MORE,
    SKIPPED,
    TEAM_FILE,
    TeamError,
    TeamSettings,
    add_reviewer,
    assignment,
    blind_ids,
    decisions_per_item,
    group_words,
    read_team_settings,
    refusal,
    write_team_settings,
)
from dashboards.queue import base_queue, queue_view, reviewer_view

HASH = "h" * 32


@pytest.fixture
def store(database: Database):
    with database.open() as opened:
        yield opened


# ---- the store's team tables ----------------------------------------------------------------


def test_reviewers_are_registered_once_normalised_and_listed(store: ResponseStore):
    assert store.registered_reviewers() == []
    assert add_reviewer(store, "  Asha   Devi ") == ("asha devi", True)
    assert add_reviewer(store, "ASHA devi") == ("asha devi", False)
    assert add_reviewer(store, "bo", added_by="Asha Devi") == ("bo", True)
    assert store.registered_reviewers() == ["asha devi", "bo"]
    with pytest.raises(TeamError, match="name is required"):
        add_reviewer(store, "   ")


def test_names_normalise_by_case_space_and_width():
    assert normalise_reviewer_name("  Asha\tDEVI  ") == "asha devi"
    assert normalise_reviewer_name("Straße") == "strasse"
    assert normalise_reviewer_name(None) == ""


def test_unknown_names_are_refused_only_when_there_is_a_list():
    assert refusal([], "anyone") is None
    assert refusal(["ana", "bo"], " ANA ") is None
    assert "not on this workspace's reviewer list" in refusal(["ana", "bo"], "zoea")
    assert refusal(["ana"], "  ") == "Enter your name to start reviewing."


def test_comments_are_appended_and_read_per_item(store: ResponseStore):
    store.add_comment("i1", HASH, "ana", "  the answer is cut short  ")
    store.add_comment("i2", HASH, "bo", "fine")
    store.add_comment("i1", HASH, "bo", "agreed, see talk 20")
    on_i1 = store.comments("i1")
    assert on_i1.schema == pl.Schema(COMMENT_SCHEMA)
    assert on_i1.select("reviewer", "body").rows() == [("ana", "the answer is cut short"), ("bo", "agreed, see talk 20")]
    assert store.comments().height == 3
    with pytest.raises(InvalidResponse, match="some text"):
        store.add_comment("i1", HASH, "ana", "   ")


def test_drafts_and_skips_persist_and_the_latest_stands(database: Database):
    with database.open() as store:
        store.set_mark("i1", "ana", "draft", json.dumps({"note": "first"}), HASH)
        store.set_mark("i1", "ana", "draft", json.dumps({"note": "second"}), HASH)
        store.set_mark("i2", "ana", "skip", "skipped")
        store.set_mark("i3", "ana", "skip", "skipped")
        store.set_mark("i3", "ana", "skip", "")  # withdrawn
        store.set_mark("i1", "bo", "skip", "skipped")
    with database.open() as store:  # another session
        marks = store.marks("ana")
        assert marks.schema == pl.Schema(MARK_SCHEMA)
        assert {(r["item_id"], r["kind"]) for r in marks.to_dicts()} == {("i1", "draft"), ("i2", "skip")}
        assert json.loads(marks.filter(pl.col("kind") == "draft")["payload"][0]) == {"note": "second"}
        assert store.marks("bo")["item_id"].to_list() == ["i1"]
        with pytest.raises(InvalidResponse, match="kind must be one of"):
            store.set_mark("i1", "ana", "maybe", "x")


def test_team_tables_are_append_only_in_the_database(database: Database):
    with database.open() as store:
        store.add_comment("i1", HASH, "ana", "note")
        store.set_mark("i1", "ana", "skip", "skipped")
        store.add_reviewer("ana")
        response = store.record("i1", HASH, "ana", "accept")
        store.mark_blind([response.id, response.id])
        assert store.blind_response_ids() == [response.id]
    connection = database.connect()
    try:
        for statement in ("UPDATE comments SET body = 'x'", "DELETE FROM marks", "DELETE FROM reviewers",
                          "UPDATE blind_decisions SET created_at = ''"):
            with pytest.raises(Exception, match="append-only"):
                connection.execute(statement)
            if database.backend == "postgresql":
                connection.rollback()
    finally:
        connection.close()
    with database.open() as store:
        assert store.comments()["body"].to_list() == ["note"] and store.integrity_check() == []


def test_a_reviewer_undoes_their_own_decision_under_anothers(store: ResponseStore):
    ana = store.record("i1", HASH, "ana", "accept")
    bo = store.record("i1", HASH, "bo", "reject", reason="incomplete")
    undone = store.undo_own("i1", "ana")
    assert undone is not None and undone.undoes == ana.id and undone.reviewer == "ana"
    assert store.state().select("reviewer", "decision").rows() == [("bo", "reject")]  # bo's stands
    assert store.undo_own("i1", "ana") is None  # nothing of ana's left
    assert store.undo_own("i1", "chandra") is None
    assert store.undo_own("i1", "bo").undoes == bo.id and store.state().height == 0
    assert store.integrity_check() == []


# ---- the plan -------------------------------------------------------------------------------


def test_the_plan_file_round_trips_and_bad_ones_name_the_file(tmp_path: Path):
    assert read_team_settings(tmp_path) == TeamSettings()
    written = write_team_settings(tmp_path, TeamSettings(overlap_share=0.25))
    assert read_team_settings(tmp_path) == TeamSettings(overlap_share=0.25)
    written.write_text('{"overlap_share": 0.2,\n "reviewers": 2}')
    with pytest.raises(TeamError, match=rf"{TEAM_FILE}: expected an object with keys among"):
        read_team_settings(tmp_path)
    written.write_text('{"overlap_share": 1.5}')
    with pytest.raises(TeamError, match="overlap_share must be between 0 and 1"):
        read_team_settings(tmp_path)
    written.write_text('{\n  "overlap_share": ,\n}')
    with pytest.raises(TeamError, match=rf"{TEAM_FILE}:2: not valid JSON"):
        read_team_settings(tmp_path)


ITEMS = [f"{n:032x}" for n in range(2000)]


def test_one_reviewer_per_item_shares_the_items_out_without_overlap():
    plan = assignment(ITEMS, ["ana", "bo", "chandra"], TeamSettings())
    assert plan["assignees"].list.len().to_list() == [1] * len(ITEMS)
    per = plan.explode("assignees").group_by("assignees").len()
    assert set(per["assignees"]) == {"ana", "bo", "chandra"}
    assert per["len"].min() > 600  # about a third each
    again = assignment(list(reversed(ITEMS)), ["Chandra", "bo", "ana"], TeamSettings())  # deterministic, order-free
    assert plan.sort("item_id").equals(again.sort("item_id"))


def test_the_overlap_share_gets_two_reviewers_and_adding_a_reviewer_moves_few_items():
    settings = TeamSettings(overlap_share=0.2)
    plan = assignment(ITEMS, ["ana", "bo"], settings)
    doubled = plan.filter(pl.col("reviewers_needed") == 2)
    assert 0.16 < doubled.height / len(ITEMS) < 0.24
    assert all(sorted(names) == ["ana", "bo"] for names in doubled["assignees"].to_list())
    three = assignment(ITEMS, ["ana", "bo", "chandra"], settings)
    first_before = dict(zip(plan["item_id"], plan["assignees"].list.first()))
    first_after = dict(zip(three["item_id"], three["assignees"].list.first()))
    moved = [i for i in ITEMS if first_before[i] != first_after[i]]
    assert all(first_after[i] == "chandra" for i in moved)  # rendezvous: only the newcomer takes items
    assert 0.25 < len(moved) / len(ITEMS) < 0.42


# ---- a reviewer's blind queue ------------------------------------------------------------------


def tiny_items() -> pl.DataFrame:
    rows = []
    for n in range(8):
        rows.append({"source_id": "s1", "item_id": f"{n:032x}", "content_hash": "c", "kind": "pair",
                     "question": f"question {n}", "answer": f"answer {n}", "context": "", "text": f"question {n} answer {n}",
                     "section": f"Talk {n}", "start": n * 10, "end": n * 10 + 9})
    return pl.DataFrame(rows)


def responses_frame(rows: list[tuple[int, str, str, str, int | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"id": id_, "item_id": item, "content_hash": "c", "reviewer": who, "decision": decision, "reason": None if decision != "reject" else "other",
          "note": "", "edited_question": None, "edited_answer": None, "created_at": f"t{id_}", "undoes": undoes}
         for id_, item, who, decision, undoes in rows]
    )


def test_a_reviewer_sees_only_their_own_decisions_and_their_items_first():
    items = tiny_items()
    ids = items["item_id"].to_list()
    log = responses_frame([(1, ids[0], "ana", "accept", None), (2, ids[1], "bo", "reject", None),
                           (3, ids[2], "bo", "accept", None), (4, ids[2], "bo", "undo", 3)])
    plan = assignment(ids, ["ana", "bo"], TeamSettings())
    queue = queue_view(base_queue(items), reviewer_state(log, "bo"))
    mine = reviewer_view(queue, "bo", plan, decisions_per_item(log), skipped_item_ids=[ids[5]]).ordered()
    by_item = {row["item_id"]: row for row in mine.to_dicts()}
    assert by_item[ids[0]]["decision_state"] == "unreviewed"  # ana's accept is not shown to bo
    assert by_item[ids[1]]["decision_state"] == "reject" and by_item[ids[1]]["team_group"] == DONE_BY_ME
    assert by_item[ids[2]]["decision_state"] == "unreviewed"  # bo undid it
    assert by_item[ids[5]]["team_group"] == SKIPPED
    bo_first = set(plan.filter(pl.col("assignees").list.contains("bo"))["item_id"])
    for item, row in by_item.items():
        if row["team_group"] in (MINE, NEEDS_MORE, COMPLETE):
            assert row["team_group"] == (MINE if item in bo_first else (COMPLETE if item == ids[0] else NEEDS_MORE))
    groups = mine["team_group"].to_list()
    assert groups == sorted(groups) and mine["position"].to_list() == list(range(len(ids)))
    assert (mine.filter(pl.col("team_group") == MINE).select(group_words())["team_group"] == "assigned to you").all()


def test_kappa_counts_blind_overlaps_only():
    # i1-i4 decided blind by both; on i5 and i6 bo decided after seeing ana's decision (not blind), and agreed.
    rows, blind = [], []
    labels = {"i1": ("accept", "accept"), "i2": ("reject", "reject"), "i3": ("accept", "reject"), "i4": ("reject", "accept"),
              "i5": ("reject", "reject"), "i6": ("accept", "accept")}
    n = 0
    for item, (a, b) in labels.items():
        for who, decision in (("ana", a), ("bo", b)):
            n += 1
            rows.append((n, item, who, decision, None))
            if not (who == "bo" and item in ("i5", "i6")):
                blind.append(n)
    log = responses_frame(rows)
    everything = reviewer_agreement(log).row(0, named=True)
    blind_only = blind_reviewer_agreement(log, blind).row(0, named=True)
    assert everything["n_items"] == 6 and blind_only["n_items"] == 4
    assert blind_only["agreement"] == pytest.approx(0.5) and blind_only["kappa"] == pytest.approx(0.0)
    assert everything["kappa"] > 0.3  # the informed agreements would have inflated it


def test_blind_ids_leave_out_undos_items_seen_and_unblind_review():
    class R:
        def __init__(self, id_, item_id, decision):
            self.id, self.item_id, self.decision = id_, item_id, decision

    recorded = [R(1, "i1", "accept"), R(2, "i2", "reject"), R(3, "i3", "undo")]
    assert blind_ids(recorded, {"i2"}, TeamSettings()) == [1]
    assert blind_ids(recorded, set(), TeamSettings(blind=False)) == []


# ---- the command -----------------------------------------------------------------------------------


def test_satsang_reviewers_add_list_plan_and_guidelines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    from curation.workspace import init_workspace
    from satsang.cli import app

    monkeypatch.delenv("SATSANG_DB_URL", raising=False)
    root = init_workspace(tmp_path / "ws").root
    run = lambda *args: CliRunner().invoke(app, [*args, "-w", str(root)], env={"COLUMNS": "300"})  # noqa: E731
    added = run("reviewers", "add", "Asha  Devi", "bo")
    assert added.exit_code == 0 and added.stdout.splitlines() == ["added: asha devi", "added: bo"]
    assert run("reviewers", "add", "ASHA DEVI").stdout.strip() == "already listed: asha devi"
    with ResponseStore.open(root) as store:
        assert store.registered_reviewers() == ["asha devi", "bo"]
    planned = run("reviewers", "plan", "--overlap", "0.2", "--open")
    assert planned.exit_code == 0 and read_team_settings(root) == TeamSettings(overlap_share=0.2, blind=False)
    listed = run("reviewers", "list")
    assert listed.stdout.splitlines() == ["asha devi", "bo", "plan: 1 reviewer(s) per item, 20% of items with 2; blind: no"]
    bad = run("reviewers", "plan", "--per-item", "3")
    assert bad.exit_code == 1 and bad.stdout == "" and bad.stderr.count("\n") == 1
    assert "reviewers_per_item must be at least 1 and at most overlap_reviewers (2)" in bad.stderr
    (root / TEAM_FILE).write_text("{\n  oops\n}")
    broken = run("reviewers", "list")
    assert broken.exit_code == 1 and broken.stderr.startswith(f"error: {root / TEAM_FILE}:2: not valid JSON")
    wrote = run("reviewers", "guidelines")
    assert wrote.exit_code == 0 and (root / "guidelines.md").exists()
