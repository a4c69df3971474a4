"""Which workspace items go into a dataset version, and why the others do not.

`select_items(workspace, ExportConfig(name=...), review)` reads one snapshot of the
workspace and the review state (curation.review) and returns a `Selection`: every
candidate item with the step that set it aside (if any), the selected items with their
content as exported, the step reports, and the manifest record of each selected item
with the version's identity digest. Nothing is written; `curation.export` writes it.

Selection (each item is set aside by the first step that stops it, and the card
and the manifest count it under that step and a reason):

1. kind: the item kinds this dataset is made of. `sft`: pairs. `pretrain`:
   passages, and the answers of pairs with `include_answers_in_pretrain`.
2. source: only `sources` (full sha256, a unique prefix of it, or an exact
   title), when given.
3. dedup: with `representatives_only` (the default) only each dedup cluster's
   representative; an item that dedup never saw is set aside too.
4. review: the latest human response (curation.responses) decides: `reject`
   sets the item aside; `accept` and `edit` take it, whatever its scores (a
   human decision outranks a machine score). Unreviewed items are set aside
   unless `include_unreviewed`; then they must reach `min_concept_score`
   (0-1) and, for pairs, `min_critic_score` (0-10), when those are given.
   Passages are never critiqued, so the critic threshold does not apply to them.
5. content: a silent answer (the book's "(No answer.)") has no words. For sft it
   is set aside unless `silence_text` is given, which then becomes the
   assistant's message (an empty assistant message is invalid for most
   trainers, and inventing words for silence would teach the model a guess);
   in pretraining text it is always left out. An item whose text is empty after
   an edit is set aside.

Edits: an `edit` response's `edited_question` / `edited_answer` replace the
pair's question / answer where they are not null; a passage's edited text is
its `edited_answer` (the store has one field for edited text besides the question). The manifest keeps each item's workspace `content_hash` and
its `exported_hash` (the same hash of the content as exported), so an edit is
visible and `diff` finds it.

Frames, none holding the items' text (a corpus may not fit in memory; `light_items` reads
each text's length and token count instead): `Selection.candidates` holds every workspace
item's `_step` / `_reason` and what the card plots. The selection is computed on every item
with the stage columns (curation.schema), its effective decision under export's own names
(`_decision`, `_review_reason`, `_reviewer`, `_reviewed_hash`, the hash the reviewer saw
when the wording moved since, `_edited_question`, `_edited_answer`, `_response_id`) and where
it is stored (`_part`, `_row`). `Selection.selected` adds `_silent`, `_exported_hash` and
`_tokens` of the content as exported; curation.export reads the content itself (`_question`,
`_answer`, `_text`) a source at a time. Columns starting with `_` are never item columns, so
they cannot collide with a stage's.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import polars as pl

from curation import schema
from curation.review import UNREVIEWED, ReviewState, changed_since_review, join_decisions
from curation.schema import AGENT_COLUMNS, SUGGESTION_COLUMNS, with_stage_columns
from curation.versions import HEX, VERSION_NAME, ExportError, identity_digest_sorted, version_id_of

if TYPE_CHECKING:
    from curation.generations import ItemPart
    from curation.workspace import Workspace

DATASET_KINDS: tuple[str, ...] = ("sft", "pretrain")
ITEM_KINDS: tuple[str, ...] = ("pair", "passage")

# Tokens as the card counts them: words and punctuation marks. Tokenizer-independent, so a
# version's numbers do not depend on which model trains on it; BPE tokenizers give somewhat more.
TOKEN_PATTERN = r"\w+|[^\w\s]"
TOKEN_METHOD = f"regex {TOKEN_PATTERN} (words and punctuation marks)"


# ---- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class ExportConfig:
    """What goes into a version, and in what form. Recorded, resolved, in its manifest and card."""

    name: str  # the version's name: letters, digits, '.', '_', '-'; ids are <name>-<12 hex>
    kind: str = "sft"  # "sft" (conversations) | "pretrain" (text)
    include_unreviewed: bool = False  # take items no one has reviewed (subject to the thresholds)
    min_concept_score: float | None = None  # unreviewed items: concept score (0-1) at least this
    min_critic_score: float | None = None  # unreviewed pairs: critic score (0-10) at least this
    sources: tuple[str, ...] = ()  # only these sources (sha256, unique prefix, or title); () = all
    item_kinds: tuple[str, ...] = ()  # () = every kind the dataset kind uses
    representatives_only: bool = True  # one item per dedup cluster
    include_answers_in_pretrain: bool = False  # pretrain: pairs' answers as text too
    multi_turn: bool = True  # sft: join consecutive selected pairs of a talk into one conversation
    silence_text: str | None = None  # sft: the assistant message for a silent answer; None = leave them out

    def __post_init__(self) -> None:
        for name in ("sources", "item_kinds"):  # lists from a CLI become tuples, so the config stays hashable
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not VERSION_NAME.match(self.name or ""):
            raise ExportError(
                f"version name {self.name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        if self.kind not in DATASET_KINDS:
            raise ExportError(f"dataset kind must be one of {', '.join(DATASET_KINDS)}, not {self.kind!r}")
        unknown = [k for k in self.item_kinds if k not in ITEM_KINDS]
        if unknown:
            raise ExportError(f"item kinds must be among {', '.join(ITEM_KINDS)}, not {', '.join(unknown)}")
        if self.kind == "sft" and "passage" in self.item_kinds:
            raise ExportError("sft datasets are made of pairs; passages go into a pretrain dataset")
        if self.kind == "pretrain" and "pair" in self.item_kinds and not self.include_answers_in_pretrain:
            raise ExportError("pairs give pretraining text only as answers: add include_answers_in_pretrain")
        if self.min_concept_score is not None and not 0.0 <= self.min_concept_score <= 1.0:
            raise ExportError(f"min_concept_score is a probability in [0, 1], not {self.min_concept_score}")
        if self.min_critic_score is not None and not 0.0 <= self.min_critic_score <= 10.0:
            raise ExportError(f"min_critic_score is on the critic's 0-10 scale, not {self.min_critic_score}")
        if self.silence_text is not None and not self.silence_text.strip():
            raise ExportError("silence_text must have visible characters (an empty assistant message breaks trainers)")

    def effective_item_kinds(self) -> tuple[str, ...]:
        if self.item_kinds:
            return tuple(sorted(set(self.item_kinds)))
        if self.kind == "sft":
            return ("pair",)
        return ("pair", "passage") if self.include_answers_in_pretrain else ("passage",)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def resolved(self, sources: pl.DataFrame) -> ExportConfig:
        """The same selection, spelled canonically: full source ids, sorted; item kinds spelled out."""
        return replace(self, sources=resolve_sources(self.sources, sources), item_kinds=self.effective_item_kinds())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# The version `satsang run` exports of its sample: nobody has reviewed it, so unreviewed items are taken.
SAMPLE_CONFIG = ExportConfig(name="sample", kind="sft", include_unreviewed=True)



def resolve_sources(wanted: Sequence[str], sources: pl.DataFrame) -> tuple[str, ...]:
    """Full source ids for each of `wanted` (a sha256, a unique prefix of one, or an exact title)."""
    ids = sources["source_id"].to_list()
    titles = sources["title"].to_list()
    resolved: set[str] = set()
    for want in wanted:
        matches = {sid for sid, title in zip(ids, titles) if title == want}
        if not matches and len(want) >= 4 and HEX.match(want.lower()):
            matches = {sid for sid in ids if sid.startswith(want.lower())}
        if not matches:
            raise ExportError(f"source {want!r}: no ingested source has that id, id prefix or title")
        if len(matches) > 1:
            raise ExportError(f"source {want!r} matches {len(matches)} sources; give more of its sha256")
        resolved |= matches
    return tuple(sorted(resolved))


# ---- the selection --------------------------------------------------------------------------


@dataclass(frozen=True)
class StepReport:
    """One curation step: its configuration and the items it set aside, by reason."""

    name: str
    description: str
    config: dict[str, Any]
    set_aside: dict[str, int]  # reason -> items

    @property
    def n_set_aside(self) -> int:
        return sum(self.set_aside.values())


@dataclass
class Selection:
    """Everything computed from the workspace before anything is written (the frames: see the module docstring)."""

    config: ExportConfig  # resolved
    sources: pl.DataFrame
    candidates: pl.DataFrame  # every workspace item, less its text, with its decision and _step/_reason
    selected: pl.DataFrame  # the items in the version, in dataset order, less their text
    steps: tuple[StepReport, ...]
    review: ReviewState  # as read for this selection
    records: pl.DataFrame  # manifest item records (RECORD_FIELDS), dataset order
    agents: dict[str, list[Any]]
    digest: str  # full sha256 hex of the identity payload
    parts: list[ItemPart]  # where the selected items' text is read from (`content_batches`)

    @property
    def version_id(self) -> str:
        return version_id_of(self.config.name, self.digest)


def select_items(workspace: Workspace, config: ExportConfig, review: ReviewState) -> Selection:
    """The selection `config` makes from one generation of `workspace`; ExportError when it is empty.

    The items are read without their text (`light_items`: lengths and token counts stand in),
    so a selection over a large corpus holds a few hundred bytes per item; the text is read a
    source at a time when the version is written (`content_batches`).
    """
    _, parts, sources = workspace.tables()  # one generation, so items and sources agree
    config = config.resolved(sources)
    candidates, steps = apply_selection(light_items(parts), review.decisions, config, sources)
    chosen = candidates.filter(pl.col("_step").is_null())
    candidates = candidates.select(CANDIDATE_COLUMNS)  # what the card and the messages still read of them
    selected = final_content(chosen, config, edited_texts(parts, chosen))
    del chosen
    if selected.height == 0:
        raise ExportError(_empty_message(config, candidates, steps))
    records, agents = item_records(selected, config)
    selected = selected.drop([*AGENT_COLUMNS.values(), *_LIGHT_EXTRA])  # in the records now; or counted
    digest = identity_digest_sorted(config.to_dict(), records_in_identity_order(records), agents)
    return Selection(config, sources, candidates, selected, steps, review, records, agents, digest, parts)


# What a Selection keeps of every candidate: for the card's counts and plots and the empty-selection message.
CANDIDATE_COLUMNS = ("item_id", "source_id", "_step", "_reason", "concept_score", "concept_basis", "critic_score")
# The item columns holding text. The selection reads their lengths and token counts instead
# (SELECTION_COLUMNS); export reads the text of the selected items a source at a time.
TEXT_COLUMNS = ("question", "answer", "text", "context")
# What the selection, the manifest records and the card read of an item besides its text.
SELECTION_COLUMNS = (
    "item_id", "source_id", "kind", "section", "section_date", "conversation_id", "turn_index", "start", "end",
    "is_silence", "content_hash", "dedup_is_representative", "dedup_kind", "concept_score", "concept_basis",
    "critic_score", "critic_unscored_reason", *AGENT_COLUMNS.values(),
)


def light_items(parts: Sequence[ItemPart]) -> pl.DataFrame:
    """Every item's SELECTION_COLUMNS, where it is (`_part`, `_row`), and of each text column its stripped length
    (`_<column>_chars`, null where the text is) and token count (`_<column>_tokens`), read a part at a time
    (one query over every part would read several parts' text at once)."""
    scans = []
    for index, part in enumerate(parts):
        scan = pl.scan_parquet(part.path)
        present = set(scan.collect_schema().names())
        measured = [expr for name in TEXT_COLUMNS if name in present for expr in (
            pl.col(name).str.strip_chars().str.len_chars().cast(pl.Int64).alias(f"_{name}_chars"),
            pl.col(name).str.count_matches(TOKEN_PATTERN).cast(pl.Int64).alias(f"_{name}_tokens"),
        )]
        # Agents repeat one JSON per stage run: categorical, so a million rows hold a few strings.
        kept = [pl.col(name).cast(pl.Categorical) if name in AGENT_COLUMNS.values() else pl.col(name)
                for name in SELECTION_COLUMNS if name in present]
        scans.append(scan.select(*kept, *measured, pl.lit(index, dtype=pl.Int64).alias("_part"),
                                 pl.int_range(pl.len(), dtype=pl.Int64).alias("_row")))
    if not scans:
        frame = schema.empty_items().select([n for n in SELECTION_COLUMNS if n in schema.ITEM_SCHEMA])
        return frame.with_columns(pl.lit(None, dtype=pl.Int64).alias(name) for name in _LIGHT_EXTRA)
    frame = pl.concat([scan.collect() for scan in scans], how="diagonal_relaxed")
    missing = [pl.lit(None, dtype=pl.Int64).alias(name) for name in _LIGHT_EXTRA if name not in frame.columns]
    return schema.with_added_columns(frame.with_columns(missing), schema.ITEM_SCHEMA) if missing else frame


_LIGHT_EXTRA = tuple(f"_{name}_{what}" for name in TEXT_COLUMNS for what in ("chars", "tokens"))
_LIGHT_ORDER = (*_LIGHT_EXTRA, "_part", "_row")  # light_items' own columns, which the selection keeps


def edited_texts(parts: Sequence[ItemPart], chosen: pl.DataFrame) -> pl.DataFrame:
    """The stored text (TEXT_COLUMNS) of the chosen items a reviewer edited: their exported hash needs it."""
    edited = chosen.filter(pl.col("_decision") == "edit").select("_part", "_row")
    return read_rows(parts, edited, TEXT_COLUMNS)


def read_rows(parts: Sequence[ItemPart], wanted: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """`columns` of the rows `wanted` names (`_part`, `_row`), with those two, reading only the parts they are in."""
    frames = []
    for index in wanted["_part"].unique().sort().to_list():
        rows = wanted.filter(pl.col("_part") == index)["_row"]
        present = pl.read_parquet_schema(parts[index].path)
        frame = parts[index].read([c for c in columns if c in present])  # the text columns alone, not the part
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in columns if c not in frame.columns)
        frames.append(frame.select(columns)[rows].with_columns(
            pl.lit(index, dtype=pl.Int64).alias("_part"), rows.alias("_row").cast(pl.Int64)))
    empty = pl.DataFrame(schema={**{c: pl.String for c in columns}, "_part": pl.Int64, "_row": pl.Int64})
    return pl.concat([empty, *frames], how="vertical_relaxed")


# join_decisions' columns under the names the selection reads (see the module docstring).
_DECISION_NAMES: dict[str, str] = {
    "decision": "_decision",
    "decision_reason": "_review_reason",
    "decided_by": "_reviewer",
    "edited_question": "_edited_question",
    "edited_answer": "_edited_answer",
}


def apply_selection(
    items: pl.DataFrame, state: pl.DataFrame, config: ExportConfig, sources: pl.DataFrame
) -> tuple[pl.DataFrame, tuple[StepReport, ...]]:
    """Every item with `_step` / `_reason`: the first step that set it aside (null when selected).

    state: the effective decisions (curation.review: ReviewState.decisions).
    """
    # Only what the rules, the records and the rows read: a stage's other columns (added as nulls where it has not
    # run) and the decision's other columns would be copied with every step, a million items at a time.
    kept = [c for c in (*SELECTION_COLUMNS, *_LIGHT_ORDER) if c in items.columns or c in SUGGESTION_COLUMNS]
    base = with_stage_columns(items).select(kept)
    frame = join_decisions(base, state).select(
        *kept,
        *[pl.col(name).alias(alias) for name, alias in _DECISION_NAMES.items()],
        # The manifest records ids as strings and shows the wording the reviewer saw only when it moved.
        pl.col("decision_response_id").cast(pl.String).alias("_response_id"),
        pl.when(changed_since_review()).then(pl.col("decided_content_hash")).alias("_reviewed_hash"),
    )

    is_pair = pl.col("kind") == "pair"
    silent = is_pair & pl.col("is_silence") & pl.col("_edited_answer").is_null()
    unreviewed = pl.col("_decision").is_null()
    kinds = config.effective_item_kinds()
    rules: list[tuple[str, pl.Expr, pl.Expr]] = [
        ("kind", ~pl.col("kind").is_in(kinds), pl.format(f"{{}} items are not part of this {config.kind} dataset", "kind")),
    ]
    if config.sources:
        rules.append(("source", ~pl.col("source_id").is_in(config.sources), pl.lit("source not selected")))
    if config.representatives_only:
        rules.append(
            (
                "dedup",
                pl.col("dedup_is_representative").is_null() | ~pl.col("dedup_is_representative"),
                pl.when(pl.col("dedup_is_representative").is_null())
                .then(pl.lit("not deduplicated (run dedup)"))
                .otherwise(pl.format("{} duplicate of a kept item", pl.col("dedup_kind").fill_null("a"))),
            )
        )
    rules.append(
        ("review", pl.col("_decision") == "reject", pl.format("rejected: {}", pl.col("_review_reason").fill_null("").replace("", "no reason given")))
    )
    if not config.include_unreviewed:
        rules.append(("review", unreviewed, pl.lit("unreviewed (include_unreviewed is off)")))
    else:
        if config.min_concept_score is not None:
            rules.append(("score", unreviewed & pl.col("concept_score").is_null(), pl.lit("unreviewed and without a concept score")))
            rules.append(
                ("score", unreviewed & (pl.col("concept_score") < config.min_concept_score), pl.lit(f"unreviewed, concept score below {config.min_concept_score:g}"))
            )
        if config.min_critic_score is not None:
            rules.append(
                (
                    "score",
                    unreviewed & is_pair & pl.col("critic_score").is_null(),
                    pl.format("unreviewed and without a critic score ({})", pl.col("critic_unscored_reason").fill_null("").replace("", "not critiqued")),
                )
            )
            rules.append(
                ("score", unreviewed & is_pair & (pl.col("critic_score") < config.min_critic_score), pl.lit(f"unreviewed, critic score below {config.min_critic_score:g}"))
            )
    if config.kind == "sft" and config.silence_text is None:
        rules.append(("content", silent, pl.lit("silent answer (no silence_text given)")))
    if config.kind == "pretrain":
        rules.append(("content", silent, pl.lit("silent answer: no words to pretrain on")))
    final_text = pl.when(is_pair).then(
        final_chars("_edited_question", "question").clip(upper_bound=1)
        * final_chars("_edited_answer", "answer").clip(upper_bound=1)
    ).otherwise(final_chars("_edited_answer", "text"))
    rules.append(("content", ~silent & (final_text == 0), pl.lit("empty text after edit")))

    step = pl.lit(None, dtype=pl.String)
    reason = pl.lit(None, dtype=pl.String)
    for name, condition, why in reversed(rules):  # the first rule that matches wins
        step = pl.when(condition.fill_null(False)).then(pl.lit(name)).otherwise(step)
        reason = pl.when(condition.fill_null(False)).then(why).otherwise(reason)
    frame = frame.with_columns(step.alias("_step"), reason.alias("_reason"))

    counts: dict[str, Counter[str]] = {}
    for name, why, n in frame.filter(pl.col("_step").is_not_null()).group_by("_step", "_reason").len().iter_rows():
        counts.setdefault(name, Counter())[why] = n
    steps = _step_reports(frame, config, counts, sources)
    return frame, steps


def _step_reports(
    frame: pl.DataFrame, config: ExportConfig, counts: dict[str, Counter[str]], sources: pl.DataFrame
) -> tuple[StepReport, ...]:
    def set_aside(name: str) -> dict[str, int]:
        return dict(sorted(counts.get(name, Counter()).items(), key=lambda kv: (-kv[1], kv[0])))

    def agents(column: str) -> list[Any]:
        return [json.loads(a) for a in sorted(frame[column].drop_nulls().unique().to_list())]

    titles = dict(zip(sources["source_id"].to_list(), sources["title"].to_list()))
    article = "an sft" if config.kind == "sft" else "a pretrain"
    return (
        StepReport(
            "kind",
            f"keep the item kinds {article} dataset is made of",
            {
                "kind": config.kind,
                "item_kinds": list(config.effective_item_kinds()),
                "include_answers_in_pretrain": config.include_answers_in_pretrain,
            },
            set_aside("kind"),
        ),
        StepReport(
            "source",
            "keep the chosen sources (all when none are named)",
            {"sources": [f"{titles.get(s, '?')} ({s[:12]})" for s in config.sources] or "all"},
            set_aside("source"),
        ),
        StepReport(
            "dedup",
            "keep one representative per cluster of exact and near duplicates",
            {"representatives_only": config.representatives_only, "dedup_agents": agents("dedup_agent")},
            set_aside("dedup"),
        ),
        StepReport(
            "review",
            "apply the latest human response: reject sets aside, accept and edit keep",
            {"include_unreviewed": config.include_unreviewed},
            set_aside("review"),
        ),
        StepReport(
            "score",
            "thresholds for unreviewed items (reviewed items are kept whatever their scores)",
            {
                "min_concept_score": config.min_concept_score,
                "min_critic_score": config.min_critic_score,
                "concept_agents": agents("concept_agent"),
                "critic_agents": agents("critic_agent"),
            },
            set_aside("score"),
        ),
        StepReport(
            "content",
            "silent answers and texts left empty by an edit",
            {"silence_text": config.silence_text},
            set_aside("content"),
        ),
    )


def final_chars(edited: str, stored: str) -> pl.Expr:
    """The stripped length of an item's text as exported: the edit's where there is one, else the stored text's."""
    return pl.coalesce(pl.col(edited).str.strip_chars().str.len_chars().cast(pl.Int64), pl.col(f"_{stored}_chars"))


def final_tokens(edited: str, stored: str) -> pl.Expr:
    return pl.coalesce(pl.col(edited).str.count_matches(TOKEN_PATTERN).cast(pl.Int64), pl.col(f"_{stored}_tokens"))


# Dataset order: by source, then where in it. Never how the items happen to be stored.
DATASET_ORDER = ("source_id", "start", "end", "item_id")


def final_content(chosen: pl.DataFrame, config: ExportConfig, edited: pl.DataFrame) -> pl.DataFrame:
    """The chosen items in dataset order with `_silent`, `_exported_hash` and `_tokens` of the content as exported.

    edited: the stored text of the edited items (`edited_texts`): only their hash is recomputed,
    the rest export their content as it is. Tokens add up: the sft content `question + "\n" + answer`
    has the question's tokens and the answer's (no token spans a newline).
    """
    is_pair = pl.col("kind") == "pair"
    frame = chosen.with_columns(
        (is_pair & pl.col("is_silence") & pl.col("_edited_answer").is_null()).alias("_silent"),
    ).sort(*DATASET_ORDER)
    recomputed: dict[tuple[int, int], str] = {}
    if edited.height:
        content = edited.join(frame.select("_part", "_row", "kind", "_edited_question", "_edited_answer"),
                              on=["_part", "_row"], how="inner")
        for row in content.iter_rows(named=True):
            if row["kind"] == "pair":
                question = row["_edited_question"] if row["_edited_question"] is not None else row["question"]
                answer = row["_edited_answer"] if row["_edited_answer"] is not None else row["answer"]
                hashed = schema.content_hash("pair", question=question, answer=answer, context=row["context"])
            else:
                text = row["_edited_answer"] if row["_edited_answer"] is not None else row["text"]
                hashed = schema.content_hash(row["kind"], text=text)
            recomputed[(row["_part"], row["_row"])] = hashed
    exported = pl.DataFrame(
        {"_part": [k[0] for k in recomputed], "_row": [k[1] for k in recomputed], "_recomputed": list(recomputed.values())},
        schema={"_part": pl.Int64, "_row": pl.Int64, "_recomputed": pl.String},
    )
    tokens = (
        pl.when(is_pair & (pl.lit(config.kind) == "sft")).then(final_tokens("_edited_question", "question")
                                                               + final_tokens("_edited_answer", "answer"))
        .when(is_pair).then(final_tokens("_edited_answer", "answer"))
        .otherwise(final_tokens("_edited_answer", "text"))
    )
    if exported.height:  # (a join copies every column: only when some hash moved)
        frame = frame.join(exported, on=["_part", "_row"], how="left", maintain_order="left")
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("_recomputed"))
    return frame.with_columns(pl.coalesce("_recomputed", "content_hash").alias("_exported_hash"),
                              tokens.alias("_tokens")).drop("_recomputed")


