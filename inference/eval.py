"""Evaluate checkpoints side by side on a prompt set: critic scores, silence, length, closure-reflex markers.

    satsang eval --checkpoint checkpoints/a --checkpoint checkpoints/b --out eval-out

Library:

    from inference.eval import evaluate, load_prompts
    report = evaluate({"a": LocalGenerator("a"), "b": LocalGenerator("b")}, load_prompts(), OfflineCritic())
    report.plot("eval.png"); report.write("eval-out")     # the CLI's table: satsang.render.inference

Every generator answers every prompt with the same GenerationConfig (same seed,
so two checkpoints are compared on equal terms); the critic judges each answer.
With `loop=LoopSettings(...)` each generator runs inside the critic loop and the
loop's final response is what is judged and counted (its silence included).

Per checkpoint the report gives:

- the critic score distribution over the answers it could score (mean, median,
  the rubric's bands 0-2 / 3-4 / 5-6 / 7-8 / 9-10, share at or above 7);
- the silence rate: answers that are silence (empty or a silence marker, see
  inference.loop.is_silence; in loop mode also the loop's fallback silence).
  Silence is not sent to the critic and not in the score distribution;
- the mean length in words of the spoken (non-silent) answers;
- closure-reflex markers, as the share of spoken answers showing each: an advice
  list, "you should" / "you need to", any prescriptive phrase, reassurance, a
  service question ("Would you like...?"), performing wisdom; and one good sign,
  turning the question back. The detectors are critic/offline.py's own signals,
  so a marker here means exactly what it means in the offline critic's rationale.

Outputs of `write(dir)`: eval.json (summaries, config, critic), samples.jsonl
(every answer with its score and rationale), eval.png (the plot).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from critic.base import REASON_SILENCE, Critic, CritiqueRecord
# The offline critic's detectors themselves, so the markers and its signals agree.
from critic.offline import (
    PRESCRIPTIVE_PHRASES,
    REASSURANCE_PHRASES,
    SERVICE_QUESTION,
    OfflineCritic,
    advice_list_items,
    matches,
    turns_question_back,
)
from inference.generate import GenerationConfig, Generator, InferenceError
from inference.loop import ContemplativeGenerator, LoopSettings, is_silence

DEFAULT_PROMPTS = Path(__file__).resolve().parent / "data" / "prompts.jsonl"

# name -> what the table calls it; the order of the table's rows.
MARKERS: dict[str, str] = {
    "advice_list": "advice list",
    "you_should": '"you should" / "you need to"',
    "prescriptive": "any prescriptive phrase",
    "reassurance": "reassurance",
    "service_question": "service question",
    "performing_wisdom": "performing wisdom",
    "turns_back": "turns the question back (good)",
}
CLOSURE_MARKERS = tuple(name for name in MARKERS if name != "turns_back")
SCORE_BANDS: tuple[tuple[str, float, float], ...] = (("0-2", 0, 3), ("3-4", 3, 5), ("5-6", 5, 7), ("7-8", 7, 9), ("9-10", 9, 10.01))
ALIVE_SCORE = 7.0

_YOU_SHOULD = {"you should", "you need to"}
_MARKER_CRITIC = OfflineCritic()


class EvalError(InferenceError, ValueError):
    """A prompt file that cannot be read, or an evaluation that cannot start."""


@dataclass(frozen=True)
class EvalPrompt:
    id: str
    question: str
    category: str = ""


def load_prompts(path: str | Path | None = None) -> list[EvalPrompt]:
    """Prompts from a JSONL file of {"id", "question", "category"} (id and category optional); default: the bundled set."""
    path = Path(path) if path is not None else DEFAULT_PROMPTS
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise EvalError(f"cannot read {path}: {error.strerror or error}") from None
    prompts = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise EvalError(f"{path}:{number}: not JSON: {error}") from None
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row["question"].strip():
            raise EvalError(f'{path}:{number}: each line needs a non-empty "question" string')
        prompt_id = str(row.get("id", number))
        if prompt_id in seen:
            raise EvalError(f"{path}:{number}: duplicate id {prompt_id!r}")
        seen.add(prompt_id)
        prompts.append(EvalPrompt(prompt_id, row["question"].strip(), str(row.get("category", ""))))
    if not prompts:
        raise EvalError(f"{path} holds no prompts")
    return prompts


def closure_markers(answer: str, question: str = "") -> tuple[str, ...]:
    """The MARKERS an answer shows, by critic/offline.py's detectors."""
    found = []
    if advice_list_items(answer):
        found.append("advice_list")
    prescriptive = matches(PRESCRIPTIVE_PHRASES, answer)
    if _YOU_SHOULD & set(prescriptive):
        found.append("you_should")
    if prescriptive:
        found.append("prescriptive")
    if matches(REASSURANCE_PHRASES, answer):
        found.append("reassurance")
    if SERVICE_QUESTION.search(answer):
        found.append("service_question")
    if any(signal.flag == "performing_wisdom" for signal in _MARKER_CRITIC.signals(question, answer)):
        found.append("performing_wisdom")
    if turns_question_back(answer):
        found.append("turns_back")
    return tuple(found)


