"""The OpenAI chat-completions request as the server accepts it: its limits, its errors, its validation.

`parse_chat_request` turns a decoded JSON body into a `ChatRequest` or raises an `ApiError`
(an HTTP status and an OpenAI-shaped body) naming the field; nothing is generated before a
request has passed. `inference.server` serves what passes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inference.generate import GenerationConfig
from inference.loop import LoopSettings

ROLES_ACCEPTED = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOP_STRINGS = 4
MAX_ATTEMPTS_LIMIT = 10


@dataclass(frozen=True)
class ServerConfig:
    """What the server accepts and its defaults.

    model_name: the id in /v1/models (default: the generator's name).
    max_body_bytes: larger request bodies get 413.
    max_messages, max_prompt_chars: larger prompts get 400.
    max_tokens_limit: max_tokens above this gets 400; default_max_tokens when a request gives none.
    max_pending: requests admitted at once (running or waiting for the model); more get 503.
    critic_loop: the loop's default when a request does not say.
    """

    model_name: str | None = None
    max_body_bytes: int = 256 * 1024
    max_messages: int = 64
    max_prompt_chars: int = 32_000
    max_tokens_limit: int = 1024
    default_max_tokens: int = 200
    default_temperature: float = 0.7
    default_top_p: float = 0.95
    max_pending: int = 64
    critic_loop: bool = False
    threshold: float = 7.0
    max_attempts: int = 3
    temperatures: tuple[float, ...] = (0.7, 0.9, 1.1)
    temperature_step: float = 0.2


class ApiError(Exception):
    """An error answered with an HTTP status and an OpenAI-shaped body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    @property
    def type(self) -> str:
        if self.status in (400, 404, 405, 413):
            return "invalid_request_error"
        if self.status == 503:
            return "overloaded_error"
        return "server_error"

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat-completion request."""

    messages: tuple[dict[str, str], ...]
    config: GenerationConfig
    stream: bool
    include_usage: bool
    loop: LoopSettings | None  # None: no critic loop
    trace: bool = False  # add the answer's trace to the satsang object


# ---- validation --------------------------------------------------------------------------


def parse_chat_request(payload: Any, config: ServerConfig, model_name: str) -> ChatRequest:
    """Validate a decoded JSON body against the OpenAI chat schema and the server's limits; raises ApiError."""
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = payload.get("model")
    if model is None:
        raise ApiError(400, "model is required", "model")
    if not isinstance(model, str):
        raise ApiError(400, "model must be a string", "model")
    if model != model_name:
        raise ApiError(404, f"the model {model!r} does not exist; this server serves {model_name!r}", "model", "model_not_found")

    messages = _messages(payload.get("messages"), config)
    temperature = _number(payload, "temperature", 0.0, 2.0, config.default_temperature)
    top_p = _number(payload, "top_p", 0.0, 1.0, config.default_top_p, low_open=True)
    max_tokens = _max_tokens(payload, config)
    n = payload.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise ApiError(400, "n must be 1: this server returns one choice", "n")
    seed = payload.get("seed")
    if seed is not None and not (_is_int(seed) and SEED_RANGE[0] <= seed <= SEED_RANGE[1]):
        raise ApiError(400, "seed must be an integer that fits in 64 bits", "seed")
    stream = payload.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be a boolean", "stream")
    stream_options = payload.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise ApiError(400, "stream_options must be an object", "stream_options")
    include_usage = bool((stream_options or {}).get("include_usage", False))
    stop = _stop(payload.get("stop"))
    loop = _loop_settings(payload.get("satsang"), config, payload.get("temperature"))
    generation = GenerationConfig(temperature=temperature, top_p=top_p, max_new_tokens=max_tokens, seed=seed, stop=stop)
    trace = (payload.get("satsang") or {}).get("trace", False)
    if not isinstance(trace, bool):
        raise ApiError(400, "satsang.trace must be a boolean", "satsang.trace")
    return ChatRequest(tuple(messages), generation, stream, include_usage, loop, trace)


# A request nests a few levels (messages, content parts); deeper is an attack on the decoder.
MAX_JSON_DEPTH = 32
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.manual_seed (and OpenAI's int64 seed) take


def decode_json_body(body: bytes) -> Any:
    """The request body as JSON, or ApiError 400: not UTF-8, not JSON, nested too deep, or a lone surrogate."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8") from None
    except RecursionError:
        raise ApiError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}") from None
    # Iteratively, so that checking a deep document cannot itself overflow the stack.
    stack: list[tuple[Any, int, str]] = [(payload, 0, "")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ApiError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # "\ud800" decodes to a lone surrogate, which no text can hold
                raise ApiError(400, f"{where or 'the body'} holds a lone surrogate (an unpaired \\uD800-\\uDFFF escape)", where or None) from None
        elif isinstance(value, dict):
            stack.extend((item, depth + 1, f"{where}.{key}" if where else str(key)) for key, item in value.items())
            stack.extend((key, depth + 1, where) for key in value)
        elif isinstance(value, list):
            stack.extend((item, depth + 1, f"{where}[{index}]") for index, item in enumerate(value))
    return payload


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(payload: Mapping[str, Any], name: str, low: float, high: float, default: float, low_open: bool = False, prefix: str = "") -> float:
    value = payload.get(name)
    label = prefix + name
    if value is None:
        return default
    if not _is_number(value):
        raise ApiError(400, f"{label} must be a number", label)
    if value > high or value < low or (low_open and value == low):
        interval = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
        raise ApiError(400, f"{label} must be in {interval}, not {value!r}", label)
    return float(value)


def _max_tokens(payload: Mapping[str, Any], config: ServerConfig) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if value is None:
            continue
        if not _is_int(value):
            raise ApiError(400, f"{name} must be an integer", name)
        if value < 1:
            raise ApiError(400, f"{name} must be at least 1", name)
        if value > config.max_tokens_limit:
            raise ApiError(400, f"{name} {value} is over this server's limit of {config.max_tokens_limit}", name)
        return value
    return config.default_max_tokens


def _messages(value: Any, config: ServerConfig) -> list[dict[str, str]]:
    if value is None:
        raise ApiError(400, "messages is required", "messages")
    if not isinstance(value, list):
        raise ApiError(400, "messages must be an array", "messages")
    if not value:
        raise ApiError(400, "messages must not be empty", "messages")
    if len(value) > config.max_messages:
        raise ApiError(400, f"{len(value)} messages is over this server's limit of {config.max_messages}", "messages")
    messages = []
    total = 0
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"{where} must be an object", where)
        role = message.get("role")
        if role not in ROLES_ACCEPTED:
            raise ApiError(400, f"{where}.role must be one of system, developer, user, assistant; not {role!r}", f"{where}.role")
        content = _content(message.get("content"), f"{where}.content")
        total += len(content)
        messages.append({"role": ROLES_ACCEPTED[role], "content": content})
    if total > config.max_prompt_chars:
        raise ApiError(400, f"the messages hold {total} characters; this server takes at most {config.max_prompt_chars}", "messages", "context_length_exceeded")
    if messages[-1]["role"] != "user":
        raise ApiError(400, "the last message must be the user's: it is the question to answer", f"messages[{len(messages) - 1}].role")
    return messages


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: only text is understood here
        texts = []
        for index, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"{where}[{index}] must be a text part {{\"type\": \"text\", \"text\": ...}}", f"{where}[{index}]")
            texts.append(part["text"])
        return "\n".join(texts)
    raise ApiError(400, f"{where} must be a string or an array of text parts", where)


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > MAX_STOP_STRINGS or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, f"stop must be a non-empty string or an array of at most {MAX_STOP_STRINGS} of them", "stop")
    return tuple(stops)


def _loop_settings(value: Any, config: ServerConfig, request_temperature: Any) -> LoopSettings | None:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ApiError(400, "satsang must be an object", "satsang")
    critic_loop = value.get("critic_loop", config.critic_loop)
    if not isinstance(critic_loop, bool):
        raise ApiError(400, "satsang.critic_loop must be a boolean", "satsang.critic_loop")
    if "threshold" in value and value["threshold"] is None:
        raise ApiError(400, "satsang.threshold must be a number", "satsang.threshold")
    threshold = _number(value, "threshold", 0.0, 10.0, config.threshold, prefix="satsang.")
    max_attempts = value.get("max_attempts", config.max_attempts)
    if not _is_int(max_attempts) or not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise ApiError(400, f"satsang.max_attempts must be an integer in 1-{MAX_ATTEMPTS_LIMIT}", "satsang.max_attempts")
    temperatures = value.get("temperatures")
    if temperatures is not None:
        if not isinstance(temperatures, list) or not temperatures or not all(_is_number(t) and 0 <= t <= 2 for t in temperatures):
            raise ApiError(400, "satsang.temperatures must be a non-empty array of numbers in [0, 2]", "satsang.temperatures")
        schedule = tuple(float(t) for t in temperatures)
    elif _is_number(request_temperature):
        schedule = tuple(min(2.0, round(request_temperature + i * config.temperature_step, 4)) for i in range(max_attempts))
    else:
        schedule = config.temperatures
    if not critic_loop:
        return None
    return LoopSettings(threshold, max_attempts, schedule)
