"""A book's layout: what in its text is print furniture, and where its units begin.

Parsers ask this module two things about a text:

- **noise**: spans that are never part of any turn or passage: page numbers,
  running headers, footnote anchors and footnote text, headings, scene breaks,
  stage notes, and the line break of a hyphenated word (so `medi-⏎tation` reads
  `meditation`, see curation/spans.py);
- **boundaries**: offsets where a new unit of the book begins (a heading, a scene
  break, a numbered paragraph of a book that numbers its paragraphs). Whatever
  was being said before a boundary has ended there.

Every rule is a rule about how books are printed, never about one book. Each is
stated where it is applied. Patterns are matched against a text whose line ends
are `\\n` (CRLF sources are given as a same-length view, see `lf_view`).
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from dataclasses import dataclass, field

MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"

# Page furniture that stands on a line of its own.
_PAGE_NUMBER_LINE = re.compile(r"(?m)^[ \t]*(?:\d{1,4}|[ivxlc]{1,7}|[-–—][ \t]*\d{1,4}[ \t]*[-–—])[ \t]*$")
# A page number in brackets, anywhere: "[7]", "[p. 7]" (a reference, never speech).
_BRACKETED_PAGE = re.compile(r"\[[ \t]*(?:p(?:age|\.)?[ \t]*)?\d{1,4}[ \t]*\]")
# "(continued from the previous page)", "(contd.)", "(continued on next page)": a header or footer note.
_CONTINUED = re.compile(r"\((?:continued|contd\.?|cont['’]d)\b[^()\n]{0,50}\)", re.IGNORECASE)
# A bare page number left between two sentences ("... a Jnani? 39 A: One ...", "... end. 12 The ...").
# Counting words never stand there: a sentence does not begin with a bare figure, and the word
# before the period must not be an abbreviation that takes a number ("Vol. 2", "No. 4").
_BARE_PAGE = re.compile(r"(?<=[.?!\"”’)\]])[ \t]+(?P<n>\d{1,4})(?=[ \t]+[A-Z(\[“\"‘])")
_TAKES_A_NUMBER = re.compile(r"(?i)\b(?:vol|no|nos|p|pp|ch|chap|sec|art|fig|v|vv|st|verse|page|part|book|sl|sloka)\.$")
# Footnote anchors: symbols after a word, digits glued after a sentence's punctuation ("mind.1 "),
# superscripts, and the anchors of converted e-books ("foot_2", "[^2]", "fn2").
_FOOTNOTE_ANCHOR = re.compile(
    r"(?<=[A-Za-z.,;:!?'\"”’)])[*†‡¹²³⁴⁵⁶⁷⁸⁹⁰]+|(?<=[a-z][.,;:!?\"”’)])\d{1,2}(?=\s)"
    r"|\bfoot_\d{1,3}\b|\[\^\d{1,3}\]|\bfn\d{1,3}\b"
)
# Footnote text: a footnote mark then a capitalised sentence, where the mark stands free (after a
# space or at a line start), since an anchor is glued to its word and footnote text is not.
# The note runs to its line's end when that is near (a PDF's footnote lines), else to its first sentence's end.
_FOOTNOTE_TEXT_SYMBOL = re.compile(
    r"(?:(?<=\s)|^)[*†‡]+[ \t]+[A-Z](?:[^\n*†‡]{0,300}$|[^\n*†‡]{0,300}?[.?!][\"”’)]*(?=\s|$))", re.MULTILINE
)
# The rule printed above a page's footnotes ("__________"), when extraction runs it into the text.
_FOOTNOTE_RULE = re.compile(r"_{5,}")
# Numbered footnote text: at a line start, the number of an anchor seen shortly before.
_FOOTNOTE_TEXT_NUMBER = re.compile(r"(?m)^[ \t]*(?P<n>\d{1,2}|[¹²³⁴⁵⁶⁷⁸⁹⁰]+)[.)]?[ \t]+(?=[A-Z])[^\n]{3,400}$")
_SUPERSCRIPTS = str.maketrans("¹²³⁴⁵⁶⁷⁸⁹⁰", "1234567890")
# A heading: a line of capitals (no lowercase letter, at least two capitals in a row).
_CAPS_LINE = re.compile(r"(?m)^[ \t]*(?![A-Z]\.?\s?:)(?=[^a-z\n]*[A-Z]{2}[^a-z\n]*[A-Z])[^a-z\n]{4,80}$")
# A numbered heading: "3. The Nature of Mind", "IV THE SELF" on a line of its own, no sentence end.
_NUMBERED_HEADING = re.compile(
    r"(?m)^[ \t]*(?:\d{1,3}|[IVXLC]{1,6})[.)]?[ \t]+(?P<words>[A-Z][\w'’,-]*(?:[ \t]+[\w'’,-]+){0,8})[ \t]*$"
)
_SMALL_WORDS = {"a", "an", "the", "of", "and", "or", "in", "on", "to", "for", "with", "is", "as", "at", "by", "from"}
# A scene break: a line of asterisks, dashes, tildes or a lone ornament.
_SCENE_BREAK = re.compile(r"(?m)^[ \t]*(?:(?:[*•·][ \t]*){3,}|[-–—_~=#]{3,}|[*•·~#§❖◆]|\*[ \t]*\*)[ \t]*$")
# A stage note: a whole line in parentheses or brackets holding a sentence of two words or more
# ("(Maharaj laughs.)", "[Long silence.]"). A gloss on a line of its own ("(Jnani)") is a word, no sentence.
_STAGE_NOTE_LINE = re.compile(r"(?m)^[ \t]*[(\[][A-Z][^()\[\]\n]{0,200}?[ \t][^()\[\]\n]{0,200}?[.!?][)\]][ \t]*$")
# A stage direction inside a line: a parenthesised participle or stage verb, alone or after a name
# ("(laughing)", "(Maharaj smiles)", "(after a pause)"); a gloss ("(physical posture)") names a thing instead.
_STAGE_NOTE_INLINE = re.compile(
    r"\((?:[A-Z][\w.]*[ \t]+){0,2}(?:laugh|smil|paus|sigh|nodd|chuckl|gestur|point|weep|after a (?:pause|while|silence))"
    r"[a-z]*(?:[ \t]+[a-z]+){0,4}[.!]?\)"
)
# Numbered units at a line start: "(11-4)", "(12)", "12.", "§ 12", "[12]".
_UNIT_NUMBER = re.compile(
    r"(?m)^[ \t]*(?:\((?P<a>\d{1,4})[ \t]*[-–][ \t]*(?P<b>\d{1,4})\)|\((?P<c>\d{1,4})\)|(?P<d>\d{1,4})\.(?=[ \t]+\S)"
    r"|§[ \t]*(?P<e>\d{1,4})|\[(?P<f>\d{1,4})\](?=[ \t]+\S))"
)
# A capitals phrase printed beside a page number ("17 BEYOND YOGA", "BEYOND YOGA 18"): a running
# header candidate wherever it stands, inline too, once it recurs.
_CAPS_PHRASE = r"[A-Z][A-Z'’&-]+(?:[ \t]+(?:[A-Z][A-Z'’&-]*|OF|THE|AND|[IVX]+))*"
_NUMBERED_CAPS = re.compile(rf"(?<![\w.])\d{{1,4}}[ \t]+(?P<p>{_CAPS_PHRASE})(?![\w.])|(?<![\w.])(?P<q>{_CAPS_PHRASE})[ \t]+\d{{1,4}}(?![\w.])")


@dataclass
class Layout:
    """Noise spans (start, end, why), sorted and possibly overlapping, and unit boundaries (offsets)."""

    noise: list[tuple[int, int, str]] = field(default_factory=list)
    boundaries: list[int] = field(default_factory=list)
    running_headers: list[str] = field(default_factory=list)


def lf_view(text: str) -> str:
    """The text with CRLF and lone CR line ends as LF, the same length, so offsets into it are offsets into `text`.

    A CRLF book must parse as its LF copy does: "\\r\\n" becomes " \\n" (the space is
    whitespace, collapsed in every turn) and a lone "\\r" becomes "\\n".
    """
    if "\r" not in text:
        return text
    return text.replace("\r\n", " \n").replace("\r", "\n")


def title_header_pattern(title: str) -> str | None:
    """The book's title as a running header, even from a file name ("talks-with-sri-ramana-maharshi-vol2")."""
    words = re.split(r"[\s_-]+", title.strip())
    while words and re.fullmatch(r"(?i)vol(?:ume)?\.?\d*|[IVX]+|\d+", words[-1]):
        words.pop()
    if len(words) < 2:
        return None
    return r"(?i:" + r"\s+".join(re.escape(w) for w in words) + r")(?:\s+(?:Vol(?:ume)?\.?\s*[IVX\d]+))?"


