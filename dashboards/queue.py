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

Agreement is Cohen's kappa on two labels, keep (accept or edit) and reject:
between every pair of reviewers over the items both decided (each reviewer's own
latest response that is not undone), and between the critic (score >= 7 counts as
keep) and the curators' effective decision.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl

from curation.responses import REASONS, STATE_SCHEMA

# Decision states an item can be in, as the filters name them.
UNREVIEWED = "unreviewed"
CHANGED = "changed since review"  # decided, but the item's exact text moved since (content_hash differs)
DECISION_STATES = (UNREVIEWED, "accept", "reject", "edit", CHANGED)

KEEP, DROP = "keep", "reject"
CRITIC_KEEP_THRESHOLD = 7.0  # critic_score >= this counts as the critic saying "keep"
CONCEPT_MIDPOINT = 0.5

# Suggestion columns and their types: the queue has all of them, null where a stage has not run.
SUGGESTION_COLUMNS: dict[str, pl.DataType] = {
    "concept_score": pl.Float64,
    "concept_basis": pl.String,  # what was scored: "answer", "passage", "silence" (curation/score.py)
    "critic_score": pl.Float64,
    "critic_rationale": pl.String,
    "critic_flags": pl.List(pl.String),
    "critic_status": pl.String,
    "critic_unscored_reason": pl.String,
    "dedup_cluster": pl.String,
    "dedup_representative": pl.String,
    "dedup_is_representative": pl.Boolean,
    "dedup_kind": pl.String,
    "dedup_jaccard": pl.Float64,
    "dedup_cluster_size": pl.Int64,
    "dedup_reason": pl.String,
}


_TALK_NUMBER = r"(\d+)"


def with_suggestions(items: pl.DataFrame) -> pl.DataFrame:
    """The items with every suggestion column present: null where its stage has not run.

    `concept_score` also accepts the scoring stage's `score` column under that name.
    """
    columns = []
    for name, dtype in SUGGESTION_COLUMNS.items():
        if name in items.columns:
            columns.append(pl.col(name).cast(dtype, strict=False))
        elif name == "concept_score" and "score" in items.columns:
            columns.append(pl.col("score").cast(dtype, strict=False).alias(name))
        else:
            columns.append(pl.lit(None, dtype=dtype).alias(name))
    return items.with_columns(columns)


