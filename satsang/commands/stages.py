"""satsang dedup, score, critique: the machine stages, each over the whole workspace."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from satsang.app import (
    DbOption, ExecutorChoice, ExecutorOption, RayAddressOption, WorkspaceOption, app, check_executor, err,
    executor_from_options, fail, one_line_errors, out,
)
from satsang.options import ConfigSettings, config_command


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
    from curation.dedup import DedupConfig
    from curation.distributed import run_dedup_distributed
    from curation.workspace import Workspace
    from satsang.render.stages import render_dedup_report

    check_executor(executor, ray_address)
    try:
        config = DedupConfig(**settings)
    except ValueError as error:
        fail(f"error: {error}")
    with one_line_errors():
        ws = Workspace.open(workspace)
        with executor_from_options(executor, ray_address) as pool:
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
    from curation.distributed import run_score_distributed
    from curation.review import load_review_state
    from curation.score import ScoreConfig, ScoreError
    from curation.workspace import Workspace
    from satsang.render.progress import count_progress
    from satsang.render.stages import render_score_report

    check_executor(executor, ray_address)
    with one_line_errors():
        ws = Workspace.open(workspace)
        config = ScoreConfig(**settings)
        decisions = load_review_state(ws.root, db).decisions if learn else None
        try:
            with executor_from_options(executor, ray_address) as pool, count_progress(err, "scoring") as progress:
                report = run_score_distributed(ws, config, pool, learn, decisions=decisions, progress=progress)
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
    from satsang.render.progress import count_progress
    from satsang.render.stages import render_critique_report

    with one_line_errors():
        ws = Workspace.open(workspace)
        try:
            critic = critic_from_settings(base_url, model)
        except CriticSettingsError as error:
            fail(f"error: {error}")
        with count_progress(err, "critiquing") as progress:
            report = run_critique(ws, critic, progress=progress)
    out.print(render_critique_report(report))