def repeated_header_lines(text: str) -> list[str]:
    """Short lines repeated three or more times, with no sentence punctuation: running headers.

    A book prints its title or chapter at every page top; no sentence of speech is a
    whole line three times over. Section headers and dates repeat by nature and are not headers.
    """
    lines = Counter(line.strip() for line in text.splitlines())
    return [
        line for line, n in lines.items()
        if n >= 3 and 2 <= len(line.split()) <= 12 and not re.search(r"[.?!:,;]$", line)
        and not re.match(r"^(?:Talk|Chapter)\b", line) and not re.search(MONTHS, line)
    ]


def inline_running_headers(text: str, min_count: int = 3) -> list[str]:
    """Capitals phrases printed beside a page number three or more times: running headers, wherever they land."""
    counts = Counter(m["p"] or m["q"] for m in _NUMBERED_CAPS.finditer(text))
    return [phrase for phrase, n in counts.items() if n >= min_count and len(phrase.replace(" ", "")) >= 4]


def _is_title_case(words: str) -> bool:
    tokens = [w for w in re.split(r"[ \t]+", words) if w]
    big = [w for w in tokens if w.lower() not in _SMALL_WORDS]
    return bool(big) and all(w[0].isupper() for w in big) and not re.search(r"[.?!:;]$", words)


