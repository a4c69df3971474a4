"""The training loop both stages share: one `run_stage`, given a `Stage` that says how its data is prepared.

    result = run_stage(PRETRAIN, config, open_version(dir, "pretrain"), "runs/prose", base_model="microsoft/phi-2")

`training.pretrain` and `training.sft` each define their `Stage` (a name and a function that
turns a verified dataset version into training rows) and import this module; this module
imports neither, so there is no cycle. The loop is TRL's SFTTrainer (so pretraining and SFT
are one code path) over PEFT LoRA:

- data: a verified dataset version only (training.data.open_version), prepared by the stage so
  that each token's (source, section) survives into the batch;
- sequences: tokenized by the stage, each at most max_seq_len tokens, with what was split or
  cut counted (`sequences` in the lineage); an optional held-out split of whole talks, evaluated
  every eval_steps, the best checkpoint named;
- LoRA on the discovered target modules (training.targets), or a parent checkpoint's adapter
  trained on, or a fresh adapter on the parent merged into the base (training.adapters);
- a resume keeps the settings that decide training (check_resume), and the mean loss covers the
  whole stage (stage_mean_loss);
- a checkpoint every save_steps steps (`checkpoint-N/`: adapter_model.safetensors, optimizer,
  scheduler, RNG, trainer state, tokenizer, satsang_lineage.json), resumable; the final
  adapter, tokenizer and lineage in the output directory itself;
- tokens counted per (source, section) from the batches trained on (training.data.TokenLedger);
- gradient checkpointing, torch.compile (the Trainer compiles and saves the unwrapped model,
  so no `_orig_mod.` keys), wandb (off by default; offline mode; the run config carries the
  dataset version id).

The steps are separate functions so that each can be checked and recorded on its own:
`check_resume` (what a resumed run must share with its checkpoint), `trainer_arguments` (the
TRL settings a config stands for), `effective_settings` (what the trainer then ran with),
`StageRun.lineage` (what a checkpoint says about itself).
Nothing here draws: progress goes to the caller's `progress(step, max_steps, loss)` callback.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.files import sha256_file, utc_now
from training.checkpoint import ADAPTER_SAFETENSORS, load_tokenizer, resolve_base_model
from training.config import TrainConfig
from training.data import GROUP, ORIGIN, DatasetVersion, Groups, OriginCollator, TokenLedger
from training.lineage import (
    LINEAGE_FORMAT,
    TrainingError,
    local_model_dir,
    read_lineage,
    sha256_text,
    tool_info,
    weights_digest,
    write_lineage,
)

TRAINER_STATE = "trainer_state.json"
RESUMABLE_FILES = (TRAINER_STATE, ADAPTER_SAFETENSORS, "optimizer.pt", "scheduler.pt")

# (optimizer steps done, steps in the run, the last logged training loss or None): called after every step.
ProgressCallback = Callable[[int, int, "float | None"], None]


@dataclass(frozen=True)
class StageData:
    """What a stage hands the loop: its training rows, their groups, and how TRL is to treat them."""

    dataset: Any  # a tokenized datasets.Dataset whose rows carry their group (GROUP) or each token's (ORIGIN)
    groups: Groups
    dataset_tokens: list[int]  # per group, the training sequences' size in tokens (what trains, once)
    chat_template_source: str | None = None  # for the lineage's tokenizer record
    trainer_args: dict[str, Any] = field(default_factory=dict)  # this stage's own TRL SFTConfig arguments
    sequences: dict[str, Any] = field(default_factory=dict)  # rows, sequences, split, truncated, dropped (training.data.SequenceCount)
    eval_dataset: Any = None  # the held-out rows, prepared alike; None: no validation
    validation: dict[str, Any] | None = None  # which rows were held out


@dataclass(frozen=True)
class Stage:
    """One kind of training run: its name (recorded in every lineage; a resume must be of the same stage) and its data."""

    name: str  # "pretrain" | "sft"
    config_class: type[TrainConfig]
    prepare: Callable[[DatasetVersion, Any, Any], StageData]  # (version, tokenizer, config) -> StageData


@dataclass(frozen=True)
class TrainResult:
    stage: str  # "pretrain" | "sft"
    output_dir: Path  # the final adapter, tokenizer and lineage are here
    checkpoints: tuple[Path, ...]  # checkpoint-N directories, oldest first
    lineage: dict[str, Any]  # the final lineage
    steps: int
    final_loss: float | None  # the last logged training loss
    mean_loss: float | None  # the mean training loss over the whole stage (a resumed run's earlier steps included)
    losses: tuple[tuple[int, float], ...]  # (step, loss) as logged
    tokens: int  # tokens trained on in this stage (resumed runs: since the stage began)
    loss_tokens: int
    seconds: float  # wall time of this call
    sequences: dict[str, Any] = field(default_factory=dict)  # rows, sequences, split, truncated, dropped, tokens_cut
    eval_losses: tuple[tuple[int, float], ...] = ()  # (step, held-out loss)
    best_checkpoint: str | None = None  # the checkpoint-N with the lowest held-out loss

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def resolve_device(config: TrainConfig) -> tuple[str, Any]:
    """(device, torch dtype) for a config: auto picks a GPU when there is one, bfloat16 on GPUs that have it."""
    import torch

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device cuda: no CUDA GPU here (use --device cpu or auto)")
    if config.dtype == "auto":
        dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    else:
        dtype = getattr(torch, config.dtype)
    if device == "cpu" and dtype == torch.float16:
        raise TrainingError("float16 training needs a GPU; on CPU use float32 or bfloat16")
    return device, dtype


def check_output_dir(output_dir: Path, resume_from: Path | None) -> None:
    """An output directory that already holds a run is only for resuming it."""
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise TrainingError(f"{output_dir}: exists and is not a directory")
    taken = [p.name for p in output_dir.iterdir() if p.name.startswith("checkpoint-") or p.name == ADAPTER_SAFETENSORS]
    if taken and resume_from is None:
        raise TrainingError(
            f"{output_dir}: already holds a run ({', '.join(sorted(taken)[:3])}); resume it with --resume {output_dir}/checkpoint-N or give another --output"
        )


def check_resume(resume_from: Path, stage: str, version: DatasetVersion, config: TrainConfig | None = None) -> dict[str, Any]:
    """The lineage of a checkpoint this run may resume: written by satsang, of the same stage, dataset version and settings.

    A resumed run continues one trajectory, so it keeps every setting that decides it
    (config.RESUMABLE_CHANGES lists those it may change: saving, logging, reporting, device):
    a lineage that says lr 1e-3 for a stage whose first steps ran at 2e-4 would misstate it.
    """
    if not all((resume_from / name).is_file() for name in RESUMABLE_FILES):
        raise TrainingError(f"{resume_from}: not a resumable checkpoint (needs {', '.join(RESUMABLE_FILES)}: a checkpoint-N directory)")
    lineage = read_lineage(resume_from)
    if lineage is None:
        raise TrainingError(f"{resume_from}: no lineage, so its tokens cannot be counted on; it was not written by satsang train")
    if lineage.get("stage") != stage:
        raise TrainingError(f"{resume_from}: a {lineage.get('stage')} checkpoint; cannot resume it as {stage}")
    trained_on = (lineage.get("dataset") or {}).get("version_id")
    if trained_on != version.version_id:
        raise TrainingError(f"{resume_from}: trained on {trained_on}, not {version.version_id}; resume on the same version")
    if config is not None and (changed := resume_conflicts(lineage, config)):
        raise TrainingError(
            f"{resume_from}: its run trained with {', '.join(changed)}; a resume keeps the settings that decide training "
            "(give the checkpoint's, or start a new run)"
        )
    return lineage


def resume_conflicts(lineage: dict[str, Any], config: TrainConfig) -> list[str]:
    """'name recorded (this run: asked)' for each setting the checkpoint's run had otherwise (None asked: the recorded one holds)."""
    from training.config import RESUMABLE_CHANGES

    recorded = lineage.get("config") or lineage.get("hyperparameters") or {}
    resolved = "config" not in lineage  # an older lineage records the values in force: "auto" dtype resolved, for one
    changed = []
    for name, asked in config.to_dict().items():
        if name in RESUMABLE_CHANGES or name not in recorded or asked is None or (resolved and asked == "auto"):
            continue
        before = recorded[name]
        if (list(before) if isinstance(before, (list, tuple)) else before) != asked:
            changed.append(f"{name} {before} (this run: {asked})")
    return changed


