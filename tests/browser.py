"""What the browser tests share: Debian's chromium for playwright, and waiting for the review server and for a condition.

Use from a test module: `from browser import CHROMIUM, review_server_and_browser, wait_for`, after
skipping the module when playwright or chromium is missing.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def wait_until_serving(port: int, process: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
    """Return once the review server on `port` answers its health check; fail with its log if it exits or never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the review server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as reply:
                if reply.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the review server did not answer within {timeout_s:g}s:\n{log.read_text()}")


def wait_for(condition, timeout_s: float = 20.0, step_s: float = 0.2):
    """`condition()`'s first truthy value within `timeout_s`, else its last value (for the caller to assert on)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step_s)
    return condition()


@contextmanager
def review_server_and_browser(workspace_root: Path, tmp_path: Path) -> Iterator[tuple[Any, int]]:
    """(chromium, port): `satsang review`'s server on a free loopback port, its decisions in the workspace's
    SQLite whatever $SATSANG_DB_URL says, its log in tmp_path/server.log; both stopped after the block."""
    from playwright import sync_api

    from dashboards.launch import free_port, launch

    env = {name: value for name, value in os.environ.items() if name != "SATSANG_DB_URL"}  # SQLite in the workspace
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as log_file:
        server = launch(workspace_root, port=port, address="127.0.0.1", wait=False, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(port, server, log)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                yield browser, port
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
