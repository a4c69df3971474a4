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

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import polars as pl

from curation.responses import REASONS
# Review state is curation.review's; the review app imports these names from here with the queue's logic.
from curation.review import (  # noqa: F401
    CHANGED,
    DECISION_COLUMNS,
    Progress,
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
from curation.team import team_columns

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
    talk (the number in `section`, null if none), need, base_rank (the order by need,
    source, start and item id, decisions aside), curation.review.DECISION_COLUMNS
    (decision, decided_by, decided_at, decision_reason, decision_note, edited_question,
    edited_answer, decided_content_hash, decision_response_id, decision_state: one of
    DECISION_STATES), skipped, why, position (0-based queue order).

    The same as `order_queue(base_queue(items, sources), state, skipped)` with `why`
    added; the review app keeps `base_queue` across decisions (it depends on the items
    only) and writes `why` for the item on screen alone.
    """
    queue = order_queue(base_queue(items, sources), state, skipped)
    return queue.with_columns(why_expression().alias("why"))


def base_queue(items: pl.DataFrame, sources: pl.DataFrame | None = None) -> pl.DataFrame:
    """What the queue knows from the items alone: suggestions, source title and order, key, talk number and need."""
    queue = with_suggestions(items)
    if sources is not None and sources.height:
        titles = sources.select(
            "source_id",
            pl.col("title").alias("source_title"),
            pl.int_range(pl.len(), dtype=pl.Int64).alias("source_order"),
        )
        # Joined on the one column and set beside the items: a join of the wide frame would copy it all.
        looked_up = queue.select("source_id").join(titles, on="source_id", how="left", maintain_order="left")
        queue = queue.hstack(looked_up.select("source_title", "source_order").get_columns())
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
    queue = queue.with_columns(need_expression().round(4).alias("need"))
    # The order among items in the same review state never changes with decisions: ranked once here,
    # so each new review state sorts three integer columns, not need, source, start and item id.
    rank = (
        queue.select("need", "source_order", "start", "item_id", pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"))
        .sort(["need", "source_order", "start", "item_id"], descending=[True, False, False, False], nulls_last=True,
              maintain_order=True)
        .get_column("_row")
        .arg_sort()
        .cast(pl.UInt32)
    )
    # An integer per item id (the first row of each is marked): unique and count by it, not by 32-char strings.
    item_number = pl.col("item_id").rank("dense").cast(pl.UInt32)
    return queue.with_columns(rank.alias("base_rank"), item_number.alias("item_number")).with_columns(
        pl.col("item_number").is_first_distinct().alias("first_of_item")
    )


@dataclass(frozen=True)
class QueueView:
    """The queue without reordering its rows: `frame` keeps the items' order, `order` says the queue's.

    `frame` is `base_queue` with the decision columns and `skipped`; `order` holds its
    row numbers in queue order. The review app filters and pages through row numbers and
    reads whole rows only for what it shows, so a decision at 50,000 items never copies
    the wide frame (gathering it in queue order costs more than everything else together).
    """

    frame: pl.DataFrame
    order: pl.Series  # UInt32 row numbers of `frame`, in queue order

    def ordered(self) -> pl.DataFrame:
        """The whole queue in order, with `position` (what `build_queue` returns, less `why`)."""
        return self.frame[self.order].with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("position"))

    def select(self, f: QueueFilter | None = None, distinct: bool = True) -> pl.Series:
        """Row numbers of the rows passing `f`, in queue order; with `distinct`, only the first row of each item_id.

        An item found in two sources is one item with one decision: the review queue
        shows it once (its first row in queue order).
        """
        condition = filter_expression(f) if f is not None else None
        columns = [pl.col("item_number"), (condition if condition is not None else pl.lit(True)).alias("_keep")]
        if f is not None and f.sort_by is not None:
            columns.append(pl.col(f.sort_by[0]).alias("_sort"))
        narrow = self.frame.select(columns)[self.order].with_columns(self.order.alias("_row")).filter(pl.col("_keep"))
        if distinct:
            narrow = narrow.filter(pl.col("item_number").is_first_distinct())
        if f is not None and f.sort_by is not None:  # by the score, ties in queue order, items without it last
            narrow = narrow.sort("_sort", descending=f.sort_by[1], nulls_last=True, maintain_order=True)
        return narrow["_row"]

    def progress(self) -> Progress:
        """curation.review.progress over the queue's distinct items (the first row of each, as it counts them)."""
        return progress(self.frame.select("first_of_item", "item_id", "decision_state").filter(pl.col("first_of_item")), distinct=True)


def queue_view(base: pl.DataFrame, state: pl.DataFrame | None = None, skipped: Iterable[str] = ()) -> QueueView:
    """`base_queue` rows with their decisions joined (curation.review) and marked skipped, and the queue order."""
    # curation.review: the effective decision, and whether the text moved since. Joined on two columns and put
    # beside the base's, which are not copied: at 500,000 items a join of the wide frame copies a gigabyte.
    base = base.drop([name for name in (*DECISION_COLUMNS, "skipped") if name in base.columns])
    decisions = join_decisions(base.select("item_id", "content_hash"), state).drop("item_id", "content_hash")
    skipped_now = pl.Series(list(skipped), dtype=pl.String).implode()
    frame = base.hstack(decisions.get_columns()).with_columns(pl.col("key").is_in(skipped_now).alias("skipped"))
    # One integer key (reviewed, then skipped, then base rank) sorts faster than three columns.
    sort_key = is_decided().cast(pl.UInt64) * (1 << 33) + pl.col("skipped").cast(pl.UInt64) * (1 << 32) + pl.col("base_rank").cast(pl.UInt64)
    order = frame.select(sort_key.arg_sort().cast(pl.UInt32)).to_series()
    return QueueView(frame, order)


def reviewer_view(view: QueueView, reviewer: str, plan: pl.DataFrame, done: pl.DataFrame,
                  skipped_item_ids: Iterable[str] = (), own_state: pl.DataFrame | None = None) -> QueueView:
    """One reviewer's queue over `view` (curation.team): with `own_state` (blind), their own decisions in place of
    the team's; their groups first (assigned to them, needs another reviewer, skipped, complete, theirs decided),
    then the queue's need. Narrow columns are joined and put beside the frame; the wide frame is not copied."""
    frame = view.frame
    if own_state is not None:
        decisions = join_decisions(frame.select("item_id", "content_hash"), own_state).drop("item_id", "content_hash")
        frame = frame.drop(decisions.columns).hstack(decisions.get_columns())
    columns = team_columns(frame, reviewer, plan, done, skipped_item_ids)
    frame = frame.drop([name for name in columns.columns if name in frame.columns]).hstack(columns.get_columns())
    sort_key = pl.col("team_group").cast(pl.UInt64) * (1 << 32) + pl.col("base_rank").cast(pl.UInt64)
    return QueueView(frame, frame.select(sort_key.arg_sort().cast(pl.UInt32)).to_series())


def order_queue(base: pl.DataFrame, state: pl.DataFrame | None = None, skipped: Iterable[str] = ()) -> pl.DataFrame:
    """`base_queue` rows with their decisions joined, marked skipped, in queue order, with `position`."""
    return queue_view(base, state, skipped).ordered()


def need_expression() -> pl.Expr:
    """The need score of the module docstring, as one polars expression over the suggestion columns."""
    return pl.sum_horizontal(list(_need_terms().values()))


def _need_terms() -> dict[str, pl.Expr]:
    concept = pl.col("concept_score")
    critic = pl.col("critic_score")
    disagreement = (critic / 10.0 - concept).abs()
    concept_unsure = 1.0 - (2.0 * concept - 1.0).abs()
    critic_unsure = pl.max_horizontal(pl.lit(0.0), 1.0 - (critic - CRITIC_KEEP_THRESHOLD).abs() / 3.0)
    critic_failed = (pl.col("critic_status") == "unscored").fill_null(False)
    in_cluster = (pl.col("dedup_cluster_size") > 1).fill_null(False)
    representative = pl.col("dedup_is_representative").fill_null(True)
    n_flags = pl.col("critic_flags").list.len().fill_null(0)
    return {
        "disagree": (2.0 * disagreement).fill_null(0.0),
        "concept_unsure": concept_unsure.fill_null(0.5),
        "critic_unsure": pl.when(critic_failed).then(1.0).otherwise(critic_unsure.fill_null(0.5)),
        "cluster": pl.when(in_cluster & representative).then(1.0).when(in_cluster).then(-0.5).otherwise(0.0),
        "flags": 0.25 * n_flags.cast(pl.Float64),
    }


def _fixed(value: pl.Expr, decimals: int) -> pl.Expr:
    """A non-negative number as text with exactly `decimals` decimals, as Python's f"{x:.{decimals}f}" writes it."""
    scale = 10**decimals
    scaled = (value * scale).round(0).cast(pl.Int64)
    return pl.format("{}.{}", (scaled // scale).cast(pl.String), (scaled % scale).cast(pl.String).str.zfill(decimals))


def why_expression() -> pl.Expr:
    """The reasons an item sits where it does in the queue, most telling first, as one string per row ("; " between).

    A polars expression, so the review app can write it for the rows on screen only.
    """
    concept, critic = pl.col("concept_score"), pl.col("critic_score")
    size = pl.col("dedup_cluster_size")
    in_cluster = (size > 1).fill_null(False)
    flags = pl.col("critic_flags")
    disagree = _need_terms()["disagree"]
    reasons = [
        pl.when(pl.col("decision_state") == CHANGED).then(pl.lit("text changed since it was reviewed")),
        pl.when(pl.col("critic_status") == "unscored").then(
            pl.format("critic could not score it ({})",
                      pl.when(pl.col("critic_unscored_reason").fill_null("") == "").then(pl.lit("unscored"))
                      .otherwise(pl.col("critic_unscored_reason")))
        ),
        pl.when(disagree >= 0.6).then(pl.format("critic {}/10 and concept {} disagree", _fixed(critic, 1), _fixed(concept, 2))),
        pl.when(in_cluster & pl.col("dedup_is_representative").fill_null(False)).then(pl.format("represents a cluster of {}", size))
        .when(in_cluster).then(pl.format("duplicate in a cluster of {}", size)),
        pl.when((2 * concept - 1).abs() <= 0.3).then(pl.format("concept score unsure ({})", _fixed(concept, 2))),
        pl.when((critic - CRITIC_KEEP_THRESHOLD).abs() <= 1.0).then(pl.format("critic near the keep line ({})", _fixed(critic, 1))),
        pl.when(flags.list.len().fill_null(0) > 0).then(pl.lit("flagged ") + flags.list.join(", ")),
        pl.when(concept.is_null() & critic.is_null()).then(pl.lit("not scored yet")),
    ]
    joined = pl.concat_str(reasons, separator="; ", ignore_nulls=True)
    return pl.when(joined.fill_null("") == "").then(pl.lit("confident suggestions")).otherwise(joined)


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
    score_range: tuple[str, float, float] | None = None  # any suggestion score column, low, high (the team's sidebar)
    sort_by: tuple[str, bool] | None = None  # a suggestion score column, highest first: in place of the queue's order

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
    condition = filter_expression(f)
    return queue if condition is None else queue.filter(condition)


def filter_expression(f: QueueFilter) -> pl.Expr | None:
    """Every restriction of `f` as one boolean expression over queue rows; None when `f` restricts nothing."""
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
        # (?i) on the escaped words: several times faster than lower-casing every text first
        conditions.append(pl.col("text").str.contains("(?i)" + re.escape(f.text.strip())).fill_null(False))
    if f.score_range is not None:
        column, low, high = f.score_range
        conditions.append(pl.col(column).is_between(low, high).fill_null(False))
    return pl.all_horizontal(conditions) if conditions else None


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
    """Per source: items (distinct item ids), reviewed, accepted, rejected, edited, and the fraction reviewed."""
    item = "item_number" if "item_number" in queue.columns else "item_id"  # base_queue's integer per item id counts faster
    items = pl.col(item)
    return (
        queue.select("source_order", "source_title", item, "decision_state")
        .group_by("source_order", "source_title")
        .agg(
            items.n_unique().alias("items"),
            items.filter(is_decided()).n_unique().alias("reviewed"),
            items.filter(pl.col("decision_state") == "accept").n_unique().alias("accepted"),
            items.filter(pl.col("decision_state") == "reject").n_unique().alias("rejected"),
            items.filter(pl.col("decision_state") == "edit").n_unique().alias("edited"),
        )
        .sort("source_order")
        .with_columns((pl.col("reviewed") / pl.col("items")).round(3).alias("fraction"))
        .rename({"source_title": "source"})
        .drop("source_order")
    )


# ---- charts --------------------------------------------------------------------------


def score_frame(queue: pl.DataFrame) -> pl.DataFrame:
    """Long frame for score histograms by decision: item_id, score (concept or critic), value, decision (one row per item)."""
    columns = ["item_id", "concept_score", "critic_score", "decision_state"]
    if "first_of_item" in queue.columns:  # base_queue marks each item's first row
        distinct = queue.select(*columns, "first_of_item").filter(pl.col("first_of_item")).drop("first_of_item")
    else:
        distinct = queue.select(columns).unique(subset=["item_id"], keep="first", maintain_order=True)
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


def score_histogram(scores: pl.DataFrame, step: float, extent: tuple[float, float], include_unreviewed: bool = False) -> pl.DataFrame:
    """`score_frame` rows of one score counted into bins of `step` over `extent`, by decision: bin_start, bin_end, decision, items.

    Counted here, so a chart sends a few hundred numbers to the browser, not one per item.
    Items not reviewed yet (or changed since) are left out unless `include_unreviewed`.
    """
    if not include_unreviewed:
        scores = scores.filter(~pl.col("decision").is_in([UNREVIEWED, CHANGED]))
    low, high = extent
    n_bins = max(1, round((high - low) / step))
    bin_index = ((pl.col("value") - low) / step).floor().cast(pl.Int64).clip(0, n_bins - 1)
    return (
        scores.group_by(bin_index.alias("bin"), "decision")
        .len("items")
        .with_columns(
            (low + pl.col("bin") * step).alias("bin_start"),
            (low + (pl.col("bin") + 1) * step).alias("bin_end"),
        )
        .sort("bin", "decision")
        .select("bin_start", "bin_end", "decision", "items")
    )


# ---- the talk range ------------------------------------------------------------------


def parse_talk_range(text: str) -> tuple[int, int] | None:
    """A typed talk range: "300-400", "300 to 400", "300" (one talk); "" means no restriction. ValueError otherwise."""
    found = re.fullmatch(r"\s*(\d+)\s*(?:(?:-|–|—|to|\.\.)\s*(\d+)\s*)?", text or "")
    if not (text or "").strip():
        return None
    if not found:
        raise ValueError(f"talks: write a range such as 300-400, or one talk number, not {text.strip()!r}")
    low = int(found.group(1))
    high = int(found.group(2)) if found.group(2) else low
    return (min(low, high), max(low, high))
