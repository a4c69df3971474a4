"""The book catalog: LLM annotations of whole books, and selecting the contemplative ones to ingest.

The continued-pretraining corpus is cut from the Standardized Project Gutenberg
Corpus by filtering a catalog of per-book annotations (JSON lines, one book per
line, metadata only): tradition, orientation, contemplative depth 1-3, themes,
era, corpus relevance, the annotator's confidence, and the book's size in tokens
and its path in the corpus.

Reading a catalog (`load_catalog`) never stops at a bad line. Each line is
either an entry or a problem, `file:line: what`:

- A line is skipped, as a problem, when what a filter or the ingest relies on is
  unusable: not JSON, not an object, no id (or an id seen before), no title, no
  usable relative path, a token count that is not a non-negative integer,
  contemplative_depth outside 1-3, corpus_relevance or confidence outside their
  levels, tradition / orientation / era not a non-empty string, themes not a
  list of strings, tradition_secondary neither null nor a string.
- A value that is usable but off the annotation vocabulary is kept, with a
  warning on the entry: a tradition, orientation, era or theme not in the
  vocabulary, a theme count outside 2-5 (the annotator's own `_warnings` say the
  same in the same words, and are kept), an author, language, accessibility or
  notes of the wrong type (dropped to empty). Filters see the value as written.

`CatalogFilter` says which books to keep (every criterion optional; names may be
glob patterns such as `buddhist-*`); `select` applies it; `Selection.summary` and
`plot_selection` report the selection by tradition and relevance (the CLI's table of it is
satsang.render.stages.render_selection);
`find_books` locates the selected books under a books directory and
`ingest_selection` ingests those found as prose sources.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curation.errors import CurationError

if TYPE_CHECKING:
    import polars as pl

    from curation.executors import Executor
    from curation.workspace import IngestReport, Workspace

# Levels in order, best first: tables and plots list them in this order.
RELEVANCE_LEVELS: tuple[str, ...] = ("core", "useful", "marginal", "questionable")
CONFIDENCE_LEVELS: tuple[str, ...] = ("high", "medium", "low")
DEPTHS: tuple[int, ...] = (1, 2, 3)
ACCESSIBILITY_LEVELS: tuple[int, ...] = (1, 2, 3)
THEME_COUNT = (2, 5)  # the annotation asks for 2-5 themes

# The annotation vocabulary (what the annotator was asked to choose from). A value off it is a warning.
TRADITIONS: frozenset[str] = frozenset({
    "advaita-vedanta", "buddhist-general", "buddhist-mahayana", "buddhist-theravada", "buddhist-tibetan",
    "buddhist-zen", "christian-general", "christian-mystical", "classical-greek", "existentialist", "hermetic",
    "hindu-devotional", "hindu-general", "hindu-yoga", "indigenous", "islamic-general", "jewish-general",
    "jewish-mystical", "mixed-or-unclear", "neoplatonist", "roman", "secular-contemplative", "stoic", "sufi",
    "taoist", "transcendentalist", "western-philosophical",
})
ORIENTATIONS: frozenset[str] = frozenset({
    "aphorism-collection", "autobiography-confession", "devotional-prayer", "dialogue", "letters", "mixed",
    "narrative", "poetry", "prose-commentary", "prose-treatise", "scripture", "sermons-talks",
})
ERAS: tuple[str, ...] = ("ancient", "classical", "medieval", "early-modern", "modern", "contemporary")
THEMES: frozenset[str] = frozenset({
    "attention", "beyond-knowledge", "body", "compassion", "death", "desire", "detachment", "devotion",
    "direct-experience", "effortless-effort", "ego-dissolution", "guru-grace", "illusion", "impermanence",
    "liberation", "nature-of-mind", "ordinary-life", "paradox", "practice-as-life", "presence",
    "scripture-and-tradition", "self-inquiry", "stillness", "suffering", "surrender", "the-sacred", "the-source",
    "true-nature", "unity", "witness-awareness",
})

# The licence note a Gutenberg book gets when its catalog line names none.
GUTENBERG_LICENCE = "Project Gutenberg (public domain in the USA; see the book's own licence header)"


class CatalogError(CurationError):
    """A catalog cannot be read at all (missing file, a directory), or a filter is malformed."""


class _LineProblem(Exception):
    """Why one catalog line is skipped."""


@dataclass(frozen=True)
class CatalogProblem:
    """A catalog line that was skipped, and why: `str()` is `file:line: what`."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True)
