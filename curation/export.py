"""Export: immutable, content-addressed dataset versions made from the items of a workspace.

Trainers consume versions, never the live workspace. `export_version(workspace,
ExportConfig(name=...))` selects items, builds a Hugging Face dataset from them
and writes it, with a manifest, checksums and a data card, as one directory
under `<workspace>/versions/<version_id>/`.

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

Dataset kinds, from the same items:

- `sft`: one row per conversation, `messages` = [{"role": "user"|"assistant",
  "content"}...]. With `multi_turn` consecutive pairs of one talk (same
  conversation_id, turn_index + 1) join into one conversation, but only while
  every pair of the run is selected: a pair set aside ends the run. The
  narrative context before a question is not part of the messages (it is not
  the questioner's words); it is kept per turn in the `contexts` column. A
  seed-compatible copy is written as `seed.jsonl`: {"id", "messages": [{"role":
  "human"|"assistant", "content"}]}.
- `pretrain`: one row per item, `text` = the passage (or the answer).

Version layout (`versions/<name>-<12 hex>/`, files 0444, directories 0555):

    README.md                   the data card (Hugging Face YAML header; configs -> data/)
    data/train-NNNNN-of-NNNNN.parquet   Parquet shards: datasets.load_dataset(<version dir>)
    dataset/                    Dataset.save_to_disk: datasets.load_from_disk(<version dir>/dataset)
    seed.jsonl                  sft only
    manifest.json               config, sources, steps, agents, every item (one per line)
    score_distributions.png, items_per_source.png   the card's plots
    checksums.sha256            sha256 of every other file (`sha256sum -c` reads it); its last
                                line, a comment, is the sha256 of the lines above it

Version id: `<name>-` + the first 12 hex of the sha256 of the resolved config,
the export format, the satsang version and every item's manifest record (item
id, source, content hash, exported hash, decision, reviewer, scores, agents),
sorted. The same inputs give the same id, and exporting them again is a no-op
that says so (checked before anything is written). What the card says about
the rest of the workspace (items set aside, review agreement) is as of the
first export of that id.

Bytes: two exports of unchanged inputs are byte-identical. So no wall clock is
written: `created_at` is the time of the newest input (the latest ingest or
review response) unless the caller passes one, and the manifest says so. The
parent (the latest earlier version of the same name) depends on history, not on
the inputs, so it is recorded but is not part of the id. Parquet bytes depend
on the pyarrow version, which the manifest records.

Atomicity: a version is written into `versions/.tmp-<random>/`, every file and
directory fsynced, then renamed into place in one step and made read-only. A
killed export leaves only a `.tmp-*` directory, which `list_versions` never
shows and the next export sweeps (exports hold `versions/.lock`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shutil
import stat
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from curation import schema
from curation.errors import CurationError
from curation.files import TMP_PREFIX, exclusive_lock, fsync, fsync_tree, iso_utc, sha256_file
from curation.redaction import redact_url
from curation.workspace import pause_if_testing

if TYPE_CHECKING:
    from rich.console import RenderableType

    from curation.workspace import Workspace

EXPORT_FORMAT = 1
VERSIONS_DIR = "versions"
LOCK_NAME = ".lock"
MANIFEST_NAME = "manifest.json"
CHECKSUMS_NAME = "checksums.sha256"
CARD_NAME = "README.md"
PARQUET_DIR = "data"
DATASET_DIR = "dataset"
SEED_NAME = "seed.jsonl"
SCORE_PLOT = "score_distributions.png"
SOURCE_PLOT = "items_per_source.png"
SELF_DIGEST_PREFIX = "# sha256 of the lines above: "

DATASET_KINDS: tuple[str, ...] = ("sft", "pretrain")
ITEM_KINDS: tuple[str, ...] = ("pair", "passage")
DECISIONS: tuple[str, ...] = ("accept", "reject", "edit")
UNREVIEWED = "unreviewed"

# Tokens as the card counts them: words and punctuation marks. Tokenizer-independent, so a
# version's numbers do not depend on which model trains on it; BPE tokenizers give somewhat more.
TOKEN_PATTERN = r"\w+|[^\w\s]"
TOKEN_METHOD = f"regex {TOKEN_PATTERN} (words and punctuation marks)"

PARQUET_SHARD_BYTES = 256 * 1024 * 1024
LOCK_TIMEOUT_S = 60.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]+$")


# Suggestion columns later stages add; absent ones read as null.
_OPTIONAL_COLUMNS: dict[str, pl.DataType] = {
    "dedup_cluster": pl.String,
    "dedup_is_representative": pl.Boolean,
    "dedup_kind": pl.String,
    "dedup_agent": pl.String,
    "concept_score": pl.Float64,
    "concept_basis": pl.String,
    "concept_agent": pl.String,
    "critic_score": pl.Float64,
    "critic_status": pl.String,
    "critic_unscored_reason": pl.String,
    "critic_agent": pl.String,
}
_AGENT_COLUMNS = {"dedup": "dedup_agent", "concept": "concept_agent", "critic": "critic_agent"}


class ExportError(CurationError):
    """An export, or a question about versions, cannot be answered as asked; the message says why."""


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
        if not _NAME.match(self.name or ""):
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
        if not matches and len(want) >= 4 and _HEX.match(want.lower()):
            matches = {sid for sid in ids if sid.startswith(want.lower())}
        if not matches:
            raise ExportError(f"source {want!r}: no ingested source has that id, id prefix or title")
        if len(matches) > 1:
            raise ExportError(f"source {want!r} matches {len(matches)} sources; give more of its sha256")
        resolved |= matches
    return tuple(sorted(resolved))


# ---- results --------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class ExportResult:
    version_id: str
    path: Path
    status: str  # "created" | "already exists"
    card_path: Path
    n_items: int
    n_rows: int  # conversations (sft) or texts (pretrain)
    n_tokens: int
    n_candidates: int  # workspace items considered
    steps: tuple[StepReport, ...]
    parent: str | None
    seconds: float

    @property
    def created(self) -> bool:
        return self.status == "created"

    def set_aside(self) -> dict[str, dict[str, int]]:
        return {step.name: dict(step.set_aside) for step in self.steps if step.set_aside}


@dataclass(frozen=True)
class VersionInfo:
    version_id: str
    name: str
    kind: str
    created_at: str
    parent: str | None
    n_items: int
    n_rows: int
    n_tokens: int
    n_sources: int
    path: Path


@dataclass(frozen=True)
class ItemChange:
    """An item in a diff, with its exported text before and after (None where it is absent)."""

    item_id: str
    source_id: str
    section: str
    before: str | None
    after: str | None


@dataclass(frozen=True)
class VersionDiff:
    old: str
    new: str
    added: tuple[ItemChange, ...]
    removed: tuple[ItemChange, ...]
    edited: tuple[ItemChange, ...]
    n_unchanged: int
    # per source: source_id, title, added, removed, edited, unchanged
    per_source: tuple[dict[str, Any], ...]
    config_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.edited)


# ---- the export -----------------------------------------------------------------------------


@dataclass
class _Selection:
    """Everything computed from the workspace before anything is written."""

    config: ExportConfig  # resolved
    sources: pl.DataFrame
    candidates: pl.DataFrame  # every workspace item, with review columns and _step/_reason
    selected: pl.DataFrame  # the items in the version, in dataset order, with final content
    steps: tuple[StepReport, ...]
    state: pl.DataFrame
    responses: pl.DataFrame
    review_store: str  # what the review store was: "curation.responses (...)" or why there was none
    records: list[dict[str, Any]]  # manifest item records, dataset order
    agents: dict[str, list[Any]]
    digest: str  # full sha256 hex of the identity payload

    @property
    def version_id(self) -> str:
        return f"{self.config.name}-{self.digest[:12]}"


def export_version(
    workspace: Workspace,
    config: ExportConfig,
    db_url: str | None = None,
    created_at: str | None = None,
) -> ExportResult:
    """Select, build and write a dataset version; a no-op (status "already exists") when its id exists.

    Raises ExportError when the selection is empty, naming what set the items aside.
    """
    started = time.perf_counter()
    selection = _select_for_export(workspace, config, db_url)
    versions = workspace.root / VERSIONS_DIR
    versions.mkdir(exist_ok=True)
    final = versions / selection.version_id
    n_tokens = int(selection.selected["_tokens"].sum()) if selection.selected.height else 0
    with _versions_lock(versions):
        _sweep(versions)
        if final.is_dir() and (final / CHECKSUMS_NAME).is_file():
            header = _read_manifest_header(final)
            return ExportResult(
                selection.version_id,
                final,
                "already exists",
                final / CARD_NAME,
                selection.selected.height,
                int(header.get("counts", {}).get("rows", 0)),
                n_tokens,
                selection.candidates.height,
                selection.steps,
                header.get("parent"),
                time.perf_counter() - started,
            )
        if final.exists():  # a directory that is not a finished version: killed between rename and chmod? never by us
            raise ExportError(f"{final}: exists but has no {CHECKSUMS_NAME}; move it away and export again")
        parent = _head_of(versions, config.name)
        when = _iso_utc(created_at) if created_at is not None else _newest_input(selection)
        staging = versions / f"{TMP_PREFIX}{secrets.token_hex(6)}"
        staging.mkdir()
        try:
            n_rows = _write_version(staging, selection, parent, when)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # a kill cannot get here; the next export sweeps that
            raise
        pause_if_testing("export-before-rename")
        os.rename(staging, final)
        fsync(versions)
        pause_if_testing("export-after-rename")
        _make_read_only(final)
    return ExportResult(
        selection.version_id,
        final,
        "created",
        final / CARD_NAME,
        selection.selected.height,
        n_rows,
        n_tokens,
        selection.candidates.height,
        selection.steps,
        parent,
        time.perf_counter() - started,
    )


def preview_selection(workspace: Workspace, config: ExportConfig, db_url: str | None = None) -> tuple[str, int, tuple[StepReport, ...]]:
    """(version id, items, steps) that `export_version` would produce, writing nothing."""
    selection = _select_for_export(workspace, config, db_url)
    return selection.version_id, selection.selected.height, selection.steps


def _select_for_export(workspace: Workspace, config: ExportConfig, db_url: str | None) -> _Selection:
    # One snapshot, so items and sources come from the same generation.
    _, items, sources = workspace.snapshot()
    config = config.resolved(sources)
    state, responses, store = _review_frames(workspace, db_url)
    candidates, steps = _apply_selection(items, state, config, sources)
    selected = _final_content(candidates.filter(pl.col("_step").is_null()), config)
    if selected.height == 0:
        raise ExportError(_empty_message(config, candidates, steps))
    records, agents = _item_records(selected, config)
    digest = _identity_digest(config, records, agents)
    return _Selection(config, sources, candidates, selected, steps, state, responses, store, records, agents, digest)


def _review_frames(workspace: Workspace, db_url: str | None) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """The review store's state, its live responses (no undo, none undone), and what the store is."""
    from curation.responses import DB_URL_ENV, SQLITE_FILE, STATE_SCHEMA, ResponseStore

    if db_url is None and not os.environ.get(DB_URL_ENV) and not (workspace.root / SQLITE_FILE).exists():
        empty = _normalise_review(pl.DataFrame(schema=STATE_SCHEMA))
        return empty, empty, "none yet (no review database in the workspace)"  # an export creates no database
    with ResponseStore.open(workspace.root, url=db_url) as store:
        state, responses = store.state(), store.responses()
        backend, location = store.backend, str(store.location)
    undone = responses["undoes"].drop_nulls().to_list()
    responses = responses.rename({"id": "response_id"}).filter(
        (pl.col("decision") != "undo") & ~pl.col("response_id").is_in(undone)
    )
    # Not the path: a card must not change with where the workspace happens to be.
    inside = backend == "sqlite" and Path(location).resolve() == (workspace.root / SQLITE_FILE).resolve()
    where = "SQLite reviews.db in the workspace" if inside else f"{backend} {redact_url(location)}".strip()
    return _normalise_review(state), _normalise_review(responses), where


