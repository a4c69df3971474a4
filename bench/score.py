"""Throughput of the scoring stage against the raw model, and the concept's quality on the Talks.

Run as: python bench/score.py [--repeats N] [--device cpu|cuda] [BOOK ...]

Baseline: raw `model.encode` of the same model on the same texts (the distinct
non-silence answers of the Talks books, via the dialogue parser) with the same
batch size. The pipeline is `ConceptScorer.score` end to end on a cold embedding
store: hashing, store lookup, encode, store write (Parquet, fsync, rename) and
the classifier. The classifier is fitted before timing (a one-time cost per run,
printed separately). Goal: pipeline throughput >= 0.9 of raw. Raw and pipeline
runs alternate, and the medians are compared.

Also prints the held-out AUC of the concept on the exemplars (goal >= 0.95), the
score distributions of the Talks answers vs the held-out exemplars of each label,
the answers at both ends, a full `run_score` on a fresh workspace cold and again
warm, and saves the distributions as bench/out/score-distributions.png.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from curation.dialogue import parse_dialogue
from curation.score import (
    CONTEMPLATIVE,
    CONVERSATIONAL,
    ConceptScorer,
    EmbeddingStore,
    ScoreConfig,
    format_distributions,
    plot_score_distributions,
    resolve_model,
    run_score,
    summarise,
)
from curation.workspace import init_workspace

GOAL_RATIO = 0.9
GOAL_AUC = 0.95
BOOKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "books"
DEFAULT_BOOKS = ["talks-with-sri-ramana-maharshi.txt", "talks-with-sri-ramana-maharshi-vol2.txt"]
OUT = Path(__file__).resolve().parent / "out"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("books", nargs="*", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="torch device (default: sentence-transformers chooses)")
    args = parser.parse_args()
    books = args.books or [BOOKS / name for name in DEFAULT_BOOKS]
    for book in books:
        if not book.exists():
            sys.exit(f"{book}: no such book")

    import torch
    from sentence_transformers import SentenceTransformer

    config = ScoreConfig(device=args.device)
    texts, silences = talks_answers(books)
    model = SentenceTransformer(resolve_model(config.model), device=config.device)
    print(f"model {config.model} on {model.device}, torch threads {torch.get_num_threads()}, batch {config.batch_size}")
    print(f"books: {', '.join(b.name for b in books)}: {len(texts)} distinct answers"
          f" ({sum(map(len, texts)):,} characters), {silences} silences (not encoded)")

    with tempfile.TemporaryDirectory() as tmp:
        exemplar_store = EmbeddingStore(Path(tmp) / "exemplars.parquet")
        t0 = time.perf_counter()
        scorer = ConceptScorer(config, store=exemplar_store, model=model).fit()
        fit_s = time.perf_counter() - t0
        holdout = scorer.holdout()
        model.encode(texts[:64], batch_size=config.batch_size)  # warm-up: first-call allocations

        raw_times, pipe_times = [], []
        for repeat in range(args.repeats):
            t0 = time.perf_counter()
            model.encode(texts, batch_size=config.batch_size, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False)
            raw_times.append(time.perf_counter() - t0)

            scorer.embedder.store = EmbeddingStore(Path(tmp) / f"cold-{repeat}.parquet")  # cold cache
            t0 = time.perf_counter()
            scores = scorer.score(texts)
            pipe_times.append(time.perf_counter() - t0)
            assert scorer.embedder.store.path.exists()
            print(f"  repeat {repeat + 1}: raw {raw_times[-1]:6.2f} s   pipeline {pipe_times[-1]:6.2f} s")

        raw_s, pipe_s = statistics.median(raw_times), statistics.median(pipe_times)
        ratio = raw_s / pipe_s
        print(f"raw encode:  {raw_s:6.2f} s  {len(texts) / raw_s:7.1f} texts/s  (median of {args.repeats})")
        print(f"pipeline:    {pipe_s:6.2f} s  {len(texts) / pipe_s:7.1f} texts/s")
        print(f"throughput ratio pipeline/raw: {ratio:.3f}  (goal >= {GOAL_RATIO}) {'OK' if ratio >= GOAL_RATIO else 'BELOW GOAL'}")
        print(f"one-time fit on {len(scorer.exemplars)} exemplars (cold, encode included): {fit_s:.2f} s")

        print(f"\nheld-out AUC on {len(holdout.labels)} of the exemplars: {holdout.auc:.4f}"
              f"  (goal >= {GOAL_AUC}) {'OK' if holdout.auc >= GOAL_AUC else 'BELOW GOAL'}")
        groups = {
            "Talks answers": scores,
            "held-out contemplative exemplars": holdout.scores_of(CONTEMPLATIVE),
            "held-out conversational exemplars": holdout.scores_of(CONVERSATIONAL),
        }
        print(format_distributions({name: summarise(values) for name, values in groups.items()}))
        conversational = holdout.scores_of(CONVERSATIONAL)
        for threshold in (0.5, float(np.quantile(conversational, 0.95))):
            print(f"  Talks answers scoring below {threshold:.3f}: {(scores < threshold).mean():.1%}"
                  f"   conversational exemplars above it: {(conversational >= threshold).mean():.1%}")
        order = np.argsort(scores)
        for label, rows in (("lowest", order[:6]), ("highest", order[-4:])):
            print(f"Talks answers, {label}:")
            for i in rows:
                text = " ".join(texts[i].split())
                print(f"  {scores[i]:.3f}  {text[:110]}{'...' if len(text) > 110 else ''}")
        png = plot_score_distributions(groups, OUT / "score-distributions.png")
        print(f"saved {png}")

        workspace = init_workspace(Path(tmp) / "ws")
        workspace.ingest(books, "dialogue")
        for state in ("cold", "warm"):
            counting = _Counting(model)
            t0 = time.perf_counter()
            report = run_score(workspace, config, scorer=ConceptScorer(config, model=counting))
            print(f"run_score, {state} store: {time.perf_counter() - t0:6.2f} s for {report.n_items} items,"
                  f" {counting.texts} texts encoded, generation {report.generation}")


class _Counting:
    """The real model, counting the texts sent to it."""

    def __init__(self, model):
        self.model, self.texts = model, 0

    def encode(self, texts, **kwargs):
        self.texts += len(texts)
        return self.model.encode(texts, **kwargs)


if __name__ == "__main__":
    main()
