"""LoRA pretraining and SFT on dataset versions exported from the real sample, with lineage and audit.

The base model is a tiny Phi-architecture model with a byte-level BPE tokenizer trained on the
sample in a fixture (training.tiny; nothing is downloaded). The workspace is the bundled
sample curated by `run_pipeline` (an sft version "sample") plus a pretrain version "prose".
Each run is a few dozen steps of rank-8 LoRA on 128-token sequences.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import torch

from satsang.options import config_options
from satsang.render.training import render_audit
from training.audit import audit_checkpoint
from training.checkpoint import ADAPTER_SAFETENSORS, diagnose_checkpoint, load_checkpoint
from training.config import PretrainConfig, SFTConfig, load_config
from training.lineage import LINEAGE_NAME, TrainingError, read_lineage, write_lineage
from training.pretrain import train_pretrain
from training.sft import DEFAULT_CHAT_TEMPLATE, train_sft
from training.targets import discover_target_modules

SAMPLES = Path(__file__).resolve().parents[1] / "satsang" / "samples"
SMALL = dict(
    lora_rank=8,
    lora_alpha=16,
    max_seq_len=128,
    batch_size=4,
    per_device_batch_size=2,  # so gradient accumulation is exercised too
    logging_steps=1,
    learning_rate=1e-2,
    lr_scheduler="constant",
    warmup_ratio=0.0,
    save_steps=8,
)
# 64-token blocks: the sample's prose makes about 150 of them, so 24 steps of 4 stay within the first epoch.
PRETRAIN = {**SMALL, "max_seq_len": 64}
PRETRAIN_STEPS = 24
SFT_STEPS = 24


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def workspace(sample_versions):
    return sample_versions  # conftest: shared with the other training test files


@pytest.fixture(scope="module")
def pretrained(workspace, tiny, tmp_path_factory):
    config = PretrainConfig(**PRETRAIN, max_steps=PRETRAIN_STEPS)
    return train_pretrain(config, workspace.pretrain, tiny, tmp_path_factory.mktemp("runs") / "prose")


@pytest.fixture(scope="module")
def sft(workspace, pretrained, tmp_path_factory):
    config = SFTConfig(**SMALL, max_steps=SFT_STEPS)
    return train_sft(config, workspace.sft, tmp_path_factory.mktemp("runs") / "sft", from_checkpoint=pretrained.output_dir)


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def loss_drop(result, n: int = 4) -> tuple[float, float]:
    losses = [loss for _, loss in result.losses]
    return mean(losses[:n]), mean(losses[-n:])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- pretraining ------------------------------------------------------------------------------


def test_pretrain_loss_decreases_and_checkpoints_carry_lineage(pretrained, workspace, tiny):
    from curation.versions import verify_path

    first, last = loss_drop(pretrained)
    assert last < first - 0.03, pretrained.losses
    assert pretrained.steps == PRETRAIN_STEPS
    assert [p.name for p in pretrained.checkpoints] == ["checkpoint-8", "checkpoint-16", "checkpoint-24"]
    previous_tokens = 0
    for checkpoint in pretrained.checkpoints:
        assert (checkpoint / ADAPTER_SAFETENSORS).is_file() and (checkpoint / "optimizer.pt").is_file()
        lineage = read_lineage(checkpoint)
        assert lineage["checkpoint"]["step"] == int(checkpoint.name.split("-")[1]) and not lineage["checkpoint"]["final"]
        assert lineage["checkpoint"]["adapter_sha256"] == sha256(checkpoint / ADAPTER_SAFETENSORS)
        assert lineage["tokens"]["total"]["tokens"] > previous_tokens
        previous_tokens = lineage["tokens"]["total"]["tokens"]

    lineage = pretrained.lineage
    assert read_lineage(pretrained.output_dir) == lineage
    assert lineage["stage"] == "pretrain" and lineage["checkpoint"]["final"] and lineage["parent"] is None
    assert lineage["dataset"]["version_id"] == workspace.pretrain.name
    assert lineage["dataset"]["manifest_sha256"] == sha256(workspace.pretrain / "manifest.json")
    assert lineage["base_model"]["path"] == str(tiny.resolve())
    assert lineage["base_model"]["weights_sha256"] and lineage["base_model"]["weight_files"]["model.safetensors"] == sha256(tiny / "model.safetensors")
    assert lineage["lora"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]
    assert lineage["hyperparameters"]["lora_rank"] == 8 and lineage["hyperparameters"]["gradient_accumulation_steps"] == 2
    assert lineage["tool"]["satsang"] and lineage["tool"]["commit"]
    assert lineage["started_at"] <= lineage["ended_at"]
    assert lineage["steps"] == PRETRAIN_STEPS and lineage["final_loss"] == pretrained.losses[-1][1]
    # Training read the version in memory: it still verifies (no cache files were written into it).
    assert verify_path(workspace.pretrain) == []


def test_pretrain_token_counts_add_up_and_match_the_trainer(pretrained):
    tokens = pretrained.lineage["tokens"]
    total = tokens["total"]
    for key in ("tokens", "loss_tokens", "dataset_tokens"):
        assert sum(s[key] for s in tokens["by_source"]) == total[key]
        assert sum(s[key] for s in tokens["by_section"]) == total[key]
    # Packed blocks: every position is read; every position but the first of each sequence is predicted.
    sequences = PRETRAIN_STEPS * SMALL["batch_size"]
    assert total["tokens"] - total["loss_tokens"] == sequences
    assert total["tokens"] <= sequences * PRETRAIN["max_seq_len"]
    # TRL counts tokens its own way (the attention mask of every training batch): the same number.
    trl_counted = [e["num_tokens"] for e in read_trainer_log(pretrained.output_dir) if "num_tokens" in e]
    assert trl_counted[-1] == total["tokens"] == pretrained.tokens
    assert [s["title"] for s in tokens["by_source"]] == ["Nan Yar? (Who am I?)"]


def read_trainer_log(directory: Path) -> list[dict]:
    return json.loads((directory / "trainer_state.json").read_text())["log_history"]


def test_adapter_reloads_and_generates(pretrained, tiny, workspace):
    from datasets import load_from_disk
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model, tokenizer, lineage = load_checkpoint(pretrained.output_dir)
    assert lineage == pretrained.lineage
    saved = load_file(str(pretrained.output_dir / ADAPTER_SAFETENSORS))
    live = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(saved) == len(live) == 24
    for key, tensor in saved.items():
        assert torch.equal(live[key.replace(".weight", ".default.weight")], tensor)
    prompt = tokenizer("Who am I?", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 12
    assert tokenizer.decode(out[0, prompt["input_ids"].shape[1] :]).strip()
    # A mid-run checkpoint loads too, and differs from the final adapter.
    middle, _, middle_lineage = load_checkpoint(pretrained.checkpoints[0])
    assert middle_lineage["steps"] == 8
    with torch.no_grad():
        assert not torch.allclose(middle(**prompt).logits, model(**prompt).logits)
    # Held still, on the same texts: the adapter lowers the loss of the base model (no batch-to-batch noise).
    texts = list(load_from_disk(str(workspace.pretrain / "dataset"), keep_in_memory=True)["text"][:8])
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=64)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    base = AutoModelForCausalLM.from_pretrained(tiny).eval()
    with torch.no_grad():
        before = base(**batch, labels=labels).loss.item()
        after = model(**batch, labels=labels).loss.item()
    assert after < before - 0.05, (before, after)


def test_resume_continues_where_the_checkpoint_stopped(pretrained, workspace, tiny, tmp_path):
    config = PretrainConfig(**PRETRAIN, max_steps=PRETRAIN_STEPS)
    resumed = train_pretrain(config, workspace.pretrain, tiny, tmp_path / "resumed", resume_from=pretrained.checkpoints[0])
    assert resumed.steps == PRETRAIN_STEPS
    assert resumed.lineage["resumed_from"] == [str(pretrained.checkpoints[0].resolve())]
    assert resumed.lineage["started_at"] == read_lineage(pretrained.checkpoints[0])["started_at"]
    # The same batches as the uninterrupted run: the same tokens, section by section, and the same losses.
    assert resumed.lineage["tokens"] == pretrained.lineage["tokens"]
    after = dict(pretrained.losses)
    for step, loss in resumed.losses:
        if step > 8:
            assert loss == pytest.approx(after[step], abs=1e-4)

    with pytest.raises(TrainingError, match="already holds a run"):
        train_pretrain(config, workspace.pretrain, tiny, tmp_path / "resumed")
    with pytest.raises(TrainingError, match="not a resumable checkpoint"):
        train_pretrain(config, workspace.pretrain, tiny, tmp_path / "again", resume_from=pretrained.output_dir)


# ---- sft ---------------------------------------------------------------------------------------


def test_sft_on_the_pretrain_checkpoint_chains_lineage(sft, pretrained, workspace):
    first, last = loss_drop(sft)
    assert last < first - 0.03, sft.losses
    assert sft.steps == SFT_STEPS
    lineage = sft.lineage
    assert lineage["stage"] == "sft"
    assert lineage["parent"] == pretrained.lineage
    assert lineage["from_checkpoint"] == {
        "path": str(pretrained.output_dir.resolve()), "adapter_sha256": sha256(pretrained.output_dir / ADAPTER_SAFETENSORS), "merged": False
    }
    assert lineage["dataset"]["version_id"] == workspace.sft.name
    assert lineage["base_model"]["weights_sha256"] == pretrained.lineage["base_model"]["weights_sha256"]
    # The parent's adapter trained on: its LoRA settings are the ones recorded.
    assert lineage["lora"]["r"] == 8 and lineage["lora"]["continued_from"] == str(pretrained.output_dir.resolve())
    assert lineage["hyperparameters"]["lora_rank"] == 8
    # Assistant-only loss: only the answers are predicted.
    total = lineage["tokens"]["total"]
    assert 0 < total["loss_tokens"] < total["tokens"] * 0.9
    assert lineage["tokenizer"]["chat_template_source"].startswith("satsang default")
    # Every checkpoint of the chain loads on the base model alone.
    model, tokenizer, loaded = load_checkpoint(sft.checkpoints[-1])
    assert loaded["parent"] == pretrained.lineage
    messages = [{"role": "user", "content": "I feel lost in my practice."}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == "Instruct: I feel lost in my practice.\nOutput:"
    ids = tokenizer(prompt, return_tensors="pt")
    # min_new_tokens: whether a tiny model trained on a few pairs says EOS early depends on those pairs, not on loading.
    assert model.generate(**ids, max_new_tokens=6, min_new_tokens=6, do_sample=False).shape[1] == ids["input_ids"].shape[1] + 6


def test_sft_resumes_from_its_checkpoint_alone(sft, workspace, tmp_path):
    # The checkpoint's lineage says which parent adapter (and so which base) the run continued.
    config = SFTConfig(**SMALL, max_steps=SFT_STEPS)
    resumed = train_sft(config, workspace.sft, tmp_path / "resumed", resume_from=sft.checkpoints[0])
    assert resumed.steps == SFT_STEPS
    assert resumed.lineage["parent"] == sft.lineage["parent"]
    assert resumed.lineage["tokens"] == sft.lineage["tokens"]


def test_dataset_references_resolve_to_versions(workspace, tmp_path):
    from training.data import resolve_dataset

    assert resolve_dataset("prose", workspace.root) == workspace.pretrain
    assert resolve_dataset(workspace.sft.name[:10], workspace.root) == workspace.sft
    assert resolve_dataset(str(workspace.sft)) == workspace.sft
    with pytest.raises(TrainingError, match="not a dataset version"):
        resolve_dataset(str(tmp_path))
    from curation.errors import CurationError

    with pytest.raises(CurationError, match="no version 'nope'"):  # curation's own error, a one-line CLI error
        resolve_dataset("nope", workspace.root)


@pytest.mark.parametrize("packing", [True, False])
def test_pretrain_blocks_keep_every_token_and_its_origin(workspace, tiny, packing):
    from transformers import AutoTokenizer

    from training.data import ORIGIN, load_rows, open_version, pretrain_dataset

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    version = open_version(workspace.pretrain, "pretrain")
    prepared = pretrain_dataset(version, tokenizer, 64, packing=packing)
    blocks = list(prepared.dataset["input_ids"])
    origins = list(prepared.dataset[ORIGIN])
    assert all(len(b) == len(o) <= 64 for b, o in zip(blocks, origins))
    texts = list(load_rows(version)["text"])
    expected = [t for text in texts for t in (*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id)]
    assert [t for block in blocks for t in block] == expected  # nothing dropped, nothing reordered
    assert sum(prepared.dataset_tokens) == len(expected)
    if packing:
        assert all(len(b) == 64 for b in blocks[:-1])
    else:
        assert len(blocks) >= len(texts)


def test_default_chat_template_masks_the_answer_and_its_end(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    messages = [
        {"role": "user", "content": "What is the means?"},
        {"role": "assistant", "content": "Enquiry: who am I?"},
        {"role": "user", "content": "And then?"},
        {"role": "assistant", "content": "Be still."},
    ]
    encoded = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True, tokenize=True)
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    trained = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    assert trained == " Enquiry: who am I?<|endoftext|> Be still.<|endoftext|>"
    assert "What is the means" not in trained


def test_sft_from_a_base_model_and_a_base_that_is_not_the_parents(workspace, tiny, pretrained, tmp_path):
    from training.tiny import TinyPhiConfig, build_tiny_phi

    config = SFTConfig(**SMALL, max_steps=4)
    progress: list[tuple[int, int, float | None]] = []
    result = train_sft(config, workspace.sft, tmp_path / "plain", base_model=tiny, progress=lambda *p: progress.append(p))
    assert [(step, total) for step, total, _ in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]  # after every step, for the CLI's bar
    assert [loss for *_, loss in progress] == [loss for _, loss in result.losses]  # logging_steps=1: each step's loss
    assert result.lineage["parent"] is None and result.lineage["from_checkpoint"] is None
    assert result.lineage["lora"]["r"] == 8
    assert result.steps == 4 and [p.name for p in result.checkpoints] == ["checkpoint-4"]  # the last step is always saved

    other = build_tiny_phi(tmp_path / "other", [(SAMPLES / "talks-sample.txt").read_text(encoding="utf-8")], TinyPhiConfig(seed=7))
    with pytest.raises(TrainingError, match="is not the one"):
        train_sft(config, workspace.sft, tmp_path / "mismatch", base_model=other, from_checkpoint=pretrained.output_dir)
    with pytest.raises(TrainingError, match="give a base model"):
        train_sft(config, workspace.sft, tmp_path / "nothing")


# ---- audit -------------------------------------------------------------------------------------


def test_audit_names_versions_sources_sections_and_tokens_that_add_up(sft, pretrained, workspace):
    report = audit_checkpoint(sft.output_dir)
    assert report.ok, report.problems
    assert [s["stage"] for s in report.stages] == ["pretrain", "sft"]
    assert report.total["versions"] == [workspace.pretrain.name, workspace.sft.name]
    assert all(s["dataset"]["status"] == "verified" for s in report.stages)
    sources = {s["title"]: s for s in report.total["sources"]}
    assert set(sources) == {"Nan Yar? (Who am I?)", "Talks with Sri Ramana Maharshi"}
    # A source's sha256 is the sha256 of the book's bytes as shipped.
    assert sources["Nan Yar? (Who am I?)"]["sha256"] == sha256(SAMPLES / "nan-yar.txt")
    assert sources["Talks with Sri Ramana Maharshi"]["sha256"] == sha256(SAMPLES / "talks-sample.txt")
    assert sources["Nan Yar? (Who am I?)"]["stages"] == ["pretrain"] and sources["Talks with Sri Ramana Maharshi"]["stages"] == ["sft"]
    pretrain_stage, sft_stage = report.stages
    assert pretrain_stage["tokens"] == pretrained.lineage["tokens"]["total"]
    assert sft_stage["tokens"] == sft.lineage["tokens"]["total"]
    sections = {s["section"] for s in sft_stage["sections"]}
    assert sections and all(s.startswith("Talk ") for s in sections)
    assert len(sections) == len(sft_stage["sections"])  # one source: one row per talk
    for key in ("tokens", "loss_tokens", "dataset_tokens"):
        for stage in report.stages:
            assert sum(s[key] for s in stage["sources"]) == sum(s[key] for s in stage["sections"]) == stage["tokens"][key]
        assert sum(s[key] for s in report.total["sources"]) == report.total["tokens"][key]
        assert sum(s[key] for s in report.total["sections"]) == report.total["tokens"][key]
        assert report.total["tokens"][key] == sum(stage["tokens"][key] for stage in report.stages)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] and data["stages"][1]["sources"][0]["sha256"] == sources["Talks with Sri Ramana Maharshi"]["sha256"]
    from rich.console import Console

    console = Console(width=250, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(render_audit(report))
    text = console.export_text()
    assert "Talks with Sri Ramana Maharshi" in text and "Talk 9" in text and f"{report.total['tokens']['tokens']:,}" in text


def writable_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return target


def test_audit_reports_missing_and_inconsistent_lineage(pretrained, workspace, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    for item in pretrained.output_dir.iterdir():
        if item.is_file():
            shutil.copy2(item, checkpoint / item.name)
    version = writable_copy(workspace.pretrain, tmp_path / "moved" / workspace.pretrain.name)
    lineage = read_lineage(checkpoint)
    lineage["dataset"]["path"] = str(version)
    write_lineage(checkpoint, lineage)
    assert audit_checkpoint(checkpoint).ok

    with open(version / "manifest.json", "a", encoding="utf-8") as manifest:
        manifest.write(" ")
    report = audit_checkpoint(checkpoint)
    assert not report.ok and report.stages[0]["dataset"]["status"] == "changed"
    assert "no longer matches the lineage" in report.problems[0]

    shutil.rmtree(tmp_path / "moved")
    report = audit_checkpoint(checkpoint)
    assert report.ok and report.stages[0]["dataset"]["status"] == "not found" and "not found" in report.notes[0]
    report = audit_checkpoint(checkpoint, workspace=workspace.root)  # found in the workspace by id
    assert report.ok and report.stages[0]["dataset"]["status"] == "verified"

    lineage["tokens"]["total"]["tokens"] += 1
    write_lineage(checkpoint, lineage)
    assert any("do not add up" in p for p in audit_checkpoint(checkpoint).problems)

    (checkpoint / ADAPTER_SAFETENSORS).write_bytes(b"not the adapter")
    assert any("changed since its lineage was written" in p for p in audit_checkpoint(checkpoint).problems)

    (checkpoint / LINEAGE_NAME).unlink()
    report = audit_checkpoint(checkpoint)
    assert not report.ok and "cannot say which data trained it" in report.problems[0]
    (checkpoint / LINEAGE_NAME).write_text("{not json")
    assert "unreadable lineage" in audit_checkpoint(checkpoint).problems[0]


# ---- what training refuses ---------------------------------------------------------------------


def test_training_reads_verified_versions_of_its_kind_only(workspace, tiny, tmp_path):
    config = PretrainConfig(**SMALL, max_steps=2)
    with pytest.raises(TrainingError, match="is a sft version"):
        train_pretrain(config, workspace.sft, tiny, tmp_path / "a")
    with pytest.raises(TrainingError, match="is a pretrain version"):
        train_sft(SFTConfig(**SMALL, max_steps=2), workspace.pretrain, tmp_path / "b", base_model=tiny)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(TrainingError, match="not a dataset version"):
        train_pretrain(config, plain, tiny, tmp_path / "c")
    tampered = writable_copy(workspace.pretrain, tmp_path / "tampered")
    shard = next((tampered / "data").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes() + b"\0")
    with pytest.raises(TrainingError, match="does not verify"):
        train_pretrain(config, tampered, tiny, tmp_path / "d")
    with pytest.raises(TrainingError, match="cannot be loaded"):
        train_pretrain(config, workspace.pretrain, tmp_path / "no-model", tmp_path / "e")


def test_target_modules_are_discovered_or_checked(tiny):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert discover_target_modules(model) == ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")
    assert discover_target_modules(model, ("q_proj", "fc2")) == ("q_proj", "fc2")
    with pytest.raises(TrainingError, match=r"nonexistent match no linear layer .*its linear layers: dense, fc1, fc2, k_proj, q_proj, v_proj"):
        discover_target_modules(model, ("q_proj", "nonexistent"))
    with pytest.raises(TrainingError, match="lm_head match no linear layer"):
        discover_target_modules(model, ("lm_head",))
    model.config.model_type = "unknown"
    assert set(discover_target_modules(model)) == {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"}

    class Embeddings(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)

    with pytest.raises(TrainingError, match="no linear layers"):
        discover_target_modules(Embeddings())


def test_config_defaults_are_the_seeds_and_files_and_flags_override(tmp_path):
    config = PretrainConfig()
    assert (config.lora_rank, config.lora_alpha, config.lora_dropout, config.epochs, config.batch_size, config.learning_rate) == (64, 128.0, 0.05, 3.0, 64, 2e-4)
    assert (config.save_steps, config.gradient_checkpointing, config.compile, config.wandb, config.packing) == (1000, True, False, False, True)
    assert config.gradient_accumulation_steps == 8
    assert SFTConfig().assistant_only_loss
    rank_help = next(o for o in config_options(PretrainConfig) if o.name == "lora_rank").annotation.__metadata__[0].help
    assert "LoRA rank" in rank_help and "(default: 64)" in rank_help  # what `satsang train --help` shows for --rank

    (tmp_path / "train.toml").write_text('lora_rank = 16\ntarget_modules = ["q_proj", "v_proj"]\n[pretrain]\nmax_seq_len = 512\n[sft]\nlearning_rate = 1e-4\n')
    pre = load_config(PretrainConfig, tmp_path / "train.toml", learning_rate=3e-4, lora_alpha=None)
    assert (pre.lora_rank, pre.max_seq_len, pre.learning_rate, pre.lora_alpha, pre.target_modules) == (16, 512, 3e-4, 128.0, ("q_proj", "v_proj"))
    post = load_config(SFTConfig, tmp_path / "train.toml")
    assert (post.lora_rank, post.max_seq_len, post.learning_rate) == (16, 1024, 1e-4)
    (tmp_path / "train.json").write_text(json.dumps({"epochs": 1, "wandb": True, "wandb_mode": "offline"}))
    assert load_config(PretrainConfig, tmp_path / "train.json").epochs == 1.0
    (tmp_path / "train.yaml").write_text("batch_size: 32\nper_device_batch_size: 4\n")
    assert load_config(PretrainConfig, tmp_path / "train.yaml").gradient_accumulation_steps == 8

    (tmp_path / "bad.toml").write_text("lora_rnak = 8\n")
    with pytest.raises(TrainingError, match="unknown settings lora_rnak"):
        load_config(PretrainConfig, tmp_path / "bad.toml")
    with pytest.raises(TrainingError, match="multiple of per_device_batch_size"):
        PretrainConfig(batch_size=10, per_device_batch_size=4)
    with pytest.raises(TrainingError, match="lora_rank must be a whole number"):
        load_config(PretrainConfig, None, lora_rank="8")
    with pytest.raises(TrainingError, match="wandb_mode must be one of"):
        PretrainConfig(wandb_mode="cloud")
    with pytest.raises(TrainingError, match="no such config file"):
        load_config(PretrainConfig, tmp_path / "missing.toml")


def test_compiled_training_saves_clean_keys_and_wandb_offline_records_the_version(workspace, tiny, tmp_path, monkeypatch):
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = PretrainConfig(**{**SMALL, "save_steps": 2}, max_steps=2, compile=True, compile_backend="eager", wandb=True, wandb_mode="offline")
    result = train_pretrain(config, workspace.pretrain, tiny, tmp_path / "compiled")
    assert result.steps == 2
    diagnosis = diagnose_checkpoint(result.checkpoints[0])
    assert diagnosis.status == "ok" and diagnosis.orig_mod_keys == 0 and not diagnosis.adapter_names
    assert result.lineage["hyperparameters"]["compile"] is True
    wandb_record = result.lineage["wandb"]
    assert wandb_record["mode"] == "offline" and wandb_record["run_id"]
    run_files = list(Path(wandb_record["dir"]).glob("*.wandb"))
    assert run_files and workspace.pretrain.name.encode() in run_files[0].read_bytes()


# ---- the command line ----------------------------------------------------------------------------


def satsang(*args) -> Any:
    from typer.testing import CliRunner

    from satsang.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})


def test_train_flags_and_config_files_reach_the_lineage_and_audit_reads_it(workspace, tiny, tmp_path):
    prose = tmp_path / "prose"
    result = satsang(
        "train", "pretrain", "--dataset", workspace.pretrain, "--base-model", tiny, "--output", prose,
        "--rank", "4", "--alpha", "8", "--dropout", "0.1", "--target-modules", "q_proj, v_proj", "--lr", "5e-3",
        "--max-steps", "2", "--batch-size", "4", "--per-device-batch-size", "2", "--max-seq-len", "64", "--save-steps", "2",
        "--no-gradient-checkpointing", "--no-packing", "--seed", "7", "--device", "cpu", "--dtype", "float32",
        "--lr-scheduler", "constant", "--warmup-ratio", "0", "--logging-steps", "1",
    )
    assert result.exit_code == 0, result.output
    assert "Trained pretrain" in result.output and f"satsang audit {prose}" in result.output
    lineage = read_lineage(prose)
    hyper = lineage["hyperparameters"]
    assert (hyper["lora_rank"], hyper["lora_alpha"], hyper["lora_dropout"], hyper["learning_rate"], hyper["seed"]) == (4, 8.0, 0.1, 5e-3, 7)
    assert hyper["target_modules"] == ["q_proj", "v_proj"] and lineage["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert (hyper["gradient_checkpointing"], hyper["packing"], hyper["max_seq_len"], hyper["lr_scheduler"]) == (False, False, 64, "constant")
    assert (hyper["epochs"], hyper["wandb"]) == (3.0, False) and lineage["steps"] == 2  # not given: the dataclass's defaults

    # SFT: a config file, then flags over it; --full-loss is the off side of --assistant-only-loss.
    (tmp_path / "sft.toml").write_text("batch_size = 4\nper_device_batch_size = 2\nmax_seq_len = 128\n[sft]\nlearning_rate = 1e-3\nmax_steps = 2\n")
    sft_dir = tmp_path / "sft"
    result = satsang("train", "sft", "--dataset", workspace.sft, "--from", prose, "--output", sft_dir, "--config", tmp_path / "sft.toml", "--lr", "2e-3", "--full-loss")
    assert result.exit_code == 0, result.output
    hyper = read_lineage(sft_dir)["hyperparameters"]
    assert (hyper["learning_rate"], hyper["batch_size"], hyper["max_seq_len"], hyper["assistant_only_loss"]) == (2e-3, 4, 128, False)

    audited = satsang("audit", sft_dir, "--json")
    assert audited.exit_code == 0, audited.output
    assert [stage["stage"] for stage in json.loads(audited.stdout)["stages"]] == ["pretrain", "sft"]
    shown = satsang("audit", sft_dir, "--no-sections")
    assert shown.exit_code == 0 and "OK" in shown.output and "Stage 2: sft" in shown.output
    diagnosed = satsang("diagnose", sft_dir)
    assert diagnosed.exit_code == 0 and "OK" in diagnosed.output

    # A bad value is one line naming the setting, and nothing is written.
    bad = satsang("train", "pretrain", "--dataset", workspace.pretrain, "--base-model", tiny, "--output", tmp_path / "bad", "--rank", "0")
    assert bad.exit_code == 1 and bad.stderr == "error: lora_rank must be at least 1, not 0\n"
    assert not (tmp_path / "bad").exists()
