"""The `satsang` command: one subcommand per stage, each a thin layer over a library call.

polars, the parsers and the workspace are imported inside the commands, so that
`satsang --help` answers at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer
from rich.console import Console

if TYPE_CHECKING:
    from curation.workspace import IngestReport, WorkspaceStatus

app = typer.Typer(
    help="Satsang workbench: curate contemplative dialogue books into reviewed, versioned datasets.",
    epilog="Example: satsang run  (curates the bundled sample book into ./satsang-workspace)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console()
err = Console(stderr=True)


class SourceKindChoice(str, Enum):
    dialogue = "dialogue"
    prose = "prose"


class ConventionChoice(str, Enum):
    # Mirrors the values DialogueConfig.convention accepts (curation/dialogue.py).
    auto = "auto"
    dm = "dm"
    qa = "qa"
    qa_dot = "qa_dot"


WorkspaceOption = Annotated[
    Optional[Path],
    typer.Option(
        "--workspace",
        "-w",
        help="Workspace directory. (default: $SATSANG_WORKSPACE, else ./satsang-workspace)",
        show_default=False,
    ),
]


DbOption = Annotated[
    Optional[str],
    typer.Option(
        "--db",
        help="Review database URL, e.g. postgresql://user@host/db. (default: $SATSANG_DB_URL, else reviews.db in the workspace)",
        show_default=False,
    ),
]


def fail(message: str) -> NoReturn:
    """One red line on stderr and exit status 1: what every expected error looks like."""
    err.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@contextmanager
def one_line_errors() -> Iterator[None]:
    from curation.workspace import WorkspaceError

    try:
        yield
    except WorkspaceError as error:
        fail(f"error: {error}")


@app.command()
def init(
    directory: Annotated[
        Optional[Path],
        typer.Argument(metavar="DIR", help="Where to create it. (default: $SATSANG_WORKSPACE, else ./satsang-workspace)", show_default=False),
    ] = None,
) -> None:
    """Create an empty workspace.

    Example: satsang init ./my-workspace
    """
    from curation.workspace import init_workspace

    with one_line_errors():
        workspace = init_workspace(directory)
    out.print(f"Created workspace {workspace.root.resolve()}", markup=False, highlight=False)


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="UTF-8 text files, one book each.", metavar="FILE", show_default=False)],
    kind: Annotated[SourceKindChoice, typer.Option(help="dialogue: speaker-marked talks, parsed into pairs; prose: split into passages.")],
    workspace: WorkspaceOption = None,
    title: Annotated[Optional[str], typer.Option(help="Book title (also cut out where it repeats as a page header). (default: the file name)", show_default=False)] = None,
    convention: Annotated[Optional[ConventionChoice], typer.Option(help="Dialogue speaker markers: dm (D.:/M.:), qa (Q:/A:), qa_dot (Q./A.), or auto: detect from the book (default).", show_default=False)] = None,
    target_tokens: Annotated[Optional[int], typer.Option(help="Prose: target passage length in tokens (default: 200).", show_default=False)] = None,
    answerer: Annotated[Optional[list[str]], typer.Option(help="Dialogue: a speaker label that answers (the teacher), e.g. SOCRATES; repeatable. Added to the built-in names.", show_default=False)] = None,
    asker: Annotated[Optional[list[str]], typer.Option(help="Dialogue: a speaker label that asks, e.g. GLAUCON; repeatable. Any other titled name asks too.", show_default=False)] = None,
    licence: Annotated[str, typer.Option(help="Licence note kept with the source.")] = "",
) -> None:
    """Ingest books into the workspace, all files in one commit: if any file is rejected, nothing is added.

    Example: satsang ingest talks.txt --kind dialogue --title "Talks with Sri Ramana Maharshi"
    """
    dialogue_config, prose_config = _parser_configs(kind, convention, target_tokens, answerer, asker)
    from curation.workspace import Workspace

    with one_line_errors():
        ws = Workspace.open(workspace)
        with _ingest_progress(len(files)) as progress:
            report = ws.ingest(
                files,
                kind.value,  # type: ignore[arg-type]
                dialogue_config=dialogue_config,
                prose_config=prose_config,
                title=title,
                licence=licence,
                progress=progress,
            )
    _print_ingest_reports(report)
    if report.generation is None:
        out.print("Nothing new: the workspace is unchanged.")
    else:
        out.print(f"Committed generation {report.generation} to {ws.root.resolve()}", markup=False, highlight=False)


@app.command()
def status(workspace: WorkspaceOption = None, db: DbOption = None) -> None:
    """Show how many items each source has, by kind and stage.

    Example: satsang status --workspace ./my-workspace
    """
    from curation.workspace import Workspace

    with one_line_errors():
        ws = Workspace.open(workspace)
        workspace_status = ws.status(_review_decisions(ws.root, db))
    _print_status(workspace_status)


def _review_decisions(root: Path, db_url: str | None):
    """The review database's current decisions, or None when nobody has reviewed yet."""
    import os

    from curation.responses import SQLITE_FILE, ResponseStore

    if not (db_url or os.environ.get("SATSANG_DB_URL") or (root / SQLITE_FILE).exists()):
        return None  # never create a database just to say nothing is in it
    with ResponseStore.open(root, url=db_url) as store:
        return store.state()