def base_record(base: str, model: Any, local: Path | None) -> dict[str, Any]:
    """What a lineage says about the base model: id, local path, weights' sha256, architecture, size."""
    digest = weights_digest(local) if local is not None else None
    config = model.config
    return {
        "id": str(base),
        "path": str(local) if local is not None else None,
        "weights_sha256": digest["sha256"] if digest else None,
        "weight_files": digest["files"] if digest else None,
        "architecture": (getattr(config, "architectures", None) or [type(model).__name__])[0],
        "model_type": getattr(config, "model_type", None),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
    }


def tokenizer_record(tokenizer: Any, template_source: str | None) -> dict[str, Any]:
    """What a lineage says about the tokenizer, its chat template's sha256 included."""
    template = getattr(tokenizer, "chat_template", None)
    return {
        "name_or_path": getattr(tokenizer, "name_or_path", None),
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "chat_template_sha256": sha256_text(template) if isinstance(template, str) else None,
        "chat_template_source": template_source,
    }


class StageRun:
    """What a run knows about itself; `lineage()` writes it down for a checkpoint."""

    def __init__(self, stage: str, config: TrainConfig, version: DatasetVersion, output_dir: Path) -> None:
        self.stage = stage
        self.config = config
        self.version = version
        self.output_dir = output_dir
        self.started_at = utc_now()
        self.resumed_from: list[str] = []
        self.base: dict[str, Any] = {}
        self.parent: dict[str, Any] | None = None
        self.from_checkpoint: dict[str, Any] | None = None
        self.lora: dict[str, Any] = {}
        self.tokenizer: dict[str, Any] = {}
        self.tokenizer_name = ""
        self.device = ""
        self.groups = Groups()
        self.dataset_tokens: list[int] = []
        self.ledger = TokenLedger(0)
        self.wandb: dict[str, Any] | None = None
        self.tool = tool_info()
        self.sequences: dict[str, Any] = {}
        self.validation: dict[str, Any] | None = None
        self.trainer: dict[str, Any] = {}  # the settings the trainer ran with (effective_settings)

    def hyperparameters(self, dtype: Any) -> dict[str, Any]:
        values = self.config.to_dict()
        # The LoRA settings in force: the parent's when its adapter trained on, the seed's where SFT left them unset.
        values.update(
            lora_rank=self.lora.get("r"), lora_alpha=self.lora.get("alpha"), lora_dropout=self.lora.get("dropout"), target_modules=self.lora.get("target_modules")
        )
        values["dtype"] = str(dtype).removeprefix("torch.")
        values["gradient_accumulation_steps"] = self.config.gradient_accumulation_steps
        return values

    def lineage(self, state: Any, directory: Path, final: bool, dtype: Any) -> dict[str, Any]:
        losses = [(e["step"], e["loss"]) for e in state.log_history if "loss" in e]
        mean_loss, covered = stage_mean_loss(state.log_history)
        adapter = directory / ADAPTER_SAFETENSORS
        return {
            "format": LINEAGE_FORMAT,
            "stage": self.stage,
            "checkpoint": {
                "step": int(state.global_step),
                "final": final,
                "adapter_sha256": sha256_file(adapter) if adapter.is_file() else None,
            },
            "dataset": self.version.record(),
            "base_model": self.base,
            "from_checkpoint": self.from_checkpoint,
            "parent": self.parent,
            "lora": self.lora,
            "config": self.config.to_dict(),  # the settings as given (a resume must keep them)
            "hyperparameters": self.hyperparameters(dtype),
            "trainer": self.trainer,
            "sequences": self.sequences,
            "validation": validation_record(self.validation, state, self.output_dir),
            "tokenizer": self.tokenizer,
            "device": self.device,
            "tool": self.tool,
            "steps": int(state.global_step),
            "max_steps": int(state.max_steps),
            "epoch": float(state.epoch or 0.0),
            "started_at": self.started_at,
            "ended_at": utc_now(),
            "resumed_from": self.resumed_from,
            "final_loss": losses[-1][1] if losses else None,
            "mean_loss": mean_loss,
            "mean_loss_steps": covered,  # [first, last] step the mean covers: the whole stage, across resumes
            "wandb": self.wandb,
            "tokens": self.ledger.report(self.groups, self.version.titles(), self.dataset_tokens, self.tokenizer_name),
        }


