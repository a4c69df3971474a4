"""What a trainer relies on (issue 16): no silent truncation, resumes that keep their settings, --from settings
honoured or refused, effective settings and validation in the lineage, the seed's SFT recipe from a config file,
and a merged export that plain transformers loads.

The base model is the tiny Phi of conftest; the data the sample's versions (conftest.sample_versions).
Runs are a handful of steps of 128-token sequences, one torch thread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from training.config import PretrainConfig, SFTConfig, load_config
from training.lineage import TrainingError, read_lineage
from training.pretrain import train_pretrain
from training.sft import set_chat_template, train_sft

RECIPE = Path(__file__).resolve().parents[1] / "training" / "recipes" / "seed.toml"
SMALL = dict(
    lora_rank=8, lora_alpha=16, max_seq_len=128, batch_size=4, per_device_batch_size=2, logging_steps=1,
    learning_rate=1e-2, lr_scheduler="constant", warmup_ratio=0.0, save_steps=2,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def versions(sample_versions):
    return sample_versions


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    set_chat_template(tokenizer)
    return tokenizer


@pytest.fixture(scope="module")
def prose(versions, tiny, tmp_path_factory):
    """A 2-step pretrain checkpoint for --from."""
    return train_pretrain(PretrainConfig(**{**SMALL, "max_seq_len": 64}, max_steps=2), versions.pretrain, tiny, tmp_path_factory.mktemp("runs") / "prose")


@pytest.fixture(scope="module")
def sft_run(versions, tiny, tmp_path_factory):
    """4 steps of SFT from the base with a held-out split, evaluated every 2 steps; warm-up 1 step of 4."""
    config = SFTConfig(**{**SMALL, "warmup_ratio": 0.25, "lr_scheduler": "linear", "weight_decay": 0.01}, max_steps=4, validation_fraction=0.2)
    return train_sft(config, versions.sft, tmp_path_factory.mktemp("runs") / "sft", base_model=tiny)


def satsang(*args) -> Any:
    from typer.testing import CliRunner

    from satsang.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})


def trained_tokens(labels: list[int]) -> list[int]:
    return [t for t in labels[1:] if t != -100]  # position 0 is never predicted


# ---- 1. no silent truncation --------------------------------------------------------------------


def test_long_conversations_are_split_on_turn_boundaries_and_no_batch_row_is_cut_silently(versions, tokenizer):
    from training.data import GROUP, OriginCollator, encode_conversation, exchanges, load_rows, open_version, sft_sequences

    version = open_version(versions.sft, "sft")
    conversations = list(load_rows(version)["messages"])
    whole = [encode_conversation(tokenizer, messages, True) for messages in conversations]
    longest_exchange = max(
        len(encode_conversation(tokenizer, prefix + turn, True)[0]) for prefix, turns in map(exchanges, conversations) for turn in turns
    )
    assert longest_exchange < max(len(ids) for ids, _ in whole)  # some conversation is longer than its longest exchange

    # Every exchange fits: long conversations are split, nothing is cut, and the batches train every answer token.
    prepared = sft_sequences(version, tokenizer, longest_exchange)
    counts = prepared.sequences
    assert counts["rows"] == len(conversations) and counts["split"] > 0 and counts["sequences"] > counts["rows"]
    assert (counts["truncated"], counts["dropped"], counts["tokens_cut"]) == (0, 0, 0)
    rows = list(prepared.dataset["satsang_row"])
    collate = OriginCollator(tokenizer.pad_token_id)
    trained_by_row: dict[int, list[int]] = {}
    examples = [prepared.dataset[i] for i in range(len(prepared.dataset))]
    for start in range(0, len(examples), 4):
        batch = collate(examples[start : start + 4])
        assert batch["input_ids"].shape[1] <= longest_exchange
        for offset, labels in enumerate(batch["labels"].tolist()):
            row = rows[start + offset]
            trained_by_row.setdefault(row, []).extend(trained_tokens(labels))
            # Each window opens with a question: its answers are trained with the question before them.
            assert tokenizer.decode(examples[start + offset]["input_ids"]).startswith("Instruct:")
    for row, (_, labels) in enumerate(whole):
        assert trained_by_row[row] == trained_tokens(labels), f"conversation {row}: answer tokens lost or changed"
    assert prepared.dataset_tokens == [
        sum(len(ids) for ids, group in zip(prepared.dataset["input_ids"], prepared.dataset[GROUP]) if group == g) for g in range(len(prepared.groups))
    ]

    # An exchange longer than max_seq_len on its own is cut, and counted: never silently.
    short = sft_sequences(version, tokenizer, 96)
    assert short.sequences["truncated"] + short.sequences["dropped"] > 0 and short.sequences["tokens_cut"] > 0
    assert all(len(ids) <= 96 for ids in short.dataset["input_ids"])
    kept = sum(len(ids) for ids in short.dataset["input_ids"])
    assert kept == sum(short.dataset_tokens)


def test_the_lineage_and_result_count_rows_sequences_and_what_was_cut(sft_run):
    counts = sft_run.lineage["sequences"]
    assert counts == sft_run.sequences
    assert {"rows", "sequences", "split", "truncated", "dropped", "tokens_cut", "max_seq_len"} <= set(counts)
    assert counts["max_seq_len"] == 128 and counts["sequences"] >= counts["rows"] - counts["dropped"]
    # dataset_tokens are the tokens of the sequences that train: no sequence is longer than max_seq_len.
    assert sft_run.lineage["tokens"]["total"]["dataset_tokens"] <= counts["sequences"] * 128
    from satsang.render.training import render_train_result
    from rich.console import Console

    console = Console(width=250, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(render_train_result(sft_run))
    assert f"{counts['rows']:,} rows -> {counts['sequences']:,} sequences" in console.export_text()


# ---- 2. resume keeps its settings; mean loss covers the stage -----------------------------------


def test_resume_refuses_changed_settings_and_mean_loss_covers_the_whole_stage(sft_run, versions, tmp_path):
    checkpoint = sft_run.output_dir / "checkpoint-2"
    base = SFTConfig(**{**SMALL, "warmup_ratio": 0.25, "lr_scheduler": "linear", "weight_decay": 0.01}, max_steps=4, validation_fraction=0.2)
    changed = load_config(SFTConfig, None, **{**base.to_dict(), "learning_rate": 1e-3, "batch_size": 8})
    with pytest.raises(TrainingError, match=r"batch_size 4 \(this run: 8\), learning_rate 0\.01 \(this run: 0\.001\)"):
        train_sft(changed, versions.sft, tmp_path / "a", resume_from=checkpoint)
    with pytest.raises(TrainingError, match=r"lora_rank 8 \(this run: 16\)"):  # not a RuntimeError from loading the adapter
        train_sft(load_config(SFTConfig, None, **{**base.to_dict(), "lora_rank": 16}), versions.sft, tmp_path / "b", resume_from=checkpoint)
    result = satsang("train", "sft", "--dataset", versions.sft, "--output", tmp_path / "c", "--resume", checkpoint, "--max-steps", "4", "--lr", "1e-3")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "a resume keeps the settings" in result.stderr

    # Where it only writes differently (save_steps), it resumes; the mean loss is the whole stage's.
    resumed = train_sft(load_config(SFTConfig, None, **{**base.to_dict(), "save_steps": 4}), versions.sft, tmp_path / "d", resume_from=checkpoint)
    assert resumed.steps == 4 and resumed.lineage["mean_loss_steps"] == [1, 4]
    assert resumed.mean_loss == pytest.approx(sum(loss for _, loss in sft_run.losses) / 4, abs=1e-3)
    assert resumed.mean_loss == pytest.approx(sft_run.mean_loss, abs=1e-3)


# ---- 3. --from: LoRA settings honoured (merge) or refused (continue) --------------------------


def test_from_with_lora_settings_is_refused_when_continuing_and_honoured_when_merging(prose, versions, tiny, tmp_path):
    from safetensors.torch import load_file

    from training.checkpoint import ADAPTER_SAFETENSORS, load_checkpoint

    result = satsang(
        "train", "sft", "--dataset", versions.sft, "--from", prose.output_dir, "--output", tmp_path / "refused",
        "--rank", "16", "--alpha", "32", "--target-modules", "q_proj,v_proj", "--max-steps", "1", "--batch-size", "2", "--per-device-batch-size", "2",
    )
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and "--rank 16 (the parent's: 8)" in result.stderr and "--from-adapter merge" in result.stderr
    assert not (tmp_path / "refused" / ADAPTER_SAFETENSORS).exists()

    config = SFTConfig(**{**SMALL, "lora_rank": 16, "lora_alpha": 32, "target_modules": ("q_proj", "v_proj")}, max_steps=2, from_adapter="merge")
    merged = train_sft(config, versions.sft, tmp_path / "merged", from_checkpoint=prose.output_dir)
    lineage = merged.lineage
    assert (lineage["lora"]["r"], lineage["lora"]["alpha"], lineage["lora"]["target_modules"]) == (16, 32.0, ["q_proj", "v_proj"])
    assert lineage["hyperparameters"]["lora_rank"] == 16 and lineage["from_checkpoint"]["merged"] is True
    assert lineage["parent"] == prose.lineage
    weights = load_file(str(merged.output_dir / ADAPTER_SAFETENSORS))
    assert {tuple(t.shape) for k, t in weights.items() if "lora_A" in k} == {(16, 64)}
    assert all(".q_proj." in k or ".v_proj." in k for k in weights)
    # It loads: the parent merged into the base, then this adapter; a missing parent is one clear error.
    model, tokenizer, _ = load_checkpoint(merged.output_dir)
    assert model.generate(**tokenizer("Who am I?", return_tensors="pt"), max_new_tokens=3, min_new_tokens=3, do_sample=False).shape[1] > 3


# ---- 4 and 8. effective trainer settings; flags ------------------------------------------------


def test_the_lineage_records_the_settings_the_trainer_ran_with(sft_run):
    trainer = sft_run.lineage["trainer"]
    assert trainer["optimizer"] == "torch.optim.adamw.AdamW" and trainer["optim"] == "adamw_torch"
    assert trainer["warmup_steps"] == 1  # 0.25 of 4 steps, computed
    assert trainer["lr_scheduler"] == "linear" and trainer["max_steps"] == 4 and trainer["sequences_per_step"] == 4
    groups = trainer["param_groups"]
    assert {g["weight_decay"] for g in groups} <= {0.01, 0.0} and 0.01 in {g["weight_decay"] for g in groups}
    assert all(g["betas"] == [0.9, 0.999] and g["eps"] == 1e-8 and g["initial_lr"] == 1e-2 for g in groups)
    assert sum(g["parameters"] for g in groups) == trainer["trainable_parameters"] > 0
    assert trainer["attn_implementation"]
    assert sft_run.lineage["config"]["lora_rank"] == 8


def test_flags_for_warmup_weight_decay_scheduler_logging_and_attention(versions, tiny, tmp_path):
    result = satsang(
        "train", "pretrain", "--dataset", versions.pretrain, "--base-model", tiny, "--output", tmp_path / "p",
        "--max-steps", "2", "--batch-size", "2", "--per-device-batch-size", "2", "--max-seq-len", "64", "--rank", "4",
        "--warmup-steps", "1", "--weight-decay", "0.1", "--lr-scheduler", "cosine", "--logging-steps", "2", "--attn-implementation", "eager",
        "--adam-beta2", "0.95", "--device", "cpu",
    )
    assert result.exit_code == 0, result.output
    lineage = read_lineage(tmp_path / "p")
    trainer = lineage["trainer"]
    assert (trainer["warmup_steps"], trainer["lr_scheduler"], trainer["attn_implementation"]) == (1, "cosine", "eager")
    assert 0.1 in {g["weight_decay"] for g in trainer["param_groups"]} and trainer["param_groups"][0]["betas"] == [0.9, 0.95]
    assert [e["step"] for e in json.loads((tmp_path / "p" / "trainer_state.json").read_text())["log_history"] if "loss" in e] == [1, 2]


# ---- 5. validation -------------------------------------------------------------------------------


def test_held_out_talks_are_chosen_from_the_version_evaluated_and_the_best_checkpoint_named(sft_run, versions, tokenizer):
    from training.data import open_version, sft_sequences

    validation = sft_run.lineage["validation"]
    assert validation["unit"] == "talk (source, section)" and validation["held_out_units"] == round(0.2 * validation["units"])
    assert [step for step, _ in validation["eval_losses"]] == [2, 4] and sft_run.eval_losses == tuple(map(tuple, validation["eval_losses"]))
    best_step, best_loss = min(((s, l) for s, l in validation["eval_losses"]), key=lambda e: e[1])
    assert validation["best"] == {"checkpoint": f"checkpoint-{best_step}", "step": best_step, "eval_loss": best_loss}
    assert sft_run.best_checkpoint == f"checkpoint-{best_step}" and (sft_run.output_dir / sft_run.best_checkpoint).is_dir()
    # The held-out talks never trained, and the same version holds out the same talks.
    held = {(h["source_id"], h["section"]) for h in validation["held_out"]}
    trained = {(s["source_id"], s["section"]) for s in sft_run.lineage["tokens"]["by_section"] if s["tokens"]}
    assert held and not held & trained
    again = sft_sequences(open_version(versions.sft, "sft"), tokenizer, 128, validation_fraction=0.2).validation
    assert again["held_out"] == validation["held_out"]


# ---- 6. the seed's SFT recipe from a config file ------------------------------------------------


def test_the_seed_sft_recipe_runs_from_its_config_file(prose, versions, tmp_path):
    recipe = load_config(SFTConfig, RECIPE)
    assert (recipe.from_adapter, recipe.lora_rank, recipe.lora_alpha, recipe.lora_layers) == ("merge", 16, 32.0, "upper-third")
    assert (recipe.learning_rate, recipe.max_seq_len, recipe.weight_decay) == (1e-5, 2048, 0.01)
    # The tiny model has 512 positions: the recipe as it is, with shorter sequences and two small steps.
    result = satsang(
        "train", "sft", "--config", RECIPE, "--dataset", versions.sft, "--from", prose.output_dir, "--output", tmp_path / "sft",
        "--max-seq-len", "128", "--max-steps", "2", "--batch-size", "2", "--per-device-batch-size", "2",
    )
    assert result.exit_code == 0, result.output
    lineage = read_lineage(tmp_path / "sft")
    assert lineage["from_checkpoint"]["merged"] and (lineage["lora"]["r"], lineage["lora"]["alpha"], lineage["lora"]["layers"]) == (16, 32.0, [1])
    assert lineage["trainer"]["param_groups"][0]["initial_lr"] == 1e-5 and 0.01 in {g["weight_decay"] for g in lineage["trainer"]["param_groups"]}
    adapter = json.loads((tmp_path / "sft" / "adapter_config.json").read_text())
    assert adapter["layers_to_transform"] == [1]


# ---- 7. merged export ------------------------------------------------------------------------------


def test_export_model_loads_with_plain_transformers_and_generates_as_adapter_and_base(sft_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.checkpoint import load_checkpoint

    result = satsang("export-model", sft_run.output_dir, tmp_path / "merged")
    assert result.exit_code == 0, result.output
    out = tmp_path / "merged"
    assert (out / "model.safetensors").is_file() and not (out / "adapter_model.safetensors").exists()
    lineage = read_lineage(out)
    assert lineage["export"]["adapter_sha256"] == sft_run.lineage["checkpoint"]["adapter_sha256"] and lineage["dataset"] == sft_run.lineage["dataset"]
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    adapted, adapted_tokenizer, _ = load_checkpoint(sft_run.output_dir)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Who am I?"}], add_generation_prompt=True, tokenize=False)
    assert prompt == adapted_tokenizer.apply_chat_template([{"role": "user", "content": "Who am I?"}], add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, return_tensors="pt")
    settings = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(plain.generate(**ids, **settings), adapted.generate(**ids, **settings))
    again = satsang("export-model", sft_run.output_dir, out)
    assert again.exit_code == 1 and "already exists" in again.stderr


def test_eval_json_records_each_checkpoints_lineage(sft_run, tmp_path):
    from critic.offline import OfflineCritic
    from inference.eval import evaluate
    from inference.generate import GenerationConfig, LocalGenerator

    generator = LocalGenerator(sft_run.output_dir)
    report = evaluate({"sft": generator}, ["Who am I?"], OfflineCritic(), GenerationConfig(max_new_tokens=4, temperature=0.0, seed=0))
    paths = report.write(tmp_path / "eval")
    recorded = json.loads(paths["summary"].read_text())["config"]["lineages"]["sft"]
    assert recorded == [
        {
            "stage": "sft", "dataset_version": versions_id(sft_run), "manifest_sha256": sft_run.lineage["dataset"]["manifest_sha256"],
            "adapter_sha256": sft_run.lineage["checkpoint"]["adapter_sha256"], "step": 4, "base_model": sft_run.lineage["base_model"]["id"],
            "base_weights_sha256": sft_run.lineage["base_model"]["weights_sha256"], "merged_parent": False, "commit": sft_run.lineage["tool"]["commit"],
        }
    ]


def versions_id(result) -> str:
    return result.lineage["dataset"]["version_id"]


def test_pretraining_holds_out_whole_units_and_loses_no_token(versions, tokenizer):
    from training.data import ORIGIN, load_rows, open_version, pretrain_dataset

    version = open_version(versions.pretrain, "pretrain")
    whole = pretrain_dataset(version, tokenizer, 64)
    split = pretrain_dataset(version, tokenizer, 64, validation_fraction=0.2)
    validation = split.validation
    assert validation["held_out_units"] == max(1, round(0.2 * validation["units"])) and split.eval_dataset is not None
    trained = sum(len(ids) for ids in split.dataset["input_ids"])
    held = sum(len(ids) for ids in split.eval_dataset["input_ids"])
    assert trained + held == sum(whole.dataset_tokens) == sum(split.dataset_tokens) + validation["tokens"]
    if validation["unit"].startswith("talk"):  # no talk on both sides
        train_groups = {g for origins in split.dataset[ORIGIN] for g in origins}
        eval_groups = {g for origins in split.eval_dataset[ORIGIN] for g in origins}
        assert not train_groups & eval_groups
    assert validation["rows"] < len(load_rows(version))
    assert pretrain_dataset(version, tokenizer, 64, validation_fraction=0.2).validation == validation  # from the version: the same again
