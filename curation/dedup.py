"""Dedup: exact duplicates by normalised-text hash, near duplicates by MinHash + LSH over word shingles.

A stateless stage: `dedup(items, config)` returns the items with the `dedup_*`
columns added (replaced if an earlier run left them); it never drops a row and
never touches `text`. Later stages and the export decide what to do with a
duplicate; this stage only says which items are copies of which, and why.

How an item is compared:

- Its text is the `text` column (a pair's question + answer) normalised with
  `schema.normalise` (case, punctuation, quote style and spacing ignored), cut
  into words. Its shingles are the runs of `shingle_size` consecutive words; a
  text shorter than that is one shingle of all its words.
- Exact duplicates: the same kind and the same normalised text. Works across
  sources: the same talk in two books is two rows (keyed by source_id and
  item_id, which may repeat) and one cluster.
- Near duplicates: each distinct text gets a MinHash signature; MinHashLSH
  (datasketch) proposes candidate pairs; every candidate is confirmed with the
  true Jaccard of the two shingle sets (exact word sequences, not hashes) and
  joins a cluster only if that is >= `threshold`. Confirmed pairs are merged with
  union-find, so a cluster can chain: A~B and B~C put A and C together even when
  A and C alone fall short; each row's `dedup_jaccard` is its own Jaccard with the
  representative, so such a member is visible.
- Pairs are only clustered with pairs, passages with passages: a passage and a
  pair are different training material even when their words overlap.

Shingles and MinHash signatures: curation/shingles.py.

The representative of a cluster, in this order: the most complete text (most
normalised words); then the earliest source (ingest order: the order of the
workspace's sources table, or of first appearance in `items`); then the earliest
position in that source (`start`); then the smallest item_id. `dedup_reason`
says which of these decided it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from curation.schema import DEDUP_COLUMNS, normalise
from curation.shingles import ShingledTexts, minhash_signatures, progress_bar, shingle_texts

STAGE_NAME = "dedup"
STAGE_VERSION = "dedup-3"  # 3: containment candidates by prefix filtering, exact

# DEDUP_COLUMNS (curation/schema.py): the columns this stage adds, in that order, with their types.

# unique: alone in its cluster. exact: same normalised text as the representative. near: Jaccard
# with the representative at or above the threshold. contained: its shingles largely found in the
# representative's (dedup_containment). A member chained in by other links: contained if it was
# linked as contained, else near. The representative itself: exact if every member is an exact
# copy, near if any is near, else contained (its members are contained in it).
KINDS = ("unique", "exact", "near", "contained")


@dataclass(frozen=True)
class DedupConfig:
    """How items are shingled, sketched and matched."""

    # The fields with help are `satsang dedup`'s options (satsang/options.py).
    shingle_size: int = field(default=5, metadata={"help": "Words per shingle."})
    num_perm: int = field(default=128, metadata={"help": "MinHash permutations."})
    threshold: float = field(default=0.7, metadata={"help": "Jaccard similarity at or above which two items are near duplicates."})
    containment: float = field(default=0.8, metadata={
        "help": "Share of an item's shingles found in a larger item at or above which it is linked to it as"
                " contained (the same exchange cut or split differently); 0 turns containment linking off."})
    containment_min_words: int = field(default=15, metadata={
        "help": "Fewest words (normalised) an item needs to be linked as contained: shorter texts recur by chance."})
    seed: int = 1  # seed of the MinHash permutations
    # LSH bands and rows are chosen so that a pair exactly at the threshold becomes a
    # candidate with at least this probability (higher J: higher still). Candidates are
    # all confirmed exactly, so a low LSH threshold costs time, never precision.
    lsh_recall_at_threshold: float = 0.98

    def __post_init__(self):
        if self.shingle_size < 1:
            raise ValueError(f"shingle_size must be >= 1, got {self.shingle_size}")
        if self.num_perm < 2:
            raise ValueError(f"num_perm must be >= 2, got {self.num_perm}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 <= self.containment <= 1.0:
            raise ValueError(f"containment must be in [0, 1] (0: off), got {self.containment}")
        if self.containment_min_words < 1:
            raise ValueError(f"containment_min_words must be >= 1, got {self.containment_min_words}")
        if not 0.0 < self.lsh_recall_at_threshold < 1.0:
            raise ValueError(f"lsh_recall_at_threshold must be in (0, 1), got {self.lsh_recall_at_threshold}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def lsh_params(self) -> tuple[int, int]:
        """(bands, rows): the most rows per band (fewest spurious candidates) that still reach the recall."""
        return lsh_params(self.threshold, self.num_perm, self.lsh_recall_at_threshold)

    def agent_json(self) -> str:
        bands, rows = self.lsh_params()
        lsh = {"bands": bands, "rows": rows}
        return json.dumps({"stage": STAGE_NAME, "version": STAGE_VERSION, "config": asdict(self), "lsh": lsh}, sort_keys=True)


@dataclass(frozen=True)
class DedupReport:
    """What one dedup run found, and the generation it committed (None when not committed)."""

    n_items: int
    n_clusters: int  # singletons included
    n_duplicate_clusters: int  # clusters of two or more
    n_exact_duplicates: int  # non-representative rows with the representative's exact normalised text
    n_near_duplicates: int  # non-representative rows that are near copies
    n_contained: int  # non-representative rows linked as contained in a larger text
    n_cross_source_clusters: int  # clusters with rows from two or more sources
    generation: int | None
    seconds: float
    config: DedupConfig


def lsh_params(threshold: float, num_perm: int, recall_at_threshold: float) -> tuple[int, int]:
    """Bands b and rows r (b * r <= num_perm) with P(candidate | J = threshold) = 1 - (1 - t^r)^b >= recall."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if bands >= 2 and 1.0 - (1.0 - threshold**rows) ** bands >= recall_at_threshold:
            return bands, rows
    return num_perm, 1


