"""Benchmark what blind, assigned review adds to a run of the review app, against building the queue itself.

Run as: python bench/team_queue.py [--items 50000] [--responses 3000] [--reviewers 3] [--repeat 5]

Synthetic items (random ids, scores) and responses from several reviewers. The baseline is
`dashboards.queue.build_queue` on everyone's decisions, which the app does on every run
anyway; the rest is what `dashboards/team_panels.TeamContext.review_queue` adds in blind mode:
the reviewer's own state, joined into that queue in place of the team's, how many reviewers
have decided each item, and the reviewer's order. The assignment is cached per workspace generation by the app, so
it is paid once, not per keypress; it is shown for scale. Prints the median of --repeat runs
of each, in ms, and its ratio to the baseline, measured in this one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import polars as pl

from curation.review import join_decisions, reviewer_state
from curation.team import TeamSettings, assignment, decisions_per_item
from dashboards.queue import base_queue, build_queue, queue_view, reviewer_view


def timed(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--responses", type=int, default=3_000)
    parser.add_argument("--reviewers", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, m = args.items, args.responses
    ids = [f"{value:032x}" for value in rng.integers(0, 2**62, n)]
    names = [f"reviewer{i}" for i in range(args.reviewers)]
    items = pl.DataFrame({
        "source_id": ["s"] * n, "item_id": ids, "content_hash": ["c"] * n, "kind": ["pair"] * n,
        "question": ["q"] * n, "answer": ["a"] * n, "context": [""] * n, "text": ["q a"] * n,
        "section": [f"Talk {i % 400}" for i in range(n)], "start": list(range(n)), "end": list(range(1, n + 1)),
        "critic_score": rng.uniform(0, 10, n), "concept_score": rng.uniform(0, 1, n),
    })
    responses = pl.DataFrame(
        {"id": list(range(1, m + 1)), "item_id": [ids[i] for i in rng.integers(0, n, m)], "content_hash": ["c"] * m,
         "reviewer": [names[i % len(names)] for i in range(m)], "decision": ["accept"] * m, "reason": [None] * m,
         "note": [""] * m, "edited_question": [None] * m, "edited_answer": [None] * m, "created_at": ["t"] * m, "undoes": [None] * m},
        schema_overrides={"reason": pl.String, "edited_question": pl.String, "edited_answer": pl.String, "undoes": pl.Int64},
    )
    settings = TeamSettings(overlap_share=0.2)
    me = names[0]
    plan = assignment(ids, names, settings)
    own = reviewer_state(responses, me)
    team_queue = build_queue(items, None, None)
    team_view = queue_view(base_queue(items), None)
    done = decisions_per_item(responses)

    baseline = timed(lambda: build_queue(items, None, None), args.repeat)
    steps = {
        "reviewer_state": lambda: reviewer_state(responses, me),
        "join own decisions into the team queue": lambda: join_decisions(team_queue, own),
        "decisions_per_item": lambda: decisions_per_item(responses),
        "reviewer_view (own decisions over the team's queue, in order)":
            lambda: reviewer_view(team_view, me, plan, done, (), own_state=own).ordered(),
        "assignment (once per generation)": lambda: assignment(ids, names, settings),
    }
    print(f"{n:,} items, {m:,} responses, {len(names)} reviewers; median of {args.repeat}")
    print(f"baseline build_queue: {baseline * 1000:.0f} ms")
    per_run = 0.0
    for name, step in steps.items():
        seconds = timed(step, args.repeat)
        if not name.startswith("assignment"):
            per_run += seconds
        print(f"{name}: {seconds * 1000:.0f} ms = {seconds / baseline:.2f} x baseline")
    print(f"added per run in blind mode: {per_run * 1000:.0f} ms = {per_run / baseline:.2f} x baseline")


if __name__ == "__main__":
    main()
