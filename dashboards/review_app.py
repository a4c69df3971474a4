"""The review app: curators accept, reject (with a reason) or edit the items of a workspace.

Run as:

    satsang review [--workspace DIR] [--db URL] [--address 127.0.0.1] [--port N]
    streamlit run dashboards/review_app.py -- --workspace DIR [--db URL]

The workspace comes from `--workspace` (after Streamlit's `--`), else
$SATSANG_WORKSPACE, else ./satsang-workspace; the decisions database from
`--db`, else $SATSANG_DB_URL, else SQLite inside the workspace
(curation.responses.ResponseStore). Every decision is appended there; nothing is
overwritten, so undo is a response too.

Three views (and the team's Search and Likely mistakes, dashboards/team_panels.py):

- Review: the queue (dashboards/queue.py orders it by what most needs a human), one
  item at a time (an item found in two sources is shown once), its provenance and
  suggestions beside it, and the keyboard: A accept, 1-6 reject with reason n, E edit
  (the caret goes to the answer; Ctrl+Enter saves), S skip, U undo, J/K next/previous.
  Reason 6, "other", puts the caret in the note; Enter there rejects. Enter or Esc
  leaves a text box, so the next key is a shortcut again.
  (R cannot be a shortcut: Streamlit keeps R for "rerun" and C for "clear cache".)
- Bulk: one action over the filtered selection, with its count and a confirm step; U undoes it.
- Progress (dashboards/review_progress.py): reviewed / total per reviewer and per source, score distributions by
  decision, Cohen's kappa between reviewers and between the critic and curators.

Every decision is bound to the item on screen: its buttons are keyed by the item id
and content hash they were drawn for, and a press the server receives for an item
other than the one this session now shows (a key pressed before the page redrew) is
refused with a notice, never recorded twice or on the wrong item.

Speed: what depends on the items alone (the queue's need, titles, facets) is cached
per workspace generation; the queue in order per review-state version (the store's
last response id) and skip list; each filtered selection per filter. A keypress at
50,000 items then costs a join, a sort of narrow columns and the one row drawn
(bench/review.py measures it).

Where panels plug in: `SIDEBAR_PANELS` (drawn in the sidebar under the filters) and
`ITEM_PANELS` (drawn beside the item), each a function of the `ReviewContext` (and the
row on screen), so features such as a reviewer list or guidelines add a function there.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
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
    UNREVIEWED,
    QueueFilter,
    Progress,
    QueueView,
    base_queue,
    parse_talk_range,
    plan_bulk,
    queue_view,
    why_expression,
)
from curation.team import group_words
from dashboards.review_progress import progress_view
from dashboards.review_html import (
    CSS,
    KEYBOARD_SCRIPT,
    badge,
    diff_block,
    edited_text,
    esc,
    focus_script,
    item_card,
    original_text,
    shortcut_legend,
    source_window_html,
    state_badge,
    unified_diff,
)

DB_URL_ENV = "SATSANG_DB_URL"
VIEWS = ("Review", "Bulk actions", "Progress", *team_panels.TEAM_VIEWS)  # team hook: Search, Likely mistakes
DEFAULT_STATES = [UNREVIEWED, CHANGED]

# Keyboard shortcuts, as Streamlit's `shortcut=` names them; reasons take 1-6 in REASONS order.
KEYS = {"accept": "A", "edit": "E", "skip": "S", "undo": "U", "next": "J", "prev": "K"}
REASON_KEYS = {reason: str(number) for number, reason in enumerate(REASONS, start=1)}

# Every filter widget's session key and its "no restriction" value: Reset sets each back (bug: deleting
# the keys left the browser's widgets showing, and sending back, the old values).
FILTER_DEFAULTS: dict[str, Any] = {
    "f_sources": [],
    "f_kinds": [],
    "f_talks": "",
    "f_concept": (0.0, 1.0),
    "f_critic": (0.0, 10.0),
    "f_flags": [],
    "f_unscored": False,
    "f_cluster_mode": CLUSTER_MODES[0],
    "f_cluster": "",
    "f_states": DEFAULT_STATES,
    "f_reviewers": [],
    "f_text": "",
}

NOTE_BOX = 'input[placeholder="why, in a few words"]'
BULK_PREVIEW_ROWS = 200


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


# ---- data, cached: per generation, per review-state version, per filter -------------------


@dataclass(frozen=True)
class Workbench:
    """What the app knows from one generation of the items: generations never change, so it is cached for good."""

    base: pl.DataFrame  # dashboards.queue.base_queue
    source_titles: dict[str, str]  # source_id -> title, in ingest order
    kinds: tuple[str, ...]
    n_items: int  # distinct item ids


@st.cache_resource(show_spinner=False, max_entries=2)
def load_workbench(root: str, generation: int) -> Workbench:
    workspace = Workspace(Path(root))
    base = base_queue(workspace.items(), workspace.sources())
    titles = base.select("source_id", "source_title", "source_order").unique("source_id").sort("source_order")
    kinds = tuple(sorted(base["kind"].drop_nulls().unique().to_list()))
    return Workbench(base, dict(zip(titles["source_id"], titles["source_title"])), kinds, base["item_id"].n_unique())


@st.cache_resource(show_spinner=False)
def warm_imports() -> threading.Thread:
    """Import pandas and pyarrow in the background, once per server process.

    Streamlit's st.dataframe imports them on first use: seconds of a first item's
    history or a first Progress tab otherwise, while the reviewer waits.
    """
    thread = threading.Thread(target=lambda: [importlib.import_module(name) for name in ("pyarrow", "pandas")],
                              name="satsang-warm-imports", daemon=True)
    thread.start()
    return thread


@st.cache_resource(show_spinner=False, max_entries=2)
def known_item_ids(root: str, generation: int, _bench: Workbench) -> frozenset[str]:
    return frozenset(_bench.base["item_id"].to_list())


def workspace_item_ids(config: AppConfig) -> frozenset[str]:
    """The ids a decision may name: the items of the workspace's current generation (curation.review.record_decisions)."""
    workspace = Workspace(config.workspace)
    root = str(workspace.root)
    return known_item_ids(root, workspace.generation, _bench=load_workbench(root, workspace.generation))


