"""HTML for the review app (dashboards/review_app.py): its style sheet, its keyboard script, and the item's pieces.

Pure functions from rows to HTML strings, no Streamlit, so the app's page code stays
about what goes where, and each piece can be checked on its own.
"""

from __future__ import annotations

import difflib
import html
from typing import Any

from dashboards.queue import CHANGED, UNREVIEWED

CONTEXT_BEFORE, CONTEXT_AFTER = 200, 900  # raw source shown before and after an item (the window is 300 px high)

CSS = """
<style>
.block-container {padding-top: 2.2rem; padding-bottom: 2rem; max-width: 1500px;}
.sat-meta {color: #6b6257; font-size: 0.86rem; margin-bottom: 0.35rem;}
.sat-meta b {color: #3d352c;}
.sat-card {border: 1px solid #e6dfd3; border-radius: 10px; padding: 1.1rem 1.35rem;
           background: #fffdf8; margin-bottom: 0.6rem; max-height: 40vh; overflow-y: auto;}
.sat-card.sat-compact {max-height: 16vh;}
.sat-position {font-size: 0.95rem; color: #3d352c;}
.sat-refused {color: #9b2c1f; font-size: 0.85rem;}
/* Toasts at the bottom right: at the top they covered Prev / Next. */
.stToastContainer {top: auto !important; bottom: 1.2rem !important;}
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
             max-height: 300px; overflow-y: auto; border: 1px solid #ece6dc; border-radius: 8px;
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


# The keyboard, where Streamlit's own shortcuts stop short. Installed once per page.
# - Enter in a one-line text box commits it (Streamlit) and then leaves it, so the next key
#   is a shortcut again and not a letter typed into the box; Esc leaves any text box.
# - Ctrl/Cmd+Enter while an edit is open saves it in one press: the text box is left
#   (which commits what was typed) and then "Save edit" is clicked.
# - window.satsangFocus(selector) puts the caret in a box once it is drawn (after E, the
#   answer; after reject "other" with no note, the note).
# - A decision key (A, E, S, 1-6) pressed again before the server has drawn the page once
#   more is stopped here, with a notice: the press would name a button the server has
#   already replaced (Streamlit drops such a press without a word). Each run of the page
#   draws a new `.sat-run` marker after the item and its buttons, which ends the wait.
KEYBOARD_SCRIPT = """
<script>
if (!window.__satsangKeys) {
  window.__satsangKeys = true;
  const isTextBox = (el) => el && (el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && el.type !== "checkbox" && el.type !== "radio"));
  const saveButton = () => [...document.querySelectorAll("button")].find((b) => b.innerText.trim() === "Save edit" && !b.disabled);
  document.addEventListener("keydown", (event) => {
    const box = document.activeElement;
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      const save = saveButton();
      if (save) {
        event.preventDefault();
        event.stopPropagation();
        if (isTextBox(box)) box.blur();
        setTimeout(() => { const again = saveButton(); if (again) again.click(); }, 120);
      }
      return;
    }
    if (!isTextBox(box)) return;
    if (event.key === "Escape") {
      box.blur();
    } else if (event.key === "Enter" && box.tagName === "INPUT" && !box.closest('[data-baseweb="select"]')) {
      setTimeout(() => { if (document.activeElement === box) box.blur(); }, 0);
    }
  }, true);
  const DECISION_KEYS = new Set(["a", "e", "s", "1", "2", "3", "4", "5", "6"]);
  const runMarker = () => { const m = document.querySelector(".sat-run"); return m ? m.dataset.run : null; };
  window.__satsangRefusedKeys = 0;
  const notice = (text) => {
    let box = document.getElementById("sat-key-notice");
    if (!box) {
      box = document.createElement("div");
      box.id = "sat-key-notice";
      box.setAttribute("role", "status");
      box.style.cssText = "position:fixed;left:50%;bottom:1.2rem;transform:translateX(-50%);z-index:100000;" +
        "background:#9b2c1f;color:#fff;padding:0.45rem 0.9rem;border-radius:8px;font-size:0.9rem;";
      document.body.appendChild(box);
    }
    box.textContent = text;
    box.style.display = "block";
    clearTimeout(box.__hide);
    box.__hide = setTimeout(() => { box.style.display = "none"; }, 2500);
  };
  window.addEventListener("keydown", (event) => {  // the window's capture phase runs before Streamlit's shortcut listener
    if (event.ctrlKey || event.metaKey || event.altKey || isTextBox(document.activeElement)) return;
    if (!DECISION_KEYS.has((event.key || "").toLowerCase())) return;
    const run = runMarker();
    if (run === null) return;
    if (window.__satsangPressedInRun === run) {
      event.preventDefault();
      event.stopImmediatePropagation();
      window.__satsangRefusedKeys += 1;
      notice("Key not sent: the next item is not on screen yet. Press again when it is.");
      return;
    }
    window.__satsangPressedInRun = run;
  }, true);
  window.satsangFocus = (selector) => {
    const started = Date.now();
    const tick = () => {
      const el = document.querySelector(selector);
      if (el && !el.disabled) {
        el.focus();
        if (typeof el.value === "string" && el.setSelectionRange) el.setSelectionRange(el.value.length, el.value.length);
        return;
      }
      if (Date.now() - started < 4000) setTimeout(tick, 50);
    };
    tick();
  };
}
</script>
"""


def focus_script(selector: str, nonce: int) -> str:
    """A script that focuses the first element matching `selector`; `nonce` makes each request a new element, so it runs."""
    return f"<script>/* focus {nonce} */ window.satsangFocus && window.satsangFocus({selector!r});</script>"


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
        ("Ctrl+Enter", "save an edit"),
    ]
    parts = " · ".join(f"<kbd>{esc(k)}</kbd> {esc(v)}" for k, v in keys)
    return (f'<div class="sat-keys">{parts} — keys act when no text box has focus (Enter or Esc leaves one); '
            f'reason 6 "other" puts the caret in the note: write it, Enter rejects</div>')


def edited_text(row: dict[str, Any]) -> tuple[str, str]:
    """The question and answer (for a passage: "" and its text) as the item's standing edit has them.

    A None field kept the original; a passage's edited text is stored as `edited_answer`
    (the store's one field for edited text besides the question; export reads it so).
    """
    original_question, original_answer = original_text(row)
    question = row["edited_question"] if row.get("edited_question") is not None else original_question
    answer = row["edited_answer"] if row.get("edited_answer") is not None else original_answer
    return question or "", answer or ""


def original_text(row: dict[str, Any]) -> tuple[str, str]:
    """The question and answer as ingested; for a passage, "" and its text."""
    if row["kind"] == "pair":
        return row["question"] or "", row["answer"] or ""
    return "", row["text"] or ""


def item_card(row: dict[str, Any], edited: tuple[str, str] | None = None, compact: bool = False) -> str:
    """The item as a reader sees it; `compact` (while editing, the boxes below hold the text) keeps it short."""
    meta = [f"<b>{esc(row['source_title'])}</b>"]
    if row.get("section"):
        meta.append(esc(row["section"]))
    if row.get("section_date"):
        meta.append(esc(row["section_date"]))
    meta.append(f"turn {row['turn_index']}" if row.get("turn_index") is not None else "")
    # The card names the item and the exact text it shows: what a decision made on it is recorded against.
    parts = [f'<div class="sat-meta">{" · ".join(m for m in meta if m)}</div>',
             f'<div class="sat-card{" sat-compact" if compact else ""}" data-item-id="{esc(row["item_id"])}"'
             f' data-content-hash="{esc(row["content_hash"])}">']
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
        parts.append(f'<div class="sat-a" style="white-space: pre-wrap">{esc(edited[1] if edited else row["text"])}</div>')
    parts.append("</div>")
    return "".join(parts)


def diff_block(question: str, answer: str, new_question: str, new_answer: str, passage: bool = False) -> str:
    parts = []
    fields = (("Passage", answer, new_answer),) if passage else (("Question", question, new_question), ("Answer", answer, new_answer))
    for label, before, after in fields:
        if before == after:
            parts.append(f'<div class="sat-meta"><b>{label}</b>: unchanged</div>')
        else:
            parts.append(f'<div class="sat-meta"><b>{label}</b></div><div class="sat-diff">{word_diff_html(before, after)}</div>')
    return "".join(parts)


