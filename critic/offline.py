"""The offline critic: transparent text signals plus the concept score, no model, no network.

The default when no endpoint is configured. Every point of its score comes from
a named signal, and the rationale lists each signal that fired with what it
added or took away, e.g.

    base 3.0; turns the question back (+2.0); brief: 6 words (+1.0);
    no advice or reassurance (+1.0); concept score 0.91 (+2.7)

so a curator can see exactly why a pair scored as it did, and disagree with a
signal rather than with a number. The signals are crude by design: they find the
chatbot register (tips, "you should", "it's completely normal", "I hope this
helps") reliably, and say nothing about the depth of a genuinely alive answer,
which is what the concept score and the LLM critic are for. Deterministic.

Text that is no answer at all (critic/degenerate.py: gibberish, a repetition loop, another
language, the question echoed back, transcript furniture, no words) scores the floor, with
the rule that fired as the rationale: those outputs are "brief" and "give no advice" too.
The detectors `matches`, `advice_list_items` and `turns_question_back` are public because
inference/eval.py counts its markers with them.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from critic.base import REASON_EMPTY, Critic, CritiqueRecord, agent_dict
from critic.degenerate import DEGENERACY_VERSION, DegeneracyConfig, degeneracy

SIGNALS_VERSION = "offline-signals-v2"  # v2: degenerate outputs held to the floor (critic/degenerate.py)

PRESCRIPTIVE_PHRASES: tuple[tuple[str, str], ...] = (
    ("you should", r"\byou\s+(?:should|ought\s+to)\b"),
    ("you need to", r"\byou\s+(?:need|have|must)\s+to\b"),
    ("try to", r"\b(?:try|trying)\s+to\b"),
    ("try ...ing", r"\btry\s+\w+ing\b"),
    ("make sure", r"\bmake\s+sure\b"),
    ("be sure to", r"\bbe\s+sure\s+to\b"),
    ("it's important to", r"\b(?:it'?s|it\s+is)\s+(?:very\s+|really\s+)?(?:important|essential|crucial|helpful|useful|vital)\s+to\b"),
    ("I recommend", r"\bI\s+(?:would\s+|'d\s+)?(?:recommend|suggest|advise|encourage)\b"),
    ("consider ...ing", r"\bconsider\s+\w+ing\b"),
    ("don't forget to", r"\b(?:don'?t|do\s+not)\s+forget\s+to\b"),
    ("start by", r"\bstart\s+(?:by|with)\b"),
    ("tips", r"\b(?:tips?|strategies|techniques|steps\s+(?:to|you\s+can))\b"),
    ("here are", r"\bhere\s+are\s+(?:\d+|some|a\s+few|several|three|four|five)\b"),
)

REASSURANCE_PHRASES: tuple[tuple[str, str], ...] = (
    ("it's normal", r"\b(?:is|it'?s|that'?s)\s+(?:completely\s+|perfectly\s+|totally\s+|very\s+|quite\s+)?(?:normal|okay|ok|understandable)\b"),
    # "natural" only after it's/that's: Ramana's "that which is natural" is no reassurance.
    ("it's natural", r"\b(?:it'?s|it\s+is|that'?s|that\s+is)\s+(?:completely\s+|perfectly\s+|totally\s+|very\s+|quite\s+)?(?:natural|common)\b"),
    ("don't worry", r"\b(?:don'?t|do\s+not)\s+worry\b"),
    ("you're not alone", r"\byou'?(?:re|\s+are)\s+not\s+alone\b"),
    ("I hope this helps", r"\bI\s+hope\s+(?:this|that)\s+helps?\b"),
    ("be gentle with yourself", r"\bbe\s+(?:gentle|kind|patient)\s+with\s+yourself\b"),
    ("rest assured", r"\brest\s+assured\b"),
    ("many people", r"\b(?:many|most)\s+(?:people|practitioners|seekers|meditators)\s+(?:feel|experience|go\s+through|struggle)\b"),
    ("you've got this", r"\byou'?ve\s+got\s+this\b"),
    ("trust the process", r"\btrust\s+the\s+process\b"),
    ("you're doing great", r"\byou'?(?:re|\s+are)\s+doing\s+(?:great|well|fine)\b"),
    ("it will get better", r"\b(?:it|things|this)\s+will\s+(?:get\s+better|pass|improve)\b"),
    ("the answer is", r"\bthe\s+(?:answer|solution|key)\s+is\b"),
)

# The new-age register: words that sound spiritual in any answer. Advaita's own
# vocabulary (Self, mind, Reality, consciousness) is left out: Ramana uses it plainly.
JARGON_WORDS = frozenset(
    """
    journey sacred divine universe universal energy energies vibration vibrations vibrational
    oneness awakening awaken beloved infinite cosmic blessed blessing blessings namaste abundance
    manifest manifesting unfold unfolding embrace embracing precious beautiful beautifully radiant
    luminous soul soulful heartspace chakra chakras alignment aligned gratitude authentic
    transformation transformative empowered empowering healing
    """.split()
)
APHORISMS: tuple[str, ...] = (
    r"\bthe\s+(?:journey|path)\s+is\s+the\s+(?:destination|goal)\b",
    r"\beverything\s+happens\s+for\s+a\s+reason\b",
    r"\byou\s+are\s+exactly\s+where\s+you\s+(?:need|are\s+meant)\s+to\s+be\b",
    r"\blet\s+go\s+and\s+let\b",
    r"\bthe\s+universe\s+(?:has|is|wants|will)\b",
    r"\bhigher\s+self\b",
    r"\binner\s+(?:light|peace|child|wisdom)\b",
    r"\bdear\s+(?:one|friend|soul)\b",
)

# Questions an assistant asks to keep serving, not to turn the seeker inward.
SERVICE_QUESTION = re.compile(
    r"\b(?:would\s+you\s+like|do\s+you\s+want|shall\s+I|can\s+I|may\s+I|does\s+(?:this|that)\s+help"
    r"|want\s+me\s+to|any\s+other\s+questions|anything\s+else|how\s+(?:does|did)\s+that\s+(?:sound|feel))\b",
    re.I,
)

STOPWORDS = frozenset(
    """
    a an the and or but if then so of to in on at by for with about from into over under as is are was
    were be been being am do does did doing have has had having i me my mine myself we us our you your
    yours yourself he him his she her it its they them their this that these those what which who whom
    whose why how when where there here not no nor can could should would will shall may might must
    very just also too only than such any all some one ones get got feel feels felt like
    """.split()
)

_WORD = re.compile(r"[A-Za-z][A-Za-z'’]*")
_SENTENCE = re.compile(r"[^.?!]+[.?!]*")
_NUMBERED_ITEM = re.compile(r"(?:^|\s)(?:\d{1,2}|[a-h])[.)]\s+[A-Za-z]")
_BULLET_LINE = re.compile(r"^\s*[-*•]\s+\S", re.M)


@dataclass(frozen=True)
class OfflineCriticConfig:
    """The weights of each signal; recorded in every record's agent, so a change of weights is visible."""

    base: float = 3.0
    # Text signals cannot tell a harmful answer (the rubric's 0) from a merely stale one, so
    # the offline critic never goes below the rubric's "generic spiritual chatbot" band.
    floor: float = 1.0
    concept_weight: float = 3.0  # concept score 0-1 adds up to this much
    turns_back: float = 2.0
    brief: float = 1.0
    brief_max_words: int = 40
    no_advice: float = 1.0
    prescriptive_each: float = -1.0
    prescriptive_cap: float = -3.0
    advice_list: float = -2.0
    reassurance_each: float = -1.0
    reassurance_cap: float = -3.0
    performing: float = -2.5
    jargon_min_hits: int = 3
    jargon_min_density: float = 0.04
    mirroring: float = -1.0
    mirroring_min_overlap: float = 0.6
    verbose: float = -1.0
    very_verbose: float = -2.0
    verbose_min_words: int = 150  # and more than verbose_ratio times the question's words
    verbose_ratio: float = 8.0
    very_verbose_min_words: int = 300
    very_verbose_ratio: float = 15.0
    # Not an answer at all (gibberish, a loop, another language, the question echoed, transcript
    # furniture): the floor, whatever the other signals say, since "brief" and "no advice" are
    # exactly what such text also shows.
    degenerate: DegeneracyConfig = DegeneracyConfig()


