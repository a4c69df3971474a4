"""The response store: decisions, undo and re-review, history, state, validation, migrations.

Every store test runs twice, against SQLite and against a real PostgreSQL
(tests/postgres.py starts one, or skips saying why).
"""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path

import polars as pl
import pytest
from postgres import Database, PostgresServer, database, postgres_server  # noqa: F401  (fixtures)

import curation.response_schema as response_schema_module
import curation.responses as responses_module
from curation.responses import (
    DECISIONS,
    MIGRATIONS,
    REASONS,
    RESPONSE_SCHEMA,
    SCHEMA_VERSION,
    STATE_SCHEMA,
    InvalidResponse,
    Response,
    ResponseStore,
    ResponseStoreError,
    SchemaTooNew,
)


# Real pair ids and hashes have this shape (32 hex chars); the tests only need them distinct.
ITEM_A, ITEM_B, ITEM_C = ("a" * 32, "b" * 32, "c" * 32)
HASH_1, HASH_2 = ("1" * 32, "2" * 32)


@pytest.fixture
def store(database: Database):
    with database.open() as opened:
        yield opened


def decisions_of(store: ResponseStore) -> dict[str, str]:
    return dict(store.state().select("item_id", "decision").iter_rows())


# ---- decisions ------------------------------------------------------------------------------


def test_vocabularies_are_fixed():
    assert DECISIONS == ("accept", "reject", "edit", "undo")
    assert REASONS == ("parse error", "not contemplative", "duplicate", "incomplete", "off-topic", "other")


