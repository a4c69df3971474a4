"""Likely mistakes: decisions the concept classifier, trained on the *other* decisions, disagrees with.

Confident learning in a few lines (Northcutt et al., 2021): the curators' decisions on the
concept are labels (accept: contemplative; reject as "not contemplative": not), the features
are the answer embeddings `satsang score` stored. Each decision gets an out-of-fold probability
from a logistic regression fitted on the other folds (stratified k-fold), so no decision is
judged by a model that saw it. A label is a likely mistake when the probability of the other
label is at least that label's own average self-confidence (its per-class threshold) and above
the probability of the given label; they are listed by that margin, with the reason in words.

Only decisions about the concept count: an edit (the stored embedding is of the text before
the edit), and rejects for parse errors, duplicates and the rest, judge something else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

ACCEPTED, NOT_CONTEMPLATIVE = "accept", "not contemplative"
MIN_PER_LABEL = 3  # fewer decisions of a label than this and there is nothing to cross-validate

MISTAKE_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String,
    "decision": pl.String,
    "reason": pl.String,
    "reviewer": pl.String,
    "p_contemplative": pl.Float64,  # out of fold
    "margin": pl.Float64,  # P(other label) - P(given label)
    "why": pl.String,
}


@dataclass(frozen=True)
class MistakeReport:
    mistakes: pl.DataFrame  # MISTAKE_SCHEMA, most likely first
    n_labelled: int  # decisions used as labels
    n_folds: int
    thresholds: dict[str, float] = field(default_factory=dict)  # label -> its average self-confidence
    message: str = ""  # why there is nothing to show, when there is not


def concept_labels(decisions: pl.DataFrame) -> pl.DataFrame:
    """item_id, reviewer, decision, reason, label (1 contemplative, 0 not) of the decisions about the concept."""
    keep = (pl.col("decision") == ACCEPTED) | ((pl.col("decision") == "reject") & (pl.col("reason") == NOT_CONTEMPLATIVE))
    return decisions.filter(keep).select(
        "item_id", "reviewer", "decision", "reason", (pl.col("decision") == ACCEPTED).cast(pl.Int64).alias("label")
    ).unique("item_id", keep="last", maintain_order=True)


def likely_mistakes(
    item_ids: list[str], matrix: np.ndarray, decisions: pl.DataFrame, folds: int = 5, seed: int = 0, c: float = 10.0
) -> MistakeReport:
    """Out-of-fold disagreements between the decisions (STATE_SCHEMA frame: the effective decision per item)
    and the concept classifier, for items with a stored embedding (`item_ids` row for row with `matrix`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    empty = pl.DataFrame(schema=MISTAKE_SCHEMA)
    row_of = {}
    for index, item_id in enumerate(item_ids):
        row_of.setdefault(item_id, index)
    labelled = concept_labels(decisions).filter(pl.col("item_id").is_in(list(row_of)))
    y = labelled["label"].to_numpy()
    counts = {1: int((y == 1).sum()), 0: int((y == 0).sum())}
    if min(counts.values()) < MIN_PER_LABEL:
        return MistakeReport(empty, len(y), 0, message=(
            f"Needs at least {MIN_PER_LABEL} accepted and {MIN_PER_LABEL} rejected-as-not-contemplative decisions on scored"
            f" items; there are {counts[1]} and {counts[0]}."))
    x = matrix[[row_of[item] for item in labelled["item_id"]]]
    n_folds = min(folds, min(counts.values()))
    p = np.zeros(len(y))
    for train, test in StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(x, y):
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(x[train], y[train])
        p[test] = model.predict_proba(x[test])[:, 1]
    own = np.where(y == 1, p, 1 - p)  # probability of the given label
    thresholds = {ACCEPTED: float(p[y == 1].mean()), NOT_CONTEMPLATIVE: float((1 - p[y == 0]).mean())}
    other_threshold = np.where(y == 1, thresholds[NOT_CONTEMPLATIVE], thresholds[ACCEPTED])
    flagged = ((1 - own) >= other_threshold) & ((1 - own) > own)
    rows = []
    for index in np.flatnonzero(flagged):
        row = labelled.row(int(index), named=True)
        given = "accepted" if row["label"] == 1 else "rejected as not contemplative"
        others = len(y) - int(np.ceil(len(y) / n_folds))
        why = (f"{given} by {row['reviewer']}, but the concept classifier trained on about {others} other decisions"
               f" gives it {p[index]:.2f} contemplative (out of fold); "
               + (f"rejects average {1 - thresholds[NOT_CONTEMPLATIVE]:.2f}" if row["label"] == 1
                  else f"accepts average {thresholds[ACCEPTED]:.2f}"))
        rows.append({**{k: row[k] for k in ("item_id", "decision", "reason", "reviewer")},
                     "p_contemplative": float(p[index]), "margin": float((1 - own[index]) - own[index]), "why": why})
    mistakes = pl.DataFrame(rows, schema=MISTAKE_SCHEMA).sort("margin", descending=True)
    return MistakeReport(mistakes, len(y), n_folds, thresholds)
