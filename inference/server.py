"""An OpenAI-compatible HTTP server over one generator, with the critic loop switchable per request.

    satsang serve --checkpoint checkpoints/sft-1 --port 8000
    python -m inference.server CHECKPOINT_DIR [--port 8000]      (the same, without the CLI)

Routes (starlette on uvicorn):

    GET  /v1/models                  the one model served, named after the checkpoint directory
    GET  /v1/models/{model}
    POST /v1/chat/completions        OpenAI chat completions; "stream": true sends server-sent events
    GET  /health

Any OpenAI client works against it, and so do this project's own clients: an
`LLMCritic` (critic/llm.py) or an `OpenAIGenerator` can take its URL.

The critic loop (inference/loop.py) is asked for per request with an extension
field, which the openai client sends through `extra_body`:

    client.chat.completions.create(model=..., messages=[...],
        extra_body={"satsang": {"critic_loop": True, "threshold": 7, "max_attempts": 3}})

    satsang.critic_loop    bool, default: the server's (off unless started with critic_loop=True)
    satsang.threshold      0-10, default 7
    satsang.max_attempts   1-10, default 3
    satsang.temperatures   the schedule; default: the request's temperature rising by 0.2
                           each attempt, or (0.7, 0.9, 1.1) when it gives none
    satsang.trace          bool: add `satsang.trace`, the answer traced to the training items it
                           repeats (inference/trace.py summary); 400 when the server has no lineage

How silence is rendered: the message content is "" (finish_reason "stop"), and the
response carries a `satsang` object (OpenAI clients keep unknown fields:
`completion.satsang`, or `model_extra["satsang"]`):

    "satsang": {"critic_loop": true, "silent": true, "outcome": "silence: no attempt reached the threshold",
                "chosen_index": null, "threshold": 7.0, "critic": {...agent...},
                "attempts": [{"text", "temperature", "seed", "score", "rationale", "flags", "status", "reason"}, ...]}

A streamed loop response runs the loop first (the critic needs whole answers),
then streams the chosen text; its last chunk carries the same `satsang` object.
Without the loop, a local model's tokens are streamed as they are generated.

Requests are validated before any work: 400 for a body that is not JSON or not an
object, a missing or malformed field (messages, roles, content, temperature, top_p,
max_tokens over the server's limit, n other than 1, a bad `satsang` object), or a
prompt too long for the model; 404 for an unknown model or path; 405 for a wrong
method; 413 for a body over `max_body_bytes`; 503 (with Retry-After) when
`max_pending` requests are already admitted. Errors have OpenAI's shape:
{"error": {"message", "type", "param", "code"}}.

Concurrency: requests are served on worker threads; a LocalGenerator takes its
model lock per generation, so concurrent requests queue for the model rather
than interleave, and a seeded request gives the same text however many run beside it.
"""

from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from critic.base import Critic
from inference.generate import Completion, EndpointError, GenerationConfig, GenerationError, Generator, LocalGenerator, PromptTooLong
from inference.loop import ContemplativeGenerator, LoopResult, LoopSettings

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


# ---- the service -------------------------------------------------------------------------


class _Admission:
    """Counts admitted requests; over the limit a request gets 503 instead of waiting without bound."""

    def __init__(self, limit: int):
        self.limit = limit
        self._count = 0
        self._lock = threading.Lock()

    def enter(self) -> _Ticket:
        with self._lock:
            if self._count >= self.limit:
                raise ApiError(503, f"the server is busy: {self.limit} requests are already in progress", code="server_busy", headers={"Retry-After": "1"})
            self._count += 1
        return _Ticket(self)

    def _leave(self) -> None:
        with self._lock:
            self._count -= 1


class _Ticket:
    def __init__(self, admission: _Admission):
        self._admission = admission
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._admission._leave()


