"""The partitioned MinHash/LSH dedup: dedup's columns computed in files, a partition, band or shard per task.

Designed so that no process holds every signature.
Files, under a work directory every worker can read (shared storage on a cluster)::

    input/part-00000.parquet               row, item_id, source_id, kind, text, start   (written by the driver,
                                                                    a workspace part at a time)
    rows/part-00000.parquet                row, key                 key: hash of (kind, normalised text)
    texts/part-00000.parquet               key, kind, text          normalised, one row per distinct key
    signatures/part-00000.parquet          key, signature           MinHash, uint32[num_perm]
    buckets/band=000/part-00000.parquet    kind, band, key          band: the band's r values, as bytes
    candidates/band=000.parquet            a, b                     keys sharing that band, a < b
    edges/part-00000.parquet               a, b, jaccard            candidates confirmed by true Jaccard
    postings/shard=00000/part-00000.parquet kind, print, key, size   containment: shingle fingerprints
    fingerprints/part-00000.parquet        key, prints, query       a text's distinct fingerprints, ascending
    common/shard=00000.parquet             print, frequency         fingerprints held by two texts or more
    probes/shard=00000/part-00000.parquet  key, print               the fingerprints a text probes with
    pairs/shard=00000/part-00000.parquet   a, b, size, hits         b holds `hits` of a's probes (by shard of a)
    contained/part-00000.parquet           a, b                     text a's best container b

1. sign (one task per input partition): normalise, key, shingle and sign the
   partition's distinct texts (`curation.shingles.shingle_texts` and
   `minhash_signatures`, so signatures are bit for bit the local ones), and
   write its rows, texts, signatures and one bucket file per LSH band.
2. bands (one task per band): read that band's bucket files only; texts of the
   same kind with the same band bytes are candidate pairs (what datasketch's
   MinHashLSH proposes: equal band slices of the same signatures).
3. confirm (one task per group of candidate pairs, by key prefix): read the
   group's candidates, fetch just those keys' texts, keep the pairs whose true
   shingle Jaccard reaches the threshold (`curation.dedup.confirm_pairs`).
3b. containment (unless off), by prefix filtering as `curation.dedup.containment_candidates`
   does: each texts partition writes its distinct shingle fingerprints by fingerprint shard
   (and each text's in one row); each fingerprint shard counts the texts holding each of its
   fingerprints (keeping those held by two or more); each texts partition picks its texts'
   probes (`probe_prefix` of their fingerprints, rarest first; a fingerprint no other text
   holds proposes nothing); each fingerprint shard joins the probes with the fingerprints'
   holders into pairs with their probe hits; each group of key shards of texts a
   (`CONTAINMENT_PAIRS_PER_TASK`) keeps its pairs with `probe_hits` in all, counts what b holds of a's every fingerprint (`SharedPrints`, from the
   stored fingerprints), confirms those with enough by exact containment (only their texts are
   read and shingled) and keeps a's best container (`hits_needed`, `confirm_containment`,
   `best_containers`). A text probes with common fingerprints only when most of its own are
   common, so the pairs grow with the texts that overlap, not with the square of the corpus.
4. components (driver): union-find (in numpy) over the confirmed edges and containment links
   (small); the rows of a key on two rows or more, or in a link, are the clustered rows. Clusters of one row get the columns
   `curation.dedup.dedup` gives a lone item (`DedupColumns.for_rows`, a part at a time, when
   the workspace commits them); the rows of larger clusters go, whole
   clusters at a time, to tasks that run `curation.dedup.dedup` itself on them:
   candidate pairs, Jaccard and containment are properties of a pair (a text's best
   container is in its own cluster), so dedup over a union
   of whole clusters finds exactly those clusters again and applies its own
   representative rule to them. The result equals `dedup(items)` column for column.

`curation.distributed.run_dedup_distributed` runs it on an executor (or this process) for
the dedup stage; `dedup_partitioned` gives `curation.dedup.dedup`'s frame for a frame.
"""


from __future__ import annotations

import glob
import hashlib
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from curation.executors import Executor, LocalExecutor

if TYPE_CHECKING:
    from curation.dedup import DedupConfig

# ---- dedup: partitioned MinHash, LSH bands, confirmation, components ---------------------------

DEFAULT_ROWS_PER_PARTITION = 20_000
# Candidate pairs a confirm task takes: it reads every texts file (the key column, and the text of its
# pairs), so one task per partition would read the texts once per partition: quadratic at scale.
CONFIRM_PAIRS_PER_TASK = 100_000
# Containment pairs (summed over fingerprint shards) a containment confirm task takes, for the same reason: it
# reads every fingerprints and texts file for its pairs' keys (at 2 GB, one task per key shard: 277 scans).
CONTAINMENT_PAIRS_PER_TASK = 250_000


