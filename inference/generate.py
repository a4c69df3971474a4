"""Generation: one `Generator` protocol, served by a local checkpoint or any OpenAI-compatible endpoint.

    from inference.generate import GenerationConfig, LocalGenerator
    generator = LocalGenerator("checkpoints/sft-1", merge=True)
    generator.generate("I feel lost in my practice.", GenerationConfig(temperature=0.7, seed=0))

A prompt is either a string (one user message) or OpenAI-style chat messages
([{"role": "system"|"user"|"assistant", "content": str}, ...]).

Prompt format. A checkpoint whose tokenizer has a chat template (SFT saves the
template it trained with beside the adapter) is prompted with that template.
Otherwise the plain format, `PLAIN_CHAT_TEMPLATE`: Phi-2's own question-answer form
("Instruct: ...\\nOutput:"), rendering exactly as training/sft.py's DEFAULT_CHAT_TEMPLATE
(a test holds them together), so a prompt here reads like the training text there:

    {system}\\n\\n                       (only if there is a system message)
    Instruct: {user}\\n
    Output: {assistant}<eos>            (no newline after <eos>, as the trainer renders it)
    Instruct: {user}\\n
    Output:                             <- the model continues here

Generation stops at the end-of-sequence token, or where the model starts the next
"\\nInstruct:" itself. The template marks the assistant's words with {% generation %},
so a trainer can set it on its tokenizer (`tokenizer.chat_template = PLAIN_CHAT_TEMPLATE`)
and train on the assistant's words only.

A `LocalGenerator` holds one lock around its model: concurrent callers (the
server's request threads) take turns on it instead of interleaving, and a seeded
request is reproducible however many others run beside it.

4-/8-bit loading needs bitsandbytes and a CUDA GPU; asked for without either, the
generator raises `GenerationError` naming what is missing, before loading anything.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

Message = Mapping[str, str]
Prompt = str | Sequence[Message]

ROLES = ("system", "user", "assistant")

PLAIN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ 'Instruct: ' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'Output: ' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Output:' }}{%- endif -%}"
)
# Where a model prompted in the plain format begins the next turn on its own.
PLAIN_STOPS: tuple[str, ...] = ("\nInstruct:",)

ADAPTER_CONFIG = "adapter_config.json"
GENERATOR_API_KEY_ENV = "SATSANG_GENERATOR_API_KEY"
FALLBACK_API_KEY_ENV = "OPENAI_API_KEY"
NO_KEY = "EMPTY"


class InferenceError(Exception):
    """The root of the inference package's errors: generation, serving or evaluation cannot go on as asked."""


class GenerationError(InferenceError, RuntimeError):
    """The generator cannot load or answer: a missing library or GPU, a bad checkpoint, an endpoint error."""


class EndpointError(GenerationError):
    """An OpenAI-compatible endpoint failed (HTTP error, timeout, connection)."""


