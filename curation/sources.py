"""Reading a source file into a book: validate, decode, hash and parse it, without committing.

`parse_book` is a pure function of the file (an executor may run it on any machine that can
read it); `Workspace.add_sources` commits what it returns, under the writer lock, after
checking with `store_source` that the file still holds the bytes that were parsed.
Every way a file can fail to be a source is an IngestError: one line naming the file (and
the line, where there is one).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from curation.errors import WorkspaceError
from curation.files import atomic_replace, atomic_write, sha256_file
from curation.schema import ITEM_SCHEMA

SourceKind = Literal["dialogue", "prose"]
SOURCE_KINDS: tuple[str, ...] = ("dialogue", "prose")

# Item dicts become frame rows this many at a time (see _items_frame).
ITEM_FRAME_BATCH = 2000
# A source file is copied into the workspace this many bytes at a time (see store_source).
COPY_BLOCK = 1 << 22
CHANGED_WHILE_INGESTED = "file changed while it was being ingested; nothing was committed"


class IngestError(WorkspaceError):
    """An input file was rejected; nothing from that ingest was committed.

    `str(error)` is one line: `path:line: message`, or `path: message` when the
    problem is the whole file.
    """

    def __init__(self, path: str | os.PathLike[str], message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.message = " ".join(message.split())  # one line, whatever the parser's message held
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {self.message}")


@dataclass(frozen=True)
class BookTask:
    """One file to ingest: its path (readable where the task runs), how to parse it, its title and licence."""

    path: str
    kind: SourceKind = "prose"
    title: str | None = None  # None: the file name without extension
    licence: str = ""
    dialogue_config: Any = None
    prose_config: Any = None


@dataclass
class ParsedBook:
    """A file as `parse_book` returns it: the source row and its items, or why it was rejected."""

    task: BookTask
    status: Literal["parsed", "already ingested", "rejected"]
    source_id: str = ""
    source: dict[str, Any] = field(default_factory=dict)  # a SOURCE_SCHEMA row, less where and when it is stored
    items: pl.DataFrame | None = None
    n_duplicate_item_ids: int = 0
    convention: str = ""
    parse_report: dict[str, Any] = field(default_factory=dict)
    error: tuple[str, str, int | None] | None = None  # (path, message, line) of the IngestError
    # A PDF's extracted text, which is what its source stores; None when the file's bytes are
    # the source (re-read at commit rather than carried back from wherever the parse ran).
    extracted: bytes | None = None


@dataclass(frozen=True)
class _ParsedSource:
    items: list[dict[str, Any]]
    convention: str
    report: dict[str, Any]
    config_json: str
    parser_version: str


def read_source_file(path: Path) -> bytes:
    """The file's bytes, or an IngestError saying why it cannot be a source."""
    if not path.exists():
        if path.is_symlink():
            try:
                path.resolve(strict=True)
            except RuntimeError:  # Python 3.11 says "Symlink loop"; 3.13 raises OSError(ELOOP)
                raise IngestError(path, "symbolic link loop (the link leads back to itself)") from None
            except OSError as error:
                if error.errno == errno.ELOOP:
                    raise IngestError(path, "symbolic link loop (the link leads back to itself)") from None
            raise IngestError(path, f"broken symbolic link (to {os.readlink(path)}, which does not exist)")
        raise IngestError(path, "no such file")
    if path.is_dir():
        raise IngestError(path, "is a directory, not a text file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise IngestError(path, f"cannot read: {error.strerror}") from None
    if not data:
        raise IngestError(path, "empty file")
    if data.isspace():  # no stripped copy: a book can be large
        raise IngestError(path, "file holds only whitespace")
    utf16 = utf16_name(data)
    if utf16:
        raise IngestError(path, f"{utf16} text, not UTF-8: convert it first, e.g. iconv -f {utf16} -t UTF-8 '{path}' > '{path.with_suffix('.utf8' + path.suffix)}'")
    nul = data.find(b"\0")
    if nul >= 0:
        raise IngestError(path, f"binary file (NUL byte at byte offset {nul})", line=_line_of(data, nul))
    return data


def utf16_name(data: bytes) -> str | None:
    """"UTF-16" (with a byte-order mark), "UTF-16LE" or "UTF-16BE" (ASCII-range text with a NUL every other byte), else None."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "UTF-16"
    sample = data[:4096]
    if len(sample) >= 8 and len(sample) % 2 == 0:
        even, odd = sample[0::2], sample[1::2]
        if odd.count(0) > 0.9 * len(odd) and even.count(0) < 0.1 * len(even):
            return "UTF-16LE"
        if even.count(0) > 0.9 * len(even) and odd.count(0) < 0.1 * len(odd):
            return "UTF-16BE"
    return None


def read_pdf_source(path: Path):
    """A PDF's extracted text (curation.pdf.PdfText), None for any other file, or an IngestError saying why not."""
    from curation.pdf import PdfError, extract_pdf, is_pdf

    if not path.is_file() or not is_pdf(path):
        return None
    try:
        return extract_pdf(path)
    except PdfError as error:
        raise IngestError(path, str(error).removeprefix(f"{path}: ")) from None


def decode_source(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise IngestError(
            path,
            f"not UTF-8 text (invalid byte 0x{data[error.start]:02x} at byte offset {error.start})",
            line=_line_of(data, error.start),
        ) from None


def parse_book(task: BookTask, known_source_ids: frozenset[str] = frozenset()) -> ParsedBook:
    """Read, validate, hash and parse one file; no commit (`Workspace.add_sources` does that).

    A pure function of the file, so an executor may run it anywhere the file is readable.
    A file whose source id is in `known_source_ids` is not parsed: "already ingested".
    """
    path = Path(task.path)
    try:
        extracted = read_pdf_source(path)  # a PDF's text is its source; None for a text file
        data = extracted.data if extracted else read_source_file(path)
        source_id = hashlib.sha256(data).hexdigest()
        if source_id in known_source_ids:
            return ParsedBook(task, "already ingested", source_id)
        text = decode_source(path, data)
        # A book is never held as bytes and text at once, nor as text and item dicts while its frame is
        # built (issue 14, bench/memory.py): the commit re-reads the file, and a PDF keeps its `extracted`.
        n_bytes, n_chars = len(data), len(text)
        del data
        title = task.title if task.title is not None else path.stem
        page_starts = extracted.page_starts if extracted else None
        parsed = _parse(task.kind, path, text, source_id, title, task.dialogue_config, task.prose_config, page_starts)
        del text
        if extracted:
            parsed.report["extraction"] = extracted.report()
    except IngestError as error:
        return ParsedBook(task, "rejected", error=(error.path, error.message, error.line))
    rows, n_duplicates = _first_of_each_item_id(parsed.items)
    parsed.items.clear()  # the kept rows live on in `rows`, until the frame below consumes them
    n_rows = len(rows)
    source = {
        "source_id": source_id,
        "title": title,
        "kind": task.kind,
        "original_path": str(path.resolve()),
        "n_bytes": n_bytes,
        "n_chars": n_chars,
        "n_items": n_rows,
        "licence": task.licence,
        "parser": task.kind,
        "parser_version": parsed.parser_version,
        "parser_config": parsed.config_json,
        "convention": parsed.convention,
        "parse_report": json.dumps(parsed.report, sort_keys=True),
    }
    return ParsedBook(task, "parsed", source_id, source, _items_frame(rows), n_duplicates, parsed.convention,
                      parsed.report, extracted=extracted.data if extracted else None)


def store_source(book: ParsedBook, target: Path) -> None:
    """Write what the book's source stores to `target`, atomically, or raise an IngestError if its file
    no longer holds the bytes that were parsed (the commit's re-check: `parse_book` may run anywhere).

    A text file is copied and hashed block by block, never held whole (issue 14: a big book's
    frame is in memory by then); a PDF stores its extracted text, checked against the PDF's hash.
    """
    path = Path(book.task.path)
    if book.extracted is not None:
        try:
            unchanged = sha256_file(path) == book.parse_report["extraction"]["pdf_sha256"]
        except OSError as error:
            raise IngestError(path, f"cannot read: {error.strerror}") from None
        if not unchanged:
            raise IngestError(path, CHANGED_WHILE_INGESTED)
        atomic_write(target, book.extracted)
        return

    def copy(temp: Path) -> None:
        digest = hashlib.sha256()
        try:
            source = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError:
            read_source_file(path)  # raises why it cannot be read: gone, a directory, a broken link
            raise
        with source, open(temp, "wb") as out:
            while True:
                try:
                    block = source.read(COPY_BLOCK)
                except OSError as error:
                    raise IngestError(path, f"cannot read: {error.strerror}") from None
                if not block:
                    break
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != book.source_id:
            raise IngestError(path, CHANGED_WHILE_INGESTED)

    atomic_replace(target, copy)


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _parse(
    kind: str,
    path: Path,
    text: str,
    source_id: str,
    title: str,
    dialogue_config: Any,
    prose_config: Any,
    page_starts: list[int] | None = None,
) -> _ParsedSource:
    # Parsers are imported here: only the one this ingest needs is loaded.
    if kind == "dialogue":
        from curation.dialogue import PARSER_VERSION, DialogueConfig, NoSpeakerMarkers, parse_dialogue

        config = dialogue_config if dialogue_config is not None else DialogueConfig()
        try:
            parsed = parse_dialogue(text, source_id, config, title=title, page_starts=page_starts)
        except NoSpeakerMarkers as error:
            raise IngestError(path, str(error) or "no speaker markers found") from None
        return _ParsedSource(parsed.items, parsed.convention, dict(parsed.report), config.to_json(), PARSER_VERSION)

    from curation.prose import PARSER_VERSION, ProseConfig, split_prose

    config = prose_config if prose_config is not None else ProseConfig()
    items = split_prose(text, source_id, config, title=title, page_starts=page_starts)
    return _ParsedSource(items, "", {}, config.to_json(), PARSER_VERSION)


def _first_of_each_item_id(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Rows with duplicate item_ids dropped (the first kept), and how many were dropped."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        if row["item_id"] not in seen:
            seen.add(row["item_id"])
            kept.append(row)
    return kept, len(rows) - len(kept)


def _items_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """The rows as an items frame, emptying `rows` batch by batch as they go in, so a big
    book's item dicts and its frame are not held whole at the same time."""
    expected = ITEM_SCHEMA.keys()
    for row in rows:
        if row.keys() != expected:
            missing, extra = sorted(expected - row.keys()), sorted(row.keys() - expected)
            raise ValueError(f"parser produced an item off the schema: missing {missing}, extra {extra}")
    frames = [pl.DataFrame(schema=ITEM_SCHEMA)]
    while rows:
        frames.append(pl.DataFrame(rows[:ITEM_FRAME_BATCH], schema=ITEM_SCHEMA))
        del rows[:ITEM_FRAME_BATCH]
    return pl.concat(frames, how="vertical")
