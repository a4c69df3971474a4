"""Lineage: what every checkpoint directory says about where it came from.

Each checkpoint directory (every `checkpoint-N/` and the run's output directory) holds
`satsang_lineage.json`:

    format, stage ("pretrain" | "sft"), checkpoint {step, final, adapter_sha256, files}
                (files: sha256 of the adapter, its config and the tokenizer files, as written)
    dataset     version id, name, kind, manifest sha256 (of the manifest.json bytes), digest, path
    base_model  id as given, local path, sha256 of its weight files (where local), architecture
    parent      the lineage of the checkpoint this one continued (SFT on a pretrain adapter), whole,
                so the chain survives the parent directory being deleted
    from_checkpoint  the parent's path and adapter sha256, and whether it was merged into the base
    config (as given), hyperparameters (in force), trainer (optimizer, param groups, warm-up steps,
                scheduler: what the trainer ran with), lora, tokenizer (chat template and its sha256)
    sequences   rows, training sequences, rows split, truncated and dropped, tokens cut
    validation  held-out talks, eval losses, the best checkpoint (None without validation)
    tool        satsang version, git commit (and whether the tree was dirty), library versions
    steps, epoch, started_at, ended_at, resumed_from, final_loss, mean_loss (the whole stage's), mean_loss_steps
    tokens      training tokens the trainer read, per source and per (source, section), and in total

Token counts are taken from the batches the trainer actually trained on (so epochs repeat
them and a run stopped early counts what it saw): `tokens` are positions the model read
(attention mask), `loss_tokens` the positions it was trained to predict, `dataset_tokens`
the tokenized size of the dataset once. Totals are sums of the per-section rows, so the
numbers always add up.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from curation.files import atomic_write, sha256_file, sha256_file_cached

LINEAGE_NAME = "satsang_lineage.json"
LINEAGE_FORMAT = 1
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# The files of a checkpoint that decide what it does when loaded: the adapter, its config (lora_alpha
# scales every update) and the tokenizer with its chat template. Their sha256 goes into the lineage.
ADAPTER_SAFETENSORS = "adapter_model.safetensors"
ADAPTER_BIN = "adapter_model.bin"
ADAPTER_CONFIG = "adapter_config.json"
CHECKPOINT_FILES = (
    ADAPTER_SAFETENSORS,
    ADAPTER_BIN,
    ADAPTER_CONFIG,
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)


class TrainingError(Exception):
    """Training, a checkpoint or its lineage cannot be used as asked; the message says why."""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_lineage(directory: str | Path) -> dict[str, Any] | None:
    """The lineage of a checkpoint directory; None when it has none. Raises TrainingError when unreadable."""
    path = Path(directory) / LINEAGE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise TrainingError(f"{path}: unreadable lineage ({error})") from None
    if not isinstance(data, dict):
        raise TrainingError(f"{path}: unreadable lineage (not a JSON object)")
    return data


def checkpoint_file_digests(directory: str | Path) -> dict[str, str]:
    """sha256 of each of CHECKPOINT_FILES the directory holds."""
    directory = Path(directory)
    return {name: sha256_file(directory / name) for name in CHECKPOINT_FILES if (directory / name).is_file()}


def write_lineage(directory: str | Path, lineage: dict[str, Any]) -> Path:
    """Write atomically, so a killed run never leaves half a lineage.

    Records the checkpoint's files as they are now in `lineage["checkpoint"]["files"]`, in the
    caller's dict too, so what the caller holds is what was written.
    """
    directory = Path(directory)
    lineage["checkpoint"] = {**(lineage.get("checkpoint") or {}), "files": checkpoint_file_digests(directory)}
    path = directory / LINEAGE_NAME
    atomic_write(path, (json.dumps(lineage, indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n").encode("utf-8"))
    return path


def weights_digest(model_dir: str | Path) -> dict[str, Any] | None:
    """sha256 of each weight file of a local model directory, and one digest over them all; None if none.

    The combined digest is the sha256 of the lines "<file sha256>  <name>\\n", sorted by name,
    so it names the weights whatever the sharding's file order on disk.
    """
    directory = Path(model_dir)
    if not directory.is_dir():
        return None
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) and not p.name.startswith("."))
    files = [p for p in files if not p.name.startswith(("optimizer", "scheduler", "rng_state", "training_args", "scaler"))]
    if not files:
        return None
    digests = {p.name: sha256_file_cached(p) for p in files}
    combined = hashlib.sha256("".join(f"{digest}  {name}\n" for name, digest in digests.items()).encode()).hexdigest()
    return {"sha256": combined, "files": digests}


def local_model_dir(model: str | Path) -> Path | None:
    """The local directory of a model: the path itself, or its snapshot in the Hugging Face cache; None if neither."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(model), local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, not a repo id, offline: all mean "not local"
        return None


def git_commit(start: str | Path | None = None) -> dict[str, Any]:
    """The commit of the source tree this code runs from, and whether the tree had uncommitted changes."""
    root = Path(start) if start is not None else Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=20, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(dirty)}


def tool_info() -> dict[str, Any]:
    from importlib import metadata

    versions: dict[str, Any] = {}
    for dist, key in (
        ("satsang-workbench", "satsang"),
        ("torch", "torch"),
        ("transformers", "transformers"),
        ("peft", "peft"),
        ("trl", "trl"),
        ("datasets", "datasets"),
        ("accelerate", "accelerate"),
    ):
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[key] = None
    versions.update(git_commit())
    return versions


def lineage_chain(lineage: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The stages of a lineage, root first: [pretrain, sft] for an SFT run on a pretrain checkpoint."""
    chain = []
    seen = 0
    while isinstance(lineage, dict) and lineage:
        chain.append(lineage)
        lineage = lineage.get("parent")
        seen += 1
        if seen > 64:  # a parent chain this long is a loop someone wrote by hand
            raise TrainingError("lineage: parent chain longer than 64 stages")
    return list(reversed(chain))


def lineage_summary(lineage: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each stage of a checkpoint's lineage, root first, in a few fields: what an eval report records of the checkpoint it ran."""
    return [
        {
            "stage": stage.get("stage"),
            "dataset_version": (stage.get("dataset") or {}).get("version_id"),
            "manifest_sha256": (stage.get("dataset") or {}).get("manifest_sha256"),
            "adapter_sha256": (stage.get("checkpoint") or {}).get("adapter_sha256"),
            "step": (stage.get("checkpoint") or {}).get("step"),
            "base_model": (stage.get("base_model") or {}).get("id"),
            "base_weights_sha256": (stage.get("base_model") or {}).get("weights_sha256"),
            "merged_parent": bool((stage.get("from_checkpoint") or {}).get("merged")),
            "commit": (stage.get("tool") or {}).get("commit"),
        }
        for stage in lineage_chain(lineage)
        if not stage.get("missing_lineage")
    ]
