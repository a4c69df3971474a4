"""Peak memory and time of the dedup stage (`run_dedup_distributed`, as `satsang dedup`), per phase, vs a baseline.

Run as: python bench/dedup_memory.py [--mb 100,300] [--baseline REF] [--variants base,head] [--executor local]

For each size, a workspace of the synthetic corpus of bench/scale.py (`make_corpus`, the
corpus under /tmp/corpus<MB>) is ingested once and kept under /tmp/d17-ws<MB> (reused when
there). Each variant then runs `curation.distributed.run_dedup_distributed` (above IN_MEMORY_ROWS
items: the partitioned `curation.partitioned_dedup.dedup_columns` in this process, or with
--executor ray on a local Ray) in a fresh child process on a copy of that workspace:

- base: the code of the baseline commit (default: the merge-base of HEAD and main), exported
  with `git archive` into /tmp/satsang-base-<sha> (`memory_bench.baseline_tree`) and put first on the child's PYTHONPATH;
- head: this checkout's code.

Printed per run: items, seconds, peak RSS of the child (ru_maxrss), and the peak RSS sampled
in each phase (the phases are told apart by `run_dedup`'s progress lines; "commit" is what
follows the last one: the columns written part by part; "sources()" is run_dedup's call of
`Workspace.sources`, which reads the whole items table today), then base/head ratios of time and
peak, and whether the two runs committed identical items (a digest of every row).
The machine is shared: numbers are noisy, compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from memory_bench import PhasePeaks, baseline_tree, rss_mb  # noqa: E402  (bench/ on the path first)


def workspace_for(megabytes: int) -> Path:
    """The ingested workspace of the /tmp/corpus<MB> synthetic corpus, made once (in a child: its memory is its own)."""
    path = Path(f"/tmp/d17-ws{megabytes}")
    if (path / "ready").exists():
        return path
    corpus = Path(f"/tmp/corpus{megabytes}")
    code = (
        "import sys; sys.path.insert(0, sys.argv[3])\n"
        "from pathlib import Path\n"
        "from scale import make_corpus\n"
        "from curation.workspace import init_workspace\n"
        "books = make_corpus(Path(sys.argv[1]), int(sys.argv[4]), 0, 1)\n"
        "init_workspace(sys.argv[2]).ingest(books, 'prose')\n"
    )
    shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(corpus), str(path), str(REPO / "bench"), str(megabytes)],
                   check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    (path / "ready").write_text("")
    print(f"workspace {path}: ingested in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def run_variant(name: str, code_root: Path, workspace: Path, executor: str) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix=f"d17-dedup-{name}-"))
    try:
        copy = scratch / "ws"
        shutil.copytree(workspace, copy)
        result_path = scratch / "result.json"
        command = [sys.executable, __file__, "--child", str(copy), "--result", str(result_path), "--executor", executor]
        subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(code_root)})
        return json.loads(result_path.read_text())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---- the child: one run_dedup, its memory sampled per phase --------------------------------------


def child(workspace_path: str, result_path: str, executor_name: str) -> None:
    import hashlib

    import numpy as np

    from curation.distributed import run_dedup_distributed  # imported before the start figure
    from curation.workspace import Workspace

    workspace = Workspace.open(workspace_path)
    _, parts = workspace.item_parts()
    items = sum(part.rows for part in parts)
    executor = None
    if executor_name == "ray":
        from curation.executors import RayExecutor

        executor = RayExecutor(num_cpus=2)
    start_mb = rss_mb()
    peaks = PhasePeaks()
    read_sources = Workspace.sources

    def sources(self):  # its own phase: it reads the whole items table with the sources (Workspace.snapshot)
        table = read_sources(self)
        peaks.mark("sources() (reads every item)")
        return table

    Workspace.sources = sources
    started = time.perf_counter()
    # What `satsang dedup` runs: in memory up to IN_MEMORY_ROWS items, partitioned beyond (or on Ray).
    report = run_dedup_distributed(workspace, executor=executor, progress=peaks.mark)
    seconds = time.perf_counter() - started
    peaks.close("commit")
    if executor is not None:
        executor.close()
    _, parts = workspace.item_parts()
    row_hashes = np.sort(np.concatenate([part.read().hash_rows(seed=0).to_numpy() for part in parts]))
    result = {
        "items": items, "seconds": seconds, "start_mb": start_mb,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "phases": peaks.phases,
        "clusters": report.n_clusters, "exact": report.n_exact_duplicates, "near": report.n_near_duplicates,
        "contained": report.n_contained,
        "digest": hashlib.sha256(row_hashes.tobytes()).hexdigest(),
    }
    Path(result_path).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", default="100", help="corpus sizes in MB, comma-separated (corpus under /tmp/corpus<MB>)")
    parser.add_argument("--baseline", default=None, help="baseline commit (default: merge-base of HEAD and main)")
    parser.add_argument("--variants", default="base,head")
    parser.add_argument("--executor", default="local", choices=("local", "ray"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.result, args.executor)
        return

    ref = args.baseline or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=REPO, capture_output=True,
                                          text=True, check=True).stdout.strip()
    sha, base_root = baseline_tree(ref)
    roots = {"base": base_root, "head": REPO}
    rows = []
    for megabytes in [int(mb) for mb in args.mb.split(",")]:
        workspace = workspace_for(megabytes)
        for name in args.variants.split(","):
            print(f"{megabytes} MB, {name} ({'baseline ' + sha[:12] if name == 'base' else 'this checkout'}) ...",
                  flush=True)
            rows.append((megabytes, name, run_variant(name, roots[name], workspace, args.executor)))

    print(f"\nbaseline: {sha[:12]}; executor: {args.executor}")
    print(f"{'MB':>5} {'variant':<7} {'items':>9} {'seconds':>8} {'peak RSS MB':>11} {'start MB':>8} "
          f"{'clusters':>9} {'near':>7} {'contained':>9}  per-phase peak MB")
    for megabytes, name, r in rows:
        phases = ", ".join(f"{phase} {peak:.0f} ({seconds:.0f}s)" for phase, seconds, peak, _ in r["phases"])
        print(f"{megabytes:>5} {name:<7} {r['items']:>9} {r['seconds']:>8.1f} {r['maxrss_mb']:>11.0f} "
              f"{r['start_mb']:>8.0f} {r['clusters']:>9} {r['near']:>7} {r['contained']:>9}  {phases}")
    by_key = {(mb, name): r for mb, name, r in rows}
    for megabytes in sorted({mb for mb, _, _ in rows}):
        base, head = by_key.get((megabytes, "base")), by_key.get((megabytes, "head"))
        if base and head:
            print(f"{megabytes} MB: head/base time {head['seconds'] / base['seconds']:.2f}x, peak RSS "
                  f"{head['maxrss_mb'] / base['maxrss_mb']:.2f}x; identical items: {base['digest'] == head['digest']}")


if __name__ == "__main__":
    main()