def _normalise_review(frame: pl.DataFrame) -> pl.DataFrame:
    """The review state's columns, as strings (timestamps as ISO 8601 UTC)."""
    from curation.responses import STATE_SCHEMA

    columns = []
    for name in STATE_SCHEMA:
        if name == "created_at":
            columns.append(pl.col(name).cast(pl.String).map_elements(_iso_utc, return_dtype=pl.String))
        else:
            columns.append(pl.col(name).cast(pl.String))
    return frame.select(columns)


def _with_optional_columns(items: pl.DataFrame) -> pl.DataFrame:
    missing = [pl.lit(None, dtype=dtype).alias(name) for name, dtype in _OPTIONAL_COLUMNS.items() if name not in items.columns]
    return items.with_columns(missing) if missing else items


def _apply_selection(
    items: pl.DataFrame, state: pl.DataFrame, config: ExportConfig, sources: pl.DataFrame
) -> tuple[pl.DataFrame, tuple[StepReport, ...]]:
    """Every item with `_step` / `_reason`: the first step that set it aside (null when selected)."""
    review = state.select(
        "item_id",
        pl.col("decision").alias("_decision"),
        pl.col("reason").alias("_review_reason"),
        pl.col("reviewer").alias("_reviewer"),
        pl.col("content_hash").alias("_reviewed_hash"),
        pl.col("edited_question").alias("_edited_question"),
        pl.col("edited_answer").alias("_edited_answer"),
        pl.col("response_id").alias("_response_id"),
        pl.col("created_at").alias("_reviewed_at"),
    ).unique("item_id", keep="last", maintain_order=True)
    base = _with_optional_columns(items).drop([c for c in items.columns if c.startswith("_")])
    frame = base.join(review, on="item_id", how="left", maintain_order="left")

    is_pair = pl.col("kind") == "pair"
    final_answer = pl.coalesce("_edited_answer", "answer")
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
        pl.coalesce("_edited_question", "question").str.strip_chars().str.len_chars().clip(upper_bound=1)
        * final_answer.str.strip_chars().str.len_chars().clip(upper_bound=1)
    ).otherwise(pl.coalesce("_edited_answer", "text").str.strip_chars().str.len_chars())
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


