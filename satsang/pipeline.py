"""The whole data path over the bundled sample books: what `satsang run` does.

Each stage is a library call on the workspace; a stage that lands later (dedup,
scoring, critique, export) adds its call to `run_pipeline`, after ingest.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from curation.workspace import (
    MANIFEST,
    IngestReport,
    ProgressCallback,
    SourceKind,
    Workspace,
    WorkspaceError,
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


def sample_path(filename: str) -> Path:
    # The package is installed from a source tree (or a wheel unpacked on disk), so the
    # sample is a real file; the workspace copies it in by path.
    return Path(str(resources.files("satsang").joinpath("samples", filename)))


def run_pipeline(
    workspace_path: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> PipelineResult:
    """Run every stage that exists so far over the sample books: init (if needed), then ingest.

    Re-running on the same workspace is safe: ingest recognises books it already holds.
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
    return PipelineResult(workspace, created, reports)
