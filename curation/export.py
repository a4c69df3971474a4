"""Export: write a workspace's selection as an immutable, content-addressed dataset version.

Trainers consume versions, never the live workspace. `export_version(workspace,
ExportConfig(name=...))` selects items (curation.selection), builds a Hugging Face
dataset from them and writes it, with a manifest, checksums and a data card, as one
directory under `<workspace>/versions/<version_id>/` in the format curation.versions
owns (layout, identity, manifest, checksums; reading, diff and verify are there too).
Review state comes from curation.review, read once per export.

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

Bytes: two exports of unchanged inputs are byte-identical. So no wall clock is
written: `created_at` is the time of the newest input (the latest ingest or
review response) unless the caller passes one, and the manifest says so. The
parent (the latest earlier version of the same name) depends on history, not on
the inputs, so it is recorded but is not part of the id. Parquet bytes depend
on the pyarrow version, which the manifest records.

The same id is a no-op that says so (checked before anything is written). What the
card says about the rest of the workspace (items set aside, review agreement) is as of
the first export of that id.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import polars as pl

from curation.dataset_files import DatasetFiles
from curation.files import fsync_tree, write_error_reason
from curation.review import UNREVIEWED, ReviewState, load_review_state, review_summary
from curation.selection import TEXT_COLUMNS, TOKEN_METHOD, ExportConfig, Selection, StepReport, read_rows, select_items
from curation.versions import (
    CARD_NAME,
    CHECKSUMS_NAME,
    DATASET_DIR,
    EXPORT_FORMAT,
    MANIFEST_NAME,
    PARQUET_DIR,
    SCORE_PLOT,
    SEED_NAME,
    SOURCE_PLOT,
    VERSIONS_DIR,
    ExportError,
    head_of,
    is_finished,
    iso_time,
    publish,
    read_manifest_header,
    staging_dir,
    sweep_unfinished,
    tool_versions,
    versions_lock,
    writable_entries,
    write_checksums,
    write_manifest,
)
from curation.workspace import pause_if_testing

if TYPE_CHECKING:
    from curation.workspace import Workspace


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


def export_version(
    workspace: Workspace,
    config: ExportConfig,
    db_url: str | None = None,
    created_at: str | None = None,
    review: ReviewState | None = None,
) -> ExportResult:
    """Select, build and write a dataset version; a no-op (status "already exists") when its id exists.

    review: the review state to select by (curation.review); default: read from the
    workspace's review database (`db_url`, $SATSANG_DB_URL or reviews.db), never created.
    Raises ExportError when the selection is empty, naming what set the items aside.
    """
    started = time.perf_counter()
    selection = select_items(workspace, config, review if review is not None else load_review_state(workspace.root, db_url))
    versions = workspace.root / VERSIONS_DIR
    versions.mkdir(exist_ok=True)
    final = versions / selection.version_id
    n_tokens = int(selection.selected["_tokens"].sum()) if selection.selected.height else 0
    with versions_lock(versions):
        sweep_unfinished(versions)
        if is_finished(final):
            writable_entries(final, repair=True)  # an export killed between its rename and its chmod left it writable
            header = read_manifest_header(final)
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
        parent = head_of(versions, config.name)
        when = iso_time(created_at) if created_at is not None else _newest_input(selection)
        staging = staging_dir(versions)
        try:
            n_rows = _write_version(staging, selection, parent, when)
        except BaseException as error:
            shutil.rmtree(staging, ignore_errors=True)  # a kill cannot get here; the next export sweeps that
            reason = write_error_reason(error)
            if reason is not None:
                raise ExportError(f"{final}: could not be written ({reason}); nothing was exported") from None
            raise
        publish(staging, final)
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


def preview_selection(
    workspace: Workspace, config: ExportConfig, db_url: str | None = None, review: ReviewState | None = None
) -> tuple[str, int, tuple[StepReport, ...]]:
    """(version id, items, steps) that `export_version` would produce, writing nothing."""
    selection = select_items(workspace, config, review if review is not None else load_review_state(workspace.root, db_url))
    return selection.version_id, selection.selected.height, selection.steps


def _newest_input(selection: Selection) -> str:
    times = [iso_time(t) for t in selection.sources["ingested_at"].drop_nulls().to_list()]
    times += [iso_time(t) for t in selection.review.decisions["created_at"].drop_nulls().to_list()]
    return max(times) if times else "1970-01-01T00:00:00+00:00"


# ---- rows ----------------------------------------------------------------------------------

ROWS_PER_CHUNK = 20_000  # items read and built into rows at a time: a big source is split (its Python rows are ~10x its text)


def _row_digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8") + b"\x1f")
    return h.hexdigest()[:32]


def content_batches(selection: Selection) -> Iterator[pl.DataFrame]:
    """The selected items in dataset order, a source at a time (a big one in slices: `row_chunks`), with their
    content as exported.

    Adds `_question`, `_answer`, `_text` (edits applied) and `context`, read from the parts
    only for the rows of that batch: memory holds one batch's text, not the version's.
    """
    is_pair = pl.col("kind") == "pair"
    whole_conversations = selection.config.kind == "sft"
    for _, source in selection.selected.group_by("source_id", maintain_order=True):  # sorted: sources in order
        for light in row_chunks(source, whole_conversations):
            texts = read_rows(selection.parts, light.select("_part", "_row"), TEXT_COLUMNS)
            batch = light.join(texts, on=["_part", "_row"], how="left", maintain_order="left").with_columns(
                pl.when(is_pair).then(pl.coalesce("_edited_question", "question")).otherwise(pl.lit("")).alias("_question"),
                pl.when(is_pair).then(pl.coalesce("_edited_answer", "answer")).otherwise(pl.lit("")).alias("_answer"),
                pl.when(is_pair).then(pl.lit("")).otherwise(pl.coalesce("_edited_answer", "text")).alias("_text"),
            )
            del texts
            yield batch
            del batch  # not held while the next batch is read


def row_chunks(batch: pl.DataFrame, whole_conversations: bool, rows: int | None = None) -> Iterator[pl.DataFrame]:
    """`batch` (one source's rows) in slices of about `rows`, so a big source is built and written a slice at a time.

    With whole_conversations a slice ends only where every conversation begun in it has ended
    (no pair after the cut shares a conversation with one before it): the conversations of each
    slice, and so the rows and their order, are those of the whole source.
    """
    import numpy as np

    rows = rows or ROWS_PER_CHUNK
    if batch.height <= rows:
        yield batch
        return
    if whole_conversations:
        positions = batch.select("conversation_id").with_row_index("_position")
        last_of_conversation = positions.select(pl.col("_position").max().over("conversation_id").cum_max()).to_series().to_numpy()
        ends = np.flatnonzero(last_of_conversation == np.arange(batch.height)) + 1  # a cut may follow these rows
    else:
        ends = np.arange(1, batch.height + 1)
    start = 0
    while start < batch.height:
        at = int(np.searchsorted(ends, start + rows))
        end = int(ends[at]) if at < len(ends) else batch.height
        yield batch.slice(start, end - start)
        start = end


def _sft_rows(
    selected: pl.DataFrame, config: ExportConfig, titles: dict[str, str], duplicated: set[str], first_row: int
) -> tuple[list[dict[str, Any]], list[int], list[int]]:
    """Conversations of one source's selected pairs: runs of consecutive pairs of one talk (multi_turn), else one
    pair each; and each pair's row (numbered from first_row) and turn in it."""
    columns = selected.select(
        "item_id", "source_id", "section", "section_date", "conversation_id", "turn_index", "_question", "_answer", "_silent", "context", "_decision"
    ).rows()
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
    row_of, turn_of = [0] * len(columns), [0] * len(columns)
    for row_index, run in enumerate(runs, start=first_row):
        first = columns[run[0]]
        messages = []
        for position, i in enumerate(run):
            _, _, _, _, _, _, question, answer, silent, _, _ = columns[i]
            messages.append({"role": "user", "content": question})
            messages.append({"role": "assistant", "content": config.silence_text if silent else answer})
            row_of[i], turn_of[i] = row_index, position
        item_ids = [columns[i][0] for i in run]
        if len(run) == 1:
            row_id = first[0] if first[0] not in duplicated else f"{first[0]}@{first[1][:12]}"
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
    return rows, row_of, turn_of


def _pretrain_table(selected: pl.DataFrame, titles: dict[str, str], duplicated: set[str]) -> pl.DataFrame:
    """One row per selected item (an item id two sources share is told apart by its source)."""
    return selected.select(
        pl.when(pl.col("item_id").is_in(list(duplicated))).then(pl.format("{}@{}", "item_id", pl.col("source_id").str.slice(0, 12)))
        .otherwise(pl.col("item_id")).alias("id"),
        pl.when(pl.col("kind") == "pair").then(pl.col("_answer")).otherwise(pl.col("_text")).alias("text"),
        pl.when(pl.col("kind") == "pair").then(pl.lit("answer")).otherwise(pl.lit("passage")).alias("text_kind"),
        pl.col("item_id"),
        pl.col("source_id"),
        pl.col("source_id").replace_strict(titles, default="").alias("source_title"),
        pl.col("section"),
        pl.col("_decision").fill_null(UNREVIEWED).alias("decision"),
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


# ---- writing ----------------------------------------------------------------------------------


def _write_version(staging: Path, selection: Selection, parent: str | None, created_at: str) -> int:
    """Every file of the version into `staging`, fsynced; returns the number of dataset rows.

    The rows are built a source at a time, a big source a slice at a time (`content_batches`),
    and written as they come (the dataset's copies, seed.jsonl), so memory holds
    a batch of rows, not the version: what is kept whole is a row and a turn number per record
    (numpy) and the card's few examples.
    """
    import numpy as np
    import pyarrow as pa
    from datasets import DatasetInfo
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    config = selection.config
    titles = dict(zip(selection.sources["source_id"].to_list(), selection.sources["title"].to_list()))
    counts = selection.selected.group_by("item_id").len()
    duplicated = set(counts.filter(pl.col("len") > 1)["item_id"].to_list())
    features = _sft_features() if config.kind == "sft" else _pretrain_features()
    conversations = config.kind == "sft"
    info = DatasetInfo(description=f"Satsang workbench dataset version {selection.version_id}", license="other", features=features)
    row_of = np.zeros(selection.records.height, dtype=np.int64)
    turn_of = np.zeros(selection.records.height, dtype=np.int64)
    examples = CardExamples(conversations)
    n_records = 0

    files = DatasetFiles(staging, features, info, selection.digest[:16])
    bars_were_on = is_progress_bar_enabled()
    disable_progress_bar()
    try:
        with open(staging / SEED_NAME, "w", encoding="utf-8", newline="\n") if conversations else nullcontext() as seed:
            for batch in content_batches(selection):
                if conversations:
                    batch_rows, batch_row_of, batch_turn_of = _sft_rows(batch, config, titles, duplicated, files.n_rows)
                    table = pa.Table.from_pylist(batch_rows, schema=features.arrow_schema)
                    row_of[n_records : n_records + batch.height] = batch_row_of
                    turn_of[n_records : n_records + batch.height] = batch_turn_of
                    _write_seed(seed, batch_rows)
                    examples.see(batch_rows)
                else:
                    table = _pretrain_table(batch, titles, duplicated).to_arrow().cast(features.arrow_schema)
                    row_of[n_records : n_records + batch.height] = np.arange(files.n_rows, files.n_rows + batch.height)
                    examples.see(table.slice(0, 3).to_pylist())
                n_records += batch.height
                files.add(table)
                batch = table = batch_rows = None  # not held while the next batch is read and built
            files.close()
    except BaseException:
        files.discard()  # the staging directory goes; its open files with it
        raise
    finally:
        if bars_were_on:
            enable_progress_bar()
    if n_records != selection.records.height:
        raise RuntimeError(f"{n_records} items written for {selection.records.height} records")  # the records follow the batches' order
    pause_if_testing("export-after-data")

    records = selection.records.with_columns(pl.Series("row", row_of, dtype=pl.Int64), pl.Series("turn", turn_of, dtype=pl.Int64))
    header = _manifest_header(selection, parent, created_at, files.n_rows)
    with open(staging / MANIFEST_NAME, "wb") as manifest:
        write_manifest(manifest.write, header, _iter_records(records))

    from data_cards.render import render_version_card

    render_version_card(staging, _card_context(selection, header, examples, staging))
    write_checksums(staging)
    fsync_tree(staging)
    return files.n_rows


def _write_seed(seed: Any, rows: list[dict[str, Any]]) -> None:
    """seed.jsonl lines of these conversations: {"id", "messages": [{"role": "human"|"assistant", "content"}]}."""
    for row in rows:
        messages = [{"role": "human" if m["role"] == "user" else "assistant", "content": m["content"]} for m in row["messages"]]
        seed.write(json.dumps({"id": row["id"], "messages": messages}, ensure_ascii=False) + "\n")


class CardExamples:
    """What the card shows of the rows, kept as they stream by: the first multi-turn conversation and the
    first single ones (sft), or the first texts (pretrain), and how many conversations are multi-turn."""

    def __init__(self, conversations: bool, n: int = 3):
        self.conversations, self.n = conversations, n
        self.multi: list[dict[str, Any]] = []
        self.single: list[dict[str, Any]] = []
        self.n_multi_turn = 0

    def see(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if self.conversations and len(row["item_ids"]) > 1:
                self.n_multi_turn += 1
                if not self.multi:
                    self.multi.append(row)
            elif len(self.single) < self.n:
                self.single.append(row)

    def chosen(self) -> list[dict[str, Any]]:
        return self.multi + self.single[: self.n - len(self.multi)]


def _iter_records(records: pl.DataFrame, batch: int = 10_000) -> Iterator[dict[str, Any]]:
    for start in range(0, records.height, batch):
        yield from records.slice(start, batch).to_dicts()


def _manifest_header(selection: Selection, parent: str | None, created_at: str, n_rows: int) -> dict[str, Any]:
    """The manifest without its items (written after it, a record per line: `versions.write_manifest`)."""
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
    by_kind = dict(sorted(Counter(dict(selected.group_by("kind").len().iter_rows())).items()))
    decisions = dict(sorted(dict(selection.records.group_by("decision").len().iter_rows()).items()))
    return {
        "format": EXPORT_FORMAT,
        "version_id": selection.version_id,
        "name": config.name,
        "kind": config.kind,
        "digest": selection.digest,
        "parent": parent,
        "created_at": created_at,
        "created_at_basis": "the newest input: the latest source ingest or review response (so unchanged inputs give identical bytes)",
        "tool": tool_versions(),
        "review_store": selection.review.store,
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
    }


# ---- the data card's context ---------------------------------------------------------------


def _card_context(
    selection: Selection, manifest: dict[str, Any], examples: CardExamples, staging: Path
) -> dict[str, Any]:
    """What the data card template and its plots are given."""
    candidates = selection.candidates
    config = selection.config
    titles = dict(zip(selection.sources["source_id"].to_list(), selection.sources["title"].to_list()))
    total_tokens = manifest["counts"]["tokens"] or 1
    source_rows = [
        {**s, "share": s["tokens"] / total_tokens} for s in sorted(manifest["sources"], key=lambda s: -s["tokens"])
    ]
    # Items per source: in the version, and set aside (by step), for the plot and the table.
    # One pass over the candidates (not a filter per source: a 900-book corpus has millions of them); a source's
    # steps in the order its items first meet them.
    steps_by_source: dict[str, dict[str | None, int]] = {}
    for sid, step, n in candidates.group_by("source_id", "_step", maintain_order=True).len().iter_rows():
        steps_by_source.setdefault(sid, {})[step] = n
    per_source = []
    for row in selection.sources.iter_rows(named=True):
        sid = row["source_id"]
        if sid not in steps_by_source:
            continue
        counts = steps_by_source[sid]
        aside = {step: n for step, n in counts.items() if step is not None}
        per_source.append({"title": row["title"], "source_id": sid, "exported": counts.get(None, 0), "set_aside": aside})
    pool = candidates.filter(~pl.col("_step").is_in(["kind", "source"]).fill_null(False))
    in_version = candidates.filter(pl.col("_step").is_null())
    concept_basis_ok = pl.col("concept_basis").fill_null("") != "silence"
    scores = {  # arrays, not lists: a million items' scores as Python floats would cost 30 bytes each
        "concept": {
            "pool": pool.filter(concept_basis_ok)["concept_score"].drop_nulls().to_numpy(),
            "version": in_version.filter(concept_basis_ok)["concept_score"].drop_nulls().to_numpy(),
        },
        "critic": {
            "pool": pool["critic_score"].drop_nulls().to_numpy(),
            "version": in_version["critic_score"].drop_nulls().to_numpy(),
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
        "review": review_summary(selection.review.for_items(candidates["item_id"])),
        "review_store": selection.review.store,
        "scores": scores,
        "examples": _examples(examples, titles),
        "n_silent": int(selection.records["silent"].sum()),
        "n_edited": int((selection.records["decision"] == "edit").sum()),
        "n_multi_turn": examples.n_multi_turn,
        "n_reviewed_other_wording": int(selection.records["reviewed_hash"].is_not_null().sum()),
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


def _examples(examples: CardExamples, titles: dict[str, str]) -> list[dict[str, Any]]:
    """A few rows to show: the first multi-turn conversation, then the first single ones (sft); the first texts (pretrain)."""
    if examples.conversations:
        return [
            {"id": r["id"], "title": r["source_title"], "section": r["section"], "messages": r["messages"]}
            for r in examples.chosen()
        ]
    return [
        {"id": row["item_id"], "title": titles.get(row["source_id"], ""), "section": row["section"], "text": row["text"]}
        for row in examples.chosen()
    ]