def numbered_units(text: str) -> list[int]:
    """Line starts of the book's numbered units, if it numbers its paragraphs.

    A book that numbers its paragraphs counts up through the whole book; a list inside
    an answer starts again at 1 each time. So a numbering scheme counts as units when
    it occurs at least five times and goes up at least four times in five.
    """
    by_scheme: dict[str, list[tuple[int, tuple[int, ...]]]] = {}
    for m in _UNIT_NUMBER.finditer(text):
        if m["a"]:
            scheme, key = "pair", (int(m["a"]), int(m["b"]))
        else:
            name = next(g for g in "cdef" if m[g])
            scheme, key = name, (int(m[name]),)
        start = m.start() + len(m.group(0)) - len(m.group(0).lstrip())
        by_scheme.setdefault(scheme, []).append((start, key))
    units: list[int] = []
    for found in by_scheme.values():
        if len(found) < 5:
            continue
        rising = sum(b[1] > a[1] for a, b in zip(found, found[1:]))
        if rising >= 0.8 * (len(found) - 1) and max(k[-1] for _, k in found) > 5:
            units.extend(start for start, _ in found)
    return sorted(units)


def _hyphenation_cuts(text: str) -> list[tuple[int, int, str]]:
    """Line-end hyphens: drop the hyphen and the break (`medi-⏎tation`), or keep a hyphen the book prints.

    The book's own vocabulary decides: if the joined word occurs elsewhere in the book,
    the hyphen was the typesetter's; if the hyphenated form occurs mid-line, it is the
    book's; otherwise the typesetter's unless the first part is capitalised (`Self-⏎realisation`).
    """
    breaks = list(re.finditer(r"(?<=[A-Za-z])-[ \t]*\n[ \t]*(?=[A-Za-z])", text))
    if not breaks:
        return []
    words = Counter(w.lower() for w in re.findall(r"[A-Za-z]+(?:-[A-Za-z]+)*", text))
    cuts = []
    for m in breaks:
        left = re.search(r"[A-Za-z]+$", text[max(0, m.start() - 40):m.start()]).group(0)
        right = re.match(r"[A-Za-z]+", text[m.end():m.end() + 40]).group(0)
        joined, hyphenated = (left + right).lower(), f"{left}-{right}".lower()
        # A capital after the hyphen starts a word of its own ("Self-⏎Realisation"): the book's hyphen.
        keep = right[0].isupper() or (words[joined] == 0 and (words[hyphenated] > 0 or left[0].isupper()))
        cuts.append((m.start() + 1, m.end(), "hyphenation") if keep else (m.start(), m.end(), "hyphenation"))
    return cuts