def build_queue(
    items: pl.DataFrame,
    sources: pl.DataFrame | None = None,
    state: pl.DataFrame | None = None,
    skipped: Iterable[str] = (),
) -> pl.DataFrame:
    """Items joined with their decision state and ordered by need (see the module docstring).

    Adds: key ("source_id:item_id", unique per row), source_title, source_order,
    talk (the number in `section`, null if none), decision, decided_by, decided_at,
    decision_reason, decision_note, edited_question, edited_answer, decision_state
    (one of DECISION_STATES), skipped, need, why, position (0-based queue order).
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

    state = _normalise_state(state)
    decisions = state.select(
        "item_id",
        pl.col("content_hash").alias("decided_content_hash"),
        pl.col("decision"),
        pl.col("reviewer").alias("decided_by"),
        pl.col("created_at").cast(pl.String).alias("decided_at"),
        pl.col("reason").alias("decision_reason"),
        pl.col("note").alias("decision_note"),
        "edited_question",
        "edited_answer",
    )
    queue = queue.join(decisions, on="item_id", how="left", maintain_order="left")
    decided = pl.col("decision").is_not_null()
    queue = queue.with_columns(
        pl.when(~decided)
        .then(pl.lit(UNREVIEWED))
        .when(pl.col("decided_content_hash").is_not_null() & (pl.col("decided_content_hash") != pl.col("content_hash")))
        .then(pl.lit(CHANGED))
        .otherwise(pl.col("decision"))
        .alias("decision_state"),
        pl.col("key").is_in(list(skipped)).alias("skipped"),
    )
    queue = _with_need(queue)
    reviewed = pl.col("decision_state").is_in([UNREVIEWED, CHANGED]).not_()
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


def _normalise_state(state: pl.DataFrame | None) -> pl.DataFrame:
    """The store's state with every expected column, undo rows treated as no decision."""
    if state is None or state.height == 0:
        return pl.DataFrame(schema=STATE_SCHEMA)
    columns = [
        pl.col(name).cast(dtype, strict=False) if name in state.columns else pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in STATE_SCHEMA.items()
    ]
    return (
        state.select(columns)
        .filter(pl.col("decision").is_not_null() & (pl.col("decision") != "undo"))
        .unique(subset=["item_id"], keep="last", maintain_order=True)
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


@dataclass(frozen=True)
class Progress:
    n_items: int  # distinct item_ids
    n_reviewed: int  # with a standing decision on their current text
    by_decision: dict[str, int] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.n_reviewed / self.n_items if self.n_items else 0.0


def progress(queue: pl.DataFrame) -> Progress:
    """Reviewed / total over distinct item_ids (a decision covers an item in every source)."""
    distinct = queue.unique(subset=["item_id"], keep="first", maintain_order=True)
    counts = dict(distinct.group_by("decision_state").len().iter_rows())
    reviewed = sum(count for state, count in counts.items() if state not in (UNREVIEWED, CHANGED))
    return Progress(distinct.height, reviewed, {state: int(counts.get(state, 0)) for state in DECISION_STATES})


def progress_by_source(queue: pl.DataFrame) -> pl.DataFrame:
    """Per source: items, reviewed, accepted, rejected, edited, and the fraction reviewed."""
    decided = ~pl.col("decision_state").is_in([UNREVIEWED, CHANGED])
    return (
        queue.group_by("source_order", "source_title")
        .agg(
            pl.len().alias("items"),
            decided.sum().alias("reviewed"),
            (pl.col("decision_state") == "accept").sum().alias("accepted"),
            (pl.col("decision_state") == "reject").sum().alias("rejected"),
            (pl.col("decision_state") == "edit").sum().alias("edited"),
        )
        .sort("source_order")
        .with_columns((pl.col("reviewed") / pl.col("items")).round(3).alias("fraction"))
        .rename({"source_title": "source"})
        .drop("source_order")
    )


def progress_by_reviewer(responses: pl.DataFrame) -> pl.DataFrame:
    """Per reviewer: items with a standing decision of theirs (undos applied), by decision, and responses made."""
    schema = {"reviewer": pl.String, "items": pl.UInt32, "accept": pl.UInt32, "reject": pl.UInt32, "edit": pl.UInt32, "responses": pl.UInt32}
    if responses is None or responses.height == 0:
        return pl.DataFrame(schema=schema)
    standing = reviewer_decisions(responses)
    made = responses.group_by("reviewer").len().rename({"len": "responses"})
    per = standing.group_by("reviewer").agg(
        pl.len().alias("items"),
        *[(pl.col("decision") == decision).sum().alias(decision) for decision in ("accept", "reject", "edit")],
    )
    return made.join(per, on="reviewer", how="left").select(
        "reviewer", *[pl.col(name).fill_null(0).cast(pl.UInt32) for name in ("items", "accept", "reject", "edit", "responses")]
    ).sort("items", "reviewer", descending=[True, False])


# ---- agreement -----------------------------------------------------------------------


def reviewer_decisions(responses: pl.DataFrame) -> pl.DataFrame:
    """Each reviewer's own standing decision per item: their latest response that is neither an undo nor undone.

    Reads `ResponseStore.responses()`: an undo row's `undoes` names the response it
    reverts (whoever made it). Without an `undoes` column, each undo revokes the
    undoing reviewer's own latest standing decision on the item.
    Columns: item_id, reviewer, decision, reason. Items a reviewer has no standing decision on are absent.
    """
    out_schema = {"item_id": pl.String, "reviewer": pl.String, "decision": pl.String, "reason": pl.String}
    if responses is None or responses.height == 0:
        return pl.DataFrame(schema=out_schema)
    order = [name for name in ("id", "response_id", "created_at") if name in responses.columns][:1]
    ordered = responses.sort(order, maintain_order=True) if order else responses
    if "reason" not in ordered.columns:
        ordered = ordered.with_columns(pl.lit(None, dtype=pl.String).alias("reason"))
    id_column = next((name for name in ("id", "response_id") if name in ordered.columns), None)
    if "undoes" in ordered.columns and id_column is not None:
        undone = set(ordered["undoes"].drop_nulls().to_list())
        standing = ordered.filter((pl.col("decision") != "undo") & ~pl.col(id_column).is_in(list(undone)))
        return (
            standing.unique(subset=["item_id", "reviewer"], keep="last", maintain_order=True)
            .select([pl.col(name).cast(dtype) for name, dtype in out_schema.items()])
        )
    stacks: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
    for item, reviewer, decision, reason in ordered.select("item_id", "reviewer", "decision", "reason").iter_rows():
        stack = stacks.setdefault((item, reviewer), [])
        if decision == "undo":
            if stack:
                stack.pop()
        else:
            stack.append((decision, reason))
    rows = [
        {"item_id": item, "reviewer": reviewer, "decision": stack[-1][0], "reason": stack[-1][1]}
        for (item, reviewer), stack in stacks.items()
        if stack
    ]
    return pl.DataFrame(rows, schema=out_schema)


def keep_label(decision: str | None) -> str | None:
    """The two-label view agreement is measured on: accept and edit keep an item, reject drops it."""
    if decision in ("accept", "edit"):
        return KEEP
    if decision == "reject":
        return DROP
    return None


def cohen_kappa(labels_a: Sequence[Any], labels_b: Sequence[Any]) -> float | None:
    """Cohen's kappa of two raters over the same items; None when undefined (no items, or chance agreement is 1)."""
    if len(labels_a) != len(labels_b):
        raise ValueError(f"rater label lists differ in length: {len(labels_a)} != {len(labels_b)}")
    n = len(labels_a)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(labels_a, labels_b)) / n
    categories = set(labels_a) | set(labels_b)
    expected = sum((list(labels_a).count(c) / n) * (list(labels_b).count(c) / n) for c in categories)
    if math.isclose(expected, 1.0):
        return None
    return (observed - expected) / (1.0 - expected)


