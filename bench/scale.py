"""Scale-out benchmark: the whole path (ingest, MinHash/LSH dedup, score, export) of a synthetic corpus, local vs Ray.

Run as: python bench/scale.py [--mb 500] [--cpus 2] [--executors local,ray[,partitioned]] [--stages ingest,dedup,score,export] [--corpus DIR] [--keep] [--resume WORKDIR] [--containment X]

The corpus (default 500 MB of UTF-8 text, in books of 0.5-4 MB) is assembled from
the sentences of the real books in ../shared/data/books: shuffled into paragraphs
and chapters, about 15% of the words of each sentence replaced by other words of
the books, so that passages are new text; and 4% of the paragraphs are copies
(exact, or with 2% of the words changed) of shared ones, so that the dedup has
real work. It is written once to --corpus (default: a temporary
directory) and reused if already there.

Each executor runs in its own child process, on a fresh workspace:

- local: `Workspace.ingest` (all books, one commit) then `run_dedup_distributed` with no
  executor: what `satsang ingest` and `satsang dedup` do, in one process (the partitioned
  algorithm on a LocalExecutor beyond 50,000 items).
- ray: `Workspace.ingest` and `curation.distributed.run_dedup_distributed` on a local
  Ray with --cpus CPUs (ray.init in the child).
- partitioned (not run by default): the same two functions with `LocalExecutor`,
  in one process: tells the partitioned algorithm's share of the gain from Ray's.

Then (with --stages, default all four) `run_score` / `run_score_distributed` with the
default ScoreConfig (the engine it names; threads = --cpus) and `export_version` of a
pretrain version of every representative passage (unreviewed included). Scoring is
by far the slowest stage (tens of passages a second per core): at 500 MB it takes
hours; `--stages ingest,dedup` gives the old figures. `--keep --stages ingest,dedup` then
`--resume WORKDIR --stages score,export` (or export) runs the later stages on the kept
workspaces, with another version of the code if wanted, and reports the whole path
(the peaks: the larger of the two runs'). `--containment 0` turns dedup's containment
linking off (its candidate pairs grow with the square of this corpus: see README).

Printed per executor: seconds and MB/s for each stage and the whole path, and MB/s per
core for the whole path (--cpus cores: both executors may use them all); the peak memory
of the whole process tree (the child and, for Ray, every Ray process it started:
GCS, raylet, workers), sampled with psutil, as the sum of RSS and the sum of PSS
(shared pages, such as Ray's object store, counted once); the driver's own peak
RSS (ru_maxrss); and whether the two executors produced identical items (a hash of
every row, dedup columns included). Then the Ray/local throughput ratio.
No timed assertions: it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BOOKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "books"
FALLBACK_TEXTS = Path(__file__).resolve().parents[1] / "tests" / "data"
MANIFEST = "corpus.json"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


# ---- the corpus ------------------------------------------------------------------------------


def _sentences() -> tuple[list[list[str]], list[str]]:
    """Sentences (as word lists) and the vocabulary of the real books."""
    sources = sorted(BOOKS.glob("*.txt")) if BOOKS.is_dir() else sorted(FALLBACK_TEXTS.glob("*.txt"))
    sentences = []
    for path in sources:
        text = " ".join(path.read_text(encoding="utf-8").split())
        for sentence in SENTENCE_END.split(text):
            words = sentence.split()
            if 4 <= len(words) <= 80:
                sentences.append(words)
    vocabulary = sorted({word for words in sentences for word in words})
    return sentences, vocabulary


def _edit(words: list[str], rate: float, rng: random.Random, vocabulary: list[str]) -> list[str]:
    return [rng.choice(vocabulary) if rng.random() < rate else word for word in words]


def _paragraph(rng: random.Random, rate: float) -> str:
    sentences, vocabulary = _CORPUS
    return " ".join(" ".join(_edit(rng.choice(sentences), rate, rng, vocabulary)) for _ in range(rng.randint(3, 9)))


def _write_book(args: tuple[int, int, int, str]) -> tuple[str, int]:
    """One book of about `size` bytes, deterministic in (seed, number)."""
    number, size, seed, directory = args
    _, vocabulary = _CORPUS
    rng = random.Random(seed * 1_000_003 + number)
    parts: list[str] = [f"BOOK {number}\n\n"]
    written = 0
    chapter = 0
    while written < size:
        if chapter == 0 or rng.random() < 0.03:
            chapter += 1
            heading = f"CHAPTER {chapter}\n\n"
            parts.append(heading)
            written += len(heading)
        roll = rng.random()
        if roll < 0.02:
            paragraph = rng.choice(_SHARED)  # an exact copy of a paragraph other books hold too
        elif roll < 0.04:
            paragraph = " ".join(_edit(rng.choice(_SHARED).split(), 0.02, rng, vocabulary))  # a near copy
        else:
            paragraph = _paragraph(rng, 0.15)
        parts.append(paragraph + "\n\n")
        written += len(paragraph.encode("utf-8")) + 2
    path = Path(directory) / f"book-{number:05d}.txt"
    path.write_text("".join(parts), encoding="utf-8")
    return str(path), path.stat().st_size


_CORPUS: tuple[list[list[str]], list[str]] = ([], [])
_SHARED: list[str] = []  # paragraphs that books copy from: the same in every worker (seeded)


def _init_corpus(seed: int) -> None:
    global _CORPUS, _SHARED
    _CORPUS = _sentences()
    rng = random.Random(seed)
    _SHARED = [_paragraph(rng, 0.15) for _ in range(3000)]


def make_corpus(directory: Path, megabytes: int, seed: int, processes: int) -> list[Path]:
    """The books, written once; reused when the manifest says they were made with these settings."""
    import multiprocessing

    manifest_path = directory / MANIFEST
    settings = {"megabytes": megabytes, "seed": seed}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest["settings"] == settings and all(Path(p).exists() for p in manifest["books"]):
            return [Path(p) for p in manifest["books"]]
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sizes, total = [], 0
    while total < megabytes * 1_000_000:
        size = rng.randint(500_000, 4_000_000)
        sizes.append(size)
        total += size
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(processes, initializer=_init_corpus, initargs=(seed,)) as pool:
        written = pool.map(_write_book, [(i, size, seed, str(directory)) for i, size in enumerate(sizes)], chunksize=1)
    books = [path for path, _ in written]
    manifest_path.write_text(json.dumps({"settings": settings, "books": books, "bytes": sum(n for _, n in written)}))
    print(f"corpus: {len(books)} books, {sum(n for _, n in written) / 1e6:.0f} MB written to {directory}"
          f" in {time.perf_counter() - started:.0f} s", flush=True)
    return [Path(p) for p in books]


# ---- one executor, in a child process ------------------------------------------------------------


def score_and_export(workspace, executor, cpus: int, stages: tuple[str, ...]) -> dict[str, float]:
    """The last two stages of the path, timed: score (locally, or on the executor's workers) and export."""
    from curation.export import export_version
    from curation.score import ScoreConfig, run_score
    from curation.selection import ExportConfig

    timings = {}
    if "score" in stages:
        import torch

        torch.set_num_threads(cpus)
        config = ScoreConfig(threads=cpus)
        started = time.perf_counter()
        if executor is None:
            run_score(workspace, config)
        else:
            from curation.distributed import run_score_distributed

            run_score_distributed(workspace, config, executor)
        timings["score"] = time.perf_counter() - started
        timings["score_maxrss_mb"] = maxrss_mb()
    if "export" in stages:
        started = time.perf_counter()
        export_version(workspace, ExportConfig(name="scale", kind="pretrain", include_unreviewed=True))
        timings["export"] = time.perf_counter() - started
        timings["export_maxrss_mb"] = maxrss_mb()
    return timings


def maxrss_mb() -> float:
    """This process' peak RSS so far (it only grows: read after each stage, it says which stage set the peak)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(executor_name: str, corpus: Path, cpus: int, workdir: Path, stages: tuple[str, ...],
              containment: float | None) -> dict:
    from curation.dedup import DedupConfig
    from curation.distributed import run_dedup_distributed
    from curation.workspace import Workspace, init_workspace

    manifest = json.loads((corpus / MANIFEST).read_text())
    books = [Path(p) for p in manifest["books"]]
    megabytes = manifest["bytes"] / 1e6
    dedup_config = DedupConfig() if containment is None else DedupConfig(containment=containment)
    earlier = workdir / f"result-{executor_name}.json"
    if earlier.exists():  # --resume: ingest and dedup were run (and timed) by an earlier run into this workdir
        previous = json.loads(earlier.read_text())
        workspace = Workspace.open(workdir / f"ws-{executor_name}")
        timings = {key: value for key, value in previous["timings"].items() if key.split("_")[0] in ("ingest", "dedup", "ray")}
        executor = None if executor_name == "local" or "score" not in stages else _executor(executor_name, cpus)
        timings.update(score_and_export(workspace, executor, cpus, stages))
        if executor is not None:
            executor.close()
        return {**previous, "timings": timings, "digest": _rows_digest(workspace), "resumed": True,
                "driver_maxrss_mb": max(previous["driver_maxrss_mb"], maxrss_mb())}
    workspace = init_workspace(workdir / f"ws-{executor_name}")
    timings = {}
    if executor_name == "local":
        started = time.perf_counter()
        report = workspace.ingest(books, "prose")
        timings["ingest"] = time.perf_counter() - started
        timings["ingest_maxrss_mb"] = maxrss_mb()
        started = time.perf_counter()
        # No executor: in this process, partitioned beyond 50k items.
        dedup_report = run_dedup_distributed(workspace, dedup_config,
                                             progress=lambda m: print(f"  local dedup {m}", flush=True))
        timings["dedup"] = time.perf_counter() - started
        timings["dedup_maxrss_mb"] = maxrss_mb()
    else:
        started = time.perf_counter()
        executor = _executor(executor_name, cpus)
        timings["ray_start"] = time.perf_counter() - started
        started = time.perf_counter()
        report = workspace.ingest(books, "prose", executor=executor)
        timings["ingest"] = time.perf_counter() - started
        timings["ingest_maxrss_mb"] = maxrss_mb()
        started = time.perf_counter()
        dedup_report = run_dedup_distributed(workspace, dedup_config, executor=executor,
                                              progress=lambda m: print(f"  {executor_name} dedup {m}", flush=True))
        timings["dedup"] = time.perf_counter() - started
        timings["dedup_maxrss_mb"] = maxrss_mb()
    timings.update(score_and_export(workspace, None if executor_name == "local" else executor, cpus, stages))
    if executor_name != "local":
        executor.close()
    _, parts = workspace.item_parts()
    n_items = sum(part.rows for part in parts)
    return {
        "executor": executor_name,
        "megabytes": megabytes,
        "books": len(books),
        "items": n_items,
        "sources": report.n_new_sources,
        "timings": timings,
        "dedup": {"clusters": dedup_report.n_clusters, "exact": dedup_report.n_exact_duplicates,
                  "near": dedup_report.n_near_duplicates, "cross_source": dedup_report.n_cross_source_clusters},
        "digest": _rows_digest(workspace),
        "driver_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _executor(name: str, cpus: int):
    from curation.executors import LocalExecutor, RayExecutor

    return LocalExecutor() if name == "partitioned" else RayExecutor(num_cpus=cpus)


def _rows_digest(workspace) -> str:
    """The rows as a multiset, a part at a time (the whole table may not fit): sorted row hashes, hashed."""
    import hashlib

    import numpy as np

    _, parts = workspace.item_parts()
    row_hashes = np.sort(np.concatenate([part.read().hash_rows(seed=0).to_numpy() for part in parts]))
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()


class TreeMemory:
    """Peak memory of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.5):
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = self.peak_pss = self.peak_single_rss = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        tick = 0
        while not self._stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            rss = pss = single = 0
            full = tick % 4 == 0  # PSS reads smaps: every other second is enough
            for process in processes:
                try:
                    if full:
                        info = process.memory_full_info()
                        rss += info.rss
                        pss += info.pss
                        single = max(single, info.rss)
                    else:
                        value = process.memory_info().rss
                        rss += value
                        single = max(single, value)
                except psutil.Error:
                    continue
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_single_rss = max(self.peak_single_rss, single)
            self.peak_processes = max(self.peak_processes, len(processes))
            tick += 1
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_executor(name: str, corpus: Path, cpus: int, workdir: Path, stages: str, containment: float | None) -> dict:
    output = workdir / f"result-{name}.json"
    command = [sys.executable, __file__, "--child", name, "--corpus", str(corpus), "--cpus", str(cpus),
               "--workdir", str(workdir), "--result", str(output), "--stages", stages]
    if containment is not None:
        command += ["--containment", str(containment)]
    earlier = json.loads(output.read_text()) if output.exists() else None
    started = time.perf_counter()
    child = subprocess.Popen(command)
    memory = TreeMemory(child.pid)
    code = child.wait()
    memory.stop()
    if code != 0:
        raise SystemExit(f"{name}: the child exited with status {code}")
    result = json.loads(output.read_text())
    result["wall"] = time.perf_counter() - started
    result["peak_tree_rss_mb"] = memory.peak_rss / 2**20
    result["peak_tree_pss_mb"] = memory.peak_pss / 2**20
    result["peak_single_rss_mb"] = memory.peak_single_rss / 2**20
    result["peak_processes"] = memory.peak_processes
    if earlier is not None:  # resumed: the whole path's peaks are the larger of the two runs'
        for key in ("peak_tree_rss_mb", "peak_tree_pss_mb", "peak_single_rss_mb", "peak_processes"):
            result[key] = max(result[key], earlier[key])
        result["wall"] += earlier["wall"]
    output.write_text(json.dumps(result))
    return result


