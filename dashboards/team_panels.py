"""The review app's team features (issue 13), as panels and small hooks the app calls.

The logic lives in curation/ (team.py: reviewer list, plan, assignment, blind queue;
review.py: blind agreement; guidelines.py; finding.py: search, similar, word diff, scores and
agents; mistakes.py: likely mistakes; responses.py: comments, drafts, skips, reveals). This
module only draws them and wires them to the session. The app calls, each in one line:

- `TeamContext.load(...)` once per run, after the sidebar: reads the plan, the reviewer list,
  this reviewer's marks (the responses once per review-state version); `refuse_unknown_reviewer()`
  stops the page for a name not on the list; `sidebar_scores(queue)` draws the sort and filter by
  any score, and `filters(chosen)` adds them to the app's QueueFilter (so its caches key on them).
- `review_key()` and `review_view(token, view)`: this reviewer's queue over the app's cached one:
  blind (their own decisions only), their assigned items first, persisted skips after
  (dashboards.queue.reviewer_view, cached); `restore_draft(keys)` puts their saved draft back for
  the item shown.
- `shows_others(row)`: whether the history (others' decisions) may be shown; logs the reveal.
- `item_panels(row)`: guidelines, agents, find similar, draft, comments, keyboard.
- `duplicate_differences(row, members)`: the duplicates panel's word diff.
- `after_recorded(store, responses)`, `remember_skip(key, reviewer)`: in the app's decide and skip
  callbacks; `standing_for_undo` and `undo` in its undo callback (blind: one's own decision).
- `team_view(view, queue)` for TEAM_VIEWS ("Search", "Likely mistakes"), and
  `blind_agreement_panel(responses)` on the progress view.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import streamlit as st

from curation.finding import (
    agent_summary,
    agents,
    item_body,
    most_similar,
    score_columns,
    search,
    word_diff,
)
from curation.guidelines import TERMS, load_guidelines
from dashboards.queue import QueueFilter, QueueView, reviewer_view
from curation.responses import REASONS, ResponseStore
from curation.review import (
    blind_reviewer_agreement,
    join_decisions,
    kappa_words,
    reviewer_agreement,
    reviewer_state,
)
from curation.team import (
    TeamSettings,
    assignment,
    blind_ids,
    decisions_per_item,
    may_see_others,
    read_team_settings,
    refusal,
)

TEAM_VIEWS = ("Search", "Likely mistakes")
SESSION_KEY = "_team_context"
# Keys of this module's buttons, as Streamlit's `shortcut=` names them (R and C are Streamlit's own).
TEAM_KEYS = {"draft": "D", "similar": "F", "comment": "Mod+Shift+Enter"}
SORT_BY_NEED = "queue order (need)"
NO_SCORE_FILTER = "no score filter"
# The sidebar widgets this module adds and their "no restriction" values (see reset_filters).
FILTER_DEFAULTS: dict[str, Any] = {"f_team_sort": SORT_BY_NEED, "f_team_sort_desc": True, "f_team_filter": NO_SCORE_FILTER}

APP_KEYS = [
    ("A", "accept"), ("1–6", "reject with reason (" + ", ".join(REASONS) + ")"), ("E", "edit"),
    ("Ctrl+Enter", "save the edit"), ("Esc", "cancel the edit / leave a text box"), ("S", "skip (kept across sessions)"),
    ("U", "undo"), ("J / K", "next / previous"), (TEAM_KEYS["draft"], "save the note (and edit) as a draft"),
    (TEAM_KEYS["similar"], "find similar items"), ("Ctrl+Shift+Enter", "add the comment typed"),
]


def esc(text: Any) -> str:
    return html.escape(str(text if text is not None else ""))


# ---- the context of one run -----------------------------------------------------------------------


@dataclass
class TeamContext:
    """What the team features need in one run of the app, read once."""

    root: Path
    db_url: str | None
    reviewer: str  # as the app records it
    settings: TeamSettings
    registered: list[str]
    responses: pl.DataFrame
    marks: pl.DataFrame  # this reviewer's standing drafts, skips, reveals
    generation: int = 0
    score_sort: tuple[str, bool] | None = None
    score_filter: tuple[str, float, float] | None = None
    problems: list[str] = field(default_factory=list)
    reset_app_filters: Callable[[], None] | None = None  # the app's Reset (its filters and this module's)

    @classmethod
    def load(cls, config: Any, workspace: Any, store: ResponseStore, reviewer: str, version: int = -1,
             reset_app_filters: Callable[[], None] | None = None) -> TeamContext:
        """`version`: the store's last response id, so the responses are read once per review-state version."""
        problems = []
        try:
            settings = read_team_settings(workspace.root)
        except Exception as error:  # a bad review.json: say so, review as if it were absent
            problems.append(str(error))
            settings = TeamSettings()
        registered = store.registered_reviewers()
        if not registered:
            # Blindness needs names nobody can borrow: with no reviewer list, anyone may type anyone's
            # name, so review is open until the workspace has a list.
            settings = replace(settings, blind=False)
        context = cls(
            root=Path(workspace.root), db_url=config.db_url, reviewer=reviewer, settings=settings,
            registered=registered, responses=_responses(store.location, version, _store=store),
            marks=store.marks(reviewer) if reviewer else pl.DataFrame(schema={"item_id": pl.String, "kind": pl.String}),
            generation=int(getattr(workspace, "generation", 0)), problems=problems, reset_app_filters=reset_app_filters,
        )
        st.session_state[SESSION_KEY] = context
        for problem in problems:
            st.warning(problem, icon=":material/error:")
        if not context.registered:
            st.sidebar.caption("No reviewer list: any name is taken. `satsang reviewers add NAME` makes one.")
        return context

    def open_store(self) -> ResponseStore:
        return ResponseStore.open(self.root, url=self.db_url)

    def marked(self, kind: str) -> set[str]:
        return set(self.marks.filter(pl.col("kind") == kind)["item_id"].to_list()) if self.marks.height else set()

    # ---- who may review ---------------------------------------------------------------------------

    def refuse_unknown_reviewer(self) -> None:
        """Stop the page, saying why, when the name is not on the workspace's reviewer list."""
        if not self.reviewer or not self.registered:
            return
        message = refusal(self.registered, self.reviewer)
        if message:
            st.error(message, icon=":material/block:")
            st.stop()

    # ---- sorting and filtering by any suggestion score ------------------------------------------------

    def sidebar_scores(self, queue: pl.DataFrame) -> None:
        """Sort by / filter on any suggestion score, in the sidebar (keys start with f_, so Reset clears them)."""
        columns = score_columns(queue)
        if not columns:
            return
        with st.sidebar:
            st.markdown("#### Suggestion scores")
            sort = st.selectbox("Sort by", [SORT_BY_NEED, *columns], key="f_team_sort", on_change=act_to_top)
            descending = st.toggle("Highest first", value=True, key="f_team_sort_desc", on_change=act_to_top)
            column = st.selectbox("Filter on", [NO_SCORE_FILTER, *columns], key="f_team_filter", on_change=act_to_top)
            if column != NO_SCORE_FILTER:
                values = queue[column].drop_nulls()
                low, high = float(values.min()), float(values.max())
                if low < high:
                    picked = st.slider(f"{column} between", low, high, (low, high), key=f"f_team_range_{column}")
                    self.score_filter = (column, float(picked[0]), float(picked[1]))
            self.score_sort = None if sort == SORT_BY_NEED else (sort, descending)

    def filters(self, chosen: QueueFilter) -> QueueFilter:
        """The sidebar's filters with the score sort and filter chosen in `sidebar_scores`."""
        return chosen.with_(score_range=self.score_filter, sort_by=self.score_sort)

    # ---- this reviewer's queue ---------------------------------------------------------------------

    def applies(self) -> bool:
        """Whether this reviewer's queue differs from the team's: blind, a reviewer list, or persisted skips."""
        return bool(self.reviewer) and bool(self.settings.blind or self.registered or self.marked("skip"))

    def review_key(self) -> tuple | None:
        """What this reviewer's queue is built from besides the review state; None when it is the team's queue."""
        if not self.applies():
            return None
        return ("reviewer", self.reviewer, tuple(self.registered), json.dumps(asdict(self.settings)),
                tuple(sorted(self.marked("skip"))))

    def review_view(self, token: tuple, view: QueueView) -> QueueView:
        """This reviewer's queue over the team's `view` (built on the review state `token` names): blind (their
        own decisions only), their assigned items first, persisted skips after. Cached per token, reviewer,
        reviewer list, settings and skips, so a run that changes none of them costs nothing."""
        if not self.applies():
            return view
        skips = tuple(sorted(self.marked("skip")))
        return _reviewer_view(token, self.reviewer, tuple(self.registered), json.dumps(asdict(self.settings)), skips,
                              str(self.root), self.generation, _view=view, _responses=self.responses)

    def restore_draft(self, keys: pl.Series) -> None:
        """The draft saved for the item about to be shown (of `keys`, the selection) back in the note and edit boxes."""
        self._restore_draft(keys)

    def _restore_draft(self, keys: pl.Series) -> None:
        cursor = st.session_state.get("cursor")
        current = cursor if cursor is not None and keys.index_of(cursor) is not None else (keys[0] if len(keys) else None)
        if current is None or st.session_state.get("_team_restored") == current:
            return
        st.session_state["_team_restored"] = current
        item_id = current.split(":", 1)[1]
        drafts = self.marks.filter((pl.col("kind") == "draft") & (pl.col("item_id") == item_id)) if self.marks.height else self.marks
        if not drafts.height:
            return
        saved = json.loads(drafts["payload"][-1])
        if not str(st.session_state.get("note") or "").strip() and saved.get("note"):
            st.session_state["note"] = saved["note"]
        if saved.get("edit_question") is not None or saved.get("edit_answer") is not None:
            st.session_state["editing"] = current  # the app's editing names the key of the item edited
            st.session_state["edit_question"] = saved.get("edit_question") or ""
            st.session_state["edit_answer"] = saved.get("edit_answer") or ""
        st.session_state["flash"] = ("Your draft on this item is back in the boxes.", ":material/draft:")

    # ---- blind: who may see whose decisions --------------------------------------------------------

    def comments(self, item_id: str) -> pl.DataFrame:
        """The item's comments, read once per run."""
        cache = self.__dict__.setdefault("_comments", {})
        if item_id not in cache:
            with self.open_store() as store:
                cache[item_id] = store.comments(item_id)
        return cache[item_id]

    def others_on(self, item_id: str) -> pl.DataFrame:
        me = self.reviewer
        return self.responses.filter((pl.col("item_id") == item_id) & (pl.col("reviewer") != me))

    def shows_others(self, row: dict[str, Any]) -> bool:
        """Whether others' decisions (and comments) on the item may be shown now; a reveal is logged, once,
        so this reviewer's later decisions on it are not counted as blind."""
        mine = row.get("decision_state") in ("accept", "reject", "edit") if self.settings.blind else True
        allowed = may_see_others(mine, self.settings)
        others_there = self.settings.blind and (self.others_on(item_id_of(row)).height or (
            self.comments(item_id_of(row)).filter(pl.col("reviewer") != self.reviewer).height))
        if allowed and self.settings.blind and self.reviewer and item_id_of(row) not in self.marked("seen") and others_there:
            with self.open_store() as store:
                store.set_mark(item_id_of(row), self.reviewer, "seen", "shown", row.get("content_hash") or "")
            self.marks = pl.concat([self.marks, pl.DataFrame({"item_id": [item_id_of(row)], "kind": ["seen"]})], how="diagonal_relaxed")
        if not allowed:
            st.caption("Blind review: others' decisions and comments on this item appear once you have given yours.")
        return allowed


