"""Parse quality: how many turns still carry structure that should have been taken out.

The checks are deliberately independent of the parser's own patterns, so a
parser bug is not hidden by the same bug in its judge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
CONTAMINANTS = {
    "speaker marker": re.compile(
        r"(?<![\w.])[DMQA]\s?\.?\s?:|\b(?:Sri Bhagavan|Bhagavan|Maharshi|The Master)\s*:"
        r"|\b(?:Mr|Mrs|Dr|Maj)\.?\s+[A-Z][\w. ]{0,30}:"
    ),
    "section header": re.compile(r"\bTalk\s+\d+"),
    "date line": re.compile(rf"\b(?:{_MONTHS}),?\s+\d{{4}}\b"),
    "running header": re.compile(r"Talks with Sri Ramana Maharshi", re.IGNORECASE),
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


def contamination_reason(turn: str) -> str | None:
    if not turn.strip():
        return "empty"
    for reason, pattern in CONTAMINANTS.items():
        if pattern.search(turn):
            return reason
    return None


def turn_contamination(items: list[dict], max_examples: int = 20) -> Contamination:
    """Share of turns (questions, and answers other than silence) that are empty or still hold structure."""
    result = Contamination()
    for item in items:
        if item["kind"] != "pair":
            continue
        turns = [item["question"]] + ([] if item["is_silence"] else [item["answer"]])
        for turn in turns:
            result.turns += 1
            reason = contamination_reason(turn)
            if reason:
                result.contaminated += 1
                result.by_reason[reason] = result.by_reason.get(reason, 0) + 1
                if len(result.examples) < max_examples:
                    result.examples.append((reason, turn))
    return result
