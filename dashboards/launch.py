"""Start the review app (dashboards/review_app.py) with Streamlit on a workspace.

Kept apart from the app so that importing it costs nothing: the CLI imports
`launch` for `satsang review`, and Streamlit is only loaded in the child process.

Run as:

    from dashboards.launch import launch
    launch("satsang-workspace")                      # blocks until Ctrl-C; prints the URL
    process = launch("ws", port=8599, wait=False)    # a Popen, for tests
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

APP_PATH = Path(__file__).with_name("review_app.py")
DEFAULT_ADDRESS = "127.0.0.1"  # loopback: the app has no login, so serving other machines must be asked for
DB_URL_ENV = "SATSANG_DB_URL"


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port that was free on `address` a moment ago."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def review_command(
    workspace: str | os.PathLike[str],
    db_url: str | None = None,
    port: int | None = None,
    headless: bool = True,
    address: str = DEFAULT_ADDRESS,
) -> list[str]:
    """The `python -m streamlit run` command line that serves the review app on `workspace`.

    A `db_url` given here lands on the command line, visible to other users of the
    machine; `launch` passes it in the environment instead.
    """
    command = [sys.executable, "-m", "streamlit", "run", str(APP_PATH)]
    if port is not None:
        command += ["--server.port", str(port)]
    command += ["--server.address", address or DEFAULT_ADDRESS]
    command += [
        "--server.headless", "true" if headless else "false",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--client.toolbarMode", "minimal",
        "--",
        "--workspace", str(Path(workspace).resolve()),
    ]
    if db_url:
        command += ["--db", db_url]
    return command



def launch(
    workspace: str | os.PathLike[str],
    db_url: str | None = None,
    port: int | None = None,
    headless: bool = True,
    address: str = DEFAULT_ADDRESS,
    wait: bool = True,
    env: dict[str, str] | None = None,
    stdout: Any = None,
    stderr: Any = None,
) -> int | subprocess.Popen:
    """Serve the review app on `workspace`: blocks and returns Streamlit's exit status, or with wait=False the Popen.

    `db_url` (else $SATSANG_DB_URL, else SQLite in the workspace) names the decisions database;
    `address` the interface to listen on (default loopback; "0.0.0.0" serves every interface).
    Ctrl-C while waiting stops the server and returns 0. `env` replaces the child's
    environment (default: this one); `stdout`/`stderr` go to subprocess.Popen.
    """
    # The URL may hold a password: it goes to the child in its environment, never on a command line.
    child_env = dict(os.environ if env is None else env)
    if db_url:
        child_env[DB_URL_ENV] = db_url
    command = review_command(workspace, None, port, headless, address)
    process = subprocess.Popen(command, env=child_env, stdout=stdout, stderr=stderr)
    if not wait:
        return process
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        return 0
