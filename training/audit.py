"""Audit: which dataset versions, sources and sections shaped a checkpoint, and with how many tokens.

`audit_checkpoint(dir)` reads the checkpoint's satsang_lineage.json and its parents' (embedded
in it, so an SFT checkpoint names its pretraining data even when the pretrain directory is
gone), and reports per stage and in total across the chain: each version (id, manifest
hash), each source (title, sha256 = its source id), each section, and the tokens trained on.

What it checks, and says plainly when it fails:

- the lineage is there and readable (a checkpoint without one cannot say what trained it);
- the checkpoint's files are the ones the lineage was written for: the adapter, adapter_config.json
  (a changed lora_alpha rescales the adapter) and the tokenizer with its chat template
  (training.integrity);
- the base model, where it is on this machine, has the weights the lineage recorded;
- each dataset version's manifest.json still hashes to what the lineage recorded (found at
  the recorded path, or under `<workspace>/versions/<id>`), and the version itself verifies
  (every file, every copy's rows: curation.versions.verify_path); a version that cannot be
  found is a note: the lineage stands, but cannot be checked against it;
- the token counts add up (sections to sources to the stage total).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.integrity import base_model_problems, checkpoint_file_problems
from training.lineage import LINEAGE_FORMAT, LINEAGE_NAME, TrainingError, lineage_chain, read_lineage

COUNTS = ("tokens", "loss_tokens", "dataset_tokens")


@dataclass
class AuditReport:
    checkpoint: Path
    problems: list[str] = field(default_factory=list)  # the lineage is missing, damaged or no longer matches
    notes: list[str] = field(default_factory=list)  # could not be checked
    stages: list[dict[str, Any]] = field(default_factory=list)  # root first
    total: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint), "ok": self.ok, "problems": self.problems, "notes": self.notes, "stages": self.stages, "total": self.total}


def audit_checkpoint(checkpoint_dir: str | Path, workspace: str | Path | None = None) -> AuditReport:
    """The audit of a checkpoint directory; `workspace` is where to look for versions that moved."""
    directory = Path(checkpoint_dir)
    report = AuditReport(checkpoint=directory)
    if not directory.is_dir():
        raise TrainingError(f"{directory}: no such checkpoint directory")
    try:
        lineage = read_lineage(directory)
    except TrainingError as error:
        report.problems.append(str(error))
        return report
    if lineage is None:
        report.problems.append(f"{directory}: no {LINEAGE_NAME}: this checkpoint cannot say which data trained it")
        return report
    if lineage.get("format") != LINEAGE_FORMAT:
        report.problems.append(f"{directory / LINEAGE_NAME}: lineage format {lineage.get('format')!r}, this satsang reads {LINEAGE_FORMAT}")

    report.problems.extend(checkpoint_file_problems(directory, lineage))
    base_problems, base_notes = base_model_problems(lineage)
    report.problems.extend(base_problems)
    report.notes.extend(base_notes)

    try:
        chain = lineage_chain(lineage)
    except TrainingError as error:
        report.problems.append(str(error))
        return report
    for depth, stage in enumerate(chain):
        where = "this checkpoint" if depth == len(chain) - 1 else f"parent stage {depth + 1}"
        report.stages.append(_audit_stage(stage, where, workspace, report))
    report.total = _total(report.stages)
    return report


def _audit_stage(lineage: dict[str, Any], where: str, workspace: str | Path | None, report: AuditReport) -> dict[str, Any]:
    if lineage.get("missing_lineage"):
        report.problems.append(f"{where} ({lineage.get('checkpoint_path')}) has no lineage: the data that trained it cannot be named")
        return {"stage": None, "checkpoint": lineage.get("checkpoint_path"), "missing_lineage": True, "sources": [], "sections": [], "tokens": dict.fromkeys(COUNTS, 0)}
    dataset = dict(lineage.get("dataset") or {})
    tokens = lineage.get("tokens") or {}
    if not dataset.get("version_id"):
        report.problems.append(f"{where}: the lineage names no dataset version")
    if not tokens:
        report.problems.append(f"{where}: the lineage has no token counts")
    dataset["status"] = _check_version(dataset, where, workspace, report)
    sources = [dict(s) for s in tokens.get("by_source", [])]
    sections = [dict(s) for s in tokens.get("by_section", [])]
    total = {k: int((tokens.get("total") or {}).get(k, 0)) for k in COUNTS}
    _check_sums(sources, sections, total, where, report)
    version_sources = {s.get("source_id"): s for s in dataset.get("sources", [])}
    for source in sources:
        recorded = version_sources.get(source["source_id"], {})
        source.setdefault("title", recorded.get("title", ""))
        source["sha256"] = source["source_id"]
        source["kind"] = recorded.get("kind")
        source["licence"] = recorded.get("licence")
    base = lineage.get("base_model") or {}
    return {
        "stage": lineage.get("stage"),
        "checkpoint_step": (lineage.get("checkpoint") or {}).get("step"),
        "dataset": {k: dataset.get(k) for k in ("version_id", "name", "kind", "manifest_sha256", "path", "n_items", "n_rows", "status")},
        "base_model": {k: base.get(k) for k in ("id", "path", "weights_sha256", "architecture")},
        "from_checkpoint": (lineage.get("from_checkpoint") or {}).get("path"),
        "steps": lineage.get("steps"),
        "epoch": lineage.get("epoch"),
        "started_at": lineage.get("started_at"),
        "ended_at": lineage.get("ended_at"),
        "final_loss": lineage.get("final_loss"),
        "lora": lineage.get("lora"),
        "tool": {k: (lineage.get("tool") or {}).get(k) for k in ("satsang", "commit", "dirty")},
        "tokens": total,
        "sources": sources,
        "sections": sections,
    }


def _check_version(dataset: dict[str, Any], where: str, workspace: str | Path | None, report: AuditReport) -> str:
    """"verified" (manifest hash matches and the version verifies), "changed", or "not found"."""
    from curation.versions import MANIFEST_NAME, MODES_LABEL, VERSIONS_DIR, verify_path

    version_id = dataset.get("version_id")
    candidates = []
    if dataset.get("path"):
        candidates.append(Path(dataset["path"]))
    if workspace is not None and version_id:
        candidates.append(Path(workspace) / VERSIONS_DIR / version_id)
    for directory in candidates:
        manifest = directory / MANIFEST_NAME
        if manifest.is_file():
            actual = hashlib.sha256(manifest.read_bytes()).hexdigest()
            if actual != dataset.get("manifest_sha256"):
                report.problems.append(
                    f"{where}: {manifest} no longer matches the lineage (sha256 {actual[:16]}..., lineage says "
                    f"{str(dataset.get('manifest_sha256'))[:16]}...): the version changed after training"
                )
                return "changed"
            found = verify_path(directory, repair_modes=False)
            report.notes += [f"{where}: {directory}: {line}" for line in found if line.startswith(f"{MODES_LABEL}: ")]
            changed = [line for line in found if not line.startswith(f"{MODES_LABEL}: ")]
            report.problems += [f"{where}: dataset version {directory}: {line}" for line in changed]
            return "changed" if changed else "verified"
    shown = ", ".join(str(c) for c in candidates) or "no path recorded"
    report.notes.append(f"{where}: dataset version {version_id} not found ({shown}); its record in the lineage cannot be checked (--workspace to look elsewhere)")
    return "not found"


def _check_sums(sources: list[dict[str, Any]], sections: list[dict[str, Any]], total: dict[str, int], where: str, report: AuditReport) -> None:
    for key in COUNTS:
        by_section = sum(int(s.get(key, 0)) for s in sections)
        by_source = sum(int(s.get(key, 0)) for s in sources)
        if not by_section == by_source == total[key]:
            report.problems.append(f"{where}: {key} do not add up (sections {by_section}, sources {by_source}, total {total[key]})")
    per_source: dict[str, int] = {}
    for section in sections:
        per_source[section.get("source_id", "")] = per_source.get(section.get("source_id", ""), 0) + int(section.get("tokens", 0))
    for source in sources:
        if per_source.get(source.get("source_id"), 0) != int(source.get("tokens", 0)):
            report.problems.append(f"{where}: tokens of {source.get('title') or source.get('source_id')} are not the sum of its sections")


def _total(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """Across the chain: tokens per source and per section summed over stages, and the versions."""
    sources: dict[str, dict[str, Any]] = {}
    sections: dict[tuple[str, str], dict[str, Any]] = {}
    for stage in stages:
        for source in stage["sources"]:
            entry = sources.setdefault(source["source_id"], {"source_id": source["source_id"], "sha256": source["source_id"], "title": source.get("title", ""), "stages": [], **dict.fromkeys(COUNTS, 0)})
            entry["stages"].append(stage["stage"])
            for key in COUNTS:
                entry[key] += int(source.get(key, 0))
        for section in stage["sections"]:
            key = (section["source_id"], section.get("section", ""))
            entry = sections.setdefault(key, {"source_id": key[0], "title": section.get("title", ""), "section": key[1], **dict.fromkeys(COUNTS, 0)})
            for count in COUNTS:
                entry[count] += int(section.get(count, 0))
    return {
        "versions": [s["dataset"]["version_id"] for s in stages if s.get("dataset")],
        "tokens": {key: sum(int(s["tokens"].get(key, 0)) for s in stages) for key in COUNTS},
        "sources": sorted(sources.values(), key=lambda s: (s["title"], s["source_id"])),
        "sections": list(sections.values()),
    }
