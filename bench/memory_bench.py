"""What the memory benchmarks (bench/*_memory.py) share: peak RSS per phase, sampled in a thread, and a baseline
commit's code to run against."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PhasePeaks:
    """`mark(message)` closes the phase running, named by the message up to its first ":" or " (";
    `phases` holds (name, seconds, peak MB, MB at its end) per phase."""

    def __init__(self, interval: float = 0.02, echo: bool = True):
        self.phases: list[tuple[str, float, float, float]] = []
        self.echo = echo
        self.peak = rss_mb()
        self.since = time.perf_counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, args=(interval,), daemon=True)
        self.thread.start()

    def sample(self, interval: float) -> None:
        while not self.stop.is_set():
            value = rss_mb()
            with self.lock:
                self.peak = max(self.peak, value)
            self.stop.wait(interval)

    def mark(self, message: str) -> None:
        value = rss_mb()
        with self.lock:
            name = message.split(":")[0].split(" (")[0].strip()
            now = time.perf_counter()
            self.phases.append((name, now - self.since, max(self.peak, value), value))
            self.peak, self.since = value, now
        if self.echo:
            print(f"    {message}  [peak {self.phases[-1][2]:.0f} MB]", flush=True)

    def close(self, message: str) -> None:
        self.mark(message)
        self.stop.set()
        self.thread.join()

    def phase(self, name: str) -> tuple[str, float, float, float]:
        return next(phase for phase in self.phases if phase[0] == name)


def baseline_tree(ref: str) -> tuple[str, Path]:
    """The baseline commit's code (the whole tree), exported once under /tmp (no worktree, nothing written into the
    repository): put it first on a child's PYTHONPATH to run the baseline."""
    sha = subprocess.run(["git", "rev-parse", ref], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    target = Path(f"/tmp/satsang-base-{sha[:12]}")
    if not (target / "curation").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return sha, target
