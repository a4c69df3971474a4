"""LoRA target modules: discovered from a model's linear layers, with known sets for known architectures.

On Phi (Phi-2 and the tiny test model) the seed adapted q_proj, k_proj, v_proj, dense, fc1
and fc2: every linear layer but the LM head. `discover_target_modules` returns the known set
for an architecture it knows (when the model has all of those modules), else every distinct
linear layer name but the output embedding's. Requested names are checked against the model,
and a name that matches nothing is an error listing what there is.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from training.lineage import TrainingError

# model_type -> module names (leaf names, as PEFT matches them).
KNOWN_TARGETS: dict[str, tuple[str, ...]] = {
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "gemma": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
}


def linear_layers(model: Any) -> dict[str, int]:
    """Leaf name -> how many linear layers (nn.Linear, GPT-2's Conv1D) have it, the output embedding left out."""
    import torch

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names: Counter[str] = Counter()
    for path, module in model.named_modules():
        if module is output:
            continue
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            names[path.rsplit(".", 1)[-1]] += 1
    return dict(names)


def _matches(model: Any, target: str) -> bool:
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    import torch

    for path, module in model.named_modules():
        if module is output:
            continue
        if (isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D") and (path == target or path.endswith("." + target)):
            return True
    return False


def discover_target_modules(model: Any, requested: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """The module names to put LoRA on: `requested` (checked), the known set for the architecture, or every linear layer name."""
    architecture = getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
    linear = linear_layers(model)
    if requested:
        missing = [t for t in requested if not _matches(model, t)]
        if missing:
            available = ", ".join(sorted(linear)) or "none"
            raise TrainingError(
                f"target modules {', '.join(missing)} match no linear layer of this {architecture} model (its linear layers: {available})"
            )
        return tuple(requested)
    known = KNOWN_TARGETS.get(architecture)
    if known and all(name in linear for name in known):
        return known
    if not linear:
        raise TrainingError(f"this {architecture} model has no linear layers besides its output to put LoRA on; give --target-modules")
    return tuple(sorted(linear))


def parse_layers(spec: str, n_layers: int | None) -> list[int] | None:
    """The layer numbers a `lora_layers` setting names (peft's layers_to_transform); None: all layers.

    "all"; "upper-third" (the last ceil(n/3) layers: 21-31 of Phi-2's 32, as the seed's SFT
    adapter); a range "22-31"; a list "0,5,9". With n_layers None only the form is checked.
    """
    text = spec.strip().lower()
    if text in ("", "all"):
        return None
    if text == "upper-third":
        return None if n_layers is None else list(range(n_layers - -(-n_layers // 3), n_layers))
    try:
        if "-" in text:
            first, last = (int(part) for part in text.split("-", 1))
            layers = list(range(first, last + 1))
        else:
            layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise TrainingError(f"lora_layers {spec!r}: give all, upper-third, a range (22-31) or a list of layer numbers (0,5,9)") from None
    if not layers or min(layers) < 0:
        raise TrainingError(f"lora_layers {spec!r} names no layer")
    if n_layers is not None and max(layers) >= n_layers:
        raise TrainingError(f"lora_layers {spec!r}: this model has layers 0-{n_layers - 1}")
    return sorted(set(layers))


def layer_count(model: Any) -> int:
    """How many transformer layers (blocks) a model (or its config) has."""
    config = getattr(model, "config", model)
    count = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    if not count:
        raise TrainingError(f"cannot tell how many layers this {type(model).__name__} has (no num_hidden_layers in its config); use lora_layers all")
    return int(count)