@dataclass(frozen=True)
class _DedupPlan:
    work_dir: str
    config: DedupConfig
    bands: int
    rows: int  # per band
    n_shards: int  # shards of the containment phases (by fingerprint, or by key)
    n_confirm_groups: int = 1  # tasks of the confirm phase (by key a), set once the candidates are counted
    n_containment_groups: int = 1  # tasks of the containment confirm phase (key shards of a), once pairs are counted


def _part(directory: str, index: int) -> str:
    return os.path.join(directory, f"part-{index:05d}.parquet")


# Files that phases look rows up in by key (texts, fingerprints) are written in small row groups: a lookup
# scan decodes a group at a time, so it holds what it keeps, not every file.
LOOKUP_ROW_GROUP = 2_000


def _write_atomic(frame: pl.DataFrame, path: str, row_group_size: int | None = None) -> None:
    """Write then rename: a task Ray retries rewrites its file whole, never half."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    frame.write_parquet(temp, row_group_size=row_group_size)
    os.replace(temp, path)


def _text_key(kind: str, normalised: str) -> str:
    """Names one distinct (kind, normalised text): what `dedup` collapses exact duplicates by."""
    return hashlib.blake2b(f"{kind}\x1f{normalised}".encode("utf-8"), digest_size=16).hexdigest()


def sign_partition(partition: int, plan: _DedupPlan) -> dict[str, int]:
    """Phase 1: keys, normalised texts, MinHash signatures and LSH band buckets of one input partition."""
    import pyarrow as pa

    from curation.shingles import minhash_signatures, shingle_texts
    from curation.schema import normalise

    work = plan.work_dir
    frame = pl.read_parquet(_part(os.path.join(work, "input"), partition), columns=["row", "kind", "text"])
    kinds = frame["kind"].to_list()
    normalised = [normalise(text or "") for text in frame["text"].to_list()]
    keys = [_text_key(kind, text) for kind, text in zip(kinds, normalised)]
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    distinct = list(first.values())
    shingled = shingle_texts([normalised[i] for i in distinct], plan.config.shingle_size)
    signatures = minhash_signatures(shingled, plan.config.num_perm, plan.config.seed)
    eligible = np.diff(shingled.offsets) > 0  # texts with no words take part in no band

    distinct_keys = [keys[i] for i in distinct]
    distinct_kinds = [kinds[i] for i in distinct]
    _write_atomic(pl.DataFrame({"row": frame["row"], "key": keys}), _part(os.path.join(work, "rows"), partition))
    _write_atomic(
        pl.DataFrame({"key": distinct_keys, "kind": distinct_kinds, "text": [normalised[i] for i in distinct]}),
        _part(os.path.join(work, "texts"), partition), LOOKUP_ROW_GROUP,
    )
    _write_atomic(
        pl.DataFrame({
            "key": distinct_keys,
            "signature": pl.Series(signatures, dtype=pl.Array(pl.UInt32, plan.config.num_perm)),
        }),
        _part(os.path.join(work, "signatures"), partition),
    )
    eligible_rows = np.nonzero(eligible)[0]
    band_keys = pl.Series("key", [distinct_keys[i] for i in eligible_rows], dtype=pl.String)
    band_kinds = pl.Series("kind", [distinct_kinds[i] for i in eligible_rows], dtype=pl.String)
    for band in range(plan.bands):
        # Exact band values, as bytes: equal bytes iff MinHashLSH puts the two in one bucket.
        values = np.ascontiguousarray(signatures[eligible_rows, band * plan.rows : (band + 1) * plan.rows])
        width = values.shape[1] * values.itemsize
        band_bytes = pl.Series("band", pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(width), len(eligible_rows), [None, pa.py_buffer(values.tobytes())])).cast(pl.Binary)
        _write_atomic(
            pl.DataFrame([band_kinds, band_bytes, band_keys]),
            _part(os.path.join(work, "buckets", f"band={band:03d}"), partition),
        )
    return {"rows": frame.height, "distinct": len(distinct), "eligible": int(eligible.sum())}


def band_candidates(band: int, plan: _DedupPlan) -> int:
    """Phase 2: the candidate pairs of one band (keys of one kind with equal band bytes), from its files only."""
    files = sorted(glob.glob(os.path.join(plan.work_dir, "buckets", f"band={band:03d}", "part-*.parquet")))
    schema = {"kind": pl.String, "band": pl.Binary, "key": pl.String}
    buckets = pl.DataFrame(schema=schema)
    if files:
        # Only band values on two rows or more can pair: found from the band column alone, then only their
        # rows read whole (most texts share no band with any other).
        # Found by a hash of the values (8 bytes a row; a collision only reads a few more rows): the join
        # below compares the values themselves.
        hashes = pl.scan_parquet(files).select(pl.col("band").hash(seed=0)).collect(engine="streaming")["band"]
        repeated = hashes.filter(hashes.is_duplicated()).unique()
        del hashes
        if repeated.len():
            buckets = (pl.scan_parquet(files).filter(pl.col("band").hash(seed=0).is_in(repeated.implode()))
                       .unique().collect())
    pairs = (
        buckets.join(buckets, on=["kind", "band"], suffix="_b")
        .filter(pl.col("key") < pl.col("key_b"))
        .select(pl.col("key").alias("a"), pl.col("key_b").alias("b"))
        .unique()
    )
    _write_atomic(pairs, os.path.join(plan.work_dir, "candidates", f"band={band:03d}.parquet"))
    return pairs.height


def _shard_of(column: str, n_shards: int) -> pl.Expr:
    return pl.col(column).str.slice(0, 8).str.to_integer(base=16) % n_shards


def confirm_group(group: int, plan: _DedupPlan) -> int:
    """Phase 3: one group of the distinct candidate pairs (by key a), confirmed by true shingle Jaccard (dedup's own
    code). Each group reads every texts file for its pairs' texts, so the groups are few (`CONFIRM_PAIRS_PER_TASK`)."""
    from curation.dedup import confirm_pairs
    from curation.shingles import shingle_texts

    files = sorted(glob.glob(os.path.join(plan.work_dir, "candidates", "band=*.parquet")))
    schema = {"a": pl.String, "b": pl.String, "jaccard": pl.Float64}
    candidates = (
        pl.scan_parquet(files).filter(_shard_of("a", plan.n_confirm_groups) == group).unique().collect(engine="streaming")
        if files else pl.DataFrame(schema={"a": pl.String, "b": pl.String})
    )
    edges = pl.DataFrame(schema=schema)
    if candidates.height:
        needed = pl.concat([candidates["a"], candidates["b"]]).unique()
        texts = (
            pl.scan_parquet(os.path.join(plan.work_dir, "texts", "part-*.parquet"))
            .filter(pl.col("key").is_in(needed.implode()))
            .unique("key")
            .sort("key")
            .collect(engine="streaming")
        )
        index = {key: i for i, key in enumerate(texts["key"].to_list())}
        shingled = shingle_texts(texts["text"].to_list(), plan.config.shingle_size)
        pairs = {(index[a], index[b]) for a, b in candidates.iter_rows()}
        keys = texts["key"].to_list()
        confirmed = confirm_pairs(shingled, pairs, plan.config.threshold)
        edges = pl.DataFrame(
            {"a": [keys[i] for i, _, _ in confirmed], "b": [keys[j] for _, j, _ in confirmed],
             "jaccard": [s for _, _, s in confirmed]},
            schema=schema,
        )
    _write_atomic(edges, _part(os.path.join(plan.work_dir, "edges"), group))
    return edges.height


