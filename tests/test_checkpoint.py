"""Checkpoint loading, diagnosis and fixing, on a tiny Phi model built in a fixture (nothing downloaded).

The broken checkpoints are made the way they are made in practice: the state_dict of a
torch.compile'd PeftModel (`_orig_mod.` prefix, `.default.` adapter names), the PEFT-form
keys under a compiled module, a compiled inner model, NaN weights, a wrong rank.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from training.checkpoint import (
    ADAPTER_CONFIG,
    ADAPTER_SAFETENSORS,
    CheckpointError,
    canonical_key,
    diagnose_checkpoint,
    fix_checkpoint,
    load_checkpoint,
)
from satsang.render.training import render_diagnosis
from training.lineage import LINEAGE_NAME, read_lineage, write_lineage

PHI_TARGETS = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """A LoRA adapter with non-zero weights (as after training), saved the PEFT way, and its live PeftModel."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny),
        LoraConfig(r=4, lora_alpha=8, target_modules=PHI_TARGETS, task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    directory = tmp_path_factory.mktemp("adapter") / "clean"
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(directory)
    model.eval()
    return directory, model


@pytest.fixture(scope="module")
def probe() -> torch.Tensor:
    return torch.arange(3, 40).reshape(1, -1)


def logits(model, probe) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=probe).logits


def write_adapter(directory: Path, state: dict, config_from: Path | None) -> Path:
    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(directory / ADAPTER_SAFETENSORS))
    if config_from is not None:
        shutil.copy2(config_from / ADAPTER_CONFIG, directory / ADAPTER_CONFIG)
    return directory


def rendered(renderable) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115 - closed with the console
    console.print(renderable)
    return console.export_text()


def lora_only(state: dict) -> dict:
    return {k: v for k, v in state.items() if "lora_" in k}


