"""The scoring cascade: a cheap engine scores every text, the full one only the texts the cheap one is unsure of.

Two concept scorers over the same exemplars (`curation.score.ConceptScorer`): `cheap`
runs a fast engine (`ScoreConfig.cascade`: the static model2vec table or int8 ONNX),
`full` the configured backend. Where the cheap score is decisive it is kept; inside
the *uncertain band* [lo, hi] of cheap scores the full model scores the text again.

The band is measured, not guessed: both scorers score the held-out exemplars (each
fitted without them) and a calibration sample of the texts being scored (a fixed
share, at least 300 texts, chosen by the sha256 of the text, so the same texts are
chosen in every run and on every worker); the band is the narrowest interval of cheap
scores that holds every calibration text whose two scores differ by more than half
the tolerance (`cascade_tolerance`, 0.05), and a side of it is trusted only with at
least 30 corpus texts beyond it. Calibration texts are always scored by the full
model. Where the cheap engine tracks the full one badly (the static table on the
Talks' answers), the band widens until nearly every text goes to the full model:
slower, not less exact. bench/score.py checks every decision against the full model.

Every item's `concept_agent` says which engine decided its score (`decided_by`) and
the band in force.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curation.embedding_store import text_key

CHEAP, FULL = 0, 1  # indices into CascadeScorer.agents()


@dataclass(frozen=True)
class Band:
    """Cheap scores in [lo, hi] are uncertain: the full model scores those texts."""

    lo: float
    hi: float
    n_calibration: int  # texts (held-out exemplars + sample) that set it
    max_error_outside: float  # the largest |cheap - full| among calibration texts outside the band

    def uncertain(self, cheap_scores: np.ndarray) -> np.ndarray:
        return (cheap_scores >= self.lo) & (cheap_scores <= self.hi)


def fit_band(
    cheap_scores: np.ndarray, full_scores: np.ndarray, tolerance: float, in_corpus: np.ndarray | None = None,
    min_support: int = 0,
) -> Band:
    """The narrowest band holding every calibration text whose scores differ by more than tolerance / 2.

    in_corpus marks the calibration texts drawn from the corpus being scored (the rest are
    held-out exemplars, easier than the corpus). A side of the band is kept only if at
    least `min_support` corpus texts lie beyond it (all within tolerance / 2, by
    construction); otherwise the band reaches 0 (or 1) there and the cheap engine decides
    nothing on that side: an overconfident cheap engine (static on the Talks) is not
    trusted on the strength of a few texts.
    """
    cheap_scores, full_scores = np.asarray(cheap_scores, np.float64), np.asarray(full_scores, np.float64)
    in_corpus = np.ones(len(cheap_scores), bool) if in_corpus is None else np.asarray(in_corpus, bool)
    error = np.abs(cheap_scores - full_scores)
    off = cheap_scores[error > tolerance / 2]
    lo, hi = (float(off.min()), float(off.max())) if len(off) else (0.5, 0.5)
    corpus = cheap_scores[in_corpus]
    if (corpus < lo).sum() < min_support:
        lo = 0.0
    if (corpus > hi).sum() < min_support:
        hi = 1.0
    band = Band(lo, hi, len(error), 0.0)
    outside = ~band.uncertain(cheap_scores)
    return dataclasses.replace(band, max_error_outside=float(error[outside].max(initial=0.0)))


def in_calibration_sample(text: str, share: float) -> bool:
    """Whether `text` is among the calibration share: decided by its sha256, so the same in every run."""
    return int(text_key(text)[:8], 16) < share * 0x1_0000_0000


def calibration_sample(texts: Sequence[str], share: float, at_least: int) -> list[str]:
    """The distinct texts in the calibration share, or if fewer, the `at_least` with the smallest sha256."""
    distinct = list(dict.fromkeys(texts))
    chosen = [t for t in distinct if in_calibration_sample(t, share)]
    if len(chosen) >= at_least:
        return chosen
    return sorted(distinct, key=text_key)[:at_least]


class CascadeScorer:
    """The cheap scorer decides where it is sure; the full scorer the rest. Same interface as ConceptScorer."""

    # Why these: a 5% share of a small corpus is a handful of texts; and a side of the band trusted on fewer
    # than 30 in-corpus texts let the static engine decide Talks answers 0.46 off the full model (bench/score.py).
    min_calibration = 300
    min_support = 30

    def __init__(self, cheap: Any, full: Any, tolerance: float, calibration_share: float):
        self.cheap, self.full = cheap, full
        self.config = full.config
        self.tolerance = tolerance
        self.calibration_share = calibration_share
        self.band: Band | None = None
        self._calibration: set[str] = set()  # the corpus texts the full model scores to set the band
        self._pairs: tuple[list[float], list[float]] = ([], [])  # calibration (cheap, full) scores
        self._holdouts: tuple[Any, Any] | None = None

    @property
    def exemplars(self) -> Any:
        return self.full.exemplars

    @property
    def n_extra(self) -> int:
        return self.full.n_extra

    @property
    def n_encoded(self) -> int:
        return self.cheap.n_encoded + self.full.n_encoded

    def use_workspace(self, root: Any) -> None:
        self.cheap.use_workspace(root)
        self.full.use_workspace(root)

    def fit(self, extra_texts: Sequence[str] = (), extra_labels: Sequence[str] = ()) -> CascadeScorer:
        self.cheap.fit(extra_texts, extra_labels)
        self.full.fit(extra_texts, extra_labels)
        self.band, self._holdouts, self._pairs, self._calibration = None, None, ([], []), set()
        return self

    def calibrate(self, texts: Sequence[str]) -> Band:
        """Set the band from the held-out exemplars and the calibration share of `texts` (scored by both)."""
        cheap_holdout, full_holdout = self._both_holdouts()
        sample = calibration_sample(texts, self.calibration_share, self.min_calibration)
        self._calibration = set(sample)
        cheap_scores = list(cheap_holdout.scores) + self.cheap.score(sample).tolist()
        full_scores = list(full_holdout.scores) + self.full.score(sample).tolist()
        in_corpus = np.arange(len(cheap_scores)) >= len(cheap_holdout.scores)
        self._pairs = (cheap_scores, full_scores)
        self.band = fit_band(np.array(cheap_scores), np.array(full_scores), self.tolerance, in_corpus, self.min_support)
        return self.band

    def decide(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(scores, decided_by): each text's score and which scorer made it (CHEAP or FULL)."""
        texts = list(texts)
        if self.band is None:
            self.calibrate(texts)
        scores = np.asarray(self.cheap.score(texts), dtype=np.float64)
        rescore = self.band.uncertain(scores) if len(texts) else np.zeros(0, bool)
        rescore |= np.array([t in self._calibration for t in texts], dtype=bool)
        decided_by = np.where(rescore, FULL, CHEAP)
        if rescore.any():
            scores[rescore] = self.full.score([t for t, r in zip(texts, rescore) if r])
        return scores, decided_by

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self.decide(texts)[0]

    def holdout(self) -> Any:
        """The held-out exemplars scored as the cascade scores: cheap where sure, full in the band."""
        cheap_holdout, full_holdout = self._both_holdouts()
        if self.band is None:
            self.calibrate([])
        cheap_scores, full_scores = np.array(cheap_holdout.scores), np.array(full_holdout.scores)
        scores = np.where(self.band.uncertain(cheap_scores), full_scores, cheap_scores)
        return type(full_holdout).of(full_holdout.labels, scores)

    def agent(self) -> dict[str, Any]:
        """The cascade as a whole: the full scorer's agent, with the cheap engine and the band."""
        band = self.band
        return {
            **self.full.agent(),
            "cascade": {
                "cheap": self.cheap.agent()["model_key"],
                "band": None if band is None else [round(band.lo, 6), round(band.hi, 6)],
                "n_calibration": None if band is None else band.n_calibration,
                "tolerance": self.tolerance,
            },
        }

    def agents(self) -> list[dict[str, Any]]:
        """One agent per decider, indexed by `decide`'s decided_by: what each item's concept_agent records."""
        whole = self.agent()
        return [{**whole, "decided_by": self.cheap.agent()["model_key"]}, {**whole, "decided_by": whole["model_key"]}]

    def _both_holdouts(self) -> tuple[Any, Any]:
        if self._holdouts is None:
            self._holdouts = (self.cheap.holdout(), self.full.holdout())
        return self._holdouts
