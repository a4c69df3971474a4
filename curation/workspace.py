"""The workspace: one directory holding the ingested sources and the item tables.

Layout::

    workspace.json                   format version (= schema.SCHEMA_VERSION), creation time
    HEAD                             {"generation": N, "previous": N-1}: the committed tables
    lock                             flock'ed by every writer
    sources/<sha256>.txt             each ingested file, byte for byte
    tables/<generation>/items/part-00000.parquet ...   the items, in parts (curation.generations)
    tables/<generation>/sources.parquet
    staging/<id>/                    an ingest's parsed items, written before it commits

Why generations: a command that fails or is killed must leave the workspace
exactly as it was. A writer builds a complete new generation beside the current
one, then switches HEAD with a single atomic rename; readers only ever follow
HEAD. What a killed writer leaves behind (a generation HEAD never pointed to,
temp files, sources copied for a commit that never happened, an ingest's staging
directory) is invisible to readers and swept by the next writer, under the lock.

Why parts: stages go through the items one part at a time (`item_parts`, `map_items`),
so memory follows the part size, not the corpus; `items()` still gives the whole table
to what is small enough to hold it (the review app, status, tests).

Reading, validating and parsing a file into a book is curation.sources (`parse_book`);
`Workspace.add_sources` commits books here.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from curation.errors import WorkspaceError
from curation.files import TMP_PREFIX, atomic_write, exclusive_lock, utc_now, write_error_reason
from curation.generations import (
    PART_ROWS,
    SOURCES_TABLE,
    DamagedTable,
    GenerationWriter,
    ItemPart,
    batches,
    generation_parts,
    read_parts,
    scan_parts,
)
from curation.schema import ITEM_SCHEMA, SCHEMA_VERSION, SOURCE_SCHEMA, empty_sources, with_added_columns
from curation.sources import SOURCE_KINDS, BookTask, IngestError, ParsedBook, SourceKind, parse_book, store_source

if TYPE_CHECKING:
    from curation.executors import Executor
    from curation.review import ReviewState

WORKSPACE_ENV = "SATSANG_WORKSPACE"
DEFAULT_WORKSPACE = "satsang-workspace"

MANIFEST = "workspace.json"
HEAD = "HEAD"
LOCK = "lock"
SOURCES_DIR = "sources"
TABLES_DIR = "tables"
STAGING_DIR = "staging"

# Tests set this to a pause point's name to SIGKILL a writer at that exact moment.
PAUSE_ENV = "SATSANG_TEST_PAUSE_AT"

# Progress callback: (file being worked on or None for the commit, phase name).
ProgressCallback = Callable[[Path | None, str], None]


@dataclass(frozen=True)
class Stage:
    """A curation stage, and the item column whose value marks an item as through it."""

    name: str
    marker_column: str | None


# In pipeline order; an item's stage is the furthest one it has been through. A machine
# stage adds its output columns to the items table (curation.schema.STAGE_COLUMNS); the
# marker named here is the contract that makes `status` count it. "reviewed" has no
# column: human decisions live in the review database only, and `status` counts the items
# with an effective decision there (curation.review), so no copy on the items can go stale.
STAGES: tuple[Stage, ...] = (
    Stage("ingested", None),
    Stage("dedup", "dedup_cluster"),
    Stage("scored", "concept_score"),
    Stage("critiqued", "critic_score"),
    Stage("reviewed", None),
)
REVIEWED = STAGES[-1].name


@dataclass(frozen=True)
class FileReport:
    """What ingest did with one input file."""

    path: str
    source_id: str
    status: Literal["ingested", "already ingested"]
    n_items: int = 0
    n_duplicate_item_ids: int = 0  # items dropped because the source had yielded that item_id before
    convention: str = ""
    parse_report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestReport:
    """The outcome of one ingest: per-file reports and the generation committed (None if nothing new)."""

    files: tuple[FileReport, ...]
    generation: int | None

    @property
    def n_new_sources(self) -> int:
        return sum(f.status == "ingested" for f in self.files)

    @property
    def n_new_items(self) -> int:
        return sum(f.n_items for f in self.files)


@dataclass(frozen=True)
class BooksIngest:
    """`Workspace.ingest_books`' outcome: the ingest report, and the files rejected (only when skip_rejected)."""

    report: IngestReport
    rejected: tuple[IngestError, ...]