def stage_mean_loss(log_history: list[dict[str, Any]]) -> tuple[float | None, list[int] | None]:
    """(mean training loss per step, [first, last] step it covers) from the logged losses of the whole stage.

    Each logged loss is the mean over the steps since the previous log, so the stage's mean
    weighs each by its steps. The log history survives a resume (trainer_state.json) and the
    loop logs at every save and at the end (LogWindows), so the windows tile the stage.
    """
    total, previous, first = 0.0, 0, None
    for entry in log_history:
        if "loss" not in entry:
            continue
        step = int(entry["step"])
        if step <= previous:
            continue
        total += float(entry["loss"]) * (step - previous)
        first = first or previous + 1
        previous = step
    return (total / (previous - first + 1), [first, previous]) if first is not None else (None, None)


def validation_record(validation: dict[str, Any] | None, state: Any, output_dir: Path) -> dict[str, Any] | None:
    """The held-out split with its eval losses so far and the best checkpoint (lowest eval loss among those saved)."""
    if validation is None:
        return None
    losses = [[int(e["step"]), float(e["eval_loss"])] for e in state.log_history if "eval_loss" in e]
    saved = [(loss, step) for step, loss in losses if (output_dir / f"checkpoint-{step}").is_dir()]
    best = min(saved) if saved else None
    return {
        **validation,
        "eval_losses": losses,
        "best": {"checkpoint": f"checkpoint-{best[1]}", "step": best[1], "eval_loss": best[0]} if best else None,
    }