def _empty_message(config: ExportConfig, candidates: pl.DataFrame, steps: tuple[StepReport, ...]) -> str:
    if candidates.height == 0:
        return "nothing to export: the workspace has no items (ingest a book first)"
    reasons = Counter()
    for step in steps:
        for why, n in step.set_aside.items():
            reasons[why] += n
    top = "; ".join(f"{n} {why}" for why, n in reasons.most_common(4))
    hint = ""
    if not config.include_unreviewed and any("unreviewed" in why for why in reasons):
        hint = " (review items first, or pass include_unreviewed / --include-unreviewed)"
    return f"nothing to export: no item of {candidates.height} passes the selection for {config.name!r}: {top}{hint}"


def _agent_index(values: pl.Series) -> tuple[pl.Series, list[Any]]:
    """Each row's index into the distinct agents (sorted JSON), and those agents.

    Found on the distinct values, then joined in their own type (light_items' categoricals): casting every
    row to text would write each row's JSON out again, hundreds of bytes a row.
    """
    distinct = sorted(values.drop_nulls().unique().cast(pl.String).to_list())
    lookup = pl.DataFrame({"agent": pl.Series(distinct, dtype=pl.String).cast(values.dtype),
                           "index": pl.Series(range(len(distinct)), dtype=pl.Int64)})
    index = pl.DataFrame({"agent": values}).join(lookup, on="agent", how="left", maintain_order="left")["index"]
    return index, [json.loads(v) for v in distinct]


