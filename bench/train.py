"""Benchmark a LoRA training step: tokens per second and model FLOPs utilisation (MFU) on this device.

Run as: python bench/train.py [--size tiny|small | --phi2-random | --model DIR] [--device cpu|cuda] [--dtype fp32|bf16]
        [--batch 4] [--seq-len 256] [--steps 10] [--warmup 3] [--rank 64] [--no-gradient-checkpointing] [--compile]
        [--peak-tflops X] [--threads 1] [--json OUT.json]

On a GPU, Phi-2's exact architecture (2.78B parameters), randomly initialised, in bf16:

    python bench/train.py --phi2-random --dtype bf16 --device cuda --batch 8 --seq-len 2048

The step is what training does per optimizer step, without the data loader: the seed's LoRA
(rank 64, alpha 128, dropout 0.05 on q_proj, k_proj, v_proj, dense, fc1, fc2), forward with
the causal LM loss, backward, AdamW step on the adapter. Inputs are random token ids, so every
position is a real token. Gradient checkpointing is on by default, as in training.

FLOPs per trained token (T = seq len, L = layers, d = hidden size):

    model FLOPs  = 6 N + 12 L d T      N = weights of every matmul (linear layers incl. the LM head and
                                       the LoRA A/B, not embeddings); the usual MFU convention (PaLM,
                                       appendix B): 2N forward + 4N backward, attention scores and
                                       values 4 L d T forward, x3 with the backward
    LoRA FLOPs   = 4 N_frozen + 6 N_lora + 12 L d T
                                       what LoRA really needs: frozen weights get no weight gradient,
                                       so their backward is 2 N_frozen, not 4

Neither counts the forward recomputed by gradient checkpointing (MFU convention). MFU = FLOPs
per token x tokens per second / peak FLOPs. Peak: --peak-tflops, else the datasheet's dense
figure for known GPUs (H100/H200: 989 TFLOP/s bf16, 494 tf32, 67 fp32; A100: 312 bf16, 156
tf32, 19.5 fp32), else a matmul microbenchmark on this device in the step's dtype (on CPU with
the same thread count as the step).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SAMPLE = Path(__file__).resolve().parents[1] / "satsang" / "samples" / "talks-sample.txt"
PHI_TARGETS = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]

# microsoft/phi-2's config.json, less its weights.
PHI2 = dict(
    vocab_size=51200,
    hidden_size=2560,
    intermediate_size=10240,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    partial_rotary_factor=0.4,
    max_position_embeddings=2048,
    rope_theta=10000.0,
    layer_norm_eps=1e-5,
    hidden_act="gelu_new",
    resid_pdrop=0.1,
    embd_pdrop=0.0,
    attention_dropout=0.0,
    qk_layernorm=False,
    tie_word_embeddings=False,
    bos_token_id=50256,
    eos_token_id=50256,
)
SMALL = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=4, num_attention_heads=8, max_position_embeddings=2048)

# Dense peak TFLOP/s from the datasheets (SXM parts), by dtype.
DATASHEET = {
    "H100": {"bfloat16": 989.0, "float16": 989.0, "tf32": 494.0, "float32": 67.0},
    "H200": {"bfloat16": 989.0, "float16": 989.0, "tf32": 494.0, "float32": 67.0},
    "A100": {"bfloat16": 312.0, "float16": 312.0, "tf32": 156.0, "float32": 19.5},
}


def build_model(args, dtype):
    import torch
    from transformers import AutoModelForCausalLM, PhiConfig, PhiForCausalLM

    if args.model:
        return AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype), args.model
    if args.phi2_random:
        torch.manual_seed(0)
        with torch.device(args.device):  # initialised where it will run, in its dtype: no 11 GB float32 detour
            model = AutoModelForCausalLM.from_config(PhiConfig(**PHI2), dtype=dtype)
        return model, "Phi-2 architecture (2.78B), random weights"
    from training.tiny import TinyPhiConfig, build_tiny_phi

    directory = build_tiny_phi(Path(tempfile.mkdtemp(prefix="bench-train-")), [SAMPLE.read_text(encoding="utf-8")], TinyPhiConfig())
    if args.size == "tiny":
        return AutoModelForCausalLM.from_pretrained(directory, dtype=dtype), "tiny Phi (training.tiny)"
    config = PhiConfig.from_pretrained(directory)
    for key, value in SMALL.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return PhiForCausalLM(config).to(dtype), f"small Phi (hidden {SMALL['hidden_size']}, {SMALL['num_hidden_layers']} layers)"


def matmul_parameters(model) -> tuple[int, int]:
    """(frozen, LoRA) weights of every linear layer, embeddings left out."""
    import torch

    frozen = lora = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if ".lora_A." in f"{name}." or ".lora_B." in f"{name}.":
                lora += module.weight.numel()
            else:
                frozen += module.weight.numel()
    return frozen, lora


def measured_peak_tflops(device: str, dtype, n: int = 2048, repeats: int = 10) -> float:
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def peak_tflops(args, dtype) -> tuple[float, str]:
    import torch

    if args.peak_tflops:
        return args.peak_tflops, "given"
    name = str(dtype).removeprefix("torch.")
    if args.device == "cuda":
        gpu = torch.cuda.get_device_name()
        if name == "float32" and torch.backends.cuda.matmul.allow_tf32:
            name = "tf32"
        for part, table in DATASHEET.items():
            if part in gpu:
                return table[name], f"{gpu} datasheet, dense {name}"
        return measured_peak_tflops("cuda", dtype), f"{gpu}: matmul microbenchmark ({name})"
    return measured_peak_tflops("cpu", dtype), f"CPU matmul microbenchmark ({name}, {torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--size", choices=["tiny", "small"], default="small", help="a Phi model built here (default: small)")
    which.add_argument("--phi2-random", action="store_true", help="Phi-2's exact architecture, randomly initialised")
    which.add_argument("--model", help="a local model directory")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if there is one)")
    parser.add_argument("--dtype", default=None, help="fp32 or bf16 (default: bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU (default: datasheet or measured)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(args.threads)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}[
        args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    ]
    model, description = build_model(args, dtype)
    model.to(args.device)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.05, target_modules=PHI_TARGETS, task_type="CAUSAL_LM"))
    gradient_checkpointing = not args.no_gradient_checkpointing
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    step_model = torch.compile(model) if args.compile else model
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)

    def step() -> float:
        ids = torch.randint(0, vocab, (args.batch, args.seq_len), generator=generator).to(args.device)
        with torch.autocast(args.device, dtype=dtype, enabled=dtype != torch.float32):
            loss = step_model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach().item()

    for _ in range(args.warmup):
        step()
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)

    tokens_per_step = args.batch * args.seq_len
    median = sorted(times)[len(times) // 2]
    tokens_per_second = tokens_per_step / median
    frozen, lora = matmul_parameters(model)
    config = model.config
    attention = 12 * config.num_hidden_layers * config.hidden_size * args.seq_len
    model_flops = 6 * (frozen + lora) + attention
    lora_flops = 4 * frozen + 6 * lora + attention
    peak, peak_basis = peak_tflops(args, dtype)
    figures = {
        "model": description,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "dtype": str(dtype).removeprefix("torch."),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "trainable_parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "matmul_weights_frozen": frozen,
        "matmul_weights_lora": lora,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "rank": args.rank,
        "gradient_checkpointing": gradient_checkpointing,
        "compile": args.compile,
        "step_seconds_median": median,
        "step_seconds_min": min(times),
        "tokens_per_second": tokens_per_second,
        "model_flops_per_token": model_flops,
        "lora_flops_per_token": lora_flops,
        "peak_tflops": peak,
        "peak_basis": peak_basis,
        "mfu": model_flops * tokens_per_second / (peak * 1e12),
        "mfu_lora_flops": lora_flops * tokens_per_second / (peak * 1e12),
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
    }
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        shown = f"{value:,.4g}" if isinstance(value, float) else (f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value)
        print(f"{key:<{width}}  {shown}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