def effective_settings(args: Any, state: Any, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """What the trainer ran with, read from the optimizer and scheduler it built: not the config's fields, the values in force."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k in ("initial_lr", "weight_decay", "betas", "eps", "momentum")}
        | {"parameters": int(sum(p.numel() for p in group["params"]))}
        for group in inner.param_groups
        if group["params"]
    ]
    world = int(getattr(args, "world_size", 1) or 1)
    return {
        "optimizer": f"{type(inner).__module__}.{type(inner).__name__}",
        "optim": str(getattr(args.optim, "value", args.optim)),
        "param_groups": groups,
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "scheduler": type(getattr(scheduler, "scheduler", scheduler)).__name__ if scheduler is not None else None,
        "peak_learning_rate": args.learning_rate,
        "warmup_steps": int(args.get_warmup_steps(state.max_steps)),
        "max_steps": int(state.max_steps),
        "per_device_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "world_size": world,
        "sequences_per_step": args.per_device_train_batch_size * args.gradient_accumulation_steps * world,
        "max_grad_norm": args.max_grad_norm,
        "mixed_precision": "bf16" if args.bf16 else "fp16" if args.fp16 else None,
        "attn_implementation": getattr(getattr(model, "config", None), "_attn_implementation", None),
        "trainable_parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "seed": args.seed,
    }


@functools.cache
def _classes() -> tuple[type, type, type, type]:
    """The trainer and callback classes, built on first use so that importing this module stays light."""
    from transformers import TrainerCallback
    from trl import SFTTrainer

    class SatsangTrainer(SFTTrainer):
        """SFTTrainer that keeps each token's origin up to the batch and counts what it trains on."""

        ledger: TokenLedger | None = None

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            self._signature_columns = [*self._signature_columns, *(c for c in (ORIGIN, GROUP) if c not in self._signature_columns)]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            origin = inputs.pop(ORIGIN, None)
            if origin is not None and model.training and self.ledger is not None:
                self.ledger.add(origin, inputs["attention_mask"], inputs["labels"])
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    class LineageCallback(TrainerCallback):
        """Writes satsang_lineage.json into every checkpoint-N the trainer saves."""

        def __init__(self, run: StageRun, dtype: Any) -> None:
            self.run = run
            self.dtype = dtype

        def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
            if optimizer is not None and model is not None:
                self.run.trainer = effective_settings(args, state, model, optimizer, lr_scheduler)
            return control

        def on_save(self, args, state, control, **kwargs):
            directory = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if directory.is_dir():
                write_lineage(directory, self.run.lineage(state, directory, final=False, dtype=self.dtype))
            return control

    class LogWindows(TrainerCallback):
        """Logs the loss at every save and at the end too, so the logged windows tile the stage even across a resume."""

        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save or state.global_step >= state.max_steps:
                control.should_log = True
            return control

    class ProgressReporter(TrainerCallback):
        """Hands (step, max_steps, last loss) to the caller after every optimizer step; the caller draws."""

        def __init__(self, progress: ProgressCallback) -> None:
            self.progress = progress
            self.loss: float | None = None
            self.pending = False

        def on_step_end(self, args, state, control, **kwargs):
            # The Trainer logs a step's loss after on_step_end: when this step is to be logged, report it with its loss then.
            self.pending = bool(control.should_log)
            if not self.pending:
                self.progress(int(state.global_step), int(state.max_steps), self.loss)
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])
            if self.pending:
                self.pending = False
                self.progress(int(state.global_step), int(state.max_steps), self.loss)
            return control

    return SatsangTrainer, LineageCallback, LogWindows, ProgressReporter