class CatalogEntry:
    """One book's annotation, validated (construction raises ValueError on an unusable value)."""

    id: str
    title: str
    path: str  # relative path of the book's text in the corpus, '/'-separated
    tokens: int
    tradition: str
    orientation: str
    contemplative_depth: int  # 1-3
    themes: tuple[str, ...]
    era: str
    confidence: str  # CONFIDENCE_LEVELS
    corpus_relevance: str  # RELEVANCE_LEVELS
    author: str = ""
    tradition_secondary: str | None = None
    original_language: str = ""
    accessibility: int | None = None  # 1-3
    category: str = ""
    notes: str = ""
    licence: str = ""  # the line's "licence" (or "license"), if it has one
    warnings: tuple[str, ...] = ()
    line: int = 0  # line number in the catalog file, 0 if not read from one

    def __post_init__(self):
        for name in ("id", "title", "tradition", "orientation", "era"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.path, str) or not _is_relative_path(self.path):
            raise ValueError(f"path must be a relative path inside the corpus, got {self.path!r}")
        if not _is_int(self.tokens) or self.tokens < 0:
            raise ValueError(f"tokens must be a non-negative integer, got {self.tokens!r}")
        if not _is_int(self.contemplative_depth) or self.contemplative_depth not in DEPTHS:
            raise ValueError(f"contemplative_depth must be 1, 2 or 3, got {self.contemplative_depth!r}")
        if self.confidence not in CONFIDENCE_LEVELS:
            raise ValueError(f"confidence must be one of {', '.join(CONFIDENCE_LEVELS)}, got {self.confidence!r}")
        if self.corpus_relevance not in RELEVANCE_LEVELS:
            raise ValueError(
                f"corpus_relevance must be one of {', '.join(RELEVANCE_LEVELS)}, got {self.corpus_relevance!r}"
            )
        if not isinstance(self.themes, tuple) or not all(isinstance(t, str) and t for t in self.themes):
            raise ValueError(f"themes must be a list of non-empty strings, got {self.themes!r}")
        if self.tradition_secondary is not None and (
            not isinstance(self.tradition_secondary, str) or not self.tradition_secondary.strip()
        ):
            raise ValueError(f"tradition_secondary must be null or a non-empty string, got {self.tradition_secondary!r}")
        if self.accessibility is not None and self.accessibility not in ACCESSIBILITY_LEVELS:
            raise ValueError(f"accessibility must be 1, 2, 3 or null, got {self.accessibility!r}")

    @property
    def relevance_rank(self) -> int:
        return RELEVANCE_LEVELS.index(self.corpus_relevance)

    @classmethod
    def from_record(cls, record: Any, line: int = 0) -> CatalogEntry:
        """An entry from one parsed catalog line; ValueError says why the line is unusable."""
        if not isinstance(record, dict):
            raise ValueError(f"not a JSON object but {type(record).__name__}")
        for name in ("id", "title", "path", "tokens", "tradition", "orientation", "contemplative_depth",
                     "themes", "era", "confidence", "corpus_relevance"):
            if name not in record or record[name] is None:
                raise ValueError(f"missing {name}")
        themes = record["themes"]
        if not isinstance(themes, list):
            raise ValueError(f"themes must be a list of strings, got {type(themes).__name__}")
        warnings: list[str] = []
        own_warnings = record.get("_warnings")
        if isinstance(own_warnings, list):
            warnings.extend(str(w) for w in own_warnings)
        elif own_warnings is not None:
            warnings.append(f"_warnings is not a list: {own_warnings!r}")

        def optional_str(name: str) -> str:
            value = record.get(name)
            if value is None:
                return ""
            if not isinstance(value, str):
                warnings.append(f"{name} is not a string; dropped")
                return ""
            return value

        accessibility = record.get("accessibility")
        if accessibility is not None and (not _is_int(accessibility) or accessibility not in ACCESSIBILITY_LEVELS):
            warnings.append(f"accessibility must be 1-3, got {accessibility!r}; dropped")
            accessibility = None
        licence = record.get("licence", record.get("license"))
        entry = cls(
            id=record["id"],
            title=record["title"],
            path=record["path"],
            tokens=record["tokens"],
            tradition=record["tradition"],
            orientation=record["orientation"],
            contemplative_depth=record["contemplative_depth"],
            themes=tuple(themes),
            era=record["era"],
            confidence=record["confidence"],
            corpus_relevance=record["corpus_relevance"],
            author=optional_str("author"),
            tradition_secondary=record.get("tradition_secondary"),
            original_language=optional_str("original_language"),
            accessibility=accessibility,
            category=optional_str("category"),
            notes=optional_str("notes"),
            licence=licence if isinstance(licence, str) else "",
            line=line,
        )
        for warning in vocabulary_warnings(entry):
            if warning not in warnings:
                warnings.append(warning)
        return _replace(entry, warnings=tuple(warnings))