@dataclass
class ChatService:
    """The server's logic without HTTP: validate, generate (with or without the loop), render OpenAI JSON."""

    generator: Generator
    critic: Critic
    config: ServerConfig = field(default_factory=ServerConfig)
    tracer: Any = None  # inference.trace.Tracer (anything with trace(text).summary()): satsang.trace on request

    def __post_init__(self) -> None:
        self.model_name = self.config.model_name or getattr(self.generator, "name", "satsang")
        self.created = int(time.time())
        self.admission = _Admission(self.config.max_pending)

    def model_card(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "satsang"}

    def parse(self, payload: Any) -> ChatRequest:
        """Validate a request, its prompt's length against the model included, before any generation."""
        request = parse_chat_request(payload, self.config, self.model_name)
        if request.trace and self.tracer is None:
            raise ApiError(400, "satsang.trace: this server has no checkpoint lineage to trace against", "satsang.trace")
        check = getattr(self.generator, "check_prompt", None)
        if check is not None:
            with _generation_errors():
                check(list(request.messages), request.config)
        return request

    def loop_for(self, settings: LoopSettings, config: GenerationConfig) -> ContemplativeGenerator:
        return ContemplativeGenerator.from_settings(self.generator, self.critic, settings, config)

    def complete(self, request: ChatRequest) -> dict[str, Any]:
        """The whole chat.completion object for a non-streamed request (blocking: call on a worker thread)."""
        completion_id = _completion_id()
        with _generation_errors():
            if request.loop is not None:
                result = self.loop_for(request.loop, request.config).respond(list(request.messages))
                text, finish, usage, extension = result.response, "stop", self._usage(request, result.response), _loop_extension(result)
            else:
                completion = _complete(self.generator, list(request.messages), request.config)
                text, finish, usage, extension = completion.text, completion.finish_reason, _usage_of(completion), {"critic_loop": False}
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None}, "logprobs": None, "finish_reason": finish}],
            "usage": usage,
            "satsang": self._traced(request, extension, text),
        }

    def stream_events(self, request: ChatRequest) -> Iterator[dict[str, Any]]:
        """The chat.completion.chunk objects of a streamed request, in order (blocking between items)."""
        completion_id = _completion_id()
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
            body = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model_name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            body.update(extra)
            return body

        yield chunk({"role": "assistant", "content": ""})
        messages = list(request.messages)
        with _generation_errors():
            if request.loop is not None:
                result = self.loop_for(request.loop, request.config).respond(messages)
                for piece in _pieces(result.response):
                    yield chunk({"content": piece})
                yield chunk({}, "stop", satsang=self._traced(request, _loop_extension(result), result.response))
                text, finish = result.response, "stop"
            elif hasattr(self.generator, "stream"):
                parts = []
                # closing(): when the client goes away, the model stops at its next token.
                with closing(iter(self.generator.stream(messages, request.config))) as pieces:  # type: ignore[attr-defined]
                    for piece in pieces:
                        parts.append(piece)
                        yield chunk({"content": piece})
                text = "".join(parts)
                finish = "length" if self._token_count(text) >= request.config.max_new_tokens else "stop"
                yield chunk({}, finish, satsang=self._traced(request, {"critic_loop": False}, text))
            else:
                completion = _complete(self.generator, messages, request.config)
                for piece in _pieces(completion.text):
                    yield chunk({"content": piece})
                text, finish = completion.text, completion.finish_reason
                yield chunk({}, finish, satsang=self._traced(request, {"critic_loop": False}, text))
        if request.include_usage:
            usage_chunk = chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self._usage(request, text)
            yield usage_chunk

    def _traced(self, request: ChatRequest, extension: dict[str, Any], text: str) -> dict[str, Any]:
        if request.trace and self.tracer is not None:
            extension = {**extension, "trace": self.tracer.trace(text).summary() if text.strip() else None}
        return extension

    def _token_count(self, text: str) -> int:
        count = getattr(self.generator, "count_tokens", None)
        return count(text) if count is not None else len(text.split())

    def _usage(self, request: ChatRequest, text: str) -> dict[str, int]:
        count = getattr(self.generator, "count_tokens", None)
        count_prompt = getattr(self.generator, "count_prompt_tokens", None)
        if count is None or count_prompt is None:
            return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        prompt = count_prompt(list(request.messages))
        completion = count(text) if text else 0
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _complete(generator: Generator, messages: list[dict[str, str]], config: GenerationConfig) -> Completion:
    complete = getattr(generator, "complete", None)
    if complete is not None:
        return complete(messages, config)
    text = generator.generate(messages, config)
    return Completion(text, 0, 0, "stop")


