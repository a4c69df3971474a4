"""Checkpoint integrity: is a checkpoint still what its lineage was written for, on the base it was trained on?

A lineage records the sha256 of the checkpoint's files when it was written
(`training.lineage.CHECKPOINT_FILES`: the adapter, adapter_config.json, the tokenizer and
its chat template) and of the base model's weights. Audit, diagnose, `diagnose --fix`,
generate and serve ask the same two questions here:

- `checkpoint_file_problems(directory, lineage)`: each recorded file that changed, went
  missing or appeared since; for a lineage written before files were recorded, the adapter's
  own sha256, adapter_config.json's LoRA settings (rank, alpha, dropout, targets) against the
  lineage's and the chat template against its recorded sha256. A changed `lora_alpha` alone
  rescales every update the adapter makes.
- `base_model_problems(lineage, base)`: the base model's weights (at `base`, or where the
  lineage found them) against the recorded sha256. Weight files are hashed once per state of
  the file (`curation.files.sha256_file_cached`), so a 5.6 GB base is not re-read every run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curation.files import sha256_file
from training.lineage import (
    ADAPTER_CONFIG,
    ADAPTER_SAFETENSORS,
    CHECKPOINT_FILES,
    LINEAGE_NAME,
    local_model_dir,
    sha256_text,
    weights_digest,
)

# adapter_config.json's field for each LoRA setting a lineage records under "lora".
LORA_FIELDS = {"r": "r", "alpha": "lora_alpha", "dropout": "lora_dropout", "target_modules": "target_modules"}


def checkpoint_file_problems(directory: str | Path, lineage: dict[str, Any], missing_ok: tuple[str, ...] = ()) -> list[str]:
    """One line per checkpoint file that is not what the lineage was written for; [] when all are.

    missing_ok: files whose absence the caller reports, or repairs, itself (diagnose --fix rebuilds adapter_config.json).
    """
    directory = Path(directory)
    checkpoint = lineage.get("checkpoint") or {}
    recorded = checkpoint.get("files")
    problems: list[str] = []
    if isinstance(recorded, dict) and recorded:
        for name, digest in sorted(recorded.items()):
            path = directory / name
            if not path.is_file():
                if name in missing_ok:
                    continue
                problems.append(f"{path}: missing (its lineage recorded it)")
            elif (actual := sha256_file(path)) != digest:
                problems.append(f"{path}: changed since its lineage was written (sha256 {actual[:16]}..., lineage says {str(digest)[:16]}...)")
        for name in CHECKPOINT_FILES:
            if name not in recorded and (directory / name).is_file():
                problems.append(f"{directory / name}: added after its lineage was written")
    else:
        adapter = directory / ADAPTER_SAFETENSORS
        digest = checkpoint.get("adapter_sha256")
        if digest and adapter.is_file() and (actual := sha256_file(adapter)) != digest:
            problems.append(f"{adapter}: changed since its lineage was written (sha256 {actual[:16]}..., lineage says {digest[:16]}...)")
        problems += _chat_template_problems(directory, lineage)
    problems += _adapter_config_problems(directory, lineage)
    return problems


def _adapter_config_problems(directory: Path, lineage: dict[str, Any]) -> list[str]:
    lora = lineage.get("lora") or {}
    path = directory / ADAPTER_CONFIG
    if not lora or not path.is_file():
        return []
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return [f"{path}: unreadable ({error})"]
    if not isinstance(config, dict):
        return [f"{path}: unreadable (not a JSON object)"]
    problems = []
    for key, field in LORA_FIELDS.items():
        expected, actual = lora.get(key), config.get(field)
        if expected is None:
            continue
        if key == "target_modules":
            expected, actual = sorted(expected), sorted(actual) if isinstance(actual, list) else actual
        if actual != expected:
            problems.append(f"{path}: {field} is {actual!r}, the lineage says {expected!r} (trained with {expected!r})")
    return problems


def _chat_template_problems(directory: Path, lineage: dict[str, Any]) -> list[str]:
    recorded = (lineage.get("tokenizer") or {}).get("chat_template_sha256")
    if not recorded:
        return []
    template_file = directory / "chat_template.jinja"
    if template_file.is_file():
        template, where = template_file.read_text(encoding="utf-8"), template_file
    else:
        where = directory / "tokenizer_config.json"
        try:
            template = json.loads(where.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError, AttributeError):
            return []
    if isinstance(template, str) and sha256_text(template) != recorded:
        return [f"{where}: the chat template changed since its lineage was written (sha256 {sha256_text(template)[:16]}..., lineage says {recorded[:16]}...)"]
    return []


def base_model_problems(lineage: dict[str, Any], base: str | Path | None = None) -> tuple[list[str], list[str]]:
    """(problems, notes) about the base model: its weights at `base` (default: where the lineage found them) against the recorded sha256."""
    record = lineage.get("base_model") or {}
    recorded = record.get("weights_sha256")
    trained_on = record.get("id") or record.get("path")
    if not recorded:
        return [], [f"the lineage records no sha256 of the base model's weights ({trained_on}): which base it loads on cannot be checked"]
    where = base if base is not None else (record.get("path") if record.get("path") and Path(record["path"]).is_dir() else record.get("id"))
    local = local_model_dir(where) if where else None
    if local is None:
        return [], [f"base model {where}: not on this machine, so its weights cannot be checked against the lineage"]
    digest = weights_digest(local)
    if digest is None:
        return [], [f"base model {local}: no weight files to check against the lineage"]
    if digest["sha256"] != recorded:
        return [
            f"base model {local}: weights sha256 {digest['sha256'][:16]}..., but the checkpoint was trained on {trained_on} "
            f"with weights sha256 {recorded[:16]}... ({LINEAGE_NAME}): a different base"
        ], []
    return [], []