STAGES = ("ingest", "dedup", "score", "export")


def report(results: list[dict], cpus: int) -> None:
    stages = [stage for stage in STAGES if stage in results[0]["timings"]]
    print()
    print(f"{'executor':<8} {'MB':>6} {'items':>8} " + " ".join(f"{stage + ' s':>9}" for stage in stages)
          + f" {'total s':>8} " + " ".join(f"{stage + ' MB/s':>11}" for stage in stages)
          + f" {'MB/s':>6} {'MB/s/core':>9} {'tree RSS MB':>11} {'tree PSS MB':>11} {'driver MB':>9} {'procs':>5}")
    for r in results:
        t = r["timings"]
        whole = total(r)
        print(f"{r['executor']:<8} {r['megabytes']:>6.0f} {r['items']:>8} "
              + " ".join(f"{t[stage]:>9.1f}" for stage in stages) + f" {whole:>8.1f} "
              + " ".join(f"{r['megabytes'] / t[stage]:>11.3f}" for stage in stages)
              + f" {r['megabytes'] / whole:>6.3f} {r['megabytes'] / whole / cpus:>9.4f} {r['peak_tree_rss_mb']:>11.0f}"
              f" {r['peak_tree_pss_mb']:>11.0f} {r['driver_maxrss_mb']:>9.0f} {r['peak_processes']:>5}")
    for r in results:
        peaks = ", ".join(f"{stage} {r['timings'][stage + '_maxrss_mb']:.0f}" for stage in stages
                          if stage + "_maxrss_mb" in r["timings"])
        print(f"{r['executor']}: the driver's peak RSS (MB) after each stage: {peaks}")
    for r in results:
        print(f"{r['executor']}: dedup {r['dedup']}; Ray start {r['timings']['ray_start']:.1f} s (not counted)"
              if r["executor"] == "ray" else f"{r['executor']}: dedup {r['dedup']}")
    by_name = {r["executor"]: r for r in results}
    if "local" in by_name:
        local = by_name["local"]
        for name, other in by_name.items():
            if name == "local":
                continue
            print(f"\nthroughput ratio {name}/local: "
                  + ", ".join(f"{stage} {local['timings'][stage] / other['timings'][stage]:.2f}x" for stage in stages)
                  + f", whole path {total(local) / total(other):.2f}x; "
                  f"identical items (dedup and score columns included): {local['digest'] == other['digest']}")


