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
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from critic.base import Critic

# The request model (limits, errors, validation) is inference/api.py's; these names are served from here too.
from inference.api import ApiError, ChatRequest, ServerConfig, decode_json_body, parse_chat_request  # noqa: F401
from inference.generate import Completion, EndpointError, GenerationConfig, GenerationError, Generator, LocalGenerator, PromptTooLong
from inference.loop import ContemplativeGenerator, LoopResult, LoopSettings


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