@dataclass(frozen=True)
class WorkspaceStatus:
    """Item counts per source, item kind and stage, read from one generation."""

    path: Path
    generation: int
    n_sources: int
    # columns: source_id, title, source_kind, kind, stage, n_items
    counts: pl.DataFrame

    @property
    def n_items(self) -> int:
        return int(self.counts["n_items"].sum())

    def items_per_stage(self) -> dict[str, int]:
        totals = dict(self.counts.group_by("stage").agg(pl.col("n_items").sum()).iter_rows())
        return {stage.name: int(totals.get(stage.name, 0)) for stage in STAGES}


@dataclass(frozen=True)
class _Head:
    generation: int
    previous: int | None


def default_workspace_path() -> Path:
    return Path(os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE)


def init_workspace(path: str | os.PathLike[str] | None = None) -> Workspace:
    """Create an empty workspace at `path` (default: $SATSANG_WORKSPACE or ./satsang-workspace)."""
    root = Path(path) if path is not None else default_workspace_path()
    if (root / MANIFEST).exists():
        raise WorkspaceError(f"{root}: already a satsang workspace")
    if root.exists() and not root.is_dir():
        raise WorkspaceError(f"{root}: exists and is not a directory")
    for directory in (root, root / SOURCES_DIR, root / TABLES_DIR):
        directory.mkdir(parents=True, exist_ok=True)
    (root / LOCK).touch()
    GenerationWriter(root / TABLES_DIR, 0).publish(empty_sources())
    atomic_write(root / HEAD, _head_json(_Head(0, None)))
    # The manifest goes last: until it exists the directory is not a workspace, so an
    # init killed half-way leaves nothing that `open` would take for one.
    manifest = {"format_version": SCHEMA_VERSION, "created_at": utc_now()}
    atomic_write(root / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return Workspace(root)


class Workspace:
    """An open workspace. Readers follow HEAD; writers hold the lock and commit a new generation."""

    # How long a writer waits for another command's lock before giving up with an error.
    lock_timeout_s: float = 60.0
    # Rows per item part that a writer makes (curation.generations; tests make it small to get many parts).
    part_rows: int = PART_ROWS

    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None) -> Workspace:
        root = Path(path) if path is not None else default_workspace_path()
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise WorkspaceError(f"{root}: not a satsang workspace (no {MANIFEST}); create one with: satsang init {root}")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            version = manifest["format_version"]
        except (ValueError, KeyError, TypeError) as error:
            raise WorkspaceError(f"{manifest_path}: unreadable workspace manifest ({error})") from None
        if version != SCHEMA_VERSION:
            raise WorkspaceError(
                f"{root}: workspace format version {version}, but this satsang reads version {SCHEMA_VERSION}"
            )
        workspace = cls(root)
        workspace._head()  # fail now, with a clear message, if HEAD is unreadable
        return workspace

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # ---- reading -------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self._head().generation

    def items(self) -> pl.DataFrame:
        """The whole items table in memory: for what is small enough to hold it; stages use `item_parts`."""
        return self.snapshot()[1]

    def item_parts(self) -> tuple[int, list[ItemPart]]:
        """HEAD's generation and its item parts, in order: to go through the items a part at a time."""
        return self._consistent(lambda head: (self._parts(head),))

    def tables(self) -> tuple[int, list[ItemPart], pl.DataFrame]:
        """HEAD's generation, its item parts and its sources table, all of one generation."""
        return self._consistent(lambda head: (self._parts(head), self._sources(head)))

    def scan_items(self) -> pl.LazyFrame:
        """HEAD's items as a lazy frame: a query reads only the columns and rows it needs."""
        return scan_parts(self.item_parts()[1])

    def sources(self) -> pl.DataFrame:
        return self._consistent(lambda head: (self._sources(head),))[1]

    def source_text(self, source_id: str) -> str:
        return (self.root / SOURCES_DIR / f"{source_id}.txt").read_text(encoding="utf-8")

    def status(self, review: ReviewState | None = None, db_url: str | None = None) -> WorkspaceStatus:
        """Counts per source, kind and stage.

        An item is "reviewed" when it has an effective decision in the review state:
        `review` (curation.review.ReviewState) when given, else the workspace's review
        database (`db_url`, $SATSANG_DB_URL or reviews.db; never created just to find it empty).
        """
        from curation.review import load_review_state

        generation, parts, sources = self.tables()
        if review is None:
            review = load_review_state(self.root, db_url)
        reviewed = pl.col("item_id").is_in(review.reviewed_item_ids().implode())
        items = scan_parts(parts)
        counts = (
            items.with_columns(_stage_expression(items.collect_schema().names(), reviewed).alias("stage"))
            .group_by("source_id", "kind", "stage")
            .agg(pl.len().cast(pl.Int64).alias("n_items"))
            .collect()
        )
        stage_order = pl.Enum([stage.name for stage in STAGES])
        # Left join from sources so that a source which yielded no items still shows.
        table = (
            sources.with_row_index("ingest_order")
            .select("ingest_order", "source_id", "title", pl.col("kind").alias("source_kind"))
            .join(counts, on="source_id", how="left")
            .with_columns(
                pl.col("kind").fill_null(""),
                pl.col("stage").fill_null("ingested").cast(stage_order),
                pl.col("n_items").fill_null(0),
            )
            .sort("ingest_order", "kind", "stage")
            .with_columns(pl.col("stage").cast(pl.String))
            .drop("ingest_order")
        )
        return WorkspaceStatus(self.root, generation, sources.height, table)

    # ---- writing -------------------------------------------------------------------

    def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]],
        kind: SourceKind,
        dialogue_config: Any = None,
        prose_config: Any = None,
        title: str | None = None,
        licence: str = "",
        progress: ProgressCallback | None = None,
        executor: Executor | None = None,
    ) -> IngestReport:
        """Read, validate and parse each file, and commit all new sources and items in one generation.

        All or nothing: if any file is rejected (IngestError) nothing is committed.
        A file whose bytes were ingested before adds nothing and is reported as
        "already ingested". `title` defaults to each file's name without extension.
        `executor` parses the files (default: in this process; a RayExecutor on a cluster).
        """
        tasks = [BookTask(str(Path(p)), kind, title, licence, dialogue_config, prose_config) for p in paths]
        return self.ingest_books(tasks, executor=executor, progress=progress).report

    def ingest_books(
        self,
        books: Iterable[BookTask | str | os.PathLike[str]],
        kind: SourceKind = "prose",
        executor: Executor | None = None,
        skip_rejected: bool = False,
        progress: ProgressCallback | None = None,
    ) -> BooksIngest:
        """Parse books on `executor` (default: this process), then commit them in one generation (`add_sources`).

        `books`: BookTasks (each with its own kind, title and licence), or paths parsed
        as `kind` and titled by file name. All or nothing: a rejected file raises its
        IngestError and nothing is committed, unless `skip_rejected`, which leaves
        rejected files out and lists them. Parsing runs outside the writer lock (it
        may take long, and may run on other machines); each book's items are written to
        this ingest's staging directory as it arrives (`StagedItems`), so memory holds a
        part's worth of items, not the corpus. Progress: (path, "parsed") per book, in
        order, then (None, "committing").
        """
        from curation.executors import LocalExecutor

        tasks = [b if isinstance(b, BookTask) else BookTask(str(b), kind) for b in books]
        if not tasks:
            raise ValueError("no files to ingest")
        for task in tasks:
            if task.kind not in SOURCE_KINDS:
                raise ValueError(f"kind must be one of {SOURCE_KINDS}, not {task.kind!r}")
        notify = progress or (lambda path, phase: None)
        known = frozenset(self.sources()["source_id"].to_list())
        parsed: list[ParsedBook] = []
        rejected: list[IngestError] = []
        with self._staging() as directory:
            staged = StagedItems(directory, self.part_rows)
            for book in (executor or LocalExecutor()).imap(parse_book, tasks, shared=known):
                notify(Path(book.task.path), "parsed")
                if book.error is not None:
                    error = IngestError(*book.error)
                    if not skip_rejected:
                        raise error
                    rejected.append(error)
                    continue
                parsed.append(staged.add(book))
            return BooksIngest(self.add_sources(parsed, progress=notify, staged=staged), tuple(rejected))

    def add_sources(
        self, books: Iterable[ParsedBook], progress: ProgressCallback | None = None, staged: StagedItems | None = None
    ) -> IngestReport:
        """Commit parsed books (`parse_book`'s results) as one generation: their sources and items.

        Under the writer lock, on the workspace as it is then: a book whose source was
        ingested meanwhile (or twice in `books`) is "already ingested", and each file must
        still hold the bytes that were parsed, else IngestError and nothing is committed.
        staged: where the books' items were written (`StagedItems.add` took them off the
        books); without it the books carry their items, and they are staged here.
        """
        books = list(books)
        with self._writer_lock(), (self._staging() if staged is None else nullcontext()) as directory:
            if staged is None:
                staged = StagedItems(directory, self.part_rows)
                books = [staged.add(book) for book in books]
            staged.flush()
            generation, parts, sources = self.tables()
            known = set(sources["source_id"].to_list())
            reports: list[FileReport] = []
            new: list[ParsedBook] = []
            for book in books:
                if book.error is not None:
                    raise IngestError(*book.error)
                if book.status == "already ingested" or book.source_id in known:
                    reports.append(FileReport(book.task.path, book.source_id, "already ingested"))
                    continue
                known.add(book.source_id)
                new.append(book)
                reports.append(
                    FileReport(book.task.path, book.source_id, "ingested", book.source["n_items"],
                               book.n_duplicate_item_ids, book.convention, book.parse_report)
                )
            if not new:
                return IngestReport(tuple(reports), generation=None)
            if progress is not None:
                progress(None, "committing")
            written: list[Path] = []
            writing = self.root / SOURCES_DIR
            writer = GenerationWriter(self.root / TABLES_DIR, generation + 1)
            try:
                for book in new:
                    writing = self.root / _stored_path(book.source_id)
                    existed = writing.exists()  # the previous generation's, same bytes: not ours to remove
                    store_source(book, writing)
                    if not existed:
                        written.append(writing)
                now = utc_now()
                new_sources = pl.DataFrame(
                    [{**book.source, "stored_path": _stored_path(book.source_id), "ingested_at": now} for book in new],
                    schema=SOURCE_SCHEMA,
                )
                writing = self.root / TABLES_DIR
                for part in parts:
                    writer.link(part)
                staged.commit_into(writer, {book.source_id for book in new})
                generation = self._publish(writer, pl.concat([sources, new_sources], how="vertical"))
            except BaseException as error:
                writer.discard()
                for stored in written:  # committed state never names them: a failed ingest leaves nothing behind
                    stored.unlink(missing_ok=True)
                if is_write_failure(error):
                    raise write_failure(error, writing) from None
                raise
            return IngestReport(tuple(reports), generation)

    def update_items(self, transform: Callable[[pl.DataFrame], pl.DataFrame]) -> int:
        """Commit `transform(items)`, the whole table at once, as a new generation (`map_items` goes part by part).

        The fixed ITEM_SCHEMA columns must come back unchanged in name and type.
        Returns the generation committed, or the current one when the update changes nothing
        (a stage re-run on unchanged input leaves the workspace as it was).
        """
        with self._writer_lock():
            generation, parts, sources = self.tables()
            items = self._guarded(lambda: read_parts(parts))
            updated = transform(items)
            self._check_schema(updated)
            if set(updated.columns) == set(items.columns) and updated.select(items.columns).equals(items):
                return generation  # same content; a stage that re-adds its columns may reorder them
            del items
            writer = GenerationWriter(self.root / TABLES_DIR, generation + 1)
            with self._writing(writer):
                for batch in batches(updated, self.part_rows):
                    writer.write(batch)
                return self._publish(writer, sources)

    def map_items(
        self,
        transform: Callable[[pl.DataFrame, ItemPart], pl.DataFrame],
        prepare: Callable[[list[ItemPart]], None] | None = None,
    ) -> int:
        """Commit `transform(part's items, part)` for every part, one part at a time, as a new generation.

        Memory holds one part (and whatever `transform` keeps), not the table. Under the
        writer lock: `prepare(parts)` first, for what needs every part (dedup's clusters),
        on exactly the parts that `transform` then gets. A part that comes back unchanged is
        linked, not rewritten; when none changes, nothing is committed and the current
        generation is returned. A transform may return any number of rows (a part of 0
        rows is left out): the rows of the new generation are the parts' results in order.
        """
        with self._writer_lock():
            generation, parts, sources = self.tables()
            if prepare is not None:
                prepare(parts)
            writer = GenerationWriter(self.root / TABLES_DIR, generation + 1)
            with self._writing(writer):
                for part in parts:
                    items = self._guarded(part.read)
                    updated = transform(items, part)
                    self._check_schema(updated)
                    # A stage that re-adds its columns puts them last: keep the part's order, new columns after.
                    updated = updated.select([*(c for c in items.columns if c in updated.columns),
                                              *(c for c in updated.columns if c not in items.columns)])
                    if updated.columns == items.columns and updated.equals(items):
                        writer.link(part)
                    else:
                        for batch in batches(updated, self.part_rows):
                            writer.write(batch)
                if writer.n_written == 0 and writer.n_parts == len(parts):
                    writer.discard()
                    return generation
                return self._publish(writer, sources)

    # ---- internals -----------------------------------------------------------------

    def _head(self) -> _Head:
        try:
            head = json.loads((self.root / HEAD).read_text(encoding="utf-8"))
            return _Head(int(head["generation"]), head.get("previous"))
        except FileNotFoundError:
            raise WorkspaceError(f"{self.root}: workspace has no {HEAD} file") from None
        except (ValueError, KeyError, TypeError) as error:
            raise WorkspaceError(f"{self.root / HEAD}: unreadable ({error})") from None

    def snapshot(self) -> tuple[int, pl.DataFrame, pl.DataFrame]:
        """Both tables from one generation, so items and sources always agree."""
        return self._consistent(lambda head: (self._guarded(lambda: read_parts(self._parts(head)), head),
                                              self._sources(head)))

    def _consistent(self, read: Callable[[_Head], tuple[Any, ...]]) -> tuple[Any, ...]:
        """(generation, *read(head)) from one generation, read again if it is pruned meanwhile."""
        for _ in range(5):
            head = self._head()
            try:
                return (head.generation, *read(head))
            except FileNotFoundError:
                # Writers keep HEAD and the generation before it; a reader this slow can
                # find its generation pruned after two commits. HEAD has moved: read again.
                continue
        raise WorkspaceError(f"{self.root}: generation {head.generation} named by {HEAD} is missing")

    def _generation_dir(self, generation: int) -> Path:
        return self.root / TABLES_DIR / _generation_name(generation)

    def _parts(self, head: _Head) -> list[ItemPart]:
        return self._guarded(lambda: generation_parts(self._generation_dir(head.generation)), head)

    def _sources(self, head: _Head) -> pl.DataFrame:
        path = self._generation_dir(head.generation) / SOURCES_TABLE

        def read() -> pl.DataFrame:
            try:
                return with_added_columns(pl.read_parquet(path), SOURCE_SCHEMA)
            except FileNotFoundError:
                raise
            except (pl.exceptions.PolarsError, OSError) as error:
                raise DamagedTable(path, " ".join(str(error).split())[:160]) from None

        return self._guarded(read, head)

    def _guarded(self, read: Callable[[], Any], head: _Head | None = None) -> Any:
        """read(); a damaged table is a WorkspaceError naming it and the way back to the generation before."""
        try:
            return read()
        except DamagedTable as damaged:
            previous = (head or self._head()).previous
            shared = isinstance(previous, int) and any(
                path.is_file() and os.path.samefile(path, damaged.path) for path in self._generation_dir(previous).rglob("*")
            )
            if shared:  # a part the later generation left as it was is one file, linked into both
                back = f"; the previous generation {previous} holds this same part (hard-linked), so it is damaged too"
            elif isinstance(previous, int) and self._generation_dir(previous).is_dir():
                back = (
                    f"; the previous generation {previous} is intact in {self._generation_dir(previous)}:"
                    f" to roll back to it, write {_head_json(_Head(previous, None)).decode().strip()} into {self.root / HEAD}"
                )
            else:
                back = "; no earlier generation is kept to roll back to"
            raise WorkspaceError(f"{damaged.path}: damaged ({damaged.why}){back}") from None

    def _check_schema(self, updated: pl.DataFrame) -> None:
        wrong = {name: dtype for name, dtype in ITEM_SCHEMA.items() if updated.schema.get(name) != dtype}
        if wrong:
            raise WorkspaceError(f"{self.root}: update would break the item schema in columns {sorted(wrong)}")

    @contextmanager
    def _writing(self, writer: GenerationWriter) -> Iterator[None]:
        """Discard `writer`'s generation if the block fails; a full disk is one line, and nothing is committed."""
        try:
            yield
        except BaseException as error:
            writer.discard()
            if is_write_failure(error):
                raise write_failure(error, self.root / TABLES_DIR) from None
            raise

    def _publish(self, writer: GenerationWriter, sources: pl.DataFrame) -> int:
        """Rename the writer's generation into place and point HEAD at it. The caller holds the writer lock."""
        head = self._head()
        writer.publish(sources)
        pause_if_testing("before-head")
        generation = int(writer.final.name)
        atomic_write(self.root / HEAD, _head_json(_Head(generation, head.generation)))
        self._sweep()
        return generation

    @contextmanager
    def _writer_lock(self) -> Iterator[None]:
        busy = f"{self.root}: another satsang command is writing to this workspace"
        with exclusive_lock(self.root / LOCK, self.lock_timeout_s, busy, error=WorkspaceError):
            self._sweep()
            yield

    @contextmanager
    def _staging(self) -> Iterator[Path]:
        """A directory of this process' own, kept while it runs (its lock file held), removed after.

        A writer's sweep removes a staging directory only when it can take its lock: its owner is gone.
        """
        staging = self.root / STAGING_DIR
        staging.mkdir(exist_ok=True)
        name = uuid.uuid4().hex[:16]
        with open(staging / f"{name}.lock", "ab") as owner:
            fcntl.flock(owner, fcntl.LOCK_EX)  # a new file: nobody else holds it
            directory = staging / name
            directory.mkdir()
            try:
                yield directory
            finally:
                shutil.rmtree(directory, ignore_errors=True)
                (staging / f"{name}.lock").unlink(missing_ok=True)

    def _sweep(self) -> None:
        """Remove what no committed state refers to: leftovers of a killed or failed writer, old generations.

        Keeps HEAD's generation and the one before it, every source either of them lists,
        and the staging directories of ingests still running.
        """
        head = self._head()
        kept = {_generation_name(g) for g in (head.generation, head.previous) if g is not None}
        tables = self.root / TABLES_DIR
        for entry in tables.iterdir():
            if entry.name in kept:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

        referenced: set[str] = set()
        for name in kept:
            table = tables / name / SOURCES_TABLE
            if table.exists():
                referenced.update(pl.read_parquet(table, columns=["source_id"])["source_id"].to_list())
        for entry in (self.root / SOURCES_DIR).iterdir():
            if entry.name.startswith(TMP_PREFIX) or entry.name.removesuffix(".txt") not in referenced:
                entry.unlink()
        for entry in self.root.glob(f"{TMP_PREFIX}*"):
            entry.unlink()
        _sweep_staging(self.root / STAGING_DIR)