def _footnote_texts(text: str) -> list[tuple[int, int, str]]:
    """Footnote text: a free-standing mark and its note; numbered notes only after an anchor of that number."""
    found = [(m.start(), m.end(), "footnote") for m in _FOOTNOTE_TEXT_SYMBOL.finditer(text)]
    anchors = [(m.start(), m.group(0).translate(_SUPERSCRIPTS)) for m in _FOOTNOTE_ANCHOR.finditer(text)]
    positions = [at for at, _ in anchors]
    for m in _FOOTNOTE_TEXT_NUMBER.finditer(text):
        number = m["n"].translate(_SUPERSCRIPTS)
        # The anchor is on the same page: within a few thousand characters before the note.
        nearby = anchors[bisect.bisect_left(positions, m.start() - 4000):bisect.bisect_left(positions, m.start())]
        if any(mark.endswith(number) for _, mark in nearby):
            found.append((m.start(), m.end(), "footnote"))
    return found


def find_layout(
    text: str,
    title: str = "",
    extra_headers: tuple[str, ...] = (),
    speaker_labels: frozenset[str] = frozenset(),
) -> Layout:
    """Noise and unit boundaries of `text` (LF line ends). `speaker_labels` (lower case) are never headings."""
    layout = Layout()
    noise = layout.noise

    def add(pattern: re.Pattern, why: str, boundary: bool = False, keep=lambda m: True) -> None:
        for m in pattern.finditer(text):
            if m.end() > m.start() and keep(m):
                noise.append((m.start(), m.end(), why))
                if boundary:
                    layout.boundaries.append(m.start())

    add(_PAGE_NUMBER_LINE, "page number")
    add(_BRACKETED_PAGE, "page number")
    add(_CONTINUED, "running header")
    for m in _BARE_PAGE.finditer(text):
        if not _TAKES_A_NUMBER.search(text[max(0, m.start() - 12):m.start()]):
            noise.append((m.start("n"), m.end("n"), "page number"))
    add(_FOOTNOTE_ANCHOR, "footnote")
    noise.extend(_footnote_texts(text))
    add(_FOOTNOTE_RULE, "footnote")
    noise.extend(_hyphenation_cuts(text))

    headers = list(extra_headers)
    title_pattern = title_header_pattern(title) if title else None
    if title_pattern:
        headers.append(title_pattern)
    repeated, inline = repeated_header_lines(text), inline_running_headers(text)
    layout.running_headers = repeated + inline
    headers += [rf"(?m)^[ \t]*{re.escape(line)}[ \t]*$" for line in repeated]
    # A recurring capitals header is dropped with the page number printed beside it.
    headers += [rf"(?<![\w.])(?:\d{{1,4}}[ \t]+)?{re.escape(p)}(?:[ \t]+\d{{1,4}})?(?![\w.])" for p in inline]
    for header in headers:
        add(re.compile(header), "running header")

    repeated_set = {line.strip() for line in repeated}

    def is_heading(m: re.Match) -> bool:
        line = m.group(0).strip()
        return line not in repeated_set and line.rstrip(".:").strip().lower() not in speaker_labels

    # Headings end what came before them: a chapter's title starts a new unit of the book.
    add(_CAPS_LINE, "heading", boundary=True, keep=is_heading)
    add(_NUMBERED_HEADING, "heading", boundary=True, keep=lambda m: is_heading(m) and _is_title_case(m["words"]))
    add(_SCENE_BREAK, "scene break", boundary=True)
    add(_STAGE_NOTE_LINE, "stage note")
    add(_STAGE_NOTE_INLINE, "stage note")
    layout.boundaries.extend(numbered_units(text))
    layout.boundaries = sorted(set(layout.boundaries))
    noise.sort()
    return layout
