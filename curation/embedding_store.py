"""Embeddings on disk: one Parquet table per model and engine in `<workspace>/embeddings/`, keyed by text.

Keyed by the sha256 of the exact text embedded, so re-scoring unchanged items encodes
nothing, and other tools (similarity search in the dashboard, semantic near-duplicates)
reuse them. Each engine of a model (`curation.embedding_backends`) has its own table:
their embeddings differ in the last digits (ONNX float32) or more (int8, static), and a
table mixing them would make scores depend on which engine first saw a text.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from curation.embedding_backends import PACKAGED_MODEL, TORCH
from curation.errors import CurationError
from curation.files import atomic_replace, exclusive_lock

EMBEDDINGS_DIR = "embeddings"


class ScoreError(CurationError):
    """Scoring cannot run as asked (no exemplars, nothing to learn from, an unusable store)."""


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def model_key(name: str) -> str:
    """A file-name-safe key naming the model's embedding store; different models never share one."""
    if name == PACKAGED_MODEL:
        return PACKAGED_MODEL
    path = Path(name).expanduser()
    if path.exists():
        # Two local models may share a directory name: the hash of the full path tells them apart.
        resolved = str(path.resolve())
        return f"{_UNSAFE.sub('-', path.resolve().name)}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"
    return _UNSAFE.sub("-", name.replace("/", "--"))


def store_key(model: str, backend: str = TORCH) -> str:
    """The embedding store's name for a model run by a backend: `model_key`, plus `.<backend>` unless torch."""
    return model_key(model) if backend == TORCH else f"{model_key(model)}.{backend}"


def text_key(text: str) -> str:
    """The embedding store's key for a text: sha256 of its exact UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()



# ---- the embedding store ------------------------------------------------------------------


class EmbeddingStore:
    """One model's embeddings on disk: a Parquet table (key: sha256 of the text, embedding: float32 array).

    Loaded whole into memory (1,700 answers of 384 floats are 2.6 MB). `add` keeps new
    rows in memory; `save` merges them into whatever is on disk under a file lock (so two
    scorers adding at once lose nothing) and replaces the file atomically (temp + rename),
    so a reader never sees half a table.
    """

    # How long a save waits for another scorer's save before giving up with an error.
    lock_timeout_s: float = 120.0

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._chunks: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None
        self._unsaved = 0
        if self.path.exists():
            self._load(pl.read_parquet(self.path))

    @classmethod
    def for_workspace(cls, root: str | os.PathLike[str], model: str, backend: str = TORCH) -> EmbeddingStore:
        """The workspace's store for `model` run by `backend` (engines' embeddings differ slightly: never mixed)."""
        return cls(Path(root) / EMBEDDINGS_DIR / f"{store_key(model, backend)}.parquet")

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    @property
    def dim(self) -> int | None:
        return self.matrix.shape[1] if len(self) else None

    @property
    def matrix(self) -> np.ndarray:
        if self._matrix is None or self._matrix.shape[0] != len(self._keys):
            self._matrix = np.concatenate(self._chunks) if self._chunks else np.zeros((0, 0), np.float32)
            self._chunks = [self._matrix]
        return self._matrix

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """The embeddings of `keys`, in order; KeyError for a key not stored."""
        return self.matrix[[self._index[key] for key in keys]]

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys but embeddings of shape {vectors.shape}")
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise ScoreError(f"{self.path}: holds {self.dim}-d embeddings, not {vectors.shape[1]}-d")
        fresh = [i for i, key in enumerate(keys) if key not in self._index]
        for i in fresh:
            self._index[keys[i]] = len(self._keys)
            self._keys.append(keys[i])
        if fresh:
            self._chunks.append(vectors[fresh])
            self._unsaved += len(fresh)

    def save(self) -> None:
        """Write what was added since the last save; nothing when nothing was."""
        if not self._unsaved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        busy = f"{self.path}: another process is saving embeddings here"
        with exclusive_lock(self.path.parent / ".lock", self.lock_timeout_s, busy, error=ScoreError):
            if self.path.exists():  # another process may have saved since we loaded
                ours_keys, ours = list(self._keys), self.matrix
                self._reset()
                self._load(pl.read_parquet(self.path))
                self.add(ours_keys, ours)
                if not self._unsaved:  # all of ours were saved by the other process
                    return
            atomic_replace(self.path, self._frame().write_parquet)
            self._unsaved = 0

    def _frame(self) -> pl.DataFrame:
        matrix = self.matrix
        return pl.DataFrame(
            {
                "key": pl.Series("key", self._keys, dtype=pl.String),
                "embedding": pl.Series("embedding", matrix, dtype=pl.Array(pl.Float32, matrix.shape[1])),
            }
        )

    def _load(self, frame: pl.DataFrame) -> None:
        if frame.height:
            self.add(frame["key"].to_list(), frame["embedding"].to_numpy())
        self._unsaved = 0

    def _reset(self) -> None:
        self._keys, self._index, self._chunks, self._matrix, self._unsaved = [], {}, [], None, 0