def item_id_of(row: dict[str, Any]) -> str:
    return row["item_id"]


def current() -> TeamContext | None:
    return st.session_state.get(SESSION_KEY)


@st.cache_resource(show_spinner=False, max_entries=2)
def _responses(location: str, version: int, _store: ResponseStore) -> pl.DataFrame:
    """Every response, read once per review-state version (the store's last response id)."""
    return _store.responses()


@st.cache_resource(show_spinner=False, max_entries=8)
def _reviewer_view(token: tuple, reviewer: str, registered: tuple[str, ...], settings_json: str, skips: tuple[str, ...],
                   root: str, generation: int, _view: QueueView, _responses: pl.DataFrame) -> QueueView:
    settings = TeamSettings(**json.loads(settings_json))
    others_decided = _responses.filter(pl.col("reviewer") != reviewer).height > 0
    # Blind: this reviewer's own decisions in place of the team's (else the team's state is theirs already).
    own = reviewer_state(_responses, reviewer) if settings.blind and others_decided else None
    plan = _plan(root, generation, registered, settings_json, _view.frame["item_id"])
    return reviewer_view(_view, reviewer, plan, decisions_per_item(_responses), skips, own_state=own)


@st.cache_resource(show_spinner=False, max_entries=4)  # shared, never changed: no copy per run
def _plan(root: str, generation: int, reviewers: tuple[str, ...], settings_json: str, _item_ids: pl.Series) -> pl.DataFrame:
    """The assignment of one generation's items (hashing 50k ids each run would cost ~50 ms)."""
    return assignment(_item_ids.unique(maintain_order=True).to_list(), reviewers, TeamSettings(**json.loads(settings_json)))


