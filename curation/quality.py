"""Parse quality: how many turns still carry structure that should have been taken out.

The checks are deliberately independent of the parser's own patterns, so a
parser bug is not hidden by the same bug in its judge. Each looks for what no
speaker says but books print: other speakers' labels, headers and headings,
dates, page numbers, footnote anchors and notes, and words still broken by a
line-end hyphen.

`flag_suspicious_items` uses the same judge, and the length of answers against
the book's own median, to tell a curator which items to look at first.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
CONTAMINANTS = {
    "speaker marker": re.compile(
        r"(?<![\w.])[DMQA]\s?\.?\s?:|\b(?:Sri Bhagavan|Bhagavan|Maharshi|The Master|Maharaj|Questioner|Disciple|Devotee|Visitor)\s*:"
        r"|\b(?:Mr|Mrs|Dr|Maj)\.?\s+[A-Z][\w. ]{0,30}:"
        # Q./A. starting a sentence (not an initial: "A. W. Chadwick"), and play-script names in capitals.
        r"|(?:^|[.?!][\"”’]?\s+)[QA]\.\s+(?![A-Z]\.)[A-Z]|(?:^|[.?!][\"”’]?\s+)[A-Z]{4,}(?:\s[A-Z]{2,})?[.:]\s+[A-Z\"“]"
    ),
    # A section header: "Talk 12", or a chapter's header in capitals or opening a sentence and followed by its
    # title ("Chapter 3. The Mind"); "the Gita, Chapter 18, Verse 17" is a citation, said as speech.
    "section header": re.compile(r"\bTalk\s+\d+|\bCHAPTER\s+(?:\d+|[IVXLC]+)\b|(?:^|[.?!]\s+)Chapter\s+(?:\d+|[IVXLC]+)\.?\s+[A-Z]"),
    "date line": re.compile(rf"\b(?:{_MONTHS}),?\s+\d{{4}}\b"),
    "running header": re.compile(r"Talks with Sri Ramana Maharshi|\((?:continued|contd)\b", re.IGNORECASE),
    # Headings: three words in capitals running, or a number then capitals ("17 BEYOND YOGA").
    "heading": re.compile(r"\b[A-Z]{2,}(?:[ ,'’-]+[A-Z]{2,}){2,}\b|(?<![\w.,])\d{1,4}\s+[A-Z]{3,}(?:\s+[A-Z]{2,})+\b"),
    # Page numbers: bracketed, or a bare number standing between two sentences.
    # (Not after an abbreviation that takes a number: "Ch. 20", "Vol. 2", "No. 4".)
    "page number": re.compile(
        r"\[\s*\d{1,4}\s*\]|(?<!\bCh)(?<!\bVol)(?<!\bNo)(?<!\bpp)(?<!\bp)(?<!\bv)(?<!\bSt)[.?!][\"”’]?\s+\d{1,4}\s+(?:[A-Z]|$)"
    ),
    # Footnotes: anchors of converted books, symbols or digits glued to a word's punctuation, a free-standing note.
    "footnote": re.compile(
        r"\bfoot_\d|\[\^\d+\]|[a-z][.,;:]?[*†‡¹²³⁴⁵⁶⁷⁸⁹]|[a-z][.,;:!?]\d{1,2}(?=\s|$)|(?:^|\s)[*†‡]\s+[A-Z]"
    ),
    # A word still broken at a line end: "medi- tation" (but "two- and three-fold" is English).
    "hyphenation": re.compile(r"\b[A-Za-z]{2,}- (?!(?:and|or|to|nor|as)\b)[a-z]{2,}"),
}


@dataclass
class Contamination:
    turns: int = 0
    contaminated: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    examples: list[tuple[str, str]] = field(default_factory=list)  # (reason, turn text)

    @property
    def rate(self) -> float:
        return self.contaminated / self.turns if self.turns else 0.0


# What a turn must hold for a check to have anything to find: most turns hold none of it, and the
# check is skipped (a plain `in` is far cheaper than a pattern with lookbehinds at every position).
_NEEDS = {
    "section header": re.compile(r"\d"), "date line": re.compile(r"\d"), "page number": re.compile(r"\d"),
    "footnote": re.compile(r"[\d*†‡¹²³⁴⁵⁶⁷⁸⁹]"), "hyphenation": re.compile(r"- "),
}


def contamination_reasons(turn: str) -> list[str]:
    """Every kind of structure left in a turn; ["empty"] for an empty one."""
    if not turn.strip():
        return ["empty"]
    return [
        reason for reason, pattern in CONTAMINANTS.items()
        if (reason not in _NEEDS or _NEEDS[reason].search(turn)) and pattern.search(turn)
    ]


def contamination_reason(turn: str) -> str | None:
    reasons = contamination_reasons(turn)
    return reasons[0] if reasons else None


def turn_contamination(items: list[dict], max_examples: int = 20) -> Contamination:
    """Share of turns (questions, and answers other than silence) that are empty or still hold structure."""
    result = Contamination()
    for item in items:
        if item["kind"] != "pair":
            continue
        turns = [item["question"]] + ([] if item["is_silence"] else [item["answer"]])
        for turn in turns:
            result.turns += 1
            reasons = contamination_reasons(turn)
            reason = reasons[0] if reasons else None
            if reason:
                result.contaminated += 1
                result.by_reason[reason] = result.by_reason.get(reason, 0) + 1
                if len(result.examples) < max_examples:
                    result.examples.append((reason, turn))
    return result


# An answer this many times the book's median length (and at least LONG_MIN_WORDS) has likely run on.
LONG_FACTOR = 6
LONG_MIN_WORDS = 150


def flag_suspicious_items(items: list[dict], max_examples: int = 20) -> dict:
    """Set each pair's `parse_warning` ("" or reasons, "; "-joined) and return a summary for the parse report."""
    answers = [len(i["answer"].split()) for i in items if i["kind"] == "pair" and not i["is_silence"]]
    median = statistics.median(answers) if answers else 0
    by_reason: dict[str, int] = {}
    examples = []
    n_flagged = 0
    for item in items:
        if item["kind"] != "pair":
            continue
        reasons = [f"question: {r}" for r in contamination_reasons(item["question"])]
        if not item["is_silence"]:
            reasons += [f"answer: {r}" for r in contamination_reasons(item["answer"])]
            words = len(item["answer"].split())
            if median and words >= LONG_MIN_WORDS and words > LONG_FACTOR * median:
                reasons.append(f"answer: long ({words / median:.0f}x the median)")
        item["parse_warning"] = "; ".join(reasons)
        if reasons:
            n_flagged += 1
            for reason in reasons:
                key = reason.split(" (")[0]
                by_reason[key] = by_reason.get(key, 0) + 1
            if len(examples) < max_examples:
                examples.append({"section": item["section"], "start": item["start"], "warning": item["parse_warning"]})
    return {"items": n_flagged, "median_answer_words": median, "by_reason": by_reason, "examples": examples}


