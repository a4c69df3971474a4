"""The review queue's pure logic: ordering by need, filters, bulk plans, progress, Cohen's kappa."""

from __future__ import annotations

import polars as pl
import pytest

from curation.schema import ITEM_SCHEMA
from curation.review import (
    CHANGED,
    DROP,
    KEEP,
    UNREVIEWED,
    cohen_kappa,
    critic_agreement,
    kappa_words,
    progress,
    reviewer_agreement,
    reviewer_counts,
    reviewer_decisions,
)
from dashboards.queue import (
    QueueFilter,
    after_decision,
    apply_filter,
    build_queue,
    neighbour,
    base_queue,
    parse_talk_range,
    plan_bulk,
    progress_by_source,
    queue_view,
    score_frame,
    score_histogram,
    why_expression,
)

SRC_A = "a" * 64
SRC_B = "b" * 64


def item(item_id: str, source_id: str = SRC_A, section: str = "Talk 1", start: int = 0, kind: str = "pair", **extra):
    row = {name: None for name in ITEM_SCHEMA}
    row.update(
        item_id=item_id,
        content_hash="h-" + item_id,
        source_id=source_id,
        kind=kind,
        question=f"question {item_id}",
        answer=f"answer {item_id}",
        text=f"question {item_id}\n\nanswer {item_id}",
        context="",
        is_silence=False,
        section=section,
        start=start,
        end=start + 10,
        refs=[],
    )
    row.update(extra)
    return row


def items_frame(rows, **suggestions) -> pl.DataFrame:
    frame = pl.DataFrame([{k: v for k, v in row.items() if k in ITEM_SCHEMA} for row in rows], schema=ITEM_SCHEMA)
    for name, values in suggestions.items():
        frame = frame.with_columns(pl.Series(name, values))
    return frame


SOURCES = pl.DataFrame({"source_id": [SRC_A, SRC_B], "title": ["Talks", "Talks vol 2"]})


def state(rows) -> pl.DataFrame:
    """A ResponseStore.state()-like frame from (item_id, content_hash, reviewer, decision, reason)."""
    return pl.DataFrame(
        [
            {
                "item_id": i,
                "content_hash": h,
                "reviewer": r,
                "decision": d,
                "reason": reason,
                "note": "",
                "edited_question": None,
                "edited_answer": None,
                "created_at": f"2025-01-01T00:00:{n:02d}",
                "response_id": n,
            }
            for n, (i, h, r, d, reason) in enumerate(rows)
        ]
    )


def responses(rows) -> pl.DataFrame:
    """A ResponseStore.responses()-like frame from (item_id, reviewer, decision) in commit order.

    As the store does, an undo reverts the item's effective response (its latest that is
    neither an undo nor undone), whoever made it.
    """
    out, undone = [], set()
    for n, (i, r, d) in enumerate(rows, start=1):
        undoes = None
        if d == "undo":
            undoes = max(row["id"] for row in out if row["item_id"] == i and row["decision"] != "undo" and row["id"] not in undone)
            undone.add(undoes)
        out.append({"id": n, "item_id": i, "reviewer": r, "decision": d, "reason": None, "created_at": f"t{n:04d}", "undoes": undoes})
    schema = {"id": pl.Int64, "item_id": pl.String, "reviewer": pl.String, "decision": pl.String, "reason": pl.String, "created_at": pl.String, "undoes": pl.Int64}
    return pl.DataFrame(out, schema=schema)


# ---- ordering ------------------------------------------------------------------------


def test_queue_puts_disagreement_and_uncertainty_before_confident_items():
    frame = items_frame(
        [item("confident", start=0), item("disagree", start=10), item("unsure", start=20), item("silent", start=30)],
        concept_score=[0.95, 0.05, 0.5, 0.9],
        critic_score=[9.5, 9.0, 9.5, None],
        critic_status=["scored", "scored", "scored", "unscored"],
        critic_unscored_reason=["", "", "", "silence"],
        critic_flags=[[], [], [], []],
    )
    queue = build_queue(frame, SOURCES)
    order = queue["item_id"].to_list()
    assert order[-1] == "confident"
    assert order[0] == "disagree"
    assert order.index("unsure") < order.index("confident")
    assert order.index("silent") < order.index("confident")
    why = dict(zip(queue["item_id"], queue["why"]))
    assert "disagree" in why["disagree"]
    assert "could not score it (silence)" in why["silent"]
    assert "concept score unsure (0.50)" in why["unsure"]
    assert queue["position"].to_list() == [0, 1, 2, 3]


