"""Scoring: how contemplative an answer reads, as a concept learnt from labelled exemplars.

The concept is "contemplative vs conversational": a contemplative answer points
back at the questioner, questions the question, is brief and at ease with not
knowing; a conversational one advises, lists, reassures and closes ("Here are 5
tips... I hope this helps!"). It is defined by examples, not by rules: the
exemplars in `curation/data/concept_exemplars.jsonl` (hand-written for this
project, a few hundred of each label in many styles and lengths) are embedded
with a sentence-transformers model and a logistic regression is fitted on the
embeddings. `concept_score` is its probability of "contemplative", in [0, 1].

What is scored: a pair's *answer* only (the question's topic would otherwise
pull the score; the concept is about the manner of answering), a passage's text.

Silence: an answer of silence ("(No answer.)") is defined as maximally
contemplative, `concept_score = 1.0` with `concept_basis = "silence"`, rather
than left null. Silence is the limit of the concept (brief, pointing, no
closure) and the inference loop can answer with it, so a filter on the score
must keep such pairs; the basis column says the value was defined, not measured,
so analyses can leave them out (the report's distributions do).

Engines: the model runs on OpenVINO in bfloat16 by default (`ScoreConfig.backend`; torch,
ONNX Runtime float32 and int8, and a static model2vec table are the others: `curation.embedding_backends`),
optionally behind a cheap first stage (`ScoreConfig.cascade`: `curation.cascade`).

Embeddings are kept per model and engine in `<workspace>/embeddings/<store-key>.parquet`
(`curation.embedding_store`), keyed by the sha256 of the exact text embedded, so
re-scoring unchanged items encodes nothing, and other tools (similarity search in the
dashboard, semantic near-duplicates) reuse them; see `EmbeddingStore` and `nearest`.

Heavy libraries (torch, sentence-transformers, scikit-learn, matplotlib) are
imported inside the functions that need them, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

# Callers import PACKAGED_MODEL, resolve_model, EmbeddingStore, ScoreError, model_key, text_key from here.
from curation.embedding_backends import (
    BACKENDS,
    OPENVINO_BF16,
    PACKAGED_MODEL,
    STATIC,
    BackendError,
    load_encoder,
    resolve_model,
)
from curation.embedding_store import EMBEDDINGS_DIR, EmbeddingStore, ScoreError, model_key, store_key, text_key
from curation.schema import STAGE_COLUMNS

if TYPE_CHECKING:
    from curation.cascade import CascadeScorer
    from curation.workspace import Workspace

MODEL_ENV = "SATSANG_EMBEDDING_MODEL"
EXEMPLARS_PATH = Path(__file__).resolve().parent / "data" / "concept_exemplars.jsonl"

CONTEMPLATIVE, CONVERSATIONAL = "contemplative", "conversational"
LABELS: tuple[str, ...] = (CONTEMPLATIVE, CONVERSATIONAL)

SILENCE_SCORE = 1.0
# concept_basis values: what the score was computed from, or why it is what it is.
BASIS_ANSWER, BASIS_PASSAGE, BASIS_SILENCE, BASIS_EMPTY = "answer", "passage", "silence", "empty"
SCORE_COLUMNS: tuple[str, ...] = tuple(STAGE_COLUMNS["score"])  # their types: curation/schema.py

# A rejection teaches the concept only when its reason is about the manner of the answer
# ("not contemplative" in the review stage's list); a pair rejected as a parse error or a
# duplicate says nothing about contemplative style. Matched as lower-case substrings.
STYLE_REJECT_WORDS: tuple[str, ...] = (
    "not contemplative", "conversational", "advice", "prescriptive", "tips", "lecturing", "reassurance", "chatty",
)

QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)


def _default_model() -> str:
    return os.environ.get(MODEL_ENV) or PACKAGED_MODEL


@dataclass(frozen=True)
class ScoreConfig:
    """How the concept score is computed. Recorded, as JSON, in every item's `concept_agent`."""

    # The help texts are what a CLI built over this config shows.
    model: str = field(
        default_factory=_default_model,
        metadata={"help": f"Sentence-transformers model: {PACKAGED_MODEL!r} (the copy shipped in that package,"
                          f" offline), a local directory, or a Hugging Face id. Default: ${MODEL_ENV}, else"
                          f" {PACKAGED_MODEL!r}."},
    )
    batch_size: int = field(default=64, metadata={"help": "Texts per forward pass of the model (at most)."})
    batch_tokens: int = field(
        default=512,
        metadata={"help": "ONNX and OpenVINO engines: length-bucketed batches of at most this many padded tokens"
                          " (long texts in small batches, short in large; ~2x faster per core than fixed batches)."
                          " 0: fixed batches of batch_size."},
    )
    classifier_c: float = field(
        default=10.0,
        metadata={"help": "Inverse regularisation of the logistic regression (larger: fits the exemplars closer)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the classifier and of the held-out split."})
    holdout_fraction: float = field(
        default=0.25, metadata={"help": "Share of the exemplars held out to measure the concept's AUC."}
    )
    device: str | None = field(
        default=None, metadata={"help": "Torch device for the model (cpu, cuda; the torch backend only). Default:"
                                        " sentence-transformers chooses."}
    )
    backend: str = field(
        default=OPENVINO_BF16,
        metadata={"help": f"Engine running the model: {', '.join(BACKENDS)}. openvino-bf16: OpenVINO in bfloat16"
                          " (float32 on CPUs without bf16), scores within ~0.01 of torch's at ~5-7x the speed per"
                          " core; onnx: ONNX Runtime float32, the same scores as torch at ~3-4x; onnx-int8: int8"
                          " weights, ~6x, scores within ~0.25 (AUC kept); static: a model2vec table distilled from"
                          " the model (fastest, least exact); torch: sentence-transformers itself. Exported or"
                          " distilled locally once, into $SATSANG_MODEL_CACHE."},
    )
    threads: int | None = field(
        default=None, metadata={"help": "Threads of the ONNX and OpenVINO engines (1: per-core figures). Default:"
                                        " the runtime's."}
    )
    cascade: str = field(
        default="",
        metadata={"help": f"A cheaper engine ({STATIC} or onnx-int8) that scores every text first; the backend"
                          " re-scores only texts whose cheap score lies in the uncertain band. Empty: no cascade."},
    )
    cascade_tolerance: float = field(
        default=0.05,
        metadata={"help": "Cascade: the most a cheap score may differ from the backend's where the cheap one decides;"
                          " the band is set so that calibration texts stay within half of it."},
    )
    cascade_calibration: float = field(
        default=0.05,
        metadata={"help": "Cascade: share of the items' texts (chosen by text hash) that both engines score to set"
                          " the band, besides the held-out exemplars."},
    )

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ScoreError(f"backend {self.backend!r}: one of {', '.join(BACKENDS)}")
        if self.cascade and (self.cascade not in BACKENDS or self.cascade == self.backend):
            raise ScoreError(f"cascade {self.cascade!r}: another engine than the backend, one of {', '.join(BACKENDS)}")
        if not 0.0 < self.cascade_tolerance < 1.0 or not 0.0 <= self.cascade_calibration <= 1.0:
            raise ScoreError("cascade_tolerance must lie in (0, 1) and cascade_calibration in [0, 1]")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def load_embedding_model(config: ScoreConfig) -> Any:
    """The config's engine on its resolved model; a ScoreError naming the model when it cannot be loaded."""
    resolved = resolve_model(config.model)
    if str(config.model).startswith(("/", "./", "../", "~")) and not Path(resolved).expanduser().exists():
        raise ScoreError(f"{config.model}: no such model directory")
    try:
        return load_encoder(resolved, config.backend, config.device, config.threads, config.batch_tokens)
    except BackendError:
        raise
    except (OSError, ValueError) as error:
        raise ScoreError(f"model {config.model!r} cannot be loaded: {' '.join(str(error).split())[:200]}") from None