def parse_agreement(items: list[dict], expected: list[dict]) -> dict:
    """Recall and precision of parsed pairs against hand-made ones, matched by normalised question and answer.

    `expected`: dicts with "question" and "answer". Contamination is the judge's, on the parsed pairs.
    """
    from curation.schema import normalise

    def key(pair: dict) -> tuple[str, str]:
        return normalise(pair["question"]), normalise(pair["answer"])

    found = [key(i) for i in items if i["kind"] == "pair"]
    wanted = [key(e) for e in expected]
    hits = sum(1 for k in wanted if k in set(found))
    dirt = turn_contamination(items)
    return {
        "expected": len(wanted), "found": len(found), "matched": hits,
        "recall": hits / len(wanted) if wanted else 1.0,
        "precision": sum(1 for k in found if k in set(wanted)) / len(found) if found else 1.0,
        "contamination": dirt.rate, "contaminated_turns": dirt.contaminated, "turns": dirt.turns,
        "missed": [e for e, k in zip(expected, wanted) if k not in set(found)],
    }


def matched_pairs(reference: list[dict], candidate: list[dict], min_similarity: float = 0.9) -> dict:
    """How many of `reference`'s pairs `candidate` also found, matched by text.

    A pair is found when a candidate has the same normalised question-and-answer words
    ("exact"), or, failing that ("close"), when a candidate in the same section is the same
    exchange in another extraction: question and answer at least `min_similarity` alike as
    word sequences (difflib's ratio), or one part that alike and, of the other part, one
    holding the other (`min_similarity` of the shorter one's words), since one extraction may
    lose a line or glue a stray one onto a question or an answer.
    """
    import difflib
    from collections import defaultdict

    from curation.schema import normalise

    def words(text: str) -> list[str]:
        return normalise(text).split()

    def ratio(a: list[str], b: list[str]) -> float:
        matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
        if matcher.real_quick_ratio() < min_similarity or matcher.quick_ratio() < min_similarity:
            return 0.0
        return matcher.ratio()

    def held(a: list[str], b: list[str]) -> float:
        if not a or not b:
            return float(a == b)
        blocks = difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks()
        return sum(block.size for block in blocks) / min(len(a), len(b))

    exact = {tuple(words(f"{i['question']} {i['answer']}")) for i in candidate}
    by_section: dict[str, list[dict]] = defaultdict(list)
    for item in candidate:
        by_section[item["section"]].append(item)
    n_exact = n_close = 0
    unmatched = []
    for item in reference:
        q, a = words(item["question"]), words(item["answer"])
        if tuple(q + a) in exact:
            n_exact += 1
            continue
        for other in by_section.get(item["section"], []):
            oq, oa = words(other["question"]), words(other["answer"])
            if ratio(q + a, oq + oa) >= min_similarity or (
                ratio(a, oa) >= min_similarity and held(q, oq) >= min_similarity
            ) or (ratio(q, oq) >= min_similarity and held(a, oa) >= min_similarity):
                n_close += 1
                break
        else:
            unmatched.append(item)
    total = len(reference)
    return {
        "reference": total, "candidate": len(candidate), "exact": n_exact, "close": n_close,
        "agreement": (n_exact + n_close) / total if total else 1.0,
        "exact_agreement": n_exact / total if total else 1.0, "unmatched": unmatched,
    }


def parse_report_notes(report: dict) -> list[str]:
    """A parse report (as stored with a source) as short notes for a curator: where to look."""
    notes = []
    extraction = report.get("extraction")
    if extraction:
        notes.append(f"PDF, {extraction['pages']} pages, {extraction['dropped_lines']} header/page-number lines dropped")
    for key, label in (
        ("narrative_pairs", "pairs from narrated dialogue"), ("unpaired_answers", "answers with no question"),
        ("unanswered_questions", "questions with no answer"), ("empty_turns", "empty turns"),
    ):
        if report.get(key):
            notes.append(f"{report[key]} {label}")
    suspicious = report.get("suspicious") or {}
    if suspicious.get("items"):
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(suspicious["by_reason"].items(), key=lambda kv: -kv[1]))
        notes.append(f"{suspicious['items']} suspicious items ({reasons}): filter on parse_warning")
    return notes
