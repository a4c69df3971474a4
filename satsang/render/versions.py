"""What the CLI shows about dataset versions: an export's outcome, the version list, a manifest, a diff, a verify.

The library (curation.export, curation.versions) returns data; this turns it into rich renderables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curation.versions import CARD_NAME, CHECKSUMS_NAME

if TYPE_CHECKING:
    from rich.console import RenderableType

    from curation.export import ExportResult
    from curation.versions import VersionDiff, VersionInfo


def render_export_result(result: ExportResult) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table("step", "set aside", "why", title=Text(f"export {result.version_id}"), show_edge=False)
    for step in result.steps:
        if not step.set_aside:
            table.add_row(step.name, "0", "")
            continue
        for i, (why, n) in enumerate(step.set_aside.items()):
            table.add_row(step.name if i == 0 else "", str(n), Text(why))
    table.add_section()
    table.add_row("exported", str(result.n_items), f"{result.n_rows} rows, {result.n_tokens:,} tokens, of {result.n_candidates} items")
    if result.created:
        line = Text(f"Created {result.path} in {result.seconds:.1f} s; card: {result.card_path}")
    else:
        line = Text(f"Version {result.version_id} already exists: nothing written. Card: {result.card_path}")
    return Group(table, line)


def render_versions(infos: Sequence[VersionInfo]) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    if not infos:
        return Text("No versions yet: satsang export --name NAME")
    table = Table(show_edge=False)
    table.add_column("version", no_wrap=True)
    for name in ("kind", "items", "rows", "tokens"):
        table.add_column(name, justify="left" if name == "kind" else "right", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("parent", overflow="fold")
    for info in infos:
        table.add_row(
            Text(info.version_id), info.kind, str(info.n_items), str(info.n_rows), f"{info.n_tokens:,}",
            info.created_at[:10], Text(_short_parent(info)),
        )
    return table


def _short_parent(info: VersionInfo) -> str:
    """The parent's id, without the name when it is this version's own (the usual case)."""
    if info.parent is None:
        return "-"
    return info.parent.removeprefix(f"{info.name}-") if info.parent.startswith(f"{info.name}-") else info.parent


def render_manifest(manifest: dict[str, Any], path: Path | None = None) -> RenderableType:
    """`satsang show`: what a version is, where it came from, and what was set aside."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    counts = manifest["counts"]
    about = Table(show_header=False, show_edge=False, box=None)
    about.add_row("version", Text(manifest["version_id"]))
    about.add_row("kind", manifest["kind"])
    about.add_row("items", f"{counts['items']} in {counts['rows']} rows, {counts['tokens']:,} tokens ({counts['token_method']})")
    about.add_row("decisions", Text(", ".join(f"{k} {v}" for k, v in counts["items_by_decision"].items())))
    about.add_row("created", f"{manifest['created_at']} (newest input)")
    about.add_row("parent", Text(manifest.get("parent") or "-"))
    about.add_row("tools", Text(", ".join(f"{k} {v}" for k, v in manifest["tool"].items())))
    about.add_row("config", Text(json.dumps(manifest["config"], sort_keys=True)))
    if path is not None:
        about.add_row("path", Text(str(path)))
        about.add_row("card", Text(str(path / CARD_NAME)))
    sources = Table("source", "sha256", "items", "tokens", "share", title="sources", show_edge=False)
    total = counts["tokens"] or 1
    for s in manifest["sources"]:
        sources.add_row(Text(s["title"]), s["source_id"][:12], str(s["items"]), f"{s['tokens']:,}", f"{100 * s['tokens'] / total:.1f}%")
    steps = Table("step", "set aside", "why", title="curation steps", show_edge=False)
    for step in manifest["steps"]:
        reasons = list(step["set_aside"].items()) or [("", 0)]
        for i, (why, n) in enumerate(reasons):
            steps.add_row(step["name"] if i == 0 else "", str(n), Text(why))
    return Group(about, sources, steps)


def render_diff(diff: VersionDiff) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    table = Table("source", "added", "removed", "edited", "unchanged", title=Text(f"{diff.old} -> {diff.new}"), show_edge=False)
    for entry in diff.per_source:
        table.add_row(Text(entry["title"] or entry["source_id"][:12]), str(entry["added"]), str(entry["removed"]), str(entry["edited"]), str(entry["unchanged"]))
    table.add_section()
    table.add_row("total", str(len(diff.added)), str(len(diff.removed)), str(len(diff.edited)), str(diff.n_unchanged))
    parts.append(table)
    for key, (before, after) in diff.config_changes.items():
        parts.append(Text(f"config {key}: {before!r} -> {after!r}"))
    for label, changes in (("added", diff.added), ("removed", diff.removed), ("edited", diff.edited)):
        for change in [c for c in changes if c.before is not None or c.after is not None]:
            parts.append(Text(f"\n{label} {change.item_id} ({change.section or 'no section'})", style="bold"))
            if change.before is not None:
                parts.append(Text(_clip(change.before), style="red"))
            if change.after is not None:
                parts.append(Text(_clip(change.after), style="green"))
    if diff.is_empty:
        parts.append(Text("No item differs."))
    return Group(*parts)


def render_verify(version_id: str, problems: Sequence[str]) -> RenderableType:
    from rich.text import Text

    if not problems:
        return Text(f"{version_id}: intact (every file matches {CHECKSUMS_NAME}; the id matches the manifest)")
    return Text("\n".join([f"{version_id}: {len(problems)} problem(s)", *problems]))


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
