"""Who speaks in a dialogue book: the speaker labels a book uses, found by counting.

- `frequent_speaker_labels`: labels that begin three or more lines before a colon
  ("SOCRATES:", "Questioner:"): the book's own speakers, whatever its convention.
- `play_script_names`: names in capitals that begin three or more lines as `NAME.`
  or alone on a line: the cast of a play script.
- `detect_convention`: which marker convention a book uses, by counting its markers.

A name counts only when it recurs: a word that begins a line once is a word.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from typing import Any

from curation import layout as book_layout

# Play scripts: a name in capitals at a line start, then ". " and speech, or alone on its line.
_PLAY_DOT = re.compile(r"(?m)^[ \t]*(?P<name>[A-Z][A-Z'’-]+(?:[ \t]+[A-Z][A-Z'’-]+){0,2})\.[ \t]+(?=[^\s.])")
_PLAY_LINE = re.compile(r"(?m)^[ \t]*(?P<name>[A-Z][A-Z'’-]+(?:[ \t]+[A-Z][A-Z'’-]+){0,2})[ \t]*[.:]?[ \t]*\n(?=[^\n]*[a-z])")
_ROMAN = re.compile(r"[IVXLC]+")


def play_script_names(text: str, config: Any) -> dict[str, str]:
    """Names in capitals that start lines three times or more as `NAME.` or alone on a line: a play's speakers.

    Two such names are a cast; one will do when it is a label the config knows
    (`DISCIPLE`). Roman numerals and words that are no speakers ("NOTE") are left out.
    Maps each name to its role: "a" when it names the one who answers, else "q".
    """
    counts = Counter(m["name"] for pattern in (_PLAY_DOT, _PLAY_LINE) for m in pattern.finditer(text))
    headers = set(book_layout.repeated_header_lines(text)) if counts else set()
    known = {n.lower() for n in config.answerer_names + config.answer_labels + config.question_labels}
    names = [
        name for name, n in counts.items()
        if n >= 3 and not _ROMAN.fullmatch(name) and name.lower() not in NOT_SPEAKERS
        and name not in headers
    ]
    if len(names) < 2 and not any(name.lower() in known for name in names):
        return {}
    answerers = {n.lower() for n in config.answerer_names + config.answer_labels}
    return {name: "a" if name.lower() in answerers else "q" for name in names}


# Words that stand before a colon at a line start without naming a speaker.
NOT_SPEAKERS = {
    "note", "notes", "example", "examples", "illustration", "footnote", "translation", "summary", "verse",
    "chapter", "talk", "contents", "introduction", "preface", "foreword", "n.b", "ps", "source", "see", "cf",
    "part", "book", "section", "appendix", "glossary", "index", "act", "scene", "the end", "om",
}
_LINE_LABEL = re.compile(r"(?m)^[ \t]*([A-Z][\w.'’-]*(?:[ \t]+[A-Z][\w.'’-]*){0,2})[ \t]*:(?=[ \t]*\S|[ \t]*\n)")


def frequent_speaker_labels(text: str, min_count: int = 3) -> Counter:
    """Labels that begin three or more lines before a colon ("SOCRATES:", "Questioner:"): a book's speakers."""
    counts = Counter(m.group(1) for m in _LINE_LABEL.finditer(text))
    return Counter({
        label: n for label, n in counts.items()
        if n >= min_count and label.rstrip(".").lower() not in NOT_SPEAKERS and not re.search(r"\d", label)
    })


def with_detected_labels(config: Any, labels: Counter) -> Any:
    """Auto mode: the book's own speaker labels join the config (as askers, unless they name the answerer)."""
    known = {name.lower() for name in config.answerer_names + config.answer_labels + config.question_labels}
    answerers = {name.lower() for name in config.answerer_names + config.answer_labels}
    new = [label for label in labels if label.rstrip(".").lower() not in known and label.lower() not in known]
    askers = tuple(label.rstrip(".") for label in new if label.rstrip(".").lower() not in answerers)
    return replace(config, question_labels=config.question_labels + askers) if askers else config


def detect_convention(text: str, config: Any) -> str:
    """Which label convention a book uses, by counting its markers."""
    play = play_script_names(text, config)
    counts = {
        "dm": len(re.findall(r"(?<![\w.])[DM]\s?\.\s?:", text)),
        "qa": len(re.findall(r"(?<![\w.])[QA]\s?\.?\s?:", text)),
        "qa_dot": len(re.findall(r"(?m)(?:^|(?<=[.?!] ))[ \t]*[QA]\.[ \t]+(?=[A-Z\"“'‘])", text)),
        "play": sum(1 for pattern in (_PLAY_DOT, _PLAY_LINE) for m in pattern.finditer(text) if m["name"] in play),
    }
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        return "named"
    # Q./A. without colons must clearly outnumber colon labels to be trusted: "A." is also an initial.
    if best == "qa_dot" and counts["qa_dot"] < 2 * max(counts["dm"], counts["qa"], 1):
        best = max(("dm", "qa"), key=counts.get) if max(counts["dm"], counts["qa"]) else "named"
    return best