@dataclass(frozen=True)
class Signal:
    """One thing the critic noticed: its name in the rationale, its contribution, the flag it raises."""

    label: str
    delta: float
    flag: str | None = None

    def describe(self) -> str:
        return f"{self.label} ({self.delta:+.1f})"


class OfflineCritic(Critic):
    """Scores a pair from transparent signals and the concept score; the rationale names each signal."""

    kind = "offline"

    def __init__(self, config: OfflineCriticConfig | None = None):
        self.config = config or OfflineCriticConfig()

    def __repr__(self) -> str:
        return f"OfflineCritic({SIGNALS_VERSION})"

    @property
    def agent(self) -> dict[str, Any]:
        return agent_dict("offline", f"{SIGNALS_VERSION}+{DEGENERACY_VERSION}", asdict(self.config))

    def critique(self, question: str, answer: str, concept_score: float | None = None) -> CritiqueRecord:
        if not answer.strip():
            return CritiqueRecord.unscored(REASON_EMPTY, "the answer has no words to judge", self.agent)
        broken = degeneracy(question, answer, self.config.degenerate)
        if broken is not None:
            return CritiqueRecord(self.config.floor, f"{broken.describe()}: held to {self.config.floor:.1f}", (), self.agent)
        signals = self.signals(question, answer, concept_score)
        total = round(self.config.base + sum(signal.delta for signal in signals), 1)
        score = min(10.0, max(self.config.floor, total))
        rationale = "; ".join([f"base {self.config.base:.1f}", *(signal.describe() for signal in signals)])
        if score != total:
            limit = "floor: offline signals cannot judge harm" if score == self.config.floor else "ceiling"
            rationale += f"; {total:.1f} held to {score:.1f} ({limit})"
        flags = tuple(signal.flag for signal in signals if signal.flag)
        return CritiqueRecord(score, rationale, flags, self.agent)

    def signals(self, question: str, answer: str, concept_score: float | None = None) -> list[Signal]:
        """Every signal that fires on this pair, in a fixed order."""
        c = self.config
        signals: list[Signal] = []
        q_words = _WORD.findall(question)
        a_words = _WORD.findall(answer)
        n_q, n_a = len(q_words), len(a_words)

        turns_back = turns_question_back(answer)
        if turns_back:
            signals.append(Signal("turns the question back", c.turns_back))

        prescriptive = matches(PRESCRIPTIVE_PHRASES, answer)
        if prescriptive:
            delta = max(c.prescriptive_cap, c.prescriptive_each * len(prescriptive))
            signals.append(Signal("prescriptive: " + ", ".join(f'"{p}"' for p in prescriptive), delta, "prescriptive"))

        n_list_items = advice_list_items(answer)
        if n_list_items:
            signals.append(Signal(f"advice list of {n_list_items} items", c.advice_list, "prescriptive"))

        reassurance = matches(REASSURANCE_PHRASES, answer)
        if reassurance:
            delta = max(c.reassurance_cap, c.reassurance_each * len(reassurance))
            signals.append(Signal("reassurance: " + ", ".join(f'"{p}"' for p in reassurance), delta, "closure_reflex"))

        jargon = [w for w in (word.lower() for word in a_words) if w in JARGON_WORDS]
        n_aphorisms = sum(bool(re.search(pattern, answer, re.I)) for pattern in APHORISMS)
        n_hits = len(jargon) + n_aphorisms
        if n_hits >= c.jargon_min_hits and n_hits / max(n_a, 1) >= c.jargon_min_density:
            shown = ", ".join(sorted(set(jargon))[:5]) or "aphorisms"
            signals.append(Signal(f"performing wisdom: {n_hits} stock spiritual phrases ({shown})", c.performing, "performing_wisdom"))

        advises = bool(prescriptive or n_list_items or reassurance)
        overlap = _premise_overlap(q_words, a_words)
        if advises and not turns_back and overlap is not None and overlap >= c.mirroring_min_overlap:
            signals.append(Signal(f"takes the question's frame as given ({overlap:.0%} of its words) and advises", c.mirroring, "mirroring_frame"))

        ratio = n_a / max(n_q, 5)
        if n_a > c.very_verbose_min_words and ratio > c.very_verbose_ratio:
            signals.append(Signal(f"very long: {n_a} words for a {n_q}-word question", c.very_verbose, "verbosity"))
        elif n_a > c.verbose_min_words and ratio > c.verbose_ratio:
            signals.append(Signal(f"long: {n_a} words for a {n_q}-word question", c.verbose, "verbosity"))
        elif n_a <= c.brief_max_words:
            signals.append(Signal(f"brief: {n_a} words", c.brief))

        if not advises:
            signals.append(Signal("no advice or reassurance", c.no_advice))

        concept = _unit(concept_score)
        if concept is None:
            signals.append(Signal("no concept score, neutral", c.concept_weight / 2))
        else:
            signals.append(Signal(f"concept score {concept:.2f}", c.concept_weight * concept))
        return signals


