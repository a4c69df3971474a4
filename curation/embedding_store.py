"""Embeddings on disk: one store per model and engine in `<workspace>/embeddings/`, keyed by text.

Keyed by the sha256 of the exact text embedded, so re-scoring unchanged items encodes
nothing, and other tools (similarity search in the dashboard, semantic near-duplicates)
reuse them. Each engine of a model (`curation.embedding_backends`) has its own store:
their embeddings differ in the last digits (ONNX float32) or more (int8, static), and a
store mixing them would make scores depend on which engine first saw a text.

On disk a store is a directory `<store-key>.parquet/` of append-only parts,
`part-NNNNNN.arrow`: Arrow IPC files (uncompressed, so memory-mappable) with the
columns the single Parquet file had, `key` (string) and `embedding` (float32 × d);
`pl.read_ipc(part)` reads one. (The directory keeps the `.parquet` name of the single
file it replaced, so tools that look for `embeddings/*.parquet` still find it.) A
save writes only the rows added since the last one, as a new part (temp + rename),
under the embeddings directory's file lock; parts beyond `max_parts` are merged.
An old single-file store `<store-key>.parquet` is read as it is and migrated into
part 000000 on the first save, bit for bit.

In memory a store holds an index, 44 bytes a key (its 32-byte digest, the first 8 again as
an integer to search, a 4-byte row number; sorted), and the rows added since the last save;
`get` reads just the requested rows from the memory-mapped parts, then unmaps them. Memory
depends on the number of keys, not on their vectors or on how many were read.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.embedding_backends import PACKAGED_MODEL, TORCH
from curation.errors import CurationError
from curation.files import TMP_PREFIX, atomic_replace, exclusive_lock, fsync, fsync_tree, temp_path, write_error_reason

EMBEDDINGS_DIR = "embeddings"
PART_NAME = re.compile(r"part-(\d{6})\.arrow")
# The old single file, renamed aside while its migration into part 000000 is under way.
MIGRATING_SUFFIX = ".legacy"


class ScoreError(CurationError):
    """Scoring cannot run as asked (no exemplars, nothing to learn from, an unusable store)."""


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def model_key(name: str) -> str:
    """A file-name-safe key naming the model's embedding store; different models never share one."""
    if name == PACKAGED_MODEL:
        return PACKAGED_MODEL
    path = Path(name).expanduser()
    if path.exists():
        # Two local models may share a directory name: the hash of the full path tells them apart.
        resolved = str(path.resolve())
        return f"{_UNSAFE.sub('-', path.resolve().name)}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"
    return _UNSAFE.sub("-", name.replace("/", "--"))


def store_key(model: str, backend: str = TORCH) -> str:
    """The embedding store's name for a model run by a backend: `model_key`, plus `.<backend>` unless torch."""
    return model_key(model) if backend == TORCH else f"{model_key(model)}.{backend}"