# ---- candidates and confirmation -----------------------------------------------------


def lsh_candidates(
    signatures: np.ndarray, config: DedupConfig, eligible: np.ndarray | None = None, progress: bool = False
) -> set[tuple[int, int]]:
    """Pairs (i < j) of rows whose signatures share an LSH band, by datasketch's MinHashLSH."""
    from datasketch import LeanMinHash, MinHashLSH

    bands, rows = config.lsh_params()
    index = MinHashLSH(num_perm=config.num_perm, params=(bands, rows))
    rows_to_index = np.arange(len(signatures)) if eligible is None else np.nonzero(eligible)[0]
    sketches = {}
    bar = progress_bar(progress, total=2 * len(rows_to_index), desc="dedup: LSH", unit="text")
    with index.insertion_session() as session:
        for i in rows_to_index.tolist():
            sketch = LeanMinHash(seed=config.seed, hashvalues=signatures[i], scheme="affine32")
            sketches[i] = sketch
            session.insert(i, sketch, check_duplication=False)
            bar.update()
    pairs: set[tuple[int, int]] = set()
    for i, sketch in sketches.items():
        for j in index.query(sketch):
            if j > i:
                pairs.add((i, j))
        bar.update()
    bar.close()
    return pairs


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    intersection = len(a & b)
    return intersection / (len(a) + len(b) - intersection)


class _ShingleSets:
    """Exact shingle sets, built on first use: only texts in some candidate pair need one."""

    def __init__(self, shingled: ShingledTexts):
        self.shingled = shingled
        self.cache: dict[int, set[tuple[int, ...]]] = {}

    def __getitem__(self, i: int) -> set[tuple[int, ...]]:
        found = self.cache.get(i)
        if found is None:
            found = self.cache[i] = self.shingled.shingle_set(i)
        return found


def confirm_pairs(
    shingled: ShingledTexts, candidates: set[tuple[int, int]], threshold: float, sets: _ShingleSets | None = None
) -> list[tuple[int, int, float]]:
    """The candidates whose true shingle Jaccard is >= threshold, with it, sorted."""
    sets = sets or _ShingleSets(shingled)
    confirmed = []
    for i, j in sorted(candidates):
        a, b = sets[i], sets[j]
        # Jaccard <= min/max of the set sizes: most spurious candidates stop here.
        if min(len(a), len(b)) < threshold * max(len(a), len(b)):
            continue
        similarity = jaccard(a, b)
        if similarity >= threshold:
            confirmed.append((i, j, similarity))
    return confirmed