@st.cache_resource(show_spinner=False, max_entries=8)
def load_source_text(root: str, source_id: str) -> str:
    return Workspace(Path(root)).source_text(source_id)


@dataclass(frozen=True)
class Snapshot:
    """The queue at one version of the review state (and one skip list)."""

    token: tuple  # what it was built from: the cache key of everything derived from it
    view: QueueView
    done: Progress
    reviewers: tuple[str, ...]  # everyone with a response in the store


@st.cache_resource(show_spinner=False, max_entries=8)
def load_snapshot(root: str, generation: int, store_location: str, version: int, skipped: tuple[str, ...],
                  _bench: Workbench, _store: ResponseStore) -> Snapshot:
    view = queue_view(_bench.base, _store.state(), skipped)
    done = view.progress()
    token = (root, generation, store_location, version, skipped)
    return Snapshot(token, view, done, tuple(_store.reviewers()))


@dataclass(frozen=True)
class Selection:
    """The filtered queue, one row per item, in queue order: row numbers of the snapshot's frame and their keys."""

    rows: pl.Series
    keys: pl.Series

    def __len__(self) -> int:
        return self.rows.len()

    def index_of(self, key: str | None) -> int | None:
        if key is None:
            return None
        index = self.keys.index_of(key)
        return None if index is None else int(index)


@st.cache_resource(show_spinner=False, max_entries=32)
def select_items(token: tuple, filters: QueueFilter, _snapshot: Snapshot) -> Selection:
    rows = _snapshot.view.select(filters)
    return Selection(rows, _snapshot.view.frame["key"].gather(rows))


@st.cache_resource(show_spinner=False, max_entries=8)
def select_all_rows(token: tuple, filters: QueueFilter, _snapshot: Snapshot) -> pl.Series:
    """Every row passing the filters (copies of an item in other sources too): what bulk actions plan over."""
    return _snapshot.view.select(filters, distinct=False)


def reviewer_snapshot(team: team_panels.TeamContext, snapshot: Snapshot) -> Snapshot:
    """The team's snapshot as this reviewer's queue (team_panels.TeamContext.review_view), cached per what it is built from."""
    key = team.review_key()
    if key is None:
        return snapshot
    return reviewer_snapshot_of((*snapshot.token, *key), _snapshot=snapshot, _team=team)


@st.cache_resource(show_spinner=False, max_entries=8)
def reviewer_snapshot_of(token: tuple, _snapshot: Snapshot, _team: team_panels.TeamContext) -> Snapshot:
    view = _team.review_view(_snapshot.token, _snapshot.view)
    return Snapshot(token, view, view.progress(), _snapshot.reviewers)


def row_at(snapshot: Snapshot, row_number: int) -> dict[str, Any]:
    """One row of the queue, with its `why` (written for the rows drawn only; a reviewer's group first)."""
    frame = snapshot.view.frame
    why = why_expression()
    if "team_group" in frame.columns:
        why = pl.concat_str([group_words(), why], separator="; ", ignore_nulls=True)
    return frame.slice(row_number, 1).with_columns(why.alias("why")).row(0, named=True)


@dataclass
class ReviewContext:
    """Everything a view or a panel draws from, for one run of the page."""

    config: AppConfig
    workspace: Workspace
    store: ResponseStore
    bench: Workbench
    snapshot: Snapshot
    filters: QueueFilter
    selection: Selection
    reviewer: str
    extras: dict[str, Any] = field(default_factory=dict)  # for panels to pass things along

    @property
    def queue(self) -> pl.DataFrame:
        """Every row of the workspace with its decision state (items' order, not queue order)."""
        return self.snapshot.view.frame


