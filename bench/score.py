"""Scoring throughput per engine and for the cascades, against today's torch float32 run, with each one's quality.

Run as: python bench/score.py [--limit N] [--passages N] [--sample N] [--chunks K] [--threads T] [BOOK ...]

Two corpora: the distinct non-silence answers of the Talks books (dialogue parser),
and a synthetic corpus of --passages (default 100,000) prose passages assembled from
the sentences of the real books as bench/scale.py makes its books (sentences
shuffled, ~15% of words swapped). Engines are timed on the Talks answers (--limit: the
first N) and on a random --sample of the passages (default 1,000: the torch baseline
scores ~20-40 passages/s per core, so all 100,000 would take an hour per engine).

Engines, each `ConceptScorer.score` end to end on a cold embedding store (hashing,
store, encode, store write, classifier), fitted beforehand (the one-time fit is printed):

- torch: today's path, SentenceTransformer float32: THE BASELINE of every ratio;
- torch raw encode: `model.encode` alone (the pipeline's overhead is the difference);
- onnx, onnx-int8, openvino-bf16, static: curation.embedding_backends, length-bucketed
  batches (ScoreConfig.batch_tokens); "onnx fixed batches": onnx with batch_tokens=0;
- cascade static->onnx and onnx-int8->onnx: curation.cascade, the band calibrated on
  the held-out exemplars and the corpus' calibration share (that time is included).

Per core: torch runs one thread, ONNX Runtime one intra-op thread (--threads). The
machine is shared, so the texts are cut into --chunks parts and every engine scores
each part in turn (the order rotating): a slow spell hits every engine alike.

Printed per engine and corpus: texts/s, the ratio to torch, the held-out AUC on the
exemplars (and its difference to torch's; goal within 0.005), and agreement with
torch's scores on the same texts: the largest difference and the share above 0.05
(for a cascade, over the texts its cheap engine decided: goal none above 0.05). Goal:
a ratio >= 5. Also the score distributions of the Talks answers (saved as
bench/out/score-distributions.png) and a full `run_score` on a fresh workspace,
cold and warm, with the default config.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.dialogue import parse_dialogue  # noqa: E402
from curation.score import (  # noqa: E402
    CONTEMPLATIVE,
    CONVERSATIONAL,
    ConceptScorer,
    EmbeddingStore,
    ScoreConfig,
    format_distributions,
    make_scorer,
    plot_score_distributions,
    run_score,
    summarise,
)
from curation.workspace import init_workspace  # noqa: E402

GOAL_RATIO = 5.0
GOAL_AUC_DELTA = 0.005
TOLERANCE = 0.05
BOOKS = ROOT.parent / "shared" / "data" / "books"
DEFAULT_BOOKS = ["talks-with-sri-ramana-maharshi.txt", "talks-with-sri-ramana-maharshi-vol2.txt"]
OUT = ROOT / "bench" / "out"
# (label, backend, cascade): the engines timed, the baseline first.
ENGINES = [
    ("torch", "torch", ""),
    ("onnx", "onnx", ""),
    ("onnx fixed batches", "onnx", ""),  # batch_tokens=0: what length-bucketed batching gains
    ("onnx-int8", "onnx-int8", ""),
    ("openvino-bf16", "openvino-bf16", ""),
    ("static", "static", ""),
    ("cascade static->onnx", "onnx", "static"),
    ("cascade onnx-int8->onnx", "onnx", "onnx-int8"),
]


def talks_answers(books: list[Path]) -> tuple[list[str], int]:
    """Distinct non-silence answers of the books, in book order, and the number of silences."""
    answers: dict[str, None] = {}
    silences = 0
    for book in books:
        for item in parse_dialogue(book.read_text(encoding="utf-8"), "0" * 64, title=book.stem).items:
            if item["is_silence"]:
                silences += 1
            elif item["answer"].strip():
                answers.setdefault(item["answer"], None)
    return list(answers), silences


def synthetic_passages(n: int, seed: int = 0) -> list[str]:
    """n prose passages made as bench/scale.py makes its books' paragraphs (3-9 edited sentences of the books)."""
    import scale  # bench/scale.py: its corpus maker

    scale._init_corpus(seed)
    rng = random.Random(seed)
    return [scale._paragraph(rng, 0.15) for _ in range(n)]