def text_key(text: str) -> str:
    """The embedding store's key for a text: sha256 of its exact UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---- keys as 32-byte digests --------------------------------------------------------------

_HEX = b"0123456789abcdef"
_DIGEST = np.dtype("S32")
# Keys that are not a text_key (tests, tools) are hashed, under a prefix of their own, so that
# no such key can equal the digest of a text_key: that would take a sha256 preimage.
_OTHER_KEY_PREFIX = b"satsang embedding key\x00"


def _digest_of(key: str) -> bytes:
    if len(key) == 64:
        raw = key.encode("ascii", "replace")
        if not raw.translate(None, _HEX):
            return bytes.fromhex(key)
    return hashlib.sha256(_OTHER_KEY_PREFIX + key.encode("utf-8")).digest()


def _digests(keys: Sequence[str]) -> np.ndarray:
    """The keys' 32-byte digests: a text_key's own bytes (64 lower-case hex digits), else a sha256 of the key."""
    if all(len(key) == 64 for key in keys):
        joined = "".join(keys).encode("utf-8", "replace")
        if len(joined) == 64 * len(keys) and not joined.translate(None, _HEX):  # the usual case, in one C call
            return np.frombuffer(bytes.fromhex(joined.decode("ascii")), _DIGEST).copy()
    return np.array([_digest_of(key) for key in keys], dtype=_DIGEST).reshape(len(keys))


def _arrow_digests(keys: pa.Array) -> np.ndarray:
    """`_digests` of an Arrow string column, decoded from its buffers when every key is a text_key."""
    n = len(keys)
    if n and keys.type == pa.string() and not keys.null_count:
        offsets = np.frombuffer(keys.buffers()[1], np.int32)[keys.offset : keys.offset + n + 1]
        if (np.diff(offsets) == 64).all():
            joined = bytes(memoryview(keys.buffers()[2])[offsets[0] : offsets[-1]])
            if not joined.translate(None, _HEX):
                return np.frombuffer(bytes.fromhex(joined.decode("ascii")), _DIGEST).copy()
    return _digests(keys.to_pylist())


# ---- the index: sorted runs of (digest, row) --------------------------------------------


def _prefix(digests: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each digest as an integer, ordered as the digests are: integer search is ~7x faster."""
    return np.ascontiguousarray(digests).view(">u8").reshape(-1, 4)[:, 0].astype(np.uint64)


