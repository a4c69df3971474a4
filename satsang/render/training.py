"""What the training commands show: a finished run, an audit of a checkpoint's lineage, a checkpoint's diagnosis.

Each function takes what the training library returns (TrainResult, AuditReport, Diagnosis)
and gives a rich renderable; nothing here reads files or trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.audit import COUNTS

if TYPE_CHECKING:
    from rich.console import RenderableType

    from training.audit import AuditReport
    from training.checkpoint import Diagnosis
    from training.runner import TrainResult


def render_train_result(result: TrainResult) -> RenderableType:
    """What `satsang train` prints when a run ends."""
    from rich.console import Group
    from rich.text import Text

    lineage = result.lineage
    total = lineage["tokens"]["total"]
    first = result.losses[0][1] if result.losses else None
    loss = f"loss {first:.4f} -> {result.final_loss:.4f}" if first is not None and result.final_loss is not None else "loss n/a"
    lines = [
        Text.assemble(("Trained ", ""), (result.stage, "bold"), f" on {lineage['dataset']['version_id']} from {lineage['base_model']['id']}"
                      + (f" + {lineage['from_checkpoint']['path']}" if lineage.get("from_checkpoint") else "")),
        Text(f"{result.steps} steps, epoch {lineage['epoch']:.2f}, {loss}; {total['tokens']:,} tokens trained ({total['loss_tokens']:,} predicted), "
             f"{result.tokens_per_second:,.0f} tokens/s over {result.seconds:.0f} s"),
        Text(f"Adapter and lineage: {result.output_dir}" + (f"; checkpoints: {', '.join(p.name for p in result.checkpoints)}" if result.checkpoints else "")),
    ]
    counts = result.sequences
    if counts:
        cut = counts.get("truncated", 0) or counts.get("dropped", 0)
        lines.insert(2, Text(
            f"{counts['rows']:,} rows -> {counts['sequences']:,} sequences of at most {counts['max_seq_len']:,} tokens; {counts.get('split', 0):,} split"
            + (f", {counts.get('truncated', 0):,} with an exchange cut to fit and {counts.get('dropped', 0):,} dropped ({counts.get('tokens_cut', 0):,} tokens not trained:"
               " raise --max-seq-len)" if cut else ", none cut"),
            style="yellow" if cut else "",
        ))
    if result.eval_losses:
        step, eval_loss = result.eval_losses[-1]
        lines.insert(-1, Text(f"Held-out loss {eval_loss:.4f} at step {step}; best: {result.best_checkpoint or 'n/a'}"))
    lines.append(Text(f"Audit: satsang audit {result.output_dir}", style="dim"))
    return Group(*lines)


def render_audit(report: AuditReport, sections: bool = True) -> RenderableType:
    """An audit: each stage's dataset version, base model and tool, its sources and sections with tokens, then problems and notes."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = [Text.assemble((str(report.checkpoint), "bold"), "  ", ("OK" if report.ok else "LINEAGE PROBLEMS", "bold green" if report.ok else "bold red"))]
    for index, stage in enumerate(report.stages, start=1):
        if stage.get("missing_lineage"):
            parts.append(Text(f"Stage {index}: {stage.get('checkpoint')} (no lineage)", style="red"))
            continue
        dataset = stage["dataset"]
        base = stage["base_model"]
        status_style = {"verified": "green", "changed": "red"}.get(dataset["status"], "yellow")
        parts.append(
            Text.assemble(
                (f"\nStage {index}: {stage['stage']}", "bold"),
                f"  {stage['steps']} steps, epoch {stage['epoch']:.2f}, final loss {_fmt_loss(stage['final_loss'])}, {stage['started_at']} -> {stage['ended_at']}\n",
                f"  dataset {dataset['version_id']} ({dataset['kind']}, {dataset['n_items']} items)  manifest {str(dataset['manifest_sha256'])[:16]}...  ",
                (dataset["status"], status_style),
                f"\n  base {base.get('id')}" + (f"  weights {base['weights_sha256'][:16]}..." if base.get("weights_sha256") else "  (weights not hashed: not local)"),
                f"\n  tool satsang {stage['tool'].get('satsang')} commit {str(stage['tool'].get('commit'))[:12]}" + (" (uncommitted changes)" if stage["tool"].get("dirty") else ""),
            )
        )
        parts.append(_sources_table(f"Stage {index} sources", stage["sources"], stage["tokens"]))
        if sections:
            parts.append(_sections_table(f"Stage {index} sections", stage["sections"]))
    if len(report.stages) > 1:
        parts.append(Text(f"\nAll stages: versions {', '.join(report.total['versions'])}", style="bold"))
        parts.append(_sources_table("All stages, by source", report.total["sources"], report.total["tokens"], with_stages=True))
    for problem in report.problems:
        parts.append(Text(f"problem: {problem}", style="red"))
    for note in report.notes:
        parts.append(Text(f"note: {note}", style="yellow"))
    return Group(*parts)


