"""LoRA continued pretraining on a pretrain dataset version.

    result = train_pretrain(PretrainConfig(), "ws/versions/prose-<id>", "microsoft/phi-2", "runs/prose")

The loop is the one both stages share (training.runner). What is particular to pretraining is
its data: the version's texts are packed into max_seq_len blocks here rather than by TRL, so
each token's (source, section) survives packing and the audit counts the tokens each source
and talk contributed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.config import PretrainConfig
from training.data import DatasetVersion, open_version, pretrain_dataset
from training.lineage import TrainingError
from training.runner import ProgressCallback, Stage, StageData, TrainResult, run_stage


def prepare_pretrain_data(version: DatasetVersion, tokenizer: Any, config: PretrainConfig) -> StageData:
    """Token blocks with each token's origin; TRL is told the dataset is already prepared."""
    prepared = pretrain_dataset(version, tokenizer, config.max_seq_len, packing=config.packing, validation_fraction=config.validation_fraction)
    return StageData(
        dataset=prepared.dataset,
        groups=prepared.groups,
        dataset_tokens=prepared.dataset_tokens,
        trainer_args={"dataset_kwargs": {"skip_prepare_dataset": True}},
        sequences=prepared.sequences,
        eval_dataset=prepared.eval_dataset,
        validation=prepared.validation,
    )


PRETRAIN = Stage("pretrain", PretrainConfig, prepare_pretrain_data)


def train_pretrain(
    config: PretrainConfig,
    dataset_version_dir: str | Path,
    base_model: str | Path,
    output_dir: str | Path,
    resume_from: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """LoRA continued pretraining of `base_model` (an id or a local path) on a pretrain dataset version.

    `progress(step, max_steps, loss)` is called after every optimizer step.
    """
    if not isinstance(config, PretrainConfig):
        raise TrainingError(f"train_pretrain takes a PretrainConfig, not {type(config).__name__}")
    version = open_version(dataset_version_dir, "pretrain")
    return run_stage(PRETRAIN, config, version, output_dir, base_model=base_model, resume_from=resume_from, progress=progress)