def containment_postings(partition: int, plan: _DedupPlan) -> int:
    """Containment, phase 1: one texts partition's distinct shingle fingerprints, split into shards by fingerprint
    (kind, fingerprint, key, the text's distinct shingles: size), and each text's fingerprints in one row."""
    import pyarrow as pa

    from curation.dedup import distinct_fingerprints
    from curation.shingles import shingle_texts

    texts = pl.read_parquet(_part(os.path.join(plan.work_dir, "texts"), partition))
    shingled = shingle_texts(texts["text"].to_list(), plan.config.shingle_size)
    owners, prints = distinct_fingerprints(shingled)
    postings = pl.DataFrame({
        "kind": texts["kind"].gather(owners),
        "print": pl.Series(prints, dtype=pl.UInt64),
        "key": texts["key"].gather(owners),
        "size": np.bincount(owners, minlength=len(shingled))[owners],
    })
    # Each text's distinct fingerprints, ascending, for its probes and for counting what a container holds;
    # query: long enough to be linked as contained.
    starts = np.searchsorted(owners, np.arange(len(shingled) + 1))
    query = [shingled.n_words(i) >= plan.config.containment_min_words for i in range(len(shingled))]
    _write_atomic(pl.DataFrame({"key": texts["key"], "prints": pl.Series(
        pa.LargeListArray.from_arrays(pa.array(starts, pa.int64()), pa.array(prints, pa.uint64()))),
        "query": pl.Series(query, dtype=pl.Boolean)}),
        _part(os.path.join(plan.work_dir, "fingerprints"), partition), LOOKUP_ROW_GROUP)
    shards = postings.with_columns((pl.col("print") % plan.n_shards).alias("shard"))
    for (shard,), rows in shards.partition_by("shard", as_dict=True, include_key=False).items():  # one pass
        _write_atomic(rows, _part(os.path.join(plan.work_dir, "postings", f"shard={shard:05d}"), partition))
    return postings.height


