"""The whole data path over the bundled sample books: what `satsang run` does.

Each stage is a library call on the workspace, in the order of the data path. The review
state (curation.review) is read once, after the machine stages: the export selects by it
and the status counts its decisions, so the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from critic.stage import CritiqueReport, critic_from_settings, run_critique
from curation.dedup import DedupReport, run_dedup
from curation.export import ExportResult, export_version
from curation.review import ReviewState, load_review_state
from curation.score import ScoreReport, run_score
from curation.selection import SAMPLE_CONFIG
from curation.sources import SourceKind
from curation.workspace import (
    MANIFEST,
    IngestReport,
    ProgressCallback,
    Workspace,
    WorkspaceError,
    WorkspaceStatus,
    default_workspace_path,
    init_workspace,
)

SAMPLE_LICENCE = "published freely by its publisher"


@dataclass(frozen=True)
class SampleBook:
    """A book shipped in satsang/samples, and how to ingest it."""

    filename: str
    kind: SourceKind
    title: str  # also the running page header the parsers cut out, so it is the book's own title


SAMPLE_BOOKS: tuple[SampleBook, ...] = (
    # Talks 1-49 of the book, byte for byte: D.:/M.: dialogue with its PDF artefacts.
    SampleBook("talks-sample.txt", "dialogue", "Talks with Sri Ramana Maharshi"),
    # The whole of Nan Yar? in translation: prose for continued pretraining.
    SampleBook("nan-yar.txt", "prose", "Nan Yar? (Who am I?)"),
)


@dataclass(frozen=True)
class PipelineResult:
    workspace: Workspace
    created: bool  # False when the run reused a workspace that was already there
    ingest_reports: tuple[IngestReport, ...]
    dedup_report: DedupReport
    score_report: ScoreReport
    critique_report: CritiqueReport
    export_result: ExportResult
    review: ReviewState  # the curators' decisions as the export and the status read them
    status: WorkspaceStatus  # after every stage, "reviewed" counted from `review`


def sample_path(filename: str) -> Path:
    # The package is installed from a source tree (or a wheel unpacked on disk), so the
    # sample is a real file; the workspace copies it in by path.
    return Path(str(resources.files("satsang").joinpath("samples", filename)))


def run_pipeline(
    workspace_path: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> PipelineResult:
    """Run every stage over the sample books: init (if needed), ingest, dedup, score, critique, export.

    Re-running on the same workspace is safe: ingest recognises books it already holds,
    scoring re-encodes nothing unchanged, and the critic is the offline one unless
    $SATSANG_CRITIC_BASE_URL names an endpoint.
    """
    root = Path(workspace_path) if workspace_path is not None else default_workspace_path()
    try:
        workspace, created = Workspace.open(root), False
    except WorkspaceError:
        if (root / MANIFEST).exists():
            raise  # a workspace that is there but unreadable: never paper over it with a new one
        workspace, created = init_workspace(root), True
    reports = tuple(
        workspace.ingest(
            [sample_path(book.filename)],
            book.kind,
            title=book.title,
            licence=SAMPLE_LICENCE,
            progress=progress,
        )
        for book in SAMPLE_BOOKS
    )
    dedup_report = run_dedup(workspace)
    score_report = run_score(workspace)
    critique_report = run_critique(workspace, critic_from_settings())
    review = load_review_state(workspace.root)
    export_result = export_version(workspace, SAMPLE_CONFIG, review=review)
    status = workspace.status(review)
    return PipelineResult(workspace, created, reports, dedup_report, score_report, critique_report, export_result, review, status)
