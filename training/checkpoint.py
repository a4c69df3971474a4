"""Checkpoints: load a LoRA checkpoint for inference, diagnose one, and fix its key names.

`load_checkpoint(dir)` gives (model, tokenizer, lineage): the base model the lineage names
(or `base_model`), the adapter on it, the tokenizer saved with the checkpoint (its chat
template included). Adapter files written by other tools load too: keys are put in PEFT's
file form before loading (see `canonical_key`), and any adapter weight PEFT would leave
unloaded is an error, never a silent random adapter.

`diagnose_checkpoint(dir)` is the seed's checkpoint diagnostics:

- key naming patterns (layer numbers folded to `*`), and the two ways a file goes wrong:
  `_orig_mod.` segments left by torch.compile (a compiled module's `state_dict()`), and
  adapter names (`lora_A.default.weight`) left by saving a live PeftModel's `state_dict()`:
  PEFT files carry no adapter name (`lora_A.weight`); the loader inserts `.default.`, so a
  file that already has it loads as `lora_A.default.default.weight`, i.e. not at all. A
  module `state_dict()` compared with a PEFT file therefore looks like it is "missing
  `.default.`"; both forms are recognised.
- weight statistics: norms, exact zeros, NaN/Inf per tensor (an all-zero lora_B is an
  adapter that never trained);
- shape compatibility with the base model (built on the meta device from its config, so
  nothing is loaded): lora_A is [r, in_features], lora_B [out_features, r] of the module it
  adapts, and every targeted module has both.

`fix_checkpoint(dir, out)` writes a copy whose adapter keys are in PEFT's file form
(`PeftModel.from_pretrained` loads it), dropping non-adapter tensors, never touching the
original.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curation.files import sha256_file, utc_now
from training.lineage import ADAPTER_BIN, ADAPTER_CONFIG, ADAPTER_SAFETENSORS, LINEAGE_NAME, TrainingError, read_lineage, write_lineage

if TYPE_CHECKING:
    import torch

PEFT_PREFIX = "base_model.model."
ORIG_MOD = "_orig_mod."
LORA_PARTS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json", "chat_template.jinja")

# `...lora_A.<adapter name>.weight`, `...lora_embedding_A.<adapter name>`: the adapter name PEFT drops when saving.
_ADAPTER_NAME = re.compile(r"\.(" + "|".join(LORA_PARTS) + r")\.([A-Za-z0-9_\-]+)(?=\.(?:weight|bias)$|$)")
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>" + "|".join(LORA_PARTS) + r")(?:\.(?P<param>weight|bias))?$")
_NUMBER = re.compile(r"(?<=\.)\d+(?=\.)")


class CheckpointError(TrainingError):
    """A checkpoint cannot be read, loaded or fixed; the message names the file and why."""


# ---- keys -------------------------------------------------------------------------------------


def canonical_key(key: str) -> str:
    """A key as PEFT writes it in adapter_model.safetensors: `base_model.model.<module>.lora_A.weight`.

    Drops every `_orig_mod.` segment (torch.compile), drops the adapter name after a LoRA part
    (a live PeftModel's state_dict), and adds the `base_model.model.` prefix when missing.
    Non-LoRA keys get the first and last treatment only.
    """
    key = key.replace(ORIG_MOD, "")
    key = _ADAPTER_NAME.sub(lambda m: f".{m.group(1)}" if m.group(2) not in ("weight", "bias") else m.group(0), key)
    if not key.startswith(PEFT_PREFIX):
        key = PEFT_PREFIX + key
    return key


def adapter_names_in(key: str) -> str | None:
    match = _ADAPTER_NAME.search(key.replace(ORIG_MOD, ""))
    if match and match.group(2) not in ("weight", "bias"):
        return match.group(2)
    return None


def is_lora_key(key: str) -> bool:
    return any(f".{part}" in key for part in LORA_PARTS)


def key_pattern(key: str) -> str:
    """The key with layer numbers folded to `*`, so 32 layers make one pattern."""
    return _NUMBER.sub("*", key)


# ---- files ------------------------------------------------------------------------------------


def adapter_weights_path(directory: str | Path) -> Path:
    directory = Path(directory)
    for name in (ADAPTER_SAFETENSORS, ADAPTER_BIN):
        if (directory / name).is_file():
            return directory / name
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    raise CheckpointError(f"{directory}: no {ADAPTER_SAFETENSORS} (nor {ADAPTER_BIN}): not a LoRA checkpoint")


def read_adapter_state(directory: str | Path) -> dict[str, torch.Tensor]:
    """The adapter tensors of a checkpoint, keys exactly as in the file."""
    path = adapter_weights_path(directory)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - safetensors and torch raise several kinds for a damaged file
        raise CheckpointError(f"{path}: unreadable ({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a state dict")
    return state


def read_adapter_config(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / ADAPTER_CONFIG
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise CheckpointError(f"{path}: unreadable ({error})") from None


def canonical_adapter_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The adapter tensors under canonical keys (non-adapter tensors dropped), and what was changed, one line each."""
    out: dict[str, Any] = {}
    renamed = dropped = 0
    for key, tensor in state.items():
        if not is_lora_key(key):
            dropped += 1
            continue
        new = canonical_key(key)
        if new in out:
            raise CheckpointError(f"two keys map to {new}: the file holds more than one adapter; keep one")
        renamed += new != key
        out[new] = tensor
    changes = []
    if renamed:
        changes.append(f"{renamed} keys renamed to PEFT's file form")
    if dropped:
        changes.append(f"{dropped} non-adapter tensors dropped")
    return out, changes


def resolve_base_model(directory: str | Path, lineage: dict[str, Any] | None, base_model: str | Path | None = None) -> str:
    """The base model to load under a checkpoint: the given one, else the lineage's (local path if it still exists, else its id), else adapter_config's."""
    if base_model is not None:
        return str(base_model)
    base = (lineage or {}).get("base_model") or {}
    if base.get("path") and Path(base["path"]).is_dir():
        return str(base["path"])
    if base.get("id"):
        return str(base["id"])
    config = read_adapter_config(directory) or {}
    if config.get("base_model_name_or_path"):
        return str(config["base_model_name_or_path"])
    raise CheckpointError(f"{directory}: neither {LINEAGE_NAME} nor {ADAPTER_CONFIG} names a base model; pass base_model")


def _torch_dtype(dtype: Any, device: str, lineage: dict[str, Any] | None):
    import torch

    if dtype is None:
        if str(device).startswith("cpu"):
            return torch.float32
        trained = ((lineage or {}).get("hyperparameters") or {}).get("dtype")
        if trained in ("bfloat16", "float16", "float32"):
            return getattr(torch, trained)
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    name = names.get(str(dtype), str(dtype)).removeprefix("torch.")
    if name == "auto":
        return "auto"
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise CheckpointError(f"dtype {dtype!r}: use bfloat16, float16, float32 or auto")
    return value


def check_before_loading(directory: Path, lineage: dict[str, Any], base: str, explicit_base: bool) -> None:
    """Refuse a checkpoint whose files changed since its lineage, or a base other than the one it was trained on.

    A base the caller named explicitly is their choice: a different one is a warning, not a refusal.
    """
    import warnings

    from training.integrity import base_model_problems, checkpoint_file_problems

    changed = checkpoint_file_problems(directory, lineage) if lineage else []
    if changed:
        raise CheckpointError(f"{changed[0]}; `satsang audit {directory}` lists all" if len(changed) > 1 else changed[0])
    wrong_base, _ = base_model_problems(lineage, base) if lineage else ([], [])
    if wrong_base and not explicit_base:
        raise CheckpointError(f"{wrong_base[0]}; pass --base-model to load it on this base anyway")
    for problem in wrong_base:
        warnings.warn(problem, stacklevel=3)


def load_tokenizer(directory: str | Path, base: str):
    from transformers import AutoTokenizer

    directory = Path(directory)
    source = str(directory) if any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")) else base
    return AutoTokenizer.from_pretrained(source)


def load_checkpoint(
    checkpoint_dir: str | Path,
    base_model: str | Path | None = None,
    merge: bool = False,
    dtype: Any = None,
    device: str = "cpu",
) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, lineage) of a LoRA checkpoint, ready for generation (eval mode, on `device`).

    base_model: a model id or path; default the one the lineage names (its local path while it
    exists), else adapter_config.json's `base_model_name_or_path`.
    merge: fold the adapter into the base weights (a plain transformers model, faster to run).
    dtype: torch dtype or its name; default float32 on CPU, else the training dtype.
    lineage: the checkpoint's satsang_lineage.json, {} when it has none.

    Raises CheckpointError when the adapter does not fit the base model: an adapter weight
    with no module to go to, or a targeted module with no weights.
    """
    from transformers import AutoModelForCausalLM

    directory = Path(checkpoint_dir)
    adapter_weights_path(directory)
    if read_adapter_config(directory) is None:
        raise CheckpointError(f"{directory}: no {ADAPTER_CONFIG}; `satsang diagnose {directory} --fix` can rebuild one from the lineage")
    lineage = read_lineage(directory) or {}
    base = resolve_base_model(directory, lineage, base_model)
    check_before_loading(directory, lineage, base, explicit_base=base_model is not None)
    torch_dtype = _torch_dtype(dtype, device, lineage)
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
    except OSError as error:
        raise CheckpointError(f"base model {base!r} of {directory} cannot be loaded: {str(error).splitlines()[0]}") from None
    tokenizer = load_tokenizer(directory, base)
    model = attach_adapter(apply_merged_parents(model, lineage), directory)
    if merge:
        model = model.merge_and_unload()
    model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, lineage


def apply_merged_parents(model: Any, lineage: dict[str, Any] | None) -> Any:
    """The base model with the parent adapters a checkpoint was trained on merged in (SFT from_adapter merge), root first.

    Such a checkpoint's adapter fits the base with its parent folded in, not the bare base:
    the parent is found at the path its lineage records and must still hash to what it recorded.
    """
    record = (lineage or {}).get("from_checkpoint") or {}
    if not record.get("merged"):
        return model
    parent = Path(record.get("path") or "")
    weights = parent / ADAPTER_SAFETENSORS
    if not weights.is_file():
        raise CheckpointError(f"this checkpoint's adapter was trained on {parent} merged into the base; {weights} is gone (satsang export-model writes a self-contained model)")
    if record.get("adapter_sha256") and sha256_file(weights) != record["adapter_sha256"]:
        raise CheckpointError(f"{weights} has changed since a checkpoint was trained on it merged into the base")
    model = apply_merged_parents(model, (lineage or {}).get("parent") or read_lineage(parent))
    return attach_adapter(model, parent).merge_and_unload()


def attach_adapter(model: Any, checkpoint_dir: str | Path, is_trainable: bool = False) -> Any:
    """A PeftModel: the checkpoint's adapter on `model` (a base model), every adapter weight loaded or CheckpointError."""
    from peft import PeftModel

    directory = Path(checkpoint_dir)
    weights = adapter_weights_path(directory)
    config = read_adapter_config(directory)
    if config is None:
        raise CheckpointError(f"{directory}: no {ADAPTER_CONFIG}; `satsang diagnose {directory} --fix` can rebuild one from the lineage")
    canonical, changes = canonical_adapter_state(read_adapter_state(directory))
    _check_keys(directory, set(canonical), expected_adapter_keys(model, config))
    if changes:
        # Load a canonical copy, so PEFT's own loader (dtype casts, device placement) does the rest.
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory(prefix="satsang-adapter-") as tmp:
            save_file({k: v.contiguous() for k, v in canonical.items()}, str(Path(tmp) / ADAPTER_SAFETENSORS), metadata={"format": "pt"})
            shutil.copy2(directory / ADAPTER_CONFIG, Path(tmp) / ADAPTER_CONFIG)
            peft_model = PeftModel.from_pretrained(model, tmp, is_trainable=is_trainable)
    else:
        peft_model = PeftModel.from_pretrained(model, str(directory), is_trainable=is_trainable)
    _check_loaded(weights, peft_model, canonical)
    return peft_model


