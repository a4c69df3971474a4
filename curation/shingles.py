"""Word shingles and MinHash signatures, for dedup (curation.dedup) and its partitioned run (curation.distributed).

A text (already normalised, `schema.normalise`) is cut into words; its shingles are the runs
of `shingle_size` consecutive words, and a text shorter than that is one shingle of all its
words (padded).

Signatures are computed vectorised in numpy (word hashes once per vocabulary
word, shingle fingerprints as a polynomial over word hashes, all permutations of
a chunk of shingles in one array operation) with datasketch's own "affine32"
permutation parameters, so they are genuine datasketch MinHashes: the same
values as `MinHash(num_perm, seed, hashfunc=int)` updated one shingle at a time
with `shingle_hashes(...)`; about 17x the throughput of one `update` per shingle
(bench/dedup.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_POLY = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplication by it is a bijection mod 2^64
_PAD = "\x00pad"  # fills a text shorter than shingle_size up to one shingle; normalised words never hold \x00


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _fmix32(h: np.ndarray) -> np.ndarray:
    # datasketch's pre-mix for the affine32 scheme (MurmurHash3's finalizer), bit for bit.
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def word_hash(word: str) -> int:
    """A word's 64-bit hash (blake2b): what dedup's shingles and trace's windows are made of."""
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


def window_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """A polynomial hash (mod 2^64) of every n-long window of uint64 `hashes`: result[i] covers hashes[i:i+n]."""
    count = max(len(hashes) - n + 1, 0)
    window = hashes[:count].copy()
    with np.errstate(over="ignore"):
        for j in range(1, n):
            window = window * _POLY + hashes[j : j + count]
    return window


@dataclass
class ShingledTexts:
    """Texts as word ids, and every text's shingle fingerprints back to back.

    Text i's shingles are `fingerprints[offsets[i]:offsets[i + 1]]`; a text with no
    words has none. Fingerprints are 64-bit hashes, used only for signatures; the
    exact shingle sets come from the word ids (`shingle_set`).
    """

    words: list[list[int]]  # word ids per text (0 is the pad)
    fingerprints: np.ndarray  # uint64
    offsets: np.ndarray  # int64, len(words) + 1
    shingle_size: int

    def __len__(self) -> int:
        return len(self.words)

    def n_words(self, i: int) -> int:
        return len(self.words[i])

    def shingle_set(self, i: int) -> set[tuple[int, ...]]:
        ids, k = self.words[i], self.shingle_size
        if len(ids) <= k:
            return {tuple(ids)} if ids else set()
        return set(zip(*(ids[j : len(ids) - k + 1 + j] for j in range(k))))


def shingle_texts(texts: Sequence[str], shingle_size: int) -> ShingledTexts:
    """Cut already-normalised texts into word shingles (see the module docstring)."""
    k = shingle_size
    vocabulary: dict[str, int] = {_PAD: 0}
    words: list[list[int]] = []
    flat: list[int] = []
    lengths = np.zeros(len(texts), dtype=np.int64)  # padded lengths
    for i, text in enumerate(texts):
        ids = [vocabulary.setdefault(w, len(vocabulary)) for w in text.split()]
        words.append(ids)
        flat.extend(ids)
        if 0 < len(ids) < k:
            flat.extend([0] * (k - len(ids)))
        lengths[i] = max(len(ids), k) if ids else 0
    word_hashes = np.fromiter((word_hash(w) for w in vocabulary), dtype=np.uint64, count=len(vocabulary))
    hashed = word_hashes[np.asarray(flat, dtype=np.int64)]

    # Polynomial hash of every window of k words in the flat array, then keep the
    # windows that lie inside one text.
    window = _fmix64(window_hashes(hashed, k))
    counts = np.maximum(lengths - k + 1, 0)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    starts = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], counts)
    positions = np.repeat(starts, counts) + within
    return ShingledTexts(words, window[positions], offsets, k)


def shingle_hashes(shingled: ShingledTexts, i: int) -> list[int]:
    """Text i's 32-bit shingle hashes: what its MinHash is built from (datasketch's hashfunc=int)."""
    return [int(h) for h in shingled.fingerprints[shingled.offsets[i] : shingled.offsets[i + 1]] >> np.uint64(32)]


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a, b) for this num_perm and seed."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def minhash_signatures(
    shingled: ShingledTexts, num_perm: int, seed: int, progress: bool = False, chunk_shingles: int = 1024
) -> np.ndarray:
    """One MinHash signature (uint32[num_perm]) per text; all-max (empty) for a text without words."""
    a, b = permutations(num_perm, seed)
    n = len(shingled)
    out = np.full((n, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    hashed = _fmix32((shingled.fingerprints >> np.uint64(32)).astype(np.uint32))
    offsets = shingled.offsets
    bar = progress_bar(progress, total=n, desc="dedup: signatures", unit="text")
    first = 0
    while first < n:
        # A chunk of whole texts holding about chunk_shingles shingles (at least one text).
        last = int(np.searchsorted(offsets, offsets[first] + chunk_shingles, side="right")) - 1
        last = min(max(last, first + 1), n)
        lo, hi = int(offsets[first]), int(offsets[last])
        counts = np.diff(offsets[first : last + 1])
        nonempty = np.nonzero(counts)[0]
        if hi > lo:
            permuted = hashed[lo:hi, None] * a[None, :] + b[None, :]  # uint32: wraps, i.e. mod 2^32
            out[first + nonempty] = np.minimum.reduceat(permuted, (offsets[first:last] - lo)[nonempty], axis=0)
        bar.update(last - first)
        first = last
    bar.close()
    return out


def naive_signatures(texts: Sequence[str], shingle_size: int, num_perm: int, seed: int) -> list[Any]:
    """The slow baseline: datasketch's default MinHash, one `update` per shingle string (for the bench)."""
    from datasketch import MinHash

    k = shingle_size
    signatures = []
    for text in texts:
        words = text.split()
        minhash = MinHash(num_perm=num_perm, seed=seed)
        for j in range(max(len(words) - k + 1, 1) if words else 0):
            minhash.update(" ".join(words[j : j + k]).encode("utf-8"))
        signatures.append(minhash)
    return signatures


def progress_bar(enabled: bool, **kwargs):
    """A tqdm bar for a long dedup step, drawn only when `enabled` (see `dedup`'s `progress`)."""
    from tqdm.auto import tqdm

    return tqdm(disable=not enabled, leave=False, **kwargs)
