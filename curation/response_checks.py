"""The review log's own rules, checked against what the database holds (`ResponseStore.integrity_check`).

A log written only through `ResponseStore` keeps these rules by construction; these checks
find what was done to the database outside it: triggers dropped, rows rewritten, removed or
inserted (the hash chain), undos or decisions no satsang would have written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from curation.response_schema import CHAINED_COLUMNS, DECISIONS, REASONS, chain_hash

# The store's statement runner: SQL with `?` placeholders, parameters; returns a cursor.
Execute = Callable[..., Any]


def log_problems(execute: Execute, backend: str) -> list[str]:
    """Each broken rule of the log, [] when it keeps them all: the append-only triggers are there,
    the hash chain follows, every undo reverts an earlier non-undo response of its item (none
    twice), decisions and reasons are known, rejects have reasons and edits have text.

    `execute` runs one statement on the store's connection (the caller holds its lock);
    `backend` is "sqlite" or "postgresql".
    """
    problems: list[str] = []
    if not _append_only_enforced(execute, backend):
        problems.append("the append-only triggers on responses are missing")
    problems.extend(_chain_problems(execute))
    for (id_, target, target_item, item, target_decision) in execute(
        """SELECT u.id, u.undoes, t.item_id, u.item_id, t.decision
        FROM responses AS u LEFT JOIN responses AS t ON t.id = u.undoes
        WHERE u.decision = 'undo'
          AND (t.id IS NULL OR t.item_id <> u.item_id OR t.decision = 'undo' OR t.id >= u.id)"""
    ).fetchall():
        if target_item is None:
            problems.append(f"response {id_}: undoes missing response {target}")
        elif target_item != item:
            problems.append(f"response {id_}: undoes response {target} of another item")
        elif target_decision == "undo":
            problems.append(f"response {id_}: undoes response {target}, itself an undo")
        else:
            problems.append(f"response {id_}: undoes a later response {target}")
    for target, n in execute(
        "SELECT undoes, count(*) FROM responses WHERE undoes IS NOT NULL GROUP BY undoes HAVING count(*) > 1"
    ).fetchall():
        problems.append(f"response {target}: undone {n} times")
    for id_, decision, reason, has_edit, undoes in execute(
        """SELECT id, decision, reason,
            CASE WHEN edited_question IS NULL AND edited_answer IS NULL THEN 0 ELSE 1 END, undoes
        FROM responses"""
    ).fetchall():
        if decision not in DECISIONS:
            problems.append(f"response {id_}: unknown decision {decision!r}")
        if reason is not None and reason not in REASONS:
            problems.append(f"response {id_}: unknown reason {reason!r}")
        if decision == "reject" and reason is None:
            problems.append(f"response {id_}: reject without a reason")
        if decision == "edit" and not has_edit:
            problems.append(f"response {id_}: edit without edited text")
        if (decision == "undo") != (undoes is not None):
            problems.append(f"response {id_}: undoes is set on a {decision}, or missing on an undo")
    return problems


def _chain_problems(execute: Execute) -> list[str]:
    """Each response whose link does not follow from the stored link before it, or that has none."""
    problems = []
    previous = ""
    query = (
        f"SELECT r.id, {', '.join('r.' + c for c in CHAINED_COLUMNS)}, c.chain"
        " FROM responses AS r LEFT JOIN response_chain AS c ON c.id = r.id ORDER BY r.id"
    )
    for id_, *values, stored in execute(query).fetchall():
        if stored is None:
            problems.append(f"response {id_}: has no link in the hash chain (written outside satsang)")
            continue
        if stored != chain_hash(previous, dict(zip(CHAINED_COLUMNS, values))):
            problems.append(
                f"response {id_}: its chain hash does not follow from the response before it"
                " (one of the two was rewritten, removed or inserted outside satsang)"
            )
        previous = stored
    orphans = execute(
        "SELECT c.id FROM response_chain AS c LEFT JOIN responses AS r ON r.id = c.id WHERE r.id IS NULL ORDER BY c.id"
    ).fetchall()
    problems += [f"response {id_}: its chain link is there but the response is gone" for (id_,) in orphans]
    return problems


def _append_only_enforced(execute: Execute, backend: str) -> bool:
    """Every append-only trigger is there and enabled, on both log tables."""
    if backend == "sqlite":
        query = "SELECT tbl_name, count(*) FROM sqlite_master WHERE type = 'trigger' GROUP BY tbl_name"
        expected = {"responses": 3, "response_chain": 3}  # no update, no delete, no replace
    else:
        query = (
            "SELECT c.relname, count(*) FROM pg_catalog.pg_trigger AS t"
            " JOIN pg_catalog.pg_class AS c ON c.oid = t.tgrelid"
            " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND NOT t.tgisinternal AND t.tgenabled <> 'D'"
            " GROUP BY c.relname"
        )
        expected = {"responses": 2, "response_chain": 2}  # no update or delete, no truncate
    found = dict(execute(query).fetchall())
    return all(found.get(table, 0) >= n for table, n in expected.items())
