"""satsang export, versions, show, diff, verify: immutable dataset versions."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from satsang.app import DbOption, WorkspaceOption, app, one_line_errors, out


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