def containment_frequencies(shard: int, plan: _DedupPlan) -> int:
    """Containment, phase 2: in one fingerprint shard, how many texts hold each fingerprint held by two or more
    (a fingerprint held by one text is the rarest: it proposes no pair, and is not written)."""
    files = sorted(glob.glob(os.path.join(plan.work_dir, "postings", f"shard={shard:05d}", "part-*.parquet")))
    schema = {"print": pl.UInt64, "frequency": pl.UInt32}
    common = pl.DataFrame(schema=schema)
    if files:
        common = (pl.scan_parquet(files).select("print", "key").unique().group_by("print")
                  .agg(pl.len().cast(pl.UInt32).alias("frequency")).filter(pl.col("frequency") > 1)
                  .collect(engine="streaming"))
    _write_atomic(common, os.path.join(plan.work_dir, "common", f"shard={shard:05d}.parquet"))
    return common.height


def containment_probes(partition: int, plan: _DedupPlan) -> int:
    """Containment, phase 3: the query texts of one texts partition pick their probes, by fingerprint shard:
    `curation.dedup.probe_prefix` of their fingerprints, rarest first (the in-memory order), of which those held
    by another text. Any container holding enough of a text holds `probe_hits` of its probes; rare probes
    propose few pairs."""
    from curation.dedup import probe_prefix

    prints = (pl.read_parquet(_part(os.path.join(plan.work_dir, "fingerprints"), partition))
              .filter("query").select("key", pl.col("prints").list.len().alias("size"), "prints").explode("prints")
              .rename({"prints": "print"}).drop_nulls("print"))
    common = (pl.scan_parquet(os.path.join(plan.work_dir, "common", "shard=*.parquet"))
              .filter(pl.col("print").is_in(prints["print"].unique().implode())).collect(engine="streaming"))
    ranked = (prints.join(common, on="print", how="left").with_columns(pl.col("frequency").fill_null(1))
              .sort("key", "frequency", "print"))
    rank = ranked.select(pl.int_range(pl.len()).over("key").alias("rank"))["rank"].to_numpy()
    keep = (rank < probe_prefix(ranked["size"].to_numpy(), plan.config)) & (ranked["frequency"].to_numpy() > 1)
    probes = ranked.filter(pl.Series(keep)).select("key", "print").with_columns(
        (pl.col("print") % plan.n_shards).alias("to"))
    for target, rows in probes.partition_by("to", as_dict=True, include_key=False).items():
        _write_atomic(rows, _part(os.path.join(plan.work_dir, "probes", f"shard={target[0]:05d}"), partition))
    return probes.height


def containment_pairs(shard: int, plan: _DedupPlan) -> int:
    """Containment, phase 4: in one fingerprint shard, the pairs (text a, text b of its kind at least as large)
    where b holds some of a's probes, with how many (hits) and a's size; written by shard of a, so each
    shard of phase 5 reads its own pairs only."""
    files = sorted(glob.glob(os.path.join(plan.work_dir, "probes", f"shard={shard:05d}", "part-*.parquet")))
    if not files:
        return 0
    probes = pl.scan_parquet(files)
    postings = (  # the holders of a probed fingerprint only
        pl.scan_parquet(os.path.join(plan.work_dir, "postings", f"shard={shard:05d}", "part-*.parquet"))
        .select("kind", "print", "key", "size").join(probes.select("print").unique(), on="print", how="semi")
        .collect(engine="streaming")
    )
    pairs = (
        probes.join(postings.lazy(), on=["key", "print"]).unique()
        .join(postings.lazy().rename({"key": "b", "size": "size_b"}), on=["kind", "print"])
        .filter((pl.col("key") != pl.col("b")) & (pl.col("size_b") >= pl.col("size")))
        .unique(["key", "b", "print"])  # a text's postings may come from two partitions
        .group_by(pl.col("key").alias("a"), "b").agg(pl.col("size").first(), pl.len().alias("hits"))
        .with_columns(_shard_of("a", plan.n_shards).alias("to"))
        .collect(engine="streaming")
    )
    for (target,), rows in pairs.partition_by("to", as_dict=True, include_key=False).items():
        _write_atomic(rows, _part(os.path.join(plan.work_dir, "pairs", f"shard={target:05d}"), shard))
    return pairs.height


