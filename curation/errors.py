"""The root of every error the curation package raises on purpose.

Each package has one root (`curation.errors.CurationError`, `critic.base.CriticError`,
`training.lineage.TrainingError`, `inference.generate.InferenceError`); the CLI turns
any of them into one red line. An error that is none of them is a bug, and shows its
traceback.
"""

from __future__ import annotations


class CurationError(Exception):
    """A curation operation cannot be done as asked; `str(error)` is one line saying why."""


class WorkspaceError(CurationError):
    """A workspace is missing, malformed, locked, or of another format version.

    Here rather than in curation.workspace so that curation.sources, which the workspace
    imports, can raise its subclass IngestError for a file that cannot be a source.
    """
