"""Review as a team: who may review, how many reviewers each item needs, who reviews what first, blindly.

- The reviewer list lives in the review database (`ResponseStore.add_reviewer`), not in a
  workspace file: it names who may write responses *into that database*, so a team sharing
  one PostgreSQL database shares one list whichever machine serves the app; two people adding
  names at once are two transactions, not a lost write to a file; and it travels with the
  decisions it vouches for. Names are normalised (`curation.review.normalise_reviewer_name`),
  so "Asha" and "asha " are one person. An empty list takes any name (a workspace of one).
- The plan, `<workspace>/review.json` (`TeamSettings`): reviewers per item (1 by default), the
  share of items that get `overlap_reviewers` (2) instead, for measuring agreement, and whether
  review is blind. It is a file in the workspace because it describes the work on these items
  and a lead edits it (`satsang reviewers plan`).
- Assignment is deterministic and needs no table: an item's reviewers are the registered
  reviewers with the highest hash of (item id, reviewer) (rendezvous hashing), so every app
  process agrees, adding a reviewer moves only the items they now rank first on, and
  reviewers get different items first. Whether an item is in the overlap share is a hash of
  its id alone.
- Blind: a reviewer's queue shows their own decisions only; another reviewer's decision on an
  item is shown once they have given theirs. It applies once the database has a reviewer list:
  without one anyone may type anyone's name, and hiding would protect nothing. A decision given that way is marked blind in the
  store, and agreement on blind overlaps (`curation.review.blind_reviewer_agreement`) counts
  only those.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curation.errors import CurationError
from curation.files import atomic_write
from curation.responses import ResponseStore
from curation.review import normalise_reviewer_name, reviewer_decisions

TEAM_FILE = "review.json"


class TeamError(CurationError):
    """The team's review plan or reviewer list is unusable (a bad review.json, an unknown reviewer)."""


@dataclass(frozen=True)
class TeamSettings:
    """How review is shared out. Stored as `<workspace>/review.json`."""

    reviewers_per_item: int = 1  # decisions each item needs
    overlap_share: float = 0.0  # share of items (0-1) that get `overlap_reviewers` instead, for agreement
    overlap_reviewers: int = 2
    blind: bool = True  # a reviewer sees others' decisions on an item only after giving theirs (with a reviewer list)

    def __post_init__(self) -> None:
        if not 1 <= self.reviewers_per_item <= self.overlap_reviewers:
            raise ValueError(
                f"reviewers_per_item must be at least 1 and at most overlap_reviewers ({self.overlap_reviewers}),"
                f" not {self.reviewers_per_item}"
            )
        if not 0.0 <= self.overlap_share <= 1.0:
            raise ValueError(f"overlap_share must be between 0 and 1, not {self.overlap_share}")