# ---- where panels plug in ----------------------------------------------------------------
# A sidebar panel is drawn under the filters; an item panel in the column beside the item.
# Append to these lists (from a module of the feature) to add one; each draws into the
# container it is called in.

SidebarPanel = Callable[[ReviewContext], None]
ItemPanel = Callable[[ReviewContext, dict[str, Any]], None]
SIDEBAR_PANELS: list[SidebarPanel] = []
ITEM_PANELS: list[ItemPanel] = [  # after the app's own: provenance, suggestions, duplicates
    lambda ctx, row: team_panels.item_panels(row, ctx.queue),  # team hook: guidelines, agents, similar, draft, comments, keys
]


# ---- session -------------------------------------------------------------------------


def session_defaults() -> None:
    defaults: dict[str, Any] = {
        "cursor": None,
        "skipped": [],
        "undo_stack": [],  # this session's decisions, newest last: dicts (see remember_decision)
        "editing": None,  # the key of the item being edited
        "pending_other": None,  # the key of the item waiting for its note to be rejected as "other"
        "focus": None,  # a CSS selector to put the caret in once the page is drawn
        "focus_nonce": 0,
        "flash": None,
        "view": VIEWS[0],
        "refused": 0,  # presses refused because the page had not caught up
        "selection_keys": None,  # the keys of the selection drawn last: callbacks step through them
    }
    for name, value in {**defaults, **FILTER_DEFAULTS}.items():
        st.session_state.setdefault(name, list(value) if isinstance(value, list) else value)
    if "reviewer" not in st.session_state:
        st.session_state["reviewer"] = normalise_reviewer_name(st.query_params.get("reviewer", ""))


def reviewer_name() -> str:
    return normalise_reviewer_name(st.session_state.get("reviewer"))  # team hook: "Asha" and "asha " are one reviewer


def flash(message: str, icon: str = ":material/check_circle:") -> None:
    st.session_state["flash"] = (message, icon)


def request_focus(selector: str) -> None:
    st.session_state["focus"] = selector
    st.session_state["focus_nonce"] += 1


def widget_key(name: str, row: dict[str, Any]) -> str:
    """A widget key bound to the item drawn and its exact text: a press of a stale button names its own item."""
    return f"{name}@{row['key']}@{row['content_hash'][:16]}"


# ---- actions (widget callbacks: they run before the rerun that shows their result) ----


def item_id_of(key: str) -> str:
    return key.split(":", 1)[1]


def stepped(key: str | None, step: int) -> str | None:
    """The key `step` places from `key` in the selection drawn last (clamped); its first key if `key` is not in it."""
    keys: pl.Series | None = st.session_state.get("selection_keys")
    if keys is None or keys.len() == 0:
        return None
    index = keys.index_of(key) if key is not None else None
    if index is None:
        return keys[0]
    return keys[min(max(int(index) + step, 0), keys.len() - 1)]


def after_decision_key(key: str) -> str | None:
    """Where the cursor goes once `key` is decided: the next item, else the one before, else none."""
    following = stepped(key, 1)
    if following is not None and following != key:
        return following
    previous = stepped(key, -1)
    return previous if previous != key else None


def refuse_stale(key: str) -> bool:
    """True (and a notice) when a press names an item other than the one this session shows now.

    That happens when a key is pressed again before the page has redrawn: the press
    belongs to the item already decided, and recording it would decide it twice.
    """
    if st.session_state.get("cursor") == key:
        return False
    st.session_state["refused"] += 1
    flash("Not recorded: that key press came before the page had moved on to the next item. "
          "Nothing was written twice; the item shown now is waiting for you.", ":material/block:")
    return True


def remember_decision(entry: dict[str, Any]) -> None:
    st.session_state["undo_stack"] = [*st.session_state["undo_stack"], entry][-200:]