class Engine:
    """One engine, fitted, timed on chunks of a corpus: its scores, decisions and seconds accumulate."""

    def __init__(self, label: str, backend: str, cascade: str, threads: int, workdir: Path, raw_model: object = None):
        self.label, self.raw, self.workdir = label, raw_model is not None, workdir
        self.config = ScoreConfig(backend=backend, cascade=cascade, threads=threads, device="cpu",
                                  batch_tokens=0 if "fixed" in label else ScoreConfig().batch_tokens)
        self.scorer = make_scorer(self.config, models=[raw_model] if self.raw else [])
        for part in self._parts():
            part.embedder.store = EmbeddingStore(workdir / f"{label}-exemplars-{part.config.backend}.parquet")
        started = time.perf_counter()
        if not self.raw:
            self.scorer.fit()
        self.fit_s = time.perf_counter() - started
        # Held out once, on the exemplar store (run_score finds the exemplars stored too): a cascade keeps its parts'.
        self.holdout = None if self.raw else self.scorer.holdout()
        self.reset()

    def _parts(self) -> list[ConceptScorer]:
        return [self.scorer.cheap, self.scorer.full] if self.config.cascade else [self.scorer]

    def reset(self) -> None:
        self.seconds, self.scores, self.decided, self.n = 0.0, {}, {}, 0

    def prepare(self, texts: list[str], corpus: str) -> None:
        """Cold stores for this corpus; a cascade calibrates its band on it (timed: part of its cost)."""
        for part in self._parts():
            part.embedder.store = EmbeddingStore(self.workdir / f"{self.label}-{corpus}-{part.config.backend}.parquet")
        if self.config.cascade:
            started = time.perf_counter()
            self.scorer.calibrate(texts)
            self.seconds += time.perf_counter() - started
            self.holdout = self.scorer.holdout()  # with the band calibrated on this corpus

    def run(self, texts: list[str]) -> None:
        started = time.perf_counter()
        if self.raw:
            self.scorer.embedder.model.encode(texts, batch_size=self.config.batch_size, normalize_embeddings=True,
                                              convert_to_numpy=True, show_progress_bar=False)
            scores, decided = np.full(len(texts), np.nan), np.zeros(len(texts), np.int64)
        else:
            scores, decided = self.scorer.decide(texts)
        self.seconds += time.perf_counter() - started
        self.n += len(texts)
        self.scores.update(zip(texts, scores))
        self.decided.update(zip(texts, decided))