class StagedItems:
    """Parsed books' items, written to part files in an ingest's staging directory as the books arrive.

    `add` takes a book's items (returning the book without them) and writes a part each
    time `part_rows` have gathered; `commit_into` moves the parts into a new generation,
    leaving out the items of any source not to be committed (ingested meanwhile).
    """

    def __init__(self, directory: Path, part_rows: int = PART_ROWS):
        self.directory = directory
        self.part_rows = part_rows
        self.parts: list[tuple[Path, int, frozenset[str]]] = []  # (file, rows, its source_ids)
        self._buffer: list[pl.DataFrame] = []
        self._rows = 0
        self._sources: set[str] = set()

    def add(self, book: ParsedBook) -> ParsedBook:
        if book.items is None:
            return book
        if book.status == "parsed" and book.source_id not in self._sources:  # a second copy adds nothing
            self._sources.add(book.source_id)
            self._buffer.append(book.items)
            self._rows += book.items.height
            if self._rows >= self.part_rows:
                self.flush(whole=False)
        return dataclasses.replace(book, items=None)

    def flush(self, whole: bool = True) -> None:
        """Write the gathered items as parts of `part_rows`; the last, shorter one only if `whole`."""
        if not self._buffer:
            return
        frame = pl.concat(self._buffer, how="diagonal_relaxed")
        self._buffer, self._rows = [], 0
        for start in range(0, frame.height, self.part_rows):
            part = frame.slice(start, self.part_rows)
            if part.height < self.part_rows and not whole:
                self._buffer, self._rows = [part], part.height  # waits for the next book's items
                return
            path = self.directory / f"part-{len(self.parts):05d}.parquet"
            try:
                part.write_parquet(path)
            except Exception as error:  # polars reports a full disk as a ComputeError
                if is_write_failure(error):
                    raise write_failure(error, path) from None
                raise
            self.parts.append((path, part.height, frozenset(part["source_id"].unique().to_list())))

    def commit_into(self, writer: GenerationWriter, committed: set[str]) -> None:
        self.flush()
        for path, rows, sources in self.parts:
            if sources <= committed:
                writer.adopt(path, rows)
            elif sources & committed:
                writer.write(pl.read_parquet(path).filter(pl.col("source_id").is_in(list(committed))))