def test_cluster_representative_first_duplicates_last_and_reviewed_at_the_back():
    frame = items_frame(
        [item("plain", start=0), item("dup", start=10), item("rep", start=20), item("done", start=30)],
        dedup_cluster=["plain", "rep", "rep", "done"],
        dedup_is_representative=[True, False, True, True],
        dedup_cluster_size=[1, 2, 2, 1],
    )
    decided = state([("done", "h-done", "ana", "accept", None)])
    queue = build_queue(frame, SOURCES, decided)
    assert queue["item_id"].to_list() == ["rep", "plain", "dup", "done"]
    assert dict(zip(queue["item_id"], queue["decision_state"]))["done"] == "accept"
    assert "represents a cluster of 2" in queue.filter(pl.col("item_id") == "rep")["why"][0]


def test_missing_stages_degrade_to_null_columns_and_not_scored_yet():
    queue = build_queue(items_frame([item("x"), item("y", start=5)]), None, None)
    assert queue["concept_score"].null_count() == 2
    assert queue["critic_score"].null_count() == 2
    assert queue["dedup_cluster"].null_count() == 2
    assert set(queue["why"]) == {"not scored yet"}
    assert queue["item_id"].to_list() == ["x", "y"]  # ties: position in the source


def test_skipped_items_go_after_unskipped_and_changed_text_needs_review_again():
    frame = items_frame([item("first", start=0), item("second", start=10), item("moved", start=20)])
    decided = state([("moved", "an-older-hash", "ana", "accept", None)])
    queue = build_queue(frame, SOURCES, decided, skipped=[f"{SRC_A}:first"])
    assert queue["item_id"].to_list() == ["second", "moved", "first"]
    states = dict(zip(queue["item_id"], queue["decision_state"]))
    assert states["moved"] == CHANGED
    assert progress(queue).n_reviewed == 0


def test_undo_rows_in_state_count_as_unreviewed():
    frame = items_frame([item("x")])
    queue = build_queue(frame, SOURCES, state([("x", "h-x", "ana", "undo", None)]))
    assert queue["decision_state"].to_list() == [UNREVIEWED]


# ---- filters -------------------------------------------------------------------------


@pytest.fixture
def queue() -> pl.DataFrame:
    frame = items_frame(
        [
            item("t1", section="Talk 19", start=0),
            item("t2", section="Talk 20", start=10),
            item("t3", section="Talk 24", start=20),
            item("p1", source_id=SRC_B, section="", kind="passage", start=0),
        ],
        concept_score=[0.1, 0.5, 0.9, None],
        critic_score=[3.0, 7.5, 8.0, None],
        critic_flags=[["prescriptive"], ["verbosity"], [], None],
        critic_status=["scored", "scored", "scored", None],
        dedup_cluster=["t1", "t1", "t3", "p1"],
        dedup_is_representative=[True, False, True, True],
        dedup_cluster_size=[2, 2, 1, 1],
    )
    decided = state([("t3", "h-t3", "ana", "reject", "off-topic"), ("t2", "h-t2", "bo", "accept", None)])
    return build_queue(frame, SOURCES, decided)


def ids(frame: pl.DataFrame) -> set[str]:
    return set(frame["item_id"])