def trainer_arguments(
    config: TrainConfig, data: StageData, output_dir: Path, device: str, dtype: Any, trl_config_class: type
) -> dict[str, Any]:
    """The TRL SFTConfig arguments `config` stands for on this device, with the stage's own on top."""
    import torch

    return {
        "output_dir": str(output_dir),
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler,
        "warmup_steps": config.warmup_steps or config.warmup_ratio,  # below 1: a fraction of the steps
        "weight_decay": config.weight_decay,
        "optim": config.optimizer,
        "adam_beta1": config.adam_beta1,
        "adam_beta2": config.adam_beta2,
        "adam_epsilon": config.adam_epsilon,
        "max_grad_norm": config.max_grad_norm,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        **_checkpointing_args(trl_config_class, config.gradient_checkpointing),
        "torch_compile": config.compile,
        "torch_compile_backend": config.compile_backend if config.compile else None,
        "bf16": dtype == torch.bfloat16,
        "fp16": dtype == torch.float16,
        "use_cpu": device == "cpu",
        "seed": config.seed,
        "data_seed": config.seed,
        "report_to": ["wandb"] if config.wandb else "none",
        "run_name": output_dir.name,
        "max_length": config.max_seq_len,
        "packing": False,  # a stage that packs does it itself, keeping each token's origin
        "dataloader_pin_memory": device == "cuda",
        "disable_tqdm": True,  # progress goes to the caller's callback
        "save_only_model": False,
        **(
            {
                "eval_strategy": "steps",
                "eval_steps": config.eval_every,
                "per_device_eval_batch_size": config.per_device_batch_size,
                "metric_for_best_model": "eval_loss",  # so a save_total_limit keeps the best checkpoint too
                "greater_is_better": False,
            }
            if data.eval_dataset is not None
            else {}
        ),
        **data.trainer_args,
    }


