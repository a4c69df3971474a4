"""What every aliveness critic returns, and the rubric they all judge by.

A critic reads one (question, answer) pair and says how *alive* the answer is:
whether it opens space for the questioner to look (9-10) or closes the question
with tips, reassurance and borrowed wisdom (1-2). Every critic, LLM or offline,
returns the same `CritiqueRecord`, stamped with the agent that made it, so the
workspace can hold records from different critics side by side.

A critic never raises for a bad item: anything that keeps it from judging
(a timeout, a server error, junk output, a refusal, a silent answer) gives a record
with `status="unscored"` and a short `reason`, and the run goes on.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

RUBRIC_VERSION = "aliveness-v1"


class CriticError(Exception):
    """The root of the critic package's errors: a critic cannot be built or used as asked."""

# The fixed vocabulary of flags. A critic may raise any subset; anything else is dropped.
FLAGS: tuple[str, ...] = (
    "closure_reflex",  # hurries to resolve, reassure or conclude instead of leaving the question open
    "prescriptive",  # tells the questioner what to do: advice, steps, techniques, "you should"
    "mirroring_frame",  # accepts and restates the questioner's premise instead of questioning it
    "performing_wisdom",  # sounds spiritual (stacked jargon, aphorisms) without pointing anywhere
    "verbosity",  # far longer than the question needs
)

FLAG_DESCRIPTIONS: dict[str, str] = {
    "closure_reflex": "hurries to resolve, reassure or conclude instead of leaving the question open",
    "prescriptive": "tells the questioner what to do: advice, steps, techniques, 'you should'",
    "mirroring_frame": "accepts and restates the questioner's premise instead of questioning it",
    "performing_wisdom": "sounds spiritual (stacked jargon, aphorisms) without pointing anywhere",
    "verbosity": "far longer than the question needs",
}

RUBRIC = """\
You judge the ALIVENESS of an answer given to a spiritual seeker, in the tradition of
self-enquiry (Ramana Maharshi). An alive answer does not hand the questioner a solution;
it turns attention back to the one who asks ("Who is it that feels lost?"), questions
the premise, and leaves space. A stale answer closes the question: tips, steps,
reassurance, or spiritual-sounding phrases that point nowhere.

Score on this 0-10 scale:
  9-10  genuinely alive: creates space, turns the questioner back to the source
  7-8   mostly alive: points inward, with a little explanation or softening
  5-6   mixed: some pointing, but the closure reflex is present
  3-4   mostly stale: performing wisdom, explaining, advising
  1-2   generic spiritual chatbot: tips, reassurance, "I hope this helps"
  0     harmful to contemplative space: dismissive, manipulative or dangerous

Flags (raise every one that applies, none if none does):
""" + "".join(f"  {name}: {FLAG_DESCRIPTIONS[name]}\n" for name in FLAGS)

Status = Literal["scored", "unscored"]

# Reasons a record is unscored. Critics use these exact strings, so a report can count by them.
REASON_TIMEOUT = "timeout"
REASON_SERVER_ERROR = "server error 5xx"
REASON_CLIENT_ERROR = "client error"
REASON_RATE_LIMITED = "rate limited"
REASON_CONNECTION = "connection error"
REASON_JUNK = "junk output"
REASON_REFUSAL = "refusal"
REASON_SILENCE = "silence"
REASON_EMPTY = "empty answer"
REASON_CRITIC_ERROR = "critic error"

# Unscored for a reason of the critic's own (the endpoint, the network, the model's output), not
# the pair's: a judgement made earlier stands over such a failure.
ATTEMPT_FAILURES: frozenset[str] = frozenset(
    {REASON_TIMEOUT, REASON_SERVER_ERROR, REASON_CLIENT_ERROR, REASON_RATE_LIMITED, REASON_CONNECTION,
     REASON_JUNK, REASON_REFUSAL, REASON_CRITIC_ERROR}
)


