"""The fixed schemas of the workspace tables, and how item identity is computed.

Items (`items.parquet`): one row per item occurrence in a source. Offsets are
character offsets into the source text decoded as UTF-8 (the copy kept in the
workspace under `sources/<source_id>.txt`), so `text[start:end]` recovers the raw
span. A turn's text is its spans, each whitespace-collapsed, joined by one space
(a word hyphenated at a line end joins with nothing: `curation.spans.join_spans`):
noise inside a turn (running headers, page numbers, the marker of a second
question) falls between spans and so is not part of the turn.

Identity: `item_id` hashes the item's *normalised* content (case, whitespace,
punctuation and quote style ignored), so a decision made on an item survives
re-ingestion when its text is the same, and does not when the words changed.
`content_hash` hashes the exact text, so a reviewer can tell that an item's
wording moved since it was reviewed.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import polars as pl

SCHEMA_VERSION = 1

SPANS = pl.List(pl.List(pl.Int64))

ITEM_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String,  # sha256 of normalised content, 32 hex chars
    "content_hash": pl.String,  # sha256 of exact content, 32 hex chars
    "source_id": pl.String,  # sha256 of the source file's bytes, 64 hex chars
    "kind": pl.String,  # "pair" | "passage"
    "text": pl.String,  # pair: question + "\n\n" + answer; passage: the passage
    "question": pl.String,  # pair only
    "answer": pl.String,  # pair only; "" when the answer is silence
    "context": pl.String,  # narrative lead-in before the question ("" if none)
    "is_silence": pl.Boolean,  # the question was met with silence ("(No answer.)")
    "section": pl.String,  # e.g. "Talk 435"; "" where the book has no sections
    "section_date": pl.String,  # e.g. "29th December, 1937"; "" if unknown
    "conversation_id": pl.String,  # source_id[:12] + ":" + section
    "turn_index": pl.Int64,  # position of the pair (or passage) in its conversation
    "question_speaker": pl.String,  # the marker as written, e.g. "D.", "Mr. G. Duff"
    "answer_speaker": pl.String,
    "refs": pl.List(pl.String),  # numbered references such as "(63-4)"
    "start": pl.Int64,  # first character of the item (context included)
    "end": pl.Int64,  # one past its last character
    "context_spans": SPANS,
    "question_spans": SPANS,
    "answer_spans": SPANS,  # for silence: the span of the "(No answer.)" note
    "text_spans": SPANS,  # passages: the spans of the passage text
    "n_words": pl.Int64,
    "parser": pl.String,  # "dialogue" | "prose"
    "parser_version": pl.String,
    "page": pl.Int64,  # PDF sources: the page (1-based) the item starts on; null for text sources
    "parse_warning": pl.String,  # why the parse of this item looks suspicious, "; "-joined; "" when it does not
}

SOURCE_SCHEMA: dict[str, pl.DataType] = {
    "source_id": pl.String,  # sha256 of the file's bytes
    "title": pl.String,
    "kind": pl.String,  # "dialogue" | "prose"
    "original_path": pl.String,  # where it was ingested from
    "stored_path": pl.String,  # relative to the workspace: sources/<source_id>.txt
    "n_bytes": pl.Int64,
    "n_chars": pl.Int64,
    "n_items": pl.Int64,
    "licence": pl.String,
    "parser": pl.String,
    "parser_version": pl.String,
    "parser_config": pl.String,  # JSON of the config that produced its items
    "convention": pl.String,  # the speaker convention detected or chosen
    "ingested_at": pl.String,  # ISO 8601, UTC
    "parse_report": pl.String,  # JSON: the parser's report (markers, unpaired turns, suspicious items, PDF extraction)
}

# ---- stage columns ---------------------------------------------------------------------------
#
# What each stage adds to items.parquet, and the polars type of each column: declared here
# once, for the stages that write them (curation/dedup.py, curation/score.py, critic/stage.py)
# and every reader (the dashboard's queue, export). Human decisions are not stage columns:
# they live in the review database (curation.review).

DEDUP_COLUMNS: dict[str, pl.DataType] = {
    "dedup_cluster": pl.String,  # cluster id: the representative's item_id
    "dedup_representative": pl.String,  # the representative's item_id
    "dedup_representative_source": pl.String,  # and its source_id (item_ids can repeat across sources)
    "dedup_is_representative": pl.Boolean,
    "dedup_kind": pl.String,  # "unique" | "exact" | "near" | "contained"
    "dedup_jaccard": pl.Float64,  # true Jaccard of shingle sets with the representative; 1.0 for itself
    "dedup_containment": pl.Float64,  # share of its shingles found in the representative's; 1.0 for itself
    "dedup_cluster_size": pl.Int64,
    "dedup_reason": pl.String,  # why the representative was chosen
    "dedup_agent": pl.String,  # JSON: stage, version, config, LSH bands and rows
}

SCORE_COLUMNS: dict[str, pl.DataType] = {
    "concept_score": pl.Float64,  # 0 conversational ... 1 contemplative
    "concept_basis": pl.String,  # what was scored: "answer", "passage", "silence", "empty"
    "concept_agent": pl.String,  # JSON: model, exemplars, classifier
}

CRITIC_COLUMNS: dict[str, pl.DataType] = {
    "critic_score": pl.Float64,  # 0-10
    "critic_rationale": pl.String,
    "critic_flags": pl.List(pl.String),  # closure_reflex, prescriptive, ...
    "critic_status": pl.String,  # "scored" | "unscored"
    "critic_unscored_reason": pl.String,
    "critic_agent": pl.String,  # JSON: critic, model, rubric version
}

# Stage name -> its columns, in pipeline order.
STAGE_COLUMNS: dict[str, dict[str, pl.DataType]] = {
    "dedup": DEDUP_COLUMNS,
    "score": SCORE_COLUMNS,
    "critique": CRITIC_COLUMNS,
}

SUGGESTION_COLUMNS: dict[str, pl.DataType] = {name: dtype for columns in STAGE_COLUMNS.values() for name, dtype in columns.items()}

# The column holding each stage's agent (JSON), keyed as manifests name the stages.
AGENT_COLUMNS: dict[str, str] = {"dedup": "dedup_agent", "concept": "concept_agent", "critic": "critic_agent"}


def with_stage_columns(
    items: pl.DataFrame, columns: dict[str, pl.DataType] = SUGGESTION_COLUMNS, cast: bool = False
) -> pl.DataFrame:
    """`items` with every one of `columns` present: an absent one is added as typed nulls (its stage has not run).

    cast: also cast the present ones to their declared type (non-strict), for frames from elsewhere.
    """
    present = [pl.col(name).cast(dtype, strict=False) for name, dtype in columns.items() if cast and name in items.columns]
    absent = [pl.lit(None, dtype=dtype).alias(name) for name, dtype in columns.items() if name not in items.columns]
    return items.with_columns(present + absent) if present or absent else items


_QUOTES = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "—": "-", "–": "-"})
_NON_WORD = re.compile(r"[^\w]+")


def normalise(text: str) -> str:
    """Content as identity sees it: NFKC, case-folded, punctuation and spacing ignored."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).casefold()
    return _NON_WORD.sub(" ", text).strip()


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")  # unit separator: ("ab", "c") and ("a", "bc") differ
    return h.hexdigest()[:32]


def item_id(kind: str, question: str = "", answer: str = "", context: str = "", text: str = "") -> str:
    if kind == "pair":
        return _digest("pair", normalise(context), normalise(question), normalise(answer))
    return _digest(kind, normalise(text))


def content_hash(kind: str, question: str = "", answer: str = "", context: str = "", text: str = "") -> str:
    if kind == "pair":
        return _digest("pair", context, question, answer)
    return _digest(kind, text)


# Columns added after workspaces were first written, with the value an older table means by their absence.
ADDED_COLUMNS = {"page": None, "parse_warning": "", "parse_report": "{}"}


def with_added_columns(frame: pl.DataFrame, table_schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """An older table read back with the columns added since, filled with what their absence meant."""
    missing = [name for name in ADDED_COLUMNS if name in table_schema and name not in frame.columns]
    if not missing:
        return frame
    return frame.with_columns(pl.lit(ADDED_COLUMNS[name], dtype=table_schema[name]).alias(name) for name in missing)


def empty_items() -> pl.DataFrame:
    return pl.DataFrame(schema=ITEM_SCHEMA)


def empty_sources() -> pl.DataFrame:
    return pl.DataFrame(schema=SOURCE_SCHEMA)
