"""The critic loop: generate, let an aliveness critic judge, regenerate warmer, or fall silent.

    loop = ContemplativeGenerator(LocalGenerator("checkpoints/sft-1"), OfflineCritic(), threshold=7.0)
    result = loop.respond("I feel lost in my practice.")
    result.response, result.silent          # "Who is it that feels lost?", False
    [(a.temperature, a.score, a.rationale) for a in result.attempts]

Each attempt is generated at the next temperature of the schedule (the last one
repeats when max_attempts is longer) and judged by the critic. The first attempt
scoring at or above the threshold is the response. When none does after
max_attempts, the response is silence: "" with `silent=True`, never the best of
the stale answers, since in this tradition an unfitting word is worse than none.
Every attempt is kept with its score and rationale, so a user can see why.

Rules worth knowing:

- A critic that cannot judge an attempt (an unscored record: timeout, refusal,
  junk output; or a critic that raised) counts as below the threshold: an
  answer nobody could vouch for is not given.
- The model's own silence (an empty answer, or a silence marker such as
  "(silence)" or "(No answer.)", as silent answers are written in the SFT data) is
  the model choosing silence, not a failure: it is accepted at once as the
  response (silent=True, chosen_index set), without asking the text critic,
  which has no words to judge. `accept_model_silence=False` regenerates instead.
- With a seed, attempt i is generated with seed + i, so the attempts differ even
  at one temperature and the whole loop is reproducible.
- A generator error (an endpoint down) is raised, not turned into silence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from critic.base import REASON_CRITIC_ERROR, REASON_SILENCE, Critic, CritiqueRecord
from inference.generate import GenerationConfig, Generator, Prompt, last_user_message

# How a silent answer can be written: empty, "...", "(silence)", "[Silence.]", "(No answer.)".
_SILENCE_NORMALISED = frozenset({"", "silence", "noanswer", "nothing"})
_NOT_WORD = re.compile(r"[\s()\[\].…,;:!\-—–*_\"'`]+")


def is_silence(text: str) -> bool:
    """Whether an answer is silence: empty, dots, or a bracketed silence marker."""
    return _NOT_WORD.sub("", text.lower()) in _SILENCE_NORMALISED


@dataclass(frozen=True)
class Attempt:
    """One generation and its judgement. score is None when the critic could not judge (status "unscored")."""

    text: str
    temperature: float
    score: float | None
    rationale: str
    flags: tuple[str, ...]
    status: str
    reason: str = ""  # why unscored ("" when scored), one of critic.base's REASON_* strings
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "temperature": self.temperature,
            "seed": self.seed,
            "score": self.score,
            "rationale": self.rationale,
            "flags": list(self.flags),
            "status": self.status,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class LoopResult:
    """What the loop answered and why.

    response: the chosen text; "" when silent.
    silent: the answer is silence, either the model's own (chosen_index set) or the
        fallback after max_attempts below the threshold (chosen_index None).
    attempts: every attempt in order, with its score and rationale.
    outcome: "accepted" | "model silence" | "silence: no attempt reached the threshold".
    """

    response: str
    silent: bool
    attempts: tuple[Attempt, ...]
    chosen_index: int | None
    threshold: float
    outcome: str
    critic: dict[str, Any] = field(default_factory=dict)

    @property
    def chosen(self) -> Attempt | None:
        return None if self.chosen_index is None else self.attempts[self.chosen_index]

    @property
    def score(self) -> float | None:
        """The chosen attempt's score; None for silence."""
        chosen = self.chosen
        return chosen.score if chosen is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "response": self.response,
            "silent": self.silent,
            "chosen_index": self.chosen_index,
            "threshold": self.threshold,
            "outcome": self.outcome,
            "critic": self.critic,
            "attempts": [attempt.to_dict() for attempt in self.attempts],
        }


@dataclass(frozen=True)
class LoopSettings:
    """The loop's knobs, as a server request or an evaluation gives them."""

    threshold: float = 7.0
    max_attempts: int = 3
    temperatures: tuple[float, ...] = (0.7, 0.9, 1.1)