def run_stage(
    stage: Stage,
    config: TrainConfig,
    version: DatasetVersion,
    output_dir: str | Path,
    base_model: str | Path | None = None,
    from_checkpoint: str | Path | None = None,
    resume_from: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train one stage; see the module docstring. `from_checkpoint`: the parent checkpoint (training.adapters says how)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig as TRLConfig

    if not isinstance(config, stage.config_class):
        raise TrainingError(f"the {stage.name} stage takes a {stage.config_class.__name__}, not {type(config).__name__}")
    started = time.perf_counter()
    output_dir = Path(output_dir)
    resume = Path(resume_from) if resume_from is not None else None
    check_output_dir(output_dir, resume)
    resume_lineage = check_resume(resume, stage.name, version, config) if resume is not None else None
    if resume_lineage is not None:
        recorded = resume_lineage.get("from_checkpoint") or {}
        if from_checkpoint is None and recorded.get("path"):
            from_checkpoint = recorded["path"]
        if base_model is None and from_checkpoint is None:
            base_model = (resume_lineage.get("base_model") or {}).get("path") or (resume_lineage.get("base_model") or {}).get("id")

    run = StageRun(stage.name, config, version, output_dir)
    device, dtype = resolve_device(config)
    run.device = device
    parent_dir = Path(from_checkpoint) if from_checkpoint is not None else None
    if parent_dir is not None:
        run.parent = read_lineage(parent_dir)
        base = resolve_base_model(parent_dir, run.parent, base_model)
        if run.parent is None:
            run.parent = {"missing_lineage": True, "checkpoint_path": str(parent_dir.resolve())}
    elif base_model is not None:
        base = str(base_model)
    else:
        raise TrainingError("give a base model (--base-model) or a checkpoint to continue (--from)")

    if parent_dir is not None:  # LoRA settings the parent's adapter would not apply: refused before anything loads
        from transformers import AutoConfig

        from training.adapters import check_continue
        from training.targets import layer_count

        try:
            n_layers = layer_count(AutoConfig.from_pretrained(base))
        except OSError as error:
            raise TrainingError(f"base model {base!r} cannot be loaded: {str(error).splitlines()[0]}") from None
        check_continue(config, parent_dir, n_layers)

    torch.manual_seed(config.seed)
    local = local_model_dir(base)
    attention = {} if config.attn_implementation == "auto" else {"attn_implementation": config.attn_implementation}
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, **attention)
    except OSError as error:
        raise TrainingError(f"base model {base!r} cannot be loaded: {str(error).splitlines()[0]}") from None
    run.base = base_record(base, model, local)
    parent_hash = ((run.parent or {}).get("base_model") or {}).get("weights_sha256")
    if parent_hash and run.base["weights_sha256"] and parent_hash != run.base["weights_sha256"]:
        raise TrainingError(
            f"base model {base} (weights sha256 {run.base['weights_sha256'][:16]}...) is not the one {parent_dir} was trained on "
            f"({parent_hash[:16]}...)"
        )
    tokenizer = load_tokenizer(parent_dir, base) if parent_dir is not None else load_tokenizer(Path(base), base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    run.tokenizer_name = f"{type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '') or base})"

    from training.adapters import prepare_adapter

    model, peft_config, run.lora, run.from_checkpoint = prepare_adapter(
        model, config, parent_dir, run.parent if not (run.parent or {}).get("missing_lineage") else None
    )

    data = stage.prepare(version, tokenizer, config)
    run.groups = data.groups
    run.tokenizer = tokenizer_record(tokenizer, data.chat_template_source)
    run.sequences = data.sequences
    run.validation = data.validation

    args = TRLConfig(**trainer_arguments(config, data, output_dir, device, dtype, TRLConfig))
    trainer_class, lineage_callback, log_windows, progress_reporter = _classes()
    trainer = trainer_class(
        model=model,
        args=args,
        data_collator=OriginCollator(tokenizer.pad_token_id),
        train_dataset=data.dataset,
        eval_dataset=data.eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[lineage_callback(run, dtype), log_windows(), *([progress_reporter(progress)] if progress else [])],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log line; the caller has the losses in the result
    run.dataset_tokens = data.dataset_tokens
    run.ledger = TokenLedger(len(run.groups))
    if resume_lineage is not None:
        run.ledger.restore(run.groups, resume_lineage.get("tokens"))
        run.started_at = resume_lineage.get("started_at") or run.started_at
        run.resumed_from = [*(resume_lineage.get("resumed_from") or []), str(resume.resolve())]
    trainer.ledger = run.ledger

    wandb_run = _start_wandb(config, run, output_dir) if config.wandb else None
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
        trainer.save_model(str(output_dir))
        trainer.save_state()
        lineage = run.lineage(trainer.state, output_dir, final=True, dtype=dtype)
        write_lineage(output_dir, lineage)
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    checkpoints = sorted((p for p in output_dir.glob("checkpoint-*") if p.is_dir()), key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    losses = tuple((int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e)
    total = lineage["tokens"]["total"]
    return TrainResult(
        stage=stage.name,
        output_dir=output_dir,
        checkpoints=tuple(checkpoints),
        lineage=lineage,
        steps=int(trainer.state.global_step),
        final_loss=lineage["final_loss"],
        mean_loss=lineage["mean_loss"],
        losses=losses,
        tokens=int(total["tokens"]),
        loss_tokens=int(total["loss_tokens"]),
        seconds=time.perf_counter() - started,
        sequences=run.sequences,
        eval_losses=tuple((step, loss) for step, loss in (lineage["validation"] or {}).get("eval_losses", [])),
        best_checkpoint=((lineage["validation"] or {}).get("best") or {}).get("checkpoint"),
    )


def _checkpointing_args(args_class: type, enabled: bool) -> dict[str, Any]:
    """Gradient checkpointing, under the name this transformers version uses (5.x renamed it activation_checkpointing)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(args_class)}
    prefix = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {prefix: enabled, f"{prefix}_kwargs": {"use_reentrant": False} if enabled else None}


def _start_wandb(config: TrainConfig, run: StageRun, output_dir: Path) -> Any:
    """A wandb run whose config carries the dataset version, base model and stage; the Trainer adds its arguments."""
    import wandb

    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        wandb_run = wandb.init(
            project=config.wandb_project,
            mode=config.wandb_mode,
            name=output_dir.name,
            dir=str(output_dir),
            config={
                "satsang": {
                    "stage": run.stage,
                    "dataset_version": run.version.version_id,
                    "dataset_manifest_sha256": run.version.manifest_sha256,
                    "base_model": run.base.get("id"),
                    "base_model_sha256": run.base.get("weights_sha256"),
                    "from_checkpoint": (run.from_checkpoint or {}).get("path"),
                    "config": config.to_dict(),
                }
            },
        )
    except Exception as error:  # noqa: BLE001 - wandb raises its own kinds for login, network and setup
        raise TrainingError(f"wandb: {str(error).splitlines()[0]} (offline: --wandb-mode offline)") from None
    run.wandb = {"project": config.wandb_project, "mode": config.wandb_mode, "run_id": wandb_run.id, "dir": str(Path(wandb_run.dir).parent)}
    return wandb_run
