"""The review app: curators accept, reject (with a reason) or edit the items of a workspace.

Run as:

    satsang review [--workspace DIR] [--db URL]
    streamlit run dashboards/review_app.py -- --workspace DIR [--db URL]

The workspace comes from `--workspace` (after Streamlit's `--`), else
$SATSANG_WORKSPACE, else ./satsang-workspace; the decisions database from
`--db`, else $SATSANG_DB_URL, else SQLite inside the workspace
(curation.responses.ResponseStore). Every decision is appended there; nothing is
overwritten, so undo is a response too.

Three views:

- Review: the queue (dashboards/queue.py orders it by what most needs a human),
  one item at a time with its provenance and suggestions, and keyboard shortcuts:
  A accept, 1-6 reject with reason n, E edit, S skip, U undo, J/K next/previous.
  (R cannot be a shortcut: Streamlit keeps R for "rerun" and C for "clear cache".)
- Bulk: one action over the filtered selection, with its count and a confirm step.
- Progress: reviewed / total per reviewer and per source, score distributions by
  decision, Cohen's kappa between reviewers and between the critic and curators.

The sidebar holds the reviewer's name (asked once, kept for the session and in
the URL) and the filters, which every view shares.
"""

from __future__ import annotations

import argparse
import difflib
import html
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import streamlit as st

from critic.base import FLAGS
from curation.responses import REASONS, InvalidResponse, ResponseStore, ResponseStoreError
from curation.review import normalise_reviewer_name, record_decisions
from curation.workspace import Workspace, WorkspaceError, default_workspace_path
from dashboards import team_panels  # team hook (issue 13): team features, dashboards/team_panels.py
from dashboards.queue import (
    BULK_ACTIONS,
    CHANGED,
    CLUSTER_MODES,
    CRITIC_KEEP_THRESHOLD,
    DECISION_STATES,
    DROP,
    KEEP,
    UNREVIEWED,
    QueueFilter,
    after_decision,
    apply_filter,
    build_queue,
    critic_agreement,
    for_items,
    kappa_words,
    neighbour,
    plan_bulk,
    progress,
    progress_by_source,
    reviewer_agreement,
    reviewer_counts,
    score_frame,
)

DB_URL_ENV = "SATSANG_DB_URL"
VIEWS = ("Review", "Bulk actions", "Progress", *team_panels.TEAM_VIEWS)  # team hook: Search, Likely mistakes
DEFAULT_STATES = [UNREVIEWED, CHANGED]
CONTEXT_BEFORE, CONTEXT_AFTER = 450, 900  # raw source shown before and after an item

# Keyboard shortcuts, as Streamlit's `shortcut=` names them; reasons take 1-6 in REASONS order.
KEYS = {"accept": "A", "edit": "E", "skip": "S", "undo": "U", "next": "J", "prev": "K"}
REASON_KEYS = {reason: str(number) for number, reason in enumerate(REASONS, start=1)}

CSS = """
<style>
.block-container {padding-top: 2.6rem; padding-bottom: 2rem; max-width: 1500px;}
.sat-meta {color: #6b6257; font-size: 0.86rem; margin-bottom: 0.35rem;}
.sat-meta b {color: #3d352c;}
.sat-card {border: 1px solid #e6dfd3; border-radius: 10px; padding: 1.1rem 1.35rem;
           background: #fffdf8; margin-bottom: 0.6rem;}
.sat-context {color: #7a7065; font-style: italic; margin-bottom: 0.7rem; font-size: 0.95rem;}
.sat-turn {display: flex; gap: 0.75rem; margin: 0.45rem 0; line-height: 1.55; font-size: 1.06rem;}
.sat-speaker {flex: 0 0 4.6rem; color: #9a8f82; font-size: 0.8rem; text-align: right; padding-top: 0.22rem;
              overflow: hidden; text-overflow: ellipsis; white-space: nowrap;}
.sat-q {color: #2c2620; font-weight: 600;}
.sat-a {color: #2c2620;}
.sat-silence {color: #8c8276; font-style: italic;}
.sat-badge {display: inline-block; padding: 0.08rem 0.55rem; border-radius: 999px; font-size: 0.78rem;
            margin: 0 0.3rem 0.2rem 0; border: 1px solid transparent; white-space: nowrap;}
.sat-unreviewed {background: #f1ede6; color: #6b6257;}
.sat-accept {background: #e3f3e6; color: #1f6b35; border-color: #b9dfc2;}
.sat-reject {background: #fbe6e3; color: #9b2c1f; border-color: #f0c1b9;}
.sat-edit {background: #e6eefb; color: #24508f; border-color: #bfd2f1;}
.sat-changed {background: #fff2d6; color: #8a5a00; border-color: #f0d58f;}
.sat-flag {background: #fff2d6; color: #8a5a00;}
.sat-why {background: #f4f0ff; color: #5b3fa8;}
.sat-source {font-family: Georgia, serif; font-size: 0.9rem; line-height: 1.5; white-space: pre-wrap;
             max-height: 340px; overflow-y: auto; border: 1px solid #ece6dc; border-radius: 8px;
             padding: 0.8rem 1rem; background: #fcfbf8; color: #8d857b;}
.sat-source .ctx {background: #efe9df; color: #3d352c;}
.sat-source .q {background: #ffe9a8; color: #2c2620;}
.sat-source .a {background: #d5f0d9; color: #2c2620;}
.sat-source .item {color: #3d352c;}
.sat-diff {font-size: 0.98rem; line-height: 1.6; border: 1px solid #e6dfd3; border-radius: 8px;
           padding: 0.6rem 0.9rem; background: #fff; margin-bottom: 0.5rem;}
.sat-diff del {background: #fbd9d3; color: #8b2317; text-decoration: line-through;}
.sat-diff ins {background: #d3f2d9; color: #135c28; text-decoration: none;}
.sat-keys {color: #8d857b; font-size: 0.8rem;}
.sat-keys kbd {border: 1px solid #d6cfc4; border-bottom-width: 2px; border-radius: 4px; padding: 0 0.3rem;
               background: #fff; font-size: 0.75rem; color: #3d352c;}
.sat-member {border: 1px solid #ece6dc; border-radius: 8px; padding: 0.6rem 0.8rem; background: #fff;
             font-size: 0.9rem; line-height: 1.45;}
</style>
"""


