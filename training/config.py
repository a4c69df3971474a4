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
ATTENTION = ("auto", "eager", "sdpa", "flash_attention_2", "flex_attention")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd")
FROM_ADAPTER = ("continue", "merge")
# The settings a resumed run may change: where and how often it writes, logs and reports, and
# how it computes (not what): everything else decides the trajectory, so a resume must keep it.
RESUMABLE_CHANGES = frozenset(
    {"save_steps", "save_total_limit", "logging_steps", "wandb", "wandb_project", "wandb_mode", "device", "compile", "compile_backend",
     "gradient_checkpointing", "attn_implementation"}
)


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
    warmup_steps: int = _f(0, "Warm-up steps; above 0 it wins over warmup_ratio.")
    weight_decay: float = _f(0.0, "AdamW weight decay (not on biases and norms).")
    optimizer: str = _f("adamw_torch", "Optimizer: " + ", ".join(OPTIMIZERS) + ".")
    adam_beta1: float = _f(0.9, "AdamW beta1.")
    adam_beta2: float = _f(0.999, "AdamW beta2.")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.")
    max_seq_len: int = _f(
        1024,
        "Tokens per sequence: the packed block length in pretraining; in SFT a longer conversation is split on turn boundaries "
        "(a single exchange longer than this is cut, and counted).",
    )
    lora_layers: str = _f("all", "Layers the adapter covers: all, upper-third, a range (22-31) or a list (0,5,9); peft's layers_to_transform.")
    attn_implementation: str = _f("auto", "Attention kernel: " + ", ".join(ATTENTION) + " (auto: transformers' choice).")
    validation_fraction: float = _f(
        0.0, "Hold out this fraction of the talks (conversations when there is one talk), chosen from the version id, for eval loss; 0: none."
    )
    eval_steps: int = _f(0, "With validation: eval loss every this many steps; 0: every save_steps.")
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
            if kind is float and not (value is None and "None" in str(spec.type)):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TrainingError(f"{spec.name} must be a number, not {value!r}")
                object.__setattr__(self, spec.name, float(value))
        from training.targets import parse_layers

        parse_layers(self.lora_layers, None)  # its form; the layer numbers are checked against the model
        checks = [
            (self.lora_rank is None or self.lora_rank >= 1, f"lora_rank must be at least 1, not {self.lora_rank}"),
            (self.lora_alpha is None or self.lora_alpha > 0, f"lora_alpha must be positive, not {self.lora_alpha}"),
            (self.lora_dropout is None or 0.0 <= self.lora_dropout < 1.0, f"lora_dropout is a probability in [0, 1), not {self.lora_dropout}"),
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
            (self.warmup_steps >= 0, f"warmup_steps must be 0 or more, not {self.warmup_steps}"),
            (self.weight_decay >= 0, f"weight_decay must be 0 or more, not {self.weight_decay}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}"),
            (0.0 <= self.adam_beta1 < 1.0 and 0.0 <= self.adam_beta2 < 1.0, "adam_beta1 and adam_beta2 are in [0, 1)"),
            (self.adam_epsilon > 0, f"adam_epsilon must be positive, not {self.adam_epsilon}"),
            (self.attn_implementation in ATTENTION, f"attn_implementation must be one of {', '.join(ATTENTION)}, not {self.attn_implementation!r}"),
            (0.0 <= self.validation_fraction < 1.0, f"validation_fraction is a fraction in [0, 1), not {self.validation_fraction}"),
            (self.eval_steps >= 0, f"eval_steps must be 0 or more, not {self.eval_steps}"),
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
    def eval_every(self) -> int:
        return self.eval_steps or self.save_steps

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.batch_size // self.per_device_batch_size

    def lora_settings(self, parent: dict[str, Any] | None = None) -> dict[str, Any]:
        """(r, alpha, dropout, target_modules) of a fresh adapter; empty target_modules: discovered from the model."""
        return {"r": self.lora_rank, "alpha": self.lora_alpha, "dropout": self.lora_dropout, "target_modules": list(self.target_modules)}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


@dataclass(frozen=True)
class PretrainConfig(TrainConfig):
    """LoRA continued pretraining on a `pretrain` dataset version (a `text` column)."""

    packing: bool = _f(True, "Concatenate texts (each ended by EOS) and cut them into max_seq_len blocks, so no token is padding.")


@dataclass(frozen=True)
class SFTConfig(TrainConfig):
    """SFT with TRL's SFTTrainer on an `sft` dataset version (a `messages` column).

    The LoRA settings are unset by default: on a base model they are the seed's (rank 64,
    alpha 128, dropout 0.05); with --from and from_adapter "continue" the parent's adapter
    trains on, so a LoRA setting given that differs from the parent's is refused, never ignored.
    """

    lora_rank: int | None = _f(None, "LoRA rank r; unset: 64, or the --from checkpoint's when its adapter trains on.", flag="--rank")
    lora_alpha: float | None = _f(None, "LoRA alpha (the update is scaled by alpha / r); unset: 128, or the --from checkpoint's.", flag="--alpha")
    lora_dropout: float | None = _f(None, "Dropout on the LoRA branch; unset: 0.05, or the --from checkpoint's.", flag="--dropout")
    from_adapter: str = _f(
        "continue",
        "With --from: continue (the parent's adapter trains on, with its LoRA settings) or merge (fold it into the base weights "
        "and train a fresh adapter with this run's LoRA settings: the seed's SFT recipe).",
    )

    assistant_only_loss: bool = _f(
        True, "Train only on the assistant's words; the questions are context.", flag="--assistant-only-loss/--full-loss"
    )
    chat_template: str | None = _f(
        None,
        "A Jinja chat template file; unset: the tokenizer's own, or (when it has none) Phi-2's Instruct:/Output: form with generation markers.",
        metavar="FILE",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.from_adapter not in FROM_ADAPTER:
            raise TrainingError(f"from_adapter must be one of {', '.join(FROM_ADAPTER)}, not {self.from_adapter!r}")

    def lora_settings(self, parent: dict[str, Any] | None = None) -> dict[str, Any]:
        """(r, alpha, dropout, target_modules) in force: the ones given, else the parent's adapter's, else the seed's."""
        defaults = TrainConfig()
        parent = parent or {}
        return {
            "r": self.lora_rank if self.lora_rank is not None else parent.get("r", defaults.lora_rank),
            "alpha": self.lora_alpha if self.lora_alpha is not None else parent.get("alpha", defaults.lora_alpha),
            "dropout": self.lora_dropout if self.lora_dropout is not None else parent.get("dropout", defaults.lora_dropout),
            "target_modules": list(self.target_modules) or list(parent.get("target_modules") or []),
        }


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
