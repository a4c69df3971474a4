"""Data cards: a version's README.md (a Hugging Face dataset card) from `card.md.j2`, and its plots.

`render_version_card(directory, context)` writes, into a version being exported:

    README.md                  the card: YAML front matter (pretty_name, license, language,
                               task_categories, size_categories, configs) and the body
    score_distributions.png    concept and critic scores: the items the version was chosen
                               from, and the items in it
    items_per_source.png       per source: items in the version, and set aside by step

The context is built by `curation.export` when it writes a version; its review
statistics are curation.review's `review_summary`, the numbers the dashboard shows.
Plots use matplotlib's Agg backend with no timestamp in the PNG, so the same inputs give
the same bytes.

`card_html(markdown)` turns a card into a standalone HTML page (markdown-it, which
rich already brings) for looking at a card with its plots in a browser;
`write_card_html(version_dir, out)` does it for a version.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

TEMPLATE_DIR = Path(__file__).resolve().parent
TEMPLATE = "card.md.j2"
DPI = 110

# Hugging Face's size buckets, by number of rows.
_SIZE_BUCKETS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))

STEP_COLOURS = {
    "exported": "#2e7d32",
    "kind": "#bdbdbd",
    "source": "#9e9e9e",
    "dedup": "#ffb74d",
    "review": "#e57373",
    "score": "#64b5f6",
    "content": "#ba68c8",
}


def size_category(n_rows: int) -> str:
    for limit, label in _SIZE_BUCKETS:
        if n_rows < limit:
            return label
    return "1B<n<10B"


def front_matter(context: dict[str, Any]) -> str:
    import yaml

    manifest = context["manifest"]
    licences = sorted({s["licence"] for s in manifest["sources"] if s["licence"]})
    data = {
        "pretty_name": pretty_name(manifest),
        "license": "other",
        "license_name": "satsang-sources",
        "license_details": "; ".join(licences) or "see the licence notes of the sources",
        "language": ["en"],
        "task_categories": ["text-generation"],
        "task_ids": ["dialogue-modeling"] if manifest["kind"] == "sft" else ["language-modeling"],
        "size_categories": [size_category(manifest["counts"]["rows"])],
        "tags": ["satsang-workbench", manifest["kind"], "contemplative", "non-conversational"],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": f"{context['files']['parquet_dir']}/train-*.parquet"}],
            }
        ],
    }
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000).rstrip("\n")


def pretty_name(manifest: dict[str, Any]) -> str:
    what = "conversations (SFT)" if manifest["kind"] == "sft" else "text for continued pretraining"
    return f"Satsang {manifest['name']}: {what}"


def render_version_card(directory: Path, context: dict[str, Any]) -> Path:
    """Plots and README.md into `directory`; returns the card's path."""
    plot_score_distributions(directory / context["files"]["score_plot"], context["scores"])
    plot_items_per_source(directory / context["files"]["source_plot"], context["per_source"])
    card = render_card(context)
    path = directory / "README.md"
    path.write_text(card, encoding="utf-8", newline="\n")
    return path


def render_card(context: dict[str, Any]) -> str:
    import jinja2

    class CardEnvironment(jinja2.Environment):
        """`x.items` is the key "items" of a dict when it has one (counts.items), not the method."""

        def getattr(self, obj: Any, attribute: str) -> Any:
            if isinstance(obj, dict) and attribute in obj:
                return obj[attribute]
            return super().getattr(obj, attribute)

    env = CardEnvironment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(cell=md_cell, text=md_text, num=lambda n: f"{n:,}", pct=lambda x: f"{100 * x:.1f}%", kappa=lambda k: "undefined" if k is None else f"{k:.3f}", clip=clip, oneline=lambda v: " ".join(str(v).split()), tojson=lambda v: json.dumps(v, sort_keys=True, ensure_ascii=False))
    body = env.get_template(TEMPLATE).render(front_matter=front_matter(context), pretty_name=pretty_name(context["manifest"]), **context)
    return "\n".join(line.rstrip() for line in body.splitlines()).rstrip("\n") + "\n"


def md_cell(value: Any) -> str:
    """A value made safe for one Markdown table cell: no newlines, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def md_text(value: str) -> str:
    """Book text shown in Markdown: characters Markdown would act on are escaped; lines kept."""
    out = []
    for ch in str(value):
        out.append("\\" + ch if ch in "\\`*_[]<>#|~" else ch)
    return "".join(out)


def clip(value: str, limit: int = 500) -> str:
    value = str(value)
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


# ---- plots ---------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "svg.hashsalt": "satsang", "path.simplify": True})
    return plt


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI, metadata={"Software": None})


def plot_score_distributions(path: Path, scores: dict[str, dict[str, Any]]) -> None:
    """Two histograms: concept score (0-1) and critic score (0-10), pool vs version."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    panels = (
        ("concept", "Concept score (P(contemplative), embedding classifier)", (0.0, 1.0), 20, "concept score"),
        ("critic", "Critic score (aliveness, 0-10)", (0.0, 10.0), 20, "critic score"),
    )
    for ax, (key, title, (lo, hi), bins, xlabel) in zip(axes, panels):
        pool, version = scores[key]["pool"], scores[key]["version"]
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("items")
        ax.set_xlim(lo, hi)
        if not len(pool) and not len(version):
            ax.text(0.5, 0.5, "not scored yet", ha="center", va="center", transform=ax.transAxes, color="#616161")
            ax.set_yticks([])
            continue
        edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
        ax.hist(version, bins=edges, color="#2e7d32", alpha=0.8, label=f"in this version ({len(version)})")
        ax.hist(pool, bins=edges, histtype="step", color="#424242", linewidth=1.4, label=f"chosen from ({len(pool)})")
        ax.legend(loc="upper left", frameon=False, fontsize=9)
        ax.yaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("Score distributions (silent answers, whose concept score is defined as 1, left out)", fontsize=10)
    _save(fig, path)
    plt.close(fig)


