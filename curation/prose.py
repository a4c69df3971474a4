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
from bisect import bisect_right
from dataclasses import asdict, dataclass, field
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


@lru_cache(maxsize=1)
def sentence_splitter():
    import spacy  # heavy: imported on first use, so importing this module stays instant

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.max_length = 50_000_000  # only the tokenizer and sentencizer run: memory stays linear
    return nlp


@dataclass
class Paragraph:
    """A paragraph as whitespace-collapsed text, with the map back to source offsets."""

    section: str
    segments: list[tuple[int, int]] = field(default_factory=list)  # kept source ranges, in order
    text: str = ""
    n_tokens: int = 0
    word_starts: list[int] = field(default_factory=list)  # offset of each word in `text`
    word_sources: list[int] = field(default_factory=list)  # offset of each word in the source
    word_segments: list[int] = field(default_factory=list)  # index of each word's segment
    pieces: list[_Piece] = field(default_factory=list)  # its sentences, in order

    def finish(self, source: str) -> None:
        words, offset = [], 0
        for index, (start, end) in enumerate(self.segments):
            for word in WORD.finditer(source, start, end):
                words.append(word.group())
                self.word_starts.append(offset)
                self.word_sources.append(word.start())
                self.word_segments.append(index)
                offset += len(word.group()) + 1
        self.text = " ".join(words)
        self.n_tokens = count_tokens(self.text)

    def source_spans(self, start: int, end: int) -> list[list[int]]:
        """Source spans of `self.text[start:end]` (start and end never on a space)."""
        first = bisect_right(self.word_starts, start) - 1
        last = bisect_right(self.word_starts, end - 1) - 1
        spans = []
        for index in range(self.word_segments[first], self.word_segments[last] + 1):
            span_start, span_end = self.segments[index]
            if index == self.word_segments[first]:
                span_start = self.word_sources[first] + start - self.word_starts[first]
            if index == self.word_segments[last]:
                span_end = self.word_sources[last] + end - self.word_starts[last]
            spans.append([span_start, span_end])
        return spans


def _heading(line: str) -> str | None:
    """The section name if the whole line is a heading, else None."""
    if dashed := DASHED_HEADING.fullmatch(line):
        return dashed.group(1)
    # ALL-CAPS: needs a word of three letters or more, so that initials ("B. G.") stay text
    letters = [c for c in line if c.isalpha()]
    if letters and all(c.isupper() for c in letters) and LONG_WORD.search(line) and len(line.split()) <= 10:
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
        words = list(WORD.finditer(source, piece_start, piece_end))
        if words:
            segments.append((words[0].start(), words[-1].end()))
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
            if segments and _ends_sentence(source[segments[-1][0] : segments[-1][1]]):
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


@dataclass
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


def _split_sentences(paragraphs: list[Paragraph], max_tokens: int) -> None:
    """Fill each paragraph's pieces: its sentences, over-long ones cut to fit."""
    docs = sentence_splitter().pipe((p.text for p in paragraphs), batch_size=256)
    for paragraph, doc in zip(paragraphs, docs):
        for sentence in doc.sents:
            start, end = sentence.start_char, sentence.end_char
            n = count_tokens(paragraph.text, start, end)
            if n <= max_tokens:
                paragraph.pieces.append(_Piece(paragraph, start, end, n))
            else:
                paragraph.pieces.extend(_cut_long_sentence(paragraph, start, end, max_tokens))


def _pack(pieces: list[_Piece], config: ProseConfig) -> list[list[_Piece]]:
    """Greedy packing up to the target; a passage still under min_tokens may go past it up to max."""
    passages: list[list[_Piece]] = []
    size = 0
    for piece in pieces:
        limit = config.target_tokens if size >= config.min_tokens else config.max_tokens
        if passages and size + piece.n_tokens <= limit:
            passages[-1].append(piece)
            size += piece.n_tokens
        else:
            passages.append([piece])
            size = piece.n_tokens
    if len(passages) >= 2 and size < config.min_tokens:
        if sum(p.n_tokens for p in passages[-2]) + size <= config.max_tokens:
            passages[-2].extend(passages.pop())
    return passages


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
        for passage in _pack([piece for p in group for piece in p.pieces], config):
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