# ---- callbacks' hooks ---------------------------------------------------------------------------------


def after_recorded(store: ResponseStore, recorded: list[Any]) -> None:
    """In the app's decide callback, after the store recorded single-item decisions: mark the blind ones,
    and withdraw the reviewer's draft and skip on those items (the decision supersedes them)."""
    context = current()
    if context is None or not recorded:
        return
    store.mark_blind(blind_ids(recorded, context.marked("seen"), context.settings))
    for response in recorded:
        for kind in ("draft", "skip"):
            if response.item_id in context.marked(kind):
                store.set_mark(response.item_id, response.reviewer, kind, "")


def standing_for_undo(store: ResponseStore, item_id: str, reviewer: str) -> Any:
    """In the app's undo callback: what U would revert. Blind: the reviewer's own standing response, so an
    undo neither shows nor needs another reviewer's decision on the item; else the item's effective one."""
    context = current()
    if context is None or not context.settings.blind:
        return store.current(item_id)
    undone = {r.undoes for r in store.history(item_id) if r.undoes is not None}
    mine = [r for r in store.history(item_id) if r.reviewer == reviewer and r.decision != "undo" and r.id not in undone]
    return mine[-1] if mine else None


def undo(store: ResponseStore, item_id: str, reviewer: str) -> Any:
    """In the app's undo callback: blind, revert the reviewer's own response; else the item's effective one."""
    context = current()
    if context is not None and context.settings.blind:
        return store.undo_own(item_id, reviewer)
    return store.undo(item_id, reviewer)