def _sort_order(digests: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    """The order that sorts `digests`: by their prefixes, unless two share one (then by the whole digest)."""
    order = np.argsort(prefix, kind="stable")
    ordered = prefix[order]
    if len(ordered) > 1 and (ordered[1:] == ordered[:-1]).any():
        return np.argsort(digests, kind="stable")
    return order


@dataclass
class _Run:
    digests: np.ndarray  # sorted, unique
    prefix: np.ndarray  # _prefix(digests): what is searched
    rows: np.ndarray  # uint32: the row of each digest, counted over all segments


class _Index:
    """digest -> global row, as a few sorted runs (merged like a binary counter: O(n log n) in all).

    44 bytes a key: the digest (32), its first 8 bytes as an integer to search (8), the row (4).
    """

    def __init__(self) -> None:
        self.runs: list[_Run] = []

    def __len__(self) -> int:
        return sum(len(run.digests) for run in self.runs)

    @property
    def nbytes(self) -> int:
        return sum(run.digests.nbytes + run.prefix.nbytes + run.rows.nbytes for run in self.runs)

    def lookup(self, digests: np.ndarray) -> np.ndarray:
        """Each digest's row, -1 where it is not indexed."""
        found = np.full(len(digests), -1, np.int64)
        if not len(digests):
            return found
        prefix = _prefix(digests)
        for run in self.runs:
            at = np.minimum(np.searchsorted(run.prefix, prefix), len(run.digests) - 1)
            hit = run.digests[at] == digests
            # Two digests sharing a prefix (about 1 in 2^64 per pair): the match may lie after `at`.
            shared = ~hit & (run.prefix[at] == prefix)
            if shared.any():
                at[shared] = np.minimum(np.searchsorted(run.digests, digests[shared]), len(run.digests) - 1)
                hit = run.digests[at] == digests
            found[hit] = run.rows[at[hit]]
        return found

    def add(self, digests: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Index the digests not indexed yet (the first of repeats); returns the mask of those taken."""
        prefix = _prefix(digests)
        order = _sort_order(digests, prefix)
        ordered = digests[order]
        first = np.ones(len(order), bool)
        first[1:] = ordered[1:] != ordered[:-1]  # repeats follow their first (stable sort)
        order = order[first]
        order = order[self.lookup(digests[order]) < 0]
        taken = np.zeros(len(digests), bool)
        taken[order] = True
        if len(order):
            self.runs.append(_Run(digests[order], prefix[order], rows[order].astype(np.uint32)))
            while len(self.runs) > 1 and len(self.runs[-2].digests) <= 2 * len(self.runs[-1].digests):
                newer, older = self.runs.pop(), self.runs.pop()
                merged, merged_prefix = np.concatenate([older.digests, newer.digests]), np.concatenate([older.prefix, newer.prefix])
                by = _sort_order(merged, merged_prefix)
                self.runs.append(_Run(merged[by], merged_prefix[by], np.concatenate([older.rows, newer.rows])[by]))
        return taken


# ---- parts --------------------------------------------------------------------------------


@dataclass
class _Part:
    """One part on disk (or the old single file, held in memory): its record batches as key columns and row views."""

    number: int  # -1: the old single file
    path: Path
    keys: list[pa.Array]
    vectors: list[np.ndarray]  # memory-mapped (n, d) float32 views, one per record batch
    map: mmap.mmap | None = None

    @property
    def n(self) -> int:
        return sum(len(v) for v in self.vectors)

    def release(self) -> None:
        """Unmap the pages read so far: they stay in the page cache, but out of this process's RSS.

        Otherwise every row ever read stays mapped (with its neighbours: the kernel maps
        64 KB around each fault), and a long run's RSS would grow to the size of the store.
        """
        if self.map is not None:
            self.map.madvise(mmap.MADV_DONTNEED)


def _schema(dim: int) -> pa.Schema:
    return pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False)])


def _batch(keys: pa.Array | Sequence[str], vectors: np.ndarray) -> pa.RecordBatch:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    keys = keys if isinstance(keys, pa.Array) else pa.array(list(keys), pa.string())
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    return pa.RecordBatch.from_arrays([keys, embedding], schema=_schema(vectors.shape[1]))


def _write_part(path: Path, batches: Iterator[pa.RecordBatch], dim: int) -> None:
    """Publish a part from `batches` atomically: temp file, fsync, rename (a killed write leaves only a temp)."""

    def write(temp: Path) -> None:
        with pa.OSFile(str(temp), "wb") as sink, pa.ipc.new_file(sink, _schema(dim)) as writer:
            for batch in batches:
                writer.write_batch(batch)

    try:
        atomic_replace(path, write)
    except Exception as error:
        reason = write_error_reason(error)
        if reason is None:
            raise
        raise ScoreError(f"{path}: cannot write embeddings ({reason}); the parts already saved are intact") from None


def _vectors_of(column: pa.Array, path: Path) -> np.ndarray:
    if not pa.types.is_fixed_size_list(column.type) or column.type.value_type != pa.float32() or column.null_count:
        raise ScoreError(f"{path}: its embedding column is {column.type}, not float32 × d without nulls")
    flat = column.flatten()
    if flat.null_count:
        raise ScoreError(f"{path}: its embeddings hold nulls")
    return flat.to_numpy(zero_copy_only=True).reshape(len(column), column.type.list_size)


def _read_part(number: int, path: Path) -> _Part:
    """A part's batches, memory-mapped (nothing is read until asked); ScoreError naming the file if it is damaged."""
    try:
        with open(path, "rb") as file:
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        mapped.madvise(mmap.MADV_RANDOM)  # rows are read a few at a time, anywhere: no read-ahead
        reader = pa.ipc.open_file(pa.py_buffer(mapped))
        if reader.schema.names[:2] != ["key", "embedding"]:
            raise ScoreError(f"{path}: columns {reader.schema.names}, not key and embedding")
        keys, vectors = [], []
        if reader.schema.field(0).type not in (pa.string(), pa.large_string()):
            raise ScoreError(f"{path}: its key column is {reader.schema.field(0).type}, not string")
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            if batch.column(0).null_count:
                raise ScoreError(f"{path}: {batch.column(0).null_count} rows have no key")
            keys.append(batch.column(0))
            vectors.append(_vectors_of(batch.column(1), path))
    except (pa.ArrowException, ValueError) as why:
        raise ScoreError(
            f"{path}: damaged embedding part ({' '.join(str(why).split())[:160]}); move it away and score again"
            " (its texts are encoded again)"
        ) from None
    return _Part(number, path, keys, vectors, mapped)


def _read_single_file(path: Path) -> _Part:
    """The old format, one Parquet table, read whole as the old store read it (it held the table whole too)."""
    import polars as pl

    try:
        frame = pl.read_parquet(path)
        if not frame.height:
            return _Part(-1, path, [], [])
        keys = pa.array(frame["key"].to_list(), pa.string())
        vectors = np.ascontiguousarray(frame["embedding"].to_numpy(), dtype=np.float32)
    except FileNotFoundError:
        raise
    except (pl.exceptions.PolarsError, OSError, KeyError, ValueError) as why:
        raise ScoreError(f"{path}: damaged embedding table ({' '.join(str(why).split())[:160]}); move it away and score again") from None
    if vectors.ndim != 2:
        raise ScoreError(f"{path}: its embedding column is {frame['embedding'].dtype}, not float32 × d")
    return _Part(-1, path, [keys], [vectors])


# ---- the embedding store ------------------------------------------------------------------


class EmbeddingStore:
    """One model's embeddings on disk (key: sha256 of the text, embedding: float32 × d), read row by row.

    `add` keeps new rows in memory; `save` writes them as a new part under a file lock,
    after reading the parts other processes saved meanwhile (so two scorers adding at once
    lose nothing and never store a key twice). `get` reads the requested rows from the
    memory-mapped parts. See the module's docstring for the format.
    """

    # How long a save waits for another scorer's save before giving up with an error.
    lock_timeout_s: float = 120.0
    # More parts than this and a save merges the smallest into one, leaving half as many parts.
    max_parts: int = 64
    # A merge copies rows in record batches of about this size (its memory bound).
    merge_batch_bytes: int = 16 << 20

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._migrating = self.path.with_name(self.path.name + MIGRATING_SUFFIX)
        self._pending_keys: list[str] = []
        self._pending_at: dict[str, int] = {}
        self._pending_chunks: list[np.ndarray] = []
        self._reset()
        self._refresh()

    @classmethod
    def for_workspace(cls, root: str | os.PathLike[str], model: str, backend: str = TORCH) -> EmbeddingStore:
        """The workspace's store for `model` run by `backend` (engines' embeddings differ slightly: never mixed)."""
        return cls(Path(root) / EMBEDDINGS_DIR / f"{store_key(model, backend)}.parquet")

    def __len__(self) -> int:
        return len(self._index) + len(self._pending_keys)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return key in self._pending_at or bool(self._index.lookup(_digests([key]))[0] >= 0)

    def contains(self, keys: Sequence[str]) -> np.ndarray:
        """`key in store` for many keys at once (one index lookup): a bool per key."""
        found = self._index.lookup(_digests(list(keys))) >= 0 if len(keys) else np.zeros(0, bool)
        return found | np.array([key in self._pending_at for key in keys], bool)

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def index_bytes(self) -> int:
        """Memory the key index takes (digests and row numbers): what a store costs, besides unsaved rows."""
        return self._index.nbytes

    @property
    def n_parts(self) -> int:
        return len(self._parts)

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """The embeddings of `keys`, in order; KeyError for a key not stored."""
        out = np.empty((len(keys), self._dim or 0), np.float32)
        if not len(keys):
            return out
        pending = np.array([self._pending_at.get(key, -1) for key in keys], np.int64)
        if (pending >= 0).any():
            unsaved = np.concatenate(self._pending_chunks) if len(self._pending_chunks) > 1 else self._pending_chunks[0]
            self._pending_chunks = [unsaved]
            out[pending >= 0] = unsaved[pending[pending >= 0]]
        stored = np.flatnonzero(pending < 0)
        if len(stored):
            rows = self._index.lookup(_digests([keys[i] for i in stored]))
            if (rows < 0).any():
                raise KeyError(keys[stored[np.flatnonzero(rows < 0)[0]]])
            order = np.argsort(rows, kind="stable")  # each segment's rows in file order: sequential reads
            rows, stored = rows[order], stored[order]
            segment = np.searchsorted(self._segment_starts, rows, side="right") - 1
            bounds = np.flatnonzero(np.diff(segment)) + 1
            touched = set()
            for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(rows)]])):
                s = segment[lo]
                out[stored[lo:hi]] = self._segments[s][rows[lo:hi] - self._segment_starts[s]]
                touched.add(self._segment_part[s])
            for part in touched:
                self._parts[part].release()
        return out

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys but embeddings of shape {vectors.shape}")
        if self._dim is not None and vectors.shape[1] != self._dim:
            raise ScoreError(f"{self.path}: holds {self._dim}-d embeddings, not {vectors.shape[1]}-d")
        if not len(keys):
            return
        stored = self._index.lookup(_digests(list(keys))) >= 0
        fresh = []
        for i, key in enumerate(keys):
            if not stored[i] and key not in self._pending_at:
                self._pending_at[key] = len(self._pending_keys)
                self._pending_keys.append(key)
                fresh.append(i)
        if fresh:
            self._pending_chunks.append(vectors[fresh])
            self._dim = vectors.shape[1]

    def save(self) -> None:
        """Write what was added since the last save, as one new part; nothing when nothing was."""
        if not self._pending_keys:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        busy = f"{self.path}: another process is saving embeddings here"
        with exclusive_lock(self.path.parent / ".lock", self.lock_timeout_s, busy, error=ScoreError):
            self._sweep()
            self._migrate_single_file()
            self.path.mkdir(exist_ok=True)
            self._refresh()  # the parts other processes saved since we looked
            keys = self._pending_keys
            vectors = np.concatenate(self._pending_chunks)
            if self._dim is not None and vectors.shape[1] != self._dim:
                raise ScoreError(f"{self.path}: holds {self._dim}-d embeddings, not {vectors.shape[1]}-d")
            new = np.flatnonzero(self._index.lookup(_digests(keys)) < 0)
            if len(new):
                number = max((part.number for part in self._parts), default=0) + 1
                path = self.path / f"part-{number:06d}.arrow"
                _write_part(path, iter([_batch([keys[i] for i in new], vectors[new])]), vectors.shape[1])
                self._add_parts([_read_part(number, path)])
            self._pending_keys, self._pending_at, self._pending_chunks = [], {}, []
            if len(self._parts) > self.max_parts:
                self._compact()

    # ---- reading what is on disk ----

    def _reset(self) -> None:
        self._parts: list[_Part] = []
        self._segments: list[np.ndarray] = []
        self._segment_part: list[int] = []  # the index in _parts of each segment's part
        self._segment_starts = np.zeros(1, np.int64)  # a sentinel past the end: starts of segments, then the total
        self._index = _Index()
        pending = getattr(self, "_pending_chunks", None)  # rows added but not saved keep their dimension
        self._dim = pending[0].shape[1] if pending else None

    def _listing(self) -> dict[int, Path]:
        """Part number -> path of what is stored now; -1 for an old single file (or one being migrated)."""
        if self.path.is_dir():
            found = {}
            for entry in os.scandir(self.path):
                match = PART_NAME.fullmatch(entry.name)
                if match:
                    found[int(match.group(1))] = Path(entry.path)
            return found
        if self.path.is_file():
            return {-1: self.path}
        if self._migrating.is_file():  # a migration under way (or killed): the old file, renamed aside
            return {-1: self._migrating}
        return self._listing() if self.path.is_dir() else {}  # the migration ended while we looked

    def _refresh(self) -> None:
        """Index the parts saved since we looked; from scratch if some we knew were merged away."""
        for attempt in range(5):
            listing = self._listing()
            known = {part.number: part.path for part in self._parts}
            if any(listing.get(number) != path for number, path in known.items()):
                self._reset()
                known = {}
            try:
                new = [_read_single_file(listing[n]) if n < 0 else _read_part(n, listing[n]) for n in sorted(set(listing) - set(known))]
            except FileNotFoundError:  # merged or migrated away while we listed: list again
                if attempt == 4:
                    raise
                continue
            self._add_parts(new)
            return

    def _add_parts(self, parts: list[_Part]) -> None:
        """Index the parts' keys, in one sort (at open, a store's every part)."""
        first_row = int(self._segment_starts[-1])
        starts = [first_row]
        # One array filled batch by batch: a list of per-batch arrays, concatenated, would leave the heap fragmented.
        digests = np.empty(sum(len(vectors) for part in parts for vectors in part.vectors), _DIGEST)
        for part in parts:
            for vectors in part.vectors:
                if self._dim is None:
                    self._dim = vectors.shape[1]
                elif vectors.shape[1] != self._dim:
                    raise ScoreError(f"{part.path}: holds {vectors.shape[1]}-d embeddings, but {self.path} holds {self._dim}-d")
        for part in parts:
            self._parts.append(part)
            for keys, vectors in zip(part.keys, part.vectors):
                self._segments.append(vectors)
                self._segment_part.append(len(self._parts) - 1)
                digests[starts[-1] - first_row : starts[-1] - first_row + len(vectors)] = _arrow_digests(keys)
                starts.append(starts[-1] + len(vectors))
            part.release()
        if starts[-1] >= 2**32:
            raise ScoreError(f"{self.path}: more than 2^32 embeddings in one store")
        self._segment_starts = np.concatenate([self._segment_starts[:-1], np.array(starts, np.int64)])
        if len(digests):
            self._index.add(digests, np.arange(first_row, starts[-1], dtype=np.int64))

    # ---- writing (always under the lock) ----

    def _sweep(self) -> None:
        """Remove what killed saves left: temp parts, and half-staged migrations (only saves, under this lock, make them)."""
        if self.path.is_dir():
            for entry in os.scandir(self.path):
                if entry.name.startswith(TMP_PREFIX):
                    Path(entry.path).unlink(missing_ok=True)
        for entry in self.path.parent.glob(f"{TMP_PREFIX}{self.path.name}-*"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink(missing_ok=True)

    def _migrate_single_file(self) -> None:
        """An old single-file store becomes a directory whose part 000000 holds its rows, bit for bit.

        A file cannot be replaced by a directory in one rename, so: stage the directory, rename the
        file aside (readers and the next save find it there), rename the directory in, remove the file.
        """
        if self.path.is_dir():
            self._migrating.unlink(missing_ok=True)  # a migration killed after its last rename
            return
        if self.path.is_file():
            os.replace(self.path, self._migrating)
            fsync(self.path.parent)
        if not self._migrating.is_file():
            return
        old = _read_single_file(self._migrating)
        staging = temp_path(self.path)
        staging.mkdir()
        if old.n:
            dim = old.vectors[0].shape[1]
            _write_part(staging / "part-000000.arrow", iter([_batch(old.keys[0], old.vectors[0])]), dim)
        fsync_tree(staging)
        os.rename(staging, self.path)
        fsync(self.path.parent)
        self._migrating.unlink()
        fsync(self.path.parent)

    def _compact(self) -> None:
        """Merge the smallest parts into one new part, then remove them (readers keep their maps).

        Merging the smallest (not the newest) copies each row a few times over a store's life,
        not once per save. The index is renumbered, not rebuilt: a merge costs no more memory
        than its batches.
        """
        n_chosen = len(self._parts) - self.max_parts // 2 + 1
        smallest = sorted(range(len(self._parts)), key=lambda at: (self._parts[at].n, self._parts[at].number))
        chosen = set(smallest[:n_chosen])
        number = max(part.number for part in self._parts) + 1
        merged_segments = [s for s in range(len(self._segments)) if self._segment_part[s] in chosen]
        kept: list[np.ndarray] = []  # per merged segment: the rows the index points at (a merge never copies a key twice)

        def batches() -> Iterator[pa.RecordBatch]:
            # Small batches (a save's) are combined into one of merge_batch_bytes, fewer segments to read;
            # large ones are written as they are, straight from their map.
            held: list[pa.RecordBatch] = []
            written = 0
            for s in merged_segments:
                part = self._parts[self._segment_part[s]]
                keys, vectors = part.keys[s - self._segment_part.index(self._segment_part[s])], self._segments[s]
                first = int(self._segment_starts[s])
                keep = self._index.lookup(_arrow_digests(keys)) == np.arange(first, first + len(vectors))
                kept.append(keep)
                batch = _batch(keys, vectors) if keep.all() else _batch(keys.filter(pa.array(keep)), vectors[keep])
                if batch.nbytes >= self.merge_batch_bytes // 2:
                    yield from _combined(held)
                    yield batch
                    written += batch.nbytes + sum(b.nbytes for b in held)
                    held = []
                else:
                    held.append(batch)
                    if sum(b.nbytes for b in held) >= self.merge_batch_bytes:
                        yield from _combined(held)
                        written += sum(b.nbytes for b in held)
                        held = []
                if written >= self.merge_batch_bytes:  # written: out of RSS
                    for at in chosen:
                        self._parts[at].release()
                    written = 0
            yield from _combined(held)

        path = self.path / f"part-{number:06d}.arrow"
        _write_part(path, batches(), self._dim or 0)
        for at in chosen:
            self._parts[at].path.unlink(missing_ok=True)
        fsync(self.path)
        merged = _read_part(number, path)
        if merged.n != sum(int(keep.sum()) for keep in kept):  # cannot be; but then rather read everything again
            self._reset()
            self._refresh()
            return
        self._renumber(chosen, merged_segments, kept, merged)
        pa.default_memory_pool().release_unused()  # the merge's batches: Arrow's allocator would keep them

    def _renumber(self, chosen: set[int], merged_segments: list[int], kept: list[np.ndarray], merged: _Part) -> None:
        """After a merge: the index's rows move to the remaining parts' new places and the merged part's."""
        sizes = np.diff(self._segment_starts)
        in_merge = np.zeros(len(sizes), bool)
        in_merge[merged_segments] = True
        # A remaining segment moves down by the merged segments before it; merged rows go to the end, in order.
        shift = np.cumsum(np.where(in_merge, sizes, 0)) - np.where(in_merge, sizes, 0)
        merged_start = int(sizes[~in_merge].sum())
        rank = np.cumsum(np.concatenate(kept)) - 1 if kept else np.zeros(0, np.int64)
        offset_in_merge = np.zeros(len(sizes), np.int64)
        offset_in_merge[merged_segments] = np.cumsum([0] + [len(keep) for keep in kept[:-1]])
        for run in self._index.runs:
            rows = run.rows.astype(np.int64)
            segment = np.searchsorted(self._segment_starts, rows, side="right") - 1
            moved = in_merge[segment]
            rows[~moved] -= shift[segment[~moved]]
            rows[moved] = merged_start + rank[offset_in_merge[segment[moved]] + rows[moved] - self._segment_starts[segment[moved]]]
            run.rows = rows.astype(np.uint32)
        parts = [part for at, part in enumerate(self._parts) if at not in chosen] + [merged]
        self._parts, self._segments, self._segment_part = [], [], []
        starts = [0]
        for at, part in enumerate(parts):
            self._parts.append(part)
            for vectors in part.vectors:
                self._segments.append(vectors)
                self._segment_part.append(at)
                starts.append(starts[-1] + len(vectors))
        self._segment_starts = np.array(starts, np.int64)
        merged.release()


def _combined(batches: list[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    if batches:
        table = pa.Table.from_batches(batches).combine_chunks()
        if table.num_rows:
            yield from table.to_batches(max_chunksize=table.num_rows)
