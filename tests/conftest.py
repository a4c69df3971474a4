"""Fixtures the test files share: a workspace, a workspace factory for wider fixtures, and the tiny model.

A test file that needs its workspace filled extends `workspace` (a fixture of the same name
that asks for this one) or builds a module-wide one with `new_workspace`; nothing here
ingests, so every file still says what its workspace holds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from curation.workspace import Workspace

SAMPLES = Path(__file__).resolve().parents[1] / "satsang" / "samples"


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """An empty workspace at tmp_path/ws."""
    from curation.workspace import init_workspace

    return init_workspace(tmp_path / "ws")


@pytest.fixture(scope="session")
def new_workspace(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Workspace]:
    """new_workspace(name): an empty workspace at <a fresh directory named after it>/ws, for module-wide fixtures."""

    from curation.workspace import init_workspace

    def make(name: str) -> Workspace:
        return init_workspace(tmp_path_factory.mktemp(name) / "ws")

    return make


@pytest.fixture(scope="session")
def sample_versions(new_workspace):
    """The bundled sample curated by run_pipeline (its sft version "sample") plus a pretrain version "prose": what the training tests train on."""
    from types import SimpleNamespace

    from curation.export import ExportConfig, export_version
    from satsang.pipeline import run_pipeline

    result = run_pipeline(new_workspace("sample-versions").root)
    prose = export_version(result.workspace, ExportConfig(name="prose", kind="pretrain", include_unreviewed=True))
    return SimpleNamespace(root=result.workspace.root, workspace=result.workspace, sft=result.export_result.path, pretrain=prose.path)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Phi-architecture model with a byte-level BPE tokenizer trained on the bundled talks (training.tiny; nothing downloaded)."""
    from training.tiny import build_tiny_phi

    return build_tiny_phi(tmp_path_factory.mktemp("tiny"), [(SAMPLES / "talks-sample.txt").read_text(encoding="utf-8")])