def act_decide(config: AppConfig, key: str, content_hash: str, decision: str, reason: str | None = None,
               edited_question: str | None = None, edited_answer: str | None = None) -> None:
    reviewer = reviewer_name()
    if not reviewer:
        flash("Enter your name in the sidebar first.", ":material/front_hand:")
        return
    if refuse_stale(key):
        return
    note = str(st.session_state.get("note") or "").strip()
    if reason == "other" and not note:
        st.session_state["pending_other"] = key
        request_focus(NOTE_BOX)
        flash("Reason 'other' needs a note: write it in the note box, then Enter rejects.", ":material/edit_note:")
        return
    last = st.session_state["undo_stack"][-1] if st.session_state["undo_stack"] else None
    if (last and last.get("key") == key and last["reviewer"] == reviewer and last.get("decision") == decision
            and last.get("reason") == reason and last.get("content_hash") == content_hash and decision != "edit"):
        flash(f"Not recorded: you have just {decision}ed this item already.", ":material/block:")
        return
    following = after_decision_key(key)
    store = open_store(config)
    try:
        [stored] = record_decisions(store, [{"item_id": item_id_of(key), "content_hash": content_hash, "reviewer": reviewer,
                                             "decision": decision, "reason": reason, "note": note,
                                             "edited_question": edited_question, "edited_answer": edited_answer}],
                                    workspace_item_ids(config))
        team_panels.after_recorded(store, [stored])  # team hook: blind mark; draft and skip withdrawn
    except InvalidResponse as error:
        flash(f"Not recorded: {error}", ":material/error:")
        return
    finally:
        store.close()
    remember_decision({"kind": "one", "key": key, "reviewer": reviewer, "decision": decision, "reason": reason,
                       "content_hash": content_hash, "response_ids": [stored.id]})
    st.session_state["skipped"] = [k for k in st.session_state["skipped"] if k != key]
    st.session_state["cursor"] = following
    st.session_state["editing"] = None
    st.session_state["pending_other"] = None
    st.session_state["note"] = ""
    label = {"accept": "Accepted", "reject": f"Rejected ({reason})", "edit": "Saved the edit"}[decision]
    flash(f"{label}. U undoes it.", ":material/delete:" if decision == "reject" else ":material/check_circle:")


def act_note_entered(config: AppConfig, key: str, content_hash: str) -> None:
    """Enter in the note box after reason "other" was asked for: the reject goes through with the note."""
    if st.session_state.get("pending_other") == key and str(st.session_state.get("note") or "").strip():
        act_decide(config, key, content_hash, "reject", "other")


def act_save_edit(config: AppConfig, key: str, content_hash: str, question: str, answer: str, passage: bool) -> None:
    """Record an edit of what changed: a field left as it was is stored as None (keep the original).

    A passage's text is stored as `edited_answer` (see review_html.edited_text).
    """
    new_question = question if passage else st.session_state.get("edit_question", question)
    new_answer = st.session_state.get("edit_answer", answer)
    edited_question = new_question if new_question.strip() != question.strip() else None
    edited_answer = new_answer if new_answer.strip() != answer.strip() else None
    if edited_question is None and edited_answer is None:
        flash("Nothing changed: edit the text first.", ":material/info:")
        return
    act_decide(config, key, content_hash, "edit", None, edited_question, edited_answer)


def act_skip(key: str) -> None:
    if refuse_stale(key):
        return
    following = after_decision_key(key)
    st.session_state["skipped"] = [*[k for k in st.session_state["skipped"] if k != key], key]
    team_panels.remember_skip(key, reviewer_name())  # team hook: the skip outlives the session
    act_move(following)


def act_step(step: int) -> None:
    """Next / previous, from the item this session shows now (so fast presses move one item each)."""
    act_move(stepped(st.session_state.get("cursor"), step))


def act_move(key: str | None) -> None:
    st.session_state["cursor"] = key
    st.session_state["editing"] = None
    st.session_state["pending_other"] = None  # a note asked for on the item left is not a reject of the next one


def act_undo(config: AppConfig) -> None:
    """Undo this reviewer's latest decision (or bulk action) of the session; with none left, their standing decision on the item shown.

    The store's undo reverts an item's effective response whoever made it, so this
    undoes only responses that still stand and are this reviewer's: another
    curator's decision is overruled by recording a new one, not undone.
    """
    reviewer = reviewer_name()
    if not reviewer:
        flash("Enter your name in the sidebar first.", ":material/front_hand:")
        return
    stack = list(st.session_state["undo_stack"])
    mine = [index for index, entry in enumerate(stack) if entry["reviewer"] == reviewer]
    if mine:
        entry = stack.pop(mine[-1])
        st.session_state["undo_stack"] = stack
        if entry["kind"] == "bulk":
            undo_bulk(config, entry)
            return
        target = entry["key"]
    else:
        target = st.session_state.get("cursor")
    if target is None:
        flash("Nothing to undo.", ":material/info:")
        return
    store = open_store(config)
    try:
        standing = team_panels.standing_for_undo(store, item_id_of(target), reviewer)  # team hook (was: store.current)
        if standing is None:
            flash("Nothing to undo on this item: it has no standing decision.", ":material/info:")
            return
        if standing.reviewer != reviewer:
            flash(f"The standing decision is {standing.reviewer}'s ({standing.decision}): record your own decision instead.",
                  ":material/info:")
            return
        team_panels.undo(store, item_id_of(target), reviewer)  # team hook (was: store.undo): blind undoes one's own
    finally:
        store.close()
    st.session_state["cursor"] = target
    st.session_state["editing"] = None
    flash(f"Undid your {standing.decision}: the item is back as it was before it.", ":material/undo:")