class PromptTooLong(GenerationError):
    """The prompt and max_new_tokens together exceed the model's context."""


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling for one generation.

    temperature: 0 means greedy decoding (no sampling).
    top_p: nucleus sampling mass, in (0, 1].
    max_new_tokens: the most tokens generated.
    seed: seeds the sampler, so the same prompt and config give the same text; None: unseeded.
    stop: extra strings that end the answer (not included in it).
    """

    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 200
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 5.0:
            raise ValueError(f"temperature must be in [0, 5], not {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {self.max_new_tokens!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop strings must be non-empty strings")
        object.__setattr__(self, "stop", tuple(self.stop))

    def with_temperature(self, temperature: float) -> GenerationConfig:
        return replace(self, temperature=temperature)


@dataclass(frozen=True)
class Completion:
    """One generated answer with its token counts; finish_reason is "stop" or "length" (OpenAI's words)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@runtime_checkable
class Generator(Protocol):
    """Anything that answers a prompt. `name` labels it in reports and in the server's model list."""

    name: str

    def generate(self, prompt: Prompt, config: GenerationConfig) -> str: ...


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    """A prompt as chat messages; a string is one user message. Raises ValueError on a malformed one."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = []
    for index, message in enumerate(prompt):
        if not isinstance(message, Mapping):
            raise ValueError(f"message {index} is not an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"message {index}: role must be one of {', '.join(ROLES)}, not {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"message {index}: content must be a string")
        messages.append({"role": role, "content": content})
    if not messages:
        raise ValueError("no messages")
    return messages


def last_user_message(prompt: Prompt) -> str:
    """The question being answered: the last user message."""
    for message in reversed(as_messages(prompt)):
        if message["role"] == "user":
            return message["content"]
    return ""


def format_prompt(messages: Sequence[Message], tokenizer: Any) -> tuple[str, tuple[str, ...]]:
    """The prompt text and the stop strings that go with its format (see the module docstring)."""
    messages = as_messages(messages)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), ()
    text = tokenizer.apply_chat_template(messages, chat_template=PLAIN_CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True)
    return text, PLAIN_STOPS


def quantization_problem(load_in_4bit: bool, load_in_8bit: bool) -> str | None:
    """What keeps 4-/8-bit loading from working here, in words; None when nothing does."""
    if not (load_in_4bit or load_in_8bit):
        return None
    if load_in_4bit and load_in_8bit:
        return "choose 4-bit or 8-bit loading, not both"
    bits = "4-bit" if load_in_4bit else "8-bit"
    missing = []
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("bitsandbytes is not installed (pip install bitsandbytes)")
    import torch

    if not torch.cuda.is_available():
        missing.append("no CUDA GPU is visible to torch")
    if missing:
        return f"{bits} loading needs bitsandbytes and a CUDA GPU: " + "; ".join(missing)
    return None


def load_checkpoint(
    checkpoint_dir: str | Path,
    *,
    base_model: str | None = None,
    merge: bool = False,
    dtype: Any = None,
    device: str = "cpu",
    quantization_config: Any = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, lineage) from a checkpoint directory.

    A LoRA checkpoint (adapter_config.json) loads through training.checkpoint.load_checkpoint,
    which finds the base model from the lineage, repairs torch.compile `_orig_mod.` keys and
    adapter-name keys, and refuses an adapter that does not fit its base. With a
    `quantization_config` (4-/8-bit) the base is loaded quantized on the GPU and the adapter,
    its keys repaired the same way, goes on top unmerged. A directory without an adapter
    is loaded as a whole model (a base model, a merged export).
    """
    from training.lineage import TrainingError

    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        raise GenerationError(f"no checkpoint directory at {directory}")
    try:
        if not (directory / ADAPTER_CONFIG).is_file():
            model, tokenizer, lineage = _load_whole_model(directory, dtype, device, quantization_config)
        elif quantization_config is None:
            from training.checkpoint import load_checkpoint as load_lora_checkpoint

            model, tokenizer, lineage = load_lora_checkpoint(directory, base_model=base_model, merge=merge, dtype=dtype, device=device)
        else:
            model, tokenizer, lineage = _load_quantized_lora(directory, base_model, quantization_config)
    except GenerationError:
        raise
    except TrainingError as error:
        raise GenerationError(str(error)) from None
    except (OSError, ValueError, KeyError) as error:
        raise GenerationError(f"cannot load the checkpoint {directory}: {type(error).__name__}: {error}") from None
    return model.eval(), tokenizer, dict(lineage or {})


def _load_whole_model(directory: Path, dtype: Any, device: str, quantization_config: Any) -> tuple[Any, Any, dict[str, Any]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.lineage import read_lineage

    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype, device)}
    if quantization_config is not None:
        kwargs.update(quantization_config=quantization_config, device_map={"": 0})
    model = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    if quantization_config is None:
        model = model.to(device)
    return model, AutoTokenizer.from_pretrained(directory), read_lineage(directory) or {}