def time_corpus(name: str, texts: list[str], engines: list[Engine], chunks: int) -> np.ndarray:
    """Time every engine on `texts` and print the table; returns the baseline's scores of them."""
    print(f"\n== {name}: {len(texts):,} texts, {sum(map(len, texts)):,} characters ==")
    for engine in engines:
        engine.reset()
        engine.prepare(texts, name.split()[0].lower())
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    parts = [[texts[i] for i in part] for part in np.array_split(order, chunks)]
    for number, part in enumerate(parts):
        turn = engines[number % len(engines):] + engines[: number % len(engines)]
        for engine in turn:
            engine.run(part)
        print(f"  part {number + 1}/{chunks}: " + "  ".join(f"{e.label} {e.n / e.seconds:6.1f}/s" for e in engines),
              flush=True)
    base = engines[0]
    reference = np.array([base.scores[t] for t in texts])
    print(f"{'engine':<26} {'texts/s':>8} {'ratio':>6} {'AUC':>7} {'dAUC':>7} {'max|d|':>7} {'>0.05':>6}  decided by cheap")
    for engine in engines:
        rate = engine.n / engine.seconds
        ratio = base.seconds / engine.seconds
        scores = np.array([engine.scores[t] for t in texts])
        decided = np.array([engine.decided[t] for t in texts])
        if engine.raw:
            print(f"{engine.label:<26} {rate:8.1f} {ratio:6.2f}")
            continue
        judged = decided == 0 if engine.config.cascade else np.ones(len(texts), bool)
        diff = np.abs(scores - reference)[judged]
        worst = f"{diff.max():7.3f} {np.mean(diff > TOLERANCE):6.1%}" if len(diff) else f"{'-':>7} {'-':>6}"
        cheap = f"  {judged.mean():.1%} (band {engine.scorer.band.lo:.3f}-{engine.scorer.band.hi:.3f})" \
            if engine.config.cascade else ""
        auc_delta = engine.holdout.auc - base.holdout.auc
        # The goal: >= 5x, the AUC kept, and no score it decides off torch's by more than the tolerance.
        goal = "OK" if ratio >= GOAL_RATIO and abs(auc_delta) <= GOAL_AUC_DELTA and diff.max(initial=0) <= TOLERANCE else ""
        print(f"{engine.label:<26} {rate:8.1f} {ratio:6.2f} {engine.holdout.auc:7.4f} {auc_delta:+7.4f} {worst}{cheap} {goal}")
    return reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("books", nargs="*", type=Path)
    parser.add_argument("--limit", type=int, default=0, help="time the first N Talks answers (default: all)")
    parser.add_argument("--passages", type=int, default=100_000, help="synthetic passages to make")
    parser.add_argument("--sample", type=int, default=1000, help="of which a random sample is timed")
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (1: per core)")
    parser.add_argument("--engines", default="", help="comma-separated labels to time (default: all)")
    args = parser.parse_args()
    books = args.books or [BOOKS / name for name in DEFAULT_BOOKS]
    for book in books:
        if not book.exists():
            sys.exit(f"{book}: no such book")

    import torch

    torch.set_num_threads(args.threads)
    texts, silences = talks_answers(books)
    if args.limit:
        texts = texts[: args.limit]
    print(f"books: {', '.join(b.name for b in books)}: {len(texts)} distinct answers timed, {silences} silences"
          f" (not encoded); torch threads {torch.get_num_threads()}, ONNX Runtime threads {args.threads}")

    chosen = [e for e in ENGINES if not args.engines or e[0] in args.engines.split(",") or e[0] == "torch"]
    with tempfile.TemporaryDirectory() as tmp:
        engines = []
        for label, backend, cascade in chosen:
            engines.append(Engine(label, backend, cascade, args.threads, Path(tmp)))
            print(f"{label}: loaded, exported or distilled as needed, fitted on the exemplars in {engines[-1].fit_s:.1f} s",
                  flush=True)
        engines.insert(1, Engine("torch raw encode", "torch", "", args.threads, Path(tmp), engines[0].scorer.embedder.model))

        talks = time_corpus("Talks answers", texts, engines, args.chunks)
        passages = synthetic_passages(args.passages)
        sample = [passages[i] for i in sorted(random.Random(1).sample(range(len(passages)), min(args.sample, len(passages))))]
        print(f"\nmade {len(passages):,} synthetic passages ({sum(map(len, passages)) / 1e6:.0f} MB); timing a sample")
        time_corpus("Synthetic passages", sample, engines, args.chunks)

        holdout = engines[0].holdout
        groups = {
            "Talks answers (torch)": talks,
            "held-out contemplative exemplars": holdout.scores_of(CONTEMPLATIVE),
            "held-out conversational exemplars": holdout.scores_of(CONVERSATIONAL),
        }
        print("\n" + format_distributions({name: summarise(values) for name, values in groups.items()}))
        print(f"saved {plot_score_distributions(groups, OUT / 'score-distributions.png')}")

        workspace = init_workspace(Path(tmp) / "ws")
        workspace.ingest(books, "dialogue")
        config = ScoreConfig(threads=args.threads)
        for state in ("cold", "warm"):
            started = time.perf_counter()
            report = run_score(workspace, config)
            print(f"run_score (default config: backend {config.backend}, cascade {config.cascade or 'none'}), {state}"
                  f" store: {time.perf_counter() - started:6.2f} s for {report.n_items} items, {report.n_encoded}"
                  f" texts encoded, generation {report.generation}, decided by {report.decided_by}")


if __name__ == "__main__":
    main()