def test_filters_each_restrict(queue):
    assert ids(apply_filter(queue, QueueFilter())) == {"t1", "t2", "t3", "p1"}
    assert ids(apply_filter(queue, QueueFilter(sources=(SRC_B,)))) == {"p1"}
    assert ids(apply_filter(queue, QueueFilter(kinds=("pair",)))) == {"t1", "t2", "t3"}
    assert ids(apply_filter(queue, QueueFilter(talk_range=(20, 30)))) == {"t2", "t3"}
    assert ids(apply_filter(queue, QueueFilter(concept_range=(0.4, 1.0)))) == {"t2", "t3"}
    assert ids(apply_filter(queue, QueueFilter(critic_range=(0.0, 5.0)))) == {"t1"}
    assert ids(apply_filter(queue, QueueFilter(flags=("verbosity", "closure_reflex")))) == {"t2"}
    assert ids(apply_filter(queue, QueueFilter(cluster_mode="non-representatives"))) == {"t2"}
    assert ids(apply_filter(queue, QueueFilter(cluster_mode="representatives"))) == {"t1", "t3", "p1"}
    assert ids(apply_filter(queue, QueueFilter(cluster_mode="in a duplicate cluster"))) == {"t1", "t2"}
    assert ids(apply_filter(queue, QueueFilter(cluster_mode="unique"))) == {"t3", "p1"}
    assert ids(apply_filter(queue, QueueFilter(cluster_id="t1"))) == {"t1", "t2"}
    assert ids(apply_filter(queue, QueueFilter(decision_states=(UNREVIEWED,)))) == {"t1", "p1"}
    assert ids(apply_filter(queue, QueueFilter(decision_states=("reject", "accept")))) == {"t2", "t3"}
    assert ids(apply_filter(queue, QueueFilter(reviewers=("ana",)))) == {"t3"}
    assert ids(apply_filter(queue, QueueFilter(text="ANSWER T2"))) == {"t2"}


def test_filters_combine_and_keep_queue_order(queue):
    chosen = apply_filter(queue, QueueFilter(kinds=("pair",), decision_states=(UNREVIEWED, "accept")))
    assert chosen["item_id"].to_list() == [i for i in queue["item_id"] if i in {"t1", "t2"}]


def test_filter_rejects_unknown_names():
    with pytest.raises(ValueError):
        QueueFilter(cluster_mode="everything")
    with pytest.raises(ValueError):
        QueueFilter(decision_states=("maybe",))


def test_navigation():
    keys = ["a", "b", "c"]
    assert neighbour(keys, "b", 1) == "c"
    assert neighbour(keys, "c", 1) == "c"
    assert neighbour(keys, "a", -1) == "a"
    assert neighbour(keys, "gone", 1) == "a"
    assert neighbour([], "a", 1) is None
    assert after_decision(keys, "b") == "c"
    assert after_decision(keys, "c") == "b"
    assert after_decision(["a"], "a") is None


# ---- bulk ----------------------------------------------------------------------------


def test_bulk_reject_duplicates_touches_only_undecided_non_representatives(queue):
    plan = plan_bulk(queue, "reject-duplicates", "ana")
    assert plan.count == 0 and plan.n_already_decided == 1  # t2 is the only duplicate, and bo accepted it
    plan = plan_bulk(queue, "reject-duplicates", "ana", include_decided=True)
    assert [r["item_id"] for r in plan.records] == ["t2"]
    assert plan.records[0] | {} == {
        "item_id": "t2",
        "content_hash": "h-t2",
        "reviewer": "ana",
        "decision": "reject",
        "reason": "duplicate",
        "note": "",
    }
    assert plan.n_not_applicable == 3


def test_bulk_accept_and_reject_all(queue):
    plan = plan_bulk(queue, "accept-all", "ana")
    assert sorted(r["item_id"] for r in plan.records) == ["p1", "t1"]
    plan = plan_bulk(queue, "accept-all", "ana", include_decided=True)
    assert sorted(r["item_id"] for r in plan.records) == ["p1", "t1", "t3"]  # t2 is already accepted
    plan = plan_bulk(queue, "reject-all", "ana", reason="off-topic", include_decided=True)
    assert sorted(r["item_id"] for r in plan.records) == ["p1", "t1", "t2"]  # t3 already rejected off-topic
    with pytest.raises(ValueError):
        plan_bulk(queue, "reject-all", "ana", reason="boring")
    with pytest.raises(ValueError):
        plan_bulk(queue, "accept-all", "  ")


def test_bulk_reject_duplicates_spares_copies_with_the_representatives_item_id():
    # The same talk in two books: identical normalised text, so the same item_id in two sources.
    frame = items_frame(
        [item("talk", source_id=SRC_A), item("talk", source_id=SRC_B), item("near", source_id=SRC_B, start=50)],
        dedup_cluster=["talk", "talk", "talk"],
        dedup_representative=["talk", "talk", "talk"],
        dedup_is_representative=[True, False, False],
        dedup_cluster_size=[3, 3, 3],
    )
    plan = plan_bulk(build_queue(frame, SOURCES), "reject-duplicates", "ana")
    assert [r["item_id"] for r in plan.records] == ["near"]
    assert (plan.n_same_id, plan.n_not_applicable) == (1, 1)


