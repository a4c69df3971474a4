"""satsang init, ingest, status, select: the workspace and the books that go into it."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from satsang.app import (
    DbOption, ExecutorChoice, ExecutorOption, RayAddressOption, WorkspaceOption, app, check_executor, err,
    executor_from_options, fail, one_line_errors, out,
)


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
    executor: ExecutorOption = ExecutorChoice.local,
    ray_address: RayAddressOption = None,
) -> None:
    """Ingest books into the workspace, all files in one commit: if any file is rejected, nothing is added.

    With --executor ray each book is parsed by its own Ray task (the files must be readable
    where the tasks run); the commit is this process's, as always.

    Example: satsang ingest talks.txt --kind dialogue --title "Talks with Sri Ramana Maharshi"

    Example: satsang ingest talks.pdf --kind dialogue   (a PDF: its text is extracted, each item keeps its page)
    """
    check_executor(executor, ray_address)
    dialogue_config, prose_config = _parser_configs(kind, convention, target_tokens, answerer, asker)
    from curation.workspace import Workspace
    from satsang.render.progress import ingest_progress
    from satsang.render.stages import render_ingest_reports

    with one_line_errors():
        ws = Workspace.open(workspace)
        with executor_from_options(executor, ray_address) as pool, ingest_progress(err, len(files)) as progress:
            report = ws.ingest(
                files,
                kind.value,  # type: ignore[arg-type]
                dialogue_config=dialogue_config,
                prose_config=prose_config,
                title=title,
                licence=licence,
                progress=progress,
                executor=pool,
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
    from satsang.render.progress import ingest_progress
    from satsang.render.stages import render_ingest_reports, render_missing_books, render_selection

    check_executor(executor, ray_address)
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
        with executor_from_options(executor, ray_address) as pool, ingest_progress(err, len(found)) as on_progress:
            result = ingest_selection(ws, found, executor=pool, prose_config=prose_config, progress=on_progress)
    for book, reason in result.rejected:
        err.print(f"rejected {book.path} ({book.entry.id}): {reason}", style="yellow", markup=False, highlight=False)
    out.print(render_ingest_reports(result.report))
    if result.report.generation is None:
        out.print("Nothing new: the workspace is unchanged.")
    else:
        out.print(f"Committed generation {result.report.generation} to {ws.root.resolve()}", markup=False, highlight=False)


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