def remember_skip(key: str, reviewer: str) -> None:
    """In the app's skip callback: the skip outlives the session."""
    context = current()
    if context is None or not reviewer:
        return
    with context.open_store() as store:
        store.set_mark(key.split(":", 1)[1], reviewer, "skip", "skipped")


def act_save_draft(row_key: str, content_hash: str) -> None:
    context = current()
    if context is None or not context.reviewer:
        st.session_state["flash"] = ("Enter your name in the sidebar first.", ":material/front_hand:")
        return
    payload: dict[str, Any] = {"note": str(st.session_state.get("note") or "")}
    if st.session_state.get("editing"):
        payload["edit_question"] = st.session_state.get("edit_question")
        payload["edit_answer"] = st.session_state.get("edit_answer")
    if not payload["note"].strip() and "edit_question" not in payload:
        st.session_state["flash"] = ("Nothing to keep: write a note or start an edit first.", ":material/info:")
        return
    with context.open_store() as store:
        store.set_mark(row_key.split(":", 1)[1], context.reviewer, "draft", json.dumps(payload), content_hash)
    st.session_state["flash"] = ("Draft saved: it comes back when you return to this item, in any session.", ":material/draft:")


def act_add_comment(item_id: str, content_hash: str) -> None:
    context = current()
    body = str(st.session_state.get("team_comment") or "").strip()
    if context is None or not context.reviewer or not body:
        st.session_state["flash"] = ("Write the comment first (and enter your name).", ":material/info:")
        return
    with context.open_store() as store:
        store.add_comment(item_id, content_hash, context.reviewer, body)
    st.session_state["team_comment"] = ""
    st.session_state["flash"] = ("Comment added.", ":material/chat:")


def act_to_top() -> None:
    """A new order starts at its head."""
    st.session_state["cursor"] = None


def act_toggle_similar(key: str) -> None:
    st.session_state["_team_similar_for"] = None if st.session_state.get("_team_similar_for") == key else key


