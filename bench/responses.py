"""Benchmark the response store: single-writer latency, concurrent writers, and reads at scale.

Run as: python bench/responses.py [--db postgresql://...] [--writers 10] [--per-writer 500] [--rows 100000]

Without --db (or $SATSANG_DB_URL) it measures SQLite in a temp workspace; with a
postgresql:// URL it measures that database (use an empty one: it writes there).

Prints:
- `record` latency of one writer (each call is one committed, fsynced transaction);
- `record_many` throughput (one transaction for a whole bulk action);
- N writer processes x M decisions each against one store, and that all arrived;
- `state()`, `responses()` and `history()` on a store of --rows responses, the reads
  the review dashboard makes on every refresh.
No timed assertions: it reports.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

WRITER = r"""
import sys
from curation.responses import ResponseStore
root, url, name, count = sys.argv[1], sys.argv[2] or None, sys.argv[3], int(sys.argv[4])
with ResponseStore.open(root, url=url) as store:
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(count):
        store.record(f"{name}-{i}", "h" * 32, name, "accept")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default=os.environ.get("SATSANG_DB_URL"), help="postgresql:// URL (default: SQLite)")
    parser.add_argument("--writers", type=int, default=10)
    parser.add_argument("--per-writer", type=int, default=500)
    parser.add_argument("--rows", type=int, default=100_000, help="responses in the store for the read timings")
    args = parser.parse_args()

    from curation.responses import ResponseStore

    root = tempfile.mkdtemp(prefix="satsang-bench-")
    with ResponseStore.open(root, url=args.db) as store:
        print(f"store: {store}")
        latencies = []
        for i in range(1000):
            started = time.perf_counter()
            store.record(f"single-{i}", "h" * 32, "bench", "accept")
            latencies.append(time.perf_counter() - started)
        latencies.sort()
        print(
            f"record, one writer: median {statistics.median(latencies) * 1e3:.2f} ms,"
            f" p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.2f} ms"
        )

        started = time.perf_counter()
        batch = [
            {"item_id": f"bulk-{i}", "content_hash": "h" * 32, "reviewer": "bench", "decision": "reject", "reason": "duplicate"}
            for i in range(5000)
        ]
        store.record_many(batch)
        elapsed = time.perf_counter() - started
        print(f"record_many, 5000 in one transaction: {elapsed:.2f} s ({5000 / elapsed:,.0f}/s)")

    env = {k: v for k, v in os.environ.items() if k != "SATSANG_DB_URL"}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, root, args.db or "", f"w{n}", str(args.per_writer)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        for n in range(args.writers)
    ]
    for writer in writers:
        writer.stdout.readline()
    started = time.perf_counter()
    for writer in writers:
        writer.stdin.write("go\n")
        writer.stdin.flush()
    for writer in writers:
        writer.wait()
    elapsed = time.perf_counter() - started
    total = args.writers * args.per_writer
    with ResponseStore.open(root, url=args.db) as store:
        arrived = store.responses().filter(store.responses()["reviewer"].str.starts_with("w")).height
        print(
            f"{args.writers} writer processes x {args.per_writer}: {elapsed:.2f} s ({total / elapsed:,.0f} commits/s),"
            f" {arrived}/{total} present, integrity {store.integrity_check() or 'ok'}"
        )

        have = store.responses().height
        fill = max(0, args.rows - have)
        store.record_many(
            [
                {"item_id": f"fill-{i % (fill // 3 + 1)}", "content_hash": "h" * 32, "reviewer": "bench",
                 "decision": ("accept", "reject", "edit")[i % 3], "reason": "off-topic" if i % 3 == 1 else None,
                 "edited_answer": "x" if i % 3 == 2 else None}
                for i in range(fill)
            ]
        )
        for name, read in (
            ("state()", store.state),
            ("responses()", store.responses),
            ("history(item)", lambda: store.history("fill-1")),
        ):
            started = time.perf_counter()
            result = read()
            elapsed = time.perf_counter() - started
            size = getattr(result, "height", None) or len(result)
            print(f"{name} on {store.responses().height:,} responses: {elapsed * 1e3:.0f} ms ({size:,} rows)")


if __name__ == "__main__":
    main()
