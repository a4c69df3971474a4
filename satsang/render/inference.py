"""What the inference commands show: the critic loop's attempts, and checkpoints compared side by side.

Each function takes what the inference library returns (LoopResult, EvalReport) and gives a
rich renderable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

    from inference.eval import EvalReport, ModelSummary
    from inference.loop import LoopResult


def render_attempts(result: LoopResult) -> Table:
    """Every attempt of the critic loop: temperature, score (or why unscored), rationale, answer; the chosen one starred."""
    from rich.table import Table

    table = Table("#", "temperature", "score", "rationale", "answer", title=f"critic loop: {result.outcome} (threshold {result.threshold:g})")
    for index, attempt in enumerate(result.attempts):
        score = f"{attempt.score:.1f}" if attempt.score is not None else f"unscored ({attempt.reason})"
        chosen = " *" if index == result.chosen_index else ""
        table.add_row(f"{index + 1}{chosen}", f"{attempt.temperature:g}", score, attempt.rationale, attempt.text or "(silence)")
    return table


def render_eval_report(report: EvalReport) -> Table:
    """The models side by side, one column each: silence, length, critic scores and bands, closure-reflex markers."""
    from rich.table import Table

    from inference.eval import ALIVE_SCORE, MARKERS, SCORE_BANDS

    names = list(report.summaries)
    table = Table(title=f"Evaluation: {report.config.get('n_prompts', '?')} prompts, critic {report.critic.get('kind')}/{report.critic.get('model')}")
    table.add_column("", style="bold")
    for name in names:
        table.add_column(name, justify="right")
    summaries = [report.summaries[name] for name in names]

    def row(label: str, cell: Callable[[ModelSummary], str], end_section: bool = False) -> None:
        table.add_row(label, *(cell(s) for s in summaries), end_section=end_section)

    row("silence rate", lambda s: f"{s.silence_rate:.0%} ({s.n_silent}/{s.n_prompts})")
    row("mean length (words)", lambda s: _fmt(s.mean_words, ".1f"))
    if any(s.mean_attempts != 1.0 for s in summaries):
        row("mean attempts (loop)", lambda s: f"{s.mean_attempts:.2f}")
    row("unscored by the critic", lambda s: str(s.n_unscored), end_section=True)
    row("critic score: mean", lambda s: _fmt(s.mean_score, ".2f"))
    row("critic score: median", lambda s: _fmt(s.median_score, ".1f"))
    row(f"scored >= {ALIVE_SCORE:g}", lambda s: _fmt(s.share_alive, ".0%"))
    for label, _, _ in SCORE_BANDS:
        row(f"  band {label}", lambda s, label=label: str(s.bands[label]))
    table.rows[-1].end_section = True
    for name, label in MARKERS.items():
        row(label, lambda s, name=name: _rate(s, name))
    return table


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _rate(summary: ModelSummary, name: str) -> str:
    rate = summary.marker_rate(name)
    return "-" if rate is None else f"{rate:.0%} ({summary.marker_counts[name]})"