def total(r: dict) -> float:
    return sum(seconds for stage, seconds in r["timings"].items() if stage in STAGES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=500, help="corpus size in MB (default 500)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs for Ray and for writing the corpus")
    parser.add_argument("--executors", default="local,ray")
    parser.add_argument("--stages", default=",".join(STAGES), help="the stages timed, in order; ingest,dedup always run")
    parser.add_argument("--corpus", type=Path, help="where the corpus is (or is written); default: a temp dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the workspaces and a temporary corpus")
    parser.add_argument("--resume", type=Path, metavar="WORKDIR",
                        help="a kept workdir (printed by --keep): run only the stages after dedup on its workspaces,"
                             " adding the earlier run's ingest and dedup figures")
    parser.add_argument("--containment", type=float, help="dedup's containment setting (default: DedupConfig's)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = run_child(args.child, args.corpus, args.cpus, args.workdir, tuple(args.stages.split(",")),
                           args.containment)
        args.result.write_text(json.dumps(result))
        return

    import shutil

    temporary = args.corpus is None
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix="satsang-scale-corpus-"))
    make_corpus(corpus, args.mb, args.seed, args.cpus)
    workdir = args.resume or Path(tempfile.mkdtemp(prefix="satsang-scale-"))
    if args.keep or args.resume:
        print(f"workdir: {workdir}", flush=True)
    results = []
    try:
        for name in args.executors.split(","):
            print(f"running {name} ...", flush=True)
            results.append(run_executor(name.strip(), corpus, args.cpus, workdir, args.stages, args.containment))
            print(f"  {name}: {json.dumps(results[-1])}", flush=True)  # kept in the log if a later run fails
            if not args.keep and not args.resume:
                shutil.rmtree(workdir / f"ws-{name.strip()}", ignore_errors=True)
    finally:
        if not args.keep and not args.resume:
            shutil.rmtree(workdir, ignore_errors=True)
            if temporary:
                shutil.rmtree(corpus, ignore_errors=True)
    report(results, args.cpus)


if __name__ == "__main__":
    main()