def test_load_checkpoint_gives_the_trained_adapter(trained, probe):
    directory, live = trained
    model, tokenizer, lineage = load_checkpoint(directory)
    assert lineage == {}
    assert torch.allclose(logits(model, probe), logits(live, probe), atol=1e-5)
    merged, _, _ = load_checkpoint(directory, merge=True)
    assert type(merged).__name__ == "PhiForCausalLM"
    assert torch.allclose(logits(merged, probe), logits(live, probe), atol=1e-4)
    out = model.generate(**tokenizer("Who am I?", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert out.shape[1] > 5


def test_canonical_key_forms():
    want = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert canonical_key("_orig_mod.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight") == want
    assert canonical_key("base_model.model._orig_mod.model.layers.0.self_attn.q_proj.lora_A.weight") == want
    assert canonical_key("model.layers.0.self_attn.q_proj.lora_A.weight") == want
    assert canonical_key(want) == want
    assert canonical_key("base_model.model.model.embed_tokens.lora_embedding_A.default") == "base_model.model.model.embed_tokens.lora_embedding_A"


def compiled_state(live) -> dict:
    """What saving a torch.compile'd PeftModel's state_dict gives: `_orig_mod.` + live names with `.default.`."""
    compiled = torch.compile(live)  # lazy: nothing is compiled until it is called
    state = lora_only(compiled.state_dict())
    assert all(k.startswith("_orig_mod.") and ".default." in k for k in state)
    return state


@pytest.mark.parametrize("form", ["compiled_state_dict", "compiled_peft_keys", "compiled_inner_model"])
def test_compiled_checkpoint_is_diagnosed_and_fixed(trained, probe, tmp_path, form):
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    directory, live = trained
    if form == "compiled_state_dict":
        state = compiled_state(live)
    elif form == "compiled_peft_keys":  # PEFT's saved names (no adapter name) under a compiled wrapper
        state = {f"_orig_mod.{k}": v for k, v in get_peft_model_state_dict(live).items()}
    else:  # the inner transformers model was compiled: base_model.model._orig_mod.model.layers...
        state = {k.replace("base_model.model.", "base_model.model._orig_mod.", 1): v for k, v in lora_only(live.state_dict()).items()}
    broken = write_adapter(tmp_path / "broken", state, directory)

    diagnosis = diagnose_checkpoint(broken)
    assert diagnosis.status == "fixable", (diagnosis.problems, diagnosis.notes)
    assert diagnosis.orig_mod_keys == len(state) == 24
    assert diagnosis.shapes_checked == 24 and not diagnosis.shape_mismatches
    assert any("_orig_mod." in pattern for pattern in diagnosis.patterns)
    if form == "compiled_peft_keys":
        assert diagnosis.adapter_names == {}
    else:
        assert diagnosis.adapter_names == {"default": 24}
        assert any(".default." in note for note in diagnosis.notes)
    assert "FIXABLE" in rendered(render_diagnosis(diagnosis))

    # As saved, PEFT silently leaves the adapter at its initialisation: lora_B zero, the base model's output.
    base = AutoModelForCausalLM.from_pretrained(live.peft_config["default"].base_model_name_or_path)
    with pytest.warns(UserWarning, match="missing adapter keys"):
        naive = PeftModel.from_pretrained(base, str(broken))
    assert not torch.allclose(logits(naive, probe), logits(live, probe), atol=1e-4)

    fixed = fix_checkpoint(broken)
    assert fixed == tmp_path / "broken-fixed"
    assert diagnose_checkpoint(fixed).status == "ok"
    base = AutoModelForCausalLM.from_pretrained(live.peft_config["default"].base_model_name_or_path)
    reloaded = PeftModel.from_pretrained(base, str(fixed))
    assert torch.allclose(logits(reloaded, probe), logits(live, probe), atol=1e-5)
    # load_checkpoint remaps on the fly, without --fix.
    model, _, _ = load_checkpoint(broken)
    assert torch.allclose(logits(model, probe), logits(live, probe), atol=1e-5)


def test_fix_keeps_lineage_and_records_the_remap(trained, tmp_path):
    directory, live = trained
    broken = write_adapter(tmp_path / "broken", compiled_state(live), directory)
    write_lineage(broken, {"format": 1, "stage": "pretrain", "checkpoint": {"step": 3, "adapter_sha256": "x"}, "hyperparameters": {"lora_alpha": 8}})
    fixed = fix_checkpoint(broken, tmp_path / "out")
    lineage = read_lineage(fixed)
    assert lineage["remapped"]["from"] == str(broken.resolve())
    assert "renamed" in lineage["remapped"]["changes"][0]
    assert lineage["checkpoint"]["adapter_sha256"] != "x"
    with pytest.raises(CheckpointError, match="already exists"):
        fix_checkpoint(broken, tmp_path / "out")
    assert read_lineage(broken)["checkpoint"]["adapter_sha256"] == "x"  # the original is untouched


def test_fix_rebuilds_a_missing_adapter_config_from_the_lineage(trained, probe, tmp_path):
    directory, live = trained
    broken = write_adapter(tmp_path / "noconfig", compiled_state(live), None)
    diagnosis = diagnose_checkpoint(broken)
    assert diagnosis.status == "broken" and any(ADAPTER_CONFIG in p for p in diagnosis.problems)
    assert diagnosis.fixable  # only the config is missing, and the naming: --fix mends both
    with pytest.raises(CheckpointError, match="lora_alpha"):
        fix_checkpoint(broken)
    base_path = live.peft_config["default"].base_model_name_or_path
    write_lineage(broken, {"format": 1, "base_model": {"id": base_path, "path": base_path}, "hyperparameters": {"lora_alpha": 8, "lora_dropout": 0.0}})
    fixed = fix_checkpoint(broken)
    config = json.loads((fixed / ADAPTER_CONFIG).read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and sorted(config["target_modules"]) == sorted(PHI_TARGETS)
    model, _, lineage = load_checkpoint(fixed)
    assert lineage["remapped"]
    assert torch.allclose(logits(model, probe), logits(live, probe), atol=1e-5)


def test_diagnose_reports_nan_inf_and_untrained(trained, tmp_path):
    from peft import get_peft_model_state_dict

    directory, live = trained
    state = {k: v.clone() for k, v in get_peft_model_state_dict(live).items()}
    key = next(k for k in state if k.endswith("q_proj.lora_B.weight"))
    state[key][0, 0] = float("nan")
    state[key][1, 0] = float("inf")
    diagnosis = diagnose_checkpoint(write_adapter(tmp_path / "nan", state, directory))
    assert diagnosis.status == "broken"
    assert any("NaN or Inf" in p for p in diagnosis.problems)
    bad = next(s for s in diagnosis.stats if s.key == key)
    assert (bad.n_nan, bad.n_inf) == (1, 1)

    zeros = {k: (torch.zeros_like(v) if "lora_B" in k else v) for k, v in get_peft_model_state_dict(live).items()}
    diagnosis = diagnose_checkpoint(write_adapter(tmp_path / "untrained", zeros, directory))
    assert diagnosis.status == "ok"
    assert any("never trained" in note for note in diagnosis.notes)
    assert sum(s.zero_fraction == 1.0 for s in diagnosis.stats) == 12
    assert diagnosis.to_dict()["status"] == "ok"


def test_diagnose_and_load_refuse_an_adapter_that_does_not_fit(trained, tmp_path):
    from peft import get_peft_model_state_dict

    directory, live = trained
    state = get_peft_model_state_dict(live)
    # Another rank: the shapes disagree with the config and the base.
    wide = {k: (torch.zeros(8, v.shape[1]) if ".lora_A." in k else torch.zeros(v.shape[0], 8)) for k, v in state.items()}
    diagnosis = diagnose_checkpoint(write_adapter(tmp_path / "rank", wide, directory))
    assert diagnosis.status == "broken"
    assert len(diagnosis.shape_mismatches) == 24
    assert "expected [4, 64]" in diagnosis.shape_mismatches[0] or "expected [" in diagnosis.shape_mismatches[0]

    # A module the base model does not have: PEFT would load the rest and ignore it; we refuse.
    renamed = {k.replace("fc2", "fc3"): v for k, v in state.items()}
    stray = write_adapter(tmp_path / "stray", renamed, directory)
    diagnosis = diagnose_checkpoint(stray)
    assert diagnosis.status == "broken" and diagnosis.unknown_modules and diagnosis.missing_modules
    with pytest.raises(CheckpointError, match="no module in the base model"):
        load_checkpoint(stray)


def test_missing_pieces_are_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        diagnose_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a LoRA checkpoint"):
        load_checkpoint(tmp_path / "empty")
    assert not (tmp_path / "empty" / LINEAGE_NAME).exists()