def _usage_of(completion: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


def _loop_extension(result: LoopResult) -> dict[str, Any]:
    extension = {"critic_loop": True, **{k: v for k, v in result.to_dict().items() if k != "response"}}
    # Who judged, without the critic's whole configuration in every response.
    extension["critic"] = {k: result.critic.get(k) for k in ("kind", "model", "rubric_version")}
    return extension


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


_PIECE = re.compile(r"\s*\S+")


def _pieces(text: str) -> list[str]:
    """A finished text cut into word-sized stream deltas that join back to it exactly."""
    return _PIECE.findall(text) if text else []


class _generation_errors:
    """Maps generator failures to API errors: a prompt too long is the client's (400), anything else the server's."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> bool:
        if isinstance(error, PromptTooLong):
            raise ApiError(400, str(error), "messages", "context_length_exceeded") from error
        if isinstance(error, EndpointError):
            raise ApiError(502, f"the upstream endpoint failed: {error}", code="upstream_error") from error
        if isinstance(error, GenerationError):
            raise ApiError(500, f"generation failed: {error}", code="generation_failed") from error
        return False


# ---- HTTP --------------------------------------------------------------------------------


def create_app(service: ChatService) -> Any:
    """The starlette application for a ChatService."""
    import anyio
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def error_response(error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [service.model_card()]})

    async def model(request: Request) -> Response:
        name = request.path_params["model"]
        if name != service.model_name:
            return error_response(ApiError(404, f"the model {name!r} does not exist", "model", "model_not_found"))
        return JSONResponse(service.model_card())

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": service.model_name})

    async def chat_completions(request: Request) -> Response:
        body = await _read_body(request, service.config.max_body_bytes)
        chat = await run_in_threadpool(service.parse, decode_json_body(body))
        ticket = service.admission.enter()
        if not chat.stream:
            try:
                return JSONResponse(await run_in_threadpool(service.complete, chat))
            finally:
                ticket.release()
        from starlette.background import BackgroundTask

        return StreamingResponse(
            _sse(service.stream_events(chat), ticket),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(ticket.release),
        )

    async def _sse(events: Iterator[dict[str, Any]], ticket: _Ticket) -> AsyncIterator[bytes]:
        sentinel = object()
        try:
            while True:
                try:
                    event = await run_in_threadpool(next, events, sentinel)
                except ApiError as error:
                    yield _sse_line(error.body())
                    break
                if event is sentinel:
                    break
                yield _sse_line(event)
            yield b"data: [DONE]\n\n"
        finally:
            # A client that left: close the events, which stops a local model at its next token.
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(events.close)  # type: ignore[attr-defined]
            ticket.release()

    async def api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return error_response(error)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        messages = {404: f"no route {request.url.path}", 405: f"method {request.method} is not allowed on {request.url.path}"}
        api = ApiError(error.status_code, messages.get(error.status_code, str(error.detail)), headers=error.headers)
        return error_response(api)

    async def server_error(request: Request, error: Exception) -> Response:
        return error_response(ApiError(500, f"internal error: {type(error).__name__}"))

    routes = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: server_error})


def _sse_line(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


async def _read_body(request: Any, limit: int) -> bytes:
    """The request body, refusing (413) one over `limit` bytes before reading it where Content-Length says so."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number") from None
        if size > limit:
            raise ApiError(413, f"the request body is {size} bytes; this server takes at most {limit}")
    chunks = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise ApiError(413, f"the request body is over this server's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# ---- running it --------------------------------------------------------------------------


def build_service(
    checkpoint_or_generator: str | Path | Generator,
    critic: Critic | None = None,
    config: ServerConfig | None = None,
    merge: bool = False,
    tracer: Any = None,
    **generator_options: Any,
) -> ChatService:
    """A ChatService over a checkpoint directory (loaded as a LocalGenerator) or any Generator; the critic defaults to the offline one.

    A checkpoint directory with a lineage can trace its answers (satsang.trace) unless a tracer is given."""
    if isinstance(checkpoint_or_generator, (str, Path)):
        generator: Generator = LocalGenerator(checkpoint_or_generator, merge=merge, **generator_options)
        if tracer is None:
            from inference.trace import LazyTracer

            tracer = LazyTracer.for_checkpoint(checkpoint_or_generator)
    else:
        generator = checkpoint_or_generator
    if critic is None:
        from critic.offline import OfflineCritic

        critic = OfflineCritic()
    return ChatService(generator, critic, config or ServerConfig(), tracer)


class RunningServer:
    """A uvicorn server on a background thread: tests and notebooks. Use as a context manager or start()/stop()."""

    def __init__(self, service: ChatService, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self.service = service
        self.host = host
        self.port = port
        self.log_level = log_level
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 30.0) -> RunningServer:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(create_app(self.service), log_level=self.log_level, lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="satsang-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def start_server(
    checkpoint_or_generator: str | Path | Generator,
    critic: Critic | None = None,
    config: ServerConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    **options: Any,
) -> RunningServer:
    """Serve on a background thread (port 0: any free port; see `.base_url`); stop with `.stop()`."""
    return RunningServer(build_service(checkpoint_or_generator, critic, config, **options), host, port).start()


def serve(
    checkpoint_or_generator: str | Path | Generator,
    host: str = "127.0.0.1",
    port: int = 8000,
    critic: Critic | None = None,
    config: ServerConfig | None = None,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Serve until interrupted (Ctrl-C), in this thread."""
    import uvicorn

    service = build_service(checkpoint_or_generator, critic, config, **options)
    uvicorn.run(create_app(service), host=host, port=port, log_level=log_level, lifespan="off")


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Serve a checkpoint as an OpenAI-compatible endpoint.")
    parser.add_argument("checkpoint")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--merge", action="store_true")
    parser.add_argument("--critic-loop", action="store_true", help="run the critic loop unless a request says otherwise")
    args = parser.parse_args(argv)
    serve(args.checkpoint, args.host, args.port, merge=args.merge, config=replace(ServerConfig(), critic_loop=args.critic_loop))


if __name__ == "__main__":
    main()


__all__ = [
    "ApiError",
    "ChatRequest",
    "ChatService",
    "RunningServer",
    "ServerConfig",
    "build_service",
    "create_app",
    "parse_chat_request",
    "serve",
    "start_server",
]