def undo_bulk(config: AppConfig, entry: dict[str, Any]) -> None:
    """Undo every decision of one bulk action that still stands (one transaction)."""
    store = open_store(config)
    try:
        standing = store.state().filter(pl.col("response_id").is_in(entry["response_ids"]))
        undos = [{"item_id": item_id, "reviewer": entry["reviewer"], "decision": "undo"} for item_id in standing["item_id"]]
        store.record_many(undos)
    finally:
        store.close()
    left = len(entry["response_ids"]) - len(undos)
    flash(f"Undid the bulk action ({entry['label']}): {len(undos)} decisions reverted"
          + (f"; {left} had been changed since and were left alone." if left else "."), ":material/undo:")


def act_start_edit(key: str, question: str, answer: str) -> None:
    if refuse_stale(key):
        return
    st.session_state["editing"] = key
    st.session_state["edit_question"] = question
    st.session_state["edit_answer"] = answer
    request_focus('textarea[aria-label="Answer"], textarea[aria-label="Passage"]')


def act_cancel_edit() -> None:
    st.session_state["editing"] = None


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
    if written:
        remember_decision({"kind": "bulk", "label": label, "reviewer": written[0].reviewer,
                           "response_ids": [response.id for response in written]})
    flash(f"{label}: recorded {len(written)} decisions. U undoes them.", ":material/check_circle:")


def act_reset_filters() -> None:
    for name, value in FILTER_DEFAULTS.items():
        st.session_state[name] = list(value) if isinstance(value, list) else value
    team_panels.reset_filters()  # team hook: the score sort and filter


def act_normalise_reviewer() -> None:
    name = normalise_reviewer_name(st.session_state.get("reviewer"))
    st.session_state["reviewer"] = name
    if name != st.session_state.get("queue_reviewer") and team_panels.current() is not None and team_panels.current().registered:
        st.session_state["cursor"] = None  # with a reviewer list each reviewer has a queue of their own: start at its head
    st.session_state["queue_reviewer"] = name


# ---- sidebar: reviewer and filters ---------------------------------------------------


def sidebar(bench: Workbench, reviewers: tuple[str, ...]) -> QueueFilter:
    with st.sidebar:
        st.markdown("### :material/self_improvement: Satsang review")
        name = st.text_input("Your name", key="reviewer", placeholder="who is reviewing?", on_change=act_normalise_reviewer,
                             help="Kept for this session and in the page URL; every decision is recorded under it "
                                  "(lower case, single spaces: 'Asha' and 'asha' are one reviewer).")
        name = normalise_reviewer_name(name)
        if name:
            if st.query_params.get("reviewer") != name:
                st.query_params["reviewer"] = name
        else:
            st.warning("Enter your name to start reviewing.", icon=":material/front_hand:")

        st.markdown("#### Filters")
        titles = bench.source_titles
        chosen_sources = st.multiselect("Source", list(titles), format_func=lambda s: titles.get(s, s[:12]), key="f_sources")
        chosen_kinds = st.multiselect("Kind", list(bench.kinds), key="f_kinds") if len(bench.kinds) > 1 else []
        talk_text = st.text_input("Talks", key="f_talks", placeholder="e.g. 300-400, or 312",
                                  help="A range of talk numbers (the number in the section title), or one talk.")
        try:
            talk_range = parse_talk_range(talk_text)
        except ValueError as error:
            st.error(str(error), icon=":material/error:")
            talk_range = None
        concept = st.slider("Concept score", 0.0, 1.0, step=0.05, key="f_concept",
                            help="Narrowing it leaves out items not scored yet.")
        critic = st.slider("Critic score", 0.0, 10.0, step=0.5, key="f_critic",
                           help="Narrowing it leaves out items the critic did not score.")
        flags = st.multiselect("Critic flags (any of)", list(FLAGS), key="f_flags")
        unscored = st.checkbox("Only items the critic could not score", key="f_unscored")
        cluster_mode = st.selectbox("Duplicates", CLUSTER_MODES, key="f_cluster_mode")
        cluster_id = st.text_input("Cluster id", key="f_cluster", placeholder="dedup cluster (prefix)")
        states = st.multiselect("Decision state", list(DECISION_STATES), key="f_states",
                                help="Empty: every item. The default is what still needs a human.")
        decided_by = st.multiselect("Decided by", sorted(set(reviewers) | set(st.session_state["f_reviewers"])), key="f_reviewers")
        text = st.text_input("Text contains", key="f_text")
        st.button("Reset filters", key="reset_filters", on_click=act_reset_filters, width="stretch")
    return QueueFilter(
        sources=tuple(chosen_sources),
        kinds=tuple(chosen_kinds),
        talk_range=talk_range,
        concept_range=None if tuple(concept) == (0.0, 1.0) else tuple(concept),
        critic_range=None if tuple(critic) == (0.0, 10.0) else tuple(critic),
        flags=tuple(flags),
        unscored_only=unscored,
        cluster_mode=cluster_mode,
        cluster_id=cluster_id,
        decision_states=tuple(states),
        reviewers=tuple(decided_by),
        text=text,
    )


