"""Benchmark the dedup stage: signature throughput, LSH recall and precision, and the two Talks books.

Run as: python bench/dedup.py [--variants 8] [--sample 2000] [--seed 0]

Items: every real pair of both Talks books (the complete book and Vol2, the second
edition of talks 242-438), each with `--variants` synthetic copies whose words
are edited at rates from 0.5% to 15% (substitutions, deletions, insertions,
swaps; one copy only reflowed), so true Jaccards spread across the threshold.
With the default 8 that is about 21,000 items.

Prints, against the goals the dedup issue names:
- MinHash signature throughput, vectorised (curation.dedup) against the naive
  datasketch baseline (a default MinHash and one `update` per shingle), on all
  items, from normalised text to signature. Goal: >= 10x. Also datasketch's own
  bulk path (`MinHash.bulk`, one `update_batch` per text), for reference.
- Recall and precision of the near-duplicate pairs (LSH candidates confirmed by
  true Jaccard) against brute force (the exact Jaccard of every pair) on a sample
  of whole groups (a real pair with all its copies). Goal: recall >= 0.95,
  precision 1.0.
- The dedup stage end to end on all items, and on the two books in a workspace:
  the share of Vol2 pairs that cluster with a complete-book pair, and 5 random
  cross-source clusters to check by eye.
- Cross-edition linking (also alone, with --books-only): Vol2 pairs linked to the
  complete book by Jaccard alone and with containment (goal >= 97%), against the
  complete book's .txt and its PDF, the ceiling (Vol2 pairs whose text the complete
  book's pairs hold at all), a talk-number proxy for precision, and --links random
  containment links with both texts, to judge by eye.
No timed assertions: it reports.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

BOOKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "books"
COMPLETE = "talks-with-sri-ramana-maharshi.txt"
VOL2 = "talks-with-sri-ramana-maharshi-vol2.txt"
THROUGHPUT_GOAL = 10.0
RECALL_GOAL = 0.95
RATES = (0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.11, 0.15)


def perturb(words: list[str], rate: float, rng: random.Random, vocabulary: list[str]) -> list[str]:
    """Edit about `rate` of the words: substitute, delete, insert, or swap with the next."""
    out = list(words)
    i = 0
    while i < len(out):
        if rng.random() < rate:
            op = rng.randrange(4)
            if op == 0:
                out[i] = rng.choice(vocabulary)
            elif op == 1 and len(out) > 1:
                del out[i]
                continue
            elif op == 2:
                out.insert(i, rng.choice(vocabulary))
                i += 1
            elif i + 1 < len(out):
                out[i], out[i + 1] = out[i + 1], out[i]
                i += 1
        i += 1
    return out


def reflow(text: str) -> str:
    """Same words, other spacing, line breaks and case: an exact duplicate once normalised."""
    return text.replace(". ", ".\n").replace(", ", " ,  ").upper()


def build_items(n_variants: int, seed: int):
    import polars as pl

    from curation import schema
    from curation.dialogue import parse_dialogue

    rows = []
    for name in (COMPLETE, VOL2):
        text = (BOOKS / name).read_text(encoding="utf-8")
        source_id = hashlib.sha256(name.encode()).hexdigest()
        rows.extend(parse_dialogue(text, source_id, title=name).items)
    n_real = len(rows)
    rng = random.Random(seed)
    vocabulary = sorted({w for row in rows for w in row["text"].split()})
    synthetic = []
    for group, row in enumerate(rows):
        row["group"] = group
        for v in range(n_variants):
            if v == 0:
                question, answer = reflow(row["question"]), reflow(row["answer"])
            else:
                rate = RATES[(v - 1) % len(RATES)]
                question = row["question"]
                answer = " ".join(perturb(row["answer"].split(" "), rate, rng, vocabulary))
            synthetic.append(
                {
                    **row,
                    "source_id": f"{v:064d}",
                    "question": question,
                    "answer": answer,
                    "text": f"{question}\n\n{answer}",
                    "item_id": schema.item_id("pair", question, answer, row["context"]),
                    "content_hash": schema.content_hash("pair", question, answer, row["context"]),
                    "group": group,
                }
            )
    all_rows = rows + synthetic
    groups = [row.pop("group") for row in all_rows]
    return pl.DataFrame(all_rows, schema=schema.ITEM_SCHEMA), groups, n_real


def bench_throughput(texts: list[str]) -> None:
    from datasketch import MinHash

    from curation.dedup import DedupConfig
    from curation.shingles import minhash_signatures, naive_signatures, shingle_texts

    config = DedupConfig()
    fast = []
    for _ in range(3):
        t0 = time.perf_counter()
        shingled = shingle_texts(texts, config.shingle_size)
        minhash_signatures(shingled, config.num_perm, config.seed)
        fast.append(time.perf_counter() - t0)
    fast_s = statistics.median(fast)
    n_shingles = int(shingled.offsets[-1])

    t0 = time.perf_counter()
    naive_signatures(texts, config.shingle_size, config.num_perm, config.seed)
    naive_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    k = config.shingle_size
    batches = []
    for text in texts:
        words = text.split()
        n_shingles_of_text = max(len(words) - k + 1, 1) if words else 0
        batches.append([" ".join(words[j : j + k]).encode() for j in range(n_shingles_of_text)])
    MinHash.bulk(batches, num_perm=config.num_perm, seed=config.seed)
    bulk_s = time.perf_counter() - t0

    print(f"signatures: {len(texts):,} texts, {n_shingles:,} shingles of {k} words, {config.num_perm} permutations")
    timings = (("naive (update/shingle)", naive_s), ("datasketch MinHash.bulk", bulk_s), ("vectorised (median of 3)", fast_s))
    for label, seconds in timings:
        print(f"  {label:26s} {seconds:7.3f} s  {len(texts) / seconds:10,.0f} texts/s"
              f"  {n_shingles / seconds:12,.0f} shingles/s")
    ratio = naive_s / fast_s
    verdict = "met" if ratio >= THROUGHPUT_GOAL else "NOT met"
    print(f"  throughput ratio vs naive: {ratio:.1f}x (goal >= {THROUGHPUT_GOAL:.0f}x: {verdict});"
          f" vs MinHash.bulk: {bulk_s / fast_s:.1f}x")


def bench_recall(texts: list[str], groups: list[int], sample_size: int, seed: int) -> None:
    import numpy as np

    from curation.dedup import DedupConfig, confirm_pairs, jaccard, lsh_candidates
    from curation.shingles import minhash_signatures, shingle_texts

    config = DedupConfig()
    # Whole groups (a real pair and all its copies), so the sample holds many true pairs.
    by_group: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        by_group.setdefault(group, []).append(index)
    rng = random.Random(seed)
    chosen: list[int] = []
    for group in rng.sample(sorted(by_group), len(by_group)):
        if len(chosen) + len(by_group[group]) > sample_size:
            break
        chosen.extend(by_group[group])
    sample = [texts[i] for i in chosen]

    t0 = time.perf_counter()
    shingled = shingle_texts(sample, config.shingle_size)
    signatures = minhash_signatures(shingled, config.num_perm, config.seed)
    candidates = lsh_candidates(signatures, config, eligible=np.diff(shingled.offsets) > 0)
    found = {(i, j): s for i, j, s in confirm_pairs(shingled, candidates, config.threshold)}
    lsh_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    sets = [shingled.shingle_set(i) for i in range(len(sample))]
    sizes = [len(s) for s in sets]
    truth = {}
    n = len(sample)
    for i in range(n):
        a, size_a = sets[i], sizes[i]
        for j in range(i + 1, n):
            size_b = sizes[j]
            # J <= min/max of the sizes, so this skips only pairs that cannot reach the threshold.
            if min(size_a, size_b) < config.threshold * max(size_a, size_b):
                continue
            similarity = jaccard(a, sets[j])
            if similarity >= config.threshold:
                truth[(i, j)] = similarity
    brute_s = time.perf_counter() - t0

    hits = found.keys() & truth.keys()
    recall = len(hits) / len(truth) if truth else 1.0
    precision = len(hits) / len(found) if found else 1.0
    near_threshold = [key for key, s in truth.items() if s < config.threshold + 0.05]
    bands, rows = config.lsh_params()
    print(f"LSH vs brute force: {n:,} sampled texts ({n * (n - 1) // 2:,} pairs), threshold {config.threshold},"
          f" {bands} bands x {rows} rows")
    candidate_precision = len(candidates & truth.keys()) / max(len(candidates), 1)
    print(f"  true pairs (J >= {config.threshold}): {len(truth):,}   found: {len(found):,}"
          f"   LSH candidates: {len(candidates):,} (candidate precision before confirmation {candidate_precision:.3f})")
    print(f"  recall {recall:.4f} (goal >= {RECALL_GOAL}: {'met' if recall >= RECALL_GOAL else 'NOT met'})   "
          f"precision {precision:.4f} (goal 1.0: {'met' if precision == 1.0 else 'NOT met'})   "
          f"recall on J in [{config.threshold}, {config.threshold + 0.05}): "
          f"{len(hits & set(near_threshold)) / max(len(near_threshold), 1):.3f} of {len(near_threshold)}")
    print(f"  time: LSH + confirmation {lsh_s:.2f} s, brute force {brute_s:.2f} s")


def bench_stage(items) -> None:
    from curation.dedup import DedupConfig, dedup, summarise

    t0 = time.perf_counter()
    jaccard_only = summarise(dedup(items, DedupConfig(containment=0.0)))
    baseline = time.perf_counter() - t0
    t0 = time.perf_counter()
    deduped = dedup(items)
    seconds = time.perf_counter() - t0
    counts = summarise(deduped)
    print(f"dedup stage on {items.height:,} items: {seconds:.2f} s ({items.height / seconds:,.0f} items/s)  {counts}")
    print(f"  containment linking costs {seconds / baseline:.2f}x the stage without it ({baseline:.2f} s, the baseline);"
          f" clusters {jaccard_only['n_clusters']:,} -> {counts['n_clusters']:,}")


def bench_books(seed: int) -> None:
    import polars as pl

    from curation.dedup import run_dedup
    from curation.workspace import init_workspace

    with tempfile.TemporaryDirectory() as tmp:
        workspace = init_workspace(Path(tmp) / "ws")
        workspace.ingest([BOOKS / COMPLETE, BOOKS / VOL2], "dialogue")
        report = run_dedup(workspace)
        items = workspace.items()
        titles = dict(workspace.sources().select("source_id", "title").iter_rows())
    complete, vol2 = list(titles)
    complete_rows = items.filter(pl.col("source_id") == complete)
    vol2_rows = items.filter(pl.col("source_id") == vol2)
    sections_by_cluster: dict[str, set[str]] = {}
    for cluster, section in complete_rows.select("dedup_cluster", "section").iter_rows():
        sections_by_cluster.setdefault(cluster, set()).add(section)
    with_any = sum(c in sections_by_cluster for c in vol2_rows["dedup_cluster"])
    with_same_talk = sum(
        section in sections_by_cluster.get(cluster, ())
        for cluster, section in vol2_rows.select("dedup_cluster", "section").iter_rows()
    )
    print(f"books: {items.height:,} pairs ({complete_rows.height:,} complete book, {vol2_rows.height:,} Vol2);"
          f" run_dedup {report.seconds:.2f} s; clusters {report.n_clusters:,}, exact dups {report.n_exact_duplicates},"
          f" near dups {report.n_near_duplicates}, cross-source clusters {report.n_cross_source_clusters}")
    print(f"  Vol2 pairs clustered with a complete-book pair: {with_any}/{vol2_rows.height}"
          f" = {with_any / vol2_rows.height:.1%}  (with one of the same talk number: {with_same_talk / vol2_rows.height:.1%})")

    cross = (
        items.group_by("dedup_cluster")
        .agg(pl.col("source_id").n_unique().alias("n_sources"), (pl.col("dedup_kind") == "near").any().alias("near"))
        .filter(pl.col("n_sources") > 1)
        .sort("dedup_cluster")
    )
    rng = random.Random(seed)
    near_ids = cross.filter(pl.col("near"))["dedup_cluster"].to_list()
    exact_ids = cross.filter(~pl.col("near"))["dedup_cluster"].to_list()
    shown = rng.sample(near_ids, min(3, len(near_ids))) + rng.sample(exact_ids, min(2, len(exact_ids)))
    print("  5 random cross-source clusters (3 near, 2 exact), for the eye:")
    for cluster in shown:
        members = items.filter(pl.col("dedup_cluster") == cluster).sort("dedup_is_representative", descending=True)
        rep = members.row(0, named=True)
        print(f"  - cluster {cluster[:12]}  {members.height} members  reason: {rep['dedup_reason']}")
        for row in members.iter_rows(named=True):
            mark = "*" if row["dedup_is_representative"] else " "
            print(f"    {mark} {titles[row['source_id']][:34]:34s} {row['section']:9s} {row['dedup_kind']:6s}"
                  f" J={row['dedup_jaccard']:.3f}  {row['text'][:110].replace(chr(10), ' / ')!r}")
        for row in members.filter(~pl.col("dedup_is_representative")).iter_rows(named=True):
            if row["dedup_kind"] == "near":
                print(f"      words differing: {_word_diff(rep['text'], row['text'])}")


def _talk_number(section: str) -> int | None:
    digits = "".join(ch for ch in section if ch.isdigit())
    return int(digits) if digits else None


def _vol2_links(items, complete: str, vol2: str) -> tuple[set[int], dict[int, list[dict]]]:
    """Vol2 rows (by position among Vol2 rows) that share a cluster with a complete-book row, and those rows."""
    import polars as pl

    by_cluster: dict[str, list[dict]] = {}
    for row in items.filter(pl.col("source_id") == complete).iter_rows(named=True):
        by_cluster.setdefault(row["dedup_cluster"], []).append(row)
    vol2_rows = items.filter(pl.col("source_id") == vol2)
    counterparts = {i: by_cluster[c] for i, c in enumerate(vol2_rows["dedup_cluster"]) if c in by_cluster}
    return set(counterparts), counterparts


def bench_cross_edition(sample_size: int, seed: int) -> None:
    """Vol2 pairs linked to the complete book, by Jaccard alone and with containment; the new links for the eye.

    Twice: against the complete book's .txt and against its PDF (the .txt lost passages the PDF keeps,
    so some Vol2 exchanges have no counterpart in the .txt at all: printed as the ceiling)."""
    import polars as pl

    from curation.dedup import DedupConfig, dedup
    from curation.schema import normalise
    from curation.workspace import init_workspace

    complete_pdf = BOOKS / "pdf" / COMPLETE.replace(".txt", ".pdf")
    routes = [("complete .txt", BOOKS / COMPLETE)] + ([("complete PDF", complete_pdf)] if complete_pdf.exists() else [])
    rng = random.Random(seed)
    for label, complete_path in routes:
        with tempfile.TemporaryDirectory() as tmp:
            workspace = init_workspace(Path(tmp) / "ws")
            workspace.ingest([complete_path, BOOKS / VOL2], "dialogue")
            items = workspace.items()
            complete, vol2 = workspace.sources()["source_id"].to_list()
        t0 = time.perf_counter()
        jaccard_only = dedup(items, DedupConfig(containment=0.0))
        jaccard_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        linked = dedup(items)
        linked_s = time.perf_counter() - t0
        before, _ = _vol2_links(jaccard_only, complete, vol2)
        after, counterparts = _vol2_links(linked, complete, vol2)
        vol2_rows = linked.filter(pl.col("source_id") == vol2)
        n = vol2_rows.height

        # The ceiling: a Vol2 pair of which the complete book's pairs hold less than half the shingles, all
        # of them together, has no counterpart there to link to (the text was lost, or never parsed as a pair).
        k = DedupConfig().shingle_size

        def shingle_set(text: str) -> set:
            words = normalise(text).split()
            return {tuple(words[i : i + k]) for i in range(max(len(words) - k + 1, 1))}

        held = set().union(*(shingle_set(t) for t in linked.filter(pl.col("source_id") == complete)["text"]))
        present = [len(s & held) >= 0.5 * len(s) for s in map(shingle_set, vol2_rows["text"])]
        linked_present = sum(present[i] for i in after)
        print(f"cross-edition links, Vol2 .txt vs {label}: {linked.height - n:,} complete-book pairs, {n} Vol2 pairs")
        print(f"  Vol2 pairs linked to a complete-book pair: Jaccard alone {len(before)}/{n} = {len(before) / n:.1%}"
              f" ({jaccard_s:.2f} s); with containment {len(after)}/{n} = {len(after) / n:.1%} ({linked_s:.2f} s;"
              f" goal >= 97%: {'met' if len(after) >= 0.97 * n else 'NOT met'}); lost by containment: {len(before - after)}")
        print(f"  ceiling: Vol2 pairs with half their shingles or more anywhere in the complete book's pairs:"
              f" {sum(present)}/{n} = {sum(present) / n:.1%}; linked of those: {linked_present}/{sum(present)}"
              f" = {linked_present / max(sum(present), 1):.1%}")
        new = sorted(after - before)
        near_talk = sum(
            any(abs((_talk_number(m["section"]) or -99) - (_talk_number(vol2_rows["section"][i]) or 99)) <= 3
                for m in counterparts[i])
            for i in new
        )
        print(f"  links made by containment: {len(new)}; with a counterpart within 3 talk numbers (a proxy for"
              f" precision): {near_talk}/{len(new)}")
        shown = sorted(rng.sample(new, min(sample_size, len(new))))
        print(f"  {len(shown)} random containment links, for the eye (Vol2 text, then its complete-book cluster members):")
        for number, i in enumerate(shown, 1):
            row = vol2_rows.row(i, named=True)
            print(f"  #{number} Vol2 {row['section']}: {row['dedup_kind']}, containment {row['dedup_containment']:.2f}"
                  f" in the representative, J {row['dedup_jaccard']:.2f}")
            print(f"     V: {row['text'][:300].replace(chr(10), ' / ')!r}")
            for member in counterparts[i]:
                print(f"     C ({member['section']}, {member['dedup_kind']}): {member['text'][:300].replace(chr(10), ' / ')!r}")


def _word_diff(a: str, b: str, limit: int = 6) -> str:
    wa, wb = a.split(), b.split()
    changes = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        if tag != "equal":
            changes.append(f"{' '.join(wa[i1:i2])[:40]!r} -> {' '.join(wb[j1:j2])[:40]!r}")
    more = f" (+{len(changes) - limit} more)" if len(changes) > limit else ""
    return "; ".join(changes[:limit]) + more


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", type=int, default=8, help="synthetic copies per real pair")
    parser.add_argument("--sample", type=int, default=2000, help="texts in the brute-force recall sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--links", type=int, default=30, help="containment links printed for the eye, per route")
    parser.add_argument("--books-only", action="store_true", help="only the two books: cross-edition links")
    args = parser.parse_args()
    if not BOOKS.is_dir():
        sys.exit(f"{BOOKS}: not found (the full books live in ../shared/data/books)")

    from curation.schema import normalise

    if args.books_only:
        bench_cross_edition(args.links, args.seed)
        return
    t0 = time.perf_counter()
    items, groups, n_real = build_items(args.variants, args.seed)
    texts = [normalise(t) for t in items["text"].to_list()]
    print(f"items: {items.height:,} ({n_real:,} real pairs of both books + {items.height - n_real:,} synthetic copies)"
          f" built in {time.perf_counter() - t0:.1f} s")
    bench_throughput(texts)
    bench_recall(texts, groups, args.sample, args.seed)
    bench_stage(items)
    bench_books(args.seed)
    bench_cross_edition(args.links, args.seed)


if __name__ == "__main__":
    main()
