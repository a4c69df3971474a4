"""Trace a text to the training items it echoes, across a checkpoint's whole lineage.

    satsang trace runs/sft "Mouna is not closing the mouth. It is eternal speech."

    from inference.trace import trace_checkpoint
    result = trace_checkpoint("runs/sft", text)
    result.items[0]     # the item echoed most: version, stages, source, talk, offsets, the span

As OLMoTrace does for OLMo, one level below the audit's token shares: which training items does
this text repeat word for word? The checkpoint's lineage (training/lineage.py, the parent's
embedded whole) names each stage's dataset version; each version gets an index, and the text's
longest verbatim spans are looked up in every one of them.

Words, not model tokens: a text and a training item are compared as lowercase words (letters
and digits, inner apostrophes kept; punctuation and spacing ignored), so a trace does not
depend on which tokenizer trained, and a generated answer matches its source however the model
spaced it. A span is a maximal run of at least `min_words` (default 6) consecutive words of the
text that occurs inside one training item's question, answer or passage.

The index of a version (built on first trace, once; a version is read-only, so it lives in the
workspace's cache: `<workspace>/cache/trace/<version id>-<manifest sha256, 12 hex>/`, or under
$XDG_CACHE_HOME/satsang/trace for a version outside a workspace):

    meta.json         format, version id, manifest sha256, counts, build time
    words.npy         every word of every item part as a 64-bit hash (blake2b), 0 between parts
    part_starts.npy   where each part starts in words.npy
    grams.npy         the hash of every INDEX_NGRAM-word window that stays inside one part, sorted
    gram_pos.npy      the position of each such window
    texts.bin, text_offsets.npy   each part's text (UTF-8), to show the span and its offsets
    parts.parquet     each part: item id, source id and title, section, part (question, answer,
                      passage), dataset row, and its character offsets in the source when the
                      workspace still holds the item
    nearest.npy, nearest_parts.npy  unit embeddings of answers and passages (only when a trace
                      asks for nearest items; the workspace's embeddings cache is reused)

A lookup hashes the text's windows, binary-searches them in grams.npy, and extends each hit
word by word against words.npy: time grows with the text and the hits, not with the version
(bench/trace.py: 100,000 items).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curation.files import TMP_PREFIX, cache_dir, exclusive_lock, sha256_file
from curation.shingles import window_hashes, word_hash
from curation.versions import MANIFEST_NAME, PARQUET_DIR, read_manifest_header
from training.lineage import LINEAGE_NAME, TrainingError, lineage_chain, read_lineage

TRACE_FORMAT = 1
INDEX_NGRAM = 6  # words per indexed window: the shortest span a trace can find
MIN_WORDS = 6
CACHE_DIR = ("cache", "trace")
MAX_HITS_EXTENDED = 20_000  # occurrences of one window extended word by word; more are counted, not extended
WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_EMPTY_HASH = 1  # word hashes avoid 0, the separator between parts

Progress = Callable[[str], None]


class TraceError(TrainingError):
    """A trace cannot run as asked: no lineage, a version that cannot be found or read; the message says which."""


# ---- words ------------------------------------------------------------------------------------


def words_of(text: str) -> list[tuple[str, int, int]]:
    """(lowercase word, start, end) for every word of a text, the offsets into the text."""
    return [(m.group(0).lower().replace("’", "'"), m.start(), m.end()) for m in WORD.finditer(text)]


def _word_hash(word: str, cache: dict[str, int]) -> int:
    value = cache.get(word)
    if value is None:
        value = word_hash(word) or _EMPTY_HASH
        cache[word] = value
    return value


# ---- the index of one version -----------------------------------------------------------------


def version_parts(version_dir: Path) -> Any:
    """Every trained text of a version as a part: (item_id, source_id, source_title, section, part, row, text)."""
    import polars as pl

    header = read_manifest_header(version_dir)
    files = sorted((version_dir / PARQUET_DIR).glob("*.parquet"))
    if not files:
        raise TraceError(f"{version_dir}: no {PARQUET_DIR}/*.parquet to index")
    frame = pl.read_parquet(files).with_row_index("row")
    if header.get("kind") == "sft":
        # messages alternate user, assistant; the k-th pair is the k-th of item_ids.
        turns = frame.select("row", "source_id", "source_title", "section", "item_ids", "messages")
        rows = []
        for row, source_id, title, section, item_ids, messages in turns.iter_rows():
            for k, item_id in enumerate(item_ids):
                for part, message in (("question", messages[2 * k]), ("answer", messages[2 * k + 1])):
                    rows.append((item_id, source_id, title, section, part, row, message["content"] or ""))
        return pl.DataFrame(rows, schema=["item_id", "source_id", "source_title", "section", "part", "row", "text"], orient="row")
    return frame.select(
        "item_id", "source_id", "source_title", "section", pl.col("text_kind").alias("part"), pl.col("row").cast(pl.Int64), pl.col("text").fill_null("")
    )


def _source_offsets(parts: Any, workspace_root: Path | None) -> Any:
    """Each part's character offsets in its source, from the workspace's items (null where it no longer has them)."""
    import polars as pl

    null_offsets = parts.with_columns(pl.lit(None, pl.Int64).alias("source_start"), pl.lit(None, pl.Int64).alias("source_end"))
    if workspace_root is None:
        return null_offsets
    try:
        from curation.workspace import Workspace

        items = Workspace.open(workspace_root).items()
    except Exception:  # noqa: BLE001 - a moved or damaged workspace only costs the source offsets
        return null_offsets
    spans = items.select(
        "item_id",
        "source_id",
        pl.struct(
            question=pl.col("question_spans").list.first().list.first(),
            answer=pl.col("answer_spans").list.first().list.first(),
            passage=pl.col("text_spans").list.first().list.first(),
        ).alias("_starts"),
        pl.struct(
            question=pl.col("question_spans").list.last().list.last(),
            answer=pl.col("answer_spans").list.last().list.last(),
            passage=pl.col("text_spans").list.last().list.last(),
        ).alias("_ends"),
        pl.col("start").alias("_item_start"),
        pl.col("end").alias("_item_end"),
    ).unique(subset=["item_id", "source_id"], keep="first")
    joined = parts.join(spans, on=["item_id", "source_id"], how="left", maintain_order="left")
    part = pl.col("part")

    def pick(column: str, fallback: str) -> pl.Expr:
        chosen = (
            pl.when(part == "question").then(pl.col(column).struct.field("question"))
            .when(part == "answer").then(pl.col(column).struct.field("answer"))
            .otherwise(pl.col(column).struct.field("passage"))
        )
        return pl.coalesce(chosen, pl.col(fallback)).cast(pl.Int64)

    return joined.with_columns(pick("_starts", "_item_start").alias("source_start"), pick("_ends", "_item_end").alias("source_end")).drop(
        "_starts", "_ends", "_item_start", "_item_end"
    )


def workspace_of(version_dir: Path) -> Path | None:
    """The workspace a version directory sits in (<workspace>/versions/<id>), or None."""
    from curation.versions import VERSIONS_DIR
    from curation.workspace import MANIFEST

    resolved = version_dir.resolve()
    workspace = resolved.parent.parent
    return workspace if resolved.parent.name == VERSIONS_DIR and (workspace / MANIFEST).is_file() else None


def default_cache_root(version_dir: Path) -> Path:
    """<workspace>/cache/trace for a version in a workspace's versions/, else trace/ in satsang's cache directory."""
    workspace = workspace_of(version_dir)
    if workspace is not None:
        return workspace.joinpath(*CACHE_DIR)
    return cache_dir() / "trace"


def build_index(version_dir: str | Path, cache_root: str | Path | None = None, progress: Progress | None = None) -> Path:
    """Build a version's index (if not built) and return its directory; safe against a concurrent build."""
    version_dir = Path(version_dir)
    if not (version_dir / MANIFEST_NAME).is_file():
        raise TraceError(f"{version_dir}: not a dataset version (no {MANIFEST_NAME})")
    header = read_manifest_header(version_dir)
    manifest_sha = sha256_file(version_dir / MANIFEST_NAME)
    root = Path(cache_root) if cache_root is not None else default_cache_root(version_dir)
    final = root / f"{header['version_id']}-{manifest_sha[:12]}"
    if (final / "meta.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / ".lock", 600.0, f"another trace is building an index in {root}"):
        if (final / "meta.json").is_file():
            return final
        staging = root / f"{TMP_PREFIX}{os.getpid()}-{header['version_id']}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        started = time.perf_counter()
        if progress:
            progress(f"indexing {header['version_id']} for tracing (once; cached in {final})")
        parts = _source_offsets(version_parts(version_dir), workspace_of(version_dir))
        texts = parts["text"].to_list()
        cache: dict[str, int] = {}
        hashes: list[int] = []
        starts = np.zeros(len(texts) + 1, dtype=np.int64)
        for i, text in enumerate(texts):
            starts[i] = len(hashes)
            hashes.extend(_word_hash(m.group(0).lower().replace("’", "'"), cache) for m in WORD.finditer(text))
            hashes.append(0)
        starts[len(texts)] = len(hashes)
        words = np.array(hashes, dtype=np.uint64)
        grams = window_hashes(words, INDEX_NGRAM)
        # A window that holds a separator crosses two parts: not indexed.
        separators = np.concatenate([[0], np.cumsum(words == 0)])
        inside = separators[INDEX_NGRAM : INDEX_NGRAM + len(grams)] - separators[: len(grams)] == 0
        positions = np.flatnonzero(inside).astype(np.uint64 if len(words) >= 2**32 else np.uint32)
        grams = grams[inside]
        order = np.argsort(grams, kind="stable")
        encoded = [t.encode("utf-8") for t in texts]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        (staging / "texts.bin").write_bytes(b"".join(encoded))
        np.save(staging / "text_offsets.npy", offsets)
        np.save(staging / "words.npy", words)
        np.save(staging / "part_starts.npy", starts)
        np.save(staging / "grams.npy", grams[order])
        np.save(staging / "gram_pos.npy", positions[order])
        parts.drop("text").write_parquet(staging / "parts.parquet")
        meta = {
            "format": TRACE_FORMAT,
            "version_id": header["version_id"],
            "version_name": header.get("name"),
            "kind": header.get("kind"),
            "manifest_sha256": manifest_sha,
            "version_path": str(version_dir.resolve()),
            "ngram": INDEX_NGRAM,
            "n_parts": len(texts),
            "n_items": int(parts["item_id"].n_unique()) if len(texts) else 0,
            "n_words": int(len(words) - len(texts)),
            "n_windows": int(len(grams)),
            "build_s": round(time.perf_counter() - started, 3),
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(staging, final)
    return final


@dataclass(frozen=True)
class Occurrence:
    """Where a span occurs: one part of one training item."""

    part_index: int
    start: int  # offsets of the span in the part's text
    end: int


class VersionIndex:
    """A built index, memory-mapped: `spans(words)` finds the maximal verbatim spans of a text."""

    def __init__(self, directory: str | Path):
        import polars as pl

        self.directory = Path(directory)
        try:
            self.meta = json.loads((self.directory / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise TraceError(f"{self.directory / 'meta.json'}: unreadable trace index ({error})") from None
        if self.meta.get("format") != TRACE_FORMAT:
            raise TraceError(f"{self.directory}: trace index format {self.meta.get('format')}, this satsang reads {TRACE_FORMAT}; delete it to rebuild")
        # Plain arrays over the maps: numpy's memmap wrapper costs more than the lookups themselves.
        load = lambda name: np.load(self.directory / name, mmap_mode="r").view(np.ndarray)  # noqa: E731
        self.words, self.part_starts = load("words.npy"), load("part_starts.npy")
        self.grams, self.gram_pos = load("grams.npy"), load("gram_pos.npy")
        self.text_offsets = load("text_offsets.npy")
        self._texts = np.memmap(self.directory / "texts.bin", dtype=np.uint8, mode="r") if self.text_offsets[-1] > 0 else np.zeros(0, np.uint8)
        self.parts = pl.read_parquet(self.directory / "parts.parquet")
        self.ngram = int(self.meta["ngram"])

    @property
    def version_id(self) -> str:
        return self.meta["version_id"]

    def text(self, part_index: int) -> str:
        start, end = int(self.text_offsets[part_index]), int(self.text_offsets[part_index + 1])
        return bytes(self._texts[start:end]).decode("utf-8")

    def longest_matches(self, query: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """For each window start i of the query: the length of the longest match starting there when it
        runs past every match before it (else 0: inside an earlier span, not maximal), the corpus
        positions reaching that length (up to MAX_HITS_EXTENDED of them), and how many times the window occurs."""
        n = self.ngram
        windows = window_hashes(query, n)
        lengths = np.zeros(len(windows), dtype=np.int64)
        where: list[np.ndarray] = [np.zeros(0, np.int64)] * len(windows)
        counts = np.zeros(len(windows), dtype=np.int64)
        if not len(windows) or not len(self.grams):
            return lengths, where, counts
        low = np.searchsorted(self.grams, windows, side="left")
        high = np.searchsorted(self.grams, windows, side="right")
        n_words = len(self.words)
        reach = 0  # the furthest query position a match found so far runs to
        for i in np.flatnonzero(high > low):
            if reach >= len(query):
                break
            hits = self.gram_pos[low[i] : min(high[i], low[i] + MAX_HITS_EXTENDED)].astype(np.int64)
            counts[i] = int(high[i] - low[i])
            # Words already known to be needed: the window itself, and up to the reach (a match that
            # stops sooner is inside an earlier span). One gather checks them all; a hash collision fails it too.
            known = max(n, reach + 1 - int(i))
            offsets = np.arange(known)
            inside = hits[hits + known <= n_words]
            alive = inside[np.all(self.words[inside[:, None] + offsets] == query[i : i + known], axis=1)]
            if not len(alive):
                continue
            length = known
            while i + length < len(query):
                step = alive[alive + length < n_words]
                step = step[self.words[step + length] == query[i + length]]
                if not len(step):
                    break
                alive, length = step, length + 1
            if i + length > reach:
                lengths[i], where[i], reach = length, alive, int(i) + length
        return lengths, where, counts

    def locate(self, position: int, n_words: int) -> Occurrence:
        """The part a corpus position falls in, and the span's character offsets in that part's text."""
        part = int(np.searchsorted(self.part_starts, position, side="right") - 1)
        first = position - int(self.part_starts[part])
        found = words_of(self.text(part))
        return Occurrence(part, found[first][1], found[first + n_words - 1][2])


# ---- tracing a checkpoint ---------------------------------------------------------------------


@dataclass(frozen=True)
class TracedVersion:
    version_id: str
    name: str | None
    kind: str | None
    stages: tuple[str, ...]  # the lineage stages that trained on it, root first ("pretrain", "sft")
    index: str  # the index directory
    n_items: int
    n_words: int


@dataclass
class TraceSpan:
    """A maximal run of the text's words found verbatim in training data."""

    start: int  # character offsets in the traced text
    end: int
    text: str
    n_words: int
    n_occurrences: int  # in every version together (windows beyond MAX_HITS_EXTENDED counted, not placed)


@dataclass
class TracedItem:
    """A training item the text echoes, with the longest span it shares and where that span sits."""

    version_id: str
    stages: tuple[str, ...]
    item_id: str
    source_id: str
    source_title: str
    section: str
    part: str  # question, answer or passage
    row: int  # the dataset row that holds it
    longest_words: int  # words of the longest shared span
    covered_words: int  # words of the text inside spans this item shares
    span: str  # the longest shared span, as the item writes it
    part_start: int  # the span's character offsets in the item's part (its question, answer or passage)
    part_end: int
    source_start: int | None  # the part's character offsets in the source file (null when the workspace no longer has it)
    source_end: int | None
    text_start: int  # the span's offsets in the traced text
    text_end: int
    similarity: float | None = None  # cosine similarity, for items found by embedding


@dataclass
class TraceResult:
    text: str
    checkpoint: str | None
    min_words: int
    versions: list[TracedVersion]
    spans: list[TraceSpan]
    items: list[TracedItem]  # by longest span, then words covered
    nearest: list[TracedItem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def coverage(self) -> float:
        """The share of the text's words inside some verbatim span."""
        total = len(words_of(self.text))
        covered = _covered(self.text, self.spans)
        return covered / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "checkpoint": self.checkpoint,
            "min_words": self.min_words,
            "coverage": round(self.coverage, 4),
            "seconds": round(self.seconds, 4),
            "versions": [asdict(v) for v in self.versions],
            "spans": [asdict(s) for s in self.spans],
            "items": [asdict(i) for i in self.items],
            "nearest": [asdict(i) for i in self.nearest],
        }

    def summary(self) -> dict[str, Any]:
        """The few fields a server response or an eval sample carries."""
        top = self.items[0] if self.items else None
        return {
            "coverage": round(self.coverage, 4),
            "longest_span_words": max((s.n_words for s in self.spans), default=0),
            "n_spans": len(self.spans),
            "top_item": None if top is None else {k: getattr(top, k) for k in ("version_id", "stages", "item_id", "source_title", "section", "part", "longest_words", "span")},
            "items": [{k: getattr(i, k) for k in ("version_id", "item_id", "section", "part", "longest_words")} for i in self.items[:5]],
        }


def _covered(text: str, spans: Sequence[TraceSpan]) -> int:
    marks = set()
    for i, (_, start, end) in enumerate(words_of(text)):
        if any(s.start <= start and end <= s.end for s in spans):
            marks.add(i)
    return len(marks)


def lineage_versions(checkpoint_dir: str | Path, workspace: str | Path | None = None) -> list[tuple[Path, str, tuple[str, ...]]]:
    """(version directory, version id, stages) for each dataset version of the checkpoint's lineage chain, root first."""
    from curation.versions import VERSIONS_DIR

    directory = Path(checkpoint_dir)
    lineage = read_lineage(directory)
    if lineage is None:
        raise TraceError(f"{directory}: no {LINEAGE_NAME}: nothing says which data trained it")
    found: dict[str, tuple[Path | None, list[str]]] = {}
    for stage in lineage_chain(lineage):
        dataset = stage.get("dataset") or {}
        version_id = dataset.get("version_id")
        if not version_id:
            raise TraceError(f"{directory / LINEAGE_NAME}: a {stage.get('stage') or 'parent'} stage names no dataset version")
        path, stages = found.setdefault(version_id, (None, []))
        stages.append(str(stage.get("stage")))
        if path is None:
            for candidate in [dataset.get("path"), workspace and Path(workspace) / VERSIONS_DIR / version_id]:
                if candidate and (Path(candidate) / MANIFEST_NAME).is_file():
                    found[version_id] = (Path(candidate), stages)
                    break
    missing = [v for v, (path, _) in found.items() if path is None]
    if missing:
        raise TraceError(f"{directory / LINEAGE_NAME}: dataset version {missing[0]} not found at its recorded path (--workspace to look elsewhere)")
    return [(path, version_id, tuple(stages)) for version_id, (path, stages) in found.items() if path is not None]


class Tracer:
    """A checkpoint's versions with their indexes open: trace many texts at the cost of one load (serve, eval)."""

    def __init__(self, checkpoint_dir: str | Path, workspace: str | Path | None = None, cache_root: str | Path | None = None, progress: Progress | None = None):
        self.checkpoint = str(checkpoint_dir)
        self.workspace = workspace
        self._sources = lineage_versions(checkpoint_dir, workspace)
        self.indexes: list[tuple[VersionIndex, tuple[str, ...]]] = []
        for version_dir, _, stages in self._sources:
            self.indexes.append((VersionIndex(build_index(version_dir, cache_root, progress)), stages))
        self._embedder: Any = None

    @property
    def versions(self) -> list[TracedVersion]:
        return [
            TracedVersion(ix.version_id, ix.meta.get("version_name"), ix.meta.get("kind"), stages, str(ix.directory), ix.meta["n_items"], ix.meta["n_words"])
            for ix, stages in self.indexes
        ]

    def trace(self, text: str, min_words: int = MIN_WORDS, max_items: int = 10, nearest: int = 0) -> TraceResult:
        """The text's maximal verbatim spans in every version, the items they come from, and (nearest > 0) the nearest items by embedding."""
        if min_words < INDEX_NGRAM:
            raise TraceError(f"min_words must be at least {INDEX_NGRAM}, the index's window")
        started = time.perf_counter()
        found = words_of(text)
        cache: dict[str, int] = {}
        query = np.array([_word_hash(w, cache) for w, _, _ in found], dtype=np.uint64)
        per_version = [(ix, stages, *ix.longest_matches(query)) for ix, stages in self.indexes]
        # A span starts at i and runs as far as any version takes it; a span inside an earlier one is not maximal.
        best = np.zeros(max(len(query) - INDEX_NGRAM + 1, 0), dtype=np.int64)
        for _, _, lengths, _, _ in per_version:
            best = np.maximum(best, lengths)
        spans: list[TraceSpan] = []
        items: dict[tuple[str, int], TracedItem] = {}
        reach = 0
        for i in range(len(best)):
            length = int(best[i])
            if length < min_words or i + length <= reach:
                continue
            reach = i + length
            start, end = found[i][1], found[i + length - 1][2]
            occurrences = 0
            for ix, stages, lengths, where, counts in per_version:
                if lengths[i] != length:
                    continue
                occurrences += max(len(where[i]), 0) if counts[i] <= MAX_HITS_EXTENDED else int(counts[i])
                for position in where[i][:max_items * 4]:
                    occ = ix.locate(int(position), length)
                    key = (ix.version_id, occ.part_index)
                    item = items.get(key)
                    if item is None or item.longest_words < length:
                        replacement = self._item(ix, stages, occ, length, start, end)
                        replacement.covered_words = item.covered_words if item is not None else 0
                        items[key] = item = replacement
                    item.covered_words += length
            spans.append(TraceSpan(start, end, text[start:end], length, occurrences))
        ranked = sorted(items.values(), key=lambda it: (-it.longest_words, -it.covered_words, it.version_id, it.row, it.part))[:max_items]
        result = TraceResult(text, self.checkpoint, min_words, self.versions, spans, ranked)
        if nearest > 0:
            result.nearest = self.nearest(text, nearest)
        result.seconds = time.perf_counter() - started
        return result

    def _item(self, ix: VersionIndex, stages: tuple[str, ...], occ: Occurrence, length: int, start: int, end: int) -> TracedItem:
        row = ix.parts.row(occ.part_index, named=True)
        return TracedItem(
            version_id=ix.version_id,
            stages=stages,
            item_id=row["item_id"],
            source_id=row["source_id"],
            source_title=row["source_title"] or "",
            section=row["section"] or "",
            part=row["part"],
            row=int(row["row"]),
            longest_words=length,
            covered_words=0,
            span=ix.text(occ.part_index)[occ.start : occ.end],
            part_start=occ.start,
            part_end=occ.end,
            source_start=row["source_start"],
            source_end=row["source_end"],
            text_start=start,
            text_end=end,
        )

    def nearest(self, text: str, k: int) -> list[TracedItem]:
        """The k answers and passages nearest the text by the project's embedding model (curation.score)."""
        from curation.score import Embedder, EmbeddingStore, ScoreConfig

        config = ScoreConfig()
        if self._embedder is None:
            self._embedder = Embedder(config)
        query = self._embedder.encode([text])[0]
        scored: list[tuple[float, VersionIndex, tuple[str, ...], int]] = []
        for ix, stages in self.indexes:
            matrix_path, parts_path = ix.directory / "nearest.npy", ix.directory / "nearest_parts.npy"
            if not matrix_path.is_file():
                chosen = [i for i, part in enumerate(ix.parts["part"].to_list()) if part in ("answer", "passage")]
                workspace = workspace_of(Path(ix.meta["version_path"]))
                store = EmbeddingStore.for_workspace(workspace, config.model) if workspace is not None else None
                vectors = Embedder(config, store, model=self._embedder.model).embed([ix.text(i) for i in chosen], save=False) if chosen else np.zeros((0, len(query)), np.float32)
                np.save(parts_path, np.array(chosen, dtype=np.int64))
                np.save(matrix_path, vectors.astype(np.float16))
            matrix, chosen_parts = np.load(matrix_path, mmap_mode="r"), np.load(parts_path)
            if not len(chosen_parts):
                continue
            similarity = np.asarray(matrix, dtype=np.float32) @ query
            for j in np.argsort(-similarity)[:k]:
                scored.append((float(similarity[j]), ix, stages, int(chosen_parts[j])))
        scored.sort(key=lambda s: -s[0])
        nearest = []
        for similarity, ix, stages, part in scored[:k]:
            item = self._item(ix, stages, Occurrence(part, 0, len(ix.text(part))), 0, 0, 0)
            item.similarity = round(similarity, 4)
            nearest.append(item)
        return nearest


class LazyTracer:
    """A Tracer made on first use (a server starts at once; the first traced request pays the index)."""

    def __init__(self, checkpoint_dir: str | Path, workspace: str | Path | None = None):
        import threading

        self.checkpoint_dir, self.workspace = Path(checkpoint_dir), workspace
        self._tracer: Tracer | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_checkpoint(cls, checkpoint_dir: str | Path, workspace: str | Path | None = None) -> LazyTracer | None:
        """None when the checkpoint has no lineage to trace against."""
        return cls(checkpoint_dir, workspace) if (Path(checkpoint_dir) / LINEAGE_NAME).is_file() else None

    def trace(self, text: str, min_words: int = MIN_WORDS, max_items: int = 10, nearest: int = 0) -> TraceResult:
        with self._lock:
            if self._tracer is None:
                self._tracer = Tracer(self.checkpoint_dir, self.workspace)
        return self._tracer.trace(text, min_words, max_items, nearest)


def trace_samples(samples: Sequence[Any], tracer: Tracer, min_words: int = MIN_WORDS) -> list[dict[str, Any]]:
    """An evaluation's answers (inference.eval.EvalSample) traced: one row per answer, silence untraced."""
    rows = []
    for sample in samples:
        summary = None if sample.silent or not sample.response.strip() else tracer.trace(sample.response, min_words).summary()
        rows.append({"model": sample.model, "prompt_id": sample.prompt_id, "response": sample.response, "trace": summary})
    return rows


def trace_checkpoint(
    checkpoint_dir: str | Path, text: str, workspace: str | Path | None = None, min_words: int = MIN_WORDS, max_items: int = 10, nearest: int = 0, progress: Progress | None = None
) -> TraceResult:
    """Trace one text against the checkpoint's lineage (its versions indexed on first use)."""
    return Tracer(checkpoint_dir, workspace, progress=progress).trace(text, min_words, max_items, nearest)


__all__ = [
    "INDEX_NGRAM",
    "LazyTracer",
    "MIN_WORDS",
    "TraceError",
    "TraceResult",
    "TraceSpan",
    "TracedItem",
    "TracedVersion",
    "Tracer",
    "VersionIndex",
    "build_index",
    "default_cache_root",
    "lineage_versions",
    "trace_checkpoint",
    "trace_samples",
    "version_parts",
    "words_of",
    "workspace_of",
]