# ---- review view ---------------------------------------------------------------------


def review_view(ctx: ReviewContext) -> None:
    selection = ctx.selection
    st.session_state["selection_keys"] = selection.keys
    if len(selection) == 0:
        st.session_state["cursor"] = None
        st.success("Nothing left in this queue.  Widen the filters (sidebar) to see more.", icon=":material/celebration:")
        st.button("Undo my last decision", key="undo", shortcut=KEYS["undo"], disabled=not ctx.reviewer,
                  on_click=act_undo, args=(ctx.config,))
        return
    index = selection.index_of(st.session_state["cursor"])
    if index is None:
        index = 0
        st.session_state["cursor"] = selection.keys[0]
    row = row_at(ctx.snapshot, int(selection.rows[index]))

    done = ctx.snapshot.done
    top_left, top_mid, top_right = st.columns([3.2, 1.6, 1.2], vertical_alignment="center")
    with top_left:
        refused = st.session_state["refused"]
        st.markdown(
            f'<div class="sat-position">Item {index + 1:,} of {len(selection):,} in this queue &nbsp;·&nbsp; '
            f'{done.n_reviewed:,} of {done.n_items:,} items reviewed</div>'
            + (f'<div class="sat-refused">{refused} early key press{"es" if refused != 1 else ""} refused this session</div>'
               if refused else ""),
            unsafe_allow_html=True,
        )
    with top_mid:
        st.progress(done.fraction)
    with top_right:
        prev_col, next_col = st.columns(2, gap="small")
        prev_col.button("Prev", key="prev", shortcut=KEYS["prev"], on_click=act_step, args=(-1,), width="stretch")
        next_col.button("Next", key="next", shortcut=KEYS["next"], on_click=act_step, args=(1,), width="stretch")
    why = [badge(reason, "why") for reason in (row["why"] or "").split("; ") if reason]
    st.markdown(state_badge(row) + "".join(why), unsafe_allow_html=True)

    left, right = st.columns([1.45, 1], gap="large")
    with left:
        edited = edited_text(row) if row["decision_state"] == "edit" else None
        editing = st.session_state["editing"] == row["key"]
        st.markdown(item_card(row, edited, compact=editing), unsafe_allow_html=True)
        if editing:
            edit_panel(ctx, row)
        else:
            action_bar(ctx, row)
        if edited:
            with st.expander("This item's standing edit, against the original", expanded=False):
                st.markdown(diff_block(*original_text(row), *edited, passage=row["kind"] != "pair"), unsafe_allow_html=True)
        team = team_panels.current()
        if team is None or team.shows_others(row):  # team hook: blind review hides others' decisions
            history(ctx.store, row)
    with right:
        for panel in (provenance, suggestions, duplicates, *ITEM_PANELS):
            panel(ctx, row)
    # Drawn last: the page's keyboard script takes a new marker as "this run's buttons are on screen".
    st.session_state["run_number"] = st.session_state.get("run_number", 0) + 1
    st.markdown(f'<div class="sat-run" data-run="{st.session_state["run_number"]}" hidden></div>', unsafe_allow_html=True)


def action_bar(ctx: ReviewContext, row: dict[str, Any]) -> None:
    disabled = not ctx.reviewer
    key, content_hash = row["key"], row["content_hash"]
    st.text_input("Note (optional, saved with your next decision)", key="note", placeholder="why, in a few words",
                  label_visibility="collapsed", on_change=act_note_entered, args=(ctx.config, key, content_hash))
    buttons = st.columns(4, gap="small")
    buttons[0].button("Accept", key=widget_key("accept", row), type="primary", shortcut=KEYS["accept"], disabled=disabled,
                      on_click=act_decide, args=(ctx.config, key, content_hash, "accept"), width="stretch")
    question, answer = edited_text(row) if row["decision_state"] == "edit" else original_text(row)
    buttons[1].button("Edit", key=widget_key("edit", row), shortcut=KEYS["edit"], disabled=disabled,
                      on_click=act_start_edit, args=(key, question, answer), width="stretch")
    buttons[2].button("Skip", key=widget_key("skip", row), shortcut=KEYS["skip"], on_click=act_skip, args=(key,),
                      width="stretch")
    buttons[3].button("Undo", key="undo", shortcut=KEYS["undo"], disabled=disabled, on_click=act_undo,
                      args=(ctx.config,), width="stretch")
    st.markdown('<div class="sat-meta">Reject, with the reason:</div>', unsafe_allow_html=True)
    per_row = 3
    for first in range(0, len(REASONS), per_row):
        columns = st.columns(per_row, gap="small")
        for column, reason in zip(columns, REASONS[first : first + per_row]):
            column.button(reason, key=widget_key(f"reject:{reason}", row), shortcut=REASON_KEYS[reason], disabled=disabled,
                          on_click=act_decide, args=(ctx.config, key, content_hash, "reject", reason), width="stretch")
    st.markdown(shortcut_legend(), unsafe_allow_html=True)