def _fmt_loss(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


def _sources_table(title: str, sources: list[dict[str, Any]], total: dict[str, int], with_stages: bool = False):
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("source")
    table.add_column("sha256")
    if with_stages:
        table.add_column("stages")
    for column in ("tokens trained", "predicted", "in dataset"):
        table.add_column(column, justify="right")
    for source in sources:
        row = [source.get("title") or "(untitled)", source["source_id"]]
        if with_stages:
            row.append(", ".join(str(s) for s in source.get("stages", [])))
        row += [f"{source.get(k, 0):,}" for k in COUNTS]
        table.add_row(*row)
    footer = ["total", ""] + ([""] if with_stages else []) + [f"{total.get(k, 0):,}" for k in COUNTS]
    table.add_row(*footer, style="bold")
    return table


def _sections_table(title: str, sections: list[dict[str, Any]]):
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("source")
    table.add_column("section")
    for column in ("tokens trained", "predicted", "in dataset"):
        table.add_column(column, justify="right")
    for section in sections:
        table.add_row(section.get("title") or section["source_id"][:16], section.get("section") or "(no sections)", *(f"{section.get(k, 0):,}" for k in COUNTS))
    return table



def render_diagnosis(diagnosis: Diagnosis, fixed: Path | None = None) -> RenderableType:
    """A diagnosis: key patterns, weight norms, zeros and NaN/Inf, problems and notes, and what --fix did or would do."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    colour = {"ok": "green", "fixable": "yellow", "broken": "red"}[diagnosis.status]
    parts: list[Any] = [
        Text.assemble(
            (f"{diagnosis.path}", "bold"),
            f"  {diagnosis.weights_file}: {diagnosis.n_tensors} tensors, {diagnosis.n_parameters:,} parameters  ",
            (diagnosis.status.upper(), f"bold {colour}"),
        )
    ]
    config = diagnosis.config or {}
    if config:
        targets = config.get("target_modules")
        parts.append(
            Text(
                f"LoRA r={config.get('r')} alpha={config.get('lora_alpha')} targets={', '.join(sorted(targets)) if isinstance(targets, list) else targets}"
                f"  base={diagnosis.base_model}",
                style="dim",
            )
        )
    patterns = Table(title="Key patterns (layer numbers as *)", title_justify="left", show_edge=False)
    patterns.add_column("pattern")
    patterns.add_column("keys", justify="right")
    for pattern, count in diagnosis.patterns.items():
        patterns.add_row(pattern, str(count))
    parts.append(patterns)
    stats = Table(title="Weights", title_justify="left", show_edge=False)
    for column in ("part", "min norm", "mean norm", "max norm"):
        stats.add_column(column, justify="right" if column != "part" else "left")
    for part, summary in diagnosis.norm_summary.items():
        stats.add_row(part, f"{summary['min']:.4g}", f"{summary['mean']:.4g}", f"{summary['max']:.4g}")
    parts.append(stats)
    zeros = sum(s.zero_fraction == 1.0 for s in diagnosis.stats)
    nonfinite = sum(bool(s.n_nan or s.n_inf) for s in diagnosis.stats)
    parts.append(Text(f"all-zero tensors: {zeros}   tensors with NaN/Inf: {nonfinite}   shapes checked against the base: {diagnosis.shapes_checked}"))
    for problem in diagnosis.problems:
        parts.append(Text(f"problem: {problem}", style="red"))
    for note in diagnosis.notes:
        parts.append(Text(f"note: {note}", style="yellow" if diagnosis.status == "fixable" else ""))
    if diagnosis.fixable and fixed is None:
        parts.append(Text(f"fix: satsang diagnose {diagnosis.path} --fix  (writes a copy PEFT loads; load_checkpoint remaps on the fly)"))
    if fixed is not None:
        parts.append(Text(f"Wrote {fixed}: keys in PEFT's file form; PeftModel.from_pretrained loads it", style="green"))
    return Group(*parts)