def reset_filters() -> None:
    """Set this module's sidebar widgets back to no restriction (the app's Reset calls it with its own)."""
    for name, value in FILTER_DEFAULTS.items():
        st.session_state[name] = value
    for name in [name for name in st.session_state if name.startswith("f_team_range_")]:
        del st.session_state[name]  # drawn only with a score filter, which is now off


def act_open(key: str) -> None:
    """Open an item in the review view from a list: filters reset to show every state, so it is there."""
    context = current()
    if context is not None and context.reset_app_filters is not None:
        context.reset_app_filters()  # widgets set to their defaults (deleting their keys leaves the page's old values)
    else:
        reset_filters()
    st.session_state["f_states"] = []
    st.session_state["cursor"] = key
    st.session_state["editing"] = None
    st.session_state["view"] = "Review"


# ---- panels beside the item ---------------------------------------------------------------------------


def item_panels(row: dict[str, Any], queue: pl.DataFrame) -> None:
    """Guidelines, agents, find similar, draft, comments and the keyboard, beside the item."""
    context = current()
    if context is None:
        return
    guidelines_panel(context)
    agents_panel(row)
    similar_panel(context, row, queue)
    draft_and_comments(context, row)
    with st.expander("Keyboard", expanded=False):
        st.markdown(keyboard_html(), unsafe_allow_html=True)


def guidelines_panel(context: TeamContext) -> None:
    guidelines = load_guidelines(context.root)
    where = "the default guidelines" if guidelines.is_default else "this workspace's guidelines.md"
    with st.expander("Guidelines", expanded=True):
        parts = []
        for term in TERMS:
            summary = guidelines.summary(term)
            if summary:
                parts.append(f'<div class="sat-meta"><b>{esc(term)}</b>: {esc(summary)}</div>')
        st.markdown("".join(parts), unsafe_allow_html=True)
        with st.popover("The whole guidelines", width="stretch"):
            st.markdown(guidelines.text)
        st.caption(f"From {where}." + (f" Not defined there: {', '.join(guidelines.missing)}." if guidelines.missing else ""))


def agents_panel(row: dict[str, Any]) -> None:
    found = agents(row)
    with st.expander("Made by: " + (", ".join(f"{stage} by {agent_summary(a)}" for stage, a in found.items()) or "none yet"),
                     expanded=False):
        if not found:
            st.caption("No stage has made suggestions on this item yet.")
        for stage, agent in found.items():
            st.markdown(f"**{stage}** — {esc(agent_summary(agent))}")
            st.json(agent, expanded=False)


@st.cache_resource(show_spinner=False, max_entries=2)
def _embeddings(root: str, generation: int, model: str | None, backend: str | None, mtime: float) -> tuple[list[str], np.ndarray]:
    from curation.score import ScoreConfig, item_embeddings
    from curation.workspace import Workspace

    # The store of the model and engine that scored the items (engines' embeddings are never mixed).
    config = ScoreConfig(**{name: value for name, value in (("model", model), ("backend", backend)) if value})
    items, matrix = item_embeddings(Workspace.open(root), config)
    return items["item_id"].to_list(), matrix


def stored_embeddings(context: TeamContext, queue: pl.DataFrame) -> tuple[list[str], np.ndarray] | None:
    """The items' embeddings `satsang score` stored, for the model that scored them; None when there are none."""
    from curation.score import EMBEDDINGS_DIR

    agent = next((a for a in queue["concept_agent"].drop_nulls().head(1).to_list()), None) if "concept_agent" in queue.columns else None
    scored_by = json.loads(agent) if agent else {}
    model, backend = scored_by.get("model"), scored_by.get("backend")
    folder = context.root / EMBEDDINGS_DIR
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    ids, matrix = _embeddings(str(context.root), context.generation, model, backend, max(f.stat().st_mtime for f in files))
    return (ids, matrix) if len(ids) else None