# Bars the per-source plot draws at most; beyond, the smaller sources share one bar (the card's table lists
# every source). A bar per source of a 900-book corpus would make a plot 500 inches tall.
MAX_SOURCE_BARS = 40


def plot_items_per_source(path: Path, per_source: list[dict[str, Any]]) -> None:
    """Horizontal stacked bars per source: items in the version, then set aside by each step
    (the MAX_SOURCE_BARS - 1 largest sources, in their order, and the others together)."""
    plt = _pyplot()
    per_source = _largest_sources(per_source, MAX_SOURCE_BARS)
    steps = [s for s in STEP_COLOURS if s != "exported" and any(p["set_aside"].get(s) for p in per_source)]
    height = 1.4 + 0.55 * max(1, len(per_source))
    fig, ax = plt.subplots(figsize=(10, height), constrained_layout=True)
    labels = ["\n".join(textwrap.wrap(p["title"], 34)[:2]) for p in per_source]
    positions = list(range(len(per_source)))[::-1]  # first source at the top
    left = [0] * len(per_source)
    for segment in ["exported", *steps]:
        values = [p["exported"] if segment == "exported" else p["set_aside"].get(segment, 0) for p in per_source]
        label = "in this version" if segment == "exported" else f"set aside: {segment}"
        bars = ax.barh(positions, values, left=left, color=STEP_COLOURS[segment], label=label, height=0.6)
        for bar, value in zip(bars, values):
            if value and bar.get_width() > 0.04 * max(1, max(sum_row(p) for p in per_source)):
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_y() + bar.get_height() / 2, f"{value:,}", ha="center", va="center", fontsize=8, color="white" if segment in ("exported", "review") else "black")
        left = [a + b for a, b in zip(left, values)]
    ax.set_yticks(positions, labels)
    ax.set_xlabel("items")
    ax.set_title("Items per source: in this version, and set aside by each curation step")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.5 / height - 0.12), frameon=False, fontsize=8, ncol=min(4, 1 + len(steps)))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlim(0, max(1, max(left)) * 1.02)
    _save(fig, path)
    plt.close(fig)


def _largest_sources(per_source: list[dict[str, Any]], bars: int) -> list[dict[str, Any]]:
    if len(per_source) <= bars:
        return per_source
    ranked = sorted(range(len(per_source)), key=lambda i: (-sum_row(per_source[i]), i))
    kept, rest = sorted(ranked[: bars - 1]), [per_source[i] for i in ranked[bars - 1:]]
    others = {"title": f"{len(rest):,} other sources", "source_id": "", "exported": sum(p["exported"] for p in rest),
              "set_aside": {}}
    for entry in rest:
        for step, n in entry["set_aside"].items():
            others["set_aside"][step] = others["set_aside"].get(step, 0) + n
    return [*(per_source[i] for i in kept), others]


def sum_row(entry: dict[str, Any]) -> int:
    return entry["exported"] + sum(entry["set_aside"].values())


# ---- HTML ---------------------------------------------------------------------------------


def card_html(markdown: str, title: str = "data card") -> str:
    """The card as one HTML page: the YAML front matter shown as code, the body rendered (tables on)."""
    from html import escape

    from markdown_it import MarkdownIt

    head, body = "", markdown
    if markdown.startswith("---\n"):
        end = markdown.find("\n---\n", 4)
        if end != -1:
            head, body = markdown[4:end], markdown[end + 5 :]
    html = MarkdownIt("commonmark").enable("table").render(body)
    style = (
        "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;line-height:1.45}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;vertical-align:top}"
        "th{background:#f3f3f3}code,pre{background:#f6f6f6}pre{padding:.6em;overflow-x:auto}img{max-width:100%}"
        "blockquote{border-left:4px solid #ddd;margin:0;padding:0 1em;color:#333}"
    )
    meta = f"<details><summary>YAML front matter</summary><pre>{escape(head)}</pre></details>" if head else ""
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{style}</style></head><body>{meta}{html}</body></html>\n"


def write_card_html(version_dir: Path, out: Path) -> Path:
    """The version's card as one self-contained HTML file at `out`, its plots inlined as data: URIs."""
    import base64

    markdown = (Path(version_dir) / "README.md").read_text(encoding="utf-8")
    for name in ("score_distributions.png", "items_per_source.png"):
        if (Path(version_dir) / name).is_file():
            data = base64.b64encode((Path(version_dir) / name).read_bytes()).decode("ascii")
            markdown = markdown.replace(f"]({name})", f"](data:image/png;base64,{data})")
    out = Path(out)
    try:
        out.write_text(card_html(markdown, title=Path(version_dir).name), encoding="utf-8")
    except OSError as error:
        from curation.versions import ExportError

        where = f"no directory {out.parent}" if not out.parent.is_dir() else error.strerror
        raise ExportError(f"{out}: cannot write the card there ({where})") from None
    return out