# Streamlit's shortcuts rightly ignore keys typed into a text box, but Esc does not leave one;
# this makes Esc leave it (committing what was typed), so the next key is a shortcut again.
ESC_LEAVES_TEXT_BOXES = """
<script>
if (!window.__satsangEscLeaves) {
  window.__satsangEscLeaves = true;
  document.addEventListener("keydown", (event) => {
    const box = document.activeElement;
    if (event.key === "Escape" && box && (box.tagName === "INPUT" || box.tagName === "TEXTAREA")) {
      box.blur();
    }
  }, true);
}
</script>
"""


# ---- configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class AppConfig:
    workspace: Path
    db_url: str | None


def app_config(argv: list[str] | None = None) -> AppConfig:
    """Workspace and database from the arguments after Streamlit's `--`, else the environment."""
    if argv is None:
        # Only `streamlit run review_app.py -- ...` hands this script arguments; under AppTest
        # sys.argv is pytest's own command line, which is none of our business.
        argv = sys.argv[1:] if Path(sys.argv[0]).name == Path(__file__).name else []
    parser = argparse.ArgumentParser(prog="review_app", add_help=False, allow_abbrev=False)
    parser.add_argument("--workspace", "-w")
    parser.add_argument("--db")
    args, _ = parser.parse_known_args(argv)
    workspace = Path(args.workspace) if args.workspace else default_workspace_path()
    return AppConfig(workspace=workspace, db_url=args.db or os.environ.get(DB_URL_ENV) or None)


def open_store(config: AppConfig) -> ResponseStore:
    return ResponseStore.open(config.workspace, url=config.db_url)


