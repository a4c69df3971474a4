"""The review app's Progress view: reviewed of total, per source and reviewer, score distributions by
decision, and agreement (between reviewers, on blind overlaps, critic vs curators).

Drawn by dashboards/review_app.py from its cached queue; the numbers are cached per review-state
version (the token the app's snapshot is keyed by).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl
import streamlit as st

from curation.responses import ResponseStore
from dashboards import team_panels
from dashboards.queue import (
    CHANGED,
    CRITIC_KEEP_THRESHOLD,
    DECISION_STATES,
    DROP,
    KEEP,
    Progress,
    QueueView,
    critic_agreement,
    for_items,
    kappa_words,
    progress_by_source,
    reviewer_agreement,
    reviewer_counts,
    score_frame,
    score_histogram,
)

HISTOGRAMS = (("concept_score", "concept score", 0.05, (0.0, 1.0)), ("critic_score", "critic score", 0.5, (0.0, 10.0)))


@dataclass(frozen=True)
class ProgressNumbers:
    per_source: pl.DataFrame
    per_reviewer: pl.DataFrame
    pairs: pl.DataFrame
    critic: Any  # curation.review.CriticAgreement
    scores: pl.DataFrame  # dashboards.queue.score_frame
    responses: pl.DataFrame  # the workspace items' responses


@st.cache_resource(show_spinner=False, max_entries=4)
def progress_numbers(token: tuple, _view: QueueView, _store: ResponseStore) -> ProgressNumbers:
    queue = _view.frame
    responses = for_items(_store.responses(), queue["item_id"])  # the workspace's items, as the data card counts them
    return ProgressNumbers(progress_by_source(queue), reviewer_counts(responses), reviewer_agreement(responses),
                           critic_agreement(queue), score_frame(queue), responses)


def progress_view(token: tuple, view: QueueView, done: Progress, store: ResponseStore) -> None:
    """The Progress view of the queue `view` (built on what `token` names; `done` its progress)."""
    numbers = progress_numbers(token, _view=view, _store=store)
    cols = st.columns(5)
    cols[0].metric(f"Reviewed of {done.n_items:,} ({done.fraction:.0%})", f"{done.n_reviewed:,}")
    cols[1].metric("Accepted", done.by_decision.get("accept", 0))
    cols[2].metric("Rejected", done.by_decision.get("reject", 0))
    cols[3].metric("Edited", done.by_decision.get("edit", 0))
    cols[4].metric("Changed since review", done.by_decision.get(CHANGED, 0))
    st.progress(done.fraction)

    left, right = st.columns([3, 2], gap="large")
    with left:
        st.markdown("##### Per source (items)")
        st.dataframe(numbers.per_source, hide_index=True, width="stretch",
                     column_config={"fraction": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent")})
    with right:
        st.markdown("##### Per reviewer")
        if numbers.per_reviewer.height:
            st.dataframe(numbers.per_reviewer, hide_index=True, width="stretch")
        else:
            st.caption("No decisions yet.")

    st.markdown("##### Score distributions by decision")
    include_unreviewed = st.toggle("Include items not reviewed yet", value=False, key="chart_unreviewed")
    scores = numbers.scores
    scored = set(scores["score"]) if scores.height else set()
    for column, (_, label, step, extent) in zip(st.columns(2), HISTOGRAMS):
        with column:
            if label not in scored:
                st.caption(f"{label}: not scored yet")
                continue
            bins = score_histogram(scores.filter(pl.col("score") == label), step, extent, include_unreviewed)
            if bins.height == 0:
                st.caption(f"{label}: no reviewed item has one yet")
            else:
                st.vega_lite_chart(bins, histogram_spec(label, extent), width="stretch")

    st.markdown("##### Agreement")
    left, right = st.columns(2, gap="large")
    with left:
        st.markdown("**Between reviewers** (Cohen's kappa, keep = accept or edit vs reject, on items both decided)")
        pairs = numbers.pairs
        if pairs.height == 0:
            st.caption("No item has been decided by two reviewers yet.")
        else:
            st.dataframe(pairs.with_columns(pl.col("kappa").round(3), pl.col("agreement").round(3),
                                            pl.col("kappa").map_elements(kappa_words, return_dtype=pl.String).alias("reads as")),
                         hide_index=True, width="stretch")
        team_panels.blind_agreement_panel(numbers.responses, numbers.pairs)  # team hook: kappa on blind overlaps only
    with right:
        st.markdown(f"**Critic vs curators** (critic score ≥ {CRITIC_KEEP_THRESHOLD:g} counts as keep; "
                    "rejections as duplicates left out)")
        agreement = numbers.critic
        if agreement.n_items == 0:
            st.caption("No item has both a critic score and a curator decision yet.")
        else:
            kappa = "—" if agreement.kappa is None else f"{agreement.kappa:.3f}"
            st.markdown(f"kappa **{kappa}** ({kappa_words(agreement.kappa)}) over {agreement.n_items} items; "
                        f"they agree on {agreement.agreement:.0%}.")
            st.dataframe(
                pl.DataFrame(
                    {
                        "critic says": [KEEP, DROP],
                        "curator keep": [agreement.confusion[(KEEP, KEEP)], agreement.confusion[(DROP, KEEP)]],
                        "curator reject": [agreement.confusion[(KEEP, DROP)], agreement.confusion[(DROP, DROP)]],
                    }
                ),
                hide_index=True,
            )


def histogram_spec(label: str, extent: tuple[float, float]) -> dict[str, Any]:
    """A Vega-Lite stacked histogram over counted bins (dashboards.queue.score_histogram), coloured by decision state.

    A plain spec, not altair: importing altair costs a server process over a second.
    """
    return {
        "title": label,
        "height": 220,
        "mark": {"type": "bar"},
        "encoding": {
            "x": {"field": "bin_start", "type": "quantitative", "bin": "binned", "title": label,
                  "scale": {"domain": list(extent)}},
            "x2": {"field": "bin_end"},
            "y": {"aggregate": "sum", "field": "items", "type": "quantitative", "title": "items", "stack": True},
            "color": {"field": "decision", "type": "nominal", "title": "decision",
                      "scale": {"domain": list(DECISION_STATES), "range": ["#c9c1b6", "#3a9a57", "#c8553d", "#4a78c2", "#e0a526"]}},
            "order": {"field": "decision", "type": "nominal"},
            "tooltip": [{"field": "decision", "type": "nominal"},
                        {"aggregate": "sum", "field": "items", "type": "quantitative", "title": "items"}],
        },
    }