def _final_content(selected: pl.DataFrame, config: ExportConfig) -> pl.DataFrame:
    """The selected items in dataset order with the content as exported (edits applied) and its hash."""
    is_pair = pl.col("kind") == "pair"
    frame = selected.with_columns(
        pl.when(is_pair).then(pl.coalesce("_edited_question", "question")).otherwise(pl.lit("")).alias("_question"),
        pl.when(is_pair).then(pl.coalesce("_edited_answer", "answer")).otherwise(pl.lit("")).alias("_answer"),
        pl.when(is_pair).then(pl.lit("")).otherwise(pl.coalesce("_edited_answer", "text")).alias("_text"),
        (is_pair & pl.col("is_silence") & pl.col("_edited_answer").is_null()).alias("_silent"),
    ).sort("source_id", "start", "end", "item_id")
    # Only edited items need their hash recomputed; the rest export their content as it is.
    edited = frame.filter(pl.col("_decision") == "edit")
    recomputed = {
        (row["source_id"], row["item_id"]): (
            schema.content_hash("pair", question=row["_question"], answer=row["_answer"], context=row["context"])
            if row["kind"] == "pair"
            else schema.content_hash(row["kind"], text=row["_text"])
        )
        for row in edited.select("source_id", "item_id", "kind", "_question", "_answer", "_text", "context").iter_rows(named=True)
    }
    exported = [
        recomputed.get((sid, iid), ch)
        for sid, iid, ch in zip(frame["source_id"].to_list(), frame["item_id"].to_list(), frame["content_hash"].to_list())
    ]
    content = (
        pl.when(is_pair & (pl.lit(config.kind) == "sft")).then(pl.concat_str("_question", pl.lit("\n"), "_answer"))
        .when(is_pair).then(pl.col("_answer"))
        .otherwise(pl.col("_text"))
    )
    return frame.with_columns(
        pl.Series("_exported_hash", exported, dtype=pl.String),
        content.str.count_matches(TOKEN_PATTERN).cast(pl.Int64).alias("_tokens"),
    )


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


def _agent_index(values: list[str | None]) -> tuple[list[int | None], list[Any]]:
    distinct = sorted({v for v in values if v is not None})
    position = {v: i for i, v in enumerate(distinct)}
    return [position[v] if v is not None else None for v in values], [json.loads(v) for v in distinct]


def _item_records(selected: pl.DataFrame, config: ExportConfig) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """One manifest record per item (dataset order), and the distinct agents they refer to by index."""
    agents: dict[str, list[Any]] = {}
    indices: dict[str, list[int | None]] = {}
    for stage, column in _AGENT_COLUMNS.items():
        indices[stage], agents[stage] = _agent_index(selected[column].to_list())
    columns = selected.select(
        "item_id", "source_id", "kind", "section", "content_hash", "_exported_hash", "_decision", "_reviewer",
        "_review_reason", "_response_id", "_reviewed_hash", "_silent", "dedup_kind", "concept_score", "critic_score",
    ).rows()
    records = []
    for i, (iid, sid, kind, section, chash, xhash, decision, reviewer, reason, rid, rhash, silent, dkind, concept, critic) in enumerate(columns):
        record: dict[str, Any] = {
            "item_id": iid,
            "source_id": sid,
            "kind": kind,
            "section": section,
            "content_hash": chash,
            "exported_hash": xhash,
            "decision": decision or UNREVIEWED,
            "reviewer": reviewer,
            "reason": reason,
            "response_id": rid,
            # The hash of the content the reviewer saw, when it is not the content now (the wording moved).
            "reviewed_hash": rhash if rhash is not None and rhash != chash else None,
            "silent": bool(silent),
            "dedup_kind": dkind,
            "concept_score": concept,
            "critic_score": critic,
            "agents": {stage: indices[stage][i] for stage in _AGENT_COLUMNS},
        }
        records.append(record)
    return records, agents


def _identity_digest(config: ExportConfig, records: list[dict[str, Any]], agents: dict[str, list[Any]]) -> str:
    payload = {
        "format": EXPORT_FORMAT,
        "satsang": _tool_versions()["satsang"],
        "config": config.to_dict(),
        "agents": agents,
        "items": sorted(({k: v for k, v in r.items() if k not in ("row", "turn")} for r in records), key=lambda r: (r["item_id"], r["source_id"])),
    }
    return hashlib.sha256(_canonical(payload)).hexdigest()


def _row_digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8") + b"\x1f")
    return h.hexdigest()[:32]


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


# ---- rows ----------------------------------------------------------------------------------


