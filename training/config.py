"""Typed training configuration: the seed's defaults, overridable by a config file and by flags.

The seed trained Phi-2 with LoRA rank 64, alpha 128, dropout 0.05, 3 epochs, batch 64,
learning rate 2e-4, a checkpoint every 1,000 steps, gradient checkpointing on, torch.compile
and wandb optional. Those are the defaults here. Each field's help text (and flag, where it is
not the field's name) is what the CLI shows: `satsang train` makes its options from these
fields (satsang/options.py), so a field added here is a flag there.

    config = load_config(PretrainConfig, "train.toml", lora_rank=16)   # file, then flags

A config file is TOML, JSON or YAML, flat (`lora_rank = 16`) or with one table per stage
(`[pretrain]`, `[sft]`), so one file can hold both. Unknown keys are an error, not ignored.
Every value is recorded in each checkpoint's lineage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from training.lineage import TrainingError

DTYPES = ("auto", "bfloat16", "float16", "float32")
WANDB_MODES = ("online", "offline")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial", "inverse_sqrt")
DEVICES = ("auto", "cpu", "cuda")


def _f(default: Any, help: str, **cli: str) -> Any:  # noqa: A002 - "help" is what the metadata is called in trl and HfArgumentParser
    """A field with its help; `cli` may name its flag ("--rank") or metavar, as satsang/options.py reads them."""
    metadata = {"help": help, **cli}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TrainConfig:
    """What both stages share. Use PretrainConfig or SFTConfig."""

    lora_rank: int = _f(64, "LoRA rank r.", flag="--rank")
    lora_alpha: float = _f(128.0, "LoRA alpha; the update is scaled by alpha / r.", flag="--alpha")
    lora_dropout: float = _f(0.05, "Dropout on the LoRA branch.", flag="--dropout")
    target_modules: tuple[str, ...] = _f((), "Module names to adapt; empty: discovered from the model's linear layers (Phi: q_proj, k_proj, v_proj, dense, fc1, fc2).")
    epochs: float = _f(3.0, "Passes over the dataset.")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (overrides epochs); -1: no limit.")
    batch_size: int = _f(64, "Sequences per optimizer step: per_device_batch_size x gradient accumulation.")
    per_device_batch_size: int = _f(8, "Sequences per forward pass; the rest of batch_size is gradient accumulation.")
    learning_rate: float = _f(2e-4, "Peak learning rate (AdamW).", flag="--lr")
    lr_scheduler: str = _f("cosine", "Learning-rate schedule: " + ", ".join(SCHEDULERS) + ".")
    warmup_ratio: float = _f(0.03, "Fraction of the steps spent warming the learning rate up.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.")
    max_seq_len: int = _f(1024, "Tokens per sequence (the packed block length in pretraining; longer conversations are truncated).")
    save_steps: int = _f(1000, "Write a checkpoint (adapter, optimizer, lineage) every this many steps.")
    save_total_limit: int | None = _f(None, "Keep only the newest this many checkpoints; unset: keep all.")
    logging_steps: int = _f(10, "Log the loss every this many steps.")
    gradient_checkpointing: bool = _f(True, "Recompute activations in the backward pass (less memory, ~30% more compute).")
    compile: bool = _f(False, "torch.compile the model.")
    compile_backend: str = _f("inductor", "torch.compile backend (inductor; aot_eager or eager to debug).")
    dtype: str = _f("auto", "Weights dtype: auto (bfloat16 on a GPU that has it, else float32), bfloat16, float16, float32.")
    device: str = _f("auto", "auto (a GPU when there is one), cpu or cuda.")
    wandb: bool = _f(False, "Log to Weights & Biases; the run config carries the dataset version id.")
    wandb_project: str = _f("satsang", "Weights & Biases project.")
    wandb_mode: str = _f("online", "online, or offline (written under ./wandb, `wandb sync` later).")
    seed: int = _f(42, "Seed for the adapter's initialisation and the data order.")

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", tuple(t.strip() for t in self.target_modules.split(",") if t.strip()))
        else:
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        for spec in fields(self):
            value = getattr(self, spec.name)
            kind = _field_kind(spec)
            if kind is bool and not isinstance(value, bool):
                raise TrainingError(f"{spec.name} must be true or false, not {value!r}")
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)) and not (value is None and "None" in str(spec.type)):
                raise TrainingError(f"{spec.name} must be a whole number, not {value!r}")
            if kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TrainingError(f"{spec.name} must be a number, not {value!r}")
                object.__setattr__(self, spec.name, float(value))
        checks = [
            (self.lora_rank >= 1, f"lora_rank must be at least 1, not {self.lora_rank}"),
            (self.lora_alpha > 0, f"lora_alpha must be positive, not {self.lora_alpha}"),
            (0.0 <= self.lora_dropout < 1.0, f"lora_dropout is a probability in [0, 1), not {self.lora_dropout}"),
            (self.max_steps > 0 or self.epochs > 0, "give epochs > 0 or max_steps > 0"),
            (self.per_device_batch_size >= 1, f"per_device_batch_size must be at least 1, not {self.per_device_batch_size}"),
            (
                self.batch_size >= self.per_device_batch_size and self.batch_size % self.per_device_batch_size == 0,
                f"batch_size {self.batch_size} is per_device_batch_size x gradient accumulation: "
                f"make it a multiple of per_device_batch_size {self.per_device_batch_size}",
            ),
            (self.learning_rate > 0, f"learning_rate must be positive, not {self.learning_rate}"),
            (self.lr_scheduler in SCHEDULERS, f"lr_scheduler must be one of {', '.join(SCHEDULERS)}, not {self.lr_scheduler!r}"),
            (0.0 <= self.warmup_ratio < 1.0, f"warmup_ratio is a fraction in [0, 1), not {self.warmup_ratio}"),
            (self.max_seq_len >= 8, f"max_seq_len must be at least 8, not {self.max_seq_len}"),
            (self.save_steps >= 1, f"save_steps must be at least 1, not {self.save_steps}"),
            (self.save_total_limit is None or self.save_total_limit >= 1, "save_total_limit must be at least 1 (or unset)"),
            (self.logging_steps >= 1, f"logging_steps must be at least 1, not {self.logging_steps}"),
            (self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}"),
            (self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, not {self.device!r}"),
            (self.wandb_mode in WANDB_MODES, f"wandb_mode must be one of {', '.join(WANDB_MODES)}, not {self.wandb_mode!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainingError(message)

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.batch_size // self.per_device_batch_size

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


@dataclass(frozen=True)
class PretrainConfig(TrainConfig):
    """LoRA continued pretraining on a `pretrain` dataset version (a `text` column)."""

    packing: bool = _f(True, "Concatenate texts (each ended by EOS) and cut them into max_seq_len blocks, so no token is padding.")


@dataclass(frozen=True)
class SFTConfig(TrainConfig):
    """SFT with TRL's SFTTrainer on an `sft` dataset version (a `messages` column)."""

    assistant_only_loss: bool = _f(
        True, "Train only on the assistant's words; the questions are context.", flag="--assistant-only-loss/--full-loss"
    )
    chat_template: str | None = _f(
        None,
        "A Jinja chat template file; unset: the tokenizer's own, or (when it has none) Phi-2's Instruct:/Output: form with generation markers.",
        metavar="FILE",
    )