def near_duplicate_pairs(
    texts: Sequence[str], config: DedupConfig, progress: bool = False
) -> list[tuple[int, int, float]]:
    """Pairs (i < j, Jaccard) of normalised texts that are near duplicates: LSH candidates, confirmed."""
    shingled = shingle_texts(texts, config.shingle_size)
    signatures = minhash_signatures(shingled, config.num_perm, config.seed, progress)
    eligible = np.diff(shingled.offsets) > 0
    return confirm_pairs(shingled, lsh_candidates(signatures, config, eligible, progress), config.threshold)


# ---- containment ------------------------------------------------------------------------


def containment(a: set, b: set) -> float:
    """The share of a's shingles found in b: |a & b| / |a| (0.0 for an empty a)."""
    return len(a & b) / len(a) if a else 0.0


def distinct_fingerprints(shingled: ShingledTexts) -> tuple[np.ndarray, np.ndarray]:
    """(text, fingerprint) once per distinct shingle of each text, by text then fingerprint."""
    n = len(shingled)
    texts = np.repeat(np.arange(n, dtype=np.int64), np.diff(shingled.offsets))
    prints = shingled.fingerprints
    order = np.lexsort((prints, texts))
    texts, prints = texts[order], prints[order]
    distinct = np.ones(len(texts), dtype=bool)
    distinct[1:] = (texts[1:] != texts[:-1]) | (prints[1:] != prints[:-1])
    return texts[distinct], prints[distinct]