def vocabulary_warnings(entry: CatalogEntry) -> list[str]:
    """Usable values off the annotation vocabulary, worded as the annotator's own `_warnings` word them."""
    warnings = []
    if entry.tradition not in TRADITIONS:
        warnings.append(f"invalid tradition: {entry.tradition}")
    if entry.tradition_secondary is not None and entry.tradition_secondary not in TRADITIONS:
        warnings.append(f"invalid tradition_secondary: {entry.tradition_secondary}")
    if entry.orientation not in ORIENTATIONS:
        warnings.append(f"invalid orientation: {entry.orientation}")
    warnings.extend(f"invalid theme: {theme}" for theme in entry.themes if theme not in THEMES)
    low, high = THEME_COUNT
    if not low <= len(entry.themes) <= high:
        warnings.append(f"theme count {len(entry.themes)}, expected {low}-{high}")
    if entry.era not in ERAS:
        warnings.append(f"invalid era: {entry.era}")
    return warnings


def _replace(entry: CatalogEntry, **changes: Any) -> CatalogEntry:
    from dataclasses import replace

    return replace(entry, **changes)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_relative_path(path: str) -> bool:
    if not path.strip() or "\\" in path or "\0" in path or path.startswith("/"):
        return False
    normal = posixpath.normpath(path)
    return normal != "." and not normal.startswith("../") and normal != ".."


# ---- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    """What `load_catalog` read: the usable entries, in file order, and the lines it skipped."""

    path: str
    entries: tuple[CatalogEntry, ...]
    problems: tuple[CatalogProblem, ...]
    n_lines: int  # non-blank lines read

    def __iter__(self):  # so that `entries, problems = load_catalog(path)` reads naturally
        return iter((self.entries, self.problems))

    @property
    def n_warned(self) -> int:
        return sum(1 for entry in self.entries if entry.warnings)


