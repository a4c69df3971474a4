"""What a review response is, and the database schema that holds the log: tables, triggers, migrations, the hash chain.

`curation.responses.ResponseStore` applies the migrations and writes through this schema;
both dialects (SQLite, PostgreSQL) are written here side by side, once per step. Released
steps are never edited: a change is the next migration.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import polars as pl

DECISIONS: tuple[str, ...] = ("accept", "reject", "edit", "undo")
REASONS: tuple[str, ...] = ("parse error", "not contemplative", "duplicate", "incomplete", "off-topic", "other")


@dataclass(frozen=True)
class Response:
    """One stored response, as read back from the database."""

    id: int  # assigned by the database; grows in commit order
    item_id: str
    content_hash: str  # the item's exact-content hash when it was reviewed
    reviewer: str
    decision: str  # one of DECISIONS
    reason: str | None  # one of REASONS; required for reject
    note: str  # free text, "" if none
    edited_question: str | None  # edit only
    edited_answer: str | None  # edit only
    created_at: str  # ISO 8601, UTC
    undoes: int | None  # undo only: the id of the response it reverts


RESPONSE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Response))

# responses(): every row, oldest first.
RESPONSE_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Int64,
    "item_id": pl.String,
    "content_hash": pl.String,
    "reviewer": pl.String,
    "decision": pl.String,
    "reason": pl.String,
    "note": pl.String,
    "edited_question": pl.String,
    "edited_answer": pl.String,
    "created_at": pl.String,
    "undoes": pl.Int64,
}

# state(): one row per item with an effective response, by item_id: a response's columns less its
# id (`response_id` instead) and `undoes` (an effective response is never an undo).
STATE_SCHEMA: dict[str, pl.DataType] = {
    **{name: dtype for name, dtype in RESPONSE_SCHEMA.items() if name not in ("id", "undoes")},
    "response_id": pl.Int64,
}


# ---- the hash chain -----------------------------------------------------------------------

# comments(): every comment on an item (append-only, like responses).
COMMENT_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Int64,
    "item_id": pl.String,
    "content_hash": pl.String,
    "reviewer": pl.String,
    "body": pl.String,
    "created_at": pl.String,
}

# marks(reviewer): their standing drafts ("draft": JSON of the note and edit typed), skips and reveals.
MARK_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String,
    "kind": pl.String,
    "content_hash": pl.String,
    "payload": pl.String,
    "created_at": pl.String,
}


# The fields a row's chain hash covers (all but its id, which the database assigns on insert:
# the chain's order is the id order, and `undoes` ties an undo to the id it reverts).
CHAINED_COLUMNS: tuple[str, ...] = RESPONSE_COLUMNS[1:]


def chain_hash(previous: str, row: Mapping[str, Any]) -> str:
    """The row's link in the log's hash chain: sha256 of the previous link and the row's fields.

    The first row's previous link is "". Rewriting any stored field, removing a row or
    inserting one out of order breaks every later link's check against its predecessor,
    which integrity_check() reports. (A log cut short at its end is a shorter valid chain:
    dataset versions record the head they were made from.)
    """
    payload = json.dumps([row[name] for name in CHAINED_COLUMNS], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{previous}\n{payload}".encode("utf-8")).hexdigest()


INSERT_LINK = "INSERT INTO response_chain (id, chain) VALUES (?, ?)"


def link_existing_responses(execute: Callable[..., Any]) -> None:
    """Migration 3: link the responses already in the log, oldest first."""
    previous = ""
    rows = execute(f"SELECT id, {', '.join(CHAINED_COLUMNS)} FROM responses ORDER BY id").fetchall()
    for id_, *values in rows:
        previous = chain_hash(previous, dict(zip(CHAINED_COLUMNS, values)))
        execute(INSERT_LINK, (id_, previous))


# ---- tables and migrations ----------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    """One schema step, written once per dialect. Never edit a released step: add the next one.

    `backfill`, when given, runs after the step's statements, in the same transaction, for
    what SQL alone cannot compute (the hash chain over rows already in the log); it is given
    the store's `execute(sql, params)`, with "?" placeholders in either dialect.
    """

    version: int
    description: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]
    backfill: Callable[[Callable[..., Any]], None] | None = None  # given the store's execute(sql, params)


_APPEND_ONLY_MESSAGE = "responses are append-only: record a new response instead"

# The checks shared by both dialects: the rules a row must obey whatever wrote it.
_RESPONSE_CHECKS = """
    CHECK (reviewer <> ''),
    CHECK (decision IN ('accept', 'reject', 'edit', 'undo')),
    CHECK ((decision = 'undo') = (undoes IS NOT NULL)),
    CHECK (decision <> 'reject' OR reason IS NOT NULL),
    CHECK (decision <> 'edit' OR edited_question IS NOT NULL OR edited_answer IS NOT NULL)"""

_RESPONSE_COLUMNS_DDL = """
    item_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT,
    note TEXT NOT NULL DEFAULT '',
    edited_question TEXT,
    edited_answer TEXT,
    created_at TEXT NOT NULL,"""

# Migration 4: what a team needs beside the decisions. Every table is append-only (the latest row
# of a reviewer's draft or skip stands; an empty payload withdraws it), so nothing a reviewer
# wrote is ever lost, and the store still issues no UPDATE or DELETE.
_TEAM_TABLES: tuple[str, ...] = ("reviewers", "comments", "marks", "blind_decisions")
_TEAM_APPEND_ONLY_MESSAGE = "team review tables are append-only: add a new row instead"
# A reviewer's marks on an item: a draft (what they typed, not yet a decision), a skip, and "seen"
# (they were shown others' decisions on it: their later decisions there are not blind).
MARK_KINDS: tuple[str, ...] = ("draft", "skip", "seen")


def _team_tables_ddl(identity: str) -> tuple[str, ...]:
    return (
        "CREATE TABLE reviewers (name TEXT PRIMARY KEY, added_by TEXT NOT NULL DEFAULT '',"
        " added_at TEXT NOT NULL, CHECK (name <> ''))",
        f"""CREATE TABLE comments (
    id {identity},
    item_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    CHECK (reviewer <> ''),
    CHECK (body <> '')
)""",
        f"""CREATE TABLE marks (
    id {identity},
    item_id TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    kind TEXT NOT NULL,
    content_hash TEXT NOT NULL DEFAULT '',
    payload TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    CHECK (reviewer <> ''),
    CHECK (kind IN ('draft', 'skip', 'seen'))
)""",
        # A response given without its reviewer having seen anyone else's decision on the item.
        # No foreign key: PostgreSQL would answer a TRUNCATE of responses with it before the trigger.
        "CREATE TABLE blind_decisions (response_id BIGINT PRIMARY KEY, created_at TEXT NOT NULL)",
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "responses: append-only log of review decisions",
        sqlite=(
            f"""CREATE TABLE responses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,{_RESPONSE_COLUMNS_DDL}
    undoes INTEGER REFERENCES responses (id),{_RESPONSE_CHECKS}
)""",
            f"CREATE TRIGGER responses_no_update BEFORE UPDATE ON responses"
            f" BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}'); END",
            f"CREATE TRIGGER responses_no_delete BEFORE DELETE ON responses"
            f" BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}'); END",
        ),
        postgresql=(
            f"""CREATE TABLE responses (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,{_RESPONSE_COLUMNS_DDL}
    undoes BIGINT REFERENCES responses (id),{_RESPONSE_CHECKS}
)""",
            f"""CREATE FUNCTION responses_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION '{_APPEND_ONLY_MESSAGE}'; END $$""",
            "CREATE TRIGGER responses_no_update_or_delete BEFORE UPDATE OR DELETE ON responses"
            " FOR EACH ROW EXECUTE FUNCTION responses_append_only()",
            "CREATE TRIGGER responses_no_truncate BEFORE TRUNCATE ON responses"
            " FOR EACH STATEMENT EXECUTE FUNCTION responses_append_only()",
        ),
    ),
    Migration(
        2,
        "index responses by (item_id, id): history, undo and state read one item's rows in order",
        sqlite=("CREATE INDEX responses_item_id ON responses (item_id, id)",),
        postgresql=("CREATE INDEX responses_item_id ON responses (item_id, id)",),
    ),
    Migration(
        3,
        "response_chain: a hash chain over the log in its own append-only table, so a rewritten,"
        " removed or reordered response is detected; REPLACE INTO refused",
        sqlite=(
            # REPLACE deletes the old row without firing delete triggers (unless a connection turns
            # recursive_triggers on): refuse any insert that names an id already in the log.
            f"CREATE TRIGGER responses_no_replace BEFORE INSERT ON responses"
            f" WHEN EXISTS (SELECT 1 FROM responses WHERE id = NEW.id)"
            f" BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}'); END",
            "CREATE TABLE response_chain (id INTEGER PRIMARY KEY, chain TEXT NOT NULL)",
            f"CREATE TRIGGER response_chain_no_update BEFORE UPDATE ON response_chain"
            f" BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}'); END",
            f"CREATE TRIGGER response_chain_no_delete BEFORE DELETE ON response_chain"
            f" BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}'); END",
            f"CREATE TRIGGER response_chain_no_replace BEFORE INSERT ON response_chain"
            f" WHEN EXISTS (SELECT 1 FROM response_chain WHERE id = NEW.id)"
            f" BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}'); END",
        ),
        # PostgreSQL: ON CONFLICT DO UPDATE fires the update trigger and TRUNCATE its own, on both tables.
        # No foreign key from the links to the responses: it would answer a TRUNCATE before the
        # append-only trigger does; integrity_check() finds links without a response instead.
        postgresql=(
            "CREATE TABLE response_chain (id BIGINT PRIMARY KEY, chain TEXT NOT NULL)",
            "CREATE TRIGGER response_chain_no_update_or_delete BEFORE UPDATE OR DELETE ON response_chain"
            " FOR EACH ROW EXECUTE FUNCTION responses_append_only()",
            "CREATE TRIGGER response_chain_no_truncate BEFORE TRUNCATE ON response_chain"
            " FOR EACH STATEMENT EXECUTE FUNCTION responses_append_only()",
        ),
        backfill=link_existing_responses,
    ),
    Migration(
        4,
        "team review: registered reviewers, comments on items, drafts, skips and reveals that persist, blind-decision marks;"
        " all append-only",
        sqlite=(
            *_team_tables_ddl("INTEGER PRIMARY KEY AUTOINCREMENT"),
            *[
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table}"
                f" BEGIN SELECT RAISE(ABORT, '{_TEAM_APPEND_ONLY_MESSAGE}'); END"
                for table in _TEAM_TABLES
                for verb in ("UPDATE", "DELETE")
            ],
            "CREATE INDEX comments_item_id ON comments (item_id, id)",
            "CREATE INDEX marks_reviewer ON marks (reviewer, id)",
        ),
        postgresql=(
            *_team_tables_ddl("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
            *[
                f"CREATE TRIGGER {table}_no_{verb} BEFORE {verb.replace('_', ' ').upper()} ON {table}"
                f" FOR EACH {'STATEMENT' if verb == 'truncate' else 'ROW'} EXECUTE FUNCTION responses_append_only()"
                for table in _TEAM_TABLES
                for verb in ("update_or_delete", "truncate")
            ],
            "CREATE INDEX comments_item_id ON comments (item_id, id)",
            "CREATE INDEX marks_reviewer ON marks (reviewer, id)",
        ),
    ),
)


SCHEMA_VERSION = MIGRATIONS[-1].version

MIGRATIONS_TABLE_DDL = (
    "CREATE TABLE schema_migrations ("
    " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
)

# PostgreSQL advisory lock key that serialises migrations of one database ("satsang").
PG_MIGRATION_LOCK = 0x7361747361_6E67


def reviewer_grants(role: str, schema: str = "public") -> list[str]:
    """PostgreSQL: the GRANTs that let `role` review into a log it does not own (run them as the owner).

    The owner of a table can drop it, alter it or disable its triggers; a reviewer role that
    owns nothing can only read and append. UPDATE is granted because `LOCK TABLE ... IN
    EXCLUSIVE MODE` (writers in commit order) asks for it; the append-only trigger, which
    only the owner can disable, still refuses every UPDATE.
    """
    for name in (role, schema):
        if not name.replace("_", "").isalnum():
            raise ValueError(f"{name!r}: not a plain SQL identifier")
    return [
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"GRANT SELECT ON {schema}.schema_migrations TO {role}",
        f"GRANT SELECT, INSERT, UPDATE ON {schema}.responses TO {role}",
        f"GRANT SELECT, INSERT ON {schema}.response_chain TO {role}",
    ]