def similar_panel(context: TeamContext, row: dict[str, Any], queue: pl.DataFrame) -> None:
    st.button("Find similar items", key="team_similar", shortcut=TEAM_KEYS["similar"], on_click=act_toggle_similar,
              args=(row["key"],), width="stretch")
    if st.session_state.get("_team_similar_for") != row["key"]:
        return
    embedded = stored_embeddings(context, queue)
    if embedded is None:
        st.caption("No stored embeddings: run  satsang score  first.")
        return
    similar = most_similar(*embedded, row["item_id"], k=5)
    if not similar:
        st.caption("This item's text has no stored embedding (silence, or not scored yet).")
        return
    by_id = queue.unique("item_id", keep="first").filter(pl.col("item_id").is_in([i for i, _ in similar]))
    rows = {r["item_id"]: r for r in by_id.to_dicts()}
    for item_id, similarity in similar:
        other = rows.get(item_id)
        if other is None:
            continue
        text = (other.get("question") or other.get("text") or "")[:140]
        st.markdown(f'<div class="sat-meta"><b>{similarity:.2f}</b> · {esc(other.get("source_title"))} · '
                    f'{esc(other.get("section") or "")}<br>{esc(text)}</div>', unsafe_allow_html=True)
        st.button("Open", key=f"team_open_similar:{other['key']}", on_click=act_open, args=(other["key"],))


def draft_and_comments(context: TeamContext, row: dict[str, Any]) -> None:
    st.button("Save note as a draft", key="team_draft", shortcut=TEAM_KEYS["draft"], on_click=act_save_draft,
              args=(row["key"], row["content_hash"]), width="stretch",
              help="Keeps the note (and the edit in progress) for this item across sessions, without deciding.")
    with st.expander("Comments", expanded=False):
        comments = context.comments(row["item_id"])
        blind_hidden = not may_see_others(row.get("decision_state") in ("accept", "reject", "edit"), context.settings)
        shown = comments.filter(pl.col("reviewer") == context.reviewer) if blind_hidden else comments
        for comment in shown.to_dicts():
            st.markdown(f'<div class="sat-meta"><b>{esc(comment["reviewer"])}</b> · {esc(comment["created_at"][:16].replace("T", " "))}'
                        f'<br>{esc(comment["body"])}</div>', unsafe_allow_html=True)
        if blind_hidden and comments.height > shown.height:
            st.caption(f"{comments.height - shown.height} comment(s) by others: shown once you have decided.")
        st.text_area("Comment", key="team_comment", height=70, placeholder="a comment on this item, for the team",
                     label_visibility="collapsed")
        st.button("Add comment", key="team_add_comment", shortcut=TEAM_KEYS["comment"], on_click=act_add_comment,
                  args=(row["item_id"], row["content_hash"]))


def keyboard_html() -> str:
    rows = "".join(f"<tr><td><kbd>{esc(key)}</kbd></td><td>{esc(what)}</td></tr>" for key, what in APP_KEYS)
    return f'<table class="sat-keys">{rows}</table><div class="sat-keys">Keys act when no text box has focus.</div>'


def duplicate_differences(row: dict[str, Any], members: pl.DataFrame) -> None:
    """The words that differ between this item and each other member of its cluster (difflib, word level)."""
    others = [m for m in members.head(4).to_dicts() if m["key"] != row["key"]]
    if not others:
        return
    mine = item_body(row)
    with st.expander("What differs from the other copies (word diff)", expanded=True):
        for other in others:
            runs = word_diff(item_body(other), mine)
            if all(op == "equal" for op, _ in runs):
                st.markdown(f'<div class="sat-meta">{esc(other["source_title"])}: the same words.</div>', unsafe_allow_html=True)
                continue
            out = []
            for op, words in runs:
                out.append(f"<del>{esc(words)}</del>" if op == "delete" else f"<ins>{esc(words)}</ins>" if op == "insert" else esc(words))
            st.markdown(f'<div class="sat-meta">{esc(other["source_title"])} → this item</div>'
                        f'<div class="sat-diff">{" ".join(out)}</div>', unsafe_allow_html=True)


# ---- the team views --------------------------------------------------------------------------------


def team_view(view: str, queue: pl.DataFrame) -> None:
    context = current()
    if context is None:
        return
    if view == "Search":
        if context.settings.blind and context.reviewer:  # the states shown are this reviewer's own
            queue = join_decisions(queue, reviewer_state(context.responses, context.reviewer))
        search_view(queue)
    elif view == "Likely mistakes":
        mistakes_view(context, queue)


