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