# ---- exemplars ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Exemplars:
    """The labelled texts that define the concept, and the sha256 of the file they came from."""

    texts: tuple[str, ...]
    labels: tuple[str, ...]
    styles: tuple[str, ...]
    sha256: str
    path: str

    def __len__(self) -> int:
        return len(self.texts)

    def y(self) -> np.ndarray:
        return np.array([label == CONTEMPLATIVE for label in self.labels], dtype=np.int64)


def load_exemplars(path: str | os.PathLike[str] = EXEMPLARS_PATH) -> Exemplars:
    """Read the exemplar file (JSON lines: text, label, style, prompt), checking every line."""
    path = Path(path)
    data = path.read_bytes()
    texts, labels, styles = [], [], []
    for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text, label = row["text"], row["label"]
        except (ValueError, KeyError, TypeError) as error:
            raise ScoreError(f"{path}:{number}: not an exemplar ({error})") from None
        if label not in LABELS or not isinstance(text, str) or not text.strip():
            raise ScoreError(f"{path}:{number}: label must be one of {LABELS} and text non-empty")
        texts.append(text)
        labels.append(label)
        styles.append(str(row.get("style", "")))
    if set(labels) != set(LABELS):
        raise ScoreError(f"{path}: needs exemplars of both labels {LABELS}")
    return Exemplars(tuple(texts), tuple(labels), tuple(styles), hashlib.sha256(data).hexdigest(), str(path))