def _load_quantized_lora(directory: Path, base_model: str | None, quantization_config: Any) -> tuple[Any, Any, dict[str, Any]]:
    """A quantized base with the adapter on top; keys put in PEFT's file form as training.checkpoint does."""
    import shutil
    import tempfile

    from peft import PeftModel
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from training.checkpoint import (
        ADAPTER_SAFETENSORS,
        canonical_adapter_state,
        check_before_loading,
        load_tokenizer,
        read_adapter_state,
        resolve_base_model,
    )
    from training.lineage import read_lineage

    lineage = read_lineage(directory) or {}
    if (lineage.get("from_checkpoint") or {}).get("merged"):  # its base is the parent merged in: no quantized base has that
        raise InferenceError(f"{directory} was trained on its parent merged into the base: `satsang export-model {directory} OUT`, then load OUT in 4 or 8 bits")
    base = resolve_base_model(directory, lineage, base_model)
    check_before_loading(directory, lineage, base, explicit_base=base_model is not None)
    model = AutoModelForCausalLM.from_pretrained(base, quantization_config=quantization_config, device_map={"": 0})
    tokenizer = load_tokenizer(directory, base)
    canonical, changes = canonical_adapter_state(read_adapter_state(directory))
    if not changes:
        return PeftModel.from_pretrained(model, str(directory)), tokenizer, lineage
    with tempfile.TemporaryDirectory(prefix="satsang-adapter-") as tmp:
        save_file({k: v.contiguous() for k, v in canonical.items()}, str(Path(tmp) / ADAPTER_SAFETENSORS), metadata={"format": "pt"})
        shutil.copy2(directory / ADAPTER_CONFIG, Path(tmp) / ADAPTER_CONFIG)
        return PeftModel.from_pretrained(model, tmp), tokenizer, lineage


def _torch_dtype(dtype: Any, device: str) -> Any:
    import torch

    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
        except KeyError:
            raise GenerationError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16") from None
    return dtype