ConfigT = TypeVar("ConfigT", bound=TrainConfig)
STAGE_OF: dict[type, str] = {PretrainConfig: "pretrain", SFTConfig: "sft"}


def _field_kind(spec: Any) -> type | None:
    text = str(spec.type)
    for name, kind in (("bool", bool), ("int", int), ("float", float)):
        if text.split(" ")[0] == name:
            return kind
    return None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's mapping: TOML (.toml), JSON (.json) or YAML (.yaml, .yml)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainingError(f"{path}: no such config file") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise TrainingError(f"{path}: config files are .toml, .json, .yaml or .yml")
    except TrainingError:
        raise
    except Exception as error:  # noqa: BLE001 - tomllib, json and yaml each have their own error type
        raise TrainingError(f"{path}: unreadable {suffix[1:]} ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TrainingError(f"{path}: the config must be a mapping of names to values")
    return data


def load_config(cls: type[ConfigT], path: str | Path | None = None, **overrides: Any) -> ConfigT:
    """`cls`'s defaults, then the file's values (its `[pretrain]`/`[sft]` table when it has one), then `overrides` that are not None."""
    stage = STAGE_OF.get(cls)
    values: dict[str, Any] = {}
    known = {f.name for f in fields(cls)}
    if path is not None:
        data = read_config_file(path)
        stages = set(STAGE_OF.values())
        section = data.get(stage) if stage in data and isinstance(data.get(stage), dict) else None
        flat = {k: v for k, v in data.items() if k not in stages}
        values.update(flat)
        if section is not None:
            values.update(section)
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainingError(f"{path}: unknown settings {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    for name, value in overrides.items():
        if name not in known:
            raise TrainingError(f"unknown setting {name}")
        if value is not None:
            values[name] = value
    try:
        return cls(**values)
    except TypeError as error:
        raise TrainingError(f"config: {error}") from None


def with_overrides(config: ConfigT, **overrides: Any) -> ConfigT:
    """A copy with the non-None overrides applied (validated again)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