OUTCOME_ACCEPTED = "accepted"
OUTCOME_MODEL_SILENCE = "model silence"
OUTCOME_FALLBACK_SILENCE = "silence: no attempt reached the threshold"


class ContemplativeGenerator:
    """generator + critic + threshold + max_attempts + temperature schedule (see the module docstring).

    config: the base GenerationConfig (top_p, max_new_tokens, seed); its temperature is
    replaced by the schedule's. It is itself a Generator: `generate` returns the response.
    """

    def __init__(
        self,
        generator: Generator,
        critic: Critic,
        threshold: float = 7.0,
        max_attempts: int = 3,
        temperatures: Sequence[float] = (0.7, 0.9, 1.1),
        config: GenerationConfig = GenerationConfig(),
        accept_model_silence: bool = True,
    ):
        if not 0.0 <= threshold <= 10.0:
            raise ValueError(f"threshold must be in 0-10, not {threshold!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts!r}")
        if not temperatures:
            raise ValueError("the temperature schedule needs at least one temperature")
        for temperature in temperatures:
            config.with_temperature(temperature)  # validates each
        self.generator = generator
        self.critic = critic
        self.threshold = float(threshold)
        self.max_attempts = max_attempts
        self.temperatures = tuple(float(t) for t in temperatures)
        self.config = config
        self.accept_model_silence = accept_model_silence
        self.name = getattr(generator, "name", "generator")

    def __repr__(self) -> str:
        return f"ContemplativeGenerator({self.name!r}, threshold={self.threshold}, max_attempts={self.max_attempts}, temperatures={self.temperatures})"

    @classmethod
    def from_settings(cls, generator: Generator, critic: Critic, settings: LoopSettings, config: GenerationConfig = GenerationConfig()) -> ContemplativeGenerator:
        return cls(generator, critic, settings.threshold, settings.max_attempts, settings.temperatures, config)

    @property
    def settings(self) -> LoopSettings:
        return LoopSettings(self.threshold, self.max_attempts, self.temperatures)

    def temperature_for(self, attempt_index: int) -> float:
        return self.temperatures[min(attempt_index, len(self.temperatures) - 1)]

    def generate(self, prompt: Prompt, config: GenerationConfig | None = None) -> str:
        return self.respond(prompt, config).response

    def respond(self, prompt: Prompt, config: GenerationConfig | None = None) -> LoopResult:
        base = config or self.config
        question = last_user_message(prompt)
        agent = dict(self.critic.agent)
        attempts: list[Attempt] = []
        for index in range(self.max_attempts):
            temperature = self.temperature_for(index)
            seed = None if base.seed is None else base.seed + index
            text = self.generator.generate(prompt, replace(base, temperature=temperature, seed=seed))
            if is_silence(text):
                attempts.append(Attempt("", temperature, None, "the model answered with silence", (), "unscored", REASON_SILENCE, seed))
                if self.accept_model_silence:
                    return LoopResult("", True, tuple(attempts), index, self.threshold, OUTCOME_MODEL_SILENCE, agent)
                continue
            record = self._judge(question, text, agent)
            attempts.append(Attempt(text, temperature, record.score, record.rationale, record.flags, record.status, record.reason, seed))
            if record.is_scored and record.score is not None and record.score >= self.threshold:
                return LoopResult(text, False, tuple(attempts), index, self.threshold, OUTCOME_ACCEPTED, agent)
        return LoopResult("", True, tuple(attempts), None, self.threshold, OUTCOME_FALLBACK_SILENCE, agent)

    def _judge(self, question: str, answer: str, agent: dict[str, Any]) -> CritiqueRecord:
        try:
            return self.critic.critique(question, answer)
        except Exception as error:  # a critic should not raise; if one does, the attempt is unscored
            return CritiqueRecord.unscored(REASON_CRITIC_ERROR, f"the critic raised {type(error).__name__}: {error}", agent)


__all__ = ["Attempt", "ContemplativeGenerator", "LoopResult", "LoopSettings", "is_silence"]