class LocalGenerator:
    """A checkpoint loaded in this process: base + LoRA adapter (optionally merged), or a whole model.

    merge: fold the adapter into the base weights (merge_and_unload): faster generation, same outputs
    up to rounding; not with 4-/8-bit loading. device: "cpu", "cuda", "cuda:N" or "auto".
    """

    def __init__(
        self,
        checkpoint_dir: str | Path,
        merge: bool = False,
        load_in_4bit: bool = False,
        load_in_8bit: bool = False,
        *,
        device: str = "cpu",
        dtype: Any = None,
        base_model: str | None = None,
        name: str | None = None,
    ):
        problem = quantization_problem(load_in_4bit, load_in_8bit)
        if problem is not None:
            raise GenerationError(problem)
        quantized = load_in_4bit or load_in_8bit
        if quantized and merge:
            raise GenerationError("merging the adapter into a 4-/8-bit base is not supported; drop --merge or the quantization")
        device = _resolve_device(device)
        quantization_config = None
        if quantized:
            import torch
            from transformers import BitsAndBytesConfig

            quantization_config = (
                BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
                if load_in_4bit
                else BitsAndBytesConfig(load_in_8bit=True)
            )
        model, tokenizer, lineage = load_checkpoint(
            checkpoint_dir, base_model=base_model, merge=merge, dtype=dtype, device=device, quantization_config=quantization_config
        )
        self._setup(model, tokenizer, name or Path(checkpoint_dir).resolve().name, lineage)
        self.checkpoint_dir = str(checkpoint_dir)
        self.merged = merge
        self.quantization = "4bit" if load_in_4bit else "8bit" if load_in_8bit else None

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, name: str = "model", lineage: Mapping[str, Any] | None = None) -> LocalGenerator:
        """Wrap a model already in memory (a bench, a notebook)."""
        generator = cls.__new__(cls)
        generator._setup(model.eval(), tokenizer, name, dict(lineage or {}))
        generator.checkpoint_dir = None
        generator.merged = False
        generator.quantization = None
        return generator

    def _setup(self, model: Any, tokenizer: Any, name: str, lineage: dict[str, Any]) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.lineage = lineage
        self.device = next(model.parameters()).device
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self._lock = threading.Lock()  # the model: one generation at a time
        # Encoding may reset a fast tokenizer's truncation/padding state, which two threads must not do at once.
        self._tokenizer_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalGenerator({self.name!r}, merged={self.merged}, device={self.device})"

    @property
    def agent(self) -> dict[str, Any]:
        return {"kind": "local", "model": self.name, "checkpoint": self.checkpoint_dir, "merged": self.merged, "quantization": self.quantization}

    def generate(self, prompt: Prompt, config: GenerationConfig = GenerationConfig()) -> str:
        return self.complete(prompt, config).text

    def complete(self, prompt: Prompt, config: GenerationConfig = GenerationConfig()) -> Completion:
        input_ids, stops = self._encode(prompt, config)
        with self._lock:
            output = self._run(input_ids, config, stops, streamer=None, cancel=None)
        new_ids = output[0, input_ids.shape[1] :]
        raw = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        text, stopped = _cut_at_stop(raw, stops)
        eos = self._eos_ids()
        ended = stopped or (len(new_ids) > 0 and int(new_ids[-1]) in eos)
        return Completion(text.strip(), int(input_ids.shape[1]), int(len(new_ids)), "stop" if ended or len(new_ids) < config.max_new_tokens else "length")

    def stream(self, prompt: Prompt, config: GenerationConfig = GenerationConfig()) -> Iterator[str]:
        """The answer in pieces as they are generated; the pieces join to exactly `generate`'s text.

        Closing the iterator early (a client that went away) stops the generation at the next token.
        """
        from transformers import TextIteratorStreamer

        input_ids, stops = self._encode(prompt, config)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with self._lock:
                    if not cancel.is_set():
                        self._run(input_ids, config, stops, streamer=streamer, cancel=cancel)
            except BaseException as error:  # handed to the reader below
                failure.append(error)
            finally:
                streamer.end()

        thread = threading.Thread(target=work, name=f"generate-{self.name}", daemon=True)
        thread.start()
        scanner = _StopScanner(stops)
        try:
            for piece in streamer:
                text = scanner.feed(piece)
                if text:
                    yield text
                if scanner.stopped:
                    cancel.set()
                    break
            if failure:
                raise failure[0]
            tail = scanner.flush()
            if tail:
                yield tail
        finally:
            cancel.set()
            # Drain so the worker never blocks on a full queue; then it ends at its next token.
            for _ in streamer:
                pass
            thread.join()

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def check_prompt(self, prompt: Prompt, config: GenerationConfig) -> None:
        """Raise PromptTooLong (or ValueError for malformed messages) without generating: a server checks before it streams."""
        self._encode(prompt, config)

    def count_prompt_tokens(self, prompt: Prompt) -> int:
        """Tokens of the prompt as the model sees it (formatted)."""
        text, _ = format_prompt(as_messages(prompt), self.tokenizer)
        return self.count_tokens(text)

    # ---- internals ----------------------------------------------------------------------

    def _encode(self, prompt: Prompt, config: GenerationConfig) -> tuple[torch.Tensor, tuple[str, ...]]:
        text, stops = format_prompt(as_messages(prompt), self.tokenizer)
        with self._tokenizer_lock:
            input_ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        n = int(input_ids.shape[1])
        if self.max_positions is not None and n + config.max_new_tokens > self.max_positions:
            raise PromptTooLong(
                f"the prompt is {n} tokens; with max_new_tokens {config.max_new_tokens} that exceeds "
                f"the model's context of {self.max_positions} tokens"
            )
        return input_ids.to(self.device), stops + config.stop

    def _eos_ids(self) -> set[int]:
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        return {int(i) for i in ids if i is not None}

    def _run(self, input_ids: torch.Tensor, config: GenerationConfig, stops: tuple[str, ...], streamer: Any, cancel: threading.Event | None) -> torch.Tensor:
        """model.generate under the caller's lock; the seed is set here so that it is this request's."""
        import torch
        from transformers import StoppingCriteriaList

        if config.seed is not None:
            torch.manual_seed(config.seed)
            if torch.cuda.is_available():
                torch.cuda.manual_seed_all(config.seed)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": config.temperature, "top_p": config.top_p}
            if config.temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        criteria = StoppingCriteriaList([_StopCriterion(self.tokenizer, int(input_ids.shape[1]), stops, cancel)])
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            return self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=config.max_new_tokens,
                pad_token_id=pad,
                stopping_criteria=criteria,
                streamer=streamer,
                **sampling,
            )