def confirm_contained_group(group: int, plan: _DedupPlan) -> int:
    """Containment, phase 5: the texts a of a group of key shards, their proposed pairs counted over a's every
    fingerprint (candidates: enough hits), confirmed by exact containment, and each one's best container
    (dedup's own functions, so the same link as a local run). A text's pairs are all in its shard, so any
    grouping of the shards links the same."""
    from curation.dedup import SharedPrints, best_containers, confirm_containment, hits_needed, probe_hits
    from curation.shingles import shingle_texts

    files = sorted(path for shard in range(group, plan.n_shards, plan.n_containment_groups)
                   for path in glob.glob(os.path.join(plan.work_dir, "pairs", f"shard={shard:05d}", "part-*.parquet")))
    schema = {"a": pl.String, "b": pl.String}
    proposed = pl.DataFrame(schema=schema)
    if files:  # a pair's probe hits, summed over the fingerprint shards that found them
        counted = (pl.scan_parquet(files).group_by("a", "b").agg(pl.col("size").first(), pl.col("hits").sum())
                   .collect(engine="streaming"))
        proposed = counted.filter(pl.Series(counted["hits"].to_numpy() >= probe_hits(counted["size"].to_numpy(),
                                                                                   plan.config))).select("a", "b")
    links = pl.DataFrame(schema=schema)
    if proposed.height:
        keys_needed = pl.concat([proposed["a"], proposed["b"]]).unique()
        fingerprints = (
            pl.scan_parquet(os.path.join(plan.work_dir, "fingerprints", "part-*.parquet")).select("key", "prints")
            .filter(pl.col("key").is_in(keys_needed.implode())).unique("key").sort("key")
            .collect(engine="streaming")  # a file at a time: memory holds the rows kept, not every file
        )
        keys = fingerprints["key"]
        index = pl.DataFrame({"key": keys, "i": np.arange(len(keys), dtype=np.int64)})
        indexed = (proposed.join(index, left_on="a", right_on="key").rename({"i": "i_a"})
                   .join(index, left_on="b", right_on="key").rename({"i": "i_b"}))
        a, b = indexed["i_a"].to_numpy(), indexed["i_b"].to_numpy()
        sizes = fingerprints["prints"].list.len().to_numpy().astype(np.int64)
        prints = fingerprints["prints"].explode().to_numpy()
        del proposed, indexed, index, fingerprints
        owners = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
        passing = SharedPrints(owners, prints, len(sizes)).count(a, b) >= hits_needed(sizes[a], plan.config)
        del owners, prints
        # Only the candidates' texts are read and shingled, to confirm them exactly.
        a, b = a[passing], b[passing]
        involved = np.unique(np.concatenate([a, b]))
        involved_keys = keys.gather(involved)
        texts = (
            pl.scan_parquet(os.path.join(plan.work_dir, "texts", "part-*.parquet"))
            .filter(pl.col("key").is_in(involved_keys.implode())).unique("key").sort("key")
            .collect(engine="streaming")
        )
        if not texts["key"].equals(involved_keys.rename("key")):
            raise RuntimeError(f"{plan.work_dir}: the texts files lack texts the fingerprints files name")
        normalised = texts["text"].to_list()
        shingled = shingle_texts(normalised, plan.config.shingle_size)
        pairs = set(zip(np.searchsorted(involved, a).tolist(), np.searchsorted(involved, b).tolist()))
        best = best_containers(confirm_containment(shingled, pairs, plan.config.containment), normalised)
        key_of = involved_keys.to_list()
        links = pl.DataFrame({"a": [key_of[a] for a in best], "b": [key_of[b] for b, _ in best.values()]},
                             schema=schema)
    _write_atomic(links, _part(os.path.join(plan.work_dir, "contained"), group))
    return links.height


def dedup_clusters(batch: pl.DataFrame, shared: tuple[DedupConfig, list[str]]) -> pl.DataFrame:
    """Phase 4: `curation.dedup.dedup` itself over rows making up whole clusters; returns row + its columns."""
    from curation.dedup import DEDUP_COLUMNS, dedup

    config, source_order = shared
    return dedup(batch, config, source_order=source_order, progress=False).select(["row", *DEDUP_COLUMNS])


