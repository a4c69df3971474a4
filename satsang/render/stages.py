"""What the curation stages show: ingest, dedup, score, critique, the workspace's status and a catalog selection.

Each function takes the report a stage's library call returns and gives a rich renderable;
none of them reads the workspace or computes anything the report does not hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl
    from rich.console import RenderableType
    from rich.table import Table

    from critic.stage import CritiqueReport
    from curation.catalog import CatalogEntry, Selection
    from curation.dedup import DedupReport
    from curation.export import ExportResult
    from curation.score import ScoreReport
    from curation.workspace import IngestReport, WorkspaceStatus


def render_ingest_reports(*reports: IngestReport) -> Table:
    """One row per file: its status, items kept, the convention detected and the parser's counts."""
    from rich.table import Column, Table
    from rich.text import Text

    from curation.quality import parse_report_notes

    table = Table(Column("file", overflow="fold"), "status", "items", "notes")
    for file in (file for report in reports for file in report.files):
        notes = [f"convention {file.convention}"] if file.convention else []
        if file.n_duplicate_item_ids:
            notes.append(f"{file.n_duplicate_item_ids} duplicate item ids dropped")
        notes += parse_report_notes(file.parse_report)
        table.add_row(Text(Path(file.path).name), file.status, str(file.n_items), ", ".join(notes) or "-")
    return table


def render_dedup_report(report: DedupReport) -> RenderableType:
    """Clusters, exact and near copies, contained texts, clusters across sources, and that nothing was dropped."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"dedup: shingles of {report.config.shingle_size} words, threshold {report.config.threshold}")
    table.add_column("items", justify="right")
    table.add_column("clusters", justify="right")
    table.add_column("with duplicates", justify="right")
    table.add_column("exact copies", justify="right")
    table.add_column("near copies", justify="right")
    table.add_column("contained", justify="right")
    table.add_column("across sources", justify="right")
    table.add_row(*(str(n) for n in (
        report.n_items, report.n_clusters, report.n_duplicate_clusters,
        report.n_exact_duplicates, report.n_near_duplicates, report.n_contained, report.n_cross_source_clusters,
    )))
    return Group(table, Text(f"{report.seconds:.2f} s; nothing dropped: each copy points to its cluster's representative."))


def render_score_report(report: ScoreReport) -> RenderableType:
    """Counts by basis, what was embedded, the concept's exemplars and held-out AUC, the score distributions."""
    from rich.text import Text

    from curation.score import SILENCE_SCORE, format_distributions

    lines = [
        f"items: {report.n_items}  scored: {report.n_scored}  (pairs {report.n_pairs}, passages {report.n_passages},"
        f" silences {report.n_silence} defined as {SILENCE_SCORE}, no text {report.n_empty})",
        f"embedded: {report.n_texts} distinct texts, {report.n_encoded} encoded now"
        f" ({report.n_texts - min(report.n_texts, report.n_encoded)} from the store)",
        f"concept: {report.agent['n_exemplars']} exemplars + {report.n_curator_examples} curator examples;"
        f" held-out AUC {report.holdout_auc:.4f} on {report.n_holdout} exemplars",
        format_distributions(report.distributions),
        "committed generation " + (str(report.generation) if report.generation is not None else "none (scores unchanged)"),
    ]
    return Text("\n".join(lines))


def render_critique_report(report: CritiqueReport) -> Table:
    """The summary as one rich Table: the score histogram, then unscored items by reason."""
    import math

    from rich.table import Table
    from rich.text import Text

    agent = report.agent
    title = f"critique by {agent.get('kind')} critic {agent.get('model')} ({agent.get('rubric_version')})"
    table = Table("score", "items", "", title=Text(title), show_edge=False)
    widest = max(report.histogram) if any(report.histogram) else 1
    for score, count in enumerate(report.histogram):
        label = "10" if score == 10 else f"{score}-{score + 1}"
        table.add_row(label, str(count), "█" * math.ceil(30 * count / widest) if count else "")
    table.add_section()
    table.add_row("scored", str(report.n_scored), f"mean {report.mean_score:.2f}" if report.mean_score is not None else "")
    table.add_row("unscored", str(report.n_unscored), "")
    for reason, count in report.unscored_by_reason.items():
        table.add_row(Text(f"  {reason}"), str(count), "")
    if report.n_kept_earlier:
        table.add_row("kept earlier judgement", str(report.n_kept_earlier), "this run's attempt failed")
    if report.flag_counts:
        table.add_section()
        for flag, count in report.flag_counts.items():
            table.add_row(Text(f"flag {flag}"), str(count), "")
    table.add_section()
    table.add_row("passages skipped", str(report.n_passages_skipped), "")
    if report.n_requests is not None:
        table.add_row("requests sent", str(report.n_requests), f"{report.n_cache_hits or 0} cache hits")
    return table