# ---- embedding ----------------------------------------------------------------------------


class Embedder:
    """Texts to unit-length embeddings with one model, through an optional on-disk store.

    `model` may be given already loaded (anything with SentenceTransformer's `encode`);
    otherwise `config.model` is loaded on first use, run by `config.backend`
    (`curation.embedding_backends.load_encoder`). `n_encoded` counts the
    texts actually sent to the model, so a caller can see what the store saved it.
    """

    def __init__(self, config: ScoreConfig | None = None, store: EmbeddingStore | None = None, model: Any = None):
        self.config = config or ScoreConfig()
        self.store = store
        self._model = model
        self.n_encoded = 0

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_embedding_model(self.config)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Straight to the model, no store: normalised float32 embeddings."""
        self.n_encoded += len(texts)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed(self, texts: Sequence[str], save: bool = True) -> np.ndarray:
        """Embeddings of `texts` in order. Texts already stored cost nothing; the rest are encoded in one call."""
        keys = [text_key(text) for text in texts]
        store = self.store
        known = set() if store is None else {key for key in keys if key in store}
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts):
            if key not in known and key not in missing:
                missing[key] = text
        fresh = self.encode(list(missing.values())) if missing else None
        if store is None:
            by_key = dict(zip(missing, fresh)) if fresh is not None else {}
            return np.stack([by_key[key] for key in keys]) if keys else np.zeros((0, 0), np.float32)
        if fresh is not None:
            store.add(list(missing), fresh)
            if save:
                store.save()
        return store.get(keys) if keys else np.zeros((0, store.dim or 0), np.float32)


# ---- the concept --------------------------------------------------------------------------


@dataclass(frozen=True)
class Holdout:
    """The concept measured on exemplars it was not fitted on."""

    auc: float
    labels: tuple[str, ...]
    scores: tuple[float, ...]

    @classmethod
    def of(cls, labels: Sequence[str], scores: Sequence[float]) -> Holdout:
        """The AUC of `scores` (P(contemplative)) against the exemplars' labels."""
        from sklearn.metrics import roc_auc_score

        auc = roc_auc_score([label == CONTEMPLATIVE for label in labels], scores)
        return cls(float(auc), tuple(labels), tuple(float(s) for s in scores))

    def scores_of(self, label: str) -> np.ndarray:
        return np.array([s for s, l in zip(self.scores, self.labels) if l == label])