_DEDUP_INPUT_COLUMNS = ("item_id", "source_id", "kind", "text", "start")


def dedup_partitioned(
    items: pl.DataFrame | pl.LazyFrame,
    config: DedupConfig | None = None,
    source_order: Sequence[str] | None = None,
    executor: Executor | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    rows_per_partition: int = DEFAULT_ROWS_PER_PARTITION,
    keep_work_dir: bool = False,
    progress: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """What `curation.dedup.dedup(items, config, source_order)` returns, computed in partitions on `executor`.

    work_dir: where the partition files go; on a cluster, a directory every node
    reads and writes at the same path (default: a new temporary directory, removed
    afterwards unless keep_work_dir). A workspace's parts go through `dedup_columns` instead.
    """
    from curation.dedup import DEDUP_COLUMNS, dedup
    from curation.generations import ItemPart

    frame = items.collect() if isinstance(items, pl.LazyFrame) else items
    frame = frame.drop([name for name in DEDUP_COLUMNS if name in frame.columns])
    if frame.height == 0:
        return dedup(frame, config)
    created = work_dir is None
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="satsang-dedup-"))
    try:
        work.mkdir(parents=True, exist_ok=True)
        whole = work / "items.parquet"
        frame.select(_DEDUP_INPUT_COLUMNS).write_parquet(whole)
        columns = dedup_columns([ItemPart(whole, 0, frame.height)], config, source_order, executor, work,
                                rows_per_partition, progress)
        return pl.concat([frame, columns.for_rows(0, frame)], how="horizontal")
    finally:
        if created and not keep_work_dir:
            shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class DedupColumns:
    """The partitioned dedup's answer, given out a part at a time (`for_rows`), never for every row at once.

    clustered: row and DEDUP_COLUMNS of the rows in clusters of two or more (the few);
    alone: the columns `curation.dedup.dedup` gives a lone item, less its own ids.
    """

    n_rows: int
    clustered: pl.DataFrame
    alone: dict[str, Any]

    def for_rows(self, offset: int, items: pl.DataFrame) -> pl.DataFrame:
        """DEDUP_COLUMNS of `items`, the rows offset .. offset + height of the deduped table, in order."""
        from curation.dedup import DEDUP_COLUMNS

        alone = self.alone
        rows = items.select(
            pl.int_range(offset, offset + items.height, dtype=pl.Int64).alias("row"),
            pl.col("item_id").alias("dedup_cluster"),
            pl.col("item_id").alias("dedup_representative"),
            pl.col("source_id").alias("dedup_representative_source"),
            pl.lit(True).alias("dedup_is_representative"),
            pl.lit(alone["dedup_kind"]).alias("dedup_kind"),
            pl.lit(alone["dedup_jaccard"], dtype=pl.Float64).alias("dedup_jaccard"),
            pl.lit(alone["dedup_containment"], dtype=pl.Float64).alias("dedup_containment"),
            pl.lit(1, dtype=pl.Int64).alias("dedup_cluster_size"),
            pl.lit(alone["dedup_reason"]).alias("dedup_reason"),
            pl.lit(alone["dedup_agent"]).alias("dedup_agent"),
        ).cast(DEDUP_COLUMNS)
        members = self.clustered.filter(pl.col("row").is_between(offset, offset + items.height - 1))
        if members.height:
            rows = rows.update(members, on="row", include_nulls=True)
        return rows.select(list(DEDUP_COLUMNS))


