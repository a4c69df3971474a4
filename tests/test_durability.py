"""The response store under concurrent writers and a writer killed mid-stream, on SQLite and PostgreSQL.

Writers are separate processes (not threads): each opens its own connection, as
several reviewers' dashboards and CLI commands would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from curation.responses import SCHEMA_VERSION
from postgres import Database, database, postgres_server  # noqa: F401  (fixtures)

N_WRITERS = 10
N_PER_WRITER = 500
N_SHARED_ITEMS = 8  # items every writer also reviews and undoes, so writers contend on the same rows

# A writer: opens the store, says "ready", waits for "go" on stdin (so all start together),
# then records COUNT responses (forever if COUNT < 0), printing each id once it is committed.
# Every step writes exactly one row: mostly its own items, every 5th a shared item, where
# it undoes when there is something to undo and accepts otherwise.
WRITER = r"""
import sys
from curation.responses import ResponseStore

root, url, name, count = sys.argv[1], sys.argv[2] or None, sys.argv[3], int(sys.argv[4])
n_shared = int(sys.argv[5])
with ResponseStore.open(root, url=url) as store:
    print("ready", flush=True)
    sys.stdin.readline()
    i = 0
    while count < 0 or i < count:
        if i % 5 == 4:
            shared = f"shared-{i % n_shared}"
            response = store.undo(shared, name) if i % 10 == 9 else None
            if response is None:
                response = store.record(shared, "h" * 32, name, "accept")
        elif i % 3 == 0:
            response = store.record(f"{name}-{i:06d}", "h" * 32, name, "reject", reason="off-topic")
        elif i % 3 == 1:
            response = store.record(f"{name}-{i:06d}", "h" * 32, name, "edit", edited_question="Who?", edited_answer="")
        else:
            response = store.record(f"{name}-{i:06d}", "h" * 32, name, "accept", note="n" * 200)
        print(response.id, flush=True)
        i += 1
"""


def start_writer(database: Database, name: str, count: int) -> subprocess.Popen:
    arguments = [str(database.root), database.url or "", name, str(count), str(N_SHARED_ITEMS)]
    env = {k: v for k, v in os.environ.items() if k != "SATSANG_DB_URL"}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_ready(process: subprocess.Popen) -> None:
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        raise AssertionError(f"writer did not start: {line!r} {process.stderr.read()}")


def test_concurrent_writers_lose_nothing(database: Database):
    # No store is opened first: the writers also race to create and migrate the schema.
    writers = [start_writer(database, f"w{n}", N_PER_WRITER) for n in range(N_WRITERS)]
    try:
        for writer in writers:
            wait_ready(writer)
        started = time.monotonic()
        for writer in writers:
            writer.stdin.write("go\n")
            writer.stdin.flush()
        outputs = [writer.communicate(timeout=120) for writer in writers]
        elapsed = time.monotonic() - started
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
    for writer, (_, stderr) in zip(writers, outputs):
        assert writer.returncode == 0, stderr
    reported = [[int(line) for line in stdout.split()] for stdout, _ in outputs]
    assert [len(ids) for ids in reported] == [N_PER_WRITER] * N_WRITERS
    all_reported = {i for ids in reported for i in ids}
    assert len(all_reported) == N_WRITERS * N_PER_WRITER  # no id handed out twice

    with database.open() as store:
        frame = store.responses()
        assert frame.height == N_WRITERS * N_PER_WRITER
        assert set(frame["id"].to_list()) == all_reported
        assert frame.group_by("reviewer").len().sort("reviewer")["len"].to_list() == [N_PER_WRITER] * N_WRITERS
        # Serialised writers: every undo reverted what was current when it committed, none twice.
        assert store.integrity_check() == []
        assert store.schema_version() == SCHEMA_VERSION
        state = store.state()
        own_items = N_WRITERS * (N_PER_WRITER - N_PER_WRITER // 5)
        assert state.filter(~state["item_id"].str.starts_with("shared-")).height == own_items
    print(f"{database.backend}: {N_WRITERS * N_PER_WRITER} commits from {N_WRITERS} processes in {elapsed:.1f}s")


def test_a_writer_killed_mid_stream_loses_no_committed_response(database: Database):
    with database.open():
        pass
    writer = start_writer(database, "doomed", -1)
    reported: list[int] = []
    try:
        wait_ready(writer)
        writer.stdin.write("go\n")
        writer.stdin.flush()
        while len(reported) < 200:
            line = writer.stdout.readline()
            assert line, f"writer died early: {writer.stderr.read()}"
            reported.append(int(line))
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL

    with database.open() as store:
        assert store.integrity_check() == []
        stored = set(store.responses()["id"].to_list())
        assert set(reported) <= stored  # everything it was told was committed is there
        # and the store goes on: the killed writer left no lock behind
        after = store.record("after-the-kill", "h" * 32, "ana", "accept")
        assert after.id > max(stored)
        assert store.integrity_check() == []