def read_team_settings(root: str | os.PathLike[str]) -> TeamSettings:
    """The workspace's plan; the defaults when it has no review.json. TeamError naming the file when it is bad."""
    path = Path(root) / TEAM_FILE
    if not path.exists():
        return TeamSettings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TeamError(f"{path}:{error.lineno}: not valid JSON: {error.msg}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise TeamError(f"{path}: cannot read: {error}") from None
    known = {f.name for f in fields(TeamSettings)}
    if not isinstance(data, dict) or set(data) - known:
        raise TeamError(f"{path}: expected an object with keys among {sorted(known)}, got {sorted(data) if isinstance(data, dict) else type(data).__name__}")
    try:
        return TeamSettings(**data)
    except (TypeError, ValueError) as error:
        raise TeamError(f"{path}: {error}") from None


def write_team_settings(root: str | os.PathLike[str], settings: TeamSettings) -> Path:
    path = Path(root) / TEAM_FILE
    atomic_write(path, (json.dumps(asdict(settings), indent=2) + "\n").encode("utf-8"))
    return path


# ---- the reviewer list ------------------------------------------------------------------------


def add_reviewer(store: ResponseStore, name: str, added_by: str = "") -> tuple[str, bool]:
    """Register `name` (normalised); returns (the name as stored, whether it was new)."""
    normal = normalise_reviewer_name(name)
    if not normal:
        raise TeamError("a reviewer name is required")
    return normal, store.add_reviewer(normal, added_by=normalise_reviewer_name(added_by))


def refusal(registered: Sequence[str], name: str) -> str | None:
    """Why `name` may not review here, or None when it may (any non-empty name, while the list is empty)."""
    normal = normalise_reviewer_name(name)
    if not normal:
        return "Enter your name to start reviewing."
    if registered and normal not in registered:
        return (f"{normal!r} is not on this workspace's reviewer list ({', '.join(registered)}):"
                f" ask the lead to run  satsang reviewers add {normal!r}")
    return None


# ---- assignment -------------------------------------------------------------------------------

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-spread 64-bit hash of 64-bit inputs, vectorised."""
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & _MASK64


def item_hashes(item_ids: Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each item id (blake2b): the one Python loop; the rest is vectorised."""
    return np.fromiter((_hash64(item_id) for item_id in item_ids), dtype=np.uint64, count=len(item_ids))


def reviewer_weights(item_ids: Sequence[str], reviewers: Sequence[str], hashes: np.ndarray | None = None) -> np.ndarray:
    """items x reviewers: the hash of (item id, reviewer) that ranks reviewers for each item."""
    base = item_hashes(item_ids) if hashes is None else hashes
    seeds = np.array([_hash64("reviewer\x1f" + name) for name in reviewers], dtype=np.uint64)
    return _mix(base[:, None] ^ seeds[None, :]) if len(reviewers) else np.zeros((len(item_ids), 0), np.uint64)


_OVERLAP_SEED = np.uint64(_hash64("overlap"))


def reviewers_needed(item_ids: Sequence[str], settings: TeamSettings, hashes: np.ndarray | None = None) -> np.ndarray:
    """Decisions each item needs: `overlap_reviewers` for a hashed `overlap_share` of them, else `reviewers_per_item`."""
    if settings.overlap_share <= 0:
        return np.full(len(item_ids), settings.reviewers_per_item, dtype=np.int64)
    base = item_hashes(item_ids) if hashes is None else hashes
    unit = (_mix(base ^ _OVERLAP_SEED) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.where(unit < settings.overlap_share, settings.overlap_reviewers, settings.reviewers_per_item).astype(np.int64)


ASSIGNMENT_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String,
    "reviewers_needed": pl.Int64,
    "assignees": pl.List(pl.String),  # the first `reviewers_needed` reviewers for the item, in rank order
}


def assignment(item_ids: Iterable[str], reviewers: Sequence[str], settings: TeamSettings) -> pl.DataFrame:
    """Who reviews each (distinct) item first: ASSIGNMENT_SCHEMA. No reviewers: nobody is assigned."""
    ids = list(dict.fromkeys(item_ids))
    names = sorted({normalise_reviewer_name(name) for name in reviewers} - {""})
    hashes = item_hashes(ids)
    needed = reviewers_needed(ids, settings, hashes)
    frame = pl.DataFrame({"item_id": ids, "reviewers_needed": needed}, schema={"item_id": pl.String, "reviewers_needed": pl.Int64})
    if not names:
        return frame.with_columns(pl.lit([], dtype=pl.List(pl.String)).alias("assignees"))
    # Rank by the weights' top 53 bits (exact in float64); columnar, so 50,000 items take milliseconds.
    order = np.argsort(-(reviewer_weights(ids, names, hashes) >> np.uint64(11)).astype(np.float64), axis=1, kind="stable")
    top = min(int(needed.max()) if len(ids) else 0, len(names))
    ranked = [pl.Series(np.array(names)[order[:, rank]], dtype=pl.String) for rank in range(top)]
    return frame.with_columns(
        pl.concat_list(ranked).list.head(pl.col("reviewers_needed")).alias("assignees") if ranked
        else pl.lit([], dtype=pl.List(pl.String)).alias("assignees")
    )


# ---- one reviewer's queue -----------------------------------------------------------------------

# Groups of a reviewer's queue, in order.
MINE, NEEDS_MORE, SKIPPED, COMPLETE, DONE_BY_ME = range(5)
GROUP_WORDS = {
    MINE: "assigned to you",
    NEEDS_MORE: "needs another reviewer",
    SKIPPED: "you skipped it",
    COMPLETE: "already has the reviewers it needs",
    DONE_BY_ME: "you decided it",
}


def decisions_per_item(responses: pl.DataFrame | None) -> pl.DataFrame:
    """item_id, reviewers_done: how many reviewers have a standing decision on each item (who and what stay hidden)."""
    standing = reviewer_decisions(responses)
    return standing.group_by("item_id").agg(pl.col("reviewer").n_unique().cast(pl.Int64).alias("reviewers_done"))


def team_columns(
    queue: pl.DataFrame,
    reviewer: str,
    plan: pl.DataFrame,
    done: pl.DataFrame,
    skipped_item_ids: Iterable[str] = (),
) -> pl.DataFrame:
    """For each row of `queue` (item_id, skipped, decision_state; order kept): assigned_to_me, reviewers_needed,
    reviewers_done, skipped (the queue's or persisted) and team_group, the reviewer's group (MINE ... DONE_BY_ME).

    Narrow, so the review app can put them beside its cached queue and sort row numbers only.
    """
    me = normalise_reviewer_name(reviewer)
    skipped = pl.Series(list(skipped_item_ids), dtype=pl.String).implode()
    with_plan = (
        queue.select("item_id", "skipped", "decision_state")
        .join(plan.select("item_id", "reviewers_needed", pl.col("assignees").list.contains(me).alias("assigned_to_me")),
              on="item_id", how="left", maintain_order="left")
        .join(done, on="item_id", how="left", maintain_order="left")
        .with_columns(
            pl.col("reviewers_needed").fill_null(1),
            pl.col("reviewers_done").fill_null(0),
            pl.col("assigned_to_me").fill_null(False),
            (pl.col("skipped") | pl.col("item_id").is_in(skipped)).alias("skipped"),
        )
    )
    mine_decided = pl.col("decision_state").is_in(["accept", "reject", "edit"])
    group = (
        pl.when(mine_decided).then(DONE_BY_ME)
        .when(pl.col("skipped")).then(SKIPPED)
        .when(pl.col("assigned_to_me")).then(MINE)
        .when(pl.col("reviewers_done") < pl.col("reviewers_needed")).then(NEEDS_MORE)
        .otherwise(COMPLETE)
    )
    return with_plan.select("assigned_to_me", "reviewers_needed", "reviewers_done", "skipped",
                            group.cast(pl.Int64).alias("team_group"))


def group_words() -> pl.Expr:
    """The words for a row's team_group, as `why` starts with them."""
    return pl.col("team_group").replace_strict(GROUP_WORDS, return_dtype=pl.String)


def may_see_others(standing_mine: bool, settings: TeamSettings) -> bool:
    """Whether a reviewer may be shown others' decisions (and comments) on an item: always when review is
    not blind, else once they have a standing decision of their own on it."""
    return standing_mine or not settings.blind


def has_standing_decision(responses: pl.DataFrame | None, item_id: str, reviewer: str) -> bool:
    standing = reviewer_decisions(responses)
    me = normalise_reviewer_name(reviewer)
    return standing.filter((pl.col("item_id") == item_id) & (pl.col("reviewer") == me)).height > 0


def blind_ids(recorded: Sequence[Any], seen_item_ids: Iterable[str], settings: TeamSettings) -> list[int]:
    """Of responses just recorded from the review screen (`Response`s), the ids of those given blind: blind
    review is on, and their reviewer had not been shown anyone else's decision on the item (a "seen" mark)."""
    if not settings.blind:
        return []
    seen = set(seen_item_ids)
    return [r.id for r in recorded if r.decision != "undo" and r.item_id not in seen]
