"""Benchmark how fast `satsang … --help` answers: this tree against a baseline commit, in one run.

Run as: python bench/cli_help.py [--baseline REF] [--repeat 7]

The baseline (default: 5baadad, the commit before the CLI's options were made from the config
dataclasses) is extracted with `git archive` into a temporary directory; each command then runs
`--repeat` times as a fresh `python -m satsang.cli` process with that tree, then this one, first
on the path, alternating, so both see the same machine load. It prints the median wall time of
each and the ratio this tree / baseline (below 1: faster). The goal is that the config options
cost `satsang --help` nothing: they are built only for the command whose help is asked.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (["--help"], ["train", "pretrain", "--help"], ["train", "sft", "--help"], ["score", "--help"], ["dedup", "--help"])


def extract(ref: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def seconds(tree: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "120"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "satsang.cli", *args], env=env, cwd=tree, capture_output=True, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="5baadad", help="git ref of the baseline tree")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        baseline = extract(args.baseline, Path(scratch))
        print(f"baseline {args.baseline} vs this tree ({ROOT}); median of {args.repeat} runs each")
        print(f"{'command':<28} {'baseline s':>10} {'this s':>8} {'ratio':>6}")
        for command in COMMANDS:
            before, after = [], []
            for _ in range(args.repeat):
                before.append(seconds(baseline, command))
                after.append(seconds(ROOT, command))
            b, a = statistics.median(before), statistics.median(after)
            print(f"{'satsang ' + ' '.join(command):<28} {b:>10.3f} {a:>8.3f} {a / b:>6.2f}")


if __name__ == "__main__":
    main()
