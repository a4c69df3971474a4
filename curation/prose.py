"""Split prose books into passages for continued pretraining.

The rules, in the order a reader would apply them:

1. Lines. Blank lines and separator lines (`-----`, `* * *`) end a paragraph.
   Standalone page-number lines (digits only) and the book's title repeated as
   a running page header are noise: they are left out of every span, and they
   do not end a paragraph, because PDF extraction drops them in the middle of
   sentences.
2. Headings. A standalone ALL-CAPS line (`INTRODUCTION`), a dashed banner
   (`---- Preface ----`) or a bare numbered heading (`Talk 12.`) starts a new
   section and is not part of any passage. A line that opens with a numbered
   label (`Verse 3: ...`) starts a new section too, and the label stays in the
   text, since there it is part of the line as the book prints it.
3. Paragraphs. PDF extractions put one paragraph on a line but also break lines
   mid-sentence, so a line that ends a sentence ends its paragraph, and a line
   that stops mid-sentence is joined with the next one.
4. Groups. A paragraph is passed over alone, except that paragraphs shorter
   than `min_tokens` are grouped with the ones after them (a lead-in line, a
   short verse) until the group is long enough; a short group left at the end
   of a section joins the group before it.
5. Passages. Sentences (spaCy's rule-based sentencizer) are packed greedily
   into passages of up to `target_tokens`; a passage never crosses a group. A
   passage still under `min_tokens` ("Who am I?") takes the next sentence even
   past the target, and a short last passage of a group joins the one before
   it, as long as either stays within `max_tokens`. A sentence longer than
   `max_tokens` is cut at spaces (inside a word only if one word alone is too
   long).

Tokens are counted with a cheap regex, words and runs of punctuation
(`\\w+|[^\\w\\s]+`): closer to what a subword tokenizer sees than whitespace
words, and far cheaper than running one.

A passage's text is its spans, each whitespace-collapsed, joined by one space,
so `text[start:end]` of each span gives back exactly the passage's words.
"""

from __future__ import annotations

import itertools
import json
import re
from array import array
from bisect import bisect_right
from dataclasses import asdict, dataclass, field
from collections.abc import Iterable, Iterator
from functools import lru_cache

from curation import schema
from curation.layout import lf_view

PARSER = "prose"
PARSER_VERSION = "prose-1"