@dataclass(frozen=True)
class CritiqueRecord:
    """One critic's judgement of one pair.

    score: 0-10 when scored, None when unscored.
    rationale: a short reason for the score (for an unscored record: what went wrong, in detail).
    flags: a subset of FLAGS, in FLAGS order.
    agent: who judged: {"kind", "model", "rubric_version", "config"}; never holds a secret.
    reason: why the record is unscored, one of the REASON_* strings; "" when scored.
    """

    score: float | None
    rationale: str
    flags: tuple[str, ...]
    agent: Mapping[str, Any]
    status: Status = "scored"
    reason: str = ""

    def __post_init__(self) -> None:
        if self.status == "scored":
            if self.score is None or not 0.0 <= self.score <= 10.0:
                raise ValueError(f"a scored record needs a score in 0-10, not {self.score!r}")
            if self.reason:
                raise ValueError("a scored record has no unscored reason")
        elif self.status == "unscored":
            if self.score is not None:
                raise ValueError("an unscored record has no score")
            if not self.reason:
                raise ValueError("an unscored record needs a reason")
        else:
            raise ValueError(f"status must be 'scored' or 'unscored', not {self.status!r}")
        unknown = set(self.flags) - set(FLAGS)
        if unknown:
            raise ValueError(f"unknown flags {sorted(unknown)}; the vocabulary is {FLAGS}")
        object.__setattr__(self, "flags", tuple(f for f in FLAGS if f in self.flags))

    @classmethod
    def unscored(cls, reason: str, detail: str, agent: Mapping[str, Any]) -> CritiqueRecord:
        return cls(score=None, rationale=detail, flags=(), agent=agent, status="unscored", reason=reason)

    @property
    def is_scored(self) -> bool:
        return self.status == "scored"

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "rationale": self.rationale,
            "flags": list(self.flags),
            "agent": dict(self.agent),
            "status": self.status,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CritiqueRecord:
        return cls(
            score=data["score"],
            rationale=data["rationale"],
            flags=tuple(data["flags"]),
            agent=dict(data["agent"]),
            status=data["status"],
            reason=data["reason"],
        )


@dataclass(frozen=True)
class CritiqueInput:
    """One pair to judge. concept_score is the embedding stage's 0-1 score, when there is one."""

    question: str
    answer: str
    concept_score: float | None = None

    @property
    def content_key(self) -> str:
        """sha256 of exactly what a critic reads, so a cached judgement is reused only for the same words."""
        return pair_content_hash(self.question, self.answer)


# critique_many's progress callback: called once per finished item with (done, total).
CritiqueProgress = Callable[[int, int], None]


def pair_content_hash(question: str, answer: str) -> str:
    h = hashlib.sha256()
    for part in ("pair", question, answer):
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def config_hash(identity: Mapping[str, Any]) -> str:
    """sha256 of a critic's output-shaping configuration, as canonical JSON."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def as_inputs(items: Iterable[CritiqueInput | Sequence[Any] | Mapping[str, Any]]) -> list[CritiqueInput]:
    """Accept CritiqueInput, (question, answer[, concept_score]) tuples or dicts with those keys."""
    inputs = []
    for item in items:
        if isinstance(item, CritiqueInput):
            inputs.append(item)
        elif isinstance(item, Mapping):
            inputs.append(CritiqueInput(item["question"], item["answer"], item.get("concept_score")))
        else:
            inputs.append(CritiqueInput(*item))
    return inputs


class Critic(ABC):
    """The interface every aliveness critic implements.

    Subclasses set `kind` and implement `agent` and `critique`; `critique_many`
    defaults to one item after another (the LLM critic runs them concurrently).
    """

    kind: str = "critic"

    @property
    @abstractmethod
    def agent(self) -> dict[str, Any]:
        """{"kind", "model", "rubric_version", "config"}: stamped on every record; never holds a secret."""

    @abstractmethod
    def critique(self, question: str, answer: str, concept_score: float | None = None) -> CritiqueRecord:
        """Judge one pair. Never raises for a bad item: returns an unscored record instead."""

    def critique_many(
        self,
        items: Iterable[CritiqueInput | Sequence[Any] | Mapping[str, Any]],
        progress: CritiqueProgress | None = None,
    ) -> list[CritiqueRecord]:
        """Judge each item; records come back in the order of `items`."""
        inputs = as_inputs(items)
        records = []
        for done, item in enumerate(inputs, start=1):
            records.append(self.critique(item.question, item.answer, item.concept_score))
            if progress is not None:
                progress(done, len(inputs))
        return records


def agent_dict(kind: str, model: str, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": kind, "model": model, "rubric_version": RUBRIC_VERSION, "config": dict(config or {})}


__all__ = [
    "FLAGS",
    "FLAG_DESCRIPTIONS",
    "RUBRIC",
    "RUBRIC_VERSION",
    "Critic",
    "CritiqueInput",
    "CritiqueProgress",
    "CritiqueRecord",
    "agent_dict",
    "as_inputs",
    "config_hash",
    "pair_content_hash",
]