def _resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise GenerationError(f"device {device!r} asked for, but no CUDA GPU is visible to torch")
    return device


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    positions = [text.find(stop) for stop in stops if stop in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


class _StopCriterion:
    """Ends generation when the new text contains a stop string, or when the reader cancelled."""

    def __init__(self, tokenizer: Any, prompt_length: int, stops: tuple[str, ...], cancel: threading.Event | None):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.stops = stops
        self.cancel = cancel
        self.window = max((len(s) for s in stops), default=0) + 16  # tokens: at least one char each

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        done = self.cancel is not None and self.cancel.is_set()
        if not done and self.stops:
            tail = input_ids[0, max(self.prompt_length, input_ids.shape[1] - self.window) :]
            text = self.tokenizer.decode(tail, skip_special_tokens=True)
            done = any(stop in text for stop in self.stops)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class _StopScanner:
    """Turns streamed pieces into the text `generate` returns: no leading or trailing whitespace,
    nothing from a stop string on. Holds back a tail that may yet become a stop string or trailing space."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(stops)
        self.pending = ""
        self.started = False
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.pending += piece
        if not self.started:
            self.pending = self.pending.lstrip()
            self.started = bool(self.pending)
        cut, found = _cut_at_stop(self.pending, self.stops)
        if found:
            self.stopped = True
            self.pending = ""
            return cut.rstrip()
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        ready = self.pending[: len(self.pending) - hold]
        # Trailing whitespace waits for the next visible character (or is dropped at the end).
        emitted = ready.rstrip()
        self.pending = self.pending[len(emitted) :]
        return emitted

    def flush(self) -> str:
        if self.stopped:
            return ""
        tail, self.pending = self.pending.rstrip(), ""
        return tail


class OpenAIGenerator:
    """Any OpenAI-compatible chat endpoint (vLLM, `satsang serve`, a hosted API) as a Generator.

    model: None takes the endpoint's first listed model. The key is read from `api_key_env`
    (then OPENAI_API_KEY) when the client is made and never stored on this object.
    extra_body: sent with every request, e.g. {"satsang": {"critic_loop": False}} for `satsang serve`.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key_env: str = GENERATOR_API_KEY_ENV,
        *,
        timeout_s: float = 120.0,
        max_retries: int = 2,
        extra_body: Mapping[str, Any] | None = None,
        name: str | None = None,
    ):
        import openai

        from curation.redaction import endpoint_name

        self.base_url = base_url
        self._where = endpoint_name(base_url)
        api_key = os.environ.get(api_key_env) or os.environ.get(FALLBACK_API_KEY_ENV) or NO_KEY
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)
        self.extra_body = dict(extra_body or {})
        if model is None:
            try:
                models = [m.id for m in self._client.models.list()]
            except openai.APIError as error:
                raise EndpointError(f"no model given and {self._where} did not list its models ({type(error).__name__})") from None
            if not models:
                raise GenerationError(f"no model given and {self._where} lists none")
            model = models[0]
        self.model = model
        self.name = name or model

    def __repr__(self) -> str:
        return f"OpenAIGenerator({self._where!r}, model={self.model!r})"

    @property
    def agent(self) -> dict[str, Any]:
        return {"kind": "openai", "model": self.model, "base_url": self._where}

    def close(self) -> None:
        self._client.close()

    def generate(self, prompt: Prompt, config: GenerationConfig = GenerationConfig()) -> str:
        return self.complete(prompt, config).text

    def complete(self, prompt: Prompt, config: GenerationConfig = GenerationConfig()) -> Completion:
        import openai

        try:
            response = self._client.chat.completions.create(**self._request(prompt, config))
        except openai.APIError as error:
            raise EndpointError(f"{self._where}: {type(error).__name__}: {_api_message(error)}") from None
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            (choice.message.content or "").strip(),
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            choice.finish_reason or "stop",
        )

    def stream(self, prompt: Prompt, config: GenerationConfig = GenerationConfig()) -> Iterator[str]:
        import openai

        try:
            chunks = self._client.chat.completions.create(**self._request(prompt, config), stream=True)
            with chunks:
                for chunk in chunks:
                    if chunk.choices and chunk.choices[0].delta.content:
                        yield chunk.choices[0].delta.content
        except openai.APIError as error:
            raise EndpointError(f"{self._where}: {type(error).__name__}: {_api_message(error)}") from None

    def _request(self, prompt: Prompt, config: GenerationConfig) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": as_messages(prompt),
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_tokens": config.max_new_tokens,
        }
        if config.seed is not None:
            request["seed"] = config.seed
        if config.stop:
            request["stop"] = list(config.stop)
        if self.extra_body:
            request["extra_body"] = self.extra_body
        return request


def _api_message(error: Exception) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return inner["message"]
    return str(getattr(error, "message", error))


__all__ = [
    "PLAIN_CHAT_TEMPLATE",
    "PLAIN_STOPS",
    "Completion",
    "EndpointError",
    "GenerationConfig",
    "GenerationError",
    "Generator",
    "LocalGenerator",
    "OpenAIGenerator",
    "PromptTooLong",
    "as_messages",
    "format_prompt",
    "last_user_message",
    "load_checkpoint",
    "quantization_problem",
]
