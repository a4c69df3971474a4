"""How an item's text is rebuilt from its spans of the source: the one rule every parser and reader shares.

A part's text is its spans, each whitespace-collapsed, joined by one space, with
one exception: a word hyphenated at a line end. Where the source between two
spans is a hyphen and a line break (`medi-⏎tation`, the hyphen left out of both
spans) the spans join with nothing: `meditation`. Where the first span ends with
its hyphen and the source between them is only a line break (`Self-⏎realisation`,
a hyphen the book really prints) they join with nothing too: `Self-realisation`.
Either way the text can be checked against the source: `join_spans(source, spans)`.
"""

from __future__ import annotations

import re

# A line break with the spaces around it (\r for CRLF sources).
_LINE_BREAK = re.compile(r"[ \t\r]*\n[ \t]*")


def is_hyphenation_gap(text: str, end: int, start: int) -> bool:
    """Is the source between a span ending at `end` and one starting at `start` a line-end hyphenation?"""
    gap = text[end:start]
    if not gap or start >= len(text) or not text[start].isalpha():
        return False
    if gap[0] == "-":  # the hyphen was dropped: medi-⏎tation
        return end > 0 and text[end - 1].isalpha() and _LINE_BREAK.fullmatch(gap, 1) is not None
    # the hyphen was kept in the first span: Self-⏎realisation
    return end > 1 and text[end - 1] == "-" and text[end - 2].isalpha() and _LINE_BREAK.fullmatch(gap) is not None


def join_spans(text: str, spans) -> str:
    """The text of a part: its spans of `text`, each whitespace-collapsed, joined as the module docstring says."""
    parts: list[str] = []
    previous_end = -1
    for start, end in spans:
        piece = " ".join(text[start:end].split())
        if parts and is_hyphenation_gap(text, previous_end, start):
            parts[-1] += piece
        else:
            parts.append(piece)
        previous_end = end
    return " ".join(parts)