def test_bulk_records_one_response_per_item_id():
    frame = items_frame([item("same", source_id=SRC_A), item("same", source_id=SRC_B)])
    queue = build_queue(frame, SOURCES)
    assert queue.height == 2
    assert [r["item_id"] for r in plan_bulk(queue, "accept-all", "ana").records] == ["same"]


# ---- progress ------------------------------------------------------------------------


def test_progress_counts(queue):
    p = progress(queue)
    assert (p.n_items, p.n_reviewed) == (4, 2)
    assert p.by_decision["reject"] == 1 and p.by_decision["accept"] == 1 and p.by_decision[UNREVIEWED] == 2
    assert p.fraction == 0.5
    per_source = progress_by_source(queue)
    assert per_source.to_dicts()[0] | {} == {
        "source": "Talks", "items": 3, "reviewed": 2, "accepted": 1, "rejected": 1, "edited": 0, "fraction": 0.667,
    }
    assert per_source["source"].to_list() == ["Talks", "Talks vol 2"]


def test_progress_by_reviewer_applies_undo():
    history = responses([("x", "ana", "accept"), ("y", "ana", "reject"), ("y", "ana", "undo"), ("x", "bo", "edit")])
    table = {row["reviewer"]: row for row in reviewer_counts(history).to_dicts()}
    assert table["ana"] | {} == {"reviewer": "ana", "items": 1, "accept": 1, "reject": 0, "edit": 0, "responses": 3}
    assert table["bo"]["edit"] == 1


# ---- agreement -----------------------------------------------------------------------


def test_cohen_kappa_on_textbook_cases():
    # Perfect agreement with variation: 1. Exactly what chance predicts: 0.
    assert cohen_kappa(["y", "n", "y", "n"], ["y", "n", "y", "n"]) == pytest.approx(1.0)
    assert cohen_kappa(["y", "y", "n", "n"], ["y", "n", "y", "n"]) == pytest.approx(0.0)
    assert cohen_kappa(["y", "n"], ["n", "y"]) == pytest.approx(-1.0)
    # Wikipedia's worked example: 50 items, a=20 yes/yes, b=5, c=10, d=15 -> po 0.7, pe 0.5, kappa 0.4
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["y", "y"], ["y", "y"]) is None  # chance agreement is 1: undefined
    with pytest.raises(ValueError):
        cohen_kappa(["y"], [])


def test_cohen_kappa_matches_sklearn_when_available():
    metrics = pytest.importorskip("sklearn.metrics")
    a = ["keep", "keep", "reject", "keep", "reject", "reject", "keep", "keep", "reject", "keep"]
    b = ["keep", "reject", "reject", "keep", "reject", "keep", "keep", "keep", "reject", "reject"]
    assert cohen_kappa(a, b) == pytest.approx(metrics.cohen_kappa_score(a, b))


def test_reviewer_decisions_without_undo_links_revoke_the_undoers_own_latest():
    frame = pl.DataFrame(
        {"response_id": [1, 2, 3], "item_id": ["x", "x", "x"], "reviewer": ["ana", "bo", "ana"], "decision": ["accept", "reject", "undo"]}
    )
    assert reviewer_decisions(frame).to_dicts() == [{"item_id": "x", "reviewer": "bo", "decision": "reject", "reason": None}]


def test_reviewer_agreement_uses_each_reviewers_latest_standing_decision():
    history = responses(
        [
            ("i1", "ana", "accept"), ("i1", "bo", "accept"),
            ("i2", "ana", "reject"), ("i2", "bo", "accept"),
            ("i2", "bo", "undo"),  # bo revokes the accept: bo's standing decision is none
            ("i3", "ana", "reject"), ("i3", "bo", "reject"),
            ("i4", "ana", "accept"), ("i4", "bo", "reject"), ("i4", "bo", "edit"),  # bo's latest: edit = keep
            ("i5", "ana", "accept"), ("i5", "cy", "reject"),
            ("i6", "cy", "accept"),
        ]
    )
    standing = reviewer_decisions(history)
    assert standing.filter((pl.col("item_id") == "i2") & (pl.col("reviewer") == "bo")).height == 0
    table = {(r["reviewer_a"], r["reviewer_b"]): r for r in reviewer_agreement(history).to_dicts()}
    ana_bo = table[("ana", "bo")]
    assert ana_bo["n_items"] == 3  # i1, i3, i4
    assert ana_bo["agreement"] == pytest.approx(1.0)
    assert ana_bo["kappa"] == pytest.approx(1.0)
    ana_cy = table[("ana", "cy")]
    assert ana_cy["n_items"] == 1 and ana_cy["agreement"] == 0.0 and ana_cy["kappa"] == 0.0
    assert ("bo", "cy") not in table  # no item in common
    assert reviewer_agreement(responses([])).height == 0


