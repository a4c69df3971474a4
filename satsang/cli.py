"""The `satsang` command: one subcommand per stage, each a thin layer over a library call.

The app and what every command shares are in `satsang/app.py`; the commands are in
`satsang/commands/` (workspace, stages, versions, review, training, inference), imported
here in the order `satsang --help` lists them. polars, the parsers and the workspace are
imported inside the commands, so that `satsang --help` answers at once.
"""

from __future__ import annotations

# The commands register themselves on the app when imported; the order is the help's.
import satsang.commands.workspace  # noqa: F401  init, ingest, status, select
import satsang.commands.stages  # noqa: F401  dedup, score, critique
import satsang.commands.versions  # noqa: F401  export, versions, show, diff, verify
import satsang.commands.review  # noqa: F401  review, run, reviewers
import satsang.commands.training  # noqa: F401  train pretrain|sft, audit, diagnose, export-model
import satsang.commands.inference  # noqa: F401  generate, serve, eval, trace
from satsang.app import (  # noqa: F401  (re-exported: tests and scripts import the app from here)
    DbOption,
    WorkspaceOption,
    app,
    err,
    fail,
    one_line_errors,
    out,
)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
