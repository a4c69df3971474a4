"""A checkpoint as a plain transformers model: the adapter (and any parent merged under it) folded into the base weights.

    export_merged_model("runs/sft", "models/sft-merged")   # AutoModelForCausalLM.from_pretrained("models/sft-merged")

The output directory holds model.safetensors (and config.json, generation_config.json), the
checkpoint's tokenizer with its chat template, and satsang_lineage.json: the checkpoint's
lineage with an `export` record (what was merged, the merged weights' sha256). Nothing about
it needs peft or satsang to load. It is written to a temporary directory beside the target and
renamed into place, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from curation.files import sha256_file, utc_now
from training.checkpoint import ADAPTER_SAFETENSORS, load_checkpoint
from training.lineage import TrainingError, weights_digest, write_lineage


def export_merged_model(checkpoint_dir: str | Path, output_dir: str | Path, base_model: str | Path | None = None, dtype: Any = None) -> Path:
    """Write the merged model of `checkpoint_dir` to `output_dir` (which must not exist); returns it."""
    checkpoint = Path(checkpoint_dir)
    output = Path(output_dir)
    if output.exists():
        raise TrainingError(f"{output}: already exists; export-model writes a new directory")
    model, tokenizer, lineage = load_checkpoint(checkpoint, base_model=base_model, merge=True, dtype=dtype)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        adapter = checkpoint / ADAPTER_SAFETENSORS
        digest = weights_digest(staging) or {}
        write_lineage(
            staging,
            {
                **lineage,
                "export": {
                    "kind": "merged model",
                    "from": str(checkpoint.resolve()),
                    "adapter_sha256": sha256_file(adapter) if adapter.is_file() else None,
                    "weights_sha256": digest.get("sha256"),
                    "weight_files": digest.get("files"),
                    "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                    "exported_at": utc_now(),
                },
            },
        )
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output