class SharedPrints:
    """For pairs of texts (a, b): how many of text a's distinct fingerprints text b holds.

    Built from `distinct_fingerprints`' (texts, fingerprints), which lists each text's distinct
    fingerprints in ascending order: each of a's fingerprints is looked up by binary search in b's
    run, a chunk of lookups at once, so nothing larger than a chunk's lookups is built.
    """

    def __init__(self, texts: np.ndarray, prints: np.ndarray, n_texts: int):
        self.prints = prints
        self.starts = np.searchsorted(texts, np.arange(n_texts + 1))  # text i's run: starts[i] .. starts[i + 1]

    def count(self, a: np.ndarray, b: np.ndarray, lookups: int = 4_000_000) -> np.ndarray:
        """b's count of a's fingerprints, pair by pair; about `lookups` lookups at a time: bounded memory."""
        if len(self.prints) == 0 or len(a) == 0:
            return np.zeros(len(a), dtype=np.int64)
        ends = np.cumsum(self.starts[a + 1] - self.starts[a])
        bounds = np.unique(np.searchsorted(ends, np.arange(lookups, ends[-1], lookups), side="left"))
        return np.concatenate([self._count(a[lo:hi], b[lo:hi])
                               for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(a)]) if hi > lo])

    def _count(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        starts = self.starts[a]
        counts = self.starts[a + 1] - starts
        pair_of = np.repeat(np.arange(len(a)), counts)
        offsets = np.arange(len(pair_of), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        wanted = self.prints[np.repeat(starts, counts) + offsets]
        holder = b[pair_of]
        low, high = self.starts[holder], self.starts[holder + 1]
        end, last = high.copy(), len(self.prints) - 1
        while True:  # the first position in b's run whose fingerprint is >= the wanted one
            searching = low < high
            if not searching.any():
                break
            middle = (low + high) // 2
            below = self.prints[np.minimum(middle, last)] < wanted
            low = np.where(searching & below, middle + 1, low)
            high = np.where(searching & ~below, middle, high)
        found = (low < end) & (self.prints[np.minimum(low, last)] == wanted)
        return np.bincount(pair_of[found], minlength=len(a))


# A container must hold this many of a text's probes (fewer when the text needs fewer hits).
# One probe hit would be enough to be exact, but one shared rare shingle is common between
# unrelated texts (a quoted line, a stock phrase); two are rarer, at the cost of one more probe.
PROBE_HITS = 2


def hits_needed(sizes: np.ndarray, config: DedupConfig) -> np.ndarray:
    """Fingerprints of a text of `sizes` distinct shingles that a container must hold: the containment threshold."""
    return np.ceil(config.containment * np.asarray(sizes, dtype=np.float64) - 1e-9).astype(np.int64)


def probe_hits(sizes: np.ndarray, config: DedupConfig) -> np.ndarray:
    """How many of its probes a container must hold to be proposed for a text of `sizes` distinct shingles."""
    return np.minimum(PROBE_HITS, hits_needed(sizes, config))


def probe_prefix(sizes: np.ndarray, config: DedupConfig) -> np.ndarray:
    """How many of its fingerprints a text of `sizes` distinct shingles probes with (prefix filtering): a
    container holding `hits_needed` of them misses at most (sizes - needed), so it holds at least
    `probe_hits` of any (sizes - needed + probe_hits) of them. Exact: no container is missed."""
    return np.asarray(sizes, dtype=np.int64) - hits_needed(sizes, config) + probe_hits(sizes, config)


def containment_candidates(
    shingled: ShingledTexts, config: DedupConfig, queries: np.ndarray | None = None, chunk_postings: int = 4_000_000
) -> set[tuple[int, int]]:
    """Directed pairs (a, b), a among `queries`: text a is at least `config.containment` contained in
    text b, at least as large, by their shingle fingerprints. Jaccard LSH cannot find these: a short
    text inside a long one has a small Jaccard with it however fully it is contained.

    Prefix filtering (as in set-similarity joins): a container must hold `probe_hits` of any
    `probe_prefix` of a's fingerprints, so a probes with its rarest ones over the whole corpus (a
    fingerprint held by a alone is rarest of all, and proposes nothing). A shingle common to many
    texts is probed only by a text made mostly of common shingles, so the pairs grow with the texts
    that truly overlap, not with the square of the corpus. Each proposed pair is then counted over
    a's every fingerprint (`SharedPrints`): the candidates are exactly the pairs at the threshold,
    whichever shingles were probed, so a partitioned run finds the same.
    """
    n = len(shingled)
    texts, prints = distinct_fingerprints(shingled)
    sizes = np.bincount(texts, minlength=n)
    unique_prints, ids, frequency = np.unique(prints, return_inverse=True, return_counts=True)
    ids = ids.reshape(-1).astype(np.int64)

    # Each query text's fingerprints, rarest first; its prefix: the first `probe_prefix`. Of those, only the
    # ones another text holds can propose a pair.
    rows = np.arange(len(texts)) if queries is None else np.nonzero(queries[texts])[0]
    rows = rows[np.lexsort((ids[rows], frequency[ids[rows]], texts[rows]))]
    owners = texts[rows]
    firsts = np.searchsorted(owners, owners, side="left")
    prefix = ((np.arange(len(rows)) - firsts) < probe_prefix(sizes[owners], config)) & (frequency[ids[rows]] > 1)

    # Posting lists by shingle id, to find each probe's holders.
    by_id = np.argsort(ids, kind="stable")
    list_starts = np.zeros(len(unique_prints) + 1, dtype=np.int64)
    np.cumsum(frequency, out=list_starts[1:])
    shared = SharedPrints(texts, prints, n)

    probe_owners, probe_ids = owners[prefix], ids[rows[prefix]]
    lengths = frequency[probe_ids]
    ends = np.cumsum(lengths)
    candidates: set[tuple[int, int]] = set()
    first = 0
    # Whole texts' probes at a time, about `chunk_postings` postings each: bounded memory.
    while first < len(probe_owners):
        last = int(np.searchsorted(ends, (ends[first] - lengths[first]) + chunk_postings, side="right"))
        last = max(last, first + 1)
        if last < len(probe_owners):
            last = int(np.searchsorted(probe_owners, probe_owners[last - 1], side="right"))
        chunk = slice(first, last)
        a = np.repeat(probe_owners[chunk], lengths[chunk])
        within = np.arange(len(a), dtype=np.int64) - np.repeat(np.cumsum(lengths[chunk]) - lengths[chunk], lengths[chunk])
        b = texts[by_id[np.repeat(list_starts[probe_ids[chunk]], lengths[chunk]) + within]]
        keep = (a != b) & (sizes[b] >= sizes[a])
        pairs, hits = np.unique(a[keep] * n + b[keep], return_counts=True)  # b's hits among a's probes
        a, b = pairs // n, pairs % n
        proposed = hits >= probe_hits(sizes[a], config)
        a, b = a[proposed], b[proposed]
        passing = shared.count(a, b) >= hits_needed(sizes[a], config)  # over a's every fingerprint
        candidates.update(zip(a[passing].tolist(), b[passing].tolist()))
        first = last
    return candidates


def confirm_containment(
    shingled: ShingledTexts, candidates: set[tuple[int, int]], threshold: float, sets: _ShingleSets | None = None
) -> list[tuple[int, int, float, float]]:
    """(a, b, containment of a in b, Jaccard) for the candidates whose true containment is >= threshold, sorted."""
    sets = sets or _ShingleSets(shingled)
    confirmed = []
    for a, b in sorted(candidates):
        set_a, set_b = sets[a], sets[b]
        if not set_a or len(set_a) > len(set_b):
            continue
        shared = len(set_a & set_b)
        if shared >= threshold * len(set_a):
            confirmed.append((a, b, shared / len(set_a), shared / (len(set_a) + len(set_b) - shared)))
    return confirmed


def best_containers(links: list[tuple[int, int, float, float]], texts: Sequence[str]) -> dict[int, tuple[int, float]]:
    """Each contained text's one container: {a: (b, containment)}.

    The highest containment wins, then the highest Jaccard (the tightest fit: the exchange itself
    rather than a long passage that also holds it), then the container's normalised text (any fixed
    order that needs nothing but the two texts, so a partitioned run picks the same). One link per
    contained text, so a text held by two unrelated items does not join them into one cluster.
    """
    best: dict[int, tuple] = {}
    for a, b, share, similarity in links:
        key = (-share, -similarity, texts[b])
        if a not in best or key < best[a][0]:
            best[a] = (key, b, share)
    return {a: (b, share) for a, (_, b, share) in best.items()}


def containment_links(
    shingled: ShingledTexts, distinct: Sequence[tuple[str, str]], config: DedupConfig, sets: _ShingleSets | None = None
) -> dict[int, tuple[int, float]]:
    """Among distinct (kind, normalised text): each text of containment_min_words or more that is largely
    contained in a text of its kind, with its best container: {a: (b, containment)}."""
    if config.containment <= 0.0 or len(shingled) < 2:
        return {}
    queries = np.array([shingled.n_words(i) >= config.containment_min_words for i in range(len(shingled))], dtype=bool)
    candidates = {
        (a, b) for a, b in containment_candidates(shingled, config, queries) if distinct[a][0] == distinct[b][0]
    }
    links = confirm_containment(shingled, candidates, config.containment, sets)
    return best_containers(links, [text for _, text in distinct])


# ---- the stage -------------------------------------------------------------------------


class UnionFind:
    """Disjoint sets over 0..n-1; a set's root is its smallest member."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def dedup(
    items: pl.DataFrame | pl.LazyFrame,
    config: DedupConfig | None = None,
    source_order: Sequence[str] | None = None,
    progress: bool | None = None,
) -> pl.DataFrame:
    """The items, in their order, with the DEDUP_COLUMNS added (or replaced). No row is dropped.

    `source_order`: source_ids, earliest first, for the representative's tie-break
    (default: order of first appearance in `items`; sources not listed come after).
    `progress`: show progress bars (default: for 10,000 items or more, on a terminal).
    """
    config = config or DedupConfig()
    frame = items.collect() if isinstance(items, pl.LazyFrame) else items
    frame = frame.drop([name for name in DEDUP_COLUMNS if name in frame.columns])
    n = frame.height
    if progress is None:
        progress = n >= 10_000 and sys.stderr.isatty()
    if n == 0:
        return frame.with_columns(pl.lit(None, dtype=dtype).alias(name) for name, dtype in DEDUP_COLUMNS.items())

    kinds = frame["kind"].to_list()
    sources = frame["source_id"].to_list()
    item_ids = frame["item_id"].to_list()
    starts = frame["start"].fill_null(0).to_list()
    order = list(dict.fromkeys([*(source_order or []), *sources]))
    source_rank = {source: rank for rank, source in enumerate(order)}

    # Exact duplicates collapse first: shingling and LSH run once per distinct (kind, text).
    normalised = [normalise(text or "") for text in frame["text"].to_list()]
    distinct_index: dict[tuple[str, str], int] = {}
    row_text = [distinct_index.setdefault((kind, text), len(distinct_index)) for kind, text in zip(kinds, normalised)]
    distinct = list(distinct_index)
    shingled = shingle_texts([text for _, text in distinct], config.shingle_size)
    signatures = minhash_signatures(shingled, config.num_perm, config.seed, progress)
    eligible = np.diff(shingled.offsets) > 0
    candidates = {
        (i, j) for i, j in lsh_candidates(signatures, config, eligible, progress) if distinct[i][0] == distinct[j][0]
    }
    sets = _ShingleSets(shingled)
    clusters = UnionFind(len(distinct))
    for i, j, _ in confirm_pairs(shingled, candidates, config.threshold, sets):
        clusters.union(i, j)

    def rank(row: int) -> tuple:
        return (-shingled.n_words(row_text[row]), source_rank[sources[row]], starts[row], item_ids[row])

    contained = containment_links(shingled, distinct, config, sets)
    for text, (container, _) in contained.items():
        clusters.union(text, container)

    members: dict[int, list[int]] = {}
    for row in range(n):
        members.setdefault(clusters.find(row_text[row]), []).append(row)

    rep_of = [0] * n
    jaccards = [1.0] * n
    containments = [1.0] * n
    kind_of = ["unique"] * n
    size_of = [1] * n
    reason_of = [""] * n
    for rows in members.values():
        ranked = sorted(rows, key=rank)
        rep = ranked[0]
        rep_text = row_text[rep]
        all_exact = all(row_text[row] == rep_text for row in rows)
        reason = _reason(ranked, rank, shingled.n_words(rep_text), source_rank[sources[rep]], starts[rep])
        for row in rows:
            rep_of[row] = rep
            size_of[row] = len(rows)
            reason_of[row] = reason
            if len(rows) == 1 or row == rep:
                continue
            if row_text[row] == rep_text:
                kind_of[row] = "exact"
            else:
                jaccards[row] = jaccard(sets[row_text[row]], sets[rep_text])
                containments[row] = containment(sets[row_text[row]], sets[rep_text])
                kind_of[row] = _kind(jaccards[row], containments[row], row_text[row] in contained, config)
        if len(rows) > 1:
            follower_kinds = {kind_of[row] for row in rows if row != rep}
            kind_of[rep] = "exact" if all_exact else "near" if "near" in follower_kinds else "contained"

    rep_ids = [item_ids[rep] for rep in rep_of]
    added = pl.DataFrame(
        {
            "dedup_cluster": rep_ids,
            "dedup_representative": rep_ids,
            "dedup_representative_source": [sources[rep] for rep in rep_of],
            "dedup_is_representative": [rep == row for row, rep in enumerate(rep_of)],
            "dedup_kind": kind_of,
            "dedup_jaccard": jaccards,
            "dedup_containment": containments,
            "dedup_cluster_size": size_of,
            "dedup_reason": reason_of,
            "dedup_agent": [config.agent_json()] * n,
        },
        schema=DEDUP_COLUMNS,
    )
    return pl.concat([frame, added], how="horizontal")


def _kind(similarity: float, share: float, linked_as_contained: bool, config: DedupConfig) -> str:
    """A member's kind (not the representative's, not an exact copy): by its own measures with the representative."""
    if similarity >= config.threshold:
        return "near"
    if config.containment > 0.0 and share >= config.containment:
        return "contained"
    return "contained" if linked_as_contained else "near"  # chained in: the kind of the link that brought it


def _reason(ranked: list[int], rank, n_words: int, source_position: int, start: int) -> str:
    """Which rule picked ranked[0] over the runner-up ranked[1]."""
    if len(ranked) == 1:
        return "only member: no exact or near duplicate found"
    first, second = rank(ranked[0]), rank(ranked[1])
    others = len(ranked) - 1
    if first[0] != second[0]:
        return f"most complete text: {n_words} words (normalised), the other {others} at most {-second[0]}"
    if first[1] != second[1]:
        return f"tied on length ({n_words} words); then earliest source (source #{source_position + 1} in ingest order)"
    if first[2] != second[2]:
        return f"tied on length ({n_words} words) and source; then earliest in the source (character {start})"
    return f"tied on length ({n_words} words), source and position; then smallest item_id"


def summarise(deduped: pl.DataFrame | Iterable[pl.DataFrame]) -> dict[str, int]:
    """Counts over a deduped table, whole or in parts: items, clusters, duplicate clusters, exact, near and
    contained dups, cross-source clusters."""
    return combine_counts([count_part(part) for part in ([deduped] if isinstance(deduped, pl.DataFrame) else deduped)])


def count_part(part: pl.DataFrame) -> tuple[dict[str, int], pl.DataFrame]:
    """One part's additive counts, and its rows in clusters of two or more (the clusters that can span sources)."""
    representatives = part.filter(pl.col("dedup_is_representative"))
    followers = part.filter(~pl.col("dedup_is_representative"))
    counts = {
        "n_items": part.height,
        "n_clusters": representatives.height,  # one representative per cluster
        "n_duplicate_clusters": representatives.filter(pl.col("dedup_cluster_size") > 1).height,
        "n_exact_duplicates": followers.filter(pl.col("dedup_kind") == "exact").height,
        "n_near_duplicates": followers.filter(pl.col("dedup_kind") == "near").height,
        "n_contained": followers.filter(pl.col("dedup_kind") == "contained").height,
    }
    return counts, part.filter(pl.col("dedup_cluster_size") > 1).select("dedup_cluster", "source_id")


def combine_counts(counted: Sequence[tuple[dict[str, int], pl.DataFrame]]) -> dict[str, int]:
    totals = {name: sum(counts[name] for counts, _ in counted) for name in (counted[0][0] if counted else {})}
    clustered = pl.concat([rows for _, rows in counted]) if counted else pl.DataFrame(
        schema={"dedup_cluster": pl.String, "source_id": pl.String})
    spanning = clustered.group_by("dedup_cluster").agg(pl.col("source_id").n_unique().alias("n"))
    empty = dict.fromkeys(("n_items", "n_clusters", "n_duplicate_clusters", "n_exact_duplicates",
                           "n_near_duplicates", "n_contained"), 0)
    return {**empty, **totals, "n_cross_source_clusters": spanning.filter(pl.col("n") > 1).height}


@dataclass(frozen=True)
class ComputedColumns:
    """Dedup's columns for every row, computed in memory: given out a part at a time, as the partitioned
    algorithm's are (`curation.partitioned_dedup.DedupColumns`)."""

    columns: pl.DataFrame

    def for_rows(self, offset: int, items: pl.DataFrame) -> pl.DataFrame:
        return self.columns.slice(offset, items.height)


def in_memory_columns(parts: Sequence[Any], config: DedupConfig, source_order: Sequence[str],
                      progress: bool | None = None) -> ComputedColumns:
    """`dedup` over every part at once: the quickest way for a workspace that fits in memory."""
    from curation.generations import read_parts

    deduped = dedup(read_parts(parts), config, source_order=source_order, progress=progress)
    return ComputedColumns(deduped.select(list(DEDUP_COLUMNS)))


def run_dedup(
    workspace: Any,
    config: DedupConfig | None = None,
    progress: bool | None = None,
    *,
    compute: Callable[[list[Any], DedupConfig, list[str]], Any] | None = None,
) -> DedupReport:
    """Dedup the workspace's items and commit the columns as a new generation (replacing any earlier run's).

    compute: what gives the columns, `compute(parts, config, source_order)`, an object whose
    `for_rows(offset, items)` gives a part's columns (default: `in_memory_columns`;
    `curation.distributed.run_dedup_distributed` passes the partitioned algorithm, which holds a
    partition at a time, for large workspaces and executors). The columns are committed part
    by part (`Workspace.map_items`) and the report is counted part by part.
    """
    config = config or DedupConfig()
    source_order = workspace.sources()["source_id"].to_list()
    started = time.perf_counter()
    computed: list[Any] = []
    counted: list[tuple[dict[str, int], pl.DataFrame]] = []

    def prepare(parts: list[Any]) -> None:
        if compute is None:
            computed.append(in_memory_columns(parts, config, source_order, progress))
        else:
            computed.append(compute(parts, config, source_order))

    def transform(items: pl.DataFrame, part: Any) -> pl.DataFrame:
        columns = computed[0].for_rows(part.offset, items)
        counted.append(count_part(pl.concat([items.select("source_id"), columns], how="horizontal")))
        return items.drop([name for name in DEDUP_COLUMNS if name in items.columns]).hstack(columns)

    generation = workspace.map_items(transform, prepare)
    return DedupReport(
        **combine_counts(counted), generation=generation, seconds=time.perf_counter() - started, config=config
    )