def _sweep_staging(staging: Path) -> None:
    """Remove the staging directories whose ingest is gone (its lock file no longer held)."""
    if not staging.is_dir():
        return
    for entry in staging.iterdir():
        if entry.suffix == ".lock":
            continue  # an orphan lock file (its owner killed before it made its directory) is a few bytes
        lock = staging / f"{entry.name}.lock"
        try:
            with open(lock, "ab") as owner:
                fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its ingest is still running
        shutil.rmtree(entry, ignore_errors=True)
        lock.unlink(missing_ok=True)


def _stage_expression(columns: list[str], reviewed: pl.Expr) -> pl.Expr:
    stage = pl.lit(STAGES[0].name)
    for later in STAGES[1:]:  # each later stage, when its marker is set, outranks the ones before
        if later.name == REVIEWED:
            stage = pl.when(reviewed).then(pl.lit(later.name)).otherwise(stage)
        elif later.marker_column in columns:
            stage = pl.when(pl.col(later.marker_column).is_not_null()).then(pl.lit(later.name)).otherwise(stage)
    return stage


def _stored_path(source_id: str) -> str:
    """Where a source's bytes are kept, relative to the workspace root (its `stored_path`)."""
    return f"{SOURCES_DIR}/{source_id}.txt"


def _generation_name(generation: int) -> str:
    return f"{generation:06d}"


def _head_json(head: _Head) -> bytes:
    return (json.dumps({"generation": head.generation, "previous": head.previous}) + "\n").encode()


def is_write_failure(error: BaseException) -> bool:
    """An error of the disk or the filesystem while writing (full, read-only, quota...), not a bug."""
    return write_error_reason(error) is not None


def write_failure(error: BaseException, where: Path) -> WorkspaceError:
    """One line for a write the disk refused: what, why (disk full named as such), and that nothing was committed."""
    target = where
    return WorkspaceError(f"{target}: could not be written ({write_error_reason(error)}); nothing was committed, the workspace is as it was")


def pause_if_testing(point: str) -> None:
    if os.environ.get(PAUSE_ENV) == point:
        print(f"paused at {point}", file=sys.stderr, flush=True)
        time.sleep(3600)


