"""The heavy stages, cut into units an executor can run anywhere: MinHash/LSH dedup and embedding.

Each stage has one entry point that takes an executor (`Workspace.ingest`,
`run_dedup_distributed`, `run_score_distributed`): no executor runs the stage in
this process, as `curation.dedup.run_dedup` and `curation.score.run_score` do;
`LocalExecutor` or `RayExecutor` runs the work cut into units, with the same
result (tests/test_ray.py compares them on the same input). Either way the commit
is the stage's own (`run_dedup`, `run_score`): only the computation differs.

Ingest needs nothing here: `Workspace.ingest` hands each file to its executor
(`curation.sources.parse_book`) and commits on the driver, under the lock.

Dedup: the algorithm is `curation.partitioned_dedup` (signatures, LSH bands, confirmation
and containment in partition files, so no process holds every signature); here is the
stage's entry, `run_dedup_distributed`, and its rule for when the items go through it.

Scoring (`ExecutorEmbedder`, `run_score_distributed`): texts are cut into the
batches the configured engine itself would form (`engine_batches`: ONNX's token-length
buckets, sentence-transformers' longest-first batches for torch) and each batch is encoded whole by a worker that loaded the model
once, so every embedding, and so every score, is identical to a local encode.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from curation.executors import Executor, LocalExecutor, WorkerPool, chunks
from curation.partitioned_dedup import DEFAULT_ROWS_PER_PARTITION, dedup_columns
from curation.score import Embedder

if TYPE_CHECKING:
    from curation.dedup import DedupConfig, DedupReport
    from curation.score import ScoreConfig, ScoreReport
    from curation.workspace import Workspace

# ---- dedup: the stage's entry ----------------------------------------------------------------


# Why: up to one part's worth of items, dedup in memory is quickest (no partition files); beyond, memory
# would grow with the corpus, so the items go through the partitioned algorithm a partition at a time.
IN_MEMORY_ROWS = 50_000


def run_dedup_distributed(
    workspace: Workspace,
    config: DedupConfig | None = None,
    executor: Executor | None = None,
    scratch_dir: str | os.PathLike[str] | None = None,
    rows_per_partition: int = DEFAULT_ROWS_PER_PARTITION,
    progress: Callable[[str], None] | None = None,
) -> DedupReport:
    """The dedup stage: `curation.dedup.run_dedup`, its columns computed in memory or by `dedup_columns`.

    No executor: in this process (`satsang dedup --executor local`): in memory up to
    IN_MEMORY_ROWS items, beyond that partitioned on a LocalExecutor, so memory follows the
    partition size. An executor (Ray): partitioned on it. The columns are the same either way.
    scratch_dir: where the partition files go (default `<workspace>/scratch/dedup-<id>`, on the
    workspace's storage, which a cluster's nodes share); removed when done.
    """
    from curation.dedup import in_memory_columns, run_dedup

    work = Path(scratch_dir) if scratch_dir is not None else workspace.root / "scratch" / f"dedup-{uuid.uuid4().hex[:12]}"

    def compute(parts: list[Any], config: DedupConfig, order: list[str]) -> Any:
        if executor is None and sum(part.rows for part in parts) <= IN_MEMORY_ROWS:
            return in_memory_columns(parts, config, order)
        return dedup_columns(parts, config, order, executor or LocalExecutor(), work, rows_per_partition, progress)

    try:
        return run_dedup(workspace, config, compute=compute)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if scratch_dir is None:
            try:
                work.parent.rmdir()  # only if no other run is using it
            except OSError:
                pass


# ---- scoring: embeddings encoded by workers that load the model once -------------------------


@dataclass(frozen=True)
class ModelLoader:
    """Builds a worker's state: the config's engine on its model (`ScoreConfig.backend`; each worker loads it once)."""

    config: ScoreConfig

    def __call__(self) -> Any:
        from curation.score import load_embedding_model

        return load_embedding_model(self.config)


def encode_batches(model: Any, batches: tuple[int, list[list[str]]]) -> list[np.ndarray]:
    """Encode each batch in its own call, as one forward pass: the batch the engine itself would form."""
    batch_size, texts = batches
    return [
        np.asarray(
            model.encode(batch, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                         show_progress_bar=False),
            dtype=np.float32,
        )
        for batch in texts
    ]


def sentence_transformer_batches(texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """The batches `SentenceTransformer.encode(texts, batch_size)` forms: indices, longest text first.

    Mirrors its sort (`np.argsort` of minus the character length, for str inputs); a
    batch's embeddings do not depend on which call encodes it, only on its members.
    """
    order = np.argsort([-len(text) for text in texts])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def engine_batches(config: ScoreConfig, texts: Sequence[str]) -> list[np.ndarray]:
    """The batches the config's engine forms when it encodes `texts` in one call (indices, in its order).

    ONNX engines: length-bucketed by token count (`curation.embedding_backends.onnx_batches`);
    torch and static: sentence-transformers' batches.
    """
    from curation.embedding_backends import TOKEN_BATCHED, onnx_batches, resolve_model

    if config.backend in TOKEN_BATCHED:
        return onnx_batches(resolve_model(config.model), texts, config.batch_size, config.batch_tokens)
    return sentence_transformer_batches(texts, config.batch_size)


class ExecutorEmbedder(Embedder):
    """An Embedder whose encoding runs on an executor's stateful workers, batch for batch as a local encode.

    Same store logic as Embedder (texts already stored cost nothing); only `encode`
    differs. Each worker loads the model once (`ModelLoader`); with a LocalExecutor
    and an already loaded `model`, that model is used in this process. `close()`
    releases the workers (Ray actors).
    """

    def __init__(
        self,
        config: ScoreConfig | None = None,
        store: Any = None,
        executor: Executor | None = None,
        batches_per_task: int = 4,
        workers: int | None = None,
        model: Any = None,
    ):
        super().__init__(config, store, model)
        self.executor = executor or LocalExecutor()
        self.batches_per_task = batches_per_task
        self.n_workers = workers
        self._pool: WorkerPool | None = None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        self.n_encoded += len(texts)
        if not texts:
            return np.zeros((0, 0), np.float32)
        batch_size = self.config.batch_size
        batches = engine_batches(self.config, texts)
        groups = chunks(batches, self.batches_per_task)
        work = [(batch_size, [[texts[i] for i in batch] for batch in group]) for group in groups]
        results = self._workers(len(groups)).map(encode_batches, work)
        out = np.empty((len(texts), results[0][0].shape[1]), dtype=np.float32)
        for group, arrays in zip(groups, results):
            for batch, vectors in zip(group, arrays):
                out[batch] = vectors
        return out

    def _workers(self, n_tasks: int) -> WorkerPool:
        if self._pool is None:
            if self._model is not None and isinstance(self.executor, LocalExecutor):
                loaded = self._model
                self._pool = self.executor.workers(lambda: loaded)
            else:
                n = self.n_workers or min(self.executor.parallelism, max(n_tasks, 1))
                self._pool = self.executor.workers(ModelLoader(self.config), n)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def run_score_distributed(
    workspace: Workspace,
    config: ScoreConfig | None = None,
    executor: Executor | None = None,
    learn: bool = False,
    *,
    decisions: pl.DataFrame | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScoreReport:
    """The score stage on `executor`: `curation.score.run_score`, the model's encoding done by its workers.

    The workers run the configured engine (`ScoreConfig.backend`) into that engine's store, so the
    scores and each item's `concept_agent` are what `run_score` gives. With a cascade, only the full
    engine is distributed; the cheap one runs here. No executor: `run_score` in this process.
    """
    from curation.score import EmbeddingStore, ScoreConfig, make_scorer, run_score

    if executor is None:
        return run_score(workspace, config, learn, decisions=decisions, progress=progress)
    config = config or ScoreConfig()
    scorer = make_scorer(config)
    store = EmbeddingStore.for_workspace(workspace.root, config.model, config.backend)
    embedder = ExecutorEmbedder(config, store, executor, workers=workers)
    scorer.full.embedder = embedder
    try:
        return run_score(workspace, config, learn, decisions=decisions, scorer=scorer, progress=progress)
    finally:
        embedder.close()
