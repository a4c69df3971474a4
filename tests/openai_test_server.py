"""A small OpenAI-compatible HTTP server for tests: scripted chat completions and injected faults.

Real HTTP on 127.0.0.1 (an ephemeral port), so the real openai client, with its
real httpx transport, timeouts and error mapping, is what the tests exercise.

    with OpenAITestServer(default=Reply.ok(score=8)) as server:
        server.script("MARKER-503", Reply.error(503), Reply.error(503), Reply.ok(score=6))
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)

A request is matched to a script when its user message contains the script's
marker; the script's replies are used in order and its last one repeats.
Requests that match no script get `default`.

Faults a Reply can inject: a delay (beyond the client's timeout), any HTTP status
(500, 503, 429, 400, 401) with an error body, a junk body that is not JSON, a
completion whose content is junk or malformed JSON, a refusal (as text, or in the
message's `refusal` field), a content-filter stop.

The server records every request (path, Authorization header, JSON body) and the
most requests it ever had in flight at once, so a test can check concurrency,
retries, caching (no request at all) and that the API key was sent.

Run as (a manual endpoint for `satsang critique`; every answer scores 7):

    python tests/openai_test_server.py --port 8000
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "test-critic-model"
ECHO_PLACEHOLDER = "<<authorization>>"


@dataclass(frozen=True)
class Reply:
    """One scripted response. `body` (raw bytes) wins over `content` (a chat completion's text)."""

    status: int = 200
    content: str | None = None
    body: bytes | None = None
    content_type: str = "application/json"
    delay_s: float = 0.0
    refusal: str | None = None
    finish_reason: str = "stop"
    headers: tuple[tuple[str, str], ...] = ()
    echo_authorization: bool = False  # a hostile server: put the caller's Authorization header in the reply
    drip_s: float = 0.0  # a stalling server: send the body one byte at a time, this far apart

    @classmethod
    def ok(
        cls,
        score: Any = 7,
        rationale: str = "Turns the questioner back to the one who asks.",
        flags: Sequence[str] = (),
        echo_authorization: bool = False,
    ) -> Reply:
        if echo_authorization:
            rationale = f"{rationale} (called with {ECHO_PLACEHOLDER})"
        content = json.dumps({"score": score, "rationale": rationale, "flags": list(flags)})
        return cls(content=content, echo_authorization=echo_authorization)

    @classmethod
    def drip(cls, interval_s: float, then: Reply | None = None) -> Reply:
        """Headers at once, then the body byte by byte: each read is quick, the whole reply is not."""
        return replace(then or cls.ok(), drip_s=interval_s)

    @classmethod
    def completion(cls, content: str, finish_reason: str = "stop") -> Reply:
        return cls(content=content, finish_reason=finish_reason)

    @classmethod
    def error(cls, status: int, message: str = "", retry_after_s: float | None = None, echo_authorization: bool = False) -> Reply:
        if echo_authorization:
            message = f"{message or 'invalid credentials'}: {ECHO_PLACEHOLDER}"
        body = json.dumps({"error": {"message": message or f"scripted HTTP {status}", "type": "test_error", "code": status}})
        headers = (("Retry-After", f"{retry_after_s:g}"),) if retry_after_s is not None else ()
        return cls(status=status, body=body.encode(), headers=headers, echo_authorization=echo_authorization)

    @classmethod
    def junk_body(cls, text: str = "<html><body>502 Bad Gateway</body></html>", content_type: str = "text/html") -> Reply:
        return cls(body=text.encode(), content_type=content_type)

    @classmethod
    def slow(cls, delay_s: float, then: Reply | None = None) -> Reply:
        return replace(then or cls.ok(), delay_s=delay_s)

    @classmethod
    def refusal_text(cls, text: str = "I'm sorry, but I can't help with that request.") -> Reply:
        return cls(content=text)

    @classmethod
    def refusal_field(cls, text: str = "I can't assist with evaluating this content.") -> Reply:
        return cls(content=None, refusal=text)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    authorization: str | None
    body: Any  # parsed JSON, or None
    started_at: float

    @property
    def user_message(self) -> str:
        return _user_text(self.body)


@dataclass
class _Script:
    replies: list[Reply]
    used: int = 0

    def next(self) -> Reply:
        reply = self.replies[min(self.used, len(self.replies) - 1)]
        self.used += 1
        return reply


@dataclass
class OpenAITestServer:
    """Start with `start()` or as a context manager; `base_url` is what the openai client takes."""

    default: Reply = field(default_factory=Reply.ok)
    latency_s: float = 0.0  # added to every completion, so that concurrent requests overlap
    models: tuple[str, ...] = (MODEL,)
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._scripts: list[tuple[str, _Script]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- control ----------------------------------------------------------------------

    def start(self) -> OpenAITestServer:
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="openai-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes delayed handlers, so none outlives the test by long
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OpenAITestServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def script(self, marker: str, *replies: Reply) -> None:
        """Requests whose user message contains `marker` get `replies` in order; the last one repeats."""
        if not replies:
            raise ValueError("a script needs at least one reply")
        with self._lock:
            self._scripts.append((marker, _Script(list(replies))))

    def completions(self, marker: str | None = None) -> list[RecordedRequest]:
        """Chat-completion requests received, optionally only those whose user message contains marker."""
        with self._lock:
            found = [r for r in self.requests if r.path.endswith("/chat/completions")]
        return [r for r in found if marker is None or marker in r.user_message]

    # ---- serving ----------------------------------------------------------------------

    def _reply_for(self, body: Any) -> Reply:
        text = _user_text(body)
        with self._lock:
            for marker, script in self._scripts:
                if marker in text:
                    return script.next()
        return self.default

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


def _user_text(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    parts = []
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
            parts.append(message["content"])
    return "\n".join(parts)


def _completion_body(reply: Reply, model: str, n: int) -> bytes:
    return json.dumps(
        {
            "id": f"chatcmpl-test-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content, "refusal": reply.refusal},
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }
    ).encode()


def _make_handler(server: OpenAITestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do
        disable_nagle_algorithm = True  # headers and body go in two writes; no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass  # quiet: the tests read server.requests instead

        def do_GET(self) -> None:
            server._record(RecordedRequest("GET", self.path, self.headers.get("Authorization"), None, time.monotonic()))
            if self.path.rstrip("/") == "/v1/models":
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in server.models]
                self._send(200, json.dumps({"object": "list", "data": data}).encode())
            else:
                self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            authorization = self.headers.get("Authorization")
            server._record(RecordedRequest("POST", self.path, authorization, body, time.monotonic()))
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())
                return
            reply = server._reply_for(body)
            server._enter()
            try:
                wait = server.latency_s + reply.delay_s
                if wait and server._stopping.wait(wait):
                    return  # the server is stopping: drop the request
                if reply.body is not None:
                    payload = reply.body
                    if reply.echo_authorization:
                        payload = payload.replace(ECHO_PLACEHOLDER.encode(), (authorization or "").encode())
                else:
                    payload = _completion_body(reply, (body or {}).get("model", MODEL), len(server.requests))
                    if reply.echo_authorization:
                        payload = payload.replace(ECHO_PLACEHOLDER.encode(), (authorization or "").encode())
                self._send(reply.status, payload, reply.content_type, reply.headers, drip_s=reply.drip_s)
            finally:
                server._leave()

        def _send(
            self, status: int, payload: bytes, content_type: str = "application/json",
            headers: Sequence[tuple[str, str]] = (), drip_s: float = 0.0,
        ) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                if not drip_s:
                    self.wfile.write(payload)
                    return
                self.wfile.flush()
                for i in range(len(payload)):
                    if server._stopping.wait(drip_s):
                        return
                    self.wfile.write(payload[i : i + 1])
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout): nothing to answer

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve scripted OpenAI-compatible chat completions (every answer: score 7).")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with OpenAITestServer(port=args.port) as server:
        print(f"serving {server.base_url} (model {MODEL}); Ctrl-C to stop", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