def _check_keys(directory: Path, found: set[str], expected: set[str]) -> None:
    unknown = sorted(found - expected)
    missing = sorted(expected - found)
    if unknown:
        raise CheckpointError(
            f"{directory}: {len(unknown)} adapter weights have no module in the base model "
            f"(e.g. {unknown[0]}); wrong base model? `satsang diagnose {directory}` shows shapes"
        )
    if missing:
        raise CheckpointError(f"{directory}: {len(missing)} targeted modules have no adapter weights (e.g. {missing[0]})")


def _check_loaded(weights: Path, model: Any, canonical: dict[str, Any]) -> None:
    """Every tensor of the file is in the model now (PEFT only warns when keys miss)."""
    import torch
    from peft import get_peft_model_state_dict

    loaded = get_peft_model_state_dict(model)
    for key, tensor in canonical.items():
        have = loaded.get(key)
        if have is None or have.shape != tensor.shape or not torch.equal(have.detach().to("cpu", tensor.dtype), tensor):
            raise CheckpointError(f"{weights}: {key} did not load into the model")


# ---- what the base model expects ---------------------------------------------------------------


def _linear_modules(model: Any) -> dict[str, tuple[int, int]]:
    """module path -> (out_features, in_features) for every linear layer (nn.Linear, GPT-2's Conv1D)."""
    import torch

    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            shapes[name] = (module.out_features, module.in_features)
        elif type(module).__name__ == "Conv1D" and hasattr(module, "weight"):
            shapes[name] = (module.weight.shape[1], module.weight.shape[0])
    return shapes