def test_critic_agreement_counts_critic_at_or_above_seven_as_keep():
    frame = items_frame(
        [item("a"), item("b", start=1), item("c", start=2), item("d", start=3), item("e", start=4)],
        critic_score=[9.0, 7.0, 2.0, 3.0, 8.0],
    )
    decided = state(
        [
            ("a", "h-a", "ana", "accept", None),
            ("b", "h-b", "ana", "edit", None),
            ("c", "h-c", "ana", "reject", "other"),
            ("d", "h-d", "bo", "accept", None),
        ]
    )
    result = critic_agreement(build_queue(frame, SOURCES, decided))
    assert result.n_items == 4  # e is not decided
    assert result.confusion[(KEEP, KEEP)] == 2
    assert result.confusion[(DROP, DROP)] == 1
    assert result.confusion[(DROP, KEEP)] == 1
    assert result.agreement == pytest.approx(0.75)
    # critic keep,keep,drop,drop vs curator keep,keep,drop,keep: po .75, pe .5*.75+.5*.25 = .5
    assert result.kappa == pytest.approx(0.5)
    assert kappa_words(result.kappa) == "moderate"
    assert kappa_words(None).startswith("undefined")


def test_score_frame_is_long_by_decision(queue):
    frame = score_frame(queue)
    assert set(frame["score"]) == {"concept score", "critic score"}
    assert frame.filter(pl.col("score") == "critic score").height == 3
    assert set(frame["decision"]) == {UNREVIEWED, "accept", "reject"}


def test_critic_agreement_leaves_out_rejections_as_duplicates():
    frame = items_frame([item("a"), item("b", start=1), item("c", start=2)], critic_score=[9.0, 9.0, 2.0])
    decided = state([("a", "h-a", "ana", "accept", None), ("b", "h-b", "ana", "reject", "duplicate"),
                     ("c", "h-c", "ana", "reject", "not contemplative")])
    result = critic_agreement(build_queue(frame, SOURCES, decided))
    assert result.n_items == 2  # b's rejection says nothing about its quality
    assert result.agreement == 1.0


def test_score_histogram_counts_bins_and_leaves_out_unreviewed_by_default(queue):
    scores = score_frame(queue).filter(pl.col("score") == "critic score")  # t1 3.0 unreviewed, t2 7.5 accept, t3 8.0 reject
    bins = score_histogram(scores, 0.5, (0.0, 10.0))
    assert bins.select("bin_start", "decision", "items").rows() == [(7.5, "accept", 1), (8.0, "reject", 1)]
    everything = score_histogram(scores, 0.5, (0.0, 10.0), include_unreviewed=True)
    assert everything["items"].sum() == 3 and (3.0, UNREVIEWED) in everything.select("bin_start", "decision").rows()
    top = score_histogram(pl.DataFrame({"value": [10.0], "decision": ["accept"]}), 0.5, (0.0, 10.0))
    assert top.rows() == [(9.5, 10.0, "accept", 1)]  # the top of the range falls in the last bin


def test_progress_by_source_counts_items_not_rows():
    frame = items_frame([item("same"), item("same", start=5), item("other", start=9)])
    per_source = progress_by_source(build_queue(frame, SOURCES, state([("same", "h-same", "ana", "accept", None)])))
    assert per_source.select("items", "reviewed", "accepted").rows() == [(2, 1, 1)]