@app.command()
def dedup(
    workspace: WorkspaceOption = None,
    shingle_size: Annotated[int, typer.Option(help="Words per shingle.")] = 5,
    num_perm: Annotated[int, typer.Option(help="MinHash permutations.")] = 128,
    threshold: Annotated[float, typer.Option(help="Jaccard similarity at or above which two items are near duplicates.")] = 0.7,
) -> None:
    """Mark exact and near duplicates (MinHash + LSH, confirmed by true Jaccard) with a cluster and a kept representative.

    Nothing is dropped: every item gets dedup_* columns; the export decides.

    Example: satsang dedup --threshold 0.8
    """
    from curation.dedup import DedupConfig, run_dedup
    from curation.workspace import Workspace

    with one_line_errors():
        report = run_dedup(Workspace.open(workspace), DedupConfig(shingle_size=shingle_size, num_perm=num_perm, threshold=threshold))
    _print_dedup_report(report)


@app.command()
def score(
    workspace: WorkspaceOption = None,
    db: DbOption = None,
    model: Annotated[Optional[str], typer.Option(help="Sentence-transformers model: an HF id or a local path. (default: $SATSANG_EMBEDDING_MODEL, else the packaged all-MiniLM-L6-v2)", show_default=False)] = None,
    learn: Annotated[bool, typer.Option("--learn", help="Also learn the concept from curators' decisions (accepted and edited answers, rejections as not contemplative).")] = False,
) -> None:
    """Score each answer and passage 0-1, contemplative (1) vs conversational (0), from embeddings.

    The concept is a classifier over labelled exemplars shipped in curation/data/;
    embeddings are kept in the workspace, so re-scoring unchanged items encodes nothing.

    Example: satsang score --learn
    """
    from curation.score import ScoreConfig, ScoreError, run_score
    from curation.workspace import Workspace

    with one_line_errors():
        ws = Workspace.open(workspace)
        config = ScoreConfig(model=model) if model else ScoreConfig()
        try:
            report = run_score(ws, config, learn=learn, decisions=_review_decisions(ws.root, db) if learn else None)
        except ScoreError as error:
            fail(f"error: {error}")
    out.print(report.format(), markup=False, highlight=False)


@app.command()
def critique(
    workspace: WorkspaceOption = None,
    base_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible endpoint. (default: $SATSANG_CRITIC_BASE_URL; unset: the offline critic)", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name. (default: $SATSANG_CRITIC_MODEL, else the endpoint's first model)", show_default=False)] = None,
) -> None:
    """Score every pair's aliveness 0-10 with a rationale and flags, and add critic_* columns.

    With no endpoint configured, the offline critic (named text signals plus the concept score) judges.
    The API key is read from $SATSANG_CRITIC_API_KEY (or $OPENAI_API_KEY) and never written anywhere.

    Example: SATSANG_CRITIC_BASE_URL=http://127.0.0.1:8000/v1 satsang critique
    """
    from critic.stage import CriticSettingsError, critic_from_settings, render_report, run_critique
    from curation.workspace import Workspace

    with one_line_errors():
        ws = Workspace.open(workspace)
        try:
            critic = critic_from_settings(base_url, model)
        except CriticSettingsError as error:
            fail(f"error: {error}")
        report = run_critique(ws, critic, console=err)
    out.print(render_report(report))


class DatasetKindChoice(str, Enum):
    sft = "sft"
    pretrain = "pretrain"


