"""The `satsang` command: one subcommand per stage, each a thin layer over a library call.

polars, the parsers and the workspace are imported inside the commands, so that
`satsang --help` answers at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console

from satsang.options import ConfigSettings, config_command

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
    play = "play"


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
    """Any package's own error becomes one red line; anything else is a bug and keeps its traceback."""
    from critic.base import CriticError
    from curation.errors import CurationError
    from inference.generate import InferenceError
    from training.lineage import TrainingError

    try:
        yield
    except (CurationError, CriticError, TrainingError, InferenceError) as error:
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
    files: Annotated[list[Path], typer.Argument(help="UTF-8 text files or PDFs (their text is extracted and stored), one book each.", metavar="FILE", show_default=False)],
    kind: Annotated[SourceKindChoice, typer.Option(help="dialogue: speaker-marked talks, parsed into pairs; prose: split into passages.")],
    workspace: WorkspaceOption = None,
    title: Annotated[Optional[str], typer.Option(help="Book title (also cut out where it repeats as a page header). (default: the file name)", show_default=False)] = None,
    convention: Annotated[Optional[ConventionChoice], typer.Option(help="Dialogue speaker markers: dm (D.:/M.:), qa (Q:/A:), qa_dot (Q./A.), play (NAME. in capitals), or auto: detect from the book (default).", show_default=False)] = None,
    target_tokens: Annotated[Optional[int], typer.Option(help="Prose: target passage length in tokens (default: 200).", show_default=False)] = None,
    answerer: Annotated[Optional[list[str]], typer.Option(help="Dialogue: a speaker label that answers (the teacher), e.g. SOCRATES; repeatable. Added to the built-in names.", show_default=False)] = None,
    asker: Annotated[Optional[list[str]], typer.Option(help="Dialogue: a speaker label that asks, e.g. GLAUCON; repeatable. Any other titled name asks too.", show_default=False)] = None,
    licence: Annotated[str, typer.Option(help="Licence note kept with the source.")] = "",
) -> None:
    """Ingest books into the workspace, all files in one commit: if any file is rejected, nothing is added.

    Example: satsang ingest talks.txt --kind dialogue --title "Talks with Sri Ramana Maharshi"

    Example: satsang ingest talks.pdf --kind dialogue   (a PDF: its text is extracted, each item keeps its page)
    """
    dialogue_config, prose_config = _parser_configs(kind, convention, target_tokens, answerer, asker)
    from curation.workspace import Workspace
    from satsang.render.progress import ingest_progress
    from satsang.render.stages import render_ingest_reports

    with one_line_errors():
        ws = Workspace.open(workspace)
        with ingest_progress(err, len(files)) as progress:
            report = ws.ingest(
                files,
                kind.value,  # type: ignore[arg-type]
                dialogue_config=dialogue_config,
                prose_config=prose_config,
                title=title,
                licence=licence,
                progress=progress,
            )
    out.print(render_ingest_reports(report))
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
    from satsang.render.stages import render_parse_notes, render_status

    with one_line_errors():
        ws = Workspace.open(workspace)
        workspace_status = ws.status(db_url=db)  # "reviewed": from the review database
    out.print(render_status(workspace_status))
    notes = render_parse_notes(ws.sources())
    if notes is not None:
        out.print(notes)


class ExecutorChoice(str, Enum):
    local = "local"
    ray = "ray"


class RelevanceChoice(str, Enum):
    # Mirrors curation.catalog.RELEVANCE_LEVELS.
    core = "core"
    useful = "useful"
    marginal = "marginal"
    questionable = "questionable"


class ConfidenceChoice(str, Enum):
    # Mirrors curation.catalog.CONFIDENCE_LEVELS.
    high = "high"
    medium = "medium"
    low = "low"


ExecutorOption = Annotated[
    ExecutorChoice,
    typer.Option("--executor", help="Where the heavy work runs: local (this process) or ray (a Ray cluster, see --ray-address)."),
]
RayAddressOption = Annotated[
    Optional[str],
    typer.Option(
        "--ray-address",
        help="With --executor ray: the cluster to join, 'auto' (the cluster this node belongs to) or ray://HEAD:10001. (default: $RAY_ADDRESS, else a Ray started on this machine)",
        show_default=False,
    ),
]


