"""Review state: what the curators' responses mean, item by item and reviewer by reviewer.

`curation.responses` is the store: an append-only log of responses (accept, reject, edit,
undo) in SQLite or PostgreSQL. This module is the one place that says what the log means,
and every reader (the workspace's status, the dashboard's queue and progress, export and
its data card, `score --learn`, `satsang run`) asks it rather than working it out again:

- an item's *effective decision*: its latest response that is neither an undo nor undone
  (`ResponseStore.state()` answers this in SQL; `effective_decisions` is the same rule
  applied to a frame that may hold undo rows or duplicates);
- *changed since review*: the item has an effective decision, but the content hash the
  reviewer saw is not the item's current one (same normalised words, other wording);
- *live responses*: every response that is not an undo and has not been undone;
- each reviewer's own *standing decision* per item: their latest live response on it;
- per-reviewer counts;
- *agreement*, on two labels, keep (accept or edit) and reject: between every pair of
  reviewers over the items both have a standing decision on, as the fraction of items
  they agree on and as Cohen's kappa; and between the critic (score >= 7 keeps) and the
  curators' effective decisions.

Decisions are never copied onto the items: a copy goes stale at the next response. A
reader joins them when it needs them (`join_decisions`), from one `ReviewState` read
from the store (`load_review_state`, which never creates a database just to say that
nobody has reviewed yet).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl

from curation.redaction import redact_url
from curation.responses import RESPONSE_SCHEMA, SQLITE_FILE, STATE_SCHEMA, InvalidResponse, Response, ResponseStore, resolve_db_url

# Decision states an item can be in, as the dashboard's filters and the queue name them.
UNREVIEWED = "unreviewed"
CHANGED = "changed since review"  # decided, but the item's exact text moved since (content_hash differs)
DECIDED: tuple[str, ...] = ("accept", "reject", "edit")
DECISION_STATES: tuple[str, ...] = (UNREVIEWED, *DECIDED, CHANGED)

# The two labels agreement is measured on.
KEEP, DROP = "keep", "reject"
CRITIC_KEEP_THRESHOLD = 7.0  # critic_score >= this counts as the critic saying "keep"

NO_STORE = "none yet (no review database in the workspace)"

# What join_decisions adds to items: the effective decision on each (null where none).
DECISION_COLUMNS: dict[str, pl.DataType] = {
    "decision": pl.String,  # accept | reject | edit
    "decided_by": pl.String,  # the reviewer of the effective response
    "decided_at": pl.String,  # its time, ISO 8601 UTC, as the store wrote it
    "decision_reason": pl.String,
    "decision_note": pl.String,
    "edited_question": pl.String,
    "edited_answer": pl.String,
    "decided_content_hash": pl.String,  # the content hash the reviewer saw
    "decision_response_id": pl.Int64,
    "decision_state": pl.String,  # one of DECISION_STATES
}


# ---- the state, read once ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewState:
    """The review store as read at one moment: effective decisions, every response, and where they came from."""

    decisions: pl.DataFrame  # STATE_SCHEMA: one row per item with an effective decision, by item_id
    responses: pl.DataFrame  # RESPONSE_SCHEMA: every response, undos included, oldest first
    store: str = NO_STORE  # what the store is, in words that do not depend on where the workspace is

    @classmethod
    def empty(cls, store: str = NO_STORE) -> ReviewState:
        return cls(pl.DataFrame(schema=STATE_SCHEMA), pl.DataFrame(schema=RESPONSE_SCHEMA), store)

    @classmethod
    def read(cls, store: ResponseStore, workspace_root: str | os.PathLike[str] | None = None) -> ReviewState:
        """Both frames from an open store. `workspace_root` lets its own reviews.db be named without its path."""
        decisions, responses = store.state(), store.responses()
        inside = (
            store.backend == "sqlite"
            and workspace_root is not None
            and Path(store.location).resolve() == (Path(workspace_root) / SQLITE_FILE).resolve()
        )
        where = "SQLite reviews.db in the workspace" if inside else f"{store.backend} {redact_url(store.location)}".strip()
        return cls(decisions, responses, where)

    @property
    def n_reviewed(self) -> int:
        """Items with an effective decision."""
        return self.decisions.height

    def reviewed_item_ids(self) -> pl.Series:
        return self.decisions["item_id"]

    def for_items(self, item_ids: Iterable[str] | pl.Series) -> ReviewState:
        """Only what concerns these items (an undo is of the same item as what it reverts, so nothing dangles)."""
        return replace(self, decisions=for_items(self.decisions, item_ids), responses=for_items(self.responses, item_ids))

    def live(self) -> pl.DataFrame:
        return live_responses(self.responses)

    def standing(self) -> pl.DataFrame:
        return reviewer_decisions(self.responses)


# ---- writing decisions on a workspace's items ----------------------------------------------------


def record_decisions(store: ResponseStore, responses: Sequence[dict[str, Any]], item_ids: Iterable[str] | pl.Series) -> list[Response]:
    """Append responses (ResponseStore.record_many's dicts) on items of a workspace: all, or none.

    The store keeps a log for whatever ids it is given (one database may serve several
    workspaces); the app and the CLI write through here, with the workspace's current item
    ids, so a decision on an item the workspace does not have is refused, naming it, and
    nothing of the batch is written.
    """
    known = set(item_ids.to_list() if isinstance(item_ids, pl.Series) else item_ids)
    unknown = list(dict.fromkeys(r.get("item_id") for r in responses if r.get("item_id") not in known))
    if unknown:
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise InvalidResponse(f"item {unknown[0]}{more}: not an item of this workspace; nothing recorded")
    return store.record_many(responses)


def review_store_exists(workspace_root: str | os.PathLike[str], db_url: str | None = None) -> bool:
    """Whether there is a review database to read: a URL (given or $SATSANG_DB_URL), or reviews.db in the workspace."""
    return resolve_db_url(db_url) is not None or (Path(workspace_root) / SQLITE_FILE).exists()


def load_review_state(workspace_root: str | os.PathLike[str], db_url: str | None = None) -> ReviewState:
    """The workspace's review state; empty, with no database created, when nobody has reviewed yet."""
    if not review_store_exists(workspace_root, db_url):
        return ReviewState.empty()
    with ResponseStore.open(workspace_root, url=db_url) as store:
        return ReviewState.read(store, workspace_root)


def for_items(frame: pl.DataFrame, item_ids: Iterable[str] | pl.Series) -> pl.DataFrame:
    ids = item_ids if isinstance(item_ids, pl.Series) else pl.Series(list(item_ids), dtype=pl.String)
    return frame.filter(pl.col("item_id").is_in(ids.unique().implode()))


# ---- the effective decision per item ------------------------------------------------------------


def effective_decisions(state: pl.DataFrame | None) -> pl.DataFrame:
    """One row per item with a standing decision, in STATE_SCHEMA.

    Reads `ResponseStore.state()`, or any frame like it: missing columns are null, undo
    rows count as no decision, and of several rows for one item the last one stands.
    """
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


def join_decisions(items: pl.DataFrame, state: pl.DataFrame | None) -> pl.DataFrame:
    """`items` (order kept) with DECISION_COLUMNS: each one's effective decision and its decision state."""
    decisions = effective_decisions(state).select(
        "item_id",
        pl.col("decision"),
        pl.col("reviewer").alias("decided_by"),
        pl.col("created_at").alias("decided_at"),
        pl.col("reason").alias("decision_reason"),
        pl.col("note").alias("decision_note"),
        "edited_question",
        "edited_answer",
        pl.col("content_hash").alias("decided_content_hash"),
        pl.col("response_id").alias("decision_response_id"),
    )
    joined = items.drop([name for name in DECISION_COLUMNS if name in items.columns]).join(
        decisions, on="item_id", how="left", maintain_order="left"
    )
    return joined.with_columns(decision_state_expression().alias("decision_state"))


def changed_since_review() -> pl.Expr:
    """Decided, but on other wording: the content hash the reviewer saw is not the item's now."""
    return (
        pl.col("decision").is_not_null()
        & pl.col("decided_content_hash").is_not_null()
        & (pl.col("decided_content_hash") != pl.col("content_hash"))
    )


def decision_state_expression() -> pl.Expr:
    return (
        pl.when(pl.col("decision").is_null())
        .then(pl.lit(UNREVIEWED))
        .when(changed_since_review())
        .then(pl.lit(CHANGED))
        .otherwise(pl.col("decision"))
    )


def is_decided() -> pl.Expr:
    """A standing decision on the item's current text (its decision state is accept, reject or edit)."""
    return pl.col("decision_state").is_in(list(DECIDED))


@dataclass(frozen=True)
class Progress:
    n_items: int  # distinct item_ids
    n_reviewed: int  # with a standing decision on their current text
    by_decision: dict[str, int] = field(default_factory=dict)  # DECISION_STATES -> items

    @property
    def fraction(self) -> float:
        return self.n_reviewed / self.n_items if self.n_items else 0.0


def progress(frame: pl.DataFrame, distinct: bool = False) -> Progress:
    """Reviewed / total over distinct item_ids of a frame through `join_decisions` (a decision covers an item in every source).

    `distinct=True`: the frame already holds one row per item (the review app keeps that mask), so no unique pass.
    """
    distinct_rows = frame if distinct else frame.unique(subset=["item_id"], keep="first", maintain_order=True)
    counts = dict(distinct_rows.group_by("decision_state").len().iter_rows())
    reviewed = sum(count for state, count in counts.items() if state in DECIDED)
    return Progress(distinct_rows.height, reviewed, {state: int(counts.get(state, 0)) for state in DECISION_STATES})


# ---- responses and reviewers ------------------------------------------------------------------


def normalise_reviewer_name(name: str | None) -> str:
    """A reviewer's name as stored and compared: case-folded, stripped, inner whitespace collapsed ("Asha" is "asha")."""
    return " ".join(str(name or "").casefold().split())



def live_responses(responses: pl.DataFrame) -> pl.DataFrame:
    """The responses that stand: neither an undo nor undone (RESPONSE_SCHEMA rows, oldest first)."""
    undone = responses["undoes"].drop_nulls().unique().implode()
    return responses.filter((pl.col("decision") != "undo") & ~pl.col("id").is_in(undone))


def reviewer_decisions(responses: pl.DataFrame | None) -> pl.DataFrame:
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
        undone = ordered["undoes"].drop_nulls().unique().implode()
        standing = ordered.filter((pl.col("decision") != "undo") & ~pl.col(id_column).is_in(undone))
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


def reviewer_state(responses: pl.DataFrame | None, reviewer: str) -> pl.DataFrame:
    """One reviewer's own standing decisions in STATE_SCHEMA, as `ResponseStore.state()` gives everyone's:
    what a blind queue joins, so nobody else's decision shows on an item before this reviewer gives theirs."""
    if responses is None or responses.height == 0:
        return pl.DataFrame(schema=STATE_SCHEMA)
    mine = live_responses(responses).filter(pl.col("reviewer") == reviewer)
    latest = mine.unique(subset=["item_id"], keep="last", maintain_order=True)
    return latest.select(
        [pl.col("id").alias("response_id") if name == "response_id" else pl.col(name) for name in STATE_SCHEMA]
    ).sort("item_id")


REVIEWER_COUNT_SCHEMA: dict[str, pl.DataType] = {
    "reviewer": pl.String,
    "items": pl.UInt32,  # items with a standing decision of theirs
    "accept": pl.UInt32,
    "reject": pl.UInt32,
    "edit": pl.UInt32,
    "responses": pl.UInt32,  # every response they recorded, undos included
}


def reviewer_counts(responses: pl.DataFrame | None) -> pl.DataFrame:
    """Per reviewer: items with a standing decision of theirs (undos applied), by decision, and responses made."""
    if responses is None or responses.height == 0:
        return pl.DataFrame(schema=REVIEWER_COUNT_SCHEMA)
    standing = reviewer_decisions(responses)
    made = responses.group_by("reviewer").len().rename({"len": "responses"})
    per = standing.group_by("reviewer").agg(
        pl.len().alias("items"),
        *[(pl.col("decision") == decision).sum().alias(decision) for decision in DECIDED],
    )
    return made.join(per, on="reviewer", how="left").select(
        "reviewer", *[pl.col(name).fill_null(0).cast(pl.UInt32) for name in list(REVIEWER_COUNT_SCHEMA)[1:]]
    ).sort("items", "reviewer", descending=[True, False])


# ---- agreement -----------------------------------------------------------------------------------


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
    counts_a, counts_b = Counter(labels_a), Counter(labels_b)
    expected = sum((counts_a[c] / n) * (counts_b[c] / n) for c in set(counts_a) | set(counts_b))
    if math.isclose(expected, 1.0):
        return None
    return (observed - expected) / (1.0 - expected)


AGREEMENT_SCHEMA: dict[str, pl.DataType] = {
    "reviewer_a": pl.String,
    "reviewer_b": pl.String,
    "n_items": pl.Int64,  # items both have a standing decision on
    "agreement": pl.Float64,  # fraction of them with the same label
    "kappa": pl.Float64,  # Cohen's kappa; null when undefined
}


def _labels_by_reviewer(responses: pl.DataFrame | None) -> dict[str, dict[str, str]]:
    labels: dict[str, dict[str, str]] = {}
    for item, reviewer, decision in reviewer_decisions(responses).select("item_id", "reviewer", "decision").iter_rows():
        label = keep_label(decision)
        if label is not None:
            labels.setdefault(reviewer, {})[item] = label
    return labels


def _pair_agreements(labels: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    names = sorted(labels)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = sorted(labels[a].keys() & labels[b].keys())
            if not shared:
                continue
            la = [labels[a][item] for item in shared]
            lb = [labels[b][item] for item in shared]
            n_agree = sum(x == y for x, y in zip(la, lb))
            rows.append(
                {
                    "reviewer_a": a,
                    "reviewer_b": b,
                    "n_items": len(shared),
                    "n_agree": n_agree,
                    "agreement": n_agree / len(shared),
                    "kappa": cohen_kappa(la, lb),
                }
            )
    return rows


def reviewer_agreement(responses: pl.DataFrame | None) -> pl.DataFrame:
    """Agreement (keep vs reject) for every pair of reviewers over the items both have decided (AGREEMENT_SCHEMA)."""
    rows = _pair_agreements(_labels_by_reviewer(responses))
    return pl.DataFrame([{k: row[k] for k in AGREEMENT_SCHEMA} for row in rows], schema=AGREEMENT_SCHEMA)


def blind_responses(responses: pl.DataFrame | None, blind_response_ids: Iterable[int]) -> pl.DataFrame:
    """The responses given blind (marked in the store: their reviewer had seen no other decision on the item),
    with every undo, so a blind decision later withdrawn does not count."""
    if responses is None or responses.height == 0:
        return pl.DataFrame(schema=RESPONSE_SCHEMA)
    ids = pl.Series(list(blind_response_ids), dtype=pl.Int64).implode()
    return responses.filter(pl.col("id").is_in(ids) | (pl.col("decision") == "undo"))


def blind_reviewer_agreement(responses: pl.DataFrame | None, blind_response_ids: Iterable[int]) -> pl.DataFrame:
    """`reviewer_agreement` on blind overlaps only: each reviewer's standing blind decision per item.

    A decision made after its reviewer saw another's on the item (or outside blind review:
    bulk actions, the CLI) is not independent, so it would inflate kappa; it is left out.
    """
    return reviewer_agreement(blind_responses(responses, blind_response_ids))


@dataclass(frozen=True)
class CriticAgreement:
    """The critic (score >= threshold: keep) against the curators' effective decisions."""

    n_items: int
    agreement: float | None
    kappa: float | None
    # counts keyed (critic label, curator label)
    confusion: dict[tuple[str, str], int]
    threshold: float = CRITIC_KEEP_THRESHOLD


def critic_agreement(frame: pl.DataFrame, threshold: float = CRITIC_KEEP_THRESHOLD) -> CriticAgreement:
    """The critic against the curators over items both judged (distinct item_ids of a frame through `join_decisions`).

    An item whose text changed since review has no standing curator label. A rejection
    as a "duplicate" says nothing about the item's quality, which is all the critic
    judges, so those items are left out.
    """
    reason = pl.col("decision_reason").fill_null("") if "decision_reason" in frame.columns else pl.lit("")
    duplicate = (pl.col("decision_state") == "reject") & (reason == "duplicate")
    judged = frame.filter(pl.col("critic_score").is_not_null() & is_decided() & ~duplicate).unique(
        subset=["item_id"], keep="first", maintain_order=True
    )
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


# ---- the summary a data card shows -------------------------------------------------------------


def review_summary(review: ReviewState) -> dict[str, Any]:
    """Decisions by reason, per-reviewer counts and agreement between reviewers, as the data card shows them.

    The numbers are the dashboard's: `reviewer_counts` and `reviewer_agreement` over the
    same responses. Overall agreement pools every pair of reviewers on every shared item.
    """
    decisions = review.decisions
    by_reason = (
        decisions.group_by("decision", pl.col("reason").fill_null(""))
        .len()
        .sort(["decision", "len", "reason"], descending=[False, True, False])
        .rows()
    )
    labels = _labels_by_reviewer(review.responses)
    pairs = _pair_agreements(labels)
    per_item = Counter(item for mine in labels.values() for item in mine)
    total = sum(p["n_items"] for p in pairs)
    agree = sum(p["n_agree"] for p in pairs)
    return {
        "n_reviewed": decisions.height,
        "n_responses": review.responses.height,
        "by_decision": dict(sorted(Counter(decisions["decision"].to_list()).items())),
        "by_reason": [{"decision": d, "reason": r or "(none)", "items": n} for d, r, n in by_reason],
        "reviewers": reviewer_counts(review.responses).to_dicts(),
        "n_items_multiply_reviewed": sum(1 for n in per_item.values() if n > 1),
        "agreement": agree / total if total else None,
        "n_comparisons": total,
        "pairs": [
            {"a": p["reviewer_a"], "b": p["reviewer_b"], "items": p["n_items"], "agreement": p["agreement"], "kappa": p["kappa"]}
            for p in pairs
        ],
    }
