"""The offline critic as a gate: degenerate outputs score <= 2, real answers are left as they were.

critic/data/gate.jsonl holds real answers from the Talks excerpts and degenerate outputs of
each kind (hand-written, and samples of a real tiny model); bench/critic_gate.py prints the
same numbers with a baseline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from critic.degenerate import degeneracy, is_known_word
from critic.offline import OfflineCritic
from curation.dialogue import parse_dialogue

ROOT = Path(__file__).resolve().parents[1]
GATE = [json.loads(line) for line in (ROOT / "critic" / "data" / "gate.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
HAND_WRITTEN = [row for row in GATE if row["label"] == "degenerate" and row["origin"] == "hand-written"]
GOOD = [row for row in GATE if row["label"] == "good"]
LOST = "I feel lost in my practice."


def test_the_set_has_every_kind():
    kinds = {row["kind"] for row in HAND_WRITTEN}
    assert kinds == {"no words", "broken characters", "repetition loop", "another language", "echoes the question", "transcript furniture", "gibberish"}
    assert len(GOOD) >= 40 and sum(row["kind"] == "tiny-model output" for row in GATE) == 20


@pytest.mark.parametrize("row", HAND_WRITTEN, ids=lambda row: f"{row['kind']}: {row['answer'][:30]}")
def test_degenerate_outputs_score_at_most_2_and_say_why(row):
    record = OfflineCritic().critique(row["question"], row["answer"])
    assert record.is_scored and record.score <= 2, record.rationale
    assert record.rationale.startswith(f"degenerate output: {row['kind']}"), record.rationale


def test_gibberish_no_longer_passes_the_seeds_gate():
    critic = OfflineCritic()
    gibberish = "blorf quenta vashmi drellop in torvane spliqued mondrable"
    assert critic.signals(LOST, gibberish)  # the signals alone still call it brief and advice-free (6.5) ...
    assert critic.critique(LOST, gibberish).score == 1.0  # ... the rule holds it to the floor


def test_most_real_tiny_model_garbage_is_caught():
    critic = OfflineCritic()
    tiny = [row for row in GATE if row["kind"] == "tiny-model output"]
    caught = [row for row in tiny if critic.critique(row["question"], row["answer"]).score <= 2]
    assert len(caught) / len(tiny) >= 0.8


@pytest.mark.parametrize("row", GOOD, ids=lambda row: row["origin"])
def test_real_answers_are_not_degenerate_and_keep_their_score(row):
    critic = OfflineCritic()
    record = critic.critique(row["question"], row["answer"])
    signals_only = critic.config.base + sum(signal.delta for signal in critic.signals(row["question"], row["answer"]))
    assert degeneracy(row["question"], row["answer"]) is None
    assert record.score == min(10.0, max(critic.config.floor, round(signals_only, 1)))


def test_no_answer_of_the_bundled_sample_is_degenerate():
    """So the sample run's critic mean is what it was."""
    text = (ROOT / "satsang" / "samples" / "talks-sample.txt").read_text(encoding="utf-8")
    items = [item for item in parse_dialogue(text, "sample").items if item["answer"].strip()]
    flagged = [(item["section"], degeneracy(item["question"], item["answer"])) for item in items]
    assert len(items) > 50
    assert [f for f in flagged if f[1] is not None] == []


def test_the_rules_reach_past_the_obvious():
    assert degeneracy(LOST, "Who is it that feels lost?") is None
    assert degeneracy("What does Bhagavan think of the lost soul?", "The mind is Atman.") is None  # a short answer sharing words
    assert degeneracy(LOST, "Self-realisation is simply being yourself.") is None
    assert degeneracy(LOST, "<|endoftext|>").kind == "no words"
    assert degeneracy(LOST, "I feel lost in my practice. Who is it that feels lost? Find out.") is None  # quotes, then answers
    assert degeneracy(LOST, "Qui est celui qui se sent perdu ?").kind == "another language"
    assert is_known_word("realising") and is_known_word("vichara") and not is_known_word("slheada")
    # An empty answer stays unscored (no words to judge); callers treat it as silence or below any gate.
    assert OfflineCritic().critique(LOST, "   ").status == "unscored"