@app.command()
def export(
    name: Annotated[str, typer.Option(help="Version name; the id is <name>-<12 hex of its content and config>.")],
    kind: Annotated[DatasetKindChoice, typer.Option(help="sft: conversations of pairs; pretrain: text of passages.")] = DatasetKindChoice.sft,
    workspace: WorkspaceOption = None,
    db: DbOption = None,
    include_unreviewed: Annotated[bool, typer.Option("--include-unreviewed", help="Also take items no one has reviewed (subject to the thresholds).")] = False,
    min_concept_score: Annotated[Optional[float], typer.Option(help="Unreviewed items: concept score (0-1) at least this.", show_default=False)] = None,
    min_critic_score: Annotated[Optional[float], typer.Option(help="Unreviewed pairs: critic score (0-10) at least this.", show_default=False)] = None,
    source: Annotated[Optional[list[str]], typer.Option(help="Only this source (sha256, prefix or title); repeatable.", show_default=False)] = None,
    all_duplicates: Annotated[bool, typer.Option("--all-duplicates", help="Keep every member of a dedup cluster, not only its representative.")] = False,
    with_answers: Annotated[bool, typer.Option("--with-answers", help="pretrain: pairs' answers become text too.")] = False,
    single_turn: Annotated[bool, typer.Option("--single-turn", help="sft: one pair per conversation, never joined.")] = False,
    silence_as: Annotated[Optional[str], typer.Option(help="sft: the assistant message for a silent answer (default: leave those pairs out).", show_default=False)] = None,
) -> None:
    """Export an immutable, content-addressed dataset version with its data card.

    Default selection: accepted and edited items, one per dedup cluster.
    Exporting unchanged inputs again gives the same id and writes nothing.

    Example: satsang export --name talks-v1 --kind sft
    """
    from curation.export import ExportConfig, export_version, render_export_result
    from curation.workspace import Workspace

    with one_line_errors():
        config = ExportConfig(
            name=name, kind=kind.value, include_unreviewed=include_unreviewed,
            min_concept_score=min_concept_score, min_critic_score=min_critic_score,
            sources=tuple(source or ()), representatives_only=not all_duplicates,
            include_answers_in_pretrain=with_answers, item_kinds=("passage", "pair") if with_answers else (),
            multi_turn=not single_turn, silence_text=silence_as,
        )
        result = export_version(Workspace.open(workspace), config, db_url=db)
    out.print(render_export_result(result))


@app.command()
def versions(workspace: WorkspaceOption = None) -> None:
    """List the dataset versions in the workspace.

    Example: satsang versions
    """
    from curation.export import list_versions, render_versions
    from curation.workspace import Workspace

    with one_line_errors():
        infos = list_versions(Workspace.open(workspace))
    out.print(render_versions(infos))


@app.command()
def show(
    version: Annotated[str, typer.Argument(help="Version id, unique prefix, or name (its latest version).")],
    workspace: WorkspaceOption = None,
    html: Annotated[Optional[Path], typer.Option(help="Also write the data card as HTML here, plots embedded.", show_default=False)] = None,
) -> None:
    """Show a version's manifest summary and where its data card is.

    Example: satsang show sample --html card.html
    """
    from curation.export import load_manifest, render_manifest, resolve_version
    from curation.workspace import Workspace
    from data_cards.render import write_card_html

    with one_line_errors():
        ws = Workspace.open(workspace)
        path = resolve_version(ws, version)
        out.print(render_manifest(load_manifest(ws, version), path))
        if html is not None:
            out.print(f"Card as HTML: {write_card_html(path, html)}", markup=False, highlight=False)


@app.command()
def diff(
    old: Annotated[str, typer.Argument(help="The older version (id, prefix or name).")],
    new: Annotated[str, typer.Argument(help="The newer version.")],
    workspace: WorkspaceOption = None,
) -> None:
    """Items added, removed and edited between two versions, per source, with examples.

    Example: satsang diff talks-v1-3f2a talks-v1-9c41
    """
    from curation.export import diff_versions, render_diff
    from curation.workspace import Workspace

    with one_line_errors():
        out.print(render_diff(diff_versions(Workspace.open(workspace), old, new)))


@app.command()
def verify(
    version: Annotated[str, typer.Argument(help="Version id, unique prefix, or name.")],
    workspace: WorkspaceOption = None,
) -> None:
    """Recompute every hash of a version; report any changed, missing or added file.

    Example: satsang verify sample
    """
    from curation.export import render_verify, verify_version
    from curation.workspace import Workspace

    with one_line_errors():
        problems = verify_version(Workspace.open(workspace), version)
    out.print(render_verify(version, problems))
    if problems:
        raise typer.Exit(1)


@app.command()
def review(
    workspace: WorkspaceOption = None,
    db: DbOption = None,
    port: Annotated[Optional[int], typer.Option(help="Port to serve on. (default: Streamlit's, 8501)", show_default=False)] = None,
) -> None:
    """Open the review dashboard: accept, reject with a reason, or edit items; decisions go to the review database.

    Keys: A accept, 1-6 reject with a reason, E edit, S skip, U undo, J/K next/previous.

    Example: satsang review --workspace ./satsang-workspace --port 8501
    """
    from curation.workspace import Workspace
    from dashboards.launch import launch

    with one_line_errors():
        ws = Workspace.open(workspace)
    raise typer.Exit(launch(ws.root, db, port=port))