def load_catalog(path: str | os.PathLike[str]) -> Catalog:
    """Every line of a JSON-lines catalog, validated: usable entries, and one problem per skipped line.

    Never raises for the content of a line; CatalogError only when the file itself
    cannot be read. Blank lines are ignored. Unpack as `entries, problems = load_catalog(path)`.
    """
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"{path}: no such file")
    if path.is_dir():
        raise CatalogError(f"{path}: is a directory, not a catalog file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CatalogError(f"{path}: cannot read: {error.strerror}") from None
    entries: list[CatalogEntry] = []
    problems: list[CatalogProblem] = []
    first_line_of: dict[str, int] = {}
    n_lines = 0
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        n_lines += 1
        try:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise _LineProblem(f"not UTF-8 (invalid byte 0x{raw[error.start]:02x} at column {error.start + 1})")
            try:
                record = json.loads(text)
            except ValueError as error:
                raise _LineProblem(f"not valid JSON ({error})")
            try:
                entry = CatalogEntry.from_record(record, line=number)
            except (ValueError, TypeError) as error:
                raise _LineProblem(str(error))
            if entry.id in first_line_of:
                raise _LineProblem(f"duplicate id {entry.id!r} (first on line {first_line_of[entry.id]})")
        except _LineProblem as problem:
            problems.append(CatalogProblem(str(path), number, str(problem)))
            continue
        first_line_of[entry.id] = number
        entries.append(entry)
    return Catalog(str(path), tuple(entries), tuple(problems), n_lines)


# ---- filtering --------------------------------------------------------------------------------


def _names(values: Iterable[str] | str | None) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    return tuple(dict.fromkeys(v.strip() for v in values if v and v.strip()))


def _matches_any(value: str | None, patterns: tuple[str, ...]) -> bool:
    return value is not None and any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


@dataclass(frozen=True)
class CatalogFilter:
    """Which books to keep. Every criterion is optional (empty: any); a book must pass all of them.

    Names (traditions, eras, themes, orientations) may be glob patterns: `buddhist-*`.
    """

    traditions: tuple[str, ...] = field(default=(), metadata={"help": "Primary tradition, e.g. advaita-vedanta or buddhist-*."})
    include_secondary: bool = field(default=False, metadata={"help": "A tradition also matches a book's secondary tradition."})
    min_depth: int = field(default=1, metadata={"help": "Least contemplative depth (1-3)."})
    max_depth: int = field(default=3, metadata={"help": "Greatest contemplative depth (1-3)."})
    relevance: tuple[str, ...] = field(default=(), metadata={"help": "Corpus relevance levels: core, useful, marginal, questionable."})
    confidence: tuple[str, ...] = field(default=(), metadata={"help": "Annotator confidence levels: high, medium, low."})
    eras: tuple[str, ...] = field(default=(), metadata={"help": "Eras, e.g. ancient, medieval, modern."})
    themes: tuple[str, ...] = field(default=(), metadata={"help": "Themes; a book needs any one of them."})
    orientations: tuple[str, ...] = field(default=(), metadata={"help": "Orientations, e.g. dialogue, sermons-talks, prose-treatise."})
    min_tokens: int | None = field(default=None, metadata={"help": "Smallest book size in tokens."})
    max_tokens: int | None = field(default=None, metadata={"help": "Largest book size in tokens."})

    def __post_init__(self):
        for name in ("traditions", "relevance", "confidence", "eras", "themes", "orientations"):
            object.__setattr__(self, name, _names(getattr(self, name)))
        if not (self.min_depth in DEPTHS and self.max_depth in DEPTHS and self.min_depth <= self.max_depth):
            raise CatalogError(f"depth range must lie within 1-3, got {self.min_depth}-{self.max_depth}")
        for name, levels in (("relevance", RELEVANCE_LEVELS), ("confidence", CONFIDENCE_LEVELS)):
            unknown = [v for v in getattr(self, name) if v not in levels]
            if unknown:
                raise CatalogError(f"{name} must be among {', '.join(levels)}, not {', '.join(unknown)}")
        for name in ("min_tokens", "max_tokens"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise CatalogError(f"{name} must be a non-negative integer, got {value!r}")
        if self.min_tokens is not None and self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise CatalogError(f"min_tokens {self.min_tokens} is above max_tokens {self.max_tokens}")

    def matches(self, entry: CatalogEntry) -> bool:
        if self.traditions and not (
            _matches_any(entry.tradition, self.traditions)
            or (self.include_secondary and _matches_any(entry.tradition_secondary, self.traditions))
        ):
            return False
        if not self.min_depth <= entry.contemplative_depth <= self.max_depth:
            return False
        if self.relevance and entry.corpus_relevance not in self.relevance:
            return False
        if self.confidence and entry.confidence not in self.confidence:
            return False
        if self.eras and not _matches_any(entry.era, self.eras):
            return False
        if self.themes and not any(_matches_any(theme, self.themes) for theme in entry.themes):
            return False
        if self.orientations and not _matches_any(entry.orientation, self.orientations):
            return False
        if self.min_tokens is not None and entry.tokens < self.min_tokens:
            return False
        if self.max_tokens is not None and entry.tokens > self.max_tokens:
            return False
        return True

    def describe(self) -> str:
        """The criteria in one line, for report titles."""
        parts = []
        if self.traditions:
            parts.append("tradition " + "|".join(self.traditions) + (" (or secondary)" if self.include_secondary else ""))
        if (self.min_depth, self.max_depth) != (1, 3):
            parts.append(f"depth {self.min_depth}-{self.max_depth}" if self.min_depth != self.max_depth else f"depth {self.min_depth}")
        for name, values in (("relevance", self.relevance), ("confidence", self.confidence), ("era", self.eras),
                             ("theme", self.themes), ("orientation", self.orientations)):
            if values:
                parts.append(f"{name} " + "|".join(values))
        if self.min_tokens is not None or self.max_tokens is not None:
            parts.append(f"tokens {self.min_tokens or 0}-{self.max_tokens if self.max_tokens is not None else 'any'}")
        return ", ".join(parts) or "all books"


@dataclass(frozen=True)
class Selection:
    """The entries a filter kept, in catalog order."""

    entries: tuple[CatalogEntry, ...]
    filter: CatalogFilter
    n_catalog: int  # entries the filter was applied to

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def n_tokens(self) -> int:
        return sum(entry.tokens for entry in self.entries)

    def frame(self) -> pl.DataFrame:
        """One row per selected book: id, title, author, tradition, relevance, depth, confidence, era, tokens, path."""
        import polars as pl

        return pl.DataFrame(
            {
                "id": [e.id for e in self.entries],
                "title": [e.title for e in self.entries],
                "author": [e.author for e in self.entries],
                "tradition": [e.tradition for e in self.entries],
                "corpus_relevance": [e.corpus_relevance for e in self.entries],
                "contemplative_depth": [e.contemplative_depth for e in self.entries],
                "confidence": [e.confidence for e in self.entries],
                "era": [e.era for e in self.entries],
                "orientation": [e.orientation for e in self.entries],
                "tokens": [e.tokens for e in self.entries],
                "path": [e.path for e in self.entries],
            },
            schema={
                "id": pl.String, "title": pl.String, "author": pl.String, "tradition": pl.String,
                "corpus_relevance": pl.String, "contemplative_depth": pl.Int64, "confidence": pl.String,
                "era": pl.String, "orientation": pl.String, "tokens": pl.Int64, "path": pl.String,
            },
        )

    def summary(self) -> pl.DataFrame:
        """Books and tokens per (tradition, corpus_relevance): traditions by tokens, most first; levels best first."""
        import polars as pl

        frame = self.frame()
        if not frame.height:
            return pl.DataFrame(schema={"tradition": pl.String, "corpus_relevance": pl.String,
                                        "books": pl.Int64, "tokens": pl.Int64})
        totals = frame.group_by("tradition").agg(pl.col("tokens").sum().alias("_total"))
        return (
            frame.group_by("tradition", "corpus_relevance")
            .agg(pl.len().cast(pl.Int64).alias("books"), pl.col("tokens").sum().alias("tokens"))
            .join(totals, on="tradition")
            .with_columns(pl.col("corpus_relevance").replace_strict(
                {level: rank for rank, level in enumerate(RELEVANCE_LEVELS)}, return_dtype=pl.Int64).alias("_rank"))
            .sort(["_total", "tradition", "_rank"], descending=[True, False, False])
            .drop("_total", "_rank")
        )


def select(entries: Iterable[CatalogEntry], catalog_filter: CatalogFilter | None = None) -> Selection:
    """The entries `catalog_filter` keeps (all of them without one), in catalog order."""
    catalog_filter = catalog_filter or CatalogFilter()
    entries = tuple(entries)
    return Selection(tuple(e for e in entries if catalog_filter.matches(e)), catalog_filter, len(entries))


# ---- reporting --------------------------------------------------------------------------------


def format_tokens(n: int) -> str:
    if n >= 1_000_000_000:
        return f"{n / 1e9:.2f}B"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 10_000:
        return f"{n / 1e3:.0f}k"
    return str(n)


def plot_selection(selection: Selection, path: str | os.PathLike[str], max_traditions: int = 20) -> Path:
    """A PNG: tokens per tradition stacked by relevance (left), books per contemplative depth by relevance (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = selection.summary()
    traditions = list(dict.fromkeys(summary["tradition"].to_list()))
    shown = traditions[:max_traditions]
    colours = {"core": "#1b5e20", "useful": "#66bb6a", "marginal": "#c5e1a5", "questionable": "#bdbdbd"}
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, max(4.0, 0.32 * len(shown) + 1.8)),
                                         gridspec_kw={"width_ratios": [2.2, 1]})
    positions = np.arange(len(shown))
    offset = np.zeros(len(shown))
    for level in RELEVANCE_LEVELS:
        values = np.array([
            summary.filter((summary["tradition"] == t) & (summary["corpus_relevance"] == level))["tokens"].sum()
            for t in shown
        ], dtype=float) / 1e6
        if values.any():
            left.barh(positions, values, left=offset, color=colours[level], label=level)
            offset += values
    left.set_yticks(positions, shown, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("tokens (millions)")
    hidden = len(traditions) - len(shown)
    left.set_title(f"Tokens by tradition" + (f" (top {len(shown)}; {hidden} more)" if hidden else ""))
    if len(selection):
        left.legend(title="relevance", fontsize=8)

    depth_offset = np.zeros(len(DEPTHS))
    for level in RELEVANCE_LEVELS:
        counts = np.array([sum(1 for e in selection.entries
                               if e.contemplative_depth == d and e.corpus_relevance == level) for d in DEPTHS])
        if counts.any():
            right.bar([str(d) for d in DEPTHS], counts, bottom=depth_offset, color=colours[level], label=level)
            depth_offset += counts
    right.set_xlabel("contemplative depth")
    right.set_ylabel("books")
    right.set_title("Books by depth")
    figure.suptitle(f"{len(selection)} books, {format_tokens(selection.n_tokens)} tokens: {selection.filter.describe()}",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# ---- finding and ingesting the books -------------------------------------------------------------


@dataclass(frozen=True)
class FoundBook:
    """A selected entry and the text file found for it; `how`: "path" (the catalog's path) or "id" (by file name)."""

    entry: CatalogEntry
    path: Path
    how: str


def _id_of_file_name(name: str) -> str | None:
    """`PG123.txt` and `PG123_Author_Title.txt` name the book PG123."""
    if not name.endswith(".txt"):
        return None
    stem = name[: -len(".txt")]
    return stem.split("_", 1)[0] or None


def find_books(
    selection: Selection | Iterable[CatalogEntry], books_dir: str | os.PathLike[str], follow_links: bool = False
) -> tuple[list[FoundBook], list[CatalogEntry], list[tuple[CatalogEntry, Path]]]:
    """Locate each selected book under `books_dir`: (found, missing, outside), in selection order.

    First the catalog's own `path` relative to `books_dir`; failing that, a file named
    `<id>.txt` or `<id>_<anything>.txt` anywhere below it (the directory is walked once,
    only if needed). Of several files for one id the one whose name ends like the
    catalog path wins, then the first in path order.

    A file that resolves outside `books_dir` (a symlink, a linked subdirectory, `..` in a
    catalog path) is not taken unless `follow_links`: a catalog line or a link must not
    pull an arbitrary file of the machine into a corpus. Such entries are in `outside`,
    with the file they led to, when nothing inside was found for them.
    """
    books_dir = Path(books_dir)
    if not books_dir.is_dir():
        raise CatalogError(f"{books_dir}: not a directory")
    root = books_dir.resolve()

    def inside(path: Path) -> bool:
        return follow_links or path.resolve().is_relative_to(root)

    entries = selection.entries if isinstance(selection, Selection) else tuple(selection)
    found: list[FoundBook] = []
    missing: list[CatalogEntry] = []
    outside: list[tuple[CatalogEntry, Path]] = []
    index: dict[str, list[Path]] | None = None
    for entry in entries:
        direct = books_dir / entry.path
        refused = None
        if direct.is_file():
            if inside(direct):
                found.append(FoundBook(entry, direct, "path"))
                continue
            refused = direct
        if index is None:
            index = _index_by_id(books_dir)
        candidates = [path for path in index.get(entry.id, []) if inside(path)]
        if not candidates:
            refused = refused or next(iter(index.get(entry.id, [])), None)
            if refused is not None:
                outside.append((entry, refused))
            else:
                missing.append(entry)
            continue
        wanted_name = posixpath.basename(entry.path)
        best = sorted(candidates, key=lambda p: (p.name != wanted_name, str(p)))[0]
        found.append(FoundBook(entry, best, "id"))
    return found, missing, outside


def _index_by_id(books_dir: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for directory, subdirectories, files in os.walk(books_dir):
        subdirectories.sort()
        for name in sorted(files):
            book_id = _id_of_file_name(name)
            if book_id is not None:
                index.setdefault(book_id, []).append(Path(directory) / name)
    return index


@dataclass(frozen=True)
class SelectionIngest:
    """What `ingest_selection` did: the ingest report, and the books rejected (with the reason), skipped."""

    report: IngestReport
    rejected: tuple[tuple[FoundBook, str], ...]


def ingest_selection(
    workspace: Workspace,
    found: Sequence[FoundBook],
    executor: Executor | None = None,
    prose_config: Any = None,
    default_licence: str = GUTENBERG_LICENCE,
    progress: Any = None,
) -> SelectionIngest:
    """Ingest the found books as prose sources, in one commit; title from the catalog, licence from it if given.

    A book the ingest rejects (empty, binary, not UTF-8) is left out and listed in
    `rejected`; the rest are committed together. `executor` parses the books
    (default: in this process; a RayExecutor parses them on a cluster).
    """
    from curation.sources import BookTask

    tasks = [
        BookTask(
            path=str(book.path),
            kind="prose",
            title=book.entry.title,
            licence=book.entry.licence or default_licence,
            prose_config=prose_config,
        )
        for book in found
    ]
    result = workspace.ingest_books(tasks, executor=executor, skip_rejected=True, progress=progress)
    by_path = {str(book.path): book for book in found}
    rejected = tuple((by_path[error.path], error.message) for error in result.rejected)
    return SelectionIngest(result.report, rejected)
