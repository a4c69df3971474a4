"""Finding items: search over question, answer and context; "find similar" from the stored embeddings;
the words that differ between duplicates; and sorting and filtering by any suggestion score.

Pure functions over polars frames and numpy arrays (no Streamlit), for the review app's
search view, its duplicates panel and its sidebar.

- Search: every word of the query must occur (case-insensitively) in the question, the
  answer, the context or a passage's text; `matched_in` says where.
- Similar: cosine over the embeddings `satsang score` stored, keyed by the sha256 of the text
  embedded (`curation.score.item_embeddings`); nothing is encoded here, no model is loaded.
- Differences: a word-level difflib diff, as (op, words) runs, for a panel to colour.
- Suggestion scores: every numeric stage column (`curation.schema.SUGGESTION_COLUMNS`), and
  the agent (model, config) that made each stage's suggestions, read from its JSON column.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import numpy as np
import polars as pl

from curation.schema import AGENT_COLUMNS, SUGGESTION_COLUMNS

SEARCH_FIELDS: tuple[str, ...] = ("question", "answer", "context", "text")


# ---- search -------------------------------------------------------------------------------------


def search(frame: pl.DataFrame, query: str, fields: tuple[str, ...] = SEARCH_FIELDS) -> pl.DataFrame:
    """Rows where every word of `query` occurs in one of `fields` (any of them per word), order kept,
    with `matched_in`: the fields that hold at least one of the words. Empty query: no rows."""
    words = [word for word in query.casefold().split() if word]
    present = [name for name in fields if name in frame.columns]
    if not words or not present:
        return frame.head(0).with_columns(pl.lit(None, dtype=pl.List(pl.String)).alias("matched_in"))
    lowered = {name: pl.col(name).fill_null("").str.to_lowercase() for name in present}
    if "text" in lowered and "kind" in frame.columns:  # a pair's text is its question and answer again
        lowered["text"] = pl.when(pl.col("kind") == "pair").then(pl.lit("")).otherwise(lowered["text"])
    every_word = pl.all_horizontal(
        [pl.any_horizontal([lowered[name].str.contains(word, literal=True) for name in present]) for word in words]
    )
    where = [
        pl.when(pl.any_horizontal([lowered[name].str.contains(word, literal=True) for word in words]))
        .then(pl.lit(name))
        .otherwise(None)
        for name in present
    ]
    return frame.filter(every_word).with_columns(pl.concat_list(where).list.drop_nulls().alias("matched_in"))


# ---- similar --------------------------------------------------------------------------------------


def most_similar(item_ids: list[str], matrix: np.ndarray, item_id: str, k: int = 10) -> list[tuple[str, float]]:
    """The k items closest to `item_id` by cosine of their stored (unit-length) embeddings, most similar
    first, itself and rows with its own id left out; [] when the item has no stored embedding."""
    rows = [i for i, other in enumerate(item_ids) if other == item_id]
    if not rows or matrix.shape[0] == 0:
        return []
    query = matrix[rows[0]].astype(np.float32)
    similarity = matrix @ query
    order = np.argsort(-similarity, kind="stable")
    out: list[tuple[str, float]] = []
    seen = {item_id}
    for index in order:
        other = item_ids[int(index)]
        if other in seen:
            continue
        seen.add(other)
        out.append((other, float(similarity[index])))
        if len(out) >= k:
            break
    return out


# ---- word differences -------------------------------------------------------------------------------


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    """`before` to `after` word by word, as runs of ("equal" | "delete" | "insert", words)."""
    old, new = (before or "").split(), (after or "").split()
    runs: list[tuple[str, str]] = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op == "equal":
            runs.append(("equal", " ".join(old[a0:a1])))
            continue
        if op in ("delete", "replace"):
            runs.append(("delete", " ".join(old[a0:a1])))
        if op in ("insert", "replace"):
            runs.append(("insert", " ".join(new[b0:b1])))
    return runs


def item_body(row: dict[str, Any]) -> str:
    """What a duplicate is compared on: context, question and answer of a pair, a passage's text."""
    if row.get("kind") == "pair":
        return "\n".join(part for part in (row.get("context"), row.get("question"), row.get("answer")) if part)
    return row.get("text") or ""


# ---- suggestion scores and agents ---------------------------------------------------------------------


def score_columns(frame: pl.DataFrame) -> list[str]:
    """The numeric suggestion columns present in `frame` that have at least one value (sortable, filterable)."""
    numeric = [name for name, dtype in SUGGESTION_COLUMNS.items() if dtype.is_numeric()]
    return [name for name in numeric if name in frame.columns and frame[name].is_not_null().any()]


def sort_by_score(frame: pl.DataFrame, column: str, descending: bool = True) -> pl.DataFrame:
    """Rows ordered by a suggestion score (items without one last), ties in their previous order."""
    return frame.sort(column, descending=descending, nulls_last=True, maintain_order=True)


def filter_by_score(frame: pl.DataFrame, column: str, low: float, high: float) -> pl.DataFrame:
    """Rows whose `column` lies in [low, high]; rows without the score are left out."""
    return frame.filter(pl.col(column).is_between(low, high).fill_null(False))


def agents(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Stage -> the agent that made its suggestions on this item (parsed JSON), for stages that ran.
    An agent that is not valid JSON is shown as its raw text under "raw"."""
    out: dict[str, dict[str, Any]] = {}
    for stage, column in AGENT_COLUMNS.items():
        value = row.get(column)
        if not value:
            continue
        try:
            parsed = json.loads(value)
        except (TypeError, ValueError):
            parsed = {"raw": str(value)}
        out[stage] = parsed if isinstance(parsed, dict) else {"raw": parsed}
    return out


def agent_summary(agent: dict[str, Any]) -> str:
    """One line: who (model or agent name) and the version, if any."""
    who = agent.get("model") or agent.get("critic") or agent.get("agent") or agent.get("stage") or "?"
    version = agent.get("version") or agent.get("rubric_version")
    return f"{who}" + (f" (version {version})" if version else "")