def reviewer_agreement(responses: pl.DataFrame) -> pl.DataFrame:
    """Cohen's kappa (keep vs reject) for every pair of reviewers over the items both have decided.

    Columns: reviewer_a, reviewer_b, n_items, agreement (fraction equal), kappa (null when undefined).
    """
    schema = {"reviewer_a": pl.String, "reviewer_b": pl.String, "n_items": pl.Int64, "agreement": pl.Float64, "kappa": pl.Float64}
    standing = reviewer_decisions(responses)
    if standing.height == 0:
        return pl.DataFrame(schema=schema)
    labels: dict[str, dict[str, str]] = {}
    for item, reviewer, decision in standing.select("item_id", "reviewer", "decision").iter_rows():
        label = keep_label(decision)
        if label is not None:
            labels.setdefault(reviewer, {})[item] = label
    names = sorted(labels)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = sorted(labels[a].keys() & labels[b].keys())
            if not shared:
                continue
            la = [labels[a][item] for item in shared]
            lb = [labels[b][item] for item in shared]
            rows.append(
                {
                    "reviewer_a": a,
                    "reviewer_b": b,
                    "n_items": len(shared),
                    "agreement": sum(x == y for x, y in zip(la, lb)) / len(shared),
                    "kappa": cohen_kappa(la, lb),
                }
            )
    return pl.DataFrame(rows, schema=schema)


@dataclass(frozen=True)
class CriticAgreement:
    """The critic (score >= threshold: keep) against the curators' effective decisions."""

    n_items: int
    agreement: float | None
    kappa: float | None
    # counts keyed (critic label, curator label)
    confusion: dict[tuple[str, str], int]
    threshold: float = CRITIC_KEEP_THRESHOLD


def critic_agreement(queue: pl.DataFrame, threshold: float = CRITIC_KEEP_THRESHOLD) -> CriticAgreement:
    """Agreement between the critic and the curators over items both judged (distinct item_ids)."""
    judged = queue.filter(
        pl.col("critic_score").is_not_null() & pl.col("decision_state").is_in(["accept", "reject", "edit"])
    ).unique(subset=["item_id"], keep="first", maintain_order=True)
    critic = [KEEP if score >= threshold else DROP for score in judged["critic_score"].to_list()]
    curator = [keep_label(decision) for decision in judged["decision_state"].to_list()]
    confusion = {(c, h): 0 for c in (KEEP, DROP) for h in (KEEP, DROP)}
    for c, h in zip(critic, curator):
        confusion[(c, h)] += 1
    n = len(critic)
    return CriticAgreement(
        n_items=n,
        agreement=(sum(c == h for c, h in zip(critic, curator)) / n) if n else None,
        kappa=cohen_kappa(critic, curator),
        confusion=confusion,
        threshold=threshold,
    )


def kappa_words(kappa: float | None) -> str:
    """Landis and Koch's names for a kappa, so a number reads at a glance."""
    if kappa is None:
        return "undefined (no variation)"
    if kappa < 0:
        return "worse than chance"
    for bound, words in ((0.2, "slight"), (0.4, "fair"), (0.6, "moderate"), (0.8, "substantial")):
        if kappa <= bound:
            return words
    return "almost perfect"


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
