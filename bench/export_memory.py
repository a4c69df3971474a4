"""Peak memory and time of `export_version` at several sizes, this checkout against a baseline commit, in one run.

Run as: python bench/export_memory.py [--sizes 100mb,300mb] [--baseline cf4e6c7] [--variants base,head] [--kind pretrain]

For each size, a workspace (`workspace_for`: a corpus of many books, or the sample books'
items replicated) is built once and kept under /tmp/x17-ws<size> (reused when there). Each
variant then exports it in a fresh child process:

- base: the code of the baseline commit (default cf4e6c7, where the export concatenated
  every batch into one Arrow table), exported with `git archive` into /tmp/satsang-base-<sha> (`memory_bench.baseline_tree`)
  and put first on the child's PYTHONPATH;
- head: this checkout's code.

The export (default `--kind pretrain`: every item as a row, answers included; `sft`: the
multi-turn conversations) is the only work of the child after its imports. Printed per run:
seconds, RSS before the export, peak RSS of the child (ru_maxrss), and the peak sampled while
selecting (`select_items`, up to the first batch of `content_batches`) and while writing the
files (from the first batch on), then head/base ratios, and whether both wrote the same version id, manifest bytes
and rows (a digest of the Parquet rows, read after the peak is taken). The machine is shared:
numbers are noisy, compare within one run.
"""

from __future__ import annotations

import argparse
import hashlib
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


def workspace_for(size: str) -> Path:
    """The workspace of one size, made once (in a child: its memory is its own) and kept under /tmp/x17-ws<size>.

    "<N>": bench/export.py's `synthesise`, N items of the sample books replicated (two sources: one
    batch is nearly the whole version). "<M>mb": the synthetic books of bench/scale.py
    (`make_corpus`, under /tmp/corpus<M>), a few MB each, ingested as prose (the ingested
    /tmp/d17-ws<M> of bench/dedup_memory.py is copied when there), then given bench/export.py's
    stage columns (`with_stage_columns`): many sources, as a real corpus.
    """
    path = Path(f"/tmp/x17-ws{size}")
    if (path / "ready").exists():
        return path
    shutil.rmtree(path, ignore_errors=True)
    if size.endswith("mb"):
        megabytes = int(size[:-2])
        ingested = Path(f"/tmp/d17-ws{megabytes}")
        if (ingested / "ready").exists():
            shutil.copytree(ingested, path)
        code = (
            "import sys, random; sys.path.insert(0, sys.argv[2])\n"
            "from pathlib import Path\n"
            "from export import with_stage_columns\n"
            "from curation.workspace import Workspace, init_workspace\n"
            "root, megabytes = Path(sys.argv[1]), int(sys.argv[3])\n"
            "if not (root / 'workspace.json').exists():\n"
            "    from scale import make_corpus\n"
            "    init_workspace(root).ingest(make_corpus(Path(f'/tmp/corpus{megabytes}'), megabytes, 0, 1), 'prose')\n"
            "Workspace.open(root).update_items(lambda items: with_stage_columns(items, random.Random(0)))\n"
        )
    else:
        code = (
            "import sys; sys.path.insert(0, sys.argv[2])\n"
            "from pathlib import Path\n"
            "from export import synthesise\n"
            "synthesise(Path(sys.argv[1]), int(sys.argv[3]), 0.1)\n"
        )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(path), str(REPO / "bench"), size.removesuffix("mb")],
                   check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    (path / "ready").write_text("")
    print(f"workspace {path}: made in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def run_variant(code_root: Path, workspace: Path, kind: str) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="x17-export-"))
    try:
        result_path = scratch / "result.json"
        command = [sys.executable, __file__, "--child", str(workspace), "--result", str(result_path), "--kind", kind]
        subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(code_root), "HF_DATASETS_OFFLINE": "1"})
        return json.loads(result_path.read_text())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        versions = workspace / "versions"
        if versions.exists():  # read-only versions: each variant exports afresh
            for path in [versions, *versions.rglob("*")]:
                if path.is_dir():
                    path.chmod(0o755)
            shutil.rmtree(versions)


