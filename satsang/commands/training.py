"""satsang train pretrain|sft, audit, diagnose: LoRA training on dataset versions, and checkpoints' lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from satsang.app import WorkspaceOption, app, err, one_line_errors, out
from satsang.options import ConfigSettings, config_command


train_app = typer.Typer(
    help="Train LoRA adapters on dataset versions: continued pretraining on prose, then SFT on dialogue.",
    epilog="Example: satsang train pretrain --dataset prose --base-model microsoft/phi-2 --output runs/prose",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")

DatasetOption = Annotated[str, typer.Option("--dataset", help="Dataset version: id, unique id prefix, name (its latest) or a version directory.", show_default=False)]
OutputOption = Annotated[Path, typer.Option("--output", help="Run directory: checkpoint-N/ every --save-steps; the final adapter, tokenizer and satsang_lineage.json at its top.", show_default=False)]
ConfigOption = Annotated[Optional[Path], typer.Option("--config", help="TOML, JSON or YAML file of settings (flat, or \\[pretrain]/\\[sft] tables); flags override it.", show_default=False)]
ResumeOption = Annotated[Optional[Path], typer.Option("--resume", help="Resume from this checkpoint-N directory (same dataset version).", show_default=False)]
# The training settings themselves are options made from the config's fields (satsang/options.py).


@config_command(train_app, "pretrain", "training.config:PretrainConfig")
def train_pretrain_command(
    dataset: DatasetOption,
    base_model: Annotated[str, typer.Option("--base-model", help="Base model: a Hugging Face id or a local directory.", show_default=False)],
    output: OutputOption,
    settings: ConfigSettings,
    workspace: WorkspaceOption = None,
    config: ConfigOption = None,
    resume: ResumeOption = None,
) -> None:
    """LoRA continued pretraining on a pretrain dataset version (the seed's defaults: rank 64, alpha 128, 3 epochs, batch 64, lr 2e-4).

    Every checkpoint gets satsang_lineage.json: the dataset version and its manifest hash, the base
    model and its weights' hash, hyperparameters, commit, steps, times, loss and tokens per source.

    Example: satsang train pretrain --dataset prose --base-model microsoft/phi-2 --output runs/prose
    """
    from satsang.render.progress import train_progress
    from satsang.render.training import render_train_result
    from training.config import PretrainConfig, load_config
    from training.data import resolve_dataset
    from training.pretrain import train_pretrain

    with one_line_errors():
        config_values = load_config(PretrainConfig, config, **settings)
        version = resolve_dataset(dataset, workspace)
        with train_progress(err, "pretrain") as progress:
            result = train_pretrain(config_values, version, base_model, output, resume_from=resume, progress=progress)
    out.print(render_train_result(result))


@config_command(train_app, "sft", "training.config:SFTConfig")
def train_sft_command(
    dataset: DatasetOption,
    output: OutputOption,
    settings: ConfigSettings,
    from_checkpoint: Annotated[Optional[Path], typer.Option("--from", help="Pretrain checkpoint whose adapter SFT trains on, or merges under a fresh one (--from-adapter merge); its lineage chains in.", show_default=False)] = None,
    base_model: Annotated[Optional[str], typer.Option("--base-model", help="Base model for a new adapter; with --from, where the parent's base is now.", show_default=False)] = None,
    workspace: WorkspaceOption = None,
    config: ConfigOption = None,
    resume: ResumeOption = None,
) -> None:
    """SFT on an sft dataset version with TRL's SFTTrainer: on top of a pretrain checkpoint (--from) or a base model.

    The seed's recipe (fresh rank-16 adapter on the merged pretrain model): --config training/recipes/seed.toml

    Example: satsang train sft --dataset sample --from runs/prose --output runs/sft
    """
    from satsang.render.progress import train_progress
    from satsang.render.training import render_train_result
    from training.config import SFTConfig, load_config
    from training.data import resolve_dataset
    from training.sft import train_sft

    with one_line_errors():
        config_values = load_config(SFTConfig, config, **settings)
        version = resolve_dataset(dataset, workspace)
        with train_progress(err, "sft") as progress:
            result = train_sft(
                config_values, version, output, base_model=base_model, from_checkpoint=from_checkpoint, resume_from=resume, progress=progress
            )
    out.print(render_train_result(result))


@app.command()
def audit(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory (a run's output or one of its checkpoint-N).", show_default=False)],
    workspace: WorkspaceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    sections: Annotated[bool, typer.Option("--sections/--no-sections", help="List every section (talk) with its tokens.")] = True,
) -> None:
    """Which dataset versions, sources (title, sha256) and sections trained a checkpoint, with tokens per stage and in total.

    Exit status 1 when the lineage is missing or no longer matches (a changed manifest or adapter).

    Example: satsang audit runs/sft --json
    """
    import json as json_module

    from curation.workspace import default_workspace_path
    from satsang.render.training import render_audit
    from training.audit import audit_checkpoint

    root = workspace if workspace is not None else default_workspace_path()
    with one_line_errors():
        report = audit_checkpoint(checkpoint, workspace=root if root.is_dir() else None)
    if as_json:
        print(json_module.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        out.print(render_audit(report, sections=sections))
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def diagnose(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory with an adapter_model.safetensors (or .bin).", show_default=False)],
    base_model: Annotated[Optional[str], typer.Option("--base-model", help="Check shapes against this base. (default: the lineage's, else adapter_config.json's)", show_default=False)] = None,
    fix: Annotated[bool, typer.Option("--fix", help="Write a copy with keys in PEFT's form (it loads with PeftModel.from_pretrained).")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", help="Where --fix writes. (default: <checkpoint>-fixed)", show_default=False)] = None,
    lora_alpha: Annotated[Optional[float], typer.Option("--lora-alpha", help="--fix without adapter_config.json or lineage: the alpha to record.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the diagnosis as JSON.")] = False,
) -> None:
    """Check a checkpoint: key naming (torch.compile's _orig_mod., adapter names), weight statistics (norms, zeros, NaN/Inf), shapes against the base model.

    Exit status 1 when the adapter would not load or is damaged (and --fix did not mend it).

    Example: satsang diagnose runs/prose/checkpoint-1000 --fix
    """
    import json as json_module

    from satsang.render.training import render_diagnosis
    from training.checkpoint import diagnose_checkpoint, fix_checkpoint

    fixed = None
    with one_line_errors():
        diagnosis = diagnose_checkpoint(checkpoint, base_model=base_model)
        if fix and diagnosis.fixable:
            fixed = fix_checkpoint(checkpoint, output, lora_alpha=lora_alpha)
    if as_json:
        print(json_module.dumps({**diagnosis.to_dict(), "fixed": str(fixed) if fixed else None}, indent=2, default=str))
    else:
        out.print(render_diagnosis(diagnosis, fixed=fixed))
    if fix and diagnosis.status == "ok":
        out.print("Nothing to fix: the adapter loads as it is.", markup=False, highlight=False)
    if diagnosis.status == "broken" and fixed is None:
        raise typer.Exit(1)


@app.command("export-model")
def export_model(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory (a run's output or one of its checkpoint-N).", show_default=False)],
    output: Annotated[Path, typer.Argument(help="A new directory for the merged model.", show_default=False)],
    base_model: Annotated[Optional[str], typer.Option("--base-model", help="Where the base model is now. (default: the lineage's)", show_default=False)] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="Weights dtype: float32, bfloat16, float16. (default: float32)", show_default=False)] = None,
) -> None:
    """Write a checkpoint as a plain transformers model: adapter merged into the base (safetensors), tokenizer, lineage.

    AutoModelForCausalLM.from_pretrained(OUTPUT) loads it without peft; it generates as adapter + base does.

    Example: satsang export-model runs/sft models/sft-merged
    """
    from training.export import export_merged_model

    with one_line_errors():
        written = export_merged_model(checkpoint, output, base_model=base_model, dtype=dtype)
    out.print(f"Merged model: {written} (model.safetensors, tokenizer, satsang_lineage.json)", markup=False, highlight=False)
