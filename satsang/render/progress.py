"""Progress bars for long work: each is a context manager that yields the callback a library function takes.

    with ingest_progress(err, len(files)) as progress:
        workspace.ingest(files, "dialogue", progress=progress)

Libraries report progress through plain callbacks and never draw; these bars are drawn on the
console given (the CLI's stderr), and stay off when it is not a terminal, so piped output and
tests see only the results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


def _bar(console: Console, *columns) -> Progress:
    from rich.progress import Progress

    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)


@contextmanager
def ingest_progress(console: Console, n_files: int | None) -> Iterator[Callable[[Path | None, str], None]]:
    """Fed by the workspace's ingest callback: (path, "parsed") per file, then (None, a phase of the commit).

    A bar over the files when their number is known (ingest, select), else a spinner (run).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn

    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if n_files is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    with _bar(console, *columns) as bar:
        task = bar.add_task("parsing", total=n_files)

        def on_progress(path: Path | None, phase: str) -> None:
            if path is None:
                bar.update(task, description=phase)
            else:
                bar.update(task, description=f"{phase} {path.name}", advance=1)

        yield on_progress


@contextmanager
def count_progress(console: Console, label: str) -> Iterator[Callable[[int, int], None]]:
    """Fed by a stage's (done, total) callback: run_critique's pairs, run_score's items."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    with _bar(console, TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task(label, total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield on_progress


@contextmanager
def eval_progress(console: Console, total: int) -> Iterator[Callable[[str, int, int], None]]:
    """Fed by inference.eval.evaluate's (model name, done, n) callback, over every (model, prompt)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

    with _bar(console, TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()) as bar:
        task = bar.add_task("answering", total=total)

        def on_progress(name: str, done: int, n: int) -> None:
            bar.update(task, description=f"answering: {name}", advance=1)

        yield on_progress


@contextmanager
def train_progress(console: Console, stage: str) -> Iterator[Callable[[int, int, float | None], None]]:
    """Fed by the training runner's (step, max_steps, last loss) callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn(f"{stage}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with _bar(console, *columns) as bar:
        task = bar.add_task(stage, total=None, loss="")

        def on_progress(step: int, max_steps: int, loss: float | None) -> None:
            bar.update(task, completed=step, total=max_steps, loss=f"loss {loss:.4f}" if loss is not None else "")

        yield on_progress
