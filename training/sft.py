"""SFT on dialogue pairs with TRL's SFTTrainer, from a base model or on top of a pretrain checkpoint.

    result = train_sft(SFTConfig(), "ws/versions/sample-<id>", "runs/sft", from_checkpoint="runs/prose")

The loss is on the assistant's words only (assistant_only_loss): the question is context,
the answer is what the model learns to give. TRL finds the assistant's tokens through the
chat template's `{% generation %}` markers; a tokenizer with no template gets
`DEFAULT_CHAT_TEMPLATE`, Phi-2's own Instruct:/Output: form, with the markers, and the
end-of-text token inside them so the model learns to stop. The template is saved with every
checkpoint's tokenizer, so inference formats prompts exactly as training did
(`tokenizer.apply_chat_template(messages, add_generation_prompt=True)` ends in "Output:").

With `from_checkpoint` the parent's adapter trains on (from_adapter "continue": same rank,
alpha and targets; a LoRA setting given that differs from the parent's is refused), or is
merged into the base weights under a fresh adapter (from_adapter "merge": the seed's SFT
recipe, e.g. rank 16 on the upper third of the layers). Either way the lineage embeds the
parent's lineage, so an audit of the SFT checkpoint names the pretraining data too.

A conversation longer than max_seq_len is split on turn boundaries, never cut silently
(training.data.sft_sequences).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.config import SFTConfig
from training.data import DatasetVersion, open_version, sft_sequences
from training.lineage import TrainingError
from training.runner import ProgressCallback, Stage, StageData, TrainResult, run_stage

# Phi-2's documented QA form. "Output:" ends the prompt; the answer starts with its own space,
# so the prompt tokenizes the same way alone and followed by an answer.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}Instruct: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}Output:{% generation %} {{ message['content'] }}{{ eos_token }}{% endgeneration %}\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Output:{% endif %}"
)


def set_chat_template(tokenizer, template_path: str | Path | None = None) -> str:
    """Give the tokenizer its training chat template; returns where it came from (for the lineage)."""
    if template_path is not None:
        path = Path(template_path)
        try:
            tokenizer.chat_template = path.read_text(encoding="utf-8")
        except OSError as error:
            raise TrainingError(f"{path}: cannot read the chat template ({error.strerror})") from None
        return str(path.resolve())
    if getattr(tokenizer, "chat_template", None):
        return "tokenizer"
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return "satsang default (Instruct:/Output:)"


def prepare_sft_data(version: DatasetVersion, tokenizer: Any, config: SFTConfig) -> StageData:
    """The version's conversations in the tokenizer's chat template, as sequences of at most max_seq_len tokens.

    Tokenized here rather than by TRL (which truncates at max_length, with only a warning): a
    long conversation is split on turn boundaries (training.data.sft_sequences), and what was
    split, cut or dropped is counted in the result and the lineage.
    """
    template_source = set_chat_template(tokenizer, config.chat_template)
    prepared = sft_sequences(version, tokenizer, config.max_seq_len, config.assistant_only_loss, config.validation_fraction)
    return StageData(
        dataset=prepared.dataset,
        groups=prepared.groups,
        dataset_tokens=prepared.dataset_tokens,
        chat_template_source=template_source,
        trainer_args={"dataset_kwargs": {"skip_prepare_dataset": True}},  # the labels already say which tokens are the answers
        sequences=prepared.sequences,
        eval_dataset=prepared.eval_dataset,
        validation=prepared.validation,
    )


SFT = Stage("sft", SFTConfig, prepare_sft_data)


def train_sft(
    config: SFTConfig,
    dataset_version_dir: str | Path,
    output_dir: str | Path,
    base_model: str | Path | None = None,
    from_checkpoint: str | Path | None = None,
    resume_from: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """SFT on an sft dataset version: a new adapter on `base_model`, or `from_checkpoint`'s adapter trained on.

    With both, `base_model` says where the parent's base model is now; its weights must hash
    to what the parent's lineage recorded. Resuming needs neither: the checkpoint's lineage says.
    `progress(step, max_steps, loss)` is called after every optimizer step.
    """
    if not isinstance(config, SFTConfig):
        raise TrainingError(f"train_sft takes an SFTConfig, not {type(config).__name__}")
    if base_model is None and from_checkpoint is None and resume_from is None:
        raise TrainingError("give a base model (--base-model) or a pretrain checkpoint to continue (--from)")
    version = open_version(dataset_version_dir, "sft")
    return run_stage(
        SFT, config, version, output_dir, base_model=base_model, from_checkpoint=from_checkpoint, resume_from=resume_from, progress=progress
    )