def _targets(config: dict[str, Any], modules: dict[str, Any]) -> list[str]:
    """The module paths PEFT adapts for a LoRA config (names, or one regex string)."""
    targets = config.get("target_modules") or []
    exclude = config.get("exclude_modules") or []
    layers = config.get("layers_to_transform")
    if isinstance(layers, int):
        layers = [layers]
    chosen = []
    for name in modules:
        if isinstance(targets, str):
            hit = re.fullmatch(targets, name) is not None
        else:
            hit = any(name == t or name.endswith("." + t) for t in targets)
        if isinstance(exclude, str):
            hit = hit and re.fullmatch(exclude, name) is None
        elif exclude:
            hit = hit and not any(name == t or name.endswith("." + t) for t in exclude)
        if hit and layers:
            number = re.search(r"\.(\d+)\.", name)
            hit = number is not None and int(number.group(1)) in layers
        if hit:
            chosen.append(name)
    return chosen


def expected_adapter_keys(model: Any, config: dict[str, Any]) -> set[str]:
    """The canonical keys a LoRA adapter with `config` has on `model` (a base model, not a PeftModel)."""
    modules = _linear_modules(model)
    keys = set()
    for name in _targets(config, modules):
        keys.add(f"{PEFT_PREFIX}{name}.lora_A.weight")
        keys.add(f"{PEFT_PREFIX}{name}.lora_B.weight")
        if config.get("lora_bias"):
            keys.add(f"{PEFT_PREFIX}{name}.lora_B.bias")
        if config.get("use_dora"):
            keys.add(f"{PEFT_PREFIX}{name}.lora_magnitude_vector")
    return keys