def _check_executor(choice: ExecutorChoice, ray_address: str | None) -> None:
    if ray_address and choice is not ExecutorChoice.ray:
        fail("error: --ray-address applies to --executor ray only")


@contextmanager
def _executor(choice: ExecutorChoice, ray_address: str | None):
    """The executor the options name, closed (a Ray started here is shut down) when the command is done."""
    from curation.executors import make_executor

    try:
        executor = make_executor(choice.value, ray_address)
    except (RuntimeError, ConnectionError) as error:
        fail(f"error: {error}")
    try:
        yield executor
    finally:
        executor.close()


@app.command()
def select(
    catalog: Annotated[Path, typer.Option("--catalog", help="Book catalog: JSON lines, one book's annotation per line.", show_default=False)],
    books_dir: Annotated[Optional[Path], typer.Option("--books-dir", help="Where the books' .txt files are: at the catalog's path below it, or named <id>.txt or <id>_*.txt anywhere below it. Without it: report only.", show_default=False)] = None,
    tradition: Annotated[Optional[list[str]], typer.Option(help="Primary tradition; repeatable; glob patterns such as 'buddhist-*'.", show_default=False)] = None,
    secondary: Annotated[bool, typer.Option("--secondary", help="--tradition also matches a book's secondary tradition.")] = False,
    min_depth: Annotated[int, typer.Option(min=1, max=3, help="Least contemplative depth (1-3).")] = 1,
    max_depth: Annotated[int, typer.Option(min=1, max=3, help="Greatest contemplative depth (1-3).")] = 3,
    relevance: Annotated[Optional[list[RelevanceChoice]], typer.Option(help="Corpus relevance; repeatable.", show_default=False)] = None,
    confidence: Annotated[Optional[list[ConfidenceChoice]], typer.Option(help="Annotator confidence; repeatable.", show_default=False)] = None,
    era: Annotated[Optional[list[str]], typer.Option(help="Era (ancient, classical, medieval, early-modern, modern, contemporary); repeatable.", show_default=False)] = None,
    theme: Annotated[Optional[list[str]], typer.Option(help="Theme, e.g. self-inquiry; repeatable: a book needs any one of them.", show_default=False)] = None,
    orientation: Annotated[Optional[list[str]], typer.Option(help="Orientation, e.g. dialogue, sermons-talks; repeatable.", show_default=False)] = None,
    min_tokens: Annotated[Optional[int], typer.Option(min=0, help="Smallest book, in tokens.", show_default=False)] = None,
    max_tokens: Annotated[Optional[int], typer.Option(min=0, help="Largest book, in tokens.", show_default=False)] = None,
    plot: Annotated[Path, typer.Option(help="Where to write the selection plot (PNG).")] = Path("selection.png"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report and look for the books; ingest nothing.")] = False,
    follow_links: Annotated[bool, typer.Option("--follow-links", help="Also take books whose file resolves outside --books-dir (a symlink, a linked folder, '..' in a catalog path).")] = False,
    target_tokens: Annotated[Optional[int], typer.Option(help="Prose: target passage length in tokens (default: 200).", show_default=False)] = None,
    workspace: WorkspaceOption = None,
    executor: ExecutorOption = ExecutorChoice.local,
    ray_address: RayAddressOption = None,
) -> None:
    """Select books from a catalog, report the selection, and ingest the books found as prose.

    Filters: tradition, depth, relevance, confidence, era, theme, orientation, size. Every
    catalog line is checked; a malformed one is reported with its line number and skipped.
    The books found under --books-dir are ingested in one commit, titled from the catalog;
    those not found are listed.

    Example: satsang select --catalog gutenberg-annotations.jsonl --books-dir ./gutenberg --relevance core --relevance useful --min-depth 2
    """
    from curation.catalog import CatalogError, CatalogFilter, find_books, ingest_selection, load_catalog, plot_selection
    from curation.catalog import select as select_books
    from curation.workspace import Workspace
    from satsang.render.progress import books_progress
    from satsang.render.stages import render_ingest_reports, render_missing_books, render_selection

    _check_executor(executor, ray_address)
    _, prose_config = _parser_configs(SourceKindChoice.prose, None, target_tokens)
    try:
        loaded = load_catalog(catalog)
        selection = select_books(loaded.entries, CatalogFilter(
            traditions=tuple(tradition or ()), include_secondary=secondary, min_depth=min_depth, max_depth=max_depth,
            relevance=tuple(r.value for r in relevance or ()), confidence=tuple(c.value for c in confidence or ()),
            eras=tuple(era or ()), themes=tuple(theme or ()), orientations=tuple(orientation or ()),
            min_tokens=min_tokens, max_tokens=max_tokens,
        ))
    except CatalogError as error:
        fail(f"error: {error}")
    shown = 20
    for problem in loaded.problems[:shown]:
        err.print(f"skipped {problem}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    if len(loaded.problems) > shown:
        err.print(f"... and {len(loaded.problems) - shown} more lines skipped", style="yellow")
    out.print(
        f"{catalog}: {loaded.n_lines} lines, {len(loaded.entries)} books read, {len(loaded.problems)} lines skipped,"
        f" {loaded.n_warned} books with annotation warnings",
        markup=False, highlight=False,
    )
    out.print(render_selection(selection))
    out.print(f"Plot: {plot_selection(selection, plot)}", markup=False, highlight=False)
    if books_dir is None:
        return
    try:
        found, missing, outside = find_books(selection, books_dir, follow_links=follow_links)
    except CatalogError as error:
        fail(f"error: {error}")
    for entry, path in outside:
        err.print(f"refused {path} ({entry.id}): it resolves outside {books_dir} (--follow-links takes it)",
                  style="yellow", markup=False, highlight=False, soft_wrap=True)
    out.print(f"Found {len(found)} of {len(selection)} selected books under {books_dir}; {len(missing)} not found.",
              markup=False, highlight=False)
    if missing:
        out.print(render_missing_books(missing, shown))
    if dry_run or not found:
        return
    with one_line_errors():
        ws = Workspace.open(workspace)
        with _executor(executor, ray_address) as pool, books_progress(err, len(found)) as on_progress:
            result = ingest_selection(ws, found, executor=pool, prose_config=prose_config, progress=on_progress)
    for book, reason in result.rejected:
        err.print(f"rejected {book.path} ({book.entry.id}): {reason}", style="yellow", markup=False, highlight=False)
    out.print(render_ingest_reports(result.report))
    if result.report.generation is None:
        out.print("Nothing new: the workspace is unchanged.")
    else:
        out.print(f"Committed generation {result.report.generation} to {ws.root.resolve()}", markup=False, highlight=False)


@config_command(app, "dedup", "curation.dedup:DedupConfig")
def dedup(
    settings: ConfigSettings,
    workspace: WorkspaceOption = None,
    executor: ExecutorOption = ExecutorChoice.local,
    ray_address: RayAddressOption = None,
) -> None:
    """Mark exact and near duplicates (MinHash + LSH, confirmed by true Jaccard) with a cluster and a kept representative.

    Nothing is dropped: every item gets dedup_* columns; the export decides. With
    --executor ray, signatures, LSH bands and confirmation run as Ray tasks over
    partition files in <workspace>/scratch/ (shared storage on a cluster); the result
    is the same.

    Example: satsang dedup --threshold 0.8 --executor ray --ray-address auto
    """
    from curation.dedup import DedupConfig, run_dedup
    from curation.workspace import Workspace
    from satsang.render.stages import render_dedup_report

    _check_executor(executor, ray_address)
    try:
        config = DedupConfig(**settings)
    except ValueError as error:
        fail(f"error: {error}")
    with one_line_errors():
        ws = Workspace.open(workspace)
        if executor is ExecutorChoice.local:
            report = run_dedup(ws, config)
        else:
            from curation.distributed import run_dedup_distributed

            with _executor(executor, ray_address) as pool:
                report = run_dedup_distributed(ws, config, executor=pool)
    out.print(render_dedup_report(report))


@config_command(app, "score", "curation.score:ScoreConfig")
def score(
    settings: ConfigSettings,
    workspace: WorkspaceOption = None,
    db: DbOption = None,
    learn: Annotated[bool, typer.Option("--learn", help="Also learn the concept from curators' decisions (accepted and edited answers, rejections as not contemplative).")] = False,
    executor: ExecutorOption = ExecutorChoice.local,
    ray_address: RayAddressOption = None,
) -> None:
    """Score each answer and passage 0-1, contemplative (1) vs conversational (0), from embeddings.

    The concept is a classifier over labelled exemplars shipped in curation/data/;
    embeddings are kept in the workspace, so re-scoring unchanged items encodes nothing.
    With --executor ray, Ray actors (one model load each) encode the texts, batch for
    batch as a local run: the scores are identical.

    Example: satsang score --learn
    """
    from curation.review import load_review_state
    from curation.score import ScoreConfig, ScoreError, run_score
    from curation.workspace import Workspace
    from satsang.render.stages import render_score_report

    _check_executor(executor, ray_address)
    with one_line_errors():
        ws = Workspace.open(workspace)
        config = ScoreConfig(**settings)
        decisions = load_review_state(ws.root, db).decisions if learn else None
        try:
            if executor is ExecutorChoice.local:
                report = run_score(ws, config, learn=learn, decisions=decisions)
            else:
                from curation.distributed import run_score_distributed

                with _executor(executor, ray_address) as pool:
                    report = run_score_distributed(ws, config, pool, learn, decisions=decisions)
        except ScoreError as error:
            fail(f"error: {error}")
    out.print(render_score_report(report))


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
    from critic.stage import CriticSettingsError, critic_from_settings, run_critique
    from curation.workspace import Workspace
    from satsang.render.progress import critique_progress
    from satsang.render.stages import render_critique_report

    with one_line_errors():
        ws = Workspace.open(workspace)
        try:
            critic = critic_from_settings(base_url, model)
        except CriticSettingsError as error:
            fail(f"error: {error}")
        with critique_progress(err) as progress:
            report = run_critique(ws, critic, progress=progress)
    out.print(render_critique_report(report))


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
    from curation.export import ExportConfig, export_version
    from curation.workspace import Workspace
    from satsang.render.versions import render_export_result

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
    from curation.versions import list_versions
    from curation.workspace import Workspace
    from satsang.render.versions import render_versions

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
    from curation.versions import load_manifest, resolve_version
    from curation.workspace import Workspace
    from data_cards.render import write_card_html
    from satsang.render.versions import render_manifest

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
    from curation.versions import diff_versions
    from curation.workspace import Workspace
    from satsang.render.versions import render_diff

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
    from curation.versions import verify_version
    from curation.workspace import Workspace
    from satsang.render.versions import render_verify

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
    address: Annotated[str, typer.Option(help="Interface to listen on; 0.0.0.0 serves other machines too (the app has no login).")] = "127.0.0.1",
) -> None:
    """Open the review dashboard: accept, reject with a reason, or edit items; decisions go to the review database.

    Keys: A accept, 1-6 reject with a reason, E edit, S skip, U undo, J/K next/previous.

    Example: satsang review --workspace ./satsang-workspace --port 8501 --address 127.0.0.1
    """
    from curation.workspace import Workspace
    from dashboards.launch import launch

    with one_line_errors():
        ws = Workspace.open(workspace)
    raise typer.Exit(launch(ws.root, db, port=port, address=address))


@app.command()
def run(workspace: WorkspaceOption = None) -> None:
    """Curate the bundled sample (talks 1-49 of Talks with Sri Ramana Maharshi, and Nan Yar?) through every stage there is.

    The stages: create the workspace (or reuse it), ingest the books, dedup, score,
    critique (offline, unless $SATSANG_CRITIC_BASE_URL names an endpoint), and export a
    version "sample" of the unreviewed items with its data card.
    Running it again is safe: books already ingested add nothing, unchanged items are not re-encoded.

    Example: satsang run --workspace /tmp/sample-workspace
    """
    from satsang.pipeline import run_pipeline
    from satsang.render.progress import ingest_progress
    from satsang.render.stages import render_critique_report, render_dedup_report, render_ingest_reports, render_score_report, render_status
    from satsang.render.versions import render_export_result

    with one_line_errors(), ingest_progress(err, None) as progress:
        result = run_pipeline(workspace, progress=progress)
    root = result.workspace.root.resolve()
    out.print(("Created" if result.created else "Using existing") + f" workspace {root}", markup=False, highlight=False)
    out.print(render_ingest_reports(*result.ingest_reports))
    out.print(render_dedup_report(result.dedup_report))
    out.print(render_score_report(result.score_report))
    out.print(render_critique_report(result.critique_report))
    out.print(render_status(result.status))  # with the review decisions, as `satsang status` counts them
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


# ---- training: satsang train pretrain|sft, satsang audit, satsang diagnose ----------------------
train_app = typer.Typer(
    help="Train LoRA adapters on dataset versions: continued pretraining on prose, then SFT on dialogue.",
    epilog="Example: satsang train pretrain --dataset prose --base-model microsoft/phi-2 --output runs/prose",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")

DatasetOption = Annotated[str, typer.Option("--dataset", help="Dataset version: id, unique id prefix, name (its latest) or a version directory.", show_default=False)]
OutputOption = Annotated[Path, typer.Option("--output", help="Run directory: checkpoint-N/ every --save-steps; the final adapter, tokenizer and satsang_lineage.json at its top.", show_default=False)]
ConfigOption = Annotated[Optional[Path], typer.Option("--config", help="TOML, JSON or YAML file of settings (flat, or \\[pretrain]/\\[sft] tables); flags override it.", show_default=False)]
ResumeOption = Annotated[Optional[Path], typer.Option("--resume", help="Resume from this checkpoint-N directory (same dataset version).", show_default=False)]
# The training settings themselves are options made from the config's fields (satsang/options.py).


@config_command(train_app, "pretrain", "training.config:PretrainConfig")
def train_pretrain_command(
    dataset: DatasetOption,
    base_model: Annotated[str, typer.Option("--base-model", help="Base model: a Hugging Face id or a local directory.", show_default=False)],
    output: OutputOption,
    settings: ConfigSettings,
    workspace: WorkspaceOption = None,
    config: ConfigOption = None,
    resume: ResumeOption = None,
) -> None:
    """LoRA continued pretraining on a pretrain dataset version (the seed's defaults: rank 64, alpha 128, 3 epochs, batch 64, lr 2e-4).

    Every checkpoint gets satsang_lineage.json: the dataset version and its manifest hash, the base
    model and its weights' hash, hyperparameters, commit, steps, times, loss and tokens per source.

    Example: satsang train pretrain --dataset prose --base-model microsoft/phi-2 --output runs/prose
    """
    from satsang.render.progress import train_progress
    from satsang.render.training import render_train_result
    from training.config import PretrainConfig, load_config
    from training.data import resolve_dataset
    from training.pretrain import train_pretrain

    with one_line_errors():
        config_values = load_config(PretrainConfig, config, **settings)
        version = resolve_dataset(dataset, workspace)
        with train_progress(err, "pretrain") as progress:
            result = train_pretrain(config_values, version, base_model, output, resume_from=resume, progress=progress)
    out.print(render_train_result(result))


@config_command(train_app, "sft", "training.config:SFTConfig")
def train_sft_command(
    dataset: DatasetOption,
    output: OutputOption,
    settings: ConfigSettings,
    from_checkpoint: Annotated[Optional[Path], typer.Option("--from", help="Pretrain checkpoint whose adapter SFT trains on (its lineage chains in).", show_default=False)] = None,
    base_model: Annotated[Optional[str], typer.Option("--base-model", help="Base model for a new adapter; with --from, where the parent's base is now.", show_default=False)] = None,
    workspace: WorkspaceOption = None,
    config: ConfigOption = None,
    resume: ResumeOption = None,
) -> None:
    """SFT on an sft dataset version with TRL's SFTTrainer: on top of a pretrain checkpoint (--from) or a base model.

    Example: satsang train sft --dataset sample --from runs/prose --output runs/sft
    """
    from satsang.render.progress import train_progress
    from satsang.render.training import render_train_result
    from training.config import SFTConfig, load_config
    from training.data import resolve_dataset
    from training.sft import train_sft

    with one_line_errors():
        config_values = load_config(SFTConfig, config, **settings)
        version = resolve_dataset(dataset, workspace)
        with train_progress(err, "sft") as progress:
            result = train_sft(
                config_values, version, output, base_model=base_model, from_checkpoint=from_checkpoint, resume_from=resume, progress=progress
            )
    out.print(render_train_result(result))


@app.command()
def audit(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory (a run's output or one of its checkpoint-N).", show_default=False)],
    workspace: WorkspaceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    sections: Annotated[bool, typer.Option("--sections/--no-sections", help="List every section (talk) with its tokens.")] = True,
) -> None:
    """Which dataset versions, sources (title, sha256) and sections trained a checkpoint, with tokens per stage and in total.

    Exit status 1 when the lineage is missing or no longer matches (a changed manifest or adapter).

    Example: satsang audit runs/sft --json
    """
    import json as json_module

    from curation.workspace import default_workspace_path
    from satsang.render.training import render_audit
    from training.audit import audit_checkpoint

    root = workspace if workspace is not None else default_workspace_path()
    with one_line_errors():
        report = audit_checkpoint(checkpoint, workspace=root if root.is_dir() else None)
    if as_json:
        print(json_module.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        out.print(render_audit(report, sections=sections))
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def diagnose(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory with an adapter_model.safetensors (or .bin).", show_default=False)],
    base_model: Annotated[Optional[str], typer.Option("--base-model", help="Check shapes against this base. (default: the lineage's, else adapter_config.json's)", show_default=False)] = None,
    fix: Annotated[bool, typer.Option("--fix", help="Write a copy with keys in PEFT's form (it loads with PeftModel.from_pretrained).")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", help="Where --fix writes. (default: <checkpoint>-fixed)", show_default=False)] = None,
    lora_alpha: Annotated[Optional[float], typer.Option("--lora-alpha", help="--fix without adapter_config.json or lineage: the alpha to record.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the diagnosis as JSON.")] = False,
) -> None:
    """Check a checkpoint: key naming (torch.compile's _orig_mod., adapter names), weight statistics (norms, zeros, NaN/Inf), shapes against the base model.

    Exit status 1 when the adapter would not load or is damaged (and --fix did not mend it).

    Example: satsang diagnose runs/prose/checkpoint-1000 --fix
    """
    import json as json_module

    from satsang.render.training import render_diagnosis
    from training.checkpoint import diagnose_checkpoint, fix_checkpoint

    fixed = None
    with one_line_errors():
        diagnosis = diagnose_checkpoint(checkpoint, base_model=base_model)
        if fix and diagnosis.fixable:
            fixed = fix_checkpoint(checkpoint, output, lora_alpha=lora_alpha)
    if as_json:
        print(json_module.dumps({**diagnosis.to_dict(), "fixed": str(fixed) if fixed else None}, indent=2, default=str))
    else:
        out.print(render_diagnosis(diagnosis, fixed=fixed))
    if fix and diagnosis.status == "ok":
        out.print("Nothing to fix: the adapter loads as it is.", markup=False, highlight=False)
    if diagnosis.status == "broken" and fixed is None:
        raise typer.Exit(1)


# ---- inference: satsang generate, serve, eval ------------------------------------------------

CheckpointOption = Annotated[
    Path,
    typer.Option("--checkpoint", "-c", help="Checkpoint directory: a LoRA adapter with its tokenizer and satsang_lineage.json (or a whole model).", show_default=False),
]
DeviceOption = Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")]
MergeOption = Annotated[bool, typer.Option("--merge", help="Fold the adapter into the base weights first: faster generation, same answers.")]
Load4bitOption = Annotated[bool, typer.Option("--load-in-4bit", help="Load the base in 4 bits (needs bitsandbytes and a CUDA GPU).")]
Load8bitOption = Annotated[bool, typer.Option("--load-in-8bit", help="Load the base in 8 bits (needs bitsandbytes and a CUDA GPU).")]
CriticUrlOption = Annotated[
    Optional[str],
    typer.Option("--critic-base-url", help="OpenAI-compatible endpoint of the critic. (default: $SATSANG_CRITIC_BASE_URL; unset: the offline critic)", show_default=False),
]
CriticModelOption = Annotated[Optional[str], typer.Option("--critic-model", help="The critic's model. (default: $SATSANG_CRITIC_MODEL, else the endpoint's first)", show_default=False)]
ThresholdOption = Annotated[float, typer.Option(help="Critic loop: the lowest aliveness score (0-10) an answer may have.", min=0, max=10)]
MaxAttemptsOption = Annotated[int, typer.Option(help="Critic loop: attempts before falling silent.", min=1, max=10)]


def _inference_critic(base_url: str | None, model: str | None):
    from critic.stage import CriticSettingsError, critic_from_settings

    try:
        return critic_from_settings(base_url, model)
    except CriticSettingsError as error:
        fail(f"error: {error}")


def _quiet_transformers() -> None:
    """No weight-loading progress bars or advisory warnings between the answers."""
    import warnings

    from transformers.utils import logging as transformers_logging

    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def _loop_temperatures(first: float, attempts: int) -> tuple[float, ...]:
    return tuple(min(2.0, round(first + 0.2 * i, 4)) for i in range(attempts))


@app.command()
def generate(
    checkpoint: CheckpointOption,
    query: Annotated[str, typer.Option("--query", "-q", help="The seeker's question.", show_default=False)],
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy. With --critic-loop: the first attempt's, rising by 0.2.", min=0, max=2)] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.", min=0.01, max=1)] = 0.95,
    max_new_tokens: Annotated[int, typer.Option(help="The most tokens to generate.", min=1)] = 200,
    seed: Annotated[Optional[int], typer.Option(help="Seed the sampler, for a repeatable answer.", show_default=False)] = None,
    merge: MergeOption = False,
    load_in_4bit: Load4bitOption = False,
    load_in_8bit: Load8bitOption = False,
    device: DeviceOption = "cpu",
    critic_loop: Annotated[bool, typer.Option("--critic-loop", help="Judge each answer; regenerate warmer below the threshold; fall silent after --max-attempts.")] = False,
    threshold: ThresholdOption = 7.0,
    max_attempts: MaxAttemptsOption = 3,
    critic_base_url: CriticUrlOption = None,
    critic_model: CriticModelOption = None,
) -> None:
    """Answer one question from a checkpoint (base + LoRA adapter, or merged), streaming the words as they come.

    With --critic-loop every attempt is judged and shown (temperature, score, rationale) on stderr;
    the answer, or "(silence)", goes to stdout.

    Example: satsang generate --checkpoint checkpoints/sft-1 --query "I feel lost in my practice."
    """
    from inference.generate import GenerationConfig, GenerationError, LocalGenerator
    from inference.loop import ContemplativeGenerator
    from satsang.render.inference import render_attempts

    _quiet_transformers()
    config = GenerationConfig(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    critic = _inference_critic(critic_base_url, critic_model) if critic_loop else None
    with one_line_errors():
        try:
            generator = LocalGenerator(checkpoint, merge=merge, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, device=device)
            if critic is None:
                spoke = False
                for piece in generator.stream(query, config):
                    out.print(piece, end="", markup=False, highlight=False, soft_wrap=True)
                    spoke = True
                out.print("" if spoke else "(silence)", markup=False, highlight=False)
                return
            temperatures = _loop_temperatures(temperature, max_attempts)
            result = ContemplativeGenerator(generator, critic, threshold, max_attempts, temperatures, config).respond(query)
        except GenerationError as error:
            fail(f"error: {error}")
    err.print(render_attempts(result))
    out.print("(silence)" if result.silent else result.response, markup=False, highlight=False, soft_wrap=True)


@app.command()
def serve(
    checkpoint: CheckpointOption,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    model_name: Annotated[Optional[str], typer.Option(help="The model id clients ask for. (default: the checkpoint directory's name)", show_default=False)] = None,
    merge: MergeOption = False,
    load_in_4bit: Load4bitOption = False,
    load_in_8bit: Load8bitOption = False,
    device: DeviceOption = "cpu",
    critic_loop: Annotated[bool, typer.Option("--critic-loop", help="Run the critic loop unless a request says otherwise (\"satsang\": {\"critic_loop\": false}).")] = False,
    threshold: ThresholdOption = 7.0,
    max_attempts: MaxAttemptsOption = 3,
    max_tokens: Annotated[int, typer.Option(help="The largest max_tokens a request may ask for.", min=1)] = 1024,
    critic_base_url: CriticUrlOption = None,
    critic_model: CriticModelOption = None,
) -> None:
    """Serve a checkpoint as an OpenAI-compatible endpoint: /v1/models, /v1/chat/completions (streaming too).

    Any OpenAI client can call it, and so can satsang's own critic and generator. A request turns
    the critic loop on with "satsang": {"critic_loop": true, "threshold": 7} (openai client: extra_body).

    Example: satsang serve --checkpoint checkpoints/sft-1 --port 8000
    """
    from inference.generate import GenerationError, LocalGenerator
    from inference.server import ServerConfig
    from inference.server import serve as run_server

    _quiet_transformers()
    critic = _inference_critic(critic_base_url, critic_model)
    config = ServerConfig(model_name=model_name, critic_loop=critic_loop, threshold=threshold, max_attempts=max_attempts, max_tokens_limit=max_tokens)
    with one_line_errors():
        try:
            generator = LocalGenerator(checkpoint, merge=merge, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, device=device)
        except GenerationError as error:
            fail(f"error: {error}")
    err.print(f"Serving {model_name or generator.name} at http://{host}:{port}/v1 (critic: {critic.agent['kind']}; loop {'on' if critic_loop else 'off'} by default)", markup=False, highlight=False)
    run_server(generator, host=host, port=port, critic=critic, config=config)


@app.command("eval")
def eval_command(
    checkpoints: Annotated[Optional[list[Path]], typer.Option("--checkpoint", "-c", help="A checkpoint directory; repeat to compare several side by side.", show_default=False)] = None,
    endpoints: Annotated[Optional[list[str]], typer.Option("--endpoint", help="An OpenAI-compatible URL to evaluate too (its first model); repeatable.", show_default=False)] = None,
    prompts: Annotated[Optional[Path], typer.Option(help="JSONL of {\"id\", \"question\", \"category\"}. (default: the bundled 50 seeker questions)", show_default=False)] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where eval.json, samples.jsonl and eval.png go.")] = Path("eval-out"),
    limit: Annotated[Optional[int], typer.Option(help="Only the first N prompts.", min=1, show_default=False)] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.", min=0, max=2)] = 0.7,
    max_new_tokens: Annotated[int, typer.Option(help="The most tokens per answer.", min=1)] = 200,
    seed: Annotated[int, typer.Option(help="Sampler seed, the same for every checkpoint.")] = 0,
    merge: MergeOption = False,
    device: DeviceOption = "cpu",
    critic_loop: Annotated[bool, typer.Option("--critic-loop", help="Evaluate each checkpoint inside the critic loop (its silence counts).")] = False,
    threshold: ThresholdOption = 7.0,
    max_attempts: MaxAttemptsOption = 3,
    critic_base_url: CriticUrlOption = None,
    critic_model: CriticModelOption = None,
) -> None:
    """Compare checkpoints side by side on a prompt set: critic scores, silence rate, length, closure-reflex markers.

    Prints a table and writes eval.json, samples.jsonl and a plot, eval.png.

    Example: satsang eval --checkpoint checkpoints/sft-1 --checkpoint checkpoints/sft-2 --out eval-out
    """
    from inference.eval import EvalError, evaluate, load_prompts, unique_names
    from inference.generate import GenerationConfig, GenerationError, LocalGenerator, OpenAIGenerator
    from inference.loop import LoopSettings
    from satsang.render.inference import render_eval_report
    from satsang.render.progress import eval_progress

    checkpoints, endpoints = checkpoints or [], endpoints or []
    if not checkpoints and not endpoints:
        fail("error: give at least one --checkpoint (or --endpoint)")
    _quiet_transformers()
    critic = _inference_critic(critic_base_url, critic_model)
    with one_line_errors():
        try:
            questions = load_prompts(prompts)[:limit]
            named = [(c.resolve().name, LocalGenerator(c, merge=merge, device=device)) for c in checkpoints]
            named += [(url, OpenAIGenerator(url)) for url in endpoints]
            generators = unique_names(named)
            loop = LoopSettings(threshold, max_attempts, _loop_temperatures(temperature, max_attempts)) if critic_loop else None
            config = GenerationConfig(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
            with eval_progress(err, len(generators) * len(questions)) as progress:
                report = evaluate(generators, questions, critic, config, loop=loop, progress=progress)
            paths = report.write(out_dir)
        except (EvalError, GenerationError) as error:
            fail(f"error: {error}")
    out.print(render_eval_report(report))
    for kind, path in paths.items():
        out.print(f"{kind}: {path}", markup=False, highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