# A manifest record's fields, in the order each record is written.
RECORD_FIELDS = (
    "item_id", "source_id", "kind", "section", "content_hash", "exported_hash", "decision", "reviewer", "reason",
    "response_id", "reviewed_hash", "silent", "dedup_kind", "concept_score", "critic_score", "agents",
)


def item_records(selected: pl.DataFrame, config: ExportConfig) -> tuple[pl.DataFrame, dict[str, list[Any]]]:
    """One manifest record per item (dataset order) as a frame of RECORD_FIELDS, and the distinct agents they
    refer to by index (`agents`: a struct of one index per stage)."""
    agents: dict[str, list[Any]] = {}
    indices: dict[str, pl.Series] = {}
    for stage, column in AGENT_COLUMNS.items():
        indices[stage], agents[stage] = _agent_index(selected[column])
    records = selected.select(
        "item_id", "source_id", "kind", "section", "content_hash",
        pl.col("_exported_hash").alias("exported_hash"),
        pl.col("_decision").fill_null(UNREVIEWED).alias("decision"),
        pl.col("_reviewer").alias("reviewer"),
        pl.col("_review_reason").alias("reason"),
        pl.col("_response_id").alias("response_id"),
        # The hash of the content the reviewer saw, when it is not the content now (the wording moved).
        pl.when(pl.col("_reviewed_hash") != pl.col("content_hash")).then(pl.col("_reviewed_hash")).alias("reviewed_hash"),
        pl.col("_silent").fill_null(False).alias("silent"),
        "dedup_kind", "concept_score", "critic_score",
        pl.struct(**{stage: pl.lit(index) for stage, index in indices.items()}).alias("agents"),
    )
    return records, agents


def records_in_identity_order(records: pl.DataFrame, batch: int = 10_000) -> Iterator[dict[str, Any]]:
    """The records as the identity digest takes them: by (item_id, source_id), without their place in the dataset."""
    ordered = records.select(RECORD_FIELDS).sort("item_id", "source_id")
    for start in range(0, ordered.height, batch):
        yield from ordered.slice(start, batch).to_dicts()
