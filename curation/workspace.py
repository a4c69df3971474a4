"""The workspace: one directory holding the ingested sources and the item tables.

Layout::

    workspace.json                   format version (= schema.SCHEMA_VERSION), creation time
    HEAD                             {"generation": N, "previous": N-1}: the committed tables
    lock                             flock'ed by every writer
    sources/<sha256>.txt             each ingested file, byte for byte
    tables/<generation>/items.parquet
    tables/<generation>/sources.parquet

Why generations: a command that fails or is killed must leave the workspace
exactly as it was. A writer builds a complete new generation beside the current
one, then switches HEAD with a single atomic rename; readers only ever follow
HEAD. What a killed writer leaves behind (a generation HEAD never pointed to,
temp files, sources copied for a commit that never happened) is invisible to
readers and swept by the next writer, under the lock.

Reading, validating and parsing a file into a book is curation.sources (`parse_book`);
`Workspace.add_sources` commits books here.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from curation.errors import WorkspaceError
from curation.files import TMP_PREFIX, atomic_write, exclusive_lock, fsync, utc_now, write_error_reason
from curation.schema import ITEM_SCHEMA, SCHEMA_VERSION, SOURCE_SCHEMA, empty_items, empty_sources, with_added_columns
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
ITEMS_TABLE = "items.parquet"
SOURCES_TABLE = "sources.parquet"

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
    _write_generation(root / TABLES_DIR, 0, empty_items(), empty_sources())
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
        return self.snapshot()[1]

    def sources(self) -> pl.DataFrame:
        return self.snapshot()[2]

    def source_text(self, source_id: str) -> str:
        return (self.root / SOURCES_DIR / f"{source_id}.txt").read_text(encoding="utf-8")

    def status(self, review: ReviewState | None = None, db_url: str | None = None) -> WorkspaceStatus:
        """Counts per source, kind and stage.

        An item is "reviewed" when it has an effective decision in the review state:
        `review` (curation.review.ReviewState) when given, else the workspace's review
        database (`db_url`, $SATSANG_DB_URL or reviews.db; never created just to find it empty).
        """
        from curation.review import load_review_state

        generation, items, sources = self.snapshot()
        if review is None:
            review = load_review_state(self.root, db_url)
        reviewed = pl.col("item_id").is_in(review.reviewed_item_ids().implode())
        counts = (
            items.with_columns(_stage_expression(items.columns, reviewed).alias("stage"))
            .group_by("source_id", "kind", "stage")
            .agg(pl.len().cast(pl.Int64).alias("n_items"))
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
        may take long, and may run on other machines). Progress: (path, "parsed")
        per book, in order, then (None, "committing").
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
        for book in (executor or LocalExecutor()).imap(parse_book, tasks, shared=known):
            notify(Path(book.task.path), "parsed")
            if book.error is not None:
                error = IngestError(*book.error)
                if not skip_rejected:
                    raise error
                rejected.append(error)
                continue
            parsed.append(book)
        return BooksIngest(self.add_sources(parsed, progress=notify), tuple(rejected))

    def add_sources(self, books: Iterable[ParsedBook], progress: ProgressCallback | None = None) -> IngestReport:
        """Commit parsed books (`parse_book`'s results) as one generation: their sources and items.

        Under the writer lock, on the workspace as it is then: a book whose source was
        ingested meanwhile (or twice in `books`) is "already ingested", and each file must
        still hold the bytes that were parsed, else IngestError and nothing is committed.
        """
        with self._writer_lock():
            _, items, sources = self.snapshot()
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
                generation = self._commit(
                    pl.concat([items, *(book.items for book in new)], how="diagonal"),
                    pl.concat([sources, new_sources], how="vertical"),
                )
            except BaseException as error:
                for stored in written:  # committed state never names them: a failed ingest leaves nothing behind
                    stored.unlink(missing_ok=True)
                if is_write_failure(error):
                    raise write_failure(error, writing) from None
                raise
            return IngestReport(tuple(reports), generation)

    def update_items(self, transform: Callable[[pl.DataFrame], pl.DataFrame]) -> int:
        """Commit `transform(items)` as a new generation; the hook later stages add their columns through.

        The fixed ITEM_SCHEMA columns must come back unchanged in name and type.
        Returns the generation committed, or the current one when the update changes nothing
        (a stage re-run on unchanged input leaves the workspace as it was).
        """
        with self._writer_lock():
            generation, items, sources = self.snapshot()
            updated = transform(items)
            wrong = {name: dtype for name, dtype in ITEM_SCHEMA.items() if updated.schema.get(name) != dtype}
            if wrong:
                raise WorkspaceError(f"{self.root}: update would break the item schema in columns {sorted(wrong)}")
            if set(updated.columns) == set(items.columns) and updated.select(items.columns).equals(items):
                return generation  # same content; a stage that re-adds its columns may reorder them
            try:
                return self._commit(updated, sources)
            except Exception as error:
                if is_write_failure(error):
                    raise write_failure(error, self.root / TABLES_DIR) from None
                raise

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
        for _ in range(5):
            head = self._head()
            generation = head.generation
            directory = self.root / TABLES_DIR / _generation_name(generation)
            try:
                return (
                    generation,
                    self._read_table(directory / ITEMS_TABLE, ITEM_SCHEMA, head),
                    self._read_table(directory / SOURCES_TABLE, SOURCE_SCHEMA, head),
                )
            except FileNotFoundError:
                # Writers keep HEAD and the generation before it; a reader this slow can
                # find its generation pruned after two commits. HEAD has moved: read again.
                continue
        raise WorkspaceError(f"{self.root}: generation {generation} named by {HEAD} is missing")

    def _read_table(self, path: Path, schema: dict[str, Any], head: _Head) -> pl.DataFrame:
        """One committed table; a damaged one is a WorkspaceError naming it and the way back to the generation before."""
        try:
            return with_added_columns(pl.read_parquet(path), schema)
        except FileNotFoundError:
            raise
        except (pl.exceptions.PolarsError, OSError) as error:
            why = " ".join(str(error).split())[:160]
            previous = head.previous
            if isinstance(previous, int) and (self.root / TABLES_DIR / _generation_name(previous)).is_dir():
                back = (
                    f"; the previous generation {previous} is intact in {self.root / TABLES_DIR / _generation_name(previous)}:"
                    f" to roll back to it, write {_head_json(_Head(previous, None)).decode().strip()} into {self.root / HEAD}"
                )
            else:
                back = "; no earlier generation is kept to roll back to"
            raise WorkspaceError(f"{path}: damaged ({why}){back}") from None

    def _commit(self, items: pl.DataFrame, sources: pl.DataFrame) -> int:
        """Write a new generation and point HEAD at it. The caller holds the writer lock."""
        head = self._head()
        generation = head.generation + 1
        _write_generation(self.root / TABLES_DIR, generation, items, sources)
        pause_if_testing("before-head")
        atomic_write(self.root / HEAD, _head_json(_Head(generation, head.generation)))
        self._sweep()
        return generation

    @contextmanager
    def _writer_lock(self) -> Iterator[None]:
        busy = f"{self.root}: another satsang command is writing to this workspace"
        with exclusive_lock(self.root / LOCK, self.lock_timeout_s, busy, error=WorkspaceError):
            self._sweep()
            yield

    def _sweep(self) -> None:
        """Remove what no committed state refers to: leftovers of a killed or failed writer, old generations.

        Keeps HEAD's generation and the one before it, and every source either of them lists.
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


def _write_generation(tables: Path, generation: int, items: pl.DataFrame, sources: pl.DataFrame) -> None:
    """Write both tables into a temp directory, then rename it into place whole."""
    final = tables / _generation_name(generation)
    staging = tables / f"{TMP_PREFIX}{final.name}-{os.getpid()}"
    for leftover in (staging, final):  # only ever an uncommitted leftover: HEAD points below `generation`
        if leftover.exists():
            shutil.rmtree(leftover)
    staging.mkdir()
    try:
        for name, frame in ((ITEMS_TABLE, items), (SOURCES_TABLE, sources)):
            frame.write_parquet(staging / name)
            fsync(staging / name)
        fsync(staging)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a kill cannot get here; the next writer sweeps that
        raise
    fsync(tables)


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