@dataclass(frozen=True)
class EvalSample:
    """One model's answer to one prompt, as judged."""

    model: str
    prompt_id: str
    category: str
    question: str
    response: str
    silent: bool
    score: float | None
    status: str
    reason: str
    rationale: str
    flags: tuple[str, ...]
    n_words: int
    markers: tuple[str, ...]
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["flags"] = list(self.flags)
        row["markers"] = list(self.markers)
        return row


@dataclass(frozen=True)
class ModelSummary:
    name: str
    n_prompts: int
    n_silent: int
    n_scored: int
    n_unscored: int  # spoken answers the critic could not judge
    mean_score: float | None
    median_score: float | None
    share_alive: float | None  # of scored answers, the share at or above ALIVE_SCORE
    bands: dict[str, int]  # SCORE_BANDS label -> scored answers in that band
    histogram: tuple[int, ...]  # 11 bins: [k, k+1) for k = 0..9, and exactly 10
    mean_words: float | None  # spoken answers
    marker_counts: dict[str, int]
    flag_counts: dict[str, int]
    unscored_by_reason: dict[str, int]
    mean_attempts: float = 1.0

    @property
    def silence_rate(self) -> float:
        return self.n_silent / self.n_prompts if self.n_prompts else 0.0

    @property
    def n_spoken(self) -> int:
        return self.n_prompts - self.n_silent

    def marker_rate(self, name: str) -> float | None:
        return self.marker_counts.get(name, 0) / self.n_spoken if self.n_spoken else None

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["histogram"] = list(self.histogram)
        row["silence_rate"] = self.silence_rate
        row["marker_rates"] = {name: self.marker_rate(name) for name in MARKERS}
        return row