def dedup_columns(
    parts: Sequence[Any],
    config: DedupConfig | None = None,
    source_order: Sequence[str] | None = None,
    executor: Executor | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    rows_per_partition: int = DEFAULT_ROWS_PER_PARTITION,
    progress: Callable[[str], None] | None = None,
) -> DedupColumns:
    """Dedup's columns for the items in `parts` (`curation.generations.ItemPart`s, in order), partition by partition.

    Memory holds one part while the input partitions are written, then what the phases
    above hold (one partition, one band, one shard), then the clustered rows: not the corpus.
    work_dir: the partition files (default: a temporary directory, removed after).
    """
    from curation.dedup import DedupConfig

    config = config or DedupConfig()
    executor = executor or LocalExecutor()
    say = progress or (lambda message: None)
    if rows_per_partition < 1:
        raise ValueError(f"rows_per_partition must be >= 1, got {rows_per_partition}")
    created = work_dir is None
    work = str(work_dir) if work_dir is not None else tempfile.mkdtemp(prefix="satsang-dedup-")
    os.makedirs(work, exist_ok=True)
    try:
        started = time.perf_counter()
        order = list(source_order or [])
        n_partitions = 0
        for part in parts:  # the input partitions: row, and what the phases read, a part at a time
            frame = part.read(list(_DEDUP_INPUT_COLUMNS))
            order.extend(frame["source_id"].unique(maintain_order=True).to_list())
            indexed = frame.select(pl.int_range(part.offset, part.offset + frame.height, dtype=pl.Int64).alias("row"),
                                   *_DEDUP_INPUT_COLUMNS)
            for start in range(0, indexed.height, rows_per_partition):
                _write_atomic(indexed.slice(start, rows_per_partition), _part(os.path.join(work, "input"), n_partitions))
                n_partitions += 1
        n = sum(part.rows for part in parts)
        order = list(dict.fromkeys(order))
        say(f"input: {n} rows in {n_partitions} partitions ({time.perf_counter() - started:.1f}s)")

        bands, rows = config.lsh_params()
        plan = _DedupPlan(work, config, bands, rows, n_shards=max(n_partitions, executor.parallelism))
        started = time.perf_counter()
        counts = executor.map(sign_partition, range(n_partitions), shared=plan)
        say(f"signatures: {sum(c['distinct'] for c in counts)} distinct texts ({time.perf_counter() - started:.1f}s)")

        started = time.perf_counter()
        n_candidates = executor.map(band_candidates, range(bands), shared=plan)
        say(f"bands: {sum(n_candidates)} candidate pairs over {bands} bands ({time.perf_counter() - started:.1f}s)")

        started = time.perf_counter()
        plan = replace(plan, n_confirm_groups=max(executor.parallelism, math.ceil(sum(n_candidates) / CONFIRM_PAIRS_PER_TASK)))
        n_edges = executor.map(confirm_group, range(plan.n_confirm_groups), shared=plan)
        say(f"confirm: {sum(n_edges)} near-duplicate pairs, in {plan.n_confirm_groups} groups"
            f" ({time.perf_counter() - started:.1f}s)")

        if config.containment > 0.0:
            started = time.perf_counter()
            n_postings = executor.map(containment_postings, range(n_partitions), shared=plan)
            say(f"containment postings: {sum(n_postings)} fingerprints of texts ({time.perf_counter() - started:.1f}s)")
            started = time.perf_counter()
            n_common = executor.map(containment_frequencies, range(plan.n_shards), shared=plan)
            n_probes = executor.map(containment_probes, range(n_partitions), shared=plan)
            say(f"containment probes: {sum(n_probes)}, of {sum(n_common)} fingerprints held by two texts or more"
                f" ({time.perf_counter() - started:.1f}s)")
            started = time.perf_counter()
            n_pairs = executor.map(containment_pairs, range(plan.n_shards), shared=plan)
            say(f"containment pairs: {sum(n_pairs)} sharing probes ({time.perf_counter() - started:.1f}s)")
            started = time.perf_counter()
            plan = replace(plan, n_containment_groups=min(plan.n_shards, max(
                executor.parallelism, math.ceil(sum(n_pairs) / CONTAINMENT_PAIRS_PER_TASK))))
            n_links = executor.map(confirm_contained_group, range(plan.n_containment_groups), shared=plan)
            say(f"containment: {sum(n_links)} texts linked as contained, in {plan.n_containment_groups} groups"
                f" ({time.perf_counter() - started:.1f}s)")

        started = time.perf_counter()
        result = _assemble(n, work, config, order, executor, rows_per_partition)
        say(f"clusters ({time.perf_counter() - started:.1f}s)")
        return result
    finally:
        if created:
            shutil.rmtree(work, ignore_errors=True)


