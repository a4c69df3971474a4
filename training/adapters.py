"""Which adapter a run trains: a fresh one on the base, the --from parent's trained on, or a fresh one on the merged parent.

    model, peft_config, lora, from_record = prepare_adapter(model, config, parent_dir, parent_lineage)

- no parent: a fresh LoRA adapter with the config's settings (target modules discovered or
  checked, `lora_layers` as peft's layers_to_transform);
- from_adapter "continue": the parent's adapter trains on. Its rank, alpha, dropout, targets
  and layers are the ones in force, so a setting given that differs from them is refused with
  one line, never silently ignored (a run recording the parent's rank while the user asked for
  another is a lineage that misstates what ran);
- from_adapter "merge": the parent's adapter is folded into the base weights
  (`merge_and_unload`) and a fresh adapter with this run's settings trains on top: the seed's
  SFT recipe (rank 16, alpha 32 on the upper third of the layers, on the merged pretrain model).
  The lineage marks the parent `merged`, and loading (training.checkpoint.apply_merged_parents)
  merges it again before attaching this adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curation.files import sha256_file
from training.checkpoint import ADAPTER_SAFETENSORS, apply_merged_parents, attach_adapter, read_adapter_config
from training.config import TrainConfig
from training.lineage import TrainingError
from training.targets import discover_target_modules, layer_count, parse_layers


def parent_lora(parent_dir: Path) -> dict[str, Any]:
    """The LoRA settings of a checkpoint's adapter, from its adapter_config.json."""
    config = read_adapter_config(parent_dir) or {}
    layers = config.get("layers_to_transform")
    return {
        "r": config.get("r"),
        "alpha": config.get("lora_alpha"),
        "dropout": config.get("lora_dropout"),
        "target_modules": sorted(config.get("target_modules") or []),
        "layers": [layers] if isinstance(layers, int) else layers,
    }


def continue_conflicts(config: TrainConfig, parent: dict[str, Any], n_layers: int) -> list[str]:
    """The LoRA settings given in `config` that differ from the parent adapter it would continue, as 'name asked (parent's: x)'."""
    asked = {
        "--rank": getattr(config, "lora_rank", None),
        "--alpha": getattr(config, "lora_alpha", None),
        "--dropout": getattr(config, "lora_dropout", None),
        "--target-modules": sorted(config.target_modules) or None,
        "--lora-layers": parse_layers(config.lora_layers, n_layers) if config.lora_layers.strip().lower() not in ("", "all") else None,
    }
    theirs = {"--rank": parent["r"], "--alpha": parent["alpha"], "--dropout": parent["dropout"], "--target-modules": parent["target_modules"], "--lora-layers": parent["layers"]}
    return [f"{flag} {_shown(value)} (the parent's: {_shown(theirs[flag])})" for flag, value in asked.items() if value is not None and value != theirs[flag]]


def check_continue(config: TrainConfig, parent_dir: Path, n_layers: int) -> None:
    """Refuse, in one line, LoRA settings that continuing `parent_dir`'s adapter would not apply (before anything loads)."""
    if getattr(config, "from_adapter", "continue") != "continue":
        return
    conflicts = continue_conflicts(config, parent_lora(parent_dir), n_layers)
    if conflicts:
        raise TrainingError(
            f"--from {parent_dir} continues its adapter, so {'; '.join(conflicts)} cannot apply: "
            "leave them unset, or add --from-adapter merge to train a fresh adapter with them on the merged parent"
        )


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value) if value else "all"
    return "all" if value is None else str(value)


def fresh_lora(model: Any, config: TrainConfig, parent: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """(peft LoraConfig, the lineage's lora record) of a new adapter with the config's settings."""
    from peft import LoraConfig

    settings = config.lora_settings(parent)
    targets = discover_target_modules(model, tuple(settings["target_modules"]))
    layers = parse_layers(config.lora_layers, layer_count(model))
    peft_config = LoraConfig(
        r=settings["r"],
        lora_alpha=settings["alpha"],
        lora_dropout=settings["dropout"],
        target_modules=list(targets),
        layers_to_transform=layers,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return peft_config, {"r": settings["r"], "alpha": settings["alpha"], "dropout": settings["dropout"], "target_modules": list(targets), "layers": layers}


def prepare_adapter(
    model: Any, config: TrainConfig, parent_dir: Path | None, parent_lineage: dict[str, Any] | None
) -> tuple[Any, Any, dict[str, Any], dict[str, Any] | None]:
    """(model, peft_config or None, the lineage's lora record, its from_checkpoint record) for this run; see the module docstring."""
    if parent_dir is None:
        peft_config, lora = fresh_lora(model, config)
        return model, peft_config, lora, None
    parent = parent_lora(parent_dir)
    adapter = parent_dir / ADAPTER_SAFETENSORS
    from_record = {"path": str(parent_dir.resolve()), "adapter_sha256": sha256_file(adapter) if adapter.is_file() else None}
    model = apply_merged_parents(model, parent_lineage)  # the parent's own base, when it was itself trained on a merged parent
    mode = getattr(config, "from_adapter", "continue")
    if mode == "merge":
        model = attach_adapter(model, parent_dir).merge_and_unload()
        peft_config, lora = fresh_lora(model, config, parent=None)
        return model, peft_config, {**lora, "merged_from": from_record["path"]}, {**from_record, "merged": True}
    check_continue(config, parent_dir, layer_count(model))
    model = attach_adapter(model, parent_dir, is_trainable=True)
    lora = {**{k: parent[k] for k in ("r", "alpha", "dropout", "target_modules", "layers")}, "continued_from": from_record["path"]}
    return model, None, lora, {**from_record, "merged": False}
