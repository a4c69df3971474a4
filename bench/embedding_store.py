"""Embedding store benchmark: the append-only store of parts against the single-file store it replaced.

Run as: python bench/embedding_store.py [--n 1000000] [--n-old 200000] [--batch 10000] [--dim 384] [--dir DIR]
        [--baseline REV]

What run_score does with the store, batch by batch: add `--batch` random unit vectors
(keys: text_key of a counter), save; a scorer saves every batch. Each scenario runs in its
own child process, so that its peak RSS is its own:

- build: the total time of the adds and saves, the peak RSS (ru_maxrss) and its growth over
  the RSS after imports, the bytes on disk and the number of parts. Both stores at
  --n-old (the single-file store rewrites its whole file each save: O(n^2)); the new one
  at --n as well.
- open: a fresh process opens the store: seconds, RSS growth (the index), the index's
  bytes per key; then get() of 1,000 random keys, 20 times (the first and the median
  latency; the page cache is warm from the build), each checked against the vectors added.

The baseline is `curation/embedding_store.py` at --baseline (default main; if main already has
the new store, the commit before it arrived), loaded from git into a temporary module.
Ratios are baseline / new (above 1: the new store is better), measured in this run.
No timed assertions: it reports.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.embedding_store import EmbeddingStore, text_key  # noqa: E402

STORE_FILE = "curation/embedding_store.py"


def rss_mb(kind: str = "VmRSS") -> float:
    """This process's resident memory: VmRSS (all), RssAnon (its own), RssFile (pages of mapped files, the page cache's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def baseline_source(rev: str) -> str:
    """The single-file store's source at `rev`, or just before the parts store arrived if `rev` has it."""

    def show(at: str) -> str:
        return subprocess.run(["git", "show", f"{at}:{STORE_FILE}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    source = show(rev)
    if "PART_NAME" in source:
        introduced = subprocess.run(
            ["git", "log", "--format=%H", "-S", "PART_NAME", rev, "--", STORE_FILE], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()[-1]
        source = show(f"{introduced}^")
    return source


def store_class(impl: str, rev: str) -> type:
    if impl == "new":
        return EmbeddingStore
    path = Path(tempfile.mkdtemp()) / "single_file_embedding_store.py"
    path.write_text(baseline_source(rev), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("single_file_embedding_store", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EmbeddingStore


def keys_of(rows: np.ndarray | range) -> list[str]:
    return [text_key(f"passage {i}") for i in rows]


def vectors_of(rows: np.ndarray, dim: int) -> np.ndarray:
    """Unit vectors, random but reproducible per row (a reader can check what it got): column 0 is the row."""
    out = np.random.default_rng(int(rows[0])).standard_normal((len(rows), dim)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    out[:, 0] = rows
    return out


def build(args: argparse.Namespace) -> dict:
    store_type = store_class(args.impl, args.baseline)
    started_rss, started_anon = rss_mb(), rss_mb("RssAnon")
    store = store_type(args.path)
    spent = 0.0
    for start in range(0, args.n, args.batch):
        rows = np.arange(start, min(start + args.batch, args.n))
        keys, vectors = keys_of(rows), vectors_of(rows, args.dim)
        t0 = time.perf_counter()
        store.add(keys, vectors)
        store.save()
        spent += time.perf_counter() - t0
    path = Path(args.path)
    disk = sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size
    return {
        "seconds": spent,
        "peak_rss_mb": peak_rss_mb(),
        "peak_growth_mb": peak_rss_mb() - started_rss,
        "end_anon_growth_mb": rss_mb("RssAnon") - started_anon,
        "disk_mb": disk / 2**20,
        "parts": getattr(store, "n_parts", 1),
        "n": len(store),
    }


def reopen(args: argparse.Namespace) -> dict:
    store_type = store_class(args.impl, args.baseline)
    # A tiny store first, so that what opening and reading import lazily is not counted as the store's memory.
    tiny = store_type(Path(tempfile.mkdtemp()) / "tiny.parquet")
    tiny.add(keys_of(range(2)), vectors_of(np.arange(2), args.dim))
    tiny.save()
    store_type(tiny.path).get(keys_of(range(2)))
    before, anon_before = rss_mb(), rss_mb("RssAnon")
    t0 = time.perf_counter()
    store = store_type(args.path)
    opened = time.perf_counter() - t0
    after, anon_after = rss_mb(), rss_mb("RssAnon")
    rng = np.random.default_rng(7)
    latencies = []
    for _ in range(20):
        rows = np.sort(rng.choice(args.n, 1000, replace=False))
        rng.shuffle(rows)
        keys = keys_of(rows)
        t0 = time.perf_counter()
        got = store.get(keys)
        latencies.append(time.perf_counter() - t0)
        assert np.array_equal(got[:, 0], rows.astype(np.float32)), "get returned other rows"
    return {
        "open_s": opened,
        "open_growth_mb": after - before,
        "open_anon_growth_mb": anon_after - anon_before,
        "index_bytes_per_key": getattr(store, "index_bytes", float("nan")) / max(len(store), 1),
        "get_first_ms": latencies[0] * 1e3,
        "get_median_ms": float(np.median(latencies)) * 1e3,
        "rss_after_gets_mb": rss_mb() - before,
        "anon_after_gets_mb": rss_mb("RssAnon") - anon_before,
    }


def child(scenario: str, impl: str, path: Path, n: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", scenario, "--impl", impl, "--path", str(path), "--n", str(n),
               "--batch", str(args.batch), "--dim", str(args.dim), "--baseline", args.baseline]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{scenario} {impl} n={n} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--n-old", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--dir", type=Path, default=None, help="where the stores are built (default: a temporary directory)")
    parser.add_argument("--baseline", default="main")
    parser.add_argument("--child", choices=["build", "open"])
    parser.add_argument("--impl", choices=["new", "old"])
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.child:
        print(json.dumps((build if args.child == "build" else reopen)(args)))
        return

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-embedding-store-"))
    print(f"{args.dim}-d float32, batches of {args.batch:,} (add + save each); stores under {work}")
    print(f"baseline: the single-file store of {args.baseline} (or the commit before the parts store)\n")
    results = {}
    for impl, n in (("old", args.n_old), ("new", args.n_old), ("new", args.n)):
        if (impl, n) in results:
            continue
        path = work / f"{impl}-{n}" / "store.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        built = child("build", impl, path, n, args)
        opened = child("open", impl, path, n, args)
        results[impl, n] = {**built, **opened}
        r = results[impl, n]
        print(f"{impl:>3} n={n:>9,}: saves {r['seconds']:7.1f} s ({n / r['seconds']:9,.0f} rows/s), peak RSS {r['peak_rss_mb']:7.0f} MB"
              f" (+{r['peak_growth_mb']:.0f} over imports; anonymous at the end +{r['end_anon_growth_mb']:.0f}),"
              f" {r['disk_mb']:6.0f} MB on disk in {r['parts']} part(s)")
        print(f"{'':>17} reopen {r['open_s']:6.2f} s, +{r['open_growth_mb']:.0f} MB RSS (anonymous +{r['open_anon_growth_mb']:.0f};"
              + (f" {r['index_bytes_per_key']:.0f} index bytes/key);" if impl == "new" else " the whole table in memory);")
              + f" get(1,000 random keys): first {r['get_first_ms']:.1f} ms,"
              f" median {r['get_median_ms']:.1f} ms; after 20 gets RSS +{r['rss_after_gets_mb']:.0f} MB"
              f" (anonymous +{r['anon_after_gets_mb']:.0f}; the rest is mapped pages of the parts)")
    old, new = results["old", args.n_old], results["new", args.n_old]
    print(f"\nratios at n={args.n_old:,} (single-file / parts; above 1: parts better):")
    print(f"  save time {old['seconds'] / new['seconds']:.1f}x, peak RSS {old['peak_rss_mb'] / new['peak_rss_mb']:.1f}x"
          f" (growth {old['peak_growth_mb'] / max(new['peak_growth_mb'], 1):.1f}x),"
          f" reopen RSS growth {old['open_growth_mb'] / max(new['open_growth_mb'], 1):.1f}x"
          f" (anonymous {old['open_anon_growth_mb'] / max(new['open_anon_growth_mb'], 1):.1f}x),"
          f" reopen time {old['open_s'] / new['open_s']:.1f}x, get median {old['get_median_ms'] / new['get_median_ms']:.2f}x")
    if args.n != args.n_old:
        big = results["new", args.n]
        print(f"parts store from n={args.n_old:,} to n={args.n:,} ({args.n / args.n_old:.1f}x the rows): save time"
              f" {big['seconds'] / new['seconds']:.1f}x, peak RSS growth {big['peak_growth_mb'] / max(new['peak_growth_mb'], 1):.1f}x,"
              f" reopen RSS growth {big['open_growth_mb'] / max(new['open_growth_mb'], 1):.1f}x, get median"
              f" {big['get_median_ms'] / new['get_median_ms']:.2f}x")


if __name__ == "__main__":
    main()