@dataclass(frozen=True)
class ProseConfig:
    target_tokens: int = 200  # target passage length in tokens; sentences are packed up to it
    max_tokens: int = 400  # hard cap; a longer single sentence is cut at word boundaries
    min_tokens: int = 20  # shorter paragraphs are grouped, and a shorter last passage merges back

    def __post_init__(self):
        if not 0 < self.min_tokens <= self.target_tokens <= self.max_tokens:
            raise ValueError(f"need 0 < min_tokens <= target_tokens <= max_tokens, got {self}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


TOKEN = re.compile(r"\w+|[^\w\s]+")
WORD = re.compile(r"\S+")
LONG_SPACE = re.compile(r"\s{2,}")
OTHER_SPACE = re.compile(r"[^\S ]")  # whitespace other than the space
# Where a chunk of a very long paragraph may end: "... word. " before "Capital" (see _sentence_start_after).
SURE_SENTENCE_START = re.compile(r"(?<![^\s])([a-z]{2,})[.?!] (?=[A-Z][a-z])")
CHUNK_CHARS = 100_000  # spaCy gets paragraphs longer than this in pieces (a Doc costs ~50 bytes a character)
PAGE_NUMBER = re.compile(r"\d+")
DASHED_HEADING = re.compile(r"-{3,}\s*(\S.*?)\s*-{3,}")
# "-----", "* * *", "=====": a break between paragraphs, no section of its own
SEPARATOR = re.compile(r"(?:[-*_=~#]\s*){3,}")
# "Verse 3", "Maṅgalam verse 1", "Talk 12", "Chapter 4", ending the line or followed by "." or ":"
NUMBERED_LABEL = re.compile(r"((?:\w+\s+)?(?:verse|talk|chapter)\s+\d+)\s*(?:[.:]|$)", re.IGNORECASE)
LONG_WORD = re.compile(r"[^\W\d_]{3,}")
SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")
# A line ending in one of these stops after an abbreviation, not after a sentence.
ABBREVIATION_END = re.compile(r"(?:^|\s|\()(?:[A-Z]|Mr|Mrs|Ms|Dr|Sri|Smt|St|Prof|Maj|Col|Capt|Gen|Rev|No|Vol|pp?|cf|viz|i\.e|e\.g)\.$")


def count_tokens(text: str, start: int = 0, end: int | None = None) -> int:
    return sum(1 for _ in TOKEN.finditer(text, start, len(text) if end is None else end))


def import_spacy_without_torch():
    """spaCy, imported on first use (so importing this module stays instant), without loading torch.

    spaCy's thinc imports torch when it is installed (250 MB resident, seconds of import), and
    the tokenizer and rule-based sentencizer never use it: hide torch while spaCy is imported,
    unless something in this process loaded it already.
    """
    import sys

    if "spacy" in sys.modules or "torch" in sys.modules:
        import spacy

        return spacy
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError, which thinc expects
    try:
        import spacy
    finally:
        del sys.modules["torch"]
    return spacy


@lru_cache(maxsize=1)
def sentence_splitter():
    spacy = import_spacy_without_torch()

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.max_length = 50_000_000  # only the tokenizer and sentencizer run: memory stays linear
    return nlp


@dataclass
class Paragraph:
    """A paragraph as whitespace-collapsed text, with the map back to source offsets.

    The map is kept as anchors, not per word: collapsing turns each whitespace run into one
    space, so text and source advance together except after a run of two or more characters
    and across segments. An anchor (text offset, source offset, segment) marks each place the
    two move apart; between anchors an offset maps one to one. A book on one line costs a few
    anchors, not a list entry per word.
    """

    section: str
    segments: list[tuple[int, int]] = field(default_factory=list)  # kept source ranges, in order
    text: str = ""
    n_tokens: int = 0
    anchor_text: array = field(default_factory=lambda: array("q"))  # offset in `text`
    anchor_source: array = field(default_factory=lambda: array("q"))  # the same place in the source
    anchor_segment: array = field(default_factory=lambda: array("q"))  # index of its segment
    # Its sentences, in order, as (start, end, tokens) in `text`: three arrays rather than an object
    # a sentence, since a book on one line has hundreds of thousands of them.
    piece_starts: array = field(default_factory=lambda: array("q"))
    piece_ends: array = field(default_factory=lambda: array("q"))
    piece_tokens: array = field(default_factory=lambda: array("q"))

    def add_piece(self, start: int, end: int, n_tokens: int) -> None:
        self.piece_starts.append(start)
        self.piece_ends.append(end)
        self.piece_tokens.append(n_tokens)

    def pieces(self) -> Iterator[_Piece]:
        for start, end, n_tokens in zip(self.piece_starts, self.piece_ends, self.piece_tokens):
            yield _Piece(self, start, end, n_tokens)

    def finish(self, source: str) -> None:
        parts, offset = [], 0
        for index, (start, end) in enumerate(self.segments):  # a segment starts and ends on a word
            self._anchor(offset, start, index)
            removed = 0
            for run in LONG_SPACE.finditer(source, start, end):
                removed += len(run.group()) - 1
                self._anchor(run.end() - start - removed + offset, run.end(), index)
            parts.append(collapse_spaces(source[start:end]))
            offset += end - start - removed + 1
        self.text = " ".join(parts)
        del parts
        self.n_tokens = count_tokens(self.text)

    def _anchor(self, text_offset: int, source_offset: int, segment: int) -> None:
        self.anchor_text.append(text_offset)
        self.anchor_source.append(source_offset)
        self.anchor_segment.append(segment)

    def _source_of(self, at: int) -> tuple[int, int]:
        """(source offset, segment) of the character at `at` in the text (never a joining space)."""
        anchor = bisect_right(self.anchor_text, at) - 1
        return self.anchor_source[anchor] + at - self.anchor_text[anchor], self.anchor_segment[anchor]

    def source_spans(self, start: int, end: int) -> list[list[int]]:
        """Source spans of `self.text[start:end]` (start and end never on a space)."""
        first_source, first = self._source_of(start)
        last_source, last = self._source_of(end - 1)
        spans = []
        for index in range(first, last + 1):
            span_start, span_end = self.segments[index]
            if index == first:
                span_start = first_source
            if index == last:
                span_end = last_source + 1
            spans.append([span_start, span_end])
        return spans


def collapse_spaces(text: str) -> str:
    """Each whitespace run as one space; a replacement per run that is not already one space, not per word."""
    if OTHER_SPACE.search(text):
        text = OTHER_SPACE.sub(" ", text)
    return LONG_SPACE.sub(" ", text) if LONG_SPACE.search(text) else text


def _heading(line: str) -> str | None:
    """The section name if the whole line is a heading, else None."""
    if dashed := DASHED_HEADING.fullmatch(line):
        return dashed.group(1)
    # ALL-CAPS: needs a word of three letters or more, so that initials ("B. G.") stay text
    if sum(1 for _ in itertools.islice(WORD.finditer(line), 11)) > 10:  # counted lazily: a line can be a whole book
        return None
    letters = [c for c in line if c.isalpha()]
    if letters and all(c.isupper() for c in letters) and LONG_WORD.search(line):
        return line.strip(" *:")
    if (label := NUMBERED_LABEL.match(line)) and label.end() == len(line):
        return " ".join(label.group(1).split())
    return None


def _ends_sentence(text: str) -> bool:
    return bool(SENTENCE_END.search(text)) and not ABBREVIATION_END.search(text)


def _lines(source: str):
    """(start, end) of each line, without its newline."""
    start = 0
    while start <= len(source):
        end = source.find("\n", start)
        if end < 0:
            end = len(source)
        yield start, end
        start = end + 1


def _running_headers(source: str, title: str) -> list[tuple[int, int]]:
    if not title.strip():
        return []
    header = r"\s+".join(map(re.escape, title.split()))
    return [m.span() for m in re.finditer(rf"(?<!\w){header}(?!\w)", source)]


def _kept_segments(source: str, start: int, end: int, noise: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The line's ranges outside running headers, without surrounding spaces."""
    first_noise = bisect_right(noise, start, key=lambda span: span[1])  # the first header ending after start
    pieces, cursor = [], start
    for noise_start, noise_end in itertools.islice(noise, first_noise, None):
        if noise_start >= end:
            break
        pieces.append((cursor, max(cursor, noise_start)))
        cursor = max(cursor, noise_end)
    pieces.append((cursor, end))
    segments = []
    for piece_start, piece_end in pieces:
        first = WORD.search(source, piece_start, piece_end)
        if first:
            last_end = piece_end
            while source[last_end - 1].isspace():  # as \S+ sees it: the same test of whitespace
                last_end -= 1
            segments.append((first.start(), last_end))
    return segments


def _paragraphs(source: str, title: str) -> list[Paragraph]:
    noise = _running_headers(source, title)
    paragraphs: list[Paragraph] = []
    current = Paragraph(section="")

    def start_new(section: str) -> Paragraph:
        if current.segments:
            paragraphs.append(current)
        return Paragraph(section)

    for line_start, line_end in _lines(source):
        content = source[line_start:line_end].strip()
        if not content or SEPARATOR.fullmatch(content):
            current = start_new(current.section)
        elif PAGE_NUMBER.fullmatch(content):
            continue
        elif (heading := _heading(content)) is not None:
            current = start_new(heading)
        else:
            if label := NUMBERED_LABEL.match(content):
                current = start_new(" ".join(label.group(1).split()))
            segments = _kept_segments(source, line_start, line_end, noise)
            current.segments.extend(segments)
            # Its last 64 characters decide (no sentence-end or abbreviation pattern is longer); a line can be a whole book.
            if segments and _ends_sentence(source[max(segments[-1][0], segments[-1][1] - 64) : segments[-1][1]]):
                current = start_new(current.section)
    start_new(current.section)
    for paragraph in paragraphs:
        paragraph.finish(source)
    return paragraphs


def _groups(paragraphs: list[Paragraph], min_tokens: int) -> list[list[Paragraph]]:
    """Paragraphs as passed over together: short ones join the ones after them, within a section."""
    groups: list[list[Paragraph]] = []
    current: list[Paragraph] = []
    size = 0
    for index, paragraph in enumerate(paragraphs):
        current.append(paragraph)
        size += paragraph.n_tokens
        next_section = paragraphs[index + 1].section if index + 1 < len(paragraphs) else None
        if size >= min_tokens or next_section != paragraph.section:
            short_tail = size < min_tokens and groups and groups[-1][-1].section == paragraph.section
            if short_tail:
                groups[-1].extend(current)
            else:
                groups.append(current)
            current, size = [], 0
    return groups


@dataclass(slots=True)
class _Piece:
    """A sentence, or part of an over-long one: a range of one paragraph's text."""

    paragraph: Paragraph
    start: int
    end: int
    n_tokens: int


def _cut_long_sentence(paragraph: Paragraph, start: int, end: int, max_tokens: int) -> list[_Piece]:
    text = paragraph.text
    units = []  # (start, end, tokens): words, or token runs of a word too long by itself
    for word in WORD.finditer(text, start, end):
        tokens = list(TOKEN.finditer(text, word.start(), word.end()))
        for first in range(0, len(tokens), max_tokens):
            run = tokens[first : first + max_tokens]
            run_start = word.start() if first == 0 else run[0].start()
            run_end = word.end() if first + max_tokens >= len(tokens) else run[-1].end()
            units.append((run_start, run_end, len(run)))
    pieces: list[_Piece] = []
    for unit_start, unit_end, n in units:
        if pieces and pieces[-1].n_tokens + n <= max_tokens:
            pieces[-1].end = unit_end
            pieces[-1].n_tokens += n
        else:
            pieces.append(_Piece(paragraph, unit_start, unit_end, n))
    return pieces


def _chunks(paragraphs: list[Paragraph], chunk_chars: int):
    """(paragraph, offset, text) to sentencize: a paragraph whole, or one longer than `chunk_chars`
    in pieces cut where a sentence surely starts, so spaCy never holds a whole book as one Doc."""
    for paragraph in paragraphs:
        text, offset = paragraph.text, 0
        while len(text) - offset > chunk_chars:
            cut = _sentence_start_after(text, offset + chunk_chars)
            if cut is None:
                break
            yield paragraph, offset, text[offset:cut]
            offset = cut
        yield paragraph, offset, text[offset:]


def _sentence_start_after(text: str, at: int) -> int | None:
    """The first place after `at` where the sentencizer surely starts a sentence: after a lower-case
    word, a full stop (or ? !) and a space, before a capital, the word not one of the tokenizer's
    special cases ("etc.", "p.m."), where the stop is part of the word and ends nothing."""
    special = sentence_splitter().tokenizer.rules
    for boundary in SURE_SENTENCE_START.finditer(text, at):
        if f"{boundary.group(1)}." not in special and f"{boundary.group(1).capitalize()}." not in special:
            return boundary.end()
    return None


def _split_sentences(paragraphs: list[Paragraph], max_tokens: int, chunk_chars: int = CHUNK_CHARS) -> None:
    """Fill each paragraph's pieces: its sentences, over-long ones cut to fit."""
    chunks = ((text, (paragraph, offset)) for paragraph, offset, text in _chunks(paragraphs, chunk_chars))
    for doc, (paragraph, offset) in sentence_splitter().pipe(chunks, batch_size=256, as_tuples=True):
        for sentence in doc.sents:
            start, end = offset + sentence.start_char, offset + sentence.end_char
            n = count_tokens(paragraph.text, start, end)
            if n <= max_tokens:
                paragraph.add_piece(start, end, n)
            else:
                for piece in _cut_long_sentence(paragraph, start, end, max_tokens):
                    paragraph.add_piece(piece.start, piece.end, piece.n_tokens)


def _pack(pieces: Iterable[_Piece], config: ProseConfig) -> Iterator[list[_Piece]]:
    """Greedy packing up to the target; a passage still under min_tokens may go past it up to max.

    A generator holding two passages at a time: the last one may still join the one before it.
    """
    previous: list[_Piece] | None = None
    current: list[_Piece] | None = None
    size = 0
    for piece in pieces:
        limit = config.target_tokens if size >= config.min_tokens else config.max_tokens
        if current is not None and size + piece.n_tokens <= limit:
            current.append(piece)
            size += piece.n_tokens
        else:
            if previous is not None:
                yield previous
            previous, current, size = current, [piece], piece.n_tokens
    if previous is not None and current is not None and size < config.min_tokens:
        if sum(p.n_tokens for p in previous) + size <= config.max_tokens:
            previous.extend(current)
            current = None
    for passage in (previous, current):
        if passage is not None:
            yield passage


def _text_and_spans(pieces: list[_Piece]) -> tuple[str, list[list[int]]]:
    """Consecutive pieces of one paragraph are one stretch of its text; paragraphs join with a space."""
    parts, spans = [], []
    run_start = 0
    for index, piece in enumerate(pieces):
        if index == 0 or pieces[index - 1].paragraph is not piece.paragraph:
            run_start = piece.start
        if index + 1 == len(pieces) or pieces[index + 1].paragraph is not piece.paragraph:
            parts.append(piece.paragraph.text[run_start : piece.end])
            spans.extend(piece.paragraph.source_spans(run_start, piece.end))
    return " ".join(parts), spans


def split_prose(
    text: str,
    source_id: str,
    config: ProseConfig = ProseConfig(),
    title: str = "",
    page_starts: list[int] | None = None,
) -> list[dict]:
    """Passages of a prose book, as item rows with every key of `schema.ITEM_SCHEMA`.

    `title` is the book's title: where PDF extraction repeated it as a running
    page header, it is cut out of the passages. `page_starts`: for text extracted
    from a PDF, where each page begins; each passage records the page it starts on.
    """
    # CRLF and CR line ends read as LF (a same-length view: offsets stay true for `text`).
    paragraphs = _paragraphs(lf_view(text), title)
    _split_sentences(paragraphs, config.max_tokens)
    items = []
    passages_in_section: dict[str, int] = {}
    for group in _groups(paragraphs, config.min_tokens):
        section = group[0].section
        for passage in _pack((piece for p in group for piece in p.pieces()), config):
            passage_text, spans = _text_and_spans(passage)
            turn_index = passages_in_section.get(section, 0)
            passages_in_section[section] = turn_index + 1
            items.append(
                {
                    "item_id": schema.item_id("passage", text=passage_text),
                    "content_hash": schema.content_hash("passage", text=passage_text),
                    "source_id": source_id,
                    "kind": "passage",
                    "text": passage_text,
                    "question": "",
                    "answer": "",
                    "context": "",
                    "is_silence": False,
                    "section": section,
                    "section_date": "",
                    "conversation_id": f"{source_id[:12]}:{section}",
                    "turn_index": turn_index,
                    "question_speaker": "",
                    "answer_speaker": "",
                    "refs": [],
                    "start": spans[0][0],
                    "end": spans[-1][1],
                    "context_spans": [],
                    "question_spans": [],
                    "answer_spans": [],
                    "text_spans": spans,
                    "n_words": len(passage_text.split()),
                    "parser": PARSER,
                    "parser_version": PARSER_VERSION,
                    "page": bisect_right(page_starts, spans[0][0]) if page_starts else None,
                    "parse_warning": "",
                }
            )
    return items
