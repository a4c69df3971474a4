"""A workspace's committed tables on disk: generations whose items are kept in parts.

One generation::

    tables/<generation>/items/part-00000.parquet     the items, in order, in parts of at most PART_ROWS
    tables/<generation>/items/part-00001.parquet
    tables/<generation>/sources.parquet

(a generation written before parts existed holds one `items.parquet`, read as its only part).

Why parts (issue 17): a stage over a large corpus reads, transforms and writes one part
at a time, so its memory follows the part size, not the corpus; and a part that a new
generation leaves as it was is hard-linked from the generation before, not copied, so an
ingest writes only its new items. Parts are never changed once written (a new generation
gets new files), so sharing one between generations is safe.

Every part of a generation has the same columns in the same order: `GenerationWriter`
widens a part that lacks a column another part has (with the value its absence means:
null for a stage column, `schema.ADDED_COLUMNS`' value for a column added since), so
readers may scan all parts as one table.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from curation.files import TMP_PREFIX, fsync
from curation.schema import ADDED_COLUMNS, ITEM_SCHEMA, empty_items, with_added_columns

# Why 50,000: a part of passages is ~35 MB of text, so a stage holding a part or two in memory
# stays in the hundreds of MB whatever the corpus; and the 100-item sample is still one part.
PART_ROWS = 50_000
ITEMS_DIR = "items"
LEGACY_ITEMS = "items.parquet"
SOURCES_TABLE = "sources.parquet"


class DamagedTable(Exception):
    """A table file that cannot be read: (path, why). The workspace says how to roll back."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path}: {why}")
        self.path, self.why = path, why


@dataclass(frozen=True)
class ItemPart:
    """One part of a generation's items: its file, the rows before it, and its rows."""

    path: Path
    offset: int
    rows: int

    def read(self, columns: list[str] | None = None) -> pl.DataFrame:
        """The part's items (with any column added since it was written), or just `columns`."""
        try:
            frame = pl.read_parquet(self.path, columns=columns)
        except FileNotFoundError:
            raise
        except (pl.exceptions.PolarsError, OSError) as error:
            raise DamagedTable(self.path, " ".join(str(error).split())[:160]) from None
        return frame if columns is not None else with_added_columns(frame, ITEM_SCHEMA)


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def generation_parts(directory: Path) -> list[ItemPart]:
    """The item parts of the generation in `directory`, in order. FileNotFoundError if it is gone."""
    import pyarrow.parquet as pq

    legacy = directory / LEGACY_ITEMS
    if legacy.exists():
        paths = [legacy]
    else:
        paths = sorted((directory / ITEMS_DIR).iterdir())  # FileNotFoundError: pruned meanwhile
    parts, offset = [], 0
    for path in paths:
        try:
            rows = pq.read_metadata(path).num_rows
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise DamagedTable(path, " ".join(str(error).split())[:160]) from None
        parts.append(ItemPart(path, offset, rows))
        offset += rows
    return parts


def read_parts(parts: Iterable[ItemPart]) -> pl.DataFrame:
    """All parts as one frame (the whole items table: for what is small enough to hold)."""
    frames = [part.read() for part in parts]
    return pl.concat(frames, how="vertical") if frames else empty_items()


def scan_parts(parts: list[ItemPart]) -> pl.LazyFrame:
    """All parts as one lazy frame: a query reads only the columns and rows it needs."""
    if not parts:
        return empty_items().lazy()
    scan = pl.scan_parquet([part.path for part in parts])
    present = scan.collect_schema().names()
    missing = [name for name in ADDED_COLUMNS if name in ITEM_SCHEMA and name not in present]
    return scan.with_columns(pl.lit(ADDED_COLUMNS[name], dtype=ITEM_SCHEMA[name]).alias(name) for name in missing)


def batches(frame: pl.DataFrame, rows: int) -> Iterator[pl.DataFrame]:
    """`frame` cut into slices of at most `rows` (none for an empty frame)."""
    for start in range(0, frame.height, rows):
        yield frame.slice(start, rows)


class GenerationWriter:
    """A new generation, built part by part in a staging directory, then published whole by one rename.

    `write` a frame as the next part, `link` a part of an earlier generation unchanged, or
    `adopt` a part file written elsewhere on the same filesystem (moved in). The caller
    holds the workspace's writer lock; a writer killed half-way leaves only a TMP_PREFIX
    directory, which the next writer sweeps.
    """

    def __init__(self, tables: Path, generation: int):
        self.final = tables / f"{generation:06d}"
        self.staging = tables / f"{TMP_PREFIX}{self.final.name}-{os.getpid()}"
        for leftover in (self.staging, self.final):  # only ever an uncommitted leftover: HEAD is below
            if leftover.exists():
                shutil.rmtree(leftover)
        (self.staging / ITEMS_DIR).mkdir(parents=True)
        self.n_parts = 0
        self.n_rows = 0
        self.n_written = 0  # parts written or adopted, not linked

    def _next(self) -> Path:
        path = self.staging / ITEMS_DIR / part_name(self.n_parts)
        self.n_parts += 1
        return path

    def write(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        path = self._next()
        frame.write_parquet(path)
        self.n_rows += frame.height
        self.n_written += 1

    def link(self, part: ItemPart) -> None:
        path = self._next()
        try:
            os.link(part.path, path)
        except OSError:  # a filesystem without hard links: a copy is the same bytes
            shutil.copyfile(part.path, path)
        self.n_rows += part.rows

    def adopt(self, path: Path, rows: int) -> None:
        os.replace(path, self._next())
        self.n_rows += rows
        self.n_written += 1

    def publish(self, sources: pl.DataFrame) -> None:
        """Give every part the same columns, write the sources, and rename the generation into place."""
        self._conform()
        sources.write_parquet(self.staging / SOURCES_TABLE)
        for path in [*(self.staging / ITEMS_DIR).iterdir(), self.staging / SOURCES_TABLE, self.staging / ITEMS_DIR]:
            fsync(path)
        fsync(self.staging)
        os.rename(self.staging, self.final)
        fsync(self.final.parent)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def _conform(self) -> None:
        """Widen parts that lack a column some other part has (a part an ingest added beside deduped ones)."""
        paths = sorted((self.staging / ITEMS_DIR).iterdir())
        schemas = [pl.read_parquet_schema(path) for path in paths]
        if len({tuple(schema.items()) for schema in schemas}) <= 1:
            return
        # The union, in first-seen order, each column at the supertype of its parts' types.
        union = pl.concat([pl.DataFrame(schema=schema) for schema in schemas], how="diagonal_relaxed").schema
        for path, schema in zip(paths, schemas):
            if tuple(schema.items()) == tuple(union.items()):
                continue
            frame = pl.read_parquet(path)
            frame = frame.with_columns(
                pl.lit(ADDED_COLUMNS.get(name), dtype=dtype).alias(name) for name, dtype in union.items()
                if name not in frame.columns
            ).select([pl.col(name).cast(dtype) for name, dtype in union.items()])
            temp = path.with_name(TMP_PREFIX + path.name)
            frame.write_parquet(temp)
            os.replace(temp, path)  # replaces the link, never the earlier generation's file
