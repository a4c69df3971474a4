"""What `satsang trace` (and `eval --trace`) shows: the text's verbatim spans and the items they come from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Group
    from rich.table import Table

    from inference.trace import TraceResult


def _where(item: Any) -> str:
    source = f"{item.source_title or item.source_id[:12]}"
    if item.section:
        source += f", {item.section}"
    offsets = f"{item.part} chars {item.part_start}-{item.part_end}"
    if item.source_start is not None:
        offsets += f"; source chars {item.source_start}-{item.source_end}"
    return f"{source}\n{offsets}"


def render_trace(result: TraceResult) -> Group:
    """The versions searched, the text with its spans, and the items echoed (longest span first)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    versions = ", ".join(f"{v.version_id} ({'+'.join(v.stages)}, {v.n_items:,} items)" for v in result.versions)
    header = Text(f"Traced against {versions}: {len(result.spans)} spans of >= {result.min_words} words, "
                  f"{result.coverage:.0%} of the text's words, in {result.seconds * 1000:.0f} ms")
    marked = Text(result.text)
    for span in result.spans:
        marked.stylize("bold yellow", span.start, span.end)
    parts: list[Any] = [header, marked]
    if result.items:
        table = Table("#", "words", "stage", "version", "item", "where", "span", title="training items this text echoes")
        for rank, item in enumerate(result.items, start=1):
            table.add_row(str(rank), str(item.longest_words), "+".join(item.stages), item.version_id, item.item_id[:12], _where(item), item.span)
        parts.append(table)
    else:
        parts.append(Text(f"no span of {result.min_words} or more words is in the training data"))
    if result.nearest:
        table = Table("#", "similarity", "stage", "version", "item", "where", "text", title="nearest items by embedding")
        for rank, item in enumerate(result.nearest, start=1):
            shown = item.span if len(item.span) <= 160 else item.span[:157] + "..."
            table.add_row(str(rank), f"{item.similarity:.3f}", "+".join(item.stages), item.version_id, item.item_id[:12], _where(item), shown)
        parts.append(table)
    return Group(*parts)


def render_eval_traces(traces: Mapping[str, Sequence[Mapping[str, Any]]]) -> Table:
    """Per model: answers with a verbatim span from training, the longest span, and the items echoed most often."""
    from collections import Counter

    from rich.table import Table

    table = Table("model", "answers traced", "with a span", "mean coverage", "longest span", "items echoed most", title="eval --trace: answers that repeat training items")
    for name, rows in traces.items():
        summaries = [row["trace"] for row in rows if row.get("trace")]
        with_span = [s for s in summaries if s["n_spans"]]
        common = Counter((s["top_item"]["section"] or s["top_item"]["item_id"][:12]) for s in with_span if s["top_item"])
        table.add_row(
            name,
            str(len(summaries)),
            f"{len(with_span)} ({len(with_span) / len(summaries):.0%})" if summaries else "0",
            f"{sum(s['coverage'] for s in summaries) / len(summaries):.0%}" if summaries else "-",
            str(max((s["longest_span_words"] for s in summaries), default=0)),
            ", ".join(f"{k} ({n})" for k, n in common.most_common(3)) or "-",
        )
    return table
