"""Fixtures the test files share: a workspace, a workspace factory for wider fixtures, a critiqued workspace
and a review database for the review app, the tiny model, and a small disk (a 5 MB tmpfs).

A test file that needs its workspace filled extends `workspace` (a fixture of the same name
that asks for this one) or builds a module-wide one with `new_workspace`; only
`critiqued_workspace` ingests, and its docstring says what.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from curation.workspace import Workspace

SAMPLES = Path(__file__).resolve().parents[1] / "satsang" / "samples"
DATA = Path(__file__).parent / "data"


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
def critiqued_workspace(new_workspace) -> Callable[[str], Workspace]:
    """critiqued_workspace(name): a new workspace holding talks 19-24 and two editions of talks 272-274
    (dialogue), deduped and critiqued by the offline critic: what the review app's tests review."""
    from critic.offline import OfflineCritic
    from critic.stage import run_critique
    from curation.dedup import run_dedup

    def make(name: str) -> Workspace:
        ws = new_workspace(name)
        ws.ingest([DATA / "talks-19-24.txt"], kind="dialogue", title="Talks 19-24")
        ws.ingest([DATA / "dedup-talks-272-274.txt"], kind="dialogue", title="Talks (1955)")
        ws.ingest([DATA / "dedup-talks-vol2-272-274.txt"], kind="dialogue", title="Talks (2006)")
        run_dedup(ws, progress=False)
        run_critique(ws, OfflineCritic(), progress=False)
        return ws

    return make


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A review database of the test's own (SQLite, in tmp_path), as a URL."""
    return f"sqlite:///{tmp_path / 'reviews.db'}"


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


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 5 MB tmpfs (needs root, as `mount` does): for what a full disk does to a write."""
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small disk needs root to mount a tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
