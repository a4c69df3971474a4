"""Peak memory of ingesting one big single-line prose file, as a multiple of the file's size.

Run as: python bench/memory.py [--mb 50] [--kind prose]

Each ingest runs in a fresh Python process (a workspace of its own) that reports its peak
resident set size (resource.getrusage ru_maxrss). Baseline, named in every ratio printed: the
same process ingesting a one-paragraph file of the same kind, so the ratio over the baseline is
what the big file itself costs. Issue 14's goal: peak <= 10x the file's size (it was 77x: 3.8 GB
for 50 MB). The file is generated: sentences of plain words, no line break anywhere.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

GOAL_MULTIPLE = 10.0
REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
from curation.workspace import init_workspace
import curation.prose, polars
curation.prose.sentence_splitter()  # spaCy as ingest loads it, in the baseline run too
workspace = init_workspace(sys.argv[1])
started = time.perf_counter()
report = workspace.ingest([sys.argv[2]], sys.argv[3])
seconds = time.perf_counter() - started
print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "items": report.n_new_items, "seconds": seconds}))
"""


def single_line_book(path: Path, n_bytes: int, seed: int = 14) -> Path:
    rng = random.Random(seed)
    words = "who am i the self is silence awareness mind thought seeker practice abide still sleep waking dream grace".split()
    with open(path, "w", encoding="utf-8") as out:
        written = 0
        while written < n_bytes:
            sentence = " ".join(rng.choice(words) for _ in range(rng.randint(6, 24))).capitalize() + ". "
            out.write(sentence)
            written += len(sentence)
        out.write("\n")
    return path


def ingest_peak(book: Path, kind: str, scratch: Path) -> dict:
    workspace = Path(tempfile.mkdtemp(dir=scratch)) / "ws"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(workspace), str(book), kind],
        capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"ingest of {book} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="size of the big file in MB (default 50)")
    parser.add_argument("--kind", default="prose", choices=("prose",))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        small = single_line_book(scratch / "small.txt", 2_000)
        big = single_line_book(scratch / "big.txt", int(args.mb * 1_000_000))
        size = big.stat().st_size
        baseline = ingest_peak(small, args.kind, scratch)
        result = ingest_peak(big, args.kind, scratch)
    peak = result["peak_kb"] * 1024
    base = baseline["peak_kb"] * 1024
    print(f"file: {size / 1e6:.1f} MB on one line, {result['items']:,} passages, ingested in {result['seconds']:.1f} s")
    print(f"baseline (a 2 KB file, same modules loaded): peak RSS {base / 1e6:.0f} MB")
    print(f"peak RSS: {peak / 1e6:.0f} MB = {peak / size:.1f}x the file (goal <= {GOAL_MULTIPLE:g}x; issue 14 measured 77x)")
    print(f"over the baseline: {(peak - base) / 1e6:.0f} MB = {(peak - base) / size:.1f}x the file")


if __name__ == "__main__":
    main()