def matches(phrases: tuple[tuple[str, str], ...], text: str) -> list[str]:
    text = text.replace("’", "'")
    return [label for label, pattern in phrases if re.search(pattern, text, re.I)]


def turns_question_back(answer: str) -> bool:
    """The answer asks the seeker something (not "Would you like more tips?")."""
    for sentence in _SENTENCE.findall(answer):
        sentence = sentence.strip()
        if sentence.endswith("?") and len(_WORD.findall(sentence)) >= 2 and not SERVICE_QUESTION.search(sentence):
            return True
    return False


def advice_list_items(answer: str) -> int:
    """How many items a numbered or bulleted list in the answer has (0 below two items)."""
    numbered = len(_NUMBERED_ITEM.findall(answer))
    bullets = len(_BULLET_LINE.findall(answer))
    n = max(numbered, bullets)
    return n if n >= 2 else 0


@dataclass(frozen=True)
class ClosureSignals:
    """What this critic's closure-reflex detectors find in one answer; inference.eval's markers read these."""

    advice_list_items: int  # items of a numbered or bulleted list in the answer, 0 below two
    prescriptive: tuple[str, ...]  # the PRESCRIPTIVE_PHRASES labels found
    reassurance: tuple[str, ...]  # the REASSURANCE_PHRASES labels found
    turns_question_back: bool  # the answer asks the seeker something (not a service question)


def closure_signals(answer: str) -> ClosureSignals:
    """The detectors the critic's signals use, on one answer, as data."""
    return ClosureSignals(
        advice_list_items(answer),
        tuple(matches(PRESCRIPTIVE_PHRASES, answer)),
        tuple(matches(REASSURANCE_PHRASES, answer)),
        turns_question_back(answer),
    )


def _stem(word: str) -> str:
    word = word.lower().replace("’", "'").removesuffix("'s")
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _premise_overlap(q_words: list[str], a_words: list[str]) -> float | None:
    """The share of the question's content words that the answer repeats; None for a question too short to tell."""
    q_content = {_stem(w) for w in q_words if w.lower() not in STOPWORDS}
    if len(q_content) < 2:
        return None
    a_content = {_stem(w) for w in a_words if w.lower() not in STOPWORDS}
    return len(q_content & a_content) / len(q_content)


def _unit(value: float | None) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(value):
        return None
    return min(1.0, max(0.0, value))