def test_queue_view_selects_one_row_per_item_in_queue_order():
    frame = items_frame([item("x", start=0), item("x", source_id=SRC_B, start=0), item("y", start=5)],
                        concept_score=[0.9, 0.9, 0.5])
    view = queue_view(base_queue(frame, SOURCES))
    ordered = view.ordered()
    assert ordered["item_id"].to_list() == ["y", "x", "x"]  # y is the unsure one
    assert view.frame["item_id"].gather(view.select()).to_list() == ["y", "x"]
    assert view.frame["item_id"].gather(view.select(distinct=False)).to_list() == ["y", "x", "x"]
    assert view.frame["item_id"].gather(view.select(QueueFilter(sources=(SRC_B,)))).to_list() == ["x"]
    assert ordered.drop("position").equals(build_queue(frame, SOURCES).drop("position", "why"))


def test_why_is_written_with_fixed_decimals():
    frame = items_frame([item("a")], concept_score=[0.6], critic_score=[7.04], critic_status=["scored"], critic_flags=[["verbosity"]])
    why = build_queue(frame, SOURCES).select(why_expression()).item()
    assert why == "concept score unsure (0.60); critic near the keep line (7.0); flagged verbosity"


def test_talk_range_is_typed():
    assert parse_talk_range("300-400") == (300, 400)
    assert parse_talk_range(" 312 ") == (312, 312)
    assert parse_talk_range("400 to 300") == (300, 400)
    assert parse_talk_range("") is None
    with pytest.raises(ValueError, match="talks: write a range"):
        parse_talk_range("three hundred")


def test_blind_reviewer_view_over_the_cached_queue_is_the_view_built_on_their_own_decisions():
    """The app's per-reviewer queue in blind review (their own decisions put beside the team's cached queue,
    `own_state`) is the queue built from scratch on their own decisions: same rows, order, states and groups."""
    from curation.team import TeamSettings, assignment, decisions_per_item
    from dashboards.queue import reviewer_view

    rows = [item(f"i{n}", source_id=SRC_A if n % 3 else SRC_B, start=10 * n) for n in range(12)]
    items = items_frame(rows, concept_score=[0.1 * n for n in range(12)], critic_score=[float(11 - n) for n in range(12)])
    team = state([("i1", "h-i1", "bo", "accept", None), ("i2", "h-i2", "bo", "reject", "off-topic"),
                  ("i3", "h-i3", "ana", "accept", None)])
    own = state([("i3", "h-i3", "ana", "accept", None)])
    done = decisions_per_item(responses([("i1", "bo", "accept"), ("i2", "bo", "reject"), ("i3", "ana", "accept")]))
    plan = assignment([f"i{n}" for n in range(12)], ["ana", "bo"], TeamSettings())
    expected = reviewer_view(queue_view(base_queue(items, SOURCES), own), "ana", plan, done, ("i4",)).ordered()
    view = reviewer_view(queue_view(base_queue(items, SOURCES), team), "ana", plan, done, ("i4",), own_state=own)
    actual = view.ordered()
    columns = ["key", "decision_state", "decided_by", "team_group", "assigned_to_me", "skipped"]
    assert actual.select(columns).to_dicts() == expected.select(columns).to_dicts()
    assert actual.filter(pl.col("item_id") == "i1")["decision_state"].item() == "unreviewed"  # bo's: hidden
    assert set(actual["team_group"]) > {0}  # the groups are exercised, not all alike


def test_score_range_and_sort_by_in_the_filter():
    """The team sidebar's sort and filter by any score ride in QueueFilter, so the app's selection cache keys on them."""
    rows = [item(f"i{n}", start=10 * n) for n in range(6)]
    items = items_frame(rows, critic_score=[3.0, None, 9.0, 7.0, 1.0, 7.0])
    view = queue_view(base_queue(items, SOURCES))
    ids = view.frame["item_id"]
    by_critic = ids.gather(view.select(QueueFilter(sort_by=("critic_score", True)))).to_list()
    assert by_critic[:5] == ["i2", *[i for i in ids.gather(view.order).to_list() if i in ("i3", "i5")], "i0", "i4"]
    assert by_critic[-1] == "i1"  # no score: last
    assert ids.gather(view.select(QueueFilter(sort_by=("critic_score", False))))[0] == "i4"
    in_range = set(ids.gather(view.select(QueueFilter(score_range=("critic_score", 2.0, 7.0)))).to_list())
    assert in_range == {"i0", "i3", "i5"}
