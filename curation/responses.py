"""Review decisions ("responses"): an append-only log in SQLite (WAL) or PostgreSQL.

A response is one human act on one item: accept, reject (with a reason from a
controlled list), edit (with the edited question and/or answer), or undo. Rows are
only ever appended: an undo is a new row pointing at the response it reverts, and a
re-review is simply a newer response. The *effective* response of an item is its
latest response that is neither an undo nor undone; an item whose every response was
undone has none, and is unreviewed again. History is never lost.

Where it lives: `<workspace>/reviews.db` (SQLite, WAL) by default; a PostgreSQL
database when given a `postgresql://` URL (`url=`, or `$SATSANG_DB_URL`), so a team
can review into one place. Both have the same tables, the same migrations and pass
the same tests.

Guarantees, and why:

- Every call that writes is one committed transaction, so a reviewer never sees half a
  bulk action, and a process killed mid-stream loses nothing it was told was stored.
- SQLite runs `synchronous=FULL`: in WAL mode `NORMAL` survives a killed process but
  can lose the last commits on power loss. A decision costs a reviewer a minute of
  reading; the fsync it buys costs well under a millisecond.
- Writers are serialised (SQLite `BEGIN IMMEDIATE`; PostgreSQL `LOCK TABLE ... IN
  EXCLUSIVE MODE`, which still lets readers through), so ids grow in commit order:
  "latest" means latest committed, an undo always targets what was current when it
  committed, and a reader that remembers the last id it saw misses nothing.
- Append-only is enforced by the database as well: triggers refuse UPDATE, DELETE and
  (SQLite) REPLACE INTO on `responses`, and TRUNCATE (PostgreSQL). This module issues none.
- Tampering is evident: every response has a link in a hash chain (`response_chain`,
  append-only too; `chain_hash`), so a row rewritten, removed or inserted by someone who
  dropped the triggers is named by `integrity_check()`.
- The schema carries a version (`schema_migrations`). Opening a store applies the
  missing migrations in one transaction; a database newer than this code is refused.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import polars as pl

from curation.errors import CurationError
from curation.files import utc_now
from curation.redaction import redact_url
from curation.response_checks import log_problems

# What a response is, and the tables and migrations that hold it (re-exported: callers import them from here).
from curation.response_schema import (  # noqa: F401
    CHAINED_COLUMNS,
    COMMENT_SCHEMA,
    DECISIONS,
    INSERT_LINK,
    MARK_KINDS,
    MARK_SCHEMA,
    MIGRATIONS,
    MIGRATIONS_TABLE_DDL,
    PG_MIGRATION_LOCK,
    REASONS,
    RESPONSE_COLUMNS,
    RESPONSE_SCHEMA,
    SCHEMA_VERSION,
    STATE_SCHEMA,
    Response,
    chain_hash,
    reviewer_grants,
)

DB_URL_ENV = "SATSANG_DB_URL"
SQLITE_FILE = "reviews.db"

Backend = Literal["sqlite", "postgresql"]


class ResponseStoreError(CurationError):
    """The review database cannot be opened or used (unreachable, newer schema, not ours, closed)."""


class SchemaTooNew(ResponseStoreError):
    """The database was written by a newer satsang: its schema version is above every migration known here."""


class InvalidResponse(ResponseStoreError, ValueError):
    """A response failed validation; nothing was written."""


# The effective response of one item (parameter: item_id): its latest response that is
# neither an undo nor undone. Undos point at their target, so "undone" is one lookup.
_EFFECTIVE = """WHERE r.item_id = ? AND r.decision <> 'undo'
      AND NOT EXISTS (SELECT 1 FROM responses AS u WHERE u.item_id = r.item_id AND u.undoes = r.id)
    ORDER BY r.id DESC LIMIT 1"""

# The same for one reviewer's own responses (parameters: item_id, reviewer): what a blind reviewer's undo reverts.
_EFFECTIVE_OWN = _EFFECTIVE.replace("WHERE r.item_id = ?", "WHERE r.item_id = ? AND r.reviewer = ?", 1)

_INSERT = (
    f"INSERT INTO responses ({', '.join(CHAINED_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in CHAINED_COLUMNS)}) RETURNING id"
)
# PostgreSQL: the response and its link in one statement, so a pipelined write stays one round trip.
_INSERT_WITH_LINK = f"WITH new AS ({_INSERT}) INSERT INTO response_chain (id, chain) SELECT id, ? FROM new RETURNING id"


# ---- the store ----------------------------------------------------------------------------


def resolve_db_url(url: str | None = None) -> str | None:
    """The database URL to use: `url` if given, else $SATSANG_DB_URL, else None (SQLite in the workspace)."""
    return url or os.environ.get(DB_URL_ENV) or None


def _is_postgresql_url(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


class ResponseStore:
    """The append-only response log of one workspace (or one team database).

    Thread-safe: one connection, used under a lock, so a Streamlit app can share one store.
    Example:

        with ResponseStore.open("satsang-workspace") as store:
            store.record(item_id, content_hash, "ana", "reject", reason="duplicate")
            store.undo(item_id, "ana")
            store.state()  # one row per reviewed item
    """

    # How long an SQLite writer waits for another's transaction before failing.
    busy_timeout_s: float = 30.0

    def __init__(self, backend: Backend, connection: Any, location: str):
        self.backend: Backend = backend
        self.location = location  # the file, or the redacted URL
        self._connection = connection
        self._lock = threading.RLock()
        self._closed = False

    # ---- opening ------------------------------------------------------------------------

    @classmethod
    def open(cls, workspace_root_or_url: str | os.PathLike[str], url: str | None = None) -> ResponseStore:
        """Open (creating and migrating as needed) the review database.

        PostgreSQL when `url`, $SATSANG_DB_URL or the first argument is a postgresql:// URL;
        else SQLite at `<workspace>/reviews.db`, or the file a `sqlite:///path` URL names.
        """
        first = str(workspace_root_or_url)
        target = url or (first if _is_postgresql_url(first) else None) or os.environ.get(DB_URL_ENV) or None
        if target is not None and _is_postgresql_url(target):
            return cls._open_postgresql(target)
        if target is not None and target.startswith("sqlite:///"):
            path = Path(target.removeprefix("sqlite:///"))  # as SQLAlchemy: sqlite:////abs, sqlite:///rel
        elif target is not None:
            raise ResponseStoreError(
                f"{redact_url(target)}: unsupported database URL (use postgresql://... or sqlite:///path)"
            )
        else:
            root = Path(workspace_root_or_url)
            if not root.is_dir():
                raise ResponseStoreError(f"{root}: no such workspace directory")
            path = root / SQLITE_FILE
        return cls._open_sqlite(path)

    @classmethod
    def _open_sqlite(cls, path: Path) -> ResponseStore:
        if not path.parent.is_dir():
            raise ResponseStoreError(f"{path.parent}: no such directory")
        try:
            # isolation_level=None: this module opens its own transactions (BEGIN IMMEDIATE).
            connection = sqlite3.connect(
                path, timeout=cls.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as error:
            raise ResponseStoreError(f"{path}: cannot open: {error}") from None
        store = cls("sqlite", connection, str(path))
        try:
            with store._errors("open"):
                connection.execute(f"PRAGMA busy_timeout = {int(cls.busy_timeout_s * 1000)}")
                mode = store._retry_while_locked(lambda: connection.execute("PRAGMA journal_mode = WAL").fetchone()[0])
                if str(mode).lower() != "wal":
                    raise ResponseStoreError(f"{path}: cannot switch to WAL mode (journal_mode is {mode})")
                connection.execute("PRAGMA synchronous = FULL")
                connection.execute("PRAGMA foreign_keys = ON")
            store._migrate()
        except BaseException:
            connection.close()
            raise
        return store

    @classmethod
    def _open_postgresql(cls, url: str) -> ResponseStore:
        try:
            import psycopg
        except ImportError:
            raise ResponseStoreError("PostgreSQL needs psycopg 3: pip install 'psycopg[binary]'") from None
        try:
            connection = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="satsang")
        except psycopg.Error as error:
            message = " ".join(str(error).split())
            raise ResponseStoreError(f"{redact_url(url)}: cannot connect: {message}") from None
        store = cls("postgresql", connection, redact_url(url))
        try:
            store._migrate()
        except BaseException:
            connection.close()
            raise
        return store

    def _retry_while_locked(self, step: Any) -> Any:
        """Run `step`, retrying while SQLite says the database is locked (e.g. a fresh file switching to WAL)."""
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                return step()
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    # ---- migrations -----------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._errors("migrate"):
            if self._read_version() == SCHEMA_VERSION:
                return
            with self._write_transaction(lock_responses=False):
                if self.backend == "postgresql":
                    self._execute("SELECT pg_advisory_xact_lock(?)", (PG_MIGRATION_LOCK,))
                version = self._read_version()  # again, under the lock: another process may have migrated
                if version == SCHEMA_VERSION:
                    return
                if version == 0:
                    if self._table_exists("responses"):
                        raise ResponseStoreError(
                            f"{self.location}: has a responses table but no schema_migrations:"
                            " not a satsang review database"
                        )
                    self._execute(MIGRATIONS_TABLE_DDL)
                for migration in MIGRATIONS:
                    if migration.version <= version:
                        continue
                    for statement in getattr(migration, self.backend):
                        self._execute(statement)
                    if migration.backfill is not None:
                        migration.backfill(self._execute)
                    self._execute(
                        "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                        (migration.version, migration.description, utc_now("microseconds")),
                    )

    def _read_version(self) -> int:
        if not self._table_exists("schema_migrations"):
            return 0
        version = self._execute("SELECT max(version) FROM schema_migrations").fetchone()[0] or 0
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self.location}: review database schema version {version} is newer than this satsang"
                f" knows ({SCHEMA_VERSION}); upgrade satsang to open it"
            )
        return int(version)

    def _table_exists(self, name: str) -> bool:
        if self.backend == "sqlite":
            query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        else:
            # A query on the catalog, not to_regclass(): that reads the session's catalog cache,
            # which an advisory lock does not refresh, so it can miss a table another process
            # created while this one waited for the migration lock.
            query = "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = ?"
        return self._execute(query, (name,)).fetchone() is not None

    def schema_version(self) -> int:
        with self._guard("schema_version"):
            return self._read_version()

    # ---- writing --------------------------------------------------------------------------

    def record(
        self,
        item_id: str,
        content_hash: str,
        reviewer: str,
        decision: str,
        reason: str | None = None,
        note: str = "",
        edited_question: str | None = None,
        edited_answer: str | None = None,
    ) -> Response:
        """Append one response, in its own committed transaction, and return it as stored.

        `decision="undo"` reverts the item's effective response (InvalidResponse if it has none).
        """
        row = {
            "item_id": item_id,
            "content_hash": content_hash,
            "reviewer": reviewer,
            "decision": decision,
            "reason": reason,
            "note": note,
            "edited_question": edited_question,
            "edited_answer": edited_answer,
        }
        return self._append([_validated(row, where="")])[0]

    def record_many(self, responses: Sequence[Mapping[str, Any]]) -> list[Response]:
        """Append several responses (dicts of `record`'s arguments) in one transaction: all or none.

        Rows apply in order, so a batch may review an item and then undo that review.
        """
        rows = [_validated(response, where=f"response {i}: ") for i, response in enumerate(responses)]
        return self._append(rows) if rows else []

    def undo(self, item_id: str, reviewer: str, note: str = "") -> Response | None:
        """Append an undo of the item's effective response; None (nothing written) if it has none."""
        row = _validated({"item_id": item_id, "reviewer": reviewer, "decision": "undo", "note": note}, where="")
        stored = self._append([row], nothing_to_undo_ok=True)
        return stored[0] if stored else None

    def undo_own(self, item_id: str, reviewer: str, note: str = "") -> Response | None:
        """Append an undo of the reviewer's own standing response on the item, even where another reviewer's
        is the item's effective one (blind double review); None (nothing written) if they have none."""
        row = _validated({"item_id": item_id, "reviewer": reviewer, "decision": "undo", "note": note}, where="")
        stored = self._append([row], nothing_to_undo_ok=True, own_undo=True)
        return stored[0] if stored else None

    def _append(self, rows: list[dict[str, Any]], nothing_to_undo_ok: bool = False, own_undo: bool = False) -> list[Response]:
        created_at = utc_now("microseconds")
        written: list[tuple[dict[str, Any], Any]] = []  # (row, cursor whose RETURNING gives its id, or None)
        with self._guard("record"), self._pipeline():
            with self._write_transaction():
                # Writers are serialised from here on, so the head read now is the one each new link follows.
                previous = self._chain_head()
                for row in rows:
                    row = {**row, "created_at": created_at, "undoes": None}
                    if row["decision"] == "undo":
                        if own_undo:
                            target = self._execute(f"SELECT r.id, r.content_hash FROM responses AS r {_EFFECTIVE_OWN}",
                                                   (row["item_id"], row["reviewer"])).fetchone()
                        else:
                            target = self._execute(f"SELECT r.id, r.content_hash FROM responses AS r {_EFFECTIVE}", (row["item_id"],)).fetchone()
                        if target is None:
                            if nothing_to_undo_ok:
                                continue
                            raise InvalidResponse(
                                f"{row['item_id']}: nothing to undo (the item has no effective response)"
                            )
                        row["undoes"], row["content_hash"] = target[0], row["content_hash"] or target[1]
                    previous = chain_hash(previous, row)
                    values = tuple(row[c] for c in CHAINED_COLUMNS)
                    if self.backend == "sqlite":
                        row["id"] = self._execute(_INSERT, values).fetchone()[0]
                        self._execute(INSERT_LINK, (row["id"], previous))
                        cursor = None
                    else:
                        cursor = self._execute(_INSERT_WITH_LINK, (*values, previous))
                    written.append((row, cursor))
            # PostgreSQL pipelines the inserts with the COMMIT: their ids are read once it is done.
            for row, cursor in written:
                if cursor is not None:
                    row["id"] = cursor.fetchone()[0]
        return [Response(**{c: row[c] for c in RESPONSE_COLUMNS}) for row, _ in written]

    def _chain_head(self) -> str:
        row = self._execute("SELECT chain FROM response_chain ORDER BY id DESC LIMIT 1").fetchone()
        return row[0] if row is not None else ""

    # ---- reading --------------------------------------------------------------------------

    def history(self, item_id: str) -> list[Response]:
        """Every response to the item, undos included, oldest first."""
        with self._guard("history"):
            rows = self._execute(
                f"SELECT {', '.join(RESPONSE_COLUMNS)} FROM responses WHERE item_id = ? ORDER BY id", (item_id,)
            ).fetchall()
        return [Response(*row) for row in rows]

    def current(self, item_id: str) -> Response | None:
        """The item's effective response: its latest one that is not an undo and not undone."""
        with self._guard("current"):
            return self._effective(item_id)

    def state(self) -> pl.DataFrame:
        """One row per item with an effective response (STATE_SCHEMA), sorted by item_id."""
        columns = ", ".join(c for c in RESPONSE_COLUMNS if c not in ("id", "undoes"))
        query = f"""
            WITH live AS (
                SELECT * FROM responses
                WHERE decision <> 'undo'
                  AND id NOT IN (SELECT undoes FROM responses WHERE undoes IS NOT NULL)
            )
            SELECT {columns}, id AS response_id FROM live
            WHERE id IN (SELECT max(id) FROM live GROUP BY item_id)
            ORDER BY item_id"""
        with self._guard("state"):
            rows = self._execute(query).fetchall()
        return pl.DataFrame(rows, schema=STATE_SCHEMA, orient="row")

    def responses(self) -> pl.DataFrame:
        """Every response (RESPONSE_SCHEMA: the Response fields), oldest first."""
        with self._guard("responses"):
            rows = self._execute(f"SELECT {', '.join(RESPONSE_COLUMNS)} FROM responses ORDER BY id").fetchall()
        return pl.DataFrame(rows, schema=RESPONSE_SCHEMA, orient="row")

    def last_id(self) -> int:
        """The id of the newest response (0 if none): responses are only appended, so it changes with every write."""
        with self._guard("last_id"):
            row = self._execute("SELECT max(id) FROM responses").fetchone()
        return int(row[0] or 0)

    def reviewers(self) -> list[str]:
        """Everyone who has recorded a response, sorted."""
        with self._guard("reviewers"):
            rows = self._execute("SELECT DISTINCT reviewer FROM responses ORDER BY reviewer").fetchall()
        return [row[0] for row in rows]

    def _effective(self, item_id: str) -> Response | None:
        query = f"SELECT {', '.join(RESPONSE_COLUMNS)} FROM responses AS r {_EFFECTIVE}"
        row = self._execute(query, (item_id,)).fetchone()
        return Response(*row) if row is not None else None

    # ---- team review (migration 4): reviewers, comments, drafts and skips, blind marks ------------

    def add_reviewer(self, name: str, added_by: str = "") -> bool:
        """Register a reviewer; False when the name is registered already. Names are stored as given:
        callers normalise them first (curation.review.normalise_reviewer_name)."""
        if not name.strip():
            raise InvalidResponse("a reviewer name is required")
        with self._guard("add_reviewer"), self._write_transaction(lock_responses=False):
            added = self._execute(
                "INSERT INTO reviewers (name, added_by, added_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING RETURNING name",
                (name, added_by, utc_now("microseconds")),
            ).fetchone()
        return added is not None

    def registered_reviewers(self) -> list[str]:
        """The reviewer list (empty: the database takes any name), sorted."""
        with self._guard("registered_reviewers"):
            return [row[0] for row in self._execute("SELECT name FROM reviewers ORDER BY name").fetchall()]

    def add_comment(self, item_id: str, content_hash: str, reviewer: str, body: str) -> dict[str, Any]:
        """Append a comment on an item (comments are never edited: a correction is another comment)."""
        if not body.strip() or not reviewer.strip() or not item_id:
            raise InvalidResponse("a comment needs an item, a reviewer and some text")
        row = {"item_id": item_id, "content_hash": content_hash, "reviewer": reviewer.strip(), "body": body.strip(),
               "created_at": utc_now("microseconds")}
        with self._guard("add_comment"), self._write_transaction(lock_responses=False):
            row["id"] = self._execute(
                "INSERT INTO comments (item_id, content_hash, reviewer, body, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
                tuple(row[name] for name in ("item_id", "content_hash", "reviewer", "body", "created_at")),
            ).fetchone()[0]
        return row

    def comments(self, item_id: str | None = None) -> pl.DataFrame:
        """Comments (COMMENT_SCHEMA), oldest first: on one item, or all."""
        query = f"SELECT {', '.join(COMMENT_SCHEMA)} FROM comments"
        with self._guard("comments"):
            rows = (self._execute(query + " WHERE item_id = ? ORDER BY id", (item_id,)) if item_id is not None
                    else self._execute(query + " ORDER BY id")).fetchall()
        return pl.DataFrame(rows, schema=COMMENT_SCHEMA, orient="row")

    def set_mark(self, item_id: str, reviewer: str, kind: str, payload: str = "", content_hash: str = "") -> None:
        """Append a reviewer's mark on an item (MARK_KINDS): a draft (payload: JSON of what they typed), a skip
        or a reveal; an empty payload withdraws the one standing. The latest row per (reviewer, item, kind) stands."""
        if kind not in MARK_KINDS:
            raise InvalidResponse(f"kind must be one of {list(MARK_KINDS)}, not {kind!r}")
        if not reviewer.strip() or not item_id:
            raise InvalidResponse("a mark needs an item and a reviewer")
        with self._guard("set_mark"), self._write_transaction(lock_responses=False):
            self._execute(
                "INSERT INTO marks (item_id, reviewer, kind, content_hash, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (item_id, reviewer.strip(), kind, content_hash, payload, utc_now("microseconds")),
            )

    def marks(self, reviewer: str) -> pl.DataFrame:
        """The reviewer's standing marks: drafts, skips, reveals (MARK_SCHEMA), oldest first."""
        query = f"""SELECT {', '.join(MARK_SCHEMA)} FROM marks
            WHERE id IN (SELECT max(id) FROM marks WHERE reviewer = ? GROUP BY item_id, kind) AND payload <> ''
            ORDER BY id"""
        with self._guard("marks"):
            rows = self._execute(query, (reviewer,)).fetchall()
        return pl.DataFrame(rows, schema=MARK_SCHEMA, orient="row")

    def mark_blind(self, response_ids: Sequence[int]) -> None:
        """Mark responses as given blind: their reviewers had not seen anyone else's decision on the item."""
        if not response_ids:
            return
        created_at = utc_now("microseconds")
        with self._guard("mark_blind"), self._write_transaction(lock_responses=False):
            for response_id in response_ids:
                self._execute(
                    "INSERT INTO blind_decisions (response_id, created_at) VALUES (?, ?) ON CONFLICT (response_id) DO NOTHING",
                    (int(response_id), created_at),
                )

    def blind_response_ids(self) -> list[int]:
        """The responses marked blind, by id."""
        with self._guard("blind_response_ids"):
            return [row[0] for row in self._execute("SELECT response_id FROM blind_decisions ORDER BY response_id").fetchall()]

    # ---- checking ---------------------------------------------------------------------------

    def integrity_check(self) -> list[str]:
        """Problems found in the database, [] when it is sound.

        SQLite: PRAGMA integrity_check and foreign_key_check. Both: the schema version, the
        append-only triggers, and the log's own rules (every undo reverts an earlier,
        non-undo response of the same item, none twice; decisions and reasons known;
        rejects have reasons; edits have text).
        """
        problems: list[str] = []
        with self._guard("integrity_check"):
            if self.backend == "sqlite":
                rows = [row[0] for row in self._execute("PRAGMA integrity_check").fetchall()]
                if rows != ["ok"]:
                    problems += [f"sqlite integrity_check: {row}" for row in rows]
                    return problems  # the rest would read a damaged file
                problems += [
                    f"sqlite foreign_key_check: {table} row {rowid} points at a missing {parent} row"
                    for table, rowid, parent, _ in self._execute("PRAGMA foreign_key_check").fetchall()
                ]
            version = self._read_version()
            if version != SCHEMA_VERSION:
                problems.append(f"schema version is {version}, expected {SCHEMA_VERSION}")
            for missing in ("responses", "response_chain", "schema_migrations"):
                if not self._table_exists(missing):
                    problems.append(f"table {missing} is missing")
            if problems:
                return problems
            problems.extend(log_problems(self._execute, self.backend))
        return problems

    # ---- plumbing --------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._connection.close()

    def __enter__(self) -> ResponseStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResponseStore({self.backend}: {self.location})"

    @contextmanager
    def _guard(self, operation: str) -> Iterator[None]:
        """Hold the store's lock, refuse use after close, and turn driver errors into ResponseStoreError."""
        with self._lock:
            if self._closed:
                raise ResponseStoreError(f"{self.location}: {operation} on a closed response store")
            with self._errors(operation):
                yield

    @contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except ResponseStoreError:
            raise
        except sqlite3.Error as error:
            raise ResponseStoreError(f"{self.location}: {operation} failed: {error}") from error
        except Exception as error:
            if type(error).__module__.startswith("psycopg"):
                message = " ".join(str(error).split())
                raise ResponseStoreError(f"{self.location}: {operation} failed: {message}") from error
            raise

    @contextmanager
    def _write_transaction(self, lock_responses: bool = True) -> Iterator[None]:
        """One transaction that excludes every other writer from its start, committed on success."""
        if self.backend == "sqlite":
            self._begin_immediate()
            try:
                yield
                self._connection.execute("COMMIT")
            except BaseException:
                if self._connection.in_transaction:  # SQLite may have rolled back already (e.g. on I/O error)
                    self._connection.execute("ROLLBACK")
                raise
        else:
            with self._connection.transaction():
                if lock_responses:
                    # EXCLUSIVE blocks other writers only (readers take ACCESS SHARE): ids are
                    # drawn in commit order, and an undo's target cannot move under it.
                    self._connection.execute("LOCK TABLE responses IN EXCLUSIVE MODE")
                yield

    def _begin_immediate(self) -> None:
        """BEGIN IMMEDIATE, waiting up to busy_timeout_s for other writers.

        IMMEDIATE takes the write lock at once: a deferred transaction that reads and then
        writes can fail with SQLITE_BUSY_SNAPSHOT, which no busy timeout cures. The wait is
        ours rather than SQLite's busy handler, whose sleeps grow to 100 ms: with many
        writers the lock would sit free while they all slept.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.0005
        self._connection.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    self._connection.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as error:
                    if "locked" not in str(error) or time.monotonic() > deadline:
                        raise
                time.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 0.02)
        finally:
            self._connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")

    @contextmanager
    def _pipeline(self) -> Iterator[None]:
        """PostgreSQL: send a write's statements together, so the table lock is held for one round trip."""
        if self.backend == "postgresql":
            with self._connection.pipeline():
                yield
        else:
            yield

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.backend == "sqlite":
            return self._connection.execute(sql, params)
        return self._connection.execute(sql.replace("?", "%s"), params if params else None)


# ---- validation ------------------------------------------------------------------------------

_FIELDS = ("item_id", "content_hash", "reviewer", "decision", "reason", "note", "edited_question", "edited_answer")


def _validated(response: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The response as a complete row, or InvalidResponse naming what is wrong (prefixed by `where`)."""

    def fail(message: str) -> InvalidResponse:
        return InvalidResponse(f"{where}{message}")

    unknown = sorted(set(response) - set(_FIELDS))
    if unknown:
        raise fail(f"unknown field(s) {unknown}; a response has {list(_FIELDS)}")
    row: dict[str, Any] = {name: response.get(name) for name in _FIELDS}
    row["note"] = "" if row["note"] is None else row["note"]
    row["content_hash"] = row["content_hash"] or ""
    for name, value in row.items():
        if value is not None and not isinstance(value, str):
            raise fail(f"{name} must be a string, not {type(value).__name__}")

    decision = row["decision"]
    if decision not in DECISIONS:
        raise fail(f"decision must be one of {list(DECISIONS)}, not {decision!r}")
    if not row["item_id"]:
        raise fail("item_id is required")
    row["reviewer"] = (row["reviewer"] or "").strip()
    if not row["reviewer"]:
        raise fail("reviewer is required")
    if decision != "undo" and not row["content_hash"]:
        raise fail("content_hash is required (the item's content hash at review time)")

    reason = row["reason"]
    if reason is not None and reason not in REASONS:
        raise fail(f"reason must be one of {list(REASONS)}, not {reason!r}")
    if decision == "reject" and reason is None:
        raise fail(f"a reject needs a reason, one of {list(REASONS)}")
    if reason == "other" and not row["note"].strip():
        raise fail("reason 'other' needs a note saying what the reason is")

    edited = row["edited_question"] is not None or row["edited_answer"] is not None
    if decision == "edit":
        if not edited:
            raise fail("an edit needs edited_question and/or edited_answer")
        if row["edited_question"] is not None and not row["edited_question"].strip():
            raise fail("edited_question is blank (leave it None to keep the question)")
    elif edited:
        raise fail(f"edited text belongs to an edit, not to a {decision}")
    return row