def render_status(workspace_status: WorkspaceStatus) -> RenderableType:
    """Items per source, kind and stage (the furthest each item has been through), and the totals per stage."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(
        "source",
        "id",
        "source kind",
        "item kind",
        "stage",
        "items",
        title=Text(f"{workspace_status.path.resolve()} (generation {workspace_status.generation})"),
    )
    for row in workspace_status.counts.iter_rows(named=True):
        table.add_row(
            Text(row["title"]), row["source_id"][:12], row["source_kind"], row["kind"] or "-", row["stage"], str(row["n_items"])
        )
    per_stage = ", ".join(f"{stage} {count}" for stage, count in workspace_status.items_per_stage().items())
    return Group(table, Text(f"{workspace_status.n_sources} sources, {workspace_status.n_items} items ({per_stage})"))


def render_parse_notes(sources: pl.DataFrame) -> RenderableType | None:
    """Per source, what its parse report says a curator should look at (None when nothing)."""
    import json

    from rich.text import Text

    from curation.quality import parse_report_notes

    lines = []
    for row in sources.iter_rows(named=True):
        notes = parse_report_notes(json.loads(row.get("parse_report") or "{}"))
        if notes:
            lines.append(f"parse of {row['title']}: " + "; ".join(notes))
    return Text("\n".join(lines)) if lines else None


def render_selection(selection: Selection, title: str | None = None) -> Table:
    """A rich table: one row per tradition, one column per relevance level, each cell "books / tokens"."""
    from rich.table import Table

    from curation.catalog import RELEVANCE_LEVELS, format_tokens

    summary = selection.summary()
    levels = [level for level in RELEVANCE_LEVELS if level in set(summary["corpus_relevance"].to_list())]
    table = Table(
        title=title or f"Selection: {len(selection)} of {selection.n_catalog} books, "
                       f"{format_tokens(selection.n_tokens)} tokens ({selection.filter.describe()})",
        caption="each cell: books / tokens",
    )
    table.add_column("tradition")
    for level in levels:
        table.add_column(level, justify="right")
    table.add_column("total", justify="right", style="bold")
    cells: dict[tuple[str, str], tuple[int, int]] = {
        (t, r): (b, n) for t, r, b, n in summary.iter_rows()
    }
    traditions = list(dict.fromkeys(summary["tradition"].to_list()))
    for tradition in traditions:
        row = [tradition]
        books = tokens = 0
        for level in levels:
            b, n = cells.get((tradition, level), (0, 0))
            books, tokens = books + b, tokens + n
            row.append(f"{b} / {format_tokens(n)}" if b else "-")
        row.append(f"{books} / {format_tokens(tokens)}")
        table.add_row(*row)
    if traditions:
        totals = ["total"]
        for level in levels:
            b = sum(cells.get((t, level), (0, 0))[0] for t in traditions)
            n = sum(cells.get((t, level), (0, 0))[1] for t in traditions)
            totals.append(f"{b} / {format_tokens(n)}")
        totals.append(f"{len(selection)} / {format_tokens(selection.n_tokens)}")
        table.add_section()
        table.add_row(*totals, style="bold")
    return table


def render_missing_books(missing: Sequence[CatalogEntry], shown: int = 20) -> RenderableType:
    """The selected books not found under the books directory: the first `shown`, then how many more."""
    from rich.console import Group
    from rich.table import Column, Table
    from rich.text import Text

    table = Table("id", Column("title", overflow="fold"), Column("catalog path", overflow="fold"), title="Not found")
    for entry in missing[:shown]:
        table.add_row(entry.id, Text(entry.title), Text(entry.path))
    if len(missing) > shown:
        return Group(table, Text(f"... and {len(missing) - shown} more not found"))
    return table


def render_next_steps(root: Path, export: ExportResult) -> str:
    """What a newcomer does after `satsang run`: review, look at the version, train on it.

    Plain lines, to print unwrapped: each command is meant to be copied whole.
    """
    from curation.workspace import default_workspace_path

    # The commands name the workspace only when it is not the one they find by default.
    where = "" if root == default_workspace_path().resolve() else f" -w {root}"
    steps = [
        (f"satsang review{where}", "accept, reject with a reason, or edit each pair in the dashboard"),
        (f"satsang status{where}", "items per source and stage; what the parse reports flag"),
        (f"satsang show {export.version_id}{where}", "the version just exported, and where its data card is"),
        (f"satsang export --name reviewed{where}", "after review: a version of the accepted and edited items"),
        (f"satsang train sft --dataset reviewed --base-model PATH{where}", "LoRA on it (README: Training)"),
    ]
    width = max(len(command) for command, _ in steps)
    return "Next:\n" + "\n".join(f"  {command:<{width}}  # {why}" for command, why in steps)
