"""Does the scoring stage's memory follow the part or the corpus? RSS after each part of `run_score`.

Run as: python bench/score_memory.py [--items 250000] [--threads 1] [--workdir DIR]

A prose book of --items short synthetic passages (20-30 words of Nan Yar?'s vocabulary, each
numbered, so every text is new to the embedding store) is ingested into a fresh workspace
(`Workspace.part_rows` items a part), then scored with the default ScoreConfig (its engine,
--threads threads). Printed after each part is encoded: items done, the process' RSS now and its
peak so far; then the peak of the whole stage (the commit, part by part, included). The baseline
is the first part: a stage whose memory followed the corpus would grow by a part's worth with
each part; the ratio of the last part's RSS to the first's says how much it grows.
Passages this short encode fast, so the corpus can have many parts within minutes.
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from pathlib import Path

BOOK = Path(__file__).resolve().parents[2] / "shared" / "data" / "books" / "nan-yar.txt"
FALLBACK = Path(__file__).resolve().parents[1] / "tests" / "data" / "nan-yar-excerpt.txt"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=250_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="where the book and workspace go (default: a temp dir)")
    args = parser.parse_args()

    import psutil

    from curation.score import ScoreConfig, run_score
    from curation.workspace import init_workspace

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="satsang-score-memory-"))
    workdir.mkdir(parents=True, exist_ok=True)
    vocabulary = (BOOK if BOOK.exists() else FALLBACK).read_text(encoding="utf-8").split()
    rng = random.Random(1)
    book = workdir / f"short-passages-{args.items}.txt"
    with open(book, "w", encoding="utf-8") as out:
        for i in range(args.items):
            out.write(" ".join(rng.choice(vocabulary) for _ in range(rng.randint(20, 30))) + f" number {i}.\n\n")
    workspace = init_workspace(workdir / "ws")
    workspace.ingest([book], "prose")
    _, parts = workspace.item_parts()
    print(f"{sum(p.rows for p in parts):,} passages in {len(parts)} parts; engine {ScoreConfig().backend}, "
          f"{args.threads} thread(s)", flush=True)

    process = psutil.Process()
    rows: list[tuple[int, float, float]] = []
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        rows.append((done, process.memory_info().rss / 2**20, peak_mb()))
        print(f"  {done:>9,} / {total:,} items encoded: RSS {rows[-1][1]:,.0f} MB, peak so far {rows[-1][2]:,.0f} MB"
              f" ({time.perf_counter() - started:.0f} s)", flush=True)

    run_score(workspace, ScoreConfig(threads=args.threads), progress=progress)
    print(f"whole stage (commit included): peak {peak_mb():,.0f} MB in {time.perf_counter() - started:.0f} s")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"last part / first part: RSS {last[1] / first[1]:.2f}x, peak {last[2] / first[2]:.2f}x, "
              f"for {last[0] / first[0]:.1f}x the items")


if __name__ == "__main__":
    main()
