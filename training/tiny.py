"""A tiny Phi-architecture model and a byte-level BPE tokenizer, built from a corpus on disk.

Run as: python -m training.tiny OUTPUT_DIR [TEXT_FILE ...]

Nothing is downloaded: the tokenizer is trained on the given texts with `tokenizers`,
the model is `PhiForCausalLM` with a small random configuration. Tests and CPU
benchmarks use it as a stand-in base model with the same module names as Phi-2
(q_proj, k_proj, v_proj, dense, fc1, fc2), so LoRA targets, checkpoints and lineage
are exercised exactly as on the real model.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]


@dataclass(frozen=True)
class TinyPhiConfig:
    vocab_size: int = 1024  # BPE vocabulary trained on the corpus
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 512
    seed: int = 0


def build_tiny_phi(output_dir: str | Path, texts: Iterable[str], config: TinyPhiConfig = TinyPhiConfig()) -> Path:
    """Train a tokenizer on `texts`, initialise a tiny Phi model, save both to `output_dir`."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PhiConfig, PhiForCausalLM, PreTrainedTokenizerFast

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=config.vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|pad|>",
    )
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(output)

    torch.manual_seed(config.seed)
    model = PhiForCausalLM(
        PhiConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            max_position_embeddings=config.max_position_embeddings,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        )
    )
    model.save_pretrained(output)
    return output


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__.splitlines()[2])
    files = [Path(p) for p in sys.argv[2:]]
    corpus = [f.read_text(encoding="utf-8") for f in files] or [
        Path(__file__).resolve().parents[1].joinpath("satsang", "samples", "talks-sample.txt").read_text(encoding="utf-8")
    ]
    print(build_tiny_phi(sys.argv[1], corpus))