@app.command()
def run(workspace: WorkspaceOption = None) -> None:
    """Curate the bundled sample (talks 1-49 of Talks with Sri Ramana Maharshi, and Nan Yar?) through every stage there is.

    The stages: create the workspace (or reuse it), ingest the books, dedup, score,
    critique (offline, unless $SATSANG_CRITIC_BASE_URL names an endpoint), and export a
    version "sample" of the unreviewed items with its data card.
    Running it again is safe: books already ingested add nothing, unchanged items are not re-encoded.

    Example: satsang run --workspace /tmp/sample-workspace
    """
    from critic.stage import render_report
    from curation.export import render_export_result
    from satsang.pipeline import run_pipeline

    with one_line_errors(), _ingest_progress(None) as progress:
        result = run_pipeline(workspace, progress=progress)
    root = result.workspace.root.resolve()
    out.print(("Created" if result.created else "Using existing") + f" workspace {root}", markup=False, highlight=False)
    _print_ingest_reports(*result.ingest_reports)
    _print_dedup_report(result.dedup_report)
    out.print(result.score_report.format(), markup=False, highlight=False)
    out.print(render_report(result.critique_report))
    with one_line_errors():
        _print_status(result.workspace.status())
    out.print(render_export_result(result.export_result))
    out.print(f"Workspace: {root}", markup=False, highlight=False)


def _parser_configs(
    kind: SourceKindChoice,
    convention: ConventionChoice | None,
    target_tokens: int | None,
    answerers: list[str] | None = None,
    askers: list[str] | None = None,
):
    """The parser config the options ask for; options that do not fit the kind are errors, not ignored."""
    if kind is SourceKindChoice.dialogue:
        if target_tokens is not None:
            fail("error: --target-tokens applies to --kind prose only")
        from curation.dialogue import DialogueConfig

        default = DialogueConfig()
        return DialogueConfig(
            convention=(convention or ConventionChoice.auto).value,
            answerer_names=tuple(answerers or ()) + default.answerer_names,
            question_labels=tuple(askers or ()) + default.question_labels,
        ), None
    if convention is not None or answerers or askers:
        fail("error: --convention, --answerer and --asker apply to --kind dialogue only")
    from dataclasses import replace

    from curation.prose import ProseConfig

    default = ProseConfig()
    if target_tokens is None:
        return None, default
    if target_tokens < default.min_tokens:
        fail(f"error: --target-tokens must be at least {default.min_tokens}")
    # The hard cap follows a target above the default, so that a long target stays reachable.
    return None, replace(default, target_tokens=target_tokens, max_tokens=max(default.max_tokens, 2 * target_tokens))


@contextmanager
def _ingest_progress(n_files: int | None):
    """A rich progress bar on stderr, fed by the workspace's progress callback; off when stderr is no terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if n_files is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("starting", total=n_files)
        started: set[Path] = set()

        def on_progress(path: Path | None, phase: str) -> None:
            if path is None:
                bar.update(task, description=phase)
                return
            if phase == "reading" and started:
                bar.advance(task)  # the file before this one is done
            started.add(path)
            bar.update(task, description=f"{phase} {path.name}")

        yield on_progress


def _print_ingest_reports(*reports: IngestReport) -> None:
    from rich.table import Column, Table
    from rich.text import Text

    table = Table(Column("file", overflow="fold"), "status", "items", "notes")
    for file in (file for report in reports for file in report.files):
        notes = [f"convention {file.convention}"] if file.convention else []
        if file.n_duplicate_item_ids:
            notes.append(f"{file.n_duplicate_item_ids} duplicate item ids dropped")
        # The parser's counts, less "pairs" (the items column) and the zeros.
        notes += [f"{count} {name.replace('_', ' ')}" for name, count in file.parse_report.items() if count and name != "pairs"]
        table.add_row(Text(Path(file.path).name), file.status, str(file.n_items), ", ".join(notes) or "-")
    out.print(table)


def _print_dedup_report(report) -> None:
    from rich.table import Table

    table = Table(title=f"dedup: shingles of {report.config.shingle_size} words, threshold {report.config.threshold}")
    table.add_column("items", justify="right")
    table.add_column("clusters", justify="right")
    table.add_column("with duplicates", justify="right")
    table.add_column("exact copies", justify="right")
    table.add_column("near copies", justify="right")
    table.add_column("across sources", justify="right")
    table.add_row(*(str(n) for n in (
        report.n_items, report.n_clusters, report.n_duplicate_clusters,
        report.n_exact_duplicates, report.n_near_duplicates, report.n_cross_source_clusters,
    )))
    out.print(table)
    out.print(f"{report.seconds:.2f} s; nothing dropped: each copy points to its cluster's representative.")


def _print_status(workspace_status: WorkspaceStatus) -> None:
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
    out.print(table)
    per_stage = ", ".join(f"{stage} {count}" for stage, count in workspace_status.items_per_stage().items())
    out.print(
        f"{workspace_status.n_sources} sources, {workspace_status.n_items} items ({per_stage})",
        markup=False,
        highlight=False,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
