"""Generation speed with the LoRA adapter merged into the base weights and without: tokens/s and their ratio.

Run as: python bench/generate.py [--repeats N] [--new-tokens N] [--phi2-random --device cuda] [--threads N]

The model is the tiny Phi of training/tiny.py (CPU, default) or, with --phi2-random,
a randomly initialised model of Phi-2's shape (2.7B parameters, 32 layers, hidden
2560; bfloat16; meant for a GPU). A LoRA adapter of rank 16 on q_proj, k_proj,
v_proj, dense, fc1 and fc2 (the training targets) is put on it with non-zero
weights, so the merge really changes the weights. "unmerged" is the PeftModel, as
`LocalGenerator(dir)` runs it; "merged" is `merge_and_unload()` of a copy, as
`LocalGenerator(dir, merge=True)` runs it. Both go through LocalGenerator.complete,
the path `satsang generate` and the server use (prompt template, model lock, stop
criteria), greedy, one prompt at a time.

Runs alternate unmerged / merged after one warm-up each; tokens/s is generated tokens
over wall time per run (prefill included; the prompt is short), and the medians are
compared. Both produce the same tokens (checked), so the ratio is the adapter's cost.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "I feel lost in my practice. What should I do?"
TARGETS = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]


def build_models(phi2_random: bool, layers: int | None, device: str, workdir: Path):
    """(peft model, merged model, tokenizer) on `device`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, PhiConfig, PhiForCausalLM

    from training.tiny import build_tiny_phi

    text = (ROOT / "satsang" / "samples" / "talks-sample.txt").read_text(encoding="utf-8")
    tiny = build_tiny_phi(workdir / "tiny", [text])
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    torch.manual_seed(0)
    if phi2_random:
        # Phi-2's configuration (microsoft/phi-2 config.json), random weights; the tokenizer is the tiny one,
        # whose ids are a subset (ids past it decode to nothing, which changes no timing).
        config = PhiConfig(
            vocab_size=51200,
            hidden_size=2560,
            intermediate_size=10240,
            num_hidden_layers=layers or 32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=2048,
            partial_rotary_factor=0.4,
            rope_theta=10000.0,
            layer_norm_eps=1e-5,
            hidden_act="gelu_new",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        )
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        with torch.device(device):
            base = PhiForCausalLM(config).to(dtype)
    else:
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(tiny).to(device)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, init_lora_weights=False)
    peft_model = get_peft_model(base, lora).eval()
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()
    return peft_model, merged, tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens per generation (default: 128 tiny, 256 phi-2)")
    parser.add_argument("--phi2-random", action="store_true", help="a random model of Phi-2's shape instead of the tiny one")
    parser.add_argument("--layers", type=int, default=None, help="--phi2-random with fewer layers (a quick check)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()

    import torch

    from inference.generate import GenerationConfig, LocalGenerator

    torch.set_num_threads(args.threads)
    new_tokens = args.new_tokens or (256 if args.phi2_random else 128)
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        started = time.perf_counter()
        peft_model, merged_model, tokenizer = build_models(args.phi2_random, args.layers, args.device, Path(tmp))
        print(f"models built in {time.perf_counter() - started:.1f} s", flush=True)
    name = "phi-2-shaped random" + (f" ({args.layers} layers)" if args.layers else "") if args.phi2_random else "tiny phi"
    n_params = sum(p.numel() for p in merged_model.parameters())
    n_lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    generators = {
        "unmerged": LocalGenerator.from_model(peft_model, tokenizer, "unmerged"),
        "merged": LocalGenerator.from_model(merged_model, tokenizer, "merged"),
    }
    # No end-of-sequence: every run generates exactly new_tokens, whatever the random weights prefer.
    for generator in generators.values():
        generator.model.generation_config.eos_token_id = None
    config = GenerationConfig(temperature=0.0, max_new_tokens=new_tokens)

    outputs = {}
    for label, generator in generators.items():  # warm-up (and the same-tokens check)
        outputs[label] = generator.complete(PROMPT, config)
    same = outputs["unmerged"].text == outputs["merged"].text

    rates: dict[str, list[float]] = {label: [] for label in generators}
    for _ in range(args.repeats):
        for label, generator in generators.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            completion = generator.complete(PROMPT, config)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            rates[label].append(completion.completion_tokens / (time.perf_counter() - t0))

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"model: {name}, {n_params / 1e6:,.1f}M parameters, LoRA r=16 on {', '.join(TARGETS)} ({n_lora / 1e6:,.2f}M)")
    print(f"device: {device}; dtype {next(merged_model.parameters()).dtype}; greedy, {new_tokens} new tokens, {args.repeats} runs each")
    print(f"same tokens merged and unmerged: {same}")
    for label, values in rates.items():
        print(f"  {label:9s} median {statistics.median(values):8.1f} tokens/s   (min {min(values):.1f}, max {max(values):.1f})")
    ratio = statistics.median(rates["merged"]) / statistics.median(rates["unmerged"])
    print(f"merged / unmerged: {ratio:.2f}x")


if __name__ == "__main__":
    main()