def meta_base_model(base: str):
    """The base model's modules on the meta device: shapes without loading (or even having) its weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


# ---- diagnosis --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorStats:
    key: str
    shape: tuple[int, ...]
    dtype: str
    norm: float
    zero_fraction: float
    n_nan: int
    n_inf: int


@dataclass
class Diagnosis:
    path: Path
    weights_file: str
    status: str = "ok"  # "ok" | "fixable" (naming only: load_checkpoint and --fix handle it) | "broken"
    problems: list[str] = field(default_factory=list)  # make the adapter wrong or unloadable
    notes: list[str] = field(default_factory=list)  # worth knowing, harmless
    n_tensors: int = 0
    n_parameters: int = 0
    patterns: dict[str, int] = field(default_factory=dict)  # key pattern -> count, as in the file
    orig_mod_keys: int = 0
    adapter_names: dict[str, int] = field(default_factory=dict)  # adapter name found in keys -> count
    unprefixed_keys: int = 0
    non_adapter_keys: int = 0
    config: dict[str, Any] | None = None
    base_model: str | None = None
    shapes_checked: int = 0
    shape_mismatches: list[str] = field(default_factory=list)
    unknown_modules: list[str] = field(default_factory=list)
    missing_modules: list[str] = field(default_factory=list)
    stats: list[TensorStats] = field(default_factory=list)
    norm_summary: dict[str, dict[str, float]] = field(default_factory=dict)  # lora_A / lora_B -> min, mean, max
    lineage: bool = False
    config_missing: bool = False

    @property
    def fixable(self) -> bool:
        """fix_checkpoint gives a loadable adapter: only the naming is wrong, or only adapter_config.json is missing."""
        if self.status == "fixable":
            return True
        return self.status == "broken" and self.config_missing and len(self.problems) == 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def diagnose_checkpoint(checkpoint_dir: str | Path, base_model: str | Path | None = None) -> Diagnosis:
    """Everything `satsang diagnose` reports about a checkpoint; reads the base model's config only."""
    import torch

    directory = Path(checkpoint_dir)
    weights = adapter_weights_path(directory)
    state = read_adapter_state(directory)
    diagnosis = Diagnosis(path=directory, weights_file=weights.name)
    diagnosis.n_tensors = len(state)
    diagnosis.n_parameters = int(sum(t.numel() for t in state.values()))
    diagnosis.patterns = dict(sorted(Counter(key_pattern(k) for k in state).items()))
    diagnosis.orig_mod_keys = sum(ORIG_MOD in k for k in state)
    diagnosis.adapter_names = dict(Counter(name for k in state if (name := adapter_names_in(k)) is not None))
    diagnosis.unprefixed_keys = sum(not k.replace(ORIG_MOD, "").startswith(PEFT_PREFIX) for k in state if is_lora_key(k))
    diagnosis.non_adapter_keys = sum(not is_lora_key(k) for k in state)
    try:
        lineage = read_lineage(directory)
        diagnosis.lineage = lineage is not None
    except TrainingError as error:
        diagnosis.problems.append(str(error))
        lineage = None
    if not diagnosis.lineage:
        diagnosis.notes.append(f"no {LINEAGE_NAME}: this checkpoint cannot say which data trained it")
    try:
        diagnosis.config = read_adapter_config(directory)
    except CheckpointError as error:
        diagnosis.problems.append(str(error))
    if lineage:
        from training.integrity import checkpoint_file_problems

        diagnosis.problems.extend(checkpoint_file_problems(directory, lineage, missing_ok=(ADAPTER_CONFIG,)))
    if diagnosis.config is None and not any(ADAPTER_CONFIG in p for p in diagnosis.problems):
        diagnosis.config_missing = True
        diagnosis.problems.append(f"no {ADAPTER_CONFIG}: PEFT cannot load the adapter (--fix rebuilds it from the lineage)")

    # Naming: what PEFT's loader would do with these keys as they are.
    if diagnosis.orig_mod_keys:
        diagnosis.notes.append(f"{diagnosis.orig_mod_keys} keys carry '{ORIG_MOD}' (saved from a torch.compile'd module): PEFT would not load them")
    for name, count in diagnosis.adapter_names.items():
        diagnosis.notes.append(
            f"{count} keys carry the adapter name '.{name}.' (a live PeftModel's state_dict): PEFT files omit it and its loader "
            f"inserts '.default.', so as saved they would not load"
        )
    if diagnosis.unprefixed_keys:
        diagnosis.notes.append(f"{diagnosis.unprefixed_keys} adapter keys lack the '{PEFT_PREFIX}' prefix PEFT files have")
    if diagnosis.non_adapter_keys:
        diagnosis.notes.append(f"{diagnosis.non_adapter_keys} tensors are not adapter weights (base weights saved with the adapter?)")

    # Statistics.
    norms: dict[str, list[float]] = {}
    for key, tensor in state.items():
        values = tensor.detach().float()
        n_nan = int(torch.isnan(values).sum())
        n_inf = int(torch.isinf(values).sum())
        finite = values[torch.isfinite(values)]
        norm = float(torch.linalg.vector_norm(finite)) if finite.numel() else float("nan")
        zero_fraction = float((values == 0).sum()) / max(1, values.numel())
        diagnosis.stats.append(TensorStats(key, tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."), norm, zero_fraction, n_nan, n_inf))
        match = _LORA_KEY.match(canonical_key(key))
        if match:
            norms.setdefault(match.group("part"), []).append(norm)
    for part, values in sorted(norms.items()):
        finite_norms = [v for v in values if math.isfinite(v)]
        if finite_norms:
            diagnosis.norm_summary[part] = {"min": min(finite_norms), "mean": sum(finite_norms) / len(finite_norms), "max": max(finite_norms)}
    bad = [s for s in diagnosis.stats if s.n_nan or s.n_inf]
    if bad:
        diagnosis.problems.append(
            f"{len(bad)} tensors hold NaN or Inf (e.g. {bad[0].key}: {bad[0].n_nan} NaN, {bad[0].n_inf} Inf): the run diverged"
        )
    b_stats = [s for s in diagnosis.stats if ".lora_B" in s.key]
    if b_stats and all(s.zero_fraction == 1.0 for s in b_stats):
        diagnosis.notes.append("every lora_B is all zeros: the adapter is as initialised (never trained) and changes nothing")

    # Shapes against the base model.
    try:
        base = resolve_base_model(directory, lineage, base_model)
    except CheckpointError as error:
        base = None
        diagnosis.notes.append(str(error))
    diagnosis.base_model = base
    canonical, _ = canonical_adapter_state(state)
    if base is not None:
        try:
            meta = meta_base_model(base)
        except Exception as error:  # noqa: BLE001 - not cached, no config, unknown architecture: all mean "cannot check"
            diagnosis.notes.append(f"base model {base!r}: config not readable here ({type(error).__name__}); shapes not checked")
        else:
            _check_shapes(diagnosis, canonical, meta)
    if diagnosis.problems:
        diagnosis.status = "broken"
    elif diagnosis.orig_mod_keys or diagnosis.adapter_names or diagnosis.unprefixed_keys or diagnosis.non_adapter_keys:
        diagnosis.status = "fixable"
    return diagnosis


def _check_shapes(diagnosis: Diagnosis, canonical: dict[str, Any], meta: Any) -> None:
    modules = _linear_modules(meta)
    config = diagnosis.config or {}
    rank = config.get("r")
    rank_pattern = config.get("rank_pattern") or {}
    seen: dict[str, set[str]] = {}
    for key, tensor in canonical.items():
        match = _LORA_KEY.match(key)
        if not match or not match.group("module").startswith(PEFT_PREFIX):
            continue
        module = match.group("module")[len(PEFT_PREFIX):]
        part = match.group("part")
        seen.setdefault(module, set()).add(part)
        if module not in modules:
            diagnosis.unknown_modules.append(module)
            continue
        out_features, in_features = modules[module]
        want_rank = next((r for pattern, r in rank_pattern.items() if module.endswith(pattern) or re.fullmatch(pattern, module)), rank)
        shape = tuple(tensor.shape)
        diagnosis.shapes_checked += 1
        if part == "lora_A" and match.group("param") == "weight":
            if len(shape) != 2 or shape[1] != in_features or (want_rank is not None and shape[0] != want_rank):
                diagnosis.shape_mismatches.append(f"{module}.lora_A {list(shape)}, expected [{want_rank}, {in_features}]")
        elif part == "lora_B" and match.group("param") == "weight":
            if len(shape) != 2 or shape[0] != out_features or (want_rank is not None and shape[1] != want_rank):
                diagnosis.shape_mismatches.append(f"{module}.lora_B {list(shape)}, expected [{out_features}, {want_rank}]")
    for module, parts in sorted(seen.items()):
        if module in modules and not {"lora_A", "lora_B"} <= parts:
            diagnosis.problems.append(f"{module}: has {', '.join(sorted(parts))} but not both lora_A and lora_B")
    if config:
        targeted = set(_targets(config, modules))
        diagnosis.missing_modules = sorted(targeted - set(seen))
    if diagnosis.unknown_modules:
        diagnosis.problems.append(
            f"{len(diagnosis.unknown_modules)} adapted modules do not exist in {diagnosis.base_model} (e.g. {diagnosis.unknown_modules[0]}): another architecture?"
        )
    if diagnosis.shape_mismatches:
        diagnosis.problems.append(f"{len(diagnosis.shape_mismatches)} shape mismatches with {diagnosis.base_model} (e.g. {diagnosis.shape_mismatches[0]})")
    if diagnosis.missing_modules:
        diagnosis.problems.append(f"{len(diagnosis.missing_modules)} modules the config targets have no weights (e.g. {diagnosis.missing_modules[0]})")


# ---- fix --------------------------------------------------------------------------------------


def fix_checkpoint(
    checkpoint_dir: str | Path,
    output_dir: str | Path | None = None,
    lora_alpha: float | None = None,
) -> Path:
    """A copy of the checkpoint whose adapter PEFT loads: canonical keys, adapter tensors only.

    Writes `output_dir` (default `<checkpoint>-fixed` beside it), which must not exist yet.
    Copies the other files (config, tokenizer, lineage); the lineage gains `remapped`, naming
    the original and what changed. A missing adapter_config.json is rebuilt from the weights
    (rank, target modules) and the lineage's alpha (or `lora_alpha`).
    """
    from safetensors.torch import save_file

    source = Path(checkpoint_dir)
    weights = adapter_weights_path(source)
    target = Path(output_dir) if output_dir is not None else source.parent / f"{source.name}-fixed"
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CheckpointError(f"{target}: already exists; the fixed copy goes into a new directory")
    state = read_adapter_state(source)
    canonical, changes = canonical_adapter_state(state)
    if not canonical:
        raise CheckpointError(f"{weights}: no LoRA tensors in it (keys like ...lora_A.weight); nothing to fix")
    lineage = read_lineage(source)
    if lineage:  # the fixed copy's lineage vouches for its adapter: only if the source is what the lineage recorded
        from training.integrity import checkpoint_file_problems

        changed = checkpoint_file_problems(source, lineage, missing_ok=(ADAPTER_CONFIG,))
        if changed:
            raise CheckpointError(f"{changed[0]}: the fixed copy would vouch for it; fix only a checkpoint its lineage still describes")
    config = read_adapter_config(source)
    if config is None:
        config = _rebuild_adapter_config(canonical, lineage, lora_alpha, source)
        changes.append(f"{ADAPTER_CONFIG} rebuilt from the weights and the lineage")

    staging = target.parent / f".{target.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for item in source.iterdir():
            if item.name in (ADAPTER_SAFETENSORS, ADAPTER_BIN, LINEAGE_NAME, ADAPTER_CONFIG) or item.name.startswith("."):
                continue
            if item.is_dir():
                shutil.copytree(item, staging / item.name)
            else:
                shutil.copy2(item, staging / item.name)
        save_file({k: v.contiguous() for k, v in sorted(canonical.items())}, str(staging / ADAPTER_SAFETENSORS), metadata={"format": "pt"})
        (staging / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if lineage is not None:
            lineage = dict(lineage)
            checkpoint = dict(lineage.get("checkpoint") or {})
            checkpoint["adapter_sha256"] = sha256_file(staging / ADAPTER_SAFETENSORS)
            lineage["checkpoint"] = checkpoint
            lineage["remapped"] = {
                "from": str(source.resolve()),
                "from_file": weights.name,
                "from_sha256": sha256_file(weights),
                "changes": changes or ["none: the keys were already canonical"],
                "by": "training.checkpoint.fix_checkpoint (satsang diagnose --fix)",
                "at": utc_now(),
            }
            write_lineage(staging, lineage)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _rebuild_adapter_config(canonical: dict[str, Any], lineage: dict[str, Any] | None, lora_alpha: float | None, source: Path) -> dict[str, Any]:
    from peft import LoraConfig

    ranks = {tuple(t.shape)[0] for k, t in canonical.items() if k.endswith(".lora_A.weight")}
    if len(ranks) != 1:
        raise CheckpointError(f"{source}: no {ADAPTER_CONFIG}, and the lora_A ranks {sorted(ranks)} are not one rank; cannot rebuild it")
    hyper = (lineage or {}).get("hyperparameters") or {}
    alpha = lora_alpha if lora_alpha is not None else hyper.get("lora_alpha")
    if alpha is None:
        raise CheckpointError(
            f"{source}: no {ADAPTER_CONFIG} and no lineage naming lora_alpha; pass it (the scaling alpha/r cannot be read from the weights)"
        )
    modules = sorted({m.group("module").rsplit(".", 1)[-1] for k in canonical if (m := _LORA_KEY.match(k))})
    base = ((lineage or {}).get("base_model") or {}).get("path") or ((lineage or {}).get("base_model") or {}).get("id")
    config = LoraConfig(
        r=ranks.pop(),
        lora_alpha=alpha,
        lora_dropout=float(hyper.get("lora_dropout", 0.0)),
        target_modules=modules,
        task_type="CAUSAL_LM",
        base_model_name_or_path=base,
    )
    data = config.to_dict()
    return json.loads(json.dumps(data, default=lambda v: sorted(v) if isinstance(v, set) else str(v)))
