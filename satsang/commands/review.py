"""satsang review (the dashboard) and satsang run (the bundled sample through every stage)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from satsang.app import DbOption, WorkspaceOption, app, err, one_line_errors, out


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
    from satsang.render.stages import (
        render_critique_report,
        render_dedup_report,
        render_ingest_reports,
        render_next_steps,
        render_score_report,
        render_status,
    )
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
    out.print(render_next_steps(root, result.export_result), markup=False, highlight=False, soft_wrap=True)



def add_reviewers_commands(parent: typer.Typer) -> None:
    """`satsang reviewers add|list|plan|guidelines`: the team's reviewer list, review plan and guidelines."""
    reviewers_app = typer.Typer(help="The team: who may review, how items are shared out, the review guidelines.\n\n"
                                     "Example: satsang reviewers add asha bo && satsang reviewers plan --overlap 0.2",
                                no_args_is_help=True)

    @reviewers_app.command("add")
    def reviewers_add(
        names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Reviewer names (normalised: case-folded, spaces collapsed).")],
        workspace: WorkspaceOption = None,
        db: DbOption = None,
    ) -> None:
        """Add reviewers to the list the review app accepts (kept in the review database).

        Example: satsang reviewers add asha bo
        """
        from curation.responses import ResponseStore
        from curation.team import add_reviewer
        from curation.workspace import Workspace

        with one_line_errors():
            ws = Workspace.open(workspace)
            with ResponseStore.open(ws.root, url=db) as store:
                for name in names:
                    stored, new = add_reviewer(store, name)
                    out.print(f"{'added' if new else 'already listed'}: {stored}", markup=False, highlight=False)

    @reviewers_app.command("list")
    def reviewers_list(workspace: WorkspaceOption = None, db: DbOption = None) -> None:
        """List the reviewers, with the review plan.

        Example: satsang reviewers list
        """
        from curation.responses import ResponseStore
        from curation.team import read_team_settings
        from curation.workspace import Workspace

        with one_line_errors():
            ws = Workspace.open(workspace)
            with ResponseStore.open(ws.root, url=db) as store:
                names = store.registered_reviewers()
            settings = read_team_settings(ws.root)
        for name in names:
            out.print(name, markup=False, highlight=False)
        if not names:
            out.print("No reviewer list: the review app takes any name. Add one: satsang reviewers add NAME", markup=False)
        out.print(f"plan: {settings.reviewers_per_item} reviewer(s) per item, {settings.overlap_share:.0%} of items with"
                  f" {settings.overlap_reviewers}; blind: {'yes' if settings.blind else 'no'}", markup=False, highlight=False)

    @reviewers_app.command("plan")
    def reviewers_plan(
        workspace: WorkspaceOption = None,
        per_item: Annotated[Optional[int], typer.Option("--per-item", help="Decisions each item needs.", show_default=False)] = None,
        overlap: Annotated[Optional[float], typer.Option(help="Share of items (0-1) reviewed by --overlap-reviewers, for agreement.", show_default=False)] = None,
        overlap_reviewers: Annotated[Optional[int], typer.Option(help="Reviewers of an overlap item.", show_default=False)] = None,
        blind: Annotated[Optional[bool], typer.Option("--blind/--open", help="Hide others' decisions on an item until a reviewer gives theirs.", show_default=False)] = None,
    ) -> None:
        """Show or change how items are shared out (review.json in the workspace).

        Example: satsang reviewers plan --per-item 1 --overlap 0.2 --blind
        """
        from dataclasses import replace

        from curation.team import TeamError, read_team_settings, write_team_settings
        from curation.workspace import Workspace

        with one_line_errors():
            ws = Workspace.open(workspace)
            settings = read_team_settings(ws.root)
            changes = {k: v for k, v in {"reviewers_per_item": per_item, "overlap_share": overlap,
                                         "overlap_reviewers": overlap_reviewers, "blind": blind}.items() if v is not None}
            if changes:
                try:
                    settings = replace(settings, **changes)
                except ValueError as error:
                    raise TeamError(f"review plan: {error}") from None
                write_team_settings(ws.root, settings)
        out.print(f"{settings.reviewers_per_item} reviewer(s) per item, {settings.overlap_share:.0%} of items with"
                  f" {settings.overlap_reviewers}; blind: {'yes' if settings.blind else 'no'}", markup=False, highlight=False)

    @reviewers_app.command("guidelines")
    def reviewers_guidelines(workspace: WorkspaceOption = None) -> None:
        """Put the default guidelines in the workspace (guidelines.md) for the team to edit; never overwrites.

        Example: satsang reviewers guidelines
        """
        from curation.guidelines import load_guidelines, write_default_guidelines
        from curation.workspace import Workspace

        with one_line_errors():
            ws = Workspace.open(workspace)
            path, written = write_default_guidelines(ws.root)
            missing = load_guidelines(ws.root).missing
        out.print(f"{'wrote' if written else 'kept'} {path}", markup=False, highlight=False)
        if missing:
            out.print(f"it does not define: {', '.join(missing)}", markup=False, highlight=False)

    parent.add_typer(reviewers_app, name="reviewers")


add_reviewers_commands(app)