@st.cache_data(show_spinner=False, max_entries=4)
def load_tables(root: str, generation: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Items and sources of one generation: generations never change, so this caches safely."""
    workspace = Workspace(Path(root))
    return workspace.items(), workspace.sources()


@st.cache_data(show_spinner=False, max_entries=8)
def workspace_item_ids(config: AppConfig) -> pl.Series:
    """The ids a decision may name: the items of the workspace's current generation."""
    workspace = Workspace(config.workspace)
    return load_tables(str(workspace.root), workspace.generation)[0]["item_id"]


def load_source_text(root: str, source_id: str) -> str:
    return Workspace(Path(root)).source_text(source_id)


# ---- session -------------------------------------------------------------------------


def session_defaults() -> None:
    defaults: dict[str, Any] = {
        "cursor": None,
        "skipped": [],
        "undo_stack": [],  # (key, reviewer) of decisions made in this session, newest last
        "editing": False,
        "flash": None,
        "view": VIEWS[0],
        "f_states": list(DEFAULT_STATES),
    }
    for name, value in defaults.items():
        st.session_state.setdefault(name, value)
    if "reviewer" not in st.session_state:
        st.session_state["reviewer"] = st.query_params.get("reviewer", "")


def reviewer_name() -> str:
    return normalise_reviewer_name(st.session_state.get("reviewer"))  # team hook: "Asha" and "asha " are one reviewer


def flash(message: str, icon: str = ":material/check_circle:") -> None:
    st.session_state["flash"] = (message, icon)


# ---- actions (widget callbacks: they run before the rerun that shows their result) ----


def _item_parts(key: str) -> tuple[str, str]:
    source_id, item_id = key.split(":", 1)
    return source_id, item_id


def act_decide(config: AppConfig, key: str, content_hash: str, decision: str, next_key: str | None,
               reason: str | None = None, edited_question: str | None = None, edited_answer: str | None = None) -> None:
    reviewer = reviewer_name()
    if not reviewer:
        flash("Enter your name in the sidebar first.", ":material/front_hand:")
        return
    note = str(st.session_state.get("note") or "").strip()
    if reason == "other" and not note:
        flash("Reason 'other' needs a note: write it in the note box, then reject again.", ":material/edit_note:")
        return
    _, item_id = _item_parts(key)
    store = open_store(config)
    try:
        [response] = record_decisions(store, [{"item_id": item_id, "content_hash": content_hash, "reviewer": reviewer, "decision": decision,
                                               "reason": reason, "note": note, "edited_question": edited_question,
                                               "edited_answer": edited_answer}], workspace_item_ids(config))
        team_panels.after_recorded(store, [response])  # team hook: blind mark; draft and skip withdrawn
    except InvalidResponse as error:
        flash(f"Not recorded: {error}", ":material/error:")
        return
    finally:
        store.close()
    st.session_state["undo_stack"] = [*st.session_state["undo_stack"], (key, reviewer)][-200:]
    st.session_state["skipped"] = [k for k in st.session_state["skipped"] if k != key]
    st.session_state["cursor"] = next_key
    st.session_state["editing"] = False
    st.session_state["note"] = ""
    label = {"accept": "Accepted", "reject": f"Rejected ({reason})", "edit": "Saved the edit"}[decision]
    flash(f"{label}. U undoes it.", ":material/delete:" if decision == "reject" else ":material/check_circle:")


def act_save_edit(config: AppConfig, row_key: str, content_hash: str, next_key: str | None,
                  question: str, answer: str) -> None:
    """Record an edit of what changed: a field left as it was is stored as None (keep the original)."""
    new_question = st.session_state.get("edit_question", question)
    new_answer = st.session_state.get("edit_answer", answer)
    edited_question = new_question if new_question.strip() != question.strip() else None
    edited_answer = new_answer if new_answer.strip() != answer.strip() else None
    if edited_question is None and edited_answer is None:
        flash("Nothing changed: edit the question or the answer first.", ":material/info:")
        return
    act_decide(config, row_key, content_hash, "edit", next_key, None, edited_question, edited_answer)


def act_skip(key: str, next_key: str | None) -> None:
    st.session_state["skipped"] = [*[k for k in st.session_state["skipped"] if k != key], key]
    team_panels.remember_skip(key, reviewer_name())  # team hook: the skip outlives the session
    st.session_state["cursor"] = next_key
    st.session_state["editing"] = False


def act_move(key: str | None) -> None:
    st.session_state["cursor"] = key
    st.session_state["editing"] = False


def act_undo(config: AppConfig, current_key: str | None) -> None:
    """Undo this reviewer's latest decision of the session; with none left, their standing decision on the item shown.

    The store's undo reverts an item's effective response whoever made it, so this
    checks first that the effective response is this reviewer's: another curator's
    decision is overruled by recording a new one, not undone.
    """
    reviewer = reviewer_name()
    if not reviewer:
        flash("Enter your name in the sidebar first.", ":material/front_hand:")
        return
    stack = list(st.session_state["undo_stack"])
    mine = [index for index, (_, who) in enumerate(stack) if who == reviewer]
    target = stack[mine[-1]][0] if mine else current_key
    if mine:
        del stack[mine[-1]]
        st.session_state["undo_stack"] = stack
    if target is None:
        flash("Nothing to undo.", ":material/info:")
        return
    item_id = _item_parts(target)[1]
    store = open_store(config)
    try:
        standing = team_panels.standing_for_undo(store, item_id, reviewer)  # team hook (was: store.current(item_id))
        if standing is None:
            flash("Nothing to undo on this item: it has no standing decision.", ":material/info:")
            return
        if standing.reviewer != reviewer:
            flash(f"The standing decision is {standing.reviewer}'s ({standing.decision}): record your own decision instead.",
                  ":material/info:")
            return
        team_panels.undo(store, item_id, reviewer)  # team hook (was: store.undo(item_id, reviewer)): blind undoes one's own
    finally:
        store.close()
    st.session_state["cursor"] = target
    st.session_state["editing"] = False
    flash(f"Undid your {standing.decision}: the item is back as it was before it.", ":material/undo:")


def act_start_edit(question: str, answer: str) -> None:
    st.session_state["editing"] = True
    st.session_state["edit_question"] = question
    st.session_state["edit_answer"] = answer


def act_cancel_edit() -> None:
    st.session_state["editing"] = False


def act_bulk(config: AppConfig, records: tuple[dict[str, Any], ...], label: str) -> None:
    if not st.session_state.get("bulk_confirm"):
        flash("Tick the confirm box first.", ":material/front_hand:")
        return
    store = open_store(config)
    try:
        written = record_decisions(store, [dict(record) for record in records], workspace_item_ids(config))
    except InvalidResponse as error:
        flash(f"Not recorded: {error}", ":material/error:")
        return
    finally:
        store.close()
    st.session_state["bulk_confirm"] = False
    flash(f"{label}: recorded {len(written)} decisions.", ":material/check_circle:")


def act_reset_filters() -> None:
    for name in list(st.session_state):
        if name.startswith("f_"):
            del st.session_state[name]
    st.session_state["f_states"] = list(DEFAULT_STATES)


# ---- rendering helpers ---------------------------------------------------------------


def esc(text: Any) -> str:
    return html.escape(str(text if text is not None else ""))


def badge(text: str, kind: str) -> str:
    return f'<span class="sat-badge sat-{kind}">{esc(text)}</span>'


def state_badge(row: dict[str, Any]) -> str:
    state = row["decision_state"]
    if state == UNREVIEWED:
        return badge("not reviewed", "unreviewed")
    if state == CHANGED:
        return badge(f"{row['decision']} by {row['decided_by']}, text changed since", "changed")
    words = {"accept": "accepted", "reject": "rejected", "edit": "edited"}[state]
    reason = f" ({row['decision_reason']})" if row.get("decision_reason") else ""
    return badge(f"{words}{reason} by {row['decided_by']}", state)


def word_diff_html(before: str, after: str) -> str:
    """`before` to `after` word by word: deletions struck through in red, insertions in green."""
    old, new = before.split(), after.split()
    out: list[str] = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(esc(" ".join(old[a0:a1])))
            continue
        if op in ("delete", "replace"):
            out.append(f"<del>{esc(' '.join(old[a0:a1]))}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{esc(' '.join(new[b0:b1]))}</ins>")
    return " ".join(out) or "<i>(empty)</i>"


def unified_diff(label: str, before: str, after: str) -> str:
    return "".join(
        difflib.unified_diff(
            [line + "\n" for line in before.splitlines()], [line + "\n" for line in after.splitlines()],
            fromfile=f"{label} (original)", tofile=f"{label} (edited)", lineterm="\n",
        )
    )


def source_window_html(text: str, row: dict[str, Any], before: int = CONTEXT_BEFORE, after: int = CONTEXT_AFTER) -> str:
    """The raw source around an item, the item's spans highlighted: context, question, answer (or passage)."""
    start, end = int(row["start"]), int(row["end"])
    lo, hi = max(0, start - before), min(len(text), end + after)
    marks: list[tuple[int, int, str]] = []
    for column, css in (("context_spans", "ctx"), ("question_spans", "q"), ("answer_spans", "a"), ("text_spans", "q")):
        for span in row.get(column) or []:
            marks.append((int(span[0]), int(span[1]), css))
    marks.sort()
    out: list[str] = ["…" if lo > 0 else ""]
    position = lo

    def plain(a: int, b: int) -> None:
        if b <= a:
            return
        # inside the item but between spans (page headers, markers): dimmer than the spans, darker than outside
        inside_a, inside_b = max(a, start), min(b, end)
        if inside_a < inside_b:
            out.append(esc(text[a:inside_a]))
            out.append(f'<span class="item">{esc(text[inside_a:inside_b])}</span>')
            out.append(esc(text[inside_b:b]))
        else:
            out.append(esc(text[a:b]))

    for a, b, css in marks:
        a, b = max(a, position), min(b, hi)
        if b <= a:
            continue
        plain(position, a)
        out.append(f'<mark class="{css}">{esc(text[a:b])}</mark>')
        position = b
    plain(position, hi)
    out.append("…" if hi < len(text) else "")
    return f'<div class="sat-source">{"".join(out)}</div>'


def shortcut_legend() -> str:
    keys = [
        ("A", "accept"),
        ("1–6", "reject with reason"),
        ("E", "edit"),
        ("S", "skip"),
        ("U", "undo"),
        ("J / K", "next / previous"),
    ]
    parts = " · ".join(f"<kbd>{esc(k)}</kbd> {esc(v)}" for k, v in keys)
    return f'<div class="sat-keys">{parts} — keys act when no text box has focus (Esc leaves one)</div>'


# ---- sidebar: reviewer and filters ---------------------------------------------------


def sidebar(queue: pl.DataFrame, store_reviewers: list[str]) -> QueueFilter:
    with st.sidebar:
        st.markdown("### :material/self_improvement: Satsang review")
        name = st.text_input("Your name", key="reviewer", placeholder="who is reviewing?",
                             help="Kept for this session and in the page URL; every decision is recorded under it.")
        if name.strip():
            if st.query_params.get("reviewer") != name.strip():
                st.query_params["reviewer"] = name.strip()
        else:
            st.warning("Enter your name to start reviewing.", icon=":material/front_hand:")

        st.markdown("#### Filters")
        sources = queue.unique("source_id", keep="first", maintain_order=True).sort("source_order")
        titles = dict(zip(sources["source_id"], sources["source_title"]))
        chosen_sources = st.multiselect("Source", list(titles), format_func=lambda s: titles.get(s, s[:12]), key="f_sources")
        kinds = sorted(set(queue["kind"].drop_nulls()))
        chosen_kinds = st.multiselect("Kind", kinds, key="f_kinds") if len(kinds) > 1 else []
        talks = queue["talk"].drop_nulls()
        talk_range = None
        if talks.len() and talks.min() < talks.max():
            low, high = int(talks.min()), int(talks.max())
            picked = st.slider("Talk", low, high, (low, high), key="f_talks")
            talk_range = None if picked == (low, high) else picked
        concept = st.slider("Concept score", 0.0, 1.0, (0.0, 1.0), 0.05, key="f_concept",
                            help="Narrowing it leaves out items not scored yet.")
        critic = st.slider("Critic score", 0.0, 10.0, (0.0, 10.0), 0.5, key="f_critic",
                           help="Narrowing it leaves out items the critic did not score.")
        flags = st.multiselect("Critic flags (any of)", list(FLAGS), key="f_flags")
        unscored = st.checkbox("Only items the critic could not score", key="f_unscored")
        cluster_mode = st.selectbox("Duplicates", CLUSTER_MODES, key="f_cluster_mode")
        cluster_id = st.text_input("Cluster id", key="f_cluster", placeholder="dedup cluster (prefix)")
        states = st.multiselect("Decision state", list(DECISION_STATES), key="f_states",
                                help="Empty: every item. The default is what still needs a human.")
        reviewers = st.multiselect("Decided by", store_reviewers, key="f_reviewers")
        text = st.text_input("Text contains", key="f_text")
        st.button("Reset filters", key="reset_filters", on_click=act_reset_filters, width="stretch")
    return QueueFilter(
        sources=tuple(chosen_sources),
        kinds=tuple(chosen_kinds),
        talk_range=talk_range,
        concept_range=None if concept == (0.0, 1.0) else concept,
        critic_range=None if critic == (0.0, 10.0) else critic,
        flags=tuple(flags),
        unscored_only=unscored,
        cluster_mode=cluster_mode,
        cluster_id=cluster_id,
        decision_states=tuple(states),
        reviewers=tuple(reviewers),
        text=text,
    )


# ---- review view ---------------------------------------------------------------------


def edited_text(row: dict[str, Any]) -> tuple[str, str]:
    """The question and answer as the item's standing edit has them (a None field kept the original)."""
    question = row["edited_question"] if row.get("edited_question") is not None else row["question"]
    answer = row["edited_answer"] if row.get("edited_answer") is not None else row["answer"]
    return question or "", answer or ""


def item_card(row: dict[str, Any], edited: tuple[str, str] | None = None) -> str:
    meta = [f"<b>{esc(row['source_title'])}</b>"]
    if row.get("section"):
        meta.append(esc(row["section"]))
    if row.get("section_date"):
        meta.append(esc(row["section_date"]))
    meta.append(f"turn {row['turn_index']}" if row.get("turn_index") is not None else "")
    parts = [f'<div class="sat-meta">{" · ".join(m for m in meta if m)}</div>', '<div class="sat-card">']
    if row["kind"] == "pair":
        if row.get("context"):
            parts.append(f'<div class="sat-context">{esc(row["context"])}</div>')
        question = edited[0] if edited else row["question"]
        answer = edited[1] if edited else row["answer"]
        parts.append(
            f'<div class="sat-turn"><div class="sat-speaker">{esc(row.get("question_speaker") or "Q")}</div>'
            f'<div class="sat-q">{esc(question)}</div></div>'
        )
        if row.get("is_silence") and not (answer or "").strip():
            answer_html = '<span class="sat-silence">(silence: no answer was given)</span>'
        else:
            answer_html = esc(answer)
        parts.append(
            f'<div class="sat-turn"><div class="sat-speaker">{esc(row.get("answer_speaker") or "A")}</div>'
            f'<div class="sat-a">{answer_html}</div></div>'
        )
    else:
        parts.append(f'<div class="sat-a">{esc(row["text"])}</div>')
    parts.append("</div>")
    return "".join(parts)


def review_view(config: AppConfig, workspace: Workspace, store: ResponseStore, queue: pl.DataFrame,
                selection: pl.DataFrame) -> None:
    keys = selection["key"].to_list()
    reviewer = reviewer_name()
    if not keys:
        st.session_state["cursor"] = None
        st.success("Nothing left in this queue.  Widen the filters (sidebar) to see more.", icon=":material/celebration:")
        undo_row(config, None, reviewer)
        return
    current = st.session_state["cursor"]
    if current not in keys:
        current = keys[0]
        st.session_state["cursor"] = current
    index = keys.index(current)
    row = selection.row(index, named=True)
    next_key = after_decision(keys, current)

    done = progress(queue)
    top_left, top_mid, top_right = st.columns([3.2, 1.6, 1.2], vertical_alignment="center")
    with top_left:
        st.markdown(
            f"**Item {index + 1} of {len(keys)}** in this queue &nbsp;·&nbsp; "
            f"{done.n_reviewed} of {done.n_items} reviewed in the workspace",
        )
    with top_mid:
        st.progress(done.fraction)
    with top_right:
        prev_col, next_col = st.columns(2, gap="small")
        prev_col.button("Prev", key="prev", shortcut=KEYS["prev"], on_click=act_move,
                        args=(neighbour(keys, current, -1),), width="stretch")
        next_col.button("Next", key="next", shortcut=KEYS["next"], on_click=act_move,
                        args=(neighbour(keys, current, 1),), width="stretch")
    why = [badge(reason, "why") for reason in (row["why"] or "").split("; ") if reason]
    st.markdown(state_badge(row) + "".join(why), unsafe_allow_html=True)

    left, right = st.columns([1.55, 1], gap="large")
    with left:
        edited = None
        if row["decision_state"] == "edit":
            edited = edited_text(row)
        st.markdown(item_card(row, edited), unsafe_allow_html=True)
        if edited:
            with st.expander("This item's standing edit, against the original", expanded=False):
                st.markdown(diff_block(row["question"] or "", row["answer"] or "", *edited), unsafe_allow_html=True)

        if st.session_state["editing"]:
            edit_panel(config, row, next_key)
        else:
            action_bar(config, row, current, next_key, reviewer)
        provenance(workspace, row)
        if team_panels.current() is None or team_panels.current().shows_others(row):  # team hook: blind review
            history(store, row)
    with right:
        suggestions(queue, row, keys)
        team_panels.item_panels(row, queue)  # team hook: guidelines, agents, similar, draft, comments, keyboard


def action_bar(config: AppConfig, row: dict[str, Any], current: str, next_key: str | None, reviewer: str) -> None:
    disabled = not reviewer
    ch = row["content_hash"]
    st.text_input("Note (optional, saved with your next decision)", key="note", placeholder="why, in a few words",
                  label_visibility="collapsed")
    buttons = st.columns(4, gap="small")
    buttons[0].button("Accept", key="accept", type="primary", shortcut=KEYS["accept"], disabled=disabled,
                      on_click=act_decide, args=(config, current, ch, "accept", next_key), width="stretch")
    question, answer = edited_text(row) if row["decision_state"] == "edit" else (row["question"], row["answer"])
    buttons[1].button("Edit", key="edit", shortcut=KEYS["edit"], disabled=disabled or row["kind"] != "pair",
                      on_click=act_start_edit, args=(question or "", answer or ""), width="stretch")
    buttons[2].button("Skip", key="skip", shortcut=KEYS["skip"], on_click=act_skip, args=(current, next_key),
                      width="stretch")
    buttons[3].button("Undo", key="undo", shortcut=KEYS["undo"], disabled=disabled, on_click=act_undo,
                      args=(config, current), width="stretch")
    st.markdown('<div class="sat-meta">Reject, with the reason:</div>', unsafe_allow_html=True)
    per_row = 3
    for first in range(0, len(REASONS), per_row):
        columns = st.columns(per_row, gap="small")
        for column, reason in zip(columns, REASONS[first : first + per_row]):
            column.button(reason, key=f"reject:{reason}", shortcut=REASON_KEYS[reason], disabled=disabled,
                          on_click=act_decide, args=(config, current, ch, "reject", next_key, reason),
                          width="stretch")
    st.markdown(shortcut_legend(), unsafe_allow_html=True)


def diff_block(question: str, answer: str, new_question: str, new_answer: str) -> str:
    parts = []
    for label, before, after in (("Question", question, new_question), ("Answer", answer, new_answer)):
        if before == after:
            parts.append(f'<div class="sat-meta"><b>{label}</b>: unchanged</div>')
        else:
            parts.append(f'<div class="sat-meta"><b>{label}</b></div><div class="sat-diff">{word_diff_html(before, after)}</div>')
    return "".join(parts)


def edit_panel(config: AppConfig, row: dict[str, Any], next_key: str | None) -> None:
    st.markdown("**Edit** — change the question and/or the answer; the diff below is what will be saved.")
    new_question = st.text_area("Question", key="edit_question", height=90)
    new_answer = st.text_area("Answer", key="edit_answer", height=180)
    original_q, original_a = row["question"] or "", row["answer"] or ""
    changed = (new_question.strip(), new_answer.strip()) != (original_q.strip(), original_a.strip())
    st.markdown(diff_block(original_q, original_a, new_question, new_answer), unsafe_allow_html=True)
    if changed:
        with st.expander("Unified diff"):
            st.code(unified_diff("question", original_q, new_question) + unified_diff("answer", original_a, new_answer)
                    or "(whitespace only)", language="diff")
    save, cancel, _ = st.columns([1.9, 1.1, 2])
    save.button("Save edit", key="save_edit", type="primary", shortcut="Mod+Enter", disabled=not changed,
                on_click=act_save_edit,
                args=(config, row["key"], row["content_hash"], next_key, original_q, original_a),
                width="stretch")
    cancel.button("Cancel", key="cancel_edit", shortcut="Esc", on_click=act_cancel_edit, width="stretch")
    if not changed:
        st.caption("Nothing changed yet: Ctrl+Enter in a box applies what you typed.")


def provenance(workspace: Workspace, row: dict[str, Any]) -> None:
    with st.expander("Provenance: where this item stands in its book", expanded=True):
        spans = f"characters {row['start']:,}–{row['end']:,}"
        parser = f"{row.get('parser') or ''} {row.get('parser_version') or ''}".strip()
        refs = f" · refs {', '.join(row['refs'])}" if row.get("refs") else ""
        st.markdown(
            f'<div class="sat-meta"><b>{esc(row["source_title"])}</b> · {esc(row.get("section") or "no section")}'
            f' · {spans} · parser {esc(parser)}{esc(refs)} · item <code>{esc(row["item_id"][:12])}</code></div>',
            unsafe_allow_html=True,
        )
        try:
            text = load_source_text(str(workspace.root), row["source_id"])
        except OSError as error:
            st.warning(f"The source text is not in the workspace: {error}")
            return
        st.markdown(source_window_html(text, row), unsafe_allow_html=True)
        st.markdown(
            '<div class="sat-keys"><mark class="ctx" style="background:#efe9df">context</mark> '
            '<mark style="background:#ffe9a8">question</mark> <mark style="background:#d5f0d9">answer</mark></div>',
            unsafe_allow_html=True,
        )


def history(store: ResponseStore, row: dict[str, Any]) -> None:
    responses = store.history(row["item_id"])
    with st.expander(f"History: {len(responses)} response{'s' if len(responses) != 1 else ''}", expanded=False):
        if not responses:
            st.caption("No one has reviewed this item yet.")
            return
        rows = [
            {
                "id": r.id,
                "when": r.created_at[:19].replace("T", " "),
                "reviewer": r.reviewer,
                "decision": r.decision,
                "reason": r.reason or "",
                "note": r.note or "",
                "undoes": r.undoes,
                "text changed since": r.decision != "undo" and r.content_hash != row["content_hash"],
            }
            for r in responses
        ]
        st.dataframe(pl.DataFrame(rows), hide_index=True, width="stretch")


def suggestions(queue: pl.DataFrame, row: dict[str, Any], keys: list[str]) -> None:
    st.markdown("##### Suggestions")
    a, b = st.columns(2)
    concept = row["concept_score"]
    a.metric("Concept score", "—" if concept is None else f"{concept:.2f}",
             help="Embedding similarity to contemplative exemplars, 0-1 (satsang score).")
    if concept is None:
        a.caption("not scored yet")
    elif row.get("concept_basis"):
        a.caption(f"scored on the {row['concept_basis']}")
    critic = row["critic_score"]
    b.metric("Critic score", "—" if critic is None else f"{critic:.1f} / 10",
             help=f"Aliveness critic, 0-10; {CRITIC_KEEP_THRESHOLD:g} and above counts as keep in the agreement stats.")
    if critic is None:
        reason = row.get("critic_unscored_reason") if row.get("critic_status") == "unscored" else None
        b.caption(f"unscored: {reason}" if reason else "not scored yet")
    if row.get("critic_rationale"):
        st.markdown(f'<div class="sat-meta"><b>Critic</b>: {esc(row["critic_rationale"])}</div>', unsafe_allow_html=True)
    flags = row.get("critic_flags") or []
    if flags:
        st.markdown("".join(badge(flag.replace("_", " "), "flag") for flag in flags), unsafe_allow_html=True)

    st.markdown("##### Duplicates")
    size = row.get("dedup_cluster_size")
    if size is None:
        st.caption("Dedup has not run yet (satsang dedup).")
        return
    if size <= 1:
        st.caption("Unique: no exact or near copy in the workspace.")
        return
    role = "the representative" if row["dedup_is_representative"] else f"a {row['dedup_kind']} copy"
    if not row["dedup_is_representative"] and row["item_id"] == row.get("dedup_representative"):
        role += " with the representative's own item id (one decision covers both)"
    jaccard = f", Jaccard {row['dedup_jaccard']:.2f} with the representative" if row.get("dedup_jaccard") is not None else ""
    st.markdown(
        f'<div class="sat-meta">Cluster <code>{esc(row["dedup_cluster"][:12])}</code> of {size}: this item is '
        f'{esc(role)}{esc(jaccard)}. {esc(row.get("dedup_reason") or "")}</div>',
        unsafe_allow_html=True,
    )
    members = queue.filter(pl.col("dedup_cluster") == row["dedup_cluster"]).sort(
        "dedup_is_representative", "source_order", "start", descending=[True, False, False]
    )
    shown = members.head(4).to_dicts()
    columns = st.columns(len(shown))
    for column, member in zip(columns, shown):
        with column:
            here = " · this one" if member["key"] == row["key"] else ""
            role = "representative" if member["dedup_is_representative"] else f"{member['dedup_kind']} {member['dedup_jaccard']:.2f}"
            body = member["question"] + "\n\n" + member["answer"] if member["kind"] == "pair" else member["text"]
            st.markdown(
                f'<div class="sat-member"><div class="sat-meta"><b>{esc(member["source_title"])}</b> · '
                f'{esc(member.get("section") or "")} · {esc(role)}{esc(here)}</div>'
                f'{state_badge(member)}<div style="white-space:pre-wrap">{esc(body)}</div></div>',
                unsafe_allow_html=True,
            )
            if member["key"] != row["key"] and member["key"] in keys:
                st.button("Open", key=f"open:{member['key']}", on_click=act_move, args=(member["key"],))
    if members.height > len(shown):
        st.caption(f"and {members.height - len(shown)} more: filter on this cluster id to see them all.")
    team_panels.duplicate_differences(row, members)  # team hook: the words that differ


def undo_row(config: AppConfig, current: str | None, reviewer: str) -> None:
    st.button("Undo my last decision", key="undo", shortcut=KEYS["undo"], disabled=not reviewer,
              on_click=act_undo, args=(config, current))


# ---- bulk view -----------------------------------------------------------------------


def bulk_view(config: AppConfig, selection: pl.DataFrame) -> None:
    reviewer = reviewer_name()
    st.markdown(f"#### Bulk actions on the filtered selection: {selection.height} item{'s' if selection.height != 1 else ''}")
    st.caption("Narrow the selection with the filters in the sidebar. Every bulk action shows its count and waits for your confirmation.")
    labels = {key: text for key, text in BULK_ACTIONS.items()}
    action = st.radio("Action", list(labels), format_func=labels.get, key="bulk_action")
    reason = None
    if action == "reject-all":
        reason = st.selectbox("Reason", REASONS, key="bulk_reason")
    include_decided = st.checkbox("Also change items that already have a decision", key="bulk_include_decided")
    if not reviewer:
        st.warning("Enter your name in the sidebar: bulk decisions are recorded under it.", icon=":material/front_hand:")
        return
    plan = plan_bulk(selection, action, reviewer, reason=reason, include_decided=include_decided)
    notes = []
    if plan.n_not_applicable:
        notes.append(f"{plan.n_not_applicable} in the selection are not concerned")
    if plan.n_same_id:
        notes.append(f"{plan.n_same_id} are exact copies with their representative's item id, so one decision covers both")
    if plan.n_already_decided:
        notes.append(f"{plan.n_already_decided} already have {'this' if include_decided else 'a'} decision and are left alone")
    verb = "reject" if action != "accept-all" else "accept"
    st.markdown(f"**This will {verb} {plan.count} item{'s' if plan.count != 1 else ''}** as **{esc(reviewer)}**"
                + (f" ({'; '.join(notes)})." if notes else "."))
    if plan.count:
        ids = [record["item_id"] for record in plan.records]
        preview = (
            selection.filter(pl.col("item_id").is_in(ids))
            .unique("item_id", keep="first", maintain_order=True)
            .select(
                pl.col("source_title").alias("source"), "section",
                pl.col("question").fill_null(pl.col("text")).str.slice(0, 90).alias("question / text"),
                pl.col("concept_score").round(2).alias("concept"), pl.col("critic_score").alias("critic"),
                pl.col("dedup_kind").alias("dedup"), pl.col("decision_state").alias("now"),
            )
        )
        st.dataframe(preview, hide_index=True, width="stretch", height=min(38 + 35 * preview.height, 320))
    st.checkbox(f"Yes, {verb} these {plan.count} items", key="bulk_confirm", disabled=not plan.count)
    st.button(f"Apply to {plan.count} items", key="bulk_apply", type="primary",
              disabled=not (plan.count and st.session_state.get("bulk_confirm")),
              on_click=act_bulk, args=(config, plan.records, labels[action]))


# ---- progress view -------------------------------------------------------------------


def progress_view(store: ResponseStore, queue: pl.DataFrame, selection: pl.DataFrame) -> None:
    done = progress(queue)
    responses = for_items(store.responses(), queue["item_id"])  # the workspace's items, as the data card counts them
    cols = st.columns(5)
    cols[0].metric(f"Reviewed ({done.fraction:.0%})", f"{done.n_reviewed} / {done.n_items}")
    cols[1].metric("Accepted", done.by_decision.get("accept", 0))
    cols[2].metric("Rejected", done.by_decision.get("reject", 0))
    cols[3].metric("Edited", done.by_decision.get("edit", 0))
    cols[4].metric("Changed since review", done.by_decision.get(CHANGED, 0))
    st.progress(done.fraction)

    left, right = st.columns([3, 2], gap="large")
    with left:
        st.markdown("##### Per source")
        st.dataframe(progress_by_source(queue), hide_index=True, width="stretch",
                     column_config={"fraction": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent")})
    with right:
        st.markdown("##### Per reviewer")
        per_reviewer = reviewer_counts(responses)
        if per_reviewer.height:
            st.dataframe(per_reviewer, hide_index=True, width="stretch")
        else:
            st.caption("No decisions yet.")

    st.markdown("##### Score distributions by decision")
    all_scores = score_frame(queue)
    scored = set(all_scores["score"]) if all_scores.height else set()
    scores = all_scores
    if scores.height and not st.toggle("Include items not reviewed yet", value=True, key="chart_unreviewed"):
        scores = scores.filter(~pl.col("decision").is_in([UNREVIEWED, CHANGED]))
    charts = st.columns(2)
    for column, (label, step, extent) in zip(
        charts, (("concept score", 0.05, (0.0, 1.0)), ("critic score", 0.5, (0.0, 10.0)))
    ):
        data = scores.filter(pl.col("score") == label) if scores.height else scores
        with column:
            if label not in scored:
                st.caption(f"{label}: not scored yet")
            elif data.height == 0:
                st.caption(f"{label}: no reviewed item has one yet")
            else:
                st.altair_chart(histogram(data, label, step, extent), width="stretch")

    st.markdown("##### Agreement")
    left, right = st.columns(2, gap="large")
    with left:
        st.markdown("**Between reviewers** (Cohen's kappa, keep = accept or edit vs reject, on items both decided)")
        pairs = reviewer_agreement(responses)
        if pairs.height == 0:
            st.caption("No item has been decided by two reviewers yet.")
        else:
            st.dataframe(pairs.with_columns(pl.col("kappa").round(3), pl.col("agreement").round(3),
                                            pl.col("kappa").map_elements(kappa_words, return_dtype=pl.String).alias("reads as")),
                         hide_index=True, width="stretch")
        team_panels.blind_agreement_panel(responses)  # team hook: kappa on blind overlaps only
    with right:
        st.markdown(f"**Critic vs curators** (critic score ≥ {CRITIC_KEEP_THRESHOLD:g} counts as keep)")
        agreement = critic_agreement(queue)
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


def histogram(data: pl.DataFrame, label: str, step: float, extent: tuple[float, float]):
    """Stacked histogram of one score, coloured by decision state, over the score's whole range."""
    import altair as alt

    colours = alt.Scale(domain=list(DECISION_STATES), range=["#c9c1b6", "#3a9a57", "#c8553d", "#4a78c2", "#e0a526"])
    return (
        alt.Chart(data.to_pandas(), title=label)
        .mark_bar(binSpacing=1)
        .encode(
            x=alt.X("value:Q", bin=alt.Bin(step=step, extent=list(extent)), title=label,
                    scale=alt.Scale(domain=list(extent))),
            y=alt.Y("count():Q", title="items", stack=True),
            color=alt.Color("decision:N", scale=colours, title="decision"),
            order=alt.Order("decision:N"),
            tooltip=[alt.Tooltip("decision:N"), alt.Tooltip("count():Q", title="items")],
        )
        .properties(height=220)
    )


# ---- the page ------------------------------------------------------------------------


def main() -> None:
    st.set_page_config(page_title="Satsang review", page_icon=":material/self_improvement:", layout="wide", initial_sidebar_state="expanded")
    st.markdown(CSS, unsafe_allow_html=True)
    st.html(ESC_LEAVES_TEXT_BOXES, unsafe_allow_javascript=True, width="content")
    config = app_config()
    try:
        workspace = Workspace.open(config.workspace)
    except WorkspaceError as error:
        st.error(str(error))
        st.stop()
    session_defaults()
    try:
        store = open_store(config)
    except ResponseStoreError as error:
        st.error(f"Cannot open the decisions database: {error}")
        st.stop()
    try:
        items, sources = load_tables(str(workspace.root), workspace.generation)
        queue = build_queue(items, sources, store.state(), skipped=st.session_state["skipped"])
        chosen = sidebar(queue, list(store.reviewers()))
        team = team_panels.TeamContext.load(config, workspace, store, reviewer_name(), items, sources)  # team hook
        team.refuse_unknown_reviewer()  # team hook: a name not on the reviewer list stops here
        team.sidebar_scores(queue)  # team hook: sort and filter by any suggestion score
        selection = team.sort_and_filter(apply_filter(queue, chosen))  # team hook (was: apply_filter(queue, chosen))

        message = st.session_state.pop("flash", None)
        if message:
            st.toast(message[0], icon=message[1])
        view = st.segmented_control("View", VIEWS, key="view", required=True, label_visibility="collapsed")
        if queue.height == 0:
            st.info("This workspace has no items yet: satsang ingest BOOK.txt --kind dialogue")
            return
        if view == "Bulk actions":
            bulk_view(config, selection)
        elif view == "Progress":
            progress_view(store, queue, selection)
        elif view in team_panels.TEAM_VIEWS:  # team hook
            team_panels.team_view(view, queue)
        else:
            # team hook: this reviewer's queue (blind, assigned items first, skips kept, draft restored)
            queue, selection = team.review_queue(queue, chosen, apply_filter)
            review_view(config, workspace, store, queue, selection)
    finally:
        store.close()


if __name__ == "__main__":
    main()