def _sft_rows(selected: pl.DataFrame, config: ExportConfig, titles: dict[str, str], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conversations: runs of consecutive selected pairs of one talk (multi_turn), else one pair each."""
    columns = selected.select(
        "item_id", "source_id", "section", "section_date", "conversation_id", "turn_index", "_question", "_answer", "_silent", "context", "_decision"
    ).rows()
    id_counts = Counter(row[0] for row in columns)
    # Runs are found per conversation in turn order, then placed where their first pair is in
    # the book order of `selected`, so the row order never depends on how the items were stored.
    by_conversation: dict[tuple[str, str], list[int]] = {}
    for i, row in enumerate(columns):
        by_conversation.setdefault((row[1], row[4]), []).append(i)
    runs: list[list[int]] = []
    for members in by_conversation.values():
        members.sort(key=lambda i: (columns[i][5], i))
        run = [members[0]]
        for i in members[1:]:
            if config.multi_turn and columns[i][5] == columns[run[-1]][5] + 1:
                run.append(i)
            else:
                runs.append(run)
                run = [i]
        runs.append(run)
    runs.sort(key=lambda run: run[0])
    rows = []
    for row_index, run in enumerate(runs):
        first = columns[run[0]]
        messages = []
        for position, i in enumerate(run):
            _, _, _, _, _, _, question, answer, silent, _, _ = columns[i]
            messages.append({"role": "user", "content": question})
            messages.append({"role": "assistant", "content": config.silence_text if silent else answer})
            records[i]["row"], records[i]["turn"] = row_index, position
        item_ids = [columns[i][0] for i in run]
        if len(run) == 1:
            row_id = first[0] if id_counts[first[0]] == 1 else f"{first[0]}@{first[1][:12]}"
        else:
            row_id = _row_digest("conversation", first[1], *item_ids)
        rows.append(
            {
                "id": row_id,
                "messages": messages,
                "item_ids": item_ids,
                "source_id": first[1],
                "source_title": titles.get(first[1], ""),
                "section": first[2],
                "section_date": first[3],
                "conversation_id": first[4],
                "first_turn": first[5],
                "contexts": [columns[i][9] for i in run],
                "decisions": [columns[i][10] or UNREVIEWED for i in run],
            }
        )
    return rows


def _pretrain_table(selected: pl.DataFrame, titles: dict[str, str], records: list[dict[str, Any]]) -> pl.DataFrame:
    for i, record in enumerate(records):
        record["row"], record["turn"] = i, 0
    id_counts = selected.group_by("item_id").len()
    return (
        selected.join(id_counts, on="item_id", how="left", maintain_order="left")
        .select(
            pl.when(pl.col("len") == 1).then(pl.col("item_id")).otherwise(pl.format("{}@{}", "item_id", pl.col("source_id").str.slice(0, 12))).alias("id"),
            pl.when(pl.col("kind") == "pair").then(pl.col("_answer")).otherwise(pl.col("_text")).alias("text"),
            pl.when(pl.col("kind") == "pair").then(pl.lit("answer")).otherwise(pl.lit("passage")).alias("text_kind"),
            pl.col("item_id"),
            pl.col("source_id"),
            pl.col("source_id").replace_strict(titles, default="").alias("source_title"),
            pl.col("section"),
            pl.col("_decision").fill_null(UNREVIEWED).alias("decision"),
        )
    )


def _sft_features():
    from datasets import Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    return Features(
        {
            "id": Value("string"),
            "messages": List(message),
            "item_ids": List(Value("string")),
            "source_id": Value("string"),
            "source_title": Value("string"),
            "section": Value("string"),
            "section_date": Value("string"),
            "conversation_id": Value("string"),
            "first_turn": Value("int64"),
            "contexts": List(Value("string")),
            "decisions": List(Value("string")),
        }
    )


def _pretrain_features():
    from datasets import Features, Value

    return Features({name: Value("string") for name in ("id", "text", "text_kind", "item_id", "source_id", "source_title", "section", "decision")})


# ---- writing --------------------------------------------------------------------------------


def _write_version(staging: Path, selection: _Selection, parent: str | None, created_at: str) -> int:
    """Every file of the version into `staging`, fsynced; returns the number of dataset rows."""
    import pyarrow as pa
    from datasets import Dataset, DatasetInfo
    from datasets.table import InMemoryTable
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    config = selection.config
    titles = dict(zip(selection.sources["source_id"].to_list(), selection.sources["title"].to_list()))
    records = selection.records
    if config.kind == "sft":
        rows = _sft_rows(selection.selected, config, titles, records)
        features = _sft_features()
        table = pa.Table.from_pylist(rows, schema=features.arrow_schema)
    else:
        frame = _pretrain_table(selection.selected, titles, records)
        rows = None
        features = _pretrain_features()
        table = frame.to_arrow().cast(features.arrow_schema)
    info = DatasetInfo(description=f"Satsang workbench dataset version {selection.version_id}", license="other", features=features)
    dataset = Dataset(InMemoryTable(table), info=info, split="train", fingerprint=selection.digest[:16])

    bars_were_on = is_progress_bar_enabled()
    disable_progress_bar()
    try:
        dataset.save_to_disk(str(staging / DATASET_DIR))
        n_shards = max(1, math.ceil(table.nbytes / PARQUET_SHARD_BYTES))
        (staging / PARQUET_DIR).mkdir()
        for shard in range(n_shards):
            part = dataset.shard(n_shards, shard, contiguous=True) if n_shards > 1 else dataset
            part.to_parquet(str(staging / PARQUET_DIR / f"train-{shard:05d}-of-{n_shards:05d}.parquet"))
    finally:
        if bars_were_on:
            enable_progress_bar()
    pause_if_testing("export-after-data")

    if rows is not None:
        with open(staging / SEED_NAME, "w", encoding="utf-8", newline="\n") as seed:
            for row in rows:
                messages = [{"role": "human" if m["role"] == "user" else "assistant", "content": m["content"]} for m in row["messages"]]
                seed.write(json.dumps({"id": row["id"], "messages": messages}, ensure_ascii=False) + "\n")

    manifest = _manifest(selection, parent, created_at, table.num_rows)
    (staging / MANIFEST_NAME).write_bytes(_manifest_bytes(manifest))

    from data_cards.render import render_version_card

    render_version_card(staging, _card_context(selection, manifest, rows, staging))
    _write_checksums(staging)
    fsync_tree(staging)
    return table.num_rows


def _manifest(selection: _Selection, parent: str | None, created_at: str, n_rows: int) -> dict[str, Any]:
    selected = selection.selected
    config = selection.config
    per_source = (
        selected.group_by("source_id").agg(pl.len().alias("items"), pl.col("_tokens").sum().alias("tokens")).sort("source_id")
    )
    counts_by_source = {sid: (items, tokens) for sid, items, tokens in per_source.iter_rows()}
    sources = []
    for row in selection.sources.iter_rows(named=True):
        items, tokens = counts_by_source.get(row["source_id"], (0, 0))
        if not items:
            continue
        sources.append(
            {
                "source_id": row["source_id"],
                "title": row["title"],
                "kind": row["kind"],
                "licence": row["licence"],
                "n_bytes": row["n_bytes"],
                "parser": row["parser"],
                "parser_version": row["parser_version"],
                "parser_config": json.loads(row["parser_config"]) if row["parser_config"] else None,
                "items": int(items),
                "tokens": int(tokens),
            }
        )
    sources.sort(key=lambda s: s["source_id"])
    by_kind = dict(sorted(Counter(selected["kind"].to_list()).items()))
    decisions = dict(sorted(Counter(r["decision"] for r in selection.records).items()))
    return {
        "format": EXPORT_FORMAT,
        "version_id": selection.version_id,
        "name": config.name,
        "kind": config.kind,
        "digest": selection.digest,
        "parent": parent,
        "created_at": created_at,
        "created_at_basis": "the newest input: the latest source ingest or review response (so unchanged inputs give identical bytes)",
        "tool": _tool_versions(),
        "review_store": selection.review_store,
        "config": config.to_dict(),
        "counts": {
            "items": selected.height,
            "rows": n_rows,
            "tokens": int(selected["_tokens"].sum()),
            "token_method": TOKEN_METHOD,
            "items_by_kind": by_kind,
            "items_by_decision": decisions,
            "candidates": selection.candidates.height,
        },
        "sources": sources,
        "steps": [asdict(step) for step in selection.steps],
        "agents": selection.agents,
        "files": {
            "card": CARD_NAME,
            "parquet": f"{PARQUET_DIR}/",
            "save_to_disk": f"{DATASET_DIR}/",
            "seed_jsonl": SEED_NAME if config.kind == "sft" else None,
            "plots": [SCORE_PLOT, SOURCE_PLOT],
        },
        "items": selection.records,
    }


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Pretty header, then `"items": [` with one compact record per line: diffable, and `versions` reads only the header."""
    header = {k: v for k, v in manifest.items() if k != "items"}
    head = json.dumps(header, indent=2, ensure_ascii=False, allow_nan=False)
    lines = [json.dumps(r, ensure_ascii=False, allow_nan=False, separators=(", ", ": ")) for r in manifest["items"]]
    body = head[:-2] + ',\n  "items": [\n' + ",\n".join("    " + line for line in lines) + "\n  ]\n}\n"
    return body.encode("utf-8")


def _tool_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for dist, key in (("satsang-workbench", "satsang"), ("datasets", "datasets"), ("pyarrow", "pyarrow"), ("polars", "polars")):
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[key] = "unknown"
    return versions


def _card_context(selection: _Selection, manifest: dict[str, Any], rows: list[dict[str, Any]] | None, staging: Path) -> dict[str, Any]:
    """What the data card template and its plots are given."""
    candidates = selection.candidates
    config = selection.config
    titles = dict(zip(selection.sources["source_id"].to_list(), selection.sources["title"].to_list()))
    total_tokens = manifest["counts"]["tokens"] or 1
    source_rows = [
        {**s, "share": s["tokens"] / total_tokens} for s in sorted(manifest["sources"], key=lambda s: -s["tokens"])
    ]
    # Items per source: in the version, and set aside (by step), for the plot and the table.
    per_source = []
    for row in selection.sources.iter_rows(named=True):
        sid = row["source_id"]
        mine = candidates.filter(pl.col("source_id") == sid)
        if mine.height == 0:
            continue
        aside = Counter(mine["_step"].drop_nulls().to_list())
        per_source.append({"title": row["title"], "source_id": sid, "exported": mine["_step"].null_count(), "set_aside": dict(aside)})
    pool = candidates.filter(~pl.col("_step").is_in(["kind", "source"]).fill_null(False))
    in_version = candidates.filter(pl.col("_step").is_null())
    concept_basis_ok = pl.col("concept_basis").fill_null("") != "silence"
    scores = {
        "concept": {
            "pool": pool.filter(concept_basis_ok)["concept_score"].drop_nulls().to_list(),
            "version": in_version.filter(concept_basis_ok)["concept_score"].drop_nulls().to_list(),
        },
        "critic": {
            "pool": pool["critic_score"].drop_nulls().to_list(),
            "version": in_version["critic_score"].drop_nulls().to_list(),
        },
    }
    return {
        "manifest": manifest,
        "config": config,
        "version_id": selection.version_id,
        "sources": source_rows,
        "per_source": per_source,
        "steps": selection.steps,
        "n_candidates": candidates.height,
        "parse": _parse_summary(selection.sources, candidates),
        "review": review_statistics(selection.state, selection.responses, set(candidates["item_id"].to_list())),
        "review_store": selection.review_store,
        "scores": scores,
        "examples": _examples(rows, selection, titles),
        "n_silent": sum(1 for r in selection.records if r["silent"]),
        "n_edited": sum(1 for r in selection.records if r["decision"] == "edit"),
        "n_multi_turn": sum(1 for r in rows if len(r["item_ids"]) > 1) if rows else 0,
        "n_reviewed_other_wording": sum(1 for r in selection.records if r["reviewed_hash"]),
        "token_method": TOKEN_METHOD,
        "files": {"score_plot": SCORE_PLOT, "source_plot": SOURCE_PLOT, "seed": SEED_NAME, "parquet_dir": PARQUET_DIR, "dataset_dir": DATASET_DIR, "manifest": MANIFEST_NAME, "checksums": CHECKSUMS_NAME},
    }


def _parse_summary(sources: pl.DataFrame, candidates: pl.DataFrame) -> list[dict[str, Any]]:
    counts = dict(candidates.group_by("source_id").len().iter_rows())
    return [
        {
            "title": row["title"],
            "source_id": row["source_id"],
            "parser": row["parser"],
            "parser_version": row["parser_version"],
            "parser_config": row["parser_config"],
            "items": int(counts.get(row["source_id"], 0)),
        }
        for row in sources.iter_rows(named=True)
    ]


def _examples(rows: list[dict[str, Any]] | None, selection: _Selection, titles: dict[str, str], n: int = 3) -> list[dict[str, Any]]:
    """A few rows to show: the first multi-turn conversation, then the first single ones (sft); the first texts (pretrain)."""
    if rows is not None:
        multi = [r for r in rows if len(r["item_ids"]) > 1][:1]
        single = [r for r in rows if len(r["item_ids"]) == 1][: n - len(multi)]
        chosen = multi + single
        return [
            {"id": r["id"], "title": r["source_title"], "section": r["section"], "messages": r["messages"]}
            for r in chosen
        ]
    selected = selection.selected.head(n)
    return [
        {"id": row["item_id"], "title": titles.get(row["source_id"], ""), "section": row["section"], "text": row["_answer"] if row["kind"] == "pair" else row["_text"]}
        for row in selected.iter_rows(named=True)
    ]


def review_statistics(state: pl.DataFrame, responses: pl.DataFrame, item_ids: set[str] | None = None) -> dict[str, Any]:
    """Decisions by reason, reviewers, and agreement between reviewers who judged the same item.

    Agreement: for each item judged by two or more reviewers, each reviewer's latest
    decision; every pair of reviewers on that item agrees or not. Reported overall
    and per pair of reviewers.
    """
    if item_ids is not None:
        state = state.filter(pl.col("item_id").is_in(item_ids))
        responses = responses.filter(pl.col("item_id").is_in(item_ids))
    by_reason = (
        state.group_by("decision", pl.col("reason").fill_null(""))
        .len()
        .sort(["decision", "len", "reason"], descending=[False, True, False])
        .rows()
    )
    per_reviewer_state = dict(state.group_by("reviewer").len().iter_rows())
    per_reviewer_all = dict(responses.group_by("reviewer").len().iter_rows())
    reviewers = sorted(
        ({"reviewer": r or "?", "decisions": int(per_reviewer_state.get(r, 0)), "responses": int(per_reviewer_all.get(r, 0))} for r in set(per_reviewer_all) | set(per_reviewer_state)),
        key=lambda d: (-d["responses"], d["reviewer"]),
    )
    latest = (
        responses.with_columns(pl.col("response_id").cast(pl.Int64, strict=False).alias("_order"))
        .sort("created_at", "_order", nulls_last=False)
        .group_by("item_id", "reviewer", maintain_order=True)
        .last()
        .select("item_id", "reviewer", "decision")
    )
    by_item: dict[str, dict[str, str]] = {}
    for item, reviewer, decision in latest.iter_rows():
        by_item.setdefault(item, {})[reviewer or "?"] = decision
    pair_stats: dict[tuple[str, str], list[int]] = {}
    n_shared = 0
    for decisions in by_item.values():
        if len(decisions) < 2:
            continue
        n_shared += 1
        names = sorted(decisions)
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                stats = pair_stats.setdefault((names[a], names[b]), [0, 0])
                stats[0] += 1
                stats[1] += decisions[names[a]] == decisions[names[b]]
    total = sum(s[0] for s in pair_stats.values())
    agree = sum(s[1] for s in pair_stats.values())
    return {
        "n_reviewed": state.height,
        "n_responses": responses.height,
        "by_decision": dict(sorted(Counter(state["decision"].to_list()).items())),
        "by_reason": [{"decision": d, "reason": r or "(none)", "items": n} for d, r, n in by_reason],
        "reviewers": reviewers,
        "n_items_multiply_reviewed": n_shared,
        "agreement": agree / total if total else None,
        "n_comparisons": total,
        "pairs": [
            {"a": a, "b": b, "items": s[0], "agreement": s[1] / s[0]} for (a, b), s in sorted(pair_stats.items())
        ],
    }


def _write_checksums(directory: Path) -> None:
    lines = [f"{sha256_file(path)}  {rel}\n" for rel, path in _files(directory) if rel != CHECKSUMS_NAME]
    text = "".join(lines)
    text += SELF_DIGEST_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest() + "\n"
    (directory / CHECKSUMS_NAME).write_text(text, encoding="utf-8")


def _files(directory: Path) -> list[tuple[str, Path]]:
    """Every regular file under `directory` as (posix relative path, path), sorted by relative path."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in files:
            path = Path(root) / name
            found.append((path.relative_to(directory).as_posix(), path))
    return sorted(found)


def _make_read_only(directory: Path) -> None:
    for root, dirs, files in os.walk(directory, topdown=False):
        for name in files:
            os.chmod(Path(root) / name, 0o444)
        os.chmod(root, 0o555)


@contextmanager
def _versions_lock(versions: Path) -> Iterator[None]:
    with exclusive_lock(versions / LOCK_NAME, LOCK_TIMEOUT_S, f"{versions}: another export is writing here", error=ExportError):
        yield


def _sweep(versions: Path) -> None:
    """Remove what killed exports left (`.tmp-*`). The caller holds the versions lock."""
    for entry in versions.glob(f"{TMP_PREFIX}*"):
        if entry.is_dir() and not entry.is_symlink():
            for root, dirs, _ in os.walk(entry):  # a tmp dir is never read-only, but be sure rmtree can go in
                os.chmod(root, stat.S_IRWXU)
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _iso_utc(value: Any) -> str:
    try:
        return iso_utc(value)
    except ValueError as error:
        raise ExportError(str(error)) from None


def _newest_input(selection: _Selection) -> str:
    times = [_iso_utc(t) for t in selection.sources["ingested_at"].drop_nulls().to_list()]
    times += selection.state["created_at"].drop_nulls().to_list()
    return max(times) if times else "1970-01-01T00:00:00+00:00"


# ---- reading versions -----------------------------------------------------------------------


def versions_path(workspace: Workspace) -> Path:
    return workspace.root / VERSIONS_DIR


def _version_dirs(versions: Path) -> list[Path]:
    if not versions.is_dir():
        return []
    return sorted(p for p in versions.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file())


def _read_manifest_header(directory: Path) -> dict[str, Any]:
    """The manifest without its item list, read only as far as `"items": [` (the manifest is written so)."""
    marker = '  "items": [\n'
    head: list[str] = []
    with open(directory / MANIFEST_NAME, encoding="utf-8") as file:
        for line in file:
            if line == marker:
                text = "".join(head).rstrip().rstrip(",") + "\n}"
                try:
                    return json.loads(text)
                except ValueError:
                    break
            head.append(line)
    data = load_manifest_path(directory)
    data.pop("items", None)
    return data


def load_manifest_path(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{directory}: no {MANIFEST_NAME}") from None
    except ValueError as error:
        raise ExportError(f"{directory / MANIFEST_NAME}: unreadable ({error})") from None


def _info(directory: Path, header: dict[str, Any]) -> VersionInfo:
    counts = header.get("counts", {})
    return VersionInfo(
        version_id=header.get("version_id", directory.name),
        name=header.get("name", ""),
        kind=header.get("kind", ""),
        created_at=header.get("created_at", ""),
        parent=header.get("parent"),
        n_items=int(counts.get("items", 0)),
        n_rows=int(counts.get("rows", 0)),
        n_tokens=int(counts.get("tokens", 0)),
        n_sources=len(header.get("sources", [])),
        path=directory,
    )


def list_versions(workspace: Workspace) -> list[VersionInfo]:
    """Every finished version (never a `.tmp-*` directory), by name, then parent before child."""
    infos = []
    for directory in _version_dirs(versions_path(workspace)):
        try:
            infos.append((_info(directory, _read_manifest_header(directory)), directory.stat().st_mtime_ns))
        except ExportError:
            continue  # a damaged manifest: `verify` says what is wrong; the list shows what it can read
    order: dict[str, int] = {}
    for info, _ in sorted(infos, key=lambda x: (x[0].created_at, x[1], x[0].version_id)):
        depth, parent, seen = 0, info.parent, set()
        by_id = {i.version_id: i for i, _ in infos}
        while parent in by_id and parent not in seen:
            seen.add(parent)
            depth += 1
            parent = by_id[parent].parent
        order[info.version_id] = depth
    return [i for i, m in sorted(infos, key=lambda x: (x[0].name, order[x[0].version_id], x[0].created_at, x[1], x[0].version_id))]


def _head_of(versions: Path, name: str) -> str | None:
    """The latest version of `name`: the one no other version of that name names as parent (newest if several)."""
    mine = []
    for directory in _version_dirs(versions):
        try:
            header = _read_manifest_header(directory)
        except ExportError:
            continue
        if header.get("name") == name:
            mine.append((header.get("version_id", directory.name), header.get("parent"), directory.stat().st_mtime_ns))
    parents = {parent for _, parent, _ in mine}
    heads = [(mtime, vid) for vid, _, mtime in mine if vid not in parents]
    return max(heads)[1] if heads else None


def resolve_version(workspace: Workspace, ref: str) -> Path:
    """A version's directory from its id, a unique prefix of its id, or its name (the latest of that name)."""
    versions = versions_path(workspace)
    directories = _version_dirs(versions)
    exact = [d for d in directories if d.name == ref]
    if exact:
        return exact[0]
    if ref.startswith(".") or "/" in ref:
        raise ExportError(f"no version {ref!r}")
    head = _head_of(versions, ref)
    if head is not None:
        return versions / head
    prefixed = [d for d in directories if d.name.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        raise ExportError(f"version {ref!r} is ambiguous: {', '.join(d.name for d in prefixed[:5])}")
    known = ", ".join(d.name for d in directories[-5:]) or "none yet (satsang export --name NAME)"
    raise ExportError(f"no version {ref!r} in {versions} (versions: {known})")


def load_manifest(workspace: Workspace, version_id: str) -> dict[str, Any]:
    """The whole manifest of a version (id, unique id prefix, or name for the latest of that name)."""
    return load_manifest_path(resolve_version(workspace, version_id))


def _item_texts(directory: Path, manifest: dict[str, Any], wanted: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The exported text of the wanted (source_id, item_id) items, read from the version's Parquet shards."""
    if not wanted:
        return {}
    import pyarrow.parquet as pq

    where = {(r["source_id"], r["item_id"]): (r.get("row"), r.get("turn", 0)) for r in manifest["items"]}
    rows_needed = {where[key][0] for key in wanted if key in where}
    columns = ["messages"] if manifest["kind"] == "sft" else ["text"]
    texts_by_row: dict[int, Any] = {}
    offset = 0
    for shard in sorted((directory / PARQUET_DIR).glob("*.parquet")):
        table = pq.read_table(shard, columns=columns)
        values = table.column(0).to_pylist()
        for i, value in enumerate(values):
            if offset + i in rows_needed:
                texts_by_row[offset + i] = value
        offset += table.num_rows
    texts = {}
    for key in wanted:
        if key not in where or where[key][0] not in texts_by_row:
            continue
        row, turn = where[key]
        value = texts_by_row[row]
        if manifest["kind"] == "sft":
            question, answer = value[2 * turn]["content"], value[2 * turn + 1]["content"]
            texts[key] = f"Q: {question}\nA: {answer}"
        else:
            texts[key] = value
    return texts


def diff_versions(workspace: Workspace, old: str, new: str, examples: int = 3) -> VersionDiff:
    """Items added, removed and edited (same item, other exported content) from `old` to `new`, per source."""
    old_dir, new_dir = resolve_version(workspace, old), resolve_version(workspace, new)
    a, b = load_manifest_path(old_dir), load_manifest_path(new_dir)
    items_a = {(r["source_id"], r["item_id"]): r for r in a["items"]}
    items_b = {(r["source_id"], r["item_id"]): r for r in b["items"]}
    added = sorted(items_b.keys() - items_a.keys())
    removed = sorted(items_a.keys() - items_b.keys())
    common = items_a.keys() & items_b.keys()
    edited = sorted(k for k in common if items_a[k]["exported_hash"] != items_b[k]["exported_hash"])
    titles = {s["source_id"]: s["title"] for s in a["sources"] + b["sources"]}
    per_source: dict[str, dict[str, Any]] = {}
    for label, keys in (("added", added), ("removed", removed), ("edited", edited), ("unchanged", sorted(common - set(edited)))):
        for sid, _ in keys:
            entry = per_source.setdefault(sid, {"source_id": sid, "title": titles.get(sid, ""), "added": 0, "removed": 0, "edited": 0, "unchanged": 0})
            entry[label] += 1
    shown_added, shown_removed, shown_edited = added[:examples], removed[:examples], edited[:examples]
    texts_a = _item_texts(old_dir, a, set(shown_removed) | set(shown_edited))
    texts_b = _item_texts(new_dir, b, set(shown_added) | set(shown_edited))

    def change(key: tuple[str, str], record: dict[str, Any], with_texts: bool) -> ItemChange:
        return ItemChange(key[1], key[0], record.get("section", ""), texts_a.get(key) if with_texts else None, texts_b.get(key) if with_texts else None)

    shown = set(shown_added) | set(shown_removed) | set(shown_edited)
    config_changes = {k: (a["config"].get(k), b["config"].get(k)) for k in sorted(set(a["config"]) | set(b["config"])) if a["config"].get(k) != b["config"].get(k)}
    return VersionDiff(
        old=a["version_id"],
        new=b["version_id"],
        added=tuple(change(k, items_b[k], k in shown) for k in added),
        removed=tuple(change(k, items_a[k], k in shown) for k in removed),
        edited=tuple(change(k, items_b[k], k in shown) for k in edited),
        n_unchanged=len(common) - len(edited),
        per_source=tuple(sorted(per_source.values(), key=lambda e: e["title"])),
        config_changes=config_changes,
    )


def verify_version(workspace: Workspace, version_id: str) -> list[str]:
    """Every problem found in a version, one line each naming the file; [] when it is intact.

    Recomputes: the sha256 of every file against checksums.sha256 (and that file's own
    digest line), files missing or not listed, the version id from the manifest, and each
    item's exported hash from the dataset rows where the rows hold the whole item.
    """
    directory = resolve_version(workspace, version_id)
    return verify_path(directory)


def verify_path(directory: Path) -> list[str]:
    problems: list[str] = []
    listed: dict[str, str] = {}
    checksums = directory / CHECKSUMS_NAME
    if not checksums.is_file():
        return [f"{CHECKSUMS_NAME}: missing"]
    raw = checksums.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        problems.append(f"{CHECKSUMS_NAME}: changed (not UTF-8)")
    lines = text.splitlines(keepends=True)
    body = "".join(lines[:-1]) if lines else ""
    last = lines[-1] if lines else ""
    own_digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    if last != f"{SELF_DIGEST_PREFIX}{own_digest}\n":
        problems.append(f"{CHECKSUMS_NAME}: changed (its own digest line does not match its contents)")
    for number, line in enumerate(lines[:-1] if lines else [], start=1):
        digest, sep, rel = line.rstrip("\n").partition("  ")
        if not sep or len(digest) != 64 or not _HEX.match(digest):
            problems.append(f"{CHECKSUMS_NAME}:{number}: malformed line")
            continue
        listed[rel] = digest
    present = {rel: path for rel, path in _files(directory) if rel != CHECKSUMS_NAME}
    for rel, digest in sorted(listed.items()):
        path = present.get(rel)
        if path is None:
            problems.append(f"{rel}: missing")
            continue
        actual = sha256_file(path)
        if actual != digest:
            problems.append(f"{rel}: changed (sha256 {actual[:16]}..., checksums.sha256 says {digest[:16]}...)")
    for rel in sorted(present.keys() - listed.keys()):
        problems.append(f"{rel}: not in {CHECKSUMS_NAME} (added after export)")
    problems.extend(_verify_manifest(directory))
    return problems


def _verify_manifest(directory: Path) -> list[str]:
    """The id recomputed from the manifest, and exported hashes recomputed from the dataset rows."""
    try:
        manifest = load_manifest_path(directory)
        config = ExportConfig.from_dict(manifest["config"])
        # The id's payload names the satsang version that made it, so only that version can recompute it.
        same_tool = manifest.get("tool", {}).get("satsang") == _tool_versions()["satsang"]
        digest = _identity_digest(config, manifest["items"], manifest["agents"]) if same_tool else None
    except (ExportError, KeyError, TypeError, ValueError) as error:
        return [f"{MANIFEST_NAME}: unreadable ({str(error).splitlines()[0][:200]})"]
    problems = []
    if manifest.get("version_id") != directory.name:
        problems.append(f"{MANIFEST_NAME}: names version {manifest.get('version_id')!r}, but the directory is {directory.name!r}")
    if digest is not None and (f"{config.name}-{digest[:12]}" != directory.name or digest != manifest.get("digest")):
        problems.append(f"{MANIFEST_NAME}: its config and items hash to {config.name}-{digest[:12]}, not to this version's id")
    problems.extend(_verify_rows(directory, manifest, config))
    return problems


def _verify_rows(directory: Path, manifest: dict[str, Any], config: ExportConfig) -> list[str]:
    import pyarrow.parquet as pq

    shards = sorted((directory / PARQUET_DIR).glob("*.parquet"))
    try:
        tables = [pq.read_table(s) for s in shards]
    except Exception as error:  # noqa: BLE001 - pyarrow raises several kinds for a damaged file
        return [f"{PARQUET_DIR}/: unreadable Parquet ({type(error).__name__})"]
    rows = [row for t in tables for row in t.to_pylist()]
    if len(rows) != manifest["counts"]["rows"]:
        return [f"{PARQUET_DIR}/: {len(rows)} rows, the manifest says {manifest['counts']['rows']}"]
    problems = []
    for record in manifest["items"]:
        row = rows[record["row"]] if 0 <= record.get("row", -1) < len(rows) else None
        if row is None:
            problems.append(f"{PARQUET_DIR}/: no row for item {record['item_id']}")
            continue
        if manifest["kind"] == "sft":
            turn = record["turn"]
            if turn >= len(row["item_ids"]) or row["item_ids"][turn] != record["item_id"]:
                problems.append(f"{PARQUET_DIR}/: row {record['row']} does not hold item {record['item_id']}")
                continue
            question = row["messages"][2 * turn]["content"]
            answer = row["messages"][2 * turn + 1]["content"]
            if record["silent"] and answer == config.silence_text:
                answer = ""
            actual = schema.content_hash("pair", question=question, answer=answer, context=row["contexts"][turn])
        elif record["kind"] == "passage":
            actual = schema.content_hash("passage", text=row["text"])
        else:
            continue  # an answer alone cannot rebuild its pair's hash; the file checksum covers it
        if actual != record["exported_hash"]:
            problems.append(f"{PARQUET_DIR}/: item {record['item_id']} (row {record['row']}) does not match its exported hash")
    return problems


# ---- rendering for the CLI ------------------------------------------------------------------


def render_export_result(result: ExportResult) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table("step", "set aside", "why", title=Text(f"export {result.version_id}"), show_edge=False)
    for step in result.steps:
        if not step.set_aside:
            table.add_row(step.name, "0", "")
            continue
        for i, (why, n) in enumerate(step.set_aside.items()):
            table.add_row(step.name if i == 0 else "", str(n), Text(why))
    table.add_section()
    table.add_row("exported", str(result.n_items), f"{result.n_rows} rows, {result.n_tokens:,} tokens, of {result.n_candidates} items")
    if result.created:
        line = Text(f"Created {result.path} in {result.seconds:.1f} s; card: {result.card_path}")
    else:
        line = Text(f"Version {result.version_id} already exists: nothing written. Card: {result.card_path}")
    return Group(table, line)


def render_versions(infos: Sequence[VersionInfo]) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    if not infos:
        return Text("No versions yet: satsang export --name NAME")
    table = Table(show_edge=False)
    table.add_column("version", no_wrap=True)
    for name in ("kind", "items", "rows", "tokens"):
        table.add_column(name, justify="left" if name == "kind" else "right", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("parent", overflow="fold")
    for info in infos:
        table.add_row(
            Text(info.version_id), info.kind, str(info.n_items), str(info.n_rows), f"{info.n_tokens:,}",
            info.created_at[:10], Text(_short_parent(info)),
        )
    return table


def _short_parent(info: VersionInfo) -> str:
    """The parent's id, without the name when it is this version's own (the usual case)."""
    if info.parent is None:
        return "-"
    return info.parent.removeprefix(f"{info.name}-") if info.parent.startswith(f"{info.name}-") else info.parent


def render_manifest(manifest: dict[str, Any], path: Path | None = None) -> RenderableType:
    """`satsang show`: what a version is, where it came from, and what was set aside."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    counts = manifest["counts"]
    about = Table(show_header=False, show_edge=False, box=None)
    about.add_row("version", Text(manifest["version_id"]))
    about.add_row("kind", manifest["kind"])
    about.add_row("items", f"{counts['items']} in {counts['rows']} rows, {counts['tokens']:,} tokens ({counts['token_method']})")
    about.add_row("decisions", Text(", ".join(f"{k} {v}" for k, v in counts["items_by_decision"].items())))
    about.add_row("created", f"{manifest['created_at']} (newest input)")
    about.add_row("parent", Text(manifest.get("parent") or "-"))
    about.add_row("tools", Text(", ".join(f"{k} {v}" for k, v in manifest["tool"].items())))
    about.add_row("config", Text(json.dumps(manifest["config"], sort_keys=True)))
    if path is not None:
        about.add_row("path", Text(str(path)))
        about.add_row("card", Text(str(path / CARD_NAME)))
    sources = Table("source", "sha256", "items", "tokens", "share", title="sources", show_edge=False)
    total = counts["tokens"] or 1
    for s in manifest["sources"]:
        sources.add_row(Text(s["title"]), s["source_id"][:12], str(s["items"]), f"{s['tokens']:,}", f"{100 * s['tokens'] / total:.1f}%")
    steps = Table("step", "set aside", "why", title="curation steps", show_edge=False)
    for step in manifest["steps"]:
        reasons = list(step["set_aside"].items()) or [("", 0)]
        for i, (why, n) in enumerate(reasons):
            steps.add_row(step["name"] if i == 0 else "", str(n), Text(why))
    return Group(about, sources, steps)


def render_diff(diff: VersionDiff) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    table = Table("source", "added", "removed", "edited", "unchanged", title=Text(f"{diff.old} -> {diff.new}"), show_edge=False)
    for entry in diff.per_source:
        table.add_row(Text(entry["title"] or entry["source_id"][:12]), str(entry["added"]), str(entry["removed"]), str(entry["edited"]), str(entry["unchanged"]))
    table.add_section()
    table.add_row("total", str(len(diff.added)), str(len(diff.removed)), str(len(diff.edited)), str(diff.n_unchanged))
    parts.append(table)
    for key, (before, after) in diff.config_changes.items():
        parts.append(Text(f"config {key}: {before!r} -> {after!r}"))
    for label, changes in (("added", diff.added), ("removed", diff.removed), ("edited", diff.edited)):
        for change in [c for c in changes if c.before is not None or c.after is not None]:
            parts.append(Text(f"\n{label} {change.item_id} ({change.section or 'no section'})", style="bold"))
            if change.before is not None:
                parts.append(Text(_clip(change.before), style="red"))
            if change.after is not None:
                parts.append(Text(_clip(change.after), style="green"))
    if diff.is_empty:
        parts.append(Text("No item differs."))
    return Group(*parts)


def render_verify(version_id: str, problems: Sequence[str]) -> RenderableType:
    from rich.text import Text

    if not problems:
        return Text(f"{version_id}: intact (every file matches checksums.sha256; the id matches the manifest)")
    return Text("\n".join([f"{version_id}: {len(problems)} problem(s)", *problems]))


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