def search_view(queue: pl.DataFrame) -> None:
    query = st.text_input("Search the question, answer and context", key="team_search",
                          placeholder="every word must occur, in any of them")
    if not query.strip():
        st.caption("Type words to search for; Enter runs the search.")
        return
    found = search(queue.unique("item_id", keep="first", maintain_order=True), query)
    st.markdown(f"**{found.height} item{'s' if found.height != 1 else ''}** match.")
    for hit in found.head(50).to_dicts():
        text = hit.get("question") or hit.get("text") or ""
        st.markdown(f'<div class="sat-meta"><b>{esc(hit["source_title"])}</b> · {esc(hit.get("section") or "")}'
                    f' · in {esc(", ".join(hit["matched_in"]))} · {esc(hit["decision_state"])}<br>{esc(text[:220])}</div>',
                    unsafe_allow_html=True)
        st.button("Open", key=f"team_open_found:{hit['key']}", on_click=act_open, args=(hit["key"],))
    if found.height > 50:
        st.caption(f"and {found.height - 50} more: add words to narrow the search.")


@st.cache_data(show_spinner="Cross-validating the concept classifier on the decisions...", max_entries=2)
def _mistakes(root: str, generation: int, last_response: int, reviewer: str, _ids: list[str], _matrix: np.ndarray,
              _decisions: pl.DataFrame):
    from curation.mistakes import likely_mistakes

    return likely_mistakes(_ids, _matrix, _decisions)


def mistakes_view(context: TeamContext, queue: pl.DataFrame) -> None:
    st.markdown("#### Likely mistakes: decisions the concept classifier, trained on the other decisions, disagrees with")
    embedded = stored_embeddings(context, queue)
    if embedded is None:
        st.info("Needs the embeddings  satsang score  stores: run it first.")
        return
    with context.open_store() as store:
        decisions = store.state()
    if context.settings.blind and context.reviewer:
        decisions = decisions.filter(pl.col("reviewer") == context.reviewer)
        st.caption("Blind review: your own decisions only.")
    last = int(context.responses["id"].max() or 0) if context.responses.height else 0
    mine = context.reviewer if context.settings.blind else ""
    report = _mistakes(str(context.root), context.generation, last, mine, embedded[0], embedded[1], decisions)
    if report.message:
        st.info(report.message)
        return
    st.caption(f"{report.n_labelled} decisions about the concept, {report.n_folds}-fold cross-validated; "
               f"{report.mistakes.height} look like mistakes.")
    rows = queue.unique("item_id", keep="first").select("item_id", "key", "question", "text", "source_title")
    for mistake in report.mistakes.join(rows, on="item_id", how="left").head(50).to_dicts():
        st.markdown(f'<div class="sat-meta"><b>{esc(mistake["source_title"])}</b> · {esc(mistake["why"])}<br>'
                    f'{esc((mistake.get("question") or mistake.get("text") or "")[:200])}</div>', unsafe_allow_html=True)
        if mistake.get("key"):
            st.button("Open for a second look", key=f"team_open_mistake:{mistake['key']}", on_click=act_open, args=(mistake["key"],))


def blind_agreement_panel(responses: pl.DataFrame, everything: pl.DataFrame | None = None) -> None:
    """On the progress view: agreement between reviewers on blind overlaps only, beside all overlaps
    (`everything`: reviewer_agreement(responses), when the caller has it already)."""
    context = current()
    with context.open_store() if context is not None else _no_store() as store:
        blind = store.blind_response_ids() if store is not None else []
    st.markdown("**Between reviewers, blind overlaps only** (each one's decision given before seeing the other's)")
    if not blind:
        st.caption("No item has two blind decisions yet.")
        return
    pairs = blind_reviewer_agreement(responses, blind)
    if everything is None:
        everything = reviewer_agreement(responses)
    if pairs.height == 0:
        st.caption("No item has two blind decisions yet.")
        return
    table = pairs.with_columns(pl.col("kappa").round(3), pl.col("agreement").round(3),
                               pl.col("kappa").map_elements(kappa_words, return_dtype=pl.String).alias("reads as"))
    table = table.join(everything.select("reviewer_a", "reviewer_b", pl.col("n_items").alias("all overlaps")),
                       on=["reviewer_a", "reviewer_b"], how="left")
    st.dataframe(table, hide_index=True, width="stretch")


class _no_store:
    def __enter__(self):
        return None

    def __exit__(self, *exc: object) -> None:
        return None