def edit_panel(ctx: ReviewContext, row: dict[str, Any]) -> None:
    passage = row["kind"] != "pair"
    original_q, original_a = original_text(row)
    if passage:
        st.markdown("**Edit** the passage; the diff below is what will be saved. Ctrl+Enter saves, Esc leaves the box.")
        new_question = original_q
        new_answer = st.text_area("Passage", key="edit_answer", height=220)
    else:
        st.markdown("**Edit** the question and/or the answer; the diff below is what will be saved. Ctrl+Enter saves.")
        new_question = st.text_area("Question", key="edit_question", height=90)
        new_answer = st.text_area("Answer", key="edit_answer", height=180)
    changed = (new_question.strip(), new_answer.strip()) != (original_q.strip(), original_a.strip())
    st.markdown(diff_block(original_q, original_a, new_question, new_answer, passage=passage), unsafe_allow_html=True)
    if changed:
        with st.expander("Unified diff"):
            st.code((unified_diff("question", original_q, new_question) if not passage else "")
                    + unified_diff("passage" if passage else "answer", original_a, new_answer)
                    or "(whitespace only)", language="diff")
    save, cancel, _ = st.columns([1.9, 1.1, 2])
    # No shortcut here: the page's keyboard script saves on Ctrl+Enter after the box has committed its text.
    save.button("Save edit", key=widget_key("save_edit", row), type="primary",
                on_click=act_save_edit, args=(ctx.config, row["key"], row["content_hash"], original_q, original_a, passage),
                width="stretch")
    cancel.button("Cancel", key="cancel_edit", shortcut="Esc", on_click=act_cancel_edit, width="stretch")


def provenance(ctx: ReviewContext, row: dict[str, Any]) -> None:
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
            text = load_source_text(str(ctx.workspace.root), row["source_id"])
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


def suggestions(ctx: ReviewContext, row: dict[str, Any]) -> None:
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
        if row["kind"] != "pair":
            b.caption("the critic reads question-and-answer pairs only")
        else:
            reason = row.get("critic_unscored_reason") if row.get("critic_status") == "unscored" else None
            b.caption(f"unscored: {reason}" if reason else "not scored yet")
    if row.get("critic_rationale"):
        st.markdown(f'<div class="sat-meta"><b>Critic</b>: {esc(row["critic_rationale"])}</div>', unsafe_allow_html=True)
    flags = row.get("critic_flags") or []
    if flags:
        st.markdown("".join(badge(flag.replace("_", " "), "flag") for flag in flags), unsafe_allow_html=True)


def duplicates(ctx: ReviewContext, row: dict[str, Any]) -> None:
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
    members = ctx.queue.filter(pl.col("dedup_cluster") == row["dedup_cluster"]).sort(
        "dedup_is_representative", "source_order", "start", descending=[True, False, False]
    )
    shown = members.head(4).to_dicts()
    for column, member in zip(st.columns(len(shown)), shown):
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
            if member["key"] != row["key"] and ctx.selection.index_of(member["key"]) is not None:
                st.button("Open", key=f"open:{member['key']}", on_click=act_move, args=(member["key"],))
    if members.height > len(shown):
        st.caption(f"and {members.height - len(shown)} more: filter on this cluster id to see them all.")
    team_panels.duplicate_differences(row, members)  # team hook: the words that differ


# ---- bulk view -----------------------------------------------------------------------

BULK_COLUMNS = ("item_id", "content_hash", "key", "kind", "source_title", "section", "question", "text", "concept_score",
                "critic_score", "dedup_kind", "dedup_is_representative", "dedup_representative", "decision_state",
                "decision_reason")


@st.cache_resource(show_spinner=False, max_entries=8)
def bulk_plan(token: tuple, filters: QueueFilter, action: str, reviewer: str, reason: str | None, include_decided: bool,
              _snapshot: Snapshot):
    rows = select_all_rows(token, filters, _snapshot)
    selection = _snapshot.view.frame.select(BULK_COLUMNS)[rows]
    return selection, plan_bulk(selection, action, reviewer, reason=reason, include_decided=include_decided)