def child(workspace_path: str, result_path: str, kind: str) -> None:
    import datasets  # noqa: F401  (imported before the start figure: not the export's memory)
    import matplotlib.pyplot  # noqa: F401
    import pyarrow.parquet as pq

    from curation.export import ExportConfig, export_version
    from curation.workspace import Workspace

    workspace = Workspace.open(workspace_path)
    if kind == "pretrain":
        config = ExportConfig(name="bench", kind="pretrain", include_unreviewed=True, include_answers_in_pretrain=True)
    else:
        config = ExportConfig(name="bench", include_unreviewed=True)
    import curation.export

    start_mb = rss_mb()
    peaks = PhasePeaks(echo=False)
    batches = curation.export.content_batches

    def marked_batches(selection):  # the writing starts at the first batch: what came before is the selection
        peaks.mark("select")
        yield from batches(selection)

    curation.export.content_batches = marked_batches  # the same module global in the baseline's code
    started = time.perf_counter()
    result = export_version(workspace, config, created_at="2026-01-01T00:00:00+00:00")
    seconds = time.perf_counter() - started
    peaks.close("write")
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = hashlib.sha256()
    for shard in sorted((result.path / "data").glob("*.parquet")):
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=10_000):
            for row in batch.to_pylist():  # row by row: the shards may cut the rows differently
                rows.update(json.dumps(row, sort_keys=True).encode() + b"\n")
    Path(result_path).write_text(json.dumps({
        "items": result.n_items, "rows": result.n_rows, "seconds": seconds, "start_mb": start_mb, "maxrss_mb": maxrss_mb,
        "select_mb": peaks.phase("select")[2], "write_mb": peaks.phase("write")[2], "write_from_mb": peaks.phase("select")[3],
        "version_id": result.version_id,
        "manifest": hashlib.sha256((result.path / "manifest.json").read_bytes()).hexdigest(),
        "row_digest": rows.hexdigest(),
        "mb_written": sum(f.stat().st_size for f in result.path.rglob("*") if f.is_file()) / 1e6,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100mb,300mb", help="workspaces, comma-separated: <M>mb (a corpus of many books) or <N> (N sample items)")
    parser.add_argument("--baseline", default="cf4e6c7", help="baseline commit (default: before the streaming export)")
    parser.add_argument("--variants", default="base,head")
    parser.add_argument("--kind", default="pretrain", choices=("pretrain", "sft"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.result, args.kind)
        return

    sha, base_root = baseline_tree(args.baseline)
    roots = {"base": base_root, "head": REPO}
    variants = args.variants.split(",")
    print(f"{args.kind} export; base = {sha[:12]}, head = {REPO}")
    for size in args.sizes.split(","):
        workspace = workspace_for(size)
        results = {}
        for name in variants:
            r = results[name] = run_variant(roots[name], workspace, args.kind)
            print(f"{size:>7} {r['items']:>9,} items  {name:<4}  {r['seconds']:6.1f} s  start {r['start_mb']:6.0f} MB  "
                  f"peak {r['maxrss_mb']:6.0f} MB (selecting {r['select_mb']:.0f}; writing {r['write_mb']:.0f}, "
                  f"+{r['write_mb'] - r['write_from_mb']:.0f} over its start)  "
                  f"{r['rows']:,} rows, {r['mb_written']:.0f} MB written", flush=True)
        if {"base", "head"} <= results.keys():
            base, head = results["base"], results["head"]
            differ = [key for key in ("version_id", "manifest", "row_digest") if base[key] != head[key]]
            print(f"{size:>7} {r['items']:>9,} items  head/base: time {head['seconds'] / base['seconds']:.2f}, "
                  f"peak {head['maxrss_mb'] / base['maxrss_mb']:.2f}, peak while writing {head['write_mb'] / base['write_mb']:.2f}, "
                  f"growth while writing {(head['write_mb'] - head['write_from_mb']) / max(1.0, base['write_mb'] - base['write_from_mb']):.2f}; "
                  f"same id, manifest and rows: {'yes' if not differ else 'NO, ' + ', '.join(differ) + ' differ'}", flush=True)


if __name__ == "__main__":
    main()