def _assemble(
    n: int, work: str, config: DedupConfig, order: list[str], executor: Executor, rows_per_batch: int
) -> DedupColumns:
    """Components over exact keys and confirmed edges; dedup's columns for the rows of clusters of two or more."""
    from curation.dedup import DEDUP_COLUMNS, dedup

    # Every row's key as an 8-byte hash, not its 32 characters: all the corpus-sized state held here.
    row_files = sorted(glob.glob(os.path.join(work, "rows", "part-*.parquet")))
    hashed = pl.concat([pl.read_parquet(path).select("row", pl.col("key").hash(seed=0)) for path in row_files]
                       or [pl.DataFrame(schema={"row": pl.Int64, "key": pl.UInt64})])
    rows_seen = np.sort(hashed["row"].to_numpy())
    if len(rows_seen) != n or (n and (rows_seen[0] != 0 or rows_seen[-1] != n - 1 or (np.diff(rows_seen) != 1).any())):
        raise RuntimeError(f"{work}: the rows files do not cover the {n} input rows once each")
    del rows_seen
    repeated_hashes = hashed["key"].filter(hashed["key"].is_duplicated()).unique()
    del hashed
    edges = pl.read_parquet(os.path.join(work, "edges", "part-*.parquet")).select("a", "b")
    if config.containment > 0.0:  # each contained text's link to its best container joins them too
        edges = pl.concat([edges, pl.read_parquet(os.path.join(work, "contained", "part-*.parquet"))])
    nodes = pl.concat([edges["a"], edges["b"]]).unique().sort()
    parent = _components(nodes.search_sorted(edges["a"]).to_numpy(), nodes.search_sorted(edges["b"]).to_numpy(),
                         len(nodes))
    labels = pl.DataFrame({"key": nodes, "label": nodes.gather(parent)})
    # Rows in clusters of two or more: those of a key on two rows or more, or of a key in some link (whose
    # other end is another key, so another row). Only they are held, with their cluster's label.
    row_keys = pl.concat([  # the rows that may be clustered (a hash collision only adds a few), then exactly
        pl.read_parquet(path).filter(pl.col("key").hash(seed=0).is_in(repeated_hashes.implode())
                                     | pl.col("key").is_in(nodes.implode()))
        for path in row_files
    ] or [pl.DataFrame(schema={"row": pl.Int64, "key": pl.String})])
    repeated = row_keys.group_by("key").agg(pl.len().alias("rows")).filter(pl.col("rows") > 1).select("key")
    shared_rows = (
        row_keys.join(pl.concat([repeated, labels.select("key")]).unique(), on="key", how="semi")
        .join(labels, on="key", how="left")
        .select("row", pl.coalesce("label", "key").alias("label"))
        .sort("row")
    )
    del row_keys, repeated

    # Whole clusters per batch, each batch deduped by dedup() itself; the input read a partition at a time.
    batches: list[pl.DataFrame] = []
    if shared_rows.height:
        members_of = shared_rows.group_by("label", maintain_order=True).agg("row")
        batch_of_cluster = _batch_numbers(members_of["row"].list.len().to_numpy(), rows_per_batch)
        batch_column = (members_of.with_columns(pl.Series("batch", batch_of_cluster, dtype=pl.Int64))
                        .explode("row").select(pl.col("row").cast(pl.Int64), "batch"))
        grouped = pl.concat([
            pl.read_parquet(path).join(batch_column, on="row", how="inner")
            for path in sorted(glob.glob(os.path.join(work, "input", "part-*.parquet")))
        ]).sort("row")
        batches = [part.drop("batch") for part in grouped.partition_by("batch", maintain_order=True)]
        del grouped
    clustered = executor.map(dedup_clusters, batches, shared=(config, order)) if batches else []
    # A lone row gets what dedup gives a lone item (its reason and agent too): ask dedup once.
    first = pl.read_parquet(_part(os.path.join(work, "input"), 0), n_rows=1).drop("row")
    alone = dedup(first, config, source_order=order, progress=False).row(0, named=True)
    empty = pl.DataFrame(schema={"row": pl.Int64, **DEDUP_COLUMNS})
    return DedupColumns(n, pl.concat([empty, *(part.cast(DEDUP_COLUMNS) for part in clustered)], how="vertical")
                        .sort("row"), alone)


def _components(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Each of n nodes' component root (its smallest member), over the links a[i] - b[i]: union-find in numpy."""
    parent = np.arange(n, dtype=np.int64)
    while True:  # hook each link's larger root onto its smaller one, then shortcut; until no link spans two roots
        root_a, root_b = parent[a], parent[b]
        spanning = root_a != root_b
        if not spanning.any():
            return parent
        low, high = np.minimum(root_a, root_b)[spanning], np.maximum(root_a, root_b)[spanning]
        np.minimum.at(parent, high, low)
        while True:
            grand = parent[parent]
            if (grand == parent).all():
                break
            parent = grand


def _batch_numbers(sizes: np.ndarray, rows_per_batch: int) -> np.ndarray:
    """Batch of each cluster of `sizes` rows, in order: a batch closes once it holds rows_per_batch rows or more."""
    batches = np.zeros(len(sizes), dtype=np.int64)
    current, number = 0, 0
    for i, size in enumerate(sizes.tolist()):
        batches[i] = number
        current += size
        if current >= rows_per_batch:
            current, number = 0, number + 1
    return batches