def test_accept_is_stored_whole_and_becomes_the_state(store: ResponseStore):
    response = store.record(ITEM_A, HASH_1, "ana", "accept", note="a clear pointer")

    assert isinstance(response.id, int) and response.id >= 1
    assert response == Response(
        id=response.id,
        item_id=ITEM_A,
        content_hash=HASH_1,
        reviewer="ana",
        decision="accept",
        reason=None,
        note="a clear pointer",
        edited_question=None,
        edited_answer=None,
        created_at=response.created_at,
        undoes=None,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", response.created_at)
    assert store.history(ITEM_A) == [response]
    assert store.current(ITEM_A) == response
    state = store.state()
    assert state.schema == pl.Schema(STATE_SCHEMA)
    assert state.to_dicts() == [
        {
            "item_id": ITEM_A,
            "content_hash": HASH_1,
            "reviewer": "ana",
            "decision": "accept",
            "reason": None,
            "note": "a clear pointer",
            "edited_question": None,
            "edited_answer": None,
            "created_at": response.created_at,
            "response_id": response.id,
        }
    ]


def test_reject_keeps_its_reason_and_note(store: ResponseStore):
    response = store.record(ITEM_A, HASH_1, "ana", "reject", reason="other", note="a list of tips")
    assert (response.decision, response.reason, response.note) == ("reject", "other", "a list of tips")
    assert store.state().row(0, named=True)["reason"] == "other"


@pytest.mark.parametrize("reason", REASONS[:-1])
def test_every_listed_reason_is_accepted_on_a_reject(store: ResponseStore, reason: str):
    assert store.record(ITEM_A, HASH_1, "ana", "reject", reason=reason).reason == reason


def test_edit_keeps_the_edited_text(store: ResponseStore):
    response = store.record(
        ITEM_A,
        HASH_1,
        "ana",
        "edit",
        reason="parse error",
        edited_question="Who am I?",
        edited_answer="",  # the answer was silence: empty is a real edit, not a missing one
    )
    row = store.state().row(0, named=True)
    assert (row["decision"], row["edited_question"], row["edited_answer"]) == ("edit", "Who am I?", "")
    assert store.history(ITEM_A) == [response]

    only_answer = store.record(ITEM_B, HASH_1, "ana", "edit", edited_answer="Find out who asks.")
    assert (only_answer.edited_question, only_answer.edited_answer) == (None, "Find out who asks.")


def test_re_review_appends_and_the_latest_wins(store: ResponseStore):
    first = store.record(ITEM_A, HASH_1, "ana", "accept")
    second = store.record(ITEM_A, HASH_1, "bo", "reject", reason="duplicate")
    third = store.record(ITEM_A, HASH_1, "ana", "edit", edited_question="Who is it that feels lost?")

    assert [r.id for r in store.history(ITEM_A)] == [first.id, second.id, third.id]
    assert first.id < second.id < third.id
    assert store.current(ITEM_A) == third
    assert decisions_of(store) == {ITEM_A: "edit"}


def test_undo_reverts_to_the_response_before_and_keeps_history(store: ResponseStore):
    accepted = store.record(ITEM_A, HASH_1, "ana", "accept")
    rejected = store.record(ITEM_A, HASH_1, "bo", "reject", reason="off-topic")

    undo = store.undo(ITEM_A, "bo")
    assert undo is not None
    assert (undo.decision, undo.undoes, undo.reviewer, undo.content_hash) == ("undo", rejected.id, "bo", HASH_1)
    assert store.current(ITEM_A) == accepted
    assert decisions_of(store) == {ITEM_A: "accept"}
    assert [r.decision for r in store.history(ITEM_A)] == ["accept", "reject", "undo"]


def test_undo_walks_back_until_the_item_is_unreviewed(store: ResponseStore):
    accepted = store.record(ITEM_A, HASH_1, "ana", "accept")
    store.record(ITEM_B, HASH_1, "ana", "accept")
    rejected = store.record(ITEM_A, HASH_1, "ana", "reject", reason="incomplete")

    assert store.undo(ITEM_A, "ana").undoes == rejected.id
    assert store.undo(ITEM_A, "ana").undoes == accepted.id
    assert store.current(ITEM_A) is None
    assert decisions_of(store) == {ITEM_B: "accept"}  # ITEM_A has no row: every response undone

    n_rows = store.responses().height
    assert store.undo(ITEM_A, "ana") is None  # nothing left to undo: nothing written
    assert store.undo(ITEM_C, "ana") is None  # never reviewed
    assert store.responses().height == n_rows
    with pytest.raises(InvalidResponse, match="nothing to undo"):
        store.record(ITEM_A, HASH_1, "ana", "undo")

    again = store.record(ITEM_A, HASH_1, "bo", "accept")  # re-review after undo: just append
    assert store.current(ITEM_A) == again
    assert len(store.history(ITEM_A)) == 5


def test_undo_after_re_review_reverts_only_the_re_review(store: ResponseStore):
    store.record(ITEM_A, HASH_1, "ana", "accept")
    rejected = store.record(ITEM_A, HASH_1, "ana", "reject", reason="duplicate")
    store.undo(ITEM_A, "ana")
    edited = store.record(ITEM_A, HASH_1, "ana", "edit", edited_answer="Silence.")
    store.record(ITEM_A, HASH_1, "ana", "accept")
    store.undo(ITEM_A, "ana")

    assert store.current(ITEM_A) == edited
    # the reject, undone long ago, never comes back
    assert store.undo(ITEM_A, "ana").undoes == edited.id
    assert store.current(ITEM_A).decision == "accept"
    assert rejected.id not in store.state()["response_id"].to_list()


def test_content_hash_at_review_time_is_kept(store: ResponseStore):
    store.record(ITEM_A, HASH_1, "ana", "accept")
    store.record(ITEM_A, HASH_2, "ana", "accept")  # the wording moved; re-reviewed

    assert [r.content_hash for r in store.history(ITEM_A)] == [HASH_1, HASH_2]
    assert store.state()["content_hash"].to_list() == [HASH_2]
    undo = store.undo(ITEM_A, "ana")
    assert undo.content_hash == HASH_2  # an undo carries the hash of what it reverted
    assert store.state()["content_hash"].to_list() == [HASH_1]


def test_record_many_appends_in_order_in_one_transaction(store: ResponseStore):
    stored = store.record_many(
        [
            {"item_id": ITEM_A, "content_hash": HASH_1, "reviewer": "ana", "decision": "accept"},
            {"item_id": ITEM_B, "content_hash": HASH_1, "reviewer": "ana", "decision": "reject", "reason": "duplicate"},
            {"item_id": ITEM_A, "reviewer": "ana", "decision": "undo"},  # undoes the accept just above
            {"item_id": ITEM_C, "content_hash": HASH_2, "reviewer": "ana", "decision": "edit", "edited_answer": "."},
        ]
    )
    assert [r.decision for r in stored] == ["accept", "reject", "undo", "edit"]
    assert stored[2].undoes == stored[0].id
    assert [r.id for r in stored] == sorted(r.id for r in stored)
    assert len({r.created_at for r in stored}) == 1  # one action, one time
    assert decisions_of(store) == {ITEM_B: "reject", ITEM_C: "edit"}
    assert store.record_many([]) == []


def test_record_many_writes_nothing_when_any_response_is_invalid(store: ResponseStore):
    store.record(ITEM_C, HASH_1, "ana", "accept")
    batch = [
        {"item_id": ITEM_A, "content_hash": HASH_1, "reviewer": "ana", "decision": "accept"},
        {"item_id": ITEM_B, "content_hash": HASH_1, "reviewer": "ana", "decision": "reject"},  # no reason
    ]
    with pytest.raises(InvalidResponse, match=r"^response 1: a reject needs a reason"):
        store.record_many(batch)

    # Fails inside the transaction, after the first row was inserted: rolled back too.
    batch = [
        {"item_id": ITEM_A, "content_hash": HASH_1, "reviewer": "ana", "decision": "accept"},
        {"item_id": ITEM_B, "reviewer": "ana", "decision": "undo"},  # ITEM_B has nothing to undo
    ]
    with pytest.raises(InvalidResponse, match="nothing to undo"):
        store.record_many(batch)
    assert store.responses()["item_id"].to_list() == [ITEM_C]


INVALID = [
    ({"decision": "maybe"}, "decision must be one of"),
    ({"decision": "reject"}, "a reject needs a reason"),
    ({"decision": "reject", "reason": "boring"}, "reason must be one of"),
    ({"decision": "reject", "reason": "other"}, "reason 'other' needs a note"),
    ({"decision": "edit"}, "an edit needs edited_question and/or edited_answer"),
    ({"decision": "edit", "edited_question": "  "}, "edited_question is blank"),
    ({"decision": "accept", "edited_answer": "x"}, "edited text belongs to an edit"),
    ({"reviewer": "  "}, "reviewer is required"),
    ({"item_id": ""}, "item_id is required"),
    ({"content_hash": ""}, "content_hash is required"),
    ({"note": 3}, "note must be a string"),
]


@pytest.mark.parametrize(("change", "message"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_responses_are_refused_and_nothing_is_written(store: ResponseStore, change: dict, message: str):
    response = {"item_id": ITEM_A, "content_hash": HASH_1, "reviewer": "ana", "decision": "accept", **change}
    with pytest.raises(InvalidResponse, match=re.escape(message)):
        store.record(**response)
    with pytest.raises(InvalidResponse, match=re.escape(message)):
        store.record_many([response])
    assert store.responses().height == 0


def test_unknown_fields_in_a_batch_are_refused(store: ResponseStore):
    with pytest.raises(InvalidResponse, match=r"response 0: unknown field\(s\) \['decison'\]"):
        store.record_many([{"item_id": ITEM_A, "content_hash": HASH_1, "reviewer": "ana", "decison": "accept"}])


def test_invalid_response_is_a_value_error_and_a_store_error():
    assert issubclass(InvalidResponse, ValueError) and issubclass(InvalidResponse, ResponseStoreError)


# ---- reading --------------------------------------------------------------------------------


def test_responses_lists_every_row_oldest_first(store: ResponseStore):
    store.record(ITEM_A, HASH_1, "ana", "accept")
    store.record(ITEM_B, HASH_1, "bo", "reject", reason="not contemplative")
    store.undo(ITEM_A, "bo")
    frame = store.responses()
    assert frame.schema == pl.Schema(RESPONSE_SCHEMA)
    assert frame["decision"].to_list() == ["accept", "reject", "undo"]
    assert frame["undoes"].to_list() == [None, None, frame["id"][0]]
    assert [Response(**row) for row in frame.to_dicts()] == store.history(ITEM_A)[:1] + store.history(
        ITEM_B
    ) + store.history(ITEM_A)[1:]


def test_state_has_one_row_per_reviewed_item_sorted(store: ResponseStore):
    assert store.state().schema == pl.Schema(STATE_SCHEMA) and store.state().height == 0
    for item in (ITEM_C, ITEM_A, ITEM_B):
        store.record(item, HASH_1, "ana", "accept")
    store.record(ITEM_C, HASH_1, "bo", "reject", reason="duplicate")
    state = store.state()
    assert state["item_id"].to_list() == [ITEM_A, ITEM_B, ITEM_C]
    assert decisions_of(store) == {ITEM_A: "accept", ITEM_B: "accept", ITEM_C: "reject"}
    latest = {item: store.current(item).id for item in (ITEM_A, ITEM_B, ITEM_C)}
    assert dict(state.select("item_id", "response_id").iter_rows()) == latest


def test_reviewers_are_everyone_who_responded(store: ResponseStore):
    assert store.reviewers() == []
    store.record(ITEM_A, HASH_1, "ravi", "accept")
    store.record(ITEM_B, HASH_1, " ana ", "accept")  # stripped
    store.undo(ITEM_A, "bo")
    assert store.reviewers() == ["ana", "bo", "ravi"]


def test_responses_survive_reopening(database: Database):
    with database.open() as store:
        accepted = store.record(ITEM_A, HASH_1, "ana", "accept")
    with database.open() as store:
        assert store.history(ITEM_A) == [accepted]
        assert store.integrity_check() == []


def test_a_store_is_safe_to_share_between_threads(store: ResponseStore):
    def review(thread: int) -> None:
        for i in range(25):
            store.record(f"{thread:02d}{i:030d}", HASH_1, f"reviewer-{thread}", "accept")

    threads = [threading.Thread(target=review, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.state().height == 100
    assert store.integrity_check() == []


def test_a_closed_store_says_so(database: Database):
    with database.open() as store:
        pass
    with pytest.raises(ResponseStoreError, match="closed"):
        store.state()
    store.close()  # closing twice is harmless


# ---- append-only ----------------------------------------------------------------------------


def test_the_database_refuses_update_and_delete(database: Database):
    with database.open() as store:
        store.record(ITEM_A, HASH_1, "ana", "accept")
    connection = database.connect()
    try:
        for statement in ("UPDATE responses SET decision = 'reject'", "DELETE FROM responses"):
            with pytest.raises(Exception, match="append-only"):
                connection.execute(statement)
        if database.backend == "postgresql":
            with pytest.raises(Exception, match="append-only"):
                connection.execute("TRUNCATE responses")
    finally:
        connection.close()
    with database.open() as store:
        assert decisions_of(store) == {ITEM_A: "accept"}


def test_replace_into_cannot_rewrite_a_response(database: Database):
    """REPLACE deletes the old row without firing delete triggers: the log must refuse it anyway."""
    with database.open() as store:
        first = store.record(ITEM_A, HASH_1, "ana", "accept")
    columns = "(id, item_id, content_hash, reviewer, decision, created_at)"
    values = (first.id, ITEM_A, HASH_1, "mallory", "accept", "2020-01-01T00:00:00+00:00")
    if database.backend == "sqlite":
        rewrites = [f"REPLACE INTO responses {columns} VALUES (?, ?, ?, ?, ?, ?)",
                    f"INSERT OR REPLACE INTO responses {columns} VALUES (?, ?, ?, ?, ?, ?)",
                    f"INSERT INTO responses {columns} VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET reviewer = excluded.reviewer"]
    else:
        rewrites = [f"INSERT INTO responses {columns} OVERRIDING SYSTEM VALUE VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET reviewer = excluded.reviewer, decision = excluded.decision"]
    connection = database.connect()
    try:
        for statement in rewrites:
            with pytest.raises(Exception, match="append-only"):
                connection.execute(database.placeholder(statement), values)
    finally:
        connection.close()
    with database.open() as store:
        assert [(r.reviewer, r.decision) for r in store.history(ITEM_A)] == [("ana", "accept")]
        assert store.integrity_check() == []


def test_a_rewrite_behind_the_triggers_is_found_by_the_hash_chain(database: Database):
    """Whoever can drop or disable the triggers can rewrite rows; the chain says which row moved."""
    with database.open() as store:
        store.record(ITEM_A, HASH_1, "ana", "accept")
        second = store.record(ITEM_B, HASH_1, "ana", "reject", reason="duplicate")
        store.record(ITEM_A, HASH_2, "ben", "accept")
        assert store.integrity_check() == []
    connection = database.connect()
    try:
        if database.backend == "sqlite":
            connection.execute("DROP TRIGGER responses_no_update")
            connection.execute("UPDATE responses SET decision = 'accept', reason = NULL WHERE id = ?", (second.id,))
            connection.execute(MIGRATIONS[0].sqlite[1])  # put the trigger back: it looks untouched
        else:
            connection.execute("ALTER TABLE responses DISABLE TRIGGER USER")
            connection.execute("UPDATE responses SET decision = 'accept', reason = NULL WHERE id = %s", (second.id,))
            connection.execute("ALTER TABLE responses ENABLE TRIGGER USER")
    finally:
        connection.close()
    with database.open() as store:
        problems = store.integrity_check()
    assert len(problems) == 1 and problems[0].startswith(f"response {second.id}: its chain hash does not follow"), problems


def test_a_response_removed_behind_the_triggers_is_found(database: Database):
    with database.open() as store:
        store.record(ITEM_A, HASH_1, "ana", "accept")
        second = store.record(ITEM_B, HASH_1, "ana", "accept")
        third = store.record(ITEM_B, HASH_2, "ana", "reject", reason="incomplete")
    connection = database.connect()
    try:
        if database.backend == "sqlite":
            connection.execute("DROP TRIGGER responses_no_delete")
        else:
            connection.execute("ALTER TABLE responses DISABLE TRIGGER USER")
        connection.execute(database.placeholder("DELETE FROM responses WHERE id = ?"), (second.id,))
    finally:
        connection.close()
    with database.open() as store:
        problems = store.integrity_check()
    assert any(p.startswith(f"response {third.id}: its chain hash does not follow") for p in problems), problems
    assert any(p.startswith(f"response {second.id}: its chain link is there but the response is gone") for p in problems), problems


def test_the_store_code_never_updates_or_deletes():
    for module in (responses_module, response_schema_module):  # the store, and its schema and migrations
        source = Path(module.__file__).read_text(encoding="utf-8")
        assert not re.search(r"\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b|\bTRUNCATE\s+\w+\s*[\"';]", source, re.IGNORECASE)


# ---- integrity --------------------------------------------------------------------------------


def test_integrity_check_reports_undos_that_break_the_rules(database: Database):
    with database.open() as store:
        a = store.record(ITEM_A, HASH_1, "ana", "accept")
        store.record(ITEM_B, HASH_1, "ana", "accept")
        store.undo(ITEM_A, "ana")
        assert store.integrity_check() == []
    # Rows the store would never write, inserted behind its back.
    connection = database.connect()
    try:
        insert = database.placeholder(
            "INSERT INTO responses (item_id, content_hash, reviewer, decision, created_at, undoes)"
            " VALUES (?, ?, 'mallory', 'undo', '2024-01-01T00:00:00+00:00', ?)"
        )
        connection.execute(insert, (ITEM_B, HASH_1, a.id))  # undoes another item's response
        connection.execute(insert, (ITEM_A, HASH_1, a.id))  # undoes it a second time
    finally:
        connection.close()
    with database.open() as store:
        problems = store.integrity_check()
    assert any("of another item" in p for p in problems), problems
    assert any(f"response {a.id}: undone 3 times" in p for p in problems), problems


def test_integrity_check_reports_a_missing_append_only_trigger(database: Database):
    with database.open():
        pass
    connection = database.connect()
    try:
        if database.backend == "sqlite":
            connection.execute("DROP TRIGGER responses_no_delete")
        else:
            connection.execute("DROP TRIGGER responses_no_truncate ON responses")
    finally:
        connection.close()
    with database.open() as store:
        assert store.integrity_check() == ["the append-only triggers on responses are missing"]


# ---- opening ------------------------------------------------------------------------------------


def test_sqlite_lives_in_the_workspace_in_wal_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SATSANG_DB_URL", raising=False)
    with ResponseStore.open(tmp_path) as store:
        assert store.backend == "sqlite"
        assert store.location == str(tmp_path / "reviews.db")
        assert store._execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store._execute("PRAGMA foreign_keys").fetchone()[0] == 1
    connection = sqlite3.connect(tmp_path / "reviews.db")
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()


def test_sqlite_url_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SATSANG_DB_URL", raising=False)
    with ResponseStore.open(tmp_path / "ignored", url=f"sqlite:///{tmp_path}/team.db") as store:
        store.record(ITEM_A, HASH_1, "ana", "accept")
    assert (tmp_path / "team.db").exists()


def test_opening_a_missing_workspace_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SATSANG_DB_URL", raising=False)
    with pytest.raises(ResponseStoreError, match="no such workspace directory"):
        ResponseStore.open(tmp_path / "nowhere")
    with pytest.raises(ResponseStoreError, match="unsupported database URL"):
        ResponseStore.open(tmp_path, url="mysql://x@y/z")


def test_unreachable_postgresql_is_a_clear_error_without_the_password(tmp_path: Path):
    pytest.importorskip("psycopg")
    url = f"postgresql://ana:s3cret@/reviews?host={tmp_path}/no-socket-here"
    with pytest.raises(ResponseStoreError, match="cannot connect") as raised:
        ResponseStore.open(tmp_path, url=url)
    assert "s3cret" not in str(raised.value) and "ana:***@" in str(raised.value)


def test_postgresql_is_chosen_by_url_argument_first_argument_or_environment(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    url = postgres_server.new_schema_url()
    try:
        with ResponseStore.open(url) as store:
            assert store.backend == "postgresql"
            store.record(ITEM_A, HASH_1, "ana", "accept")
        with ResponseStore.open(tmp_path, url=url) as store:
            assert store.backend == "postgresql" and decisions_of(store) == {ITEM_A: "accept"}
        monkeypatch.setenv("SATSANG_DB_URL", url)
        with ResponseStore.open(tmp_path) as store:
            assert store.backend == "postgresql" and decisions_of(store) == {ITEM_A: "accept"}
        assert not (tmp_path / "reviews.db").exists()
    finally:
        postgres_server.drop_schema(url)


# ---- migrations ---------------------------------------------------------------------------------

# The v1 schema exactly as the first release created it. Frozen here on purpose: this is
# what old workspaces hold, whatever MIGRATIONS says today.
V1_SCHEMA = {
    "sqlite": [
        """CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)""",
        """CREATE TABLE responses (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            item_id TEXT NOT NULL, content_hash TEXT NOT NULL, reviewer TEXT NOT NULL, decision TEXT NOT NULL,
            reason TEXT, note TEXT NOT NULL DEFAULT '', edited_question TEXT, edited_answer TEXT,
            created_at TEXT NOT NULL, undoes INTEGER REFERENCES responses (id),
            CHECK (reviewer <> ''), CHECK (decision IN ('accept', 'reject', 'edit', 'undo')),
            CHECK ((decision = 'undo') = (undoes IS NOT NULL)), CHECK (decision <> 'reject' OR reason IS NOT NULL),
            CHECK (decision <> 'edit' OR edited_question IS NOT NULL OR edited_answer IS NOT NULL))""",
        """CREATE TRIGGER responses_no_update BEFORE UPDATE ON responses
            BEGIN SELECT RAISE(ABORT, 'responses are append-only: record a new response instead'); END""",
        """CREATE TRIGGER responses_no_delete BEFORE DELETE ON responses
            BEGIN SELECT RAISE(ABORT, 'responses are append-only: record a new response instead'); END""",
    ],
    "postgresql": [
        """CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)""",
        """CREATE TABLE responses (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            item_id TEXT NOT NULL, content_hash TEXT NOT NULL, reviewer TEXT NOT NULL, decision TEXT NOT NULL,
            reason TEXT, note TEXT NOT NULL DEFAULT '', edited_question TEXT, edited_answer TEXT,
            created_at TEXT NOT NULL, undoes BIGINT REFERENCES responses (id),
            CHECK (reviewer <> ''), CHECK (decision IN ('accept', 'reject', 'edit', 'undo')),
            CHECK ((decision = 'undo') = (undoes IS NOT NULL)), CHECK (decision <> 'reject' OR reason IS NOT NULL),
            CHECK (decision <> 'edit' OR edited_question IS NOT NULL OR edited_answer IS NOT NULL))""",
        """CREATE FUNCTION responses_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'responses are append-only: record a new response instead'; END $$""",
        """CREATE TRIGGER responses_no_update_or_delete BEFORE UPDATE OR DELETE ON responses
            FOR EACH ROW EXECUTE FUNCTION responses_append_only()""",
        """CREATE TRIGGER responses_no_truncate BEFORE TRUNCATE ON responses
            FOR EACH STATEMENT EXECUTE FUNCTION responses_append_only()""",
    ],
}


def create_v1_database(database: Database) -> None:
    connection = database.connect()
    try:
        for statement in V1_SCHEMA[database.backend]:
            connection.execute(statement)
        connection.execute(
            "INSERT INTO schema_migrations VALUES (1, 'responses: append-only log of review decisions',"
            " '2024-01-01T00:00:00+00:00')"
        )
        rows = [
            (ITEM_A, HASH_1, "ana", "accept", None, None),
            (ITEM_A, HASH_1, "bo", "reject", "duplicate", None),
            (ITEM_A, HASH_1, "bo", "undo", None, 2),
            (ITEM_B, HASH_2, "ana", "reject", "off-topic", None),
        ]
        for row in rows:
            connection.execute(
                database.placeholder(
                    "INSERT INTO responses (item_id, content_hash, reviewer, decision, reason, undoes, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, '2024-01-01T00:00:00+00:00')"
                ),
                row,
            )
    finally:
        connection.close()


def index_names(database: Database) -> set[str]:
    connection = database.connect()
    try:
        if database.backend == "sqlite":
            rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
        else:
            rows = connection.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'responses'").fetchall()
    finally:
        connection.close()
    return {row[0] for row in rows}


def test_a_new_database_is_at_the_latest_version(store: ResponseStore):
    assert SCHEMA_VERSION == 4
    assert store.schema_version() == 4


def test_a_v1_database_is_upgraded_on_open_and_keeps_its_responses(database: Database):
    create_v1_database(database)
    assert "responses_item_id" not in index_names(database)

    with database.open() as store:
        assert store.schema_version() == 4
        assert "responses_item_id" in index_names(database)
        assert [r.decision for r in store.history(ITEM_A)] == ["accept", "reject", "undo"]
        assert decisions_of(store) == {ITEM_A: "accept", ITEM_B: "reject"}
        assert store.integrity_check() == []
        new = store.record(ITEM_B, HASH_2, "ana", "accept")
        assert new.id == 5

    connection = database.connect()
    try:
        versions = connection.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    finally:
        connection.close()
    assert [v[0] for v in versions] == [1, 2, 3, 4]


def test_a_database_from_a_newer_release_is_refused(database: Database):
    with database.open() as store:
        store.record(ITEM_A, HASH_1, "ana", "accept")
    connection = database.connect()
    try:
        connection.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', '2030-01-01T00:00:00+00:00')")
    finally:
        connection.close()
    with pytest.raises(SchemaTooNew, match=r"schema version 99 is newer than this satsang knows \(4\); upgrade"):
        database.open()


def test_a_foreign_responses_table_is_refused(database: Database):
    connection = database.connect()
    try:
        connection.execute("CREATE TABLE responses (id INTEGER)")
    finally:
        connection.close()
    with pytest.raises(ResponseStoreError, match="not a satsang review database"):
        database.open()