class ConceptScorer:
    """The contemplative-vs-conversational concept: logistic regression over sentence embeddings.

    Construct with a config (and, to reuse them, a store and a loaded model), then
    `score(texts)`. `fit()` trains on the shipped exemplars; `fit(extra_texts,
    extra_labels)` adds curators' labelled texts to them (`satsang score --learn`).
    `score` fits on the exemplars alone if `fit` was not called.
    """

    def __init__(
        self,
        config: ScoreConfig | None = None,
        store: EmbeddingStore | None = None,
        model: Any = None,
        exemplars: Exemplars | None = None,
    ):
        self.config = config or ScoreConfig()
        self.embedder = Embedder(self.config, store, model)
        self.exemplars = exemplars if exemplars is not None else load_exemplars()
        self.classifier: Any = None
        self.n_extra = 0
        self._extra: tuple[list[str], list[str]] = ([], [])

    def fit(self, extra_texts: Sequence[str] = (), extra_labels: Sequence[str] = ()) -> ConceptScorer:
        if len(extra_texts) != len(extra_labels):
            raise ValueError(f"{len(extra_texts)} extra texts but {len(extra_labels)} labels")
        bad = sorted(set(extra_labels) - set(LABELS))
        if bad:
            raise ValueError(f"labels must be among {LABELS}, not {bad}")
        self._extra = (list(extra_texts), list(extra_labels))
        embeddings, y = self._training_set(np.arange(len(self.exemplars)))
        self.classifier = self._new_classifier().fit(embeddings, y)
        self.n_extra = len(extra_texts)
        return self

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """P(contemplative) for each text, in [0, 1]."""
        if not len(texts):
            return np.zeros(0)
        return self.score_embeddings(self.embedder.embed(texts))

    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """The classifier's P(contemplative), computed row by row.

        Not predict_proba: its matrix product rounds a row's last bits differently with the
        number of rows beside it, and items are scored a part at a time, so a re-run over
        parts cut otherwise would "change" scores that did not (and commit a generation for it).
        """
        if self.classifier is None:
            self.fit()
        weights = self.classifier.coef_[0]
        logits = (np.asarray(embeddings, dtype=np.float64) * weights).sum(axis=1) + self.classifier.intercept_[0]
        return 1.0 / (1.0 + np.exp(-logits))

    def holdout(self) -> Holdout:
        """AUC on a stratified held-out split of the exemplars, the model fitted on the rest (plus any extras)."""
        from sklearn.model_selection import train_test_split

        y = self.exemplars.y()
        train, test = train_test_split(
            np.arange(len(y)), test_size=self.config.holdout_fraction, stratify=y, random_state=self.config.seed
        )
        embeddings, y_train = self._training_set(train)
        classifier = self._new_classifier().fit(embeddings, y_train)
        scores = classifier.predict_proba(self.embedder.embed([self.exemplars.texts[i] for i in test]))[:, 1]
        return Holdout.of([self.exemplars.labels[i] for i in test], scores)

    # The interface run_score drives, shared with curation.cascade.CascadeScorer.

    @property
    def full(self) -> ConceptScorer:
        """The scorer running the configured backend: this one (a cascade's is its second stage)."""
        return self

    @property
    def n_encoded(self) -> int:
        return self.embedder.n_encoded

    def use_workspace(self, root: str | os.PathLike[str]) -> None:
        """Keep embeddings in the workspace's store for this model and engine, unless a store was given."""
        if self.embedder.store is None:
            self.embedder.store = EmbeddingStore.for_workspace(root, self.config.model, self.config.backend)

    def calibrate(self, texts: Sequence[str]) -> None:
        """Nothing to calibrate: one engine decides every score."""

    def decide(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(scores, decided_by): every score decided by this scorer (index 0 of `agents()`)."""
        return self.score(texts), np.zeros(len(texts), dtype=np.int64)

    def agents(self) -> list[dict[str, Any]]:
        return [self.agent()]

    def agent(self) -> dict[str, Any]:
        """Who made the scores: recorded with every item scored."""
        return {
            "agent": "concept",
            "model": self.config.model,
            "model_key": store_key(self.config.model, self.config.backend),
            "backend": self.config.backend,
            "classifier": "sklearn.linear_model.LogisticRegression(class_weight=balanced)",
            "exemplars_sha256": self.exemplars.sha256,
            "n_exemplars": len(self.exemplars),
            "n_curator_examples": self.n_extra,
            "config": json.loads(self.config.to_json()),
            # What OpenVINO ran: bfloat16, or float32 on a CPU without it (the same store; the stamp tells).
            **({"precision": getattr(self.embedder.model, "precision", None)} if self.config.backend == OPENVINO_BF16 else {}),
        }

    def _training_set(self, exemplar_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        extra_texts, extra_labels = self._extra
        texts = [self.exemplars.texts[i] for i in exemplar_rows] + extra_texts
        y = np.concatenate([self.exemplars.y()[exemplar_rows], [label == CONTEMPLATIVE for label in extra_labels]])
        return self.embedder.embed(texts), y.astype(np.int64)

    def _new_classifier(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        # Balanced: curators' examples may come mostly from one side.
        return LogisticRegression(
            C=self.config.classifier_c, class_weight="balanced", max_iter=5000, random_state=self.config.seed
        )


# ---- over the workspace -------------------------------------------------------------------


def scored_texts(items: pl.DataFrame) -> tuple[list[str | None], list[str]]:
    """For each item, the text the concept judges (None where none) and the basis of its score."""
    texts: list[str | None] = []
    bases: list[str] = []
    for kind, answer, text, silence in zip(items["kind"], items["answer"], items["text"], items["is_silence"]):
        if kind == "pair" and silence:
            texts.append(None)
            bases.append(BASIS_SILENCE)
        elif kind == "pair":
            texts.append(answer if answer and answer.strip() else None)
            bases.append(BASIS_ANSWER if texts[-1] is not None else BASIS_EMPTY)
        else:
            texts.append(text if text and text.strip() else None)
            bases.append(BASIS_PASSAGE if texts[-1] is not None else BASIS_EMPTY)
    return texts, bases


def curator_examples(items: pl.DataFrame, decisions: pl.DataFrame | None = None) -> tuple[list[str], list[str]]:
    """Labelled texts from curators' decisions, for `--learn`.

    decisions: the effective decision per item (curation.review: `ReviewState.decisions`,
    i.e. ResponseStore.state(), or a frame like it with item_id, decision, reason and
    edited_answer). None: no decisions, nothing to learn. Decisions are never read from
    the items: the review database is their only home.

    An accepted pair's answer is contemplative, and so is an edited pair's new answer
    (what the curator wanted it to say). A rejected pair's answer is conversational only
    when the reason names the manner of the answer (STYLE_REJECT_WORDS). Passages and
    silences teach nothing; items not in `items` are ignored.
    """
    from curation.review import effective_decisions

    if decisions is None:
        return [], []
    frame = items.select("item_id", "kind", "answer", "is_silence").join(
        effective_decisions(decisions).select("item_id", "decision", "reason", "edited_answer"),
        on="item_id",
        how="inner",
        maintain_order="left",
    )
    texts, labels = [], []
    for _, kind, answer, silence, decision, reason, edited in frame.iter_rows():
        if kind != "pair":
            continue
        if decision == "edit" and edited and edited.strip():
            texts.append(edited)
            labels.append(CONTEMPLATIVE)
        elif silence or not answer:
            continue
        elif decision == "accept":
            texts.append(answer)
            labels.append(CONTEMPLATIVE)
        elif decision == "reject" and any(word in (reason or "").lower() for word in STYLE_REJECT_WORDS):
            texts.append(answer)
            labels.append(CONVERSATIONAL)
    return texts, labels


@dataclass(frozen=True)
class ScoreReport:
    """What `run_score` did, and how good and how spread the concept's scores are."""

    generation: int | None  # committed; None when every item already had these very scores
    n_items: int
    n_scored: int  # items with a non-null concept_score (silences included)
    n_pairs: int
    n_passages: int
    n_silence: int
    n_empty: int  # items with no text to judge: score null
    n_texts: int  # distinct texts embedded for items
    n_encoded: int  # texts the model had to encode: 0 when the store held them all
    n_curator_examples: int
    holdout_auc: float
    n_holdout: int
    # group name -> summarise() of the scores in it
    distributions: dict[str, dict[str, float]]
    agent: dict[str, Any]
    # engine (store key) -> items whose measured score it decided: one engine, or a cascade's two
    decided_by: dict[str, int] = field(default_factory=dict)


def make_scorer(
    config: ScoreConfig | None = None, models: Sequence[Any] = ()
) -> ConceptScorer | CascadeScorer:
    """The scorer `config` asks for: a ConceptScorer, or with `config.cascade` a CascadeScorer of two.

    models: already loaded engines to use, the full one first (then the cascade's cheap one).
    Either way `.full` is the scorer running `config.backend` (a distributed encoder goes there).
    """
    config = config or ScoreConfig()
    full = ConceptScorer(config, model=models[0] if models else None)
    if not config.cascade:
        return full
    from dataclasses import replace

    from curation.cascade import CascadeScorer

    cheap_config = replace(config, backend=config.cascade, cascade="")
    cheap = ConceptScorer(cheap_config, model=models[1] if len(models) > 1 else None, exemplars=full.exemplars)
    return CascadeScorer(cheap, full, config.cascade_tolerance, config.cascade_calibration)


def run_score(
    workspace: Workspace,
    config: ScoreConfig | None = None,
    learn: bool = False,
    *,
    decisions: pl.DataFrame | None = None,
    scorer: ConceptScorer | CascadeScorer | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScoreReport:
    """Score every item and commit `concept_score`, `concept_basis`, `concept_agent` as a new generation.

    learn: also train on curators' decisions (`curator_examples`); ScoreError if there are none.
    decisions: the effective decisions for `learn` (curation.review); default: read from the
    workspace's review database (never created by this).
    scorer: a scorer (`make_scorer`, or a ConceptScorer given a loaded model: tests share one
    this way) to use instead of a fresh one; without stores of its own it is given the workspace's.
    A cascade (`config.cascade`) stamps each item with the engine that decided its score.
    progress: called with (items done, items) after each part is encoded.

    Part by part (`Workspace.item_parts`, `map_items`), so memory follows the part size: first,
    outside the writer lock, each part's texts are encoded into the embedding stores (hours
    on a large corpus: other commands may write meanwhile); then, under the lock, each part's
    columns are computed from the stores (an item ingested meanwhile is encoded then) and committed.
    """
    config = config or (scorer.config if scorer is not None else ScoreConfig())
    scorer = scorer if scorer is not None else make_scorer(config)
    scorer.use_workspace(workspace.root)

    extra_texts: list[str] = []
    extra_labels: list[str] = []
    if learn:
        if decisions is None:
            from curation.review import load_review_state

            decisions = load_review_state(workspace.root).decisions
        decided = workspace.scan_items().filter(pl.col("item_id").is_in(decisions["item_id"].implode()))
        extra_texts, extra_labels = curator_examples(decided.collect(), decisions)
        if not extra_texts:
            raise ScoreError(
                f"{workspace.root}: nothing to learn from: no pair accepted, edited, or rejected as"
                f" not contemplative by a curator"
            )
    scorer.fit(extra_texts, extra_labels)
    generation, parts = workspace.item_parts()
    n_before = scorer.n_encoded  # from here on, only items' texts are encoded
    if scorer.config.cascade:  # the band: set on the calibration share of every part's texts
        scorer.calibrate(calibration_candidates(parts, scorer.calibration_share, scorer.min_calibration))
    holdout = scorer.holdout()
    agent_jsons = [json.dumps(agent, sort_keys=True) for agent in scorer.agents()]

    def columns_for(frame: pl.DataFrame) -> pl.DataFrame:
        texts, bases = scored_texts(frame)
        scores, decided_by = scorer.decide([text for text in texts if text is not None])
        scored = iter(zip(scores.tolist(), decided_by.tolist()))
        values, agents = [], []
        for text, basis in zip(texts, bases):
            score, decider = next(scored) if text is not None else (None, len(agent_jsons) - 1)
            values.append(SILENCE_SCORE if basis == BASIS_SILENCE else score)
            agents.append(agent_jsons[decider])
        return pl.DataFrame(
            {
                "concept_score": pl.Series(values, dtype=pl.Float64),
                "concept_basis": pl.Series(bases, dtype=pl.String),
                "concept_agent": pl.Series(agents, dtype=pl.String),
            }
        )

    n_items, done = sum(part.rows for part in parts), 0
    for part in parts:  # encodes outside the writer lock; the commit below finds the embeddings stored
        columns_for(part.read(SCORED_TEXT_COLUMNS))
        done += part.rows
        if progress is not None:
            progress(done, n_items)
    n_encoded_items = scorer.n_encoded - n_before

    tally = _ScoreTally()

    def transform(current: pl.DataFrame, part: Any) -> pl.DataFrame:
        new = columns_for(current)
        tally.add(current, new)
        return current.drop([c for c in SCORE_COLUMNS if c in current.columns]).hstack(new)

    committed = workspace.map_items(transform)
    return ScoreReport(
        generation=None if committed == generation else committed,
        n_items=tally.n_items,
        n_scored=tally.n_scored,
        n_pairs=tally.n_pairs,
        n_passages=tally.n_passages,
        n_silence=tally.bases[BASIS_SILENCE],
        n_empty=tally.bases[BASIS_EMPTY],
        n_texts=tally.n_texts,
        n_encoded=n_encoded_items,
        n_curator_examples=len(extra_texts),
        holdout_auc=holdout.auc,
        n_holdout=len(holdout.labels),
        distributions={name: summarise(scores) for name, scores in tally.groups(holdout).items() if len(scores)},
        agent=scorer.agent(),
        decided_by=tally.decided_by(),
    )


# What scoring reads of an item (`scored_texts`).
SCORED_TEXT_COLUMNS = ["kind", "answer", "text", "is_silence"]


def calibration_candidates(parts: Sequence[Any], share: float, at_least: int) -> list[str]:
    """The texts among which a cascade's calibration sample is drawn, read a part at a time.

    `curation.cascade.calibration_sample` over these gives what it gives over every text: they
    hold every text in the calibration share, and the `at_least` smallest by key (its fallback).
    """
    from curation.cascade import in_calibration_sample

    in_share: dict[str, None] = {}
    smallest: dict[str, str] = {}  # key -> text, the at_least smallest keys seen so far
    for part in parts:
        texts, _ = scored_texts(part.read(SCORED_TEXT_COLUMNS))
        for text in dict.fromkeys(t for t in texts if t is not None):
            if in_calibration_sample(text, share):
                in_share[text] = None
            smallest[text_key(text)] = text
        if len(smallest) > 2 * at_least:
            smallest = dict(sorted(smallest.items())[:at_least])
    kept = dict(sorted(smallest.items())[:at_least])
    return list(dict.fromkeys([*in_share, *kept.values()]))


class _ScoreTally:
    """What the report says, gathered a part at a time: counts, the measured scores, who decided them."""

    def __init__(self) -> None:
        self.n_items = self.n_scored = self.n_pairs = self.n_passages = 0
        self.bases: Counter[str] = Counter()
        self.text_keys: list[np.ndarray] = []  # 64 bits of each text's key, to count the distinct ones
        self.scores: dict[str, list[np.ndarray]] = {BASIS_ANSWER: [], BASIS_PASSAGE: []}
        self.agents: Counter[str] = Counter()

    def add(self, items: pl.DataFrame, new: pl.DataFrame) -> None:
        self.n_items += items.height
        self.n_scored += int(new["concept_score"].is_not_null().sum())
        self.n_pairs += int((items["kind"] == "pair").sum())
        self.n_passages += int((items["kind"] == "passage").sum())
        self.bases.update(dict(new.group_by("concept_basis").len().iter_rows()))
        texts, _ = scored_texts(items)
        self.text_keys.append(np.array([int(text_key(t)[:16], 16) for t in texts if t is not None], dtype=np.uint64))
        for basis, scores in self.scores.items():
            scores.append(new.filter(pl.col("concept_basis") == basis)["concept_score"].to_numpy())
        measured = new.filter(pl.col("concept_basis").is_in([BASIS_ANSWER, BASIS_PASSAGE]))
        self.agents.update(dict(measured.group_by("concept_agent").len().iter_rows()))

    @property
    def n_texts(self) -> int:
        return len(np.unique(np.concatenate(self.text_keys))) if self.text_keys else 0

    def groups(self, holdout: Holdout) -> dict[str, np.ndarray]:
        return {
            "pair answers": np.concatenate(self.scores[BASIS_ANSWER]) if self.scores[BASIS_ANSWER] else np.zeros(0),
            "passages": np.concatenate(self.scores[BASIS_PASSAGE]) if self.scores[BASIS_PASSAGE] else np.zeros(0),
            "held-out contemplative exemplars": holdout.scores_of(CONTEMPLATIVE),
            "held-out conversational exemplars": holdout.scores_of(CONVERSATIONAL),
        }

    def decided_by(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for agent_json, n in self.agents.items():  # a few distinct agents
            agent = json.loads(agent_json)
            name = agent.get("decided_by", agent["model_key"])
            counts[name] = counts.get(name, 0) + n
        return counts


def item_embeddings(workspace: Workspace, config: ScoreConfig | None = None) -> tuple[pl.DataFrame, np.ndarray]:
    """The items whose scored text (answer or passage) has a stored embedding, and those embeddings, row for row.

    What `run_score` left for other uses: similarity search, semantic near-duplicates.
    Items not scored yet (and silences) are left out, and, after a cascade, the items its
    cheap engine decided (their embeddings are in the cheap engine's store). Loads no model.
    """
    config = config or ScoreConfig()
    return _item_embeddings(workspace, EmbeddingStore.for_workspace(workspace.root, config.model, config.backend))


def _item_embeddings(workspace: Workspace, store: EmbeddingStore) -> tuple[pl.DataFrame, np.ndarray]:
    items = workspace.items()
    texts, _ = scored_texts(items)
    keys = [text_key(t) if t is not None else None for t in texts]
    rows = [i for i, key in enumerate(keys) if key is not None and key in store]
    matrix = store.get([keys[i] for i in rows]) if rows else np.zeros((0, store.dim or 0), np.float32)
    return items[rows], matrix


def nearest(
    workspace: Workspace,
    text: str,
    k: int = 10,
    config: ScoreConfig | None = None,
    embedder: Embedder | None = None,
) -> pl.DataFrame:
    """The k items whose scored text (answer or passage) is closest in meaning to `text`.

    Searches the embeddings `run_score` stored (`item_embeddings`). The query is
    encoded (unless it is itself stored) but not added to the store. Pass a long-lived
    `embedder` to keep the model loaded between queries (the dashboard). Returns the
    items' rows with a `similarity` column (cosine), most similar first.
    """
    config = config or (embedder.config if embedder is not None else ScoreConfig())
    store = EmbeddingStore.for_workspace(workspace.root, config.model, config.backend)
    items, matrix = _item_embeddings(workspace, store)
    if not items.height or k <= 0:
        return items.head(0).with_columns(pl.lit(None, pl.Float64).alias("similarity"))
    query_key = text_key(text)
    if query_key in store:
        query = store.get([query_key])[0]
    else:
        query = (embedder or Embedder(config)).encode([text])[0]
    similarity = matrix @ query
    top = np.argsort(-similarity, kind="stable")[:k]
    return items[top.tolist()].with_columns(pl.Series("similarity", similarity[top].astype(np.float64)))


# ---- distributions ------------------------------------------------------------------------


def summarise(scores: Iterable[float]) -> dict[str, float]:
    """n, mean and quantiles of a set of scores (nulls and NaNs left out)."""
    values = np.array([s for s in scores if s is not None], dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return {"n": 0}
    summary = {"n": int(len(values)), "mean": float(values.mean())}
    for q, v in zip(QUANTILES, np.quantile(values, QUANTILES)):
        summary[f"q{round(q * 100):02d}"] = float(v)
    return summary


def format_distributions(distributions: Mapping[str, Mapping[str, float]]) -> str:
    """A fixed-width table of `summarise` results, one row per group."""
    names = [f"q{round(q * 100):02d}" for q in QUANTILES]
    width = max([len(g) for g in distributions] + [5])
    lines = [f"{'group':<{width}}  {'n':>5}  {'mean':>5}  " + "  ".join(f"{n:>5}" for n in names)]
    for group, s in distributions.items():
        if not s.get("n"):
            lines.append(f"{group:<{width}}  {0:>5}")
            continue
        lines.append(
            f"{group:<{width}}  {s['n']:>5}  {s['mean']:5.3f}  " + "  ".join(f"{s[n]:5.3f}" for n in names)
        )
    return "\n".join(lines)


def plot_score_distributions(
    scores_by_group: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    title: str = "Concept score: contemplative (1) vs conversational (0)",
) -> Path:
    """Overlaid histograms (density) of each group's scores, saved as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(8, 4.5))
    bins = np.linspace(0.0, 1.0, 26)
    for group, scores in scores_by_group.items():
        values = np.asarray([s for s in scores if s is not None], dtype=np.float64)
        if not len(values):
            continue
        axes.hist(values, bins=bins, density=True, histtype="step", linewidth=1.8,
                  label=f"{group} (n={len(values)}, median {np.median(values):.2f})")
    axes.set_xlabel("concept_score = P(contemplative)")
    axes.set_ylabel("density")
    axes.set_xlim(0, 1)
    axes.set_title(title)
    axes.legend(loc="upper center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
