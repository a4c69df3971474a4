"""The review queue: what a curator sees next, the filters over it, bulk selections, progress and agreement.

Pure logic over polars frames, no Streamlit: the review app (dashboards/review_app.py)
is a thin layer over these functions, and tests/test_queue.py checks them on
hand-made data.

The queue is the workspace's items joined with the effective human decision on
each (`ResponseStore.state()`), ordered by how much an item needs a human:

    need = 2 x |critic/10 - concept|      the critic and the concept score disagree
         + (1 - |2 x concept - 1|)         the concept score is unsure (0.5 is least sure)
         + max(0, 1 - |critic - 7| / 3)    the critic score is near its keep line (7)
         + 1    when the critic could not score it (silence, timeout, refusal...)
         + 1    for the representative of a duplicate cluster (its decision settles the cluster)
         - 0.5  for a non-representative (usually rejected in bulk as a duplicate)
         + 0.25 per critic flag

A suggestion that is missing (its stage has not run) adds the neutral 0.5 in
place of its uncertainty term and nothing for disagreement. Unreviewed items
come first, then items skipped in this session, then reviewed items; ties go by
source ingest order and position in the source. Each item's `why` says, in
words, which terms put it where it is.

What a decision is, progress, per-reviewer counts and agreement (Cohen's kappa on keep
vs reject, between reviewers and between the critic and the curators) belong to
curation.review, the one owner of review state; the names the review app uses are
imported here from there, so the app has one module to import the queue's logic from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import polars as pl

from curation.responses import REASONS
# Review state is curation.review's; the review app imports these names from here with the queue's logic.
from curation.review import (  # noqa: F401
    CHANGED,
    CRITIC_KEEP_THRESHOLD,
    DECISION_STATES,
    DROP,
    KEEP,
    UNREVIEWED,
    critic_agreement,
    for_items,
    is_decided,
    join_decisions,
    kappa_words,
    progress,
    reviewer_agreement,
    reviewer_counts,
)
from curation.schema import SUGGESTION_COLUMNS, with_stage_columns

CONCEPT_MIDPOINT = 0.5

_TALK_NUMBER = r"(\d+)"


def with_suggestions(items: pl.DataFrame) -> pl.DataFrame:
    """The items with every suggestion column (curation.schema.SUGGESTION_COLUMNS) present: null where its stage has not run.

    `concept_score` also accepts the scoring stage's `score` column under that name.
    """
    if "concept_score" not in items.columns and "score" in items.columns:
        items = items.with_columns(pl.col("score").alias("concept_score"))
    return with_stage_columns(items, SUGGESTION_COLUMNS, cast=True)


def build_queue(
    items: pl.DataFrame,
    sources: pl.DataFrame | None = None,
    state: pl.DataFrame | None = None,
    skipped: Iterable[str] = (),
) -> pl.DataFrame:
    """Items joined with their decision state and ordered by need (see the module docstring).

    Adds: key ("source_id:item_id", unique per row), source_title, source_order,
    talk (the number in `section`, null if none), curation.review.DECISION_COLUMNS
    (decision, decided_by, decided_at, decision_reason, decision_note, edited_question,
    edited_answer, decided_content_hash, decision_response_id, decision_state: one of
    DECISION_STATES), skipped, need, why, position (0-based queue order).
    """
    queue = with_suggestions(items)
    if sources is not None and sources.height:
        titles = sources.select(
            "source_id",
            pl.col("title").alias("source_title"),
            pl.int_range(pl.len(), dtype=pl.Int64).alias("source_order"),
        )
        queue = queue.join(titles, on="source_id", how="left", maintain_order="left")
    else:
        queue = queue.with_columns(pl.lit(None, dtype=pl.String).alias("source_title"), pl.lit(None, dtype=pl.Int64).alias("source_order"))
    queue = queue.with_columns(
        pl.col("source_title").fill_null(pl.col("source_id").str.slice(0, 12)),
        pl.col("source_order").fill_null(
            pl.col("source_id").rank("dense").cast(pl.Int64) + 10**6
        ),  # sources missing from the table go after the known ones
        (pl.col("source_id") + ":" + pl.col("item_id")).alias("key"),
        pl.col("section").str.extract(_TALK_NUMBER).cast(pl.Int64, strict=False).alias("talk"),
    )

    queue = join_decisions(queue, state)  # curation.review: the effective decision, and whether the text moved since
    queue = queue.with_columns(pl.col("key").is_in(pl.Series(list(skipped), dtype=pl.String).implode()).alias("skipped"))
    queue = _with_need(queue)
    reviewed = is_decided()
    return (
        queue.sort(
            [reviewed, pl.col("skipped"), pl.col("need"), pl.col("source_order"), pl.col("start"), pl.col("item_id")],
            descending=[False, False, True, False, False, False],
            nulls_last=True,
            maintain_order=True,
        )
        .with_row_index("position")
        .with_columns(pl.col("position").cast(pl.Int64))
    )


def _with_need(queue: pl.DataFrame) -> pl.DataFrame:
    concept = pl.col("concept_score")
    critic = pl.col("critic_score")
    disagreement = (critic / 10.0 - concept).abs()
    concept_unsure = 1.0 - (2.0 * concept - 1.0).abs()
    critic_unsure = pl.max_horizontal(pl.lit(0.0), 1.0 - (critic - CRITIC_KEEP_THRESHOLD).abs() / 3.0)
    critic_failed = (pl.col("critic_status") == "unscored").fill_null(False)
    in_cluster = (pl.col("dedup_cluster_size") > 1).fill_null(False)
    representative = pl.col("dedup_is_representative").fill_null(True)
    n_flags = pl.col("critic_flags").list.len().fill_null(0)
    terms = {
        "disagree": (2.0 * disagreement).fill_null(0.0),
        "concept_unsure": concept_unsure.fill_null(0.5),
        "critic_unsure": pl.when(critic_failed).then(1.0).otherwise(critic_unsure.fill_null(0.5)),
        "cluster": pl.when(in_cluster & representative).then(1.0).when(in_cluster).then(-0.5).otherwise(0.0),
        "flags": 0.25 * n_flags.cast(pl.Float64),
    }
    queue = queue.with_columns([expression.alias(f"_need_{name}") for name, expression in terms.items()])
    queue = queue.with_columns(pl.sum_horizontal([f"_need_{name}" for name in terms]).round(4).alias("need"))
    whys = [_why(row) for row in queue.select(
        "concept_score", "critic_score", "critic_status", "critic_unscored_reason", "critic_flags",
        "dedup_cluster_size", "dedup_is_representative", "decision_state", "_need_disagree",
    ).iter_rows(named=True)]
    return queue.with_columns(pl.Series("why", whys, dtype=pl.String)).drop([f"_need_{name}" for name in terms])


def _why(row: dict[str, Any]) -> str:
    """The reasons an item sits where it does in the queue, most telling first."""
    reasons: list[str] = []
    concept, critic = row["concept_score"], row["critic_score"]
    if row["decision_state"] == CHANGED:
        reasons.append("text changed since it was reviewed")
    if row["critic_status"] == "unscored":
        reasons.append(f"critic could not score it ({row['critic_unscored_reason'] or 'unscored'})")
    if (row["_need_disagree"] or 0.0) >= 0.6:
        reasons.append(f"critic {critic:.1f}/10 and concept {concept:.2f} disagree")
    if (row["dedup_cluster_size"] or 0) > 1:
        if row["dedup_is_representative"]:
            reasons.append(f"represents a cluster of {row['dedup_cluster_size']}")
        else:
            reasons.append(f"duplicate in a cluster of {row['dedup_cluster_size']}")
    if concept is not None and abs(2 * concept - 1) <= 0.3:
        reasons.append(f"concept score unsure ({concept:.2f})")
    if critic is not None and abs(critic - CRITIC_KEEP_THRESHOLD) <= 1.0:
        reasons.append(f"critic near the keep line ({critic:.1f})")
    if row["critic_flags"]:
        reasons.append("flagged " + ", ".join(row["critic_flags"]))
    if concept is None and critic is None:
        reasons.append("not scored yet")
    return "; ".join(reasons) or "confident suggestions"


# ---- filters -------------------------------------------------------------------------

CLUSTER_MODES = ("all", "representatives", "non-representatives", "in a duplicate cluster", "unique")


@dataclass(frozen=True)
class QueueFilter:
    """What the curator narrowed the queue to. Empty or None means "no restriction" for each field.

    A score range restricts only when set; items without that score are then left out.
    A talk range likewise leaves out items with no talk number.
    """

    sources: tuple[str, ...] = ()  # source_ids
    kinds: tuple[str, ...] = ()  # "pair" | "passage"
    talk_range: tuple[int, int] | None = None
    concept_range: tuple[float, float] | None = None
    critic_range: tuple[float, float] | None = None
    flags: tuple[str, ...] = ()  # any of these critic flags
    unscored_only: bool = False  # only items the critic could not score
    cluster_mode: str = "all"  # one of CLUSTER_MODES
    cluster_id: str = ""  # one cluster (dedup_cluster), or a prefix of it
    decision_states: tuple[str, ...] = ()  # DECISION_STATES
    reviewers: tuple[str, ...] = ()  # decided by (the effective decision's reviewer)
    text: str = ""  # case-insensitive substring of the item's text

    def __post_init__(self):
        if self.cluster_mode not in CLUSTER_MODES:
            raise ValueError(f"cluster_mode must be one of {CLUSTER_MODES}, not {self.cluster_mode!r}")
        unknown = set(self.decision_states) - set(DECISION_STATES)
        if unknown:
            raise ValueError(f"unknown decision states {sorted(unknown)}; known: {DECISION_STATES}")

    def with_(self, **changes: Any) -> QueueFilter:
        return replace(self, **changes)


def apply_filter(queue: pl.DataFrame, f: QueueFilter) -> pl.DataFrame:
    """The rows of the queue that pass every restriction of `f`, queue order kept."""
    conditions: list[pl.Expr] = []
    if f.sources:
        conditions.append(pl.col("source_id").is_in(list(f.sources)))
    if f.kinds:
        conditions.append(pl.col("kind").is_in(list(f.kinds)))
    if f.talk_range is not None:
        low, high = f.talk_range
        conditions.append(pl.col("talk").is_between(low, high).fill_null(False))
    if f.concept_range is not None:
        low, high = f.concept_range
        conditions.append(pl.col("concept_score").is_between(low, high).fill_null(False))
    if f.critic_range is not None:
        low, high = f.critic_range
        conditions.append(pl.col("critic_score").is_between(low, high).fill_null(False))
    if f.flags:
        conditions.append(pl.col("critic_flags").list.set_intersection(list(f.flags)).list.len().fill_null(0) > 0)
    if f.unscored_only:
        conditions.append((pl.col("critic_status") == "unscored").fill_null(False))
    in_cluster = (pl.col("dedup_cluster_size") > 1).fill_null(False)
    if f.cluster_mode == "representatives":
        conditions.append(pl.col("dedup_is_representative").fill_null(True))
    elif f.cluster_mode == "non-representatives":
        conditions.append(pl.col("dedup_is_representative").not_().fill_null(False))
    elif f.cluster_mode == "in a duplicate cluster":
        conditions.append(in_cluster)
    elif f.cluster_mode == "unique":
        conditions.append(~in_cluster)
    if f.cluster_id.strip():
        conditions.append(pl.col("dedup_cluster").str.starts_with(f.cluster_id.strip()).fill_null(False))
    if f.decision_states:
        conditions.append(pl.col("decision_state").is_in(list(f.decision_states)))
    if f.reviewers:
        conditions.append(pl.col("decided_by").is_in(list(f.reviewers)).fill_null(False))
    if f.text.strip():
        conditions.append(pl.col("text").str.to_lowercase().str.contains(f.text.strip().lower(), literal=True))
    if not conditions:
        return queue
    return queue.filter(pl.all_horizontal(conditions))


# ---- navigation ----------------------------------------------------------------------


def neighbour(keys: Sequence[str], current: str | None, step: int) -> str | None:
    """The key `step` places from `current` in `keys` (clamped to the ends); the first key if current is gone."""
    if not keys:
        return None
    if current not in keys:
        return keys[0]
    index = min(max(keys.index(current) + step, 0), len(keys) - 1)
    return keys[index]


def after_decision(keys: Sequence[str], current: str) -> str | None:
    """Where the cursor goes once `current` is decided: the next item, else the one before, else none."""
    if current not in keys:
        return keys[0] if keys else None
    index = keys.index(current)
    if index + 1 < len(keys):
        return keys[index + 1]
    return keys[index - 1] if index > 0 else None


# ---- bulk actions --------------------------------------------------------------------

BULK_ACTIONS = {
    "reject-duplicates": "Reject every non-representative of its cluster (reason: duplicate)",
    "accept-all": "Accept every item in the selection",
    "reject-all": "Reject every item in the selection (with the reason chosen)",
}


@dataclass(frozen=True)
class BulkPlan:
    """The responses a bulk action would record: shown with its count before it is confirmed."""

    action: str
    records: tuple[dict[str, Any], ...]
    n_selected: int  # rows in the filtered selection
    n_already_decided: int  # rows it left alone because they are already decided (when not overriding)
    n_not_applicable: int = 0  # rows the action does not concern (e.g. representatives, for reject-duplicates)
    n_same_id: int = 0  # copies left alone because they share their representative's item_id (one decision covers both)

    @property
    def count(self) -> int:
        return len(self.records)


def _same_id_as_representative() -> pl.Expr:
    return ((pl.col("item_id") == pl.col("dedup_representative")) & pl.col("dedup_is_representative").not_()).fill_null(False)


def plan_bulk(
    selection: pl.DataFrame,
    action: str,
    reviewer: str,
    reason: str | None = None,
    note: str = "",
    include_decided: bool = False,
) -> BulkPlan:
    """The record_many() input for `action` over a filtered selection.

    One response per item_id (an item found in two sources is one decision). Items
    already decided are left alone unless `include_decided`; items whose decision
    would not change are always left alone. Rejecting duplicates leaves alone a copy
    whose item_id is its representative's: the two rows are one item, kept through
    the representative.
    """
    if action not in BULK_ACTIONS:
        raise ValueError(f"unknown bulk action {action!r}; known: {sorted(BULK_ACTIONS)}")
    if not reviewer.strip():
        raise ValueError("a bulk action needs a reviewer name")
    n_same_id = 0
    if action == "reject-duplicates":
        copies = selection.filter(pl.col("dedup_is_representative").not_().fill_null(False))
        # A decision is keyed by item_id: an exact copy in another source with its representative's
        # item_id is the same item, and rejecting it would reject the representative too.
        target = copies.filter(~_same_id_as_representative())
        n_same_id = copies.height - target.height
        decision, reason = "reject", "duplicate"
    elif action == "accept-all":
        target, decision, reason = selection, "accept", None
    else:
        if reason not in REASONS:
            raise ValueError(f"reject needs a reason from {REASONS}, not {reason!r}")
        target, decision = selection, "reject"
    n_not_applicable = selection.height - target.height - n_same_id
    undecided = target.filter(pl.col("decision_state") == UNREVIEWED) if not include_decided else target
    n_already_decided = target.height - undecided.height
    # Never record a decision an item already has (same decision, same reason, same text).
    pending = undecided.filter(
        ~(
            (pl.col("decision_state") == decision)
            & (pl.col("decision_reason").fill_null("") == (reason or ""))
        )
    )
    n_already_decided += undecided.height - pending.height
    pending = pending.unique(subset=["item_id"], keep="first", maintain_order=True)
    records = tuple(
        {
            "item_id": row["item_id"],
            "content_hash": row["content_hash"],
            "reviewer": reviewer.strip(),
            "decision": decision,
            "reason": reason,
            "note": note,
        }
        for row in pending.select("item_id", "content_hash").iter_rows(named=True)
    )
    return BulkPlan(action, records, selection.height, n_already_decided, n_not_applicable, n_same_id)


# ---- progress ------------------------------------------------------------------------


def progress_by_source(queue: pl.DataFrame) -> pl.DataFrame:
    """Per source: items, reviewed, accepted, rejected, edited, and the fraction reviewed."""
    return (
        queue.group_by("source_order", "source_title")
        .agg(
            pl.len().alias("items"),
            is_decided().sum().alias("reviewed"),
            (pl.col("decision_state") == "accept").sum().alias("accepted"),
            (pl.col("decision_state") == "reject").sum().alias("rejected"),
            (pl.col("decision_state") == "edit").sum().alias("edited"),
        )
        .sort("source_order")
        .with_columns((pl.col("reviewed") / pl.col("items")).round(3).alias("fraction"))
        .rename({"source_title": "source"})
        .drop("source_order")
    )


# ---- charts --------------------------------------------------------------------------


def score_frame(queue: pl.DataFrame) -> pl.DataFrame:
    """Long frame for score histograms by decision: item_id, score (concept or critic), value, decision."""
    distinct = queue.unique(subset=["item_id"], keep="first", maintain_order=True)
    parts = []
    for column, label in (("concept_score", "concept score"), ("critic_score", "critic score")):
        parts.append(
            distinct.filter(pl.col(column).is_not_null()).select(
                "item_id",
                pl.lit(label).alias("score"),
                pl.col(column).cast(pl.Float64).alias("value"),
                pl.col("decision_state").alias("decision"),
            )
        )
    return pl.concat(parts) if parts else pl.DataFrame()