def bulk_view(ctx: ReviewContext) -> None:
    reviewer = ctx.reviewer
    n_items = len(ctx.selection)
    st.markdown(f"#### Bulk actions on the filtered selection: {n_items:,} item{'s' if n_items != 1 else ''}")
    st.caption("Narrow the selection with the filters in the sidebar. Every bulk action shows its count and waits for "
               "your confirmation; U (or the Undo button) undoes the last one.")
    labels = dict(BULK_ACTIONS)
    action = st.radio("Action", list(labels), format_func=labels.get, key="bulk_action")
    reason = None
    if action == "reject-all":
        reason = st.selectbox("Reason", REASONS, key="bulk_reason")
    include_decided = st.checkbox("Also change items that already have a decision", key="bulk_include_decided")
    st.button("Undo my last decision", key="undo", shortcut=KEYS["undo"], disabled=not reviewer,
              on_click=act_undo, args=(ctx.config,))
    if not reviewer:
        st.warning("Enter your name in the sidebar: bulk decisions are recorded under it.", icon=":material/front_hand:")
        return
    selection, plan = bulk_plan(ctx.snapshot.token, ctx.filters, action, reviewer, reason, include_decided, _snapshot=ctx.snapshot)
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
        ids = pl.Series([record["item_id"] for record in plan.records[:BULK_PREVIEW_ROWS]], dtype=pl.String)
        preview = (
            selection.filter(pl.col("item_id").is_in(ids.implode()))
            .unique("item_id", keep="first", maintain_order=True)
            .select(
                pl.col("source_title").alias("source"), "section",
                pl.col("question").fill_null(pl.col("text")).str.slice(0, 90).alias("question / text"),
                pl.col("concept_score").round(2).alias("concept"), pl.col("critic_score").alias("critic"),
                pl.col("dedup_kind").alias("dedup"), pl.col("decision_state").alias("now"),
            )
        )
        if plan.count > BULK_PREVIEW_ROWS:
            st.caption(f"The first {BULK_PREVIEW_ROWS} of the {plan.count:,}:")
        st.dataframe(preview, hide_index=True, width="stretch", height=min(38 + 35 * preview.height, 320))
    st.checkbox(f"Yes, {verb} these {plan.count} items", key="bulk_confirm", disabled=not plan.count)
    st.button(f"Apply to {plan.count} items", key="bulk_apply", type="primary",
              disabled=not (plan.count and st.session_state.get("bulk_confirm")),
              on_click=act_bulk, args=(ctx.config, plan.records, labels[action]))


# ---- the page ------------------------------------------------------------------------


def main() -> None:
    st.set_page_config(page_title="Satsang review", page_icon=":material/self_improvement:", layout="wide", initial_sidebar_state="expanded")
    st.markdown(CSS, unsafe_allow_html=True)
    st.html(KEYBOARD_SCRIPT, unsafe_allow_javascript=True, width="content")
    warm_imports()
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
        root = str(workspace.root)
        bench = load_workbench(root, workspace.generation)
        version = store.last_id()
        snapshot = load_snapshot(root, workspace.generation, store.location, version,
                                 tuple(st.session_state["skipped"]), _bench=bench, _store=store)
        filters = sidebar(bench, snapshot.reviewers)
        team = team_panels.TeamContext.load(config, workspace, store, reviewer_name(), version, act_reset_filters)  # team hook
        team.refuse_unknown_reviewer()  # team hook: a name not on the reviewer list stops here
        team.sidebar_scores(snapshot.view.frame)  # team hook: sort and filter by any suggestion score
        filters = team.filters(filters)
        if st.session_state.get("view", VIEWS[0]) == VIEWS[0]:
            # team hook: this reviewer's queue (blind, assigned items first, skips kept), cached like the team's
            snapshot = reviewer_snapshot(team, snapshot)
        selection = select_items(snapshot.token, filters, _snapshot=snapshot)
        ctx = ReviewContext(config, workspace, store, bench, snapshot, filters, selection, reviewer_name())
        if SIDEBAR_PANELS:
            with st.sidebar:
                for panel in SIDEBAR_PANELS:
                    panel(ctx)

        message = st.session_state.pop("flash", None)
        if message:
            st.toast(message[0], icon=message[1])
        view = st.segmented_control("View", VIEWS, key="view", required=True, label_visibility="collapsed")
        if snapshot.view.frame.height == 0:
            st.info("This workspace has no items yet: satsang ingest BOOK.txt --kind dialogue")
            return
        if view == "Bulk actions":
            bulk_view(ctx)
        elif view == "Progress":
            progress_view(snapshot.token, snapshot.view, snapshot.done, store)
        elif view in team_panels.TEAM_VIEWS:  # team hook
            team_panels.team_view(view, ctx.queue)
        else:
            team.restore_draft(selection.keys)  # team hook: the draft saved for the item shown back in the boxes
            review_view(ctx)
        focus = st.session_state.pop("focus", None)
        if focus:
            st.html(focus_script(focus, st.session_state["focus_nonce"]), unsafe_allow_javascript=True, width="content")
    finally:
        store.close()


if __name__ == "__main__":
    main()
