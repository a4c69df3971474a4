"""What every `satsang` command shares: the app, the consoles, one-line errors and the common options.

The commands themselves live in `satsang/commands/`, one module per part of the data path;
`satsang/cli.py` imports them in the order `satsang --help` lists them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console

app = typer.Typer(
    help="Satsang workbench: curate contemplative dialogue books into reviewed, versioned datasets.",
    epilog="Example: satsang run  (curates the bundled sample book into ./satsang-workspace)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console()
err = Console(stderr=True)


WorkspaceOption = Annotated[
    Optional[Path],
    typer.Option(
        "--workspace",
        "-w",
        help="Workspace directory. (default: $SATSANG_WORKSPACE, else ./satsang-workspace)",
        show_default=False,
    ),
]


DbOption = Annotated[
    Optional[str],
    typer.Option(
        "--db",
        help="Review database URL, e.g. postgresql://user@host/db. (default: $SATSANG_DB_URL, else reviews.db in the workspace)",
        show_default=False,
    ),
]


def fail(message: str) -> NoReturn:
    """One red line on stderr and exit status 1: what every expected error looks like."""
    err.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Any package's own error becomes one red line; anything else is a bug and keeps its traceback."""
    from critic.base import CriticError
    from curation.errors import CurationError
    from inference.generate import InferenceError
    from training.lineage import TrainingError

    try:
        yield
    except (CurationError, CriticError, TrainingError, InferenceError) as error:
        fail(f"error: {error}")


class ExecutorChoice(str, Enum):
    local = "local"
    ray = "ray"


ExecutorOption = Annotated[
    ExecutorChoice,
    typer.Option("--executor", help="Where the heavy work runs: local (this process) or ray (a Ray cluster, see --ray-address)."),
]
RayAddressOption = Annotated[
    Optional[str],
    typer.Option(
        "--ray-address",
        help="With --executor ray: the cluster to join, 'auto' (the cluster this node belongs to) or ray://HEAD:10001. (default: $RAY_ADDRESS, else a Ray started on this machine)",
        show_default=False,
    ),
]


def check_executor(choice: ExecutorChoice, ray_address: str | None) -> None:
    if ray_address and choice is not ExecutorChoice.ray:
        fail("error: --ray-address applies to --executor ray only")


@contextmanager
def executor_from_options(choice: ExecutorChoice, ray_address: str | None):
    """The executor the options name (None for local: the stage runs whole, in this process), closed when done."""
    from curation.executors import make_executor

    if choice is ExecutorChoice.local:
        yield None
        return
    try:
        executor = make_executor(choice.value, ray_address)
    except (RuntimeError, ConnectionError) as error:
        fail(f"error: {error}")
    try:
        yield executor
    finally:
        executor.close()