@dataclass
class EvalReport:
    summaries: dict[str, ModelSummary]
    samples: dict[str, list[EvalSample]]
    critic: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"critic": self.critic, "config": self.config, "models": {name: s.to_dict() for name, s in self.summaries.items()}}

    def plot(self, path: str | Path) -> Path:
        """A PNG: score distribution, closure markers and silence rate, mean length; the models side by side."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        names = list(self.summaries)
        width = 0.8 / max(len(names), 1)
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [3, 3, 1.2]})
        bins = np.arange(11)
        for i, name in enumerate(names):
            s = self.summaries[name]
            axes[0].bar(bins + (i - (len(names) - 1) / 2) * width, s.histogram, width, label=name)
        axes[0].set_xticks(bins, [str(b) for b in bins])
        axes[0].set_xlabel("critic score")
        axes[0].set_ylabel("answers")
        axes[0].set_title("critic score distribution (scored answers)")
        axes[0].axvline(ALIVE_SCORE - 0.5, color="grey", linestyle=":", linewidth=1)
        axes[0].legend()

        labels = ["silence rate", *(MARKERS[name] for name in MARKERS)]
        y = np.arange(len(labels))
        for i, name in enumerate(names):
            s = self.summaries[name]
            values = [s.silence_rate, *((s.marker_rate(m) or 0.0) for m in MARKERS)]
            axes[1].barh(y + (i - (len(names) - 1) / 2) * width, values, width, label=name)
        axes[1].set_yticks(y, labels)
        axes[1].invert_yaxis()
        axes[1].set_xlim(0, 1)
        axes[1].set_xlabel("share of prompts (silence) / of spoken answers (markers)")
        axes[1].set_title("silence and closure-reflex markers")

        lengths = [self.summaries[name].mean_words or 0.0 for name in names]
        axes[2].bar(range(len(names)), lengths, color=[f"C{i}" for i in range(len(names))])
        axes[2].set_xticks(range(len(names)), names, rotation=20, ha="right")
        axes[2].set_title("mean length (words)")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def write(self, directory: str | Path) -> dict[str, Path]:
        """eval.json, samples.jsonl and eval.png in `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        summary_path = directory / "eval.json"
        summary_path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        samples_path = directory / "samples.jsonl"
        with samples_path.open("w", encoding="utf-8") as handle:
            for samples in self.samples.values():
                for sample in samples:
                    handle.write(json.dumps(sample.to_dict(), ensure_ascii=False) + "\n")
        return {"summary": summary_path, "samples": samples_path, "plot": self.plot(directory / "eval.png")}


EvalProgress = Callable[[str, int, int], None]  # (model name, done, total)


def evaluate(
    generators: Mapping[str, Generator],
    prompts: Sequence[EvalPrompt | str],
    critic: Critic,
    config: GenerationConfig = GenerationConfig(temperature=0.7, seed=0),
    loop: LoopSettings | None = None,
    progress: EvalProgress | None = None,
) -> EvalReport:
    """Answer every prompt with every generator, judge the answers, and summarise each generator."""
    if not generators:
        raise EvalError("nothing to evaluate: no generators")
    items = [p if isinstance(p, EvalPrompt) else EvalPrompt(str(i + 1), p) for i, p in enumerate(prompts)]
    if not items:
        raise EvalError("nothing to evaluate: no prompts")
    samples: dict[str, list[EvalSample]] = {}
    for name, generator in generators.items():
        if loop is not None:
            samples[name] = _run_loop(name, generator, items, critic, config, loop, progress)
        else:
            samples[name] = _run_plain(name, generator, items, critic, config, progress)
    summaries = {name: summarise(name, rows) for name, rows in samples.items()}
    run_config = {
        "n_prompts": len(items),
        "generation": asdict(config),
        "loop": asdict(loop) if loop is not None else None,
        "generators": {name: getattr(g, "agent", {"name": getattr(g, "name", name)}) for name, g in generators.items()},
    }
    return EvalReport(summaries, samples, dict(critic.agent), run_config)


def _run_plain(name: str, generator: Generator, prompts: list[EvalPrompt], critic: Critic, config: GenerationConfig, progress: EvalProgress | None) -> list[EvalSample]:
    answers = []
    for done, prompt in enumerate(prompts, start=1):
        answers.append(generator.generate(prompt.question, config))
        if progress is not None:
            progress(name, done, len(prompts))
    spoken = [i for i, answer in enumerate(answers) if not is_silence(answer)]
    records = dict(zip(spoken, critic.critique_many([(prompts[i].question, answers[i]) for i in spoken]), strict=True))
    rows = []
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        record = records.get(i)
        rows.append(_sample(name, prompt, answer, record, attempts=1))
    return rows


def _run_loop(
    name: str, generator: Generator, prompts: list[EvalPrompt], critic: Critic, config: GenerationConfig, loop: LoopSettings, progress: EvalProgress | None
) -> list[EvalSample]:
    contemplative = ContemplativeGenerator.from_settings(generator, critic, loop, config)
    rows = []
    for done, prompt in enumerate(prompts, start=1):
        result = contemplative.respond(prompt.question)
        chosen = result.chosen
        record = None
        if chosen is not None and not result.silent:
            record = CritiqueRecord(chosen.score, chosen.rationale, chosen.flags, result.critic) if chosen.status == "scored" else None
        sample = _sample(name, prompt, result.response, record, attempts=len(result.attempts))
        if result.silent:
            sample = replace(sample, rationale=result.outcome)
        rows.append(sample)
        if progress is not None:
            progress(name, done, len(prompts))
    return rows


def _sample(name: str, prompt: EvalPrompt, answer: str, record: CritiqueRecord | None, attempts: int) -> EvalSample:
    silent = is_silence(answer)
    text = "" if silent else answer
    if silent or record is None:
        status, reason, score, rationale, flags = "unscored", REASON_SILENCE if silent else "critic error", None, "silence" if silent else "", ()
    else:
        status, reason, score, rationale, flags = record.status, record.reason, record.score, record.rationale, record.flags
    return EvalSample(
        model=name,
        prompt_id=prompt.id,
        category=prompt.category,
        question=prompt.question,
        response=text,
        silent=silent,
        score=score,
        status=status,
        reason=reason,
        rationale=rationale,
        flags=tuple(flags),
        n_words=len(text.split()),
        markers=() if silent else closure_markers(text, prompt.question),
        attempts=attempts,
    )


def summarise(name: str, samples: Sequence[EvalSample]) -> ModelSummary:
    """One model's numbers from its samples."""
    scores = [s.score for s in samples if s.score is not None and s.status == "scored"]
    spoken = [s for s in samples if not s.silent]
    histogram = [0] * 11
    for score in scores:
        histogram[min(int(score), 10)] += 1
    bands = {label: sum(1 for score in scores if low <= score < high) for label, low, high in SCORE_BANDS}
    markers = Counter(marker for s in spoken for marker in s.markers)
    flags = Counter(flag for s in samples for flag in s.flags)
    unscored = Counter(s.reason for s in spoken if s.status != "scored")
    return ModelSummary(
        name=name,
        n_prompts=len(samples),
        n_silent=len(samples) - len(spoken),
        n_scored=len(scores),
        n_unscored=sum(unscored.values()),
        mean_score=statistics.fmean(scores) if scores else None,
        median_score=statistics.median(scores) if scores else None,
        share_alive=sum(score >= ALIVE_SCORE for score in scores) / len(scores) if scores else None,
        bands=bands,
        histogram=tuple(histogram),
        mean_words=statistics.fmean(s.n_words for s in spoken) if spoken else None,
        marker_counts={marker: markers.get(marker, 0) for marker in MARKERS},
        flag_counts=dict(flags),
        unscored_by_reason=dict(unscored),
        mean_attempts=statistics.fmean(s.attempts for s in samples) if samples else 1.0,
    )


def unique_names(named: Sequence[tuple[str, Generator]]) -> dict[str, Generator]:
    """name -> generator, with a suffix (-2, -3) where two checkpoints share a directory name."""
    result: dict[str, Generator] = {}
    for name, generator in named:
        unique, n = name, 1
        while unique in result:
            n += 1
            unique = f"{name}-{n}"
        result[unique] = generator
    return result


__all__ = [
    "CLOSURE_MARKERS",
    "DEFAULT_PROMPTS",
    "MARKERS",
    "EvalError",
    "EvalPrompt",
    "EvalReport",
    "EvalSample",
    "LoopSettings",
    "ModelSummary",
    "closure_markers",
    "evaluate",
    "load_prompts",
    "summarise",
    "unique_names",
]
