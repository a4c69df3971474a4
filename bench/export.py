"""Benchmark the export: a dataset version of 100,000 items, against the 30-second goal.

Run as: python bench/export.py [--items 100000] [--reviewed 0.1] [--keep DIR]

Items: the real pairs of the bundled sample (talks 1-49 of *Talks with Sri Ramana
Maharshi*) and the passages of *Nan Yar?*, replicated until there are `--items` of
them; each copy's text is made distinct (a copy number appended to the question, or
to the passage), with its item id and content hash recomputed, so every item is its
own dedup cluster. Critic and concept scores are drawn at random. `--reviewed` of the
pairs get a decision in the real SQLite response store (accept 70%, reject 20%, edit
10%), so the export joins real review state.

Times, on one workspace:
- the sft export (unreviewed items included, multi-turn): the goal, < 30 s;
- exporting it again (a no-op: the id exists);
- `verify` of the version (every file hashed, the id and each item's hash recomputed);
- a pretrain export of the same workspace, with answers.
No timed assertions: it reports.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_S = 30.0


def synthesise(root: Path, n_items: int, reviewed: float, seed: int = 0):
    import polars as pl

    from curation import schema
    from curation.workspace import init_workspace
    from satsang.pipeline import SAMPLE_BOOKS, sample_path

    workspace = init_workspace(root)
    for book in SAMPLE_BOOKS:
        workspace.ingest([sample_path(book.filename)], book.kind, title=book.title, licence="published freely by its publisher")
    real = workspace.items()
    rng = random.Random(seed)
    copies = -(-n_items // real.height)
    rows = []
    for copy in range(copies):
        for row in real.iter_rows(named=True):
            if len(rows) == n_items:
                break
            row = dict(row)
            if copy:
                tag = f" (copy {copy})"
                section = f"{row['section']} copy {copy}" if row["section"] else f"copy {copy}"
                row["section"], row["conversation_id"] = section, f"{row['source_id'][:12]}:{section}"
                if row["kind"] == "pair":
                    row["question"] += tag
                    row["text"] = f"{row['question']}\n\n{row['answer']}"
                else:
                    row["text"] += tag
            fields = dict(question=row["question"], answer=row["answer"], context=row["context"], text=row["text"])
            row["item_id"] = schema.item_id(row["kind"], **fields)
            row["content_hash"] = schema.content_hash(row["kind"], **fields)
            rows.append(row)
    items = pl.DataFrame(rows, schema=schema.ITEM_SCHEMA)
    synthetic = with_stage_columns(items, rng)
    workspace.update_items(lambda _: synthetic)
    is_pair = synthetic["kind"] == "pair"

    pairs = synthetic.filter(is_pair).select("item_id", "content_hash", "answer").rows()
    chosen = rng.sample(pairs, int(reviewed * len(pairs)))
    responses = []
    for i, (item_id, content_hash, answer) in enumerate(chosen):
        draw = rng.random()
        reviewer = ("ana", "ben", "chandra")[i % 3]
        if draw < 0.7:
            responses.append({"item_id": item_id, "content_hash": content_hash, "reviewer": reviewer, "decision": "accept"})
        elif draw < 0.9:
            responses.append({"item_id": item_id, "content_hash": content_hash, "reviewer": reviewer, "decision": "reject", "reason": "not contemplative"})
        else:
            responses.append({"item_id": item_id, "content_hash": content_hash, "reviewer": reviewer, "decision": "edit", "edited_answer": answer.split(".")[0] + "."})
    if responses:
        from curation.responses import ResponseStore

        with ResponseStore.open(root) as store:
            store.record_many(responses)
    return workspace, synthetic.filter(is_pair).height, len(responses)


def with_stage_columns(items, rng: random.Random):
    """The items as if deduplicated (each its own cluster) and scored (concept and critic scores drawn at random)."""
    import polars as pl

    from curation.dedup import DedupConfig

    n = items.height
    agent = DedupConfig().agent_json()
    critic_agent = '{"config": {}, "kind": "offline", "model": "bench", "rubric_version": "aliveness-v1"}'
    concept_agent = '{"model": "bench", "stage": "score"}'
    is_pair = items["kind"] == "pair"
    return items.with_columns(
        pl.col("item_id").alias("dedup_cluster"),
        pl.col("item_id").alias("dedup_representative"),
        pl.col("source_id").alias("dedup_representative_source"),
        pl.lit(True).alias("dedup_is_representative"),
        pl.lit("unique").alias("dedup_kind"),
        pl.lit(1.0).alias("dedup_jaccard"),
        pl.lit(1.0).alias("dedup_containment"),
        pl.lit(1, dtype=pl.Int64).alias("dedup_cluster_size"),
        pl.lit("alone in its cluster").alias("dedup_reason"),
        pl.lit(agent).alias("dedup_agent"),
        pl.Series("concept_score", [rng.random() for _ in range(n)]),
        pl.lit("answer").alias("concept_basis"),
        pl.lit(concept_agent).alias("concept_agent"),
        pl.Series("critic_score", [round(rng.uniform(2, 9.5) * 2) / 2 if p else None for p in is_pair]),
        pl.when(is_pair).then(pl.lit("scored")).alias("critic_status"),
        pl.when(is_pair).then(pl.lit("")).alias("critic_unscored_reason"),
        pl.when(is_pair).then(pl.lit(critic_agent)).alias("critic_agent"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--reviewed", type=float, default=0.1, help="share of the pairs given a review decision")
    parser.add_argument("--keep", type=Path, help="build the workspace here and keep it (default: a temp dir)")
    args = parser.parse_args()

    from curation.export import ExportConfig, export_version
    from curation.versions import verify_version

    with tempfile.TemporaryDirectory() as temp:
        root = args.keep or Path(temp) / "workspace"
        started = time.perf_counter()
        workspace, n_pairs, n_responses = synthesise(root, args.items, args.reviewed)
        print(f"workspace: {args.items:,} items ({n_pairs:,} pairs), {n_responses:,} review decisions, built in {time.perf_counter() - started:.1f} s")

        import datasets  # noqa: F401  (import time is not export time: the CLI pays it once per command)
        import matplotlib.pyplot  # noqa: F401

        config = ExportConfig(name="bench", include_unreviewed=True)
        result = export_version(workspace, config)
        print(f"sft export: {result.seconds:.2f} s for {result.n_items:,} items in {result.n_rows:,} conversations, "
              f"{result.n_tokens:,} tokens; {result.seconds / GOAL_S:.2f} of the {GOAL_S:g} s goal "
              f"({'met' if result.seconds < GOAL_S else 'MISSED'})")
        print(f"  version {result.version_id}, {sum(f.stat().st_size for f in result.path.rglob('*') if f.is_file()) / 1e6:.1f} MB")
        for step, reasons in result.set_aside().items():
            print(f"  set aside by {step}: {reasons}")
        again = export_version(workspace, config)
        print(f"export again: {again.seconds:.2f} s ({again.status})")
        started = time.perf_counter()
        problems = verify_version(workspace, result.version_id)
        print(f"verify: {time.perf_counter() - started:.2f} s, {len(problems)} problems")
        pretrain = export_version(workspace, ExportConfig(name="bench-text", kind="pretrain", include_unreviewed=True, include_answers_in_pretrain=True))
        print(f"pretrain export (passages and answers): {pretrain.seconds:.2f} s for {pretrain.n_items:,} items")


if __name__ == "__main__":
    main()
