"""Time the ingest of the full Talks book into a fresh workspace.

Run as: python bench/ingest.py [BOOK]

Baseline: the goal the foundation issue names, 2 seconds for the whole book on
this machine (2 cores). Prints the parse and the full ingest (read, validate,
parse, write Parquet, commit) separately, pairs per second, the ratio of the
time to the goal, and the parse quality (talks with pairs, turn contamination).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from curation.dialogue import parse_dialogue
from curation.quality import turn_contamination
from curation.workspace import init_workspace

GOAL_SECONDS = 2.0
BOOKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "books"
DEFAULT_BOOKS = ["talks-with-sri-ramana-maharshi.txt", "talks-with-sri-ramana-maharshi-vol2.txt"]
REPEATS = 5


def bench(book: Path) -> None:
    text = book.read_text(encoding="utf-8")
    parse_times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        result = parse_dialogue(text, "0" * 64, title=book.stem)
        parse_times.append(time.perf_counter() - t0)

    ingest_times = []
    for _ in range(REPEATS):
        with tempfile.TemporaryDirectory() as tmp:
            workspace = init_workspace(Path(tmp) / "ws")
            t0 = time.perf_counter()
            workspace.ingest([book], "dialogue")
            ingest_times.append(time.perf_counter() - t0)

    pairs = result.report["pairs"]
    parse_s, ingest_s = statistics.median(parse_times), statistics.median(ingest_times)
    dirt = turn_contamination(result.items)
    print(f"{book.name}  ({len(text):,} characters, median of {REPEATS})")
    print(f"  talks: {result.report['sections']}  with pairs: {result.report['sections_with_pairs']}  "
          f"pairs: {pairs}  silences: {result.report['silences']}  convention: {result.convention}")
    print(f"  parse:  {parse_s:6.3f} s  {pairs / parse_s:9,.0f} pairs/s")
    print(f"  ingest: {ingest_s:6.3f} s  {pairs / ingest_s:9,.0f} pairs/s  "
          f"= {ingest_s / GOAL_SECONDS:.2f}x the {GOAL_SECONDS:.0f} s goal ({GOAL_SECONDS / ingest_s:.1f}x faster than needed)")
    print(f"  contamination: {dirt.contaminated}/{dirt.turns} turns = {dirt.rate:.3%} (goal <= 0.3%) {dirt.by_reason}")


if __name__ == "__main__":
    books = [Path(p) for p in sys.argv[1:]] or [BOOKS / name for name in DEFAULT_BOOKS]
    for path in books:
        if not path.exists():
            sys.exit(f"{path}: not found (the full books live in ../shared/data/books)")
        bench(path)
