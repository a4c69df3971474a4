"""The OpenAI-compatible server, over real HTTP on loopback, with the real openai client.

It serves the trained tiny checkpoint of test_inference.py; every request goes
through uvicorn, starlette and the openai client's own transport and error mapping.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import openai
import pytest
import torch

from critic.llm import LLMCritic, LLMCriticConfig
from critic.offline import OfflineCritic
from inference.generate import EndpointError, GenerationConfig, LocalGenerator, OpenAIGenerator
from inference.loop import ContemplativeGenerator
from inference.server import ChatService, RunningServer, ServerConfig
from test_inference import LEARNED_ANSWER, QUESTION, ensure_trained_checkpoint

torch.set_num_threads(1)

MODEL = "checkpoint"
USER = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> LocalGenerator:
    return LocalGenerator(ensure_trained_checkpoint(tmp_path_factory.getbasetemp() / "inference-tiny"))


@pytest.fixture(scope="module")
def server(generator: LocalGenerator):
    config = ServerConfig(max_body_bytes=8192, max_tokens_limit=256, default_max_tokens=32)
    with RunningServer(ChatService(generator, OfflineCritic(), config)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer):
    with openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0, timeout=60) as c:
        yield c


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "satsang"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_chat_completion(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=USER, temperature=0)
    choice = completion.choices[0]
    assert choice.message.content == LEARNED_ANSWER and choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 0
    assert completion.model == MODEL and completion.id.startswith("chatcmpl-")
    assert completion.satsang == {"critic_loop": False}


def test_length_finish_and_content_parts(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}]}], temperature=0, max_tokens=3)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3
    assert LEARNED_ANSWER.startswith(completion.choices[0].message.content)


def test_streaming_matches_the_whole_completion(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=USER, temperature=1.0, seed=11, max_tokens=40).choices[0].message.content
    chunks = list(client.chat.completions.create(model=MODEL, messages=USER, temperature=1.0, seed=11, max_tokens=40, stream=True, stream_options={"include_usage": True}))
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 1 and "".join(content) == whole
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert chunks[0].choices[0].delta.role == "assistant"


def test_raw_stream_is_server_sent_events_ending_with_done(server: RunningServer) -> None:
    body = {"model": MODEL, "messages": USER, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == LEARNED_ANSWER


def test_critic_loop_per_request_accepts(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=USER, extra_body={"satsang": {"critic_loop": True, "threshold": 7, "temperatures": [0]}}
    )
    assert completion.choices[0].message.content == LEARNED_ANSWER
    loop = completion.satsang
    assert loop["critic_loop"] is True and loop["silent"] is False and loop["outcome"] == "accepted"
    assert loop["chosen_index"] == 0 and loop["attempts"][0]["score"] >= 7
    assert loop["attempts"][0]["rationale"].startswith("base 3.0")
    assert loop["critic"] == {"kind": "offline", "model": OfflineCritic().agent["model"], "rubric_version": "aliveness-v1"}


def test_critic_loop_falls_silent_and_says_why(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=USER, temperature=0.5, seed=0, extra_body={"satsang": {"critic_loop": True, "threshold": 10, "max_attempts": 3}}
    )
    assert completion.choices[0].message.content == ""
    assert completion.choices[0].finish_reason == "stop"
    loop = completion.satsang
    assert loop["silent"] is True and loop["chosen_index"] is None
    assert [a["temperature"] for a in loop["attempts"]] == [0.5, 0.7, 0.9]  # the request's temperature, rising
    assert all(a["score"] < 10 and a["rationale"] for a in loop["attempts"])


def test_streamed_critic_loop_ends_with_the_loop_record(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=USER, stream=True, extra_body={"satsang": {"critic_loop": True, "threshold": 10, "max_attempts": 2}}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.satsang["silent"] is True and len(last.satsang["attempts"]) == 2


def test_concurrent_requests_all_succeed_with_consistent_outputs(client: openai.OpenAI, server: RunningServer) -> None:
    prompts = [QUESTION, "What is the Self?", "Who am I?", "How to overcome the mental habits?"]
    jobs = [(prompts[i % len(prompts)], i % 3, i % 2 == 0) for i in range(10)]  # (question, seed, stream)

    def ask(job: tuple[str, int, bool]) -> str:
        question, seed, stream = job
        kwargs = {"model": MODEL, "messages": [{"role": "user", "content": question}], "temperature": 1.0, "seed": seed, "max_tokens": 30}
        if stream:
            return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**kwargs, stream=True) if c.choices)
        return client.chat.completions.create(**kwargs).choices[0].message.content

    expected = {job: ask(job) for job in set((q, s, False) for q, s, _ in jobs)}  # one at a time
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        answers = list(pool.map(ask, jobs))
    for (question, seed, _), answer in zip(jobs, answers, strict=True):
        assert answer == expected[(question, seed, False)]
    assert len(set(expected.values())) > 1


BAD_REQUESTS = [
    # (what, method, path, body bytes or JSON, status, param)
    ("bad JSON", "POST", "/chat/completions", b'{"model": "checkpoint", "messages": [', 400, None),
    ("not UTF-8", "POST", "/chat/completions", b"\xff\xfe{}", 400, None),
    ("body not an object", "POST", "/chat/completions", [1, 2], 400, None),
    ("missing messages", "POST", "/chat/completions", {"model": MODEL}, 400, "messages"),
    ("empty messages", "POST", "/chat/completions", {"model": MODEL, "messages": []}, 400, "messages"),
    ("messages not a list", "POST", "/chat/completions", {"model": MODEL, "messages": "hi"}, 400, "messages"),
    ("message not an object", "POST", "/chat/completions", {"model": MODEL, "messages": ["hi"]}, 400, "messages[0]"),
    ("unknown role", "POST", "/chat/completions", {"model": MODEL, "messages": [{"role": "oracle", "content": "hi"}]}, 400, "messages[0].role"),
    ("content a number", "POST", "/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": 7}]}, 400, "messages[0].content"),
    ("image content", "POST", "/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "messages[0].content[0]"),
    ("last message not the user's", "POST", "/chat/completions", {"model": MODEL, "messages": [*USER, {"role": "assistant", "content": "x"}]}, 400, "messages[1].role"),
    ("missing model", "POST", "/chat/completions", {"messages": USER}, 400, "model"),
    ("temperature a string", "POST", "/chat/completions", {"model": MODEL, "messages": USER, "temperature": "hot"}, 400, "temperature"),
    ("temperature out of range", "POST", "/chat/completions", {"model": MODEL, "messages": USER, "temperature": 3}, 400, "temperature"),
    ("top_p zero", "POST", "/chat/completions", {"model": MODEL, "messages": USER, "top_p": 0}, 400, "top_p"),
    ("max_tokens too large", "POST", "/chat/completions", {"model": MODEL, "messages": USER, "max_tokens": 100000}, 400, "max_tokens"),
    ("max_tokens a float", "POST", "/chat/completions", {"model": MODEL, "messages": USER, "max_tokens": 2.5}, 400, "max_tokens"),
    ("n of 2", "POST", "/chat/completions", {"model": MODEL, "messages": USER, "n": 2}, 400, "n"),
    ("stream a string", "POST", "/chat/completions", {"model": MODEL, "messages": USER, "stream": "yes"}, 400, "stream"),
    ("seed a bool", "POST", "/chat/completions", {"model": MODEL, "messages": USER, "seed": True}, 400, "seed"),
    ("satsang not an object", "POST", "/chat/completions", {"model": MODEL, "messages": USER, "satsang": True}, 400, "satsang"),
    ("threshold over 10", "POST", "/chat/completions", {"model": MODEL, "messages": USER, "satsang": {"critic_loop": True, "threshold": 11}}, 400, "satsang.threshold"),
    ("max_attempts zero", "POST", "/chat/completions", {"model": MODEL, "messages": USER, "satsang": {"critic_loop": True, "max_attempts": 0}}, 400, "satsang.max_attempts"),
    ("prompt too long for the model", "POST", "/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "why " * 1000}]}, 400, "messages"),
    ("prompt too long, streamed", "POST", "/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "why " * 1000}], "stream": True}, 400, "messages"),
    ("seed beyond 64 bits", "POST", "/chat/completions", {"model": MODEL, "messages": USER, "seed": 2**200}, 400, "seed"),
    ("a lone surrogate", "POST", "/chat/completions", b'{"model": "checkpoint", "messages": [{"role": "user", "content": "why \\ud800"}]}', 400, "messages[0].content"),
    ("nested 4,000 deep", "POST", "/chat/completions", b'{"model": "checkpoint", "messages": ' + b"[" * 4000 + b"]" * 4000 + b"}", 400, None),
    ("unknown model", "POST", "/chat/completions", {"model": "gpt-4", "messages": USER}, 404, "model"),
    ("unknown path", "POST", "/completions", {"model": MODEL, "prompt": "x"}, 404, None),
    ("GET on completions", "GET", "/chat/completions", None, 405, None),
    ("POST on models", "POST", "/models", {}, 405, None),
    ("body too large", "POST", "/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x" * 10000}]}, 413, None),
]


@pytest.mark.parametrize(("what", "method", "path", "body", "status", "param"), BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_bad_requests_get_the_right_status(server: RunningServer, what: str, method: str, path: str, body, status: int, param: str | None) -> None:
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    response = httpx.request(method, server.base_url + path, content=content, headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    assert error["param"] == param
    if status == 405:
        assert "allow" in response.headers


def test_a_chunked_body_over_the_limit_is_refused(server: RunningServer) -> None:
    def chunks():
        for _ in range(10):
            yield b" " * 1024

    response = httpx.post(f"{server.base_url}/chat/completions", content=chunks(), timeout=30)
    assert response.status_code == 413


def test_the_openai_client_maps_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4", messages=USER)
    with pytest.raises(openai.BadRequestError, match="over this server's limit"):
        client.chat.completions.create(model=MODEL, messages=USER, max_tokens=5000)
    with pytest.raises(openai.BadRequestError, match="satsang.threshold"):
        client.chat.completions.create(model=MODEL, messages=USER, extra_body={"satsang": {"critic_loop": True, "threshold": -1}})


def test_a_busy_server_says_503(generator: LocalGenerator) -> None:
    with RunningServer(ChatService(generator, OfflineCritic(), ServerConfig(max_pending=0))) as busy:
        response = httpx.post(f"{busy.base_url}/chat/completions", json={"model": MODEL, "messages": USER}, timeout=30)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"


def test_a_client_that_leaves_mid_stream_does_not_wedge_the_model(server: RunningServer, client: openai.OpenAI) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "What is the Self?"}], "temperature": 1.0, "max_tokens": 256, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=30) as response:
        next(response.iter_lines())
    done = threading.Event()
    result: list[str] = []

    def ask() -> None:
        result.append(client.chat.completions.create(model=MODEL, messages=USER, temperature=0).choices[0].message.content)
        done.set()

    threading.Thread(target=ask, daemon=True).start()
    assert done.wait(30) and result == [LEARNED_ANSWER]


# ---- the server as an endpoint for this project's own clients ------------------------------


def test_openai_generator_against_our_server(server: RunningServer) -> None:
    remote = OpenAIGenerator(server.base_url)  # no model: takes the first listed
    assert remote.model == MODEL
    assert remote.generate(QUESTION, GenerationConfig(temperature=0)) == LEARNED_ANSWER
    assert "".join(remote.stream(QUESTION, GenerationConfig(temperature=0))) == LEARNED_ANSWER
    completion = remote.complete(QUESTION, GenerationConfig(temperature=0, max_new_tokens=3))
    assert completion.finish_reason == "length" and completion.completion_tokens == 3
    # The critic loop run client-side over HTTP: the server generates, the loop judges.
    result = ContemplativeGenerator(remote, OfflineCritic(), threshold=7, temperatures=(0.0,)).respond(QUESTION)
    assert result.response == LEARNED_ANSWER and result.chosen_index == 0
    remote.close()


def test_openai_generator_errors_are_endpoint_errors(server: RunningServer) -> None:
    remote = OpenAIGenerator(server.base_url, model="gpt-4", max_retries=0)
    with pytest.raises(EndpointError, match="does not exist"):
        remote.generate(QUESTION, GenerationConfig())
    with pytest.raises(EndpointError, match="did not list"):
        OpenAIGenerator("http://127.0.0.1:9/v1", max_retries=0, timeout_s=2)


def test_llm_critic_can_point_at_our_server(server: RunningServer, tmp_path: Path) -> None:
    # The rubric prompt (~800 tokens) is over the trained model's 512: the server says so (400) ...
    critic = LLMCritic(LLMCriticConfig(base_url=server.base_url, model=MODEL, max_retries=0, max_tokens=32))
    record = critic.critique(QUESTION, LEARNED_ANSWER)
    assert record.status == "unscored" and record.reason == "client error" and "context of 512 tokens" in record.rationale

    # ... and a model with room for it answers. A tiny random model cannot write a JSON
    # judgement, so the critic gets junk output and records that instead of raising.
    from training.tiny import TinyPhiConfig, build_tiny_phi

    from test_inference import SAMPLE

    wide = build_tiny_phi(tmp_path / "wide", [SAMPLE.read_text(encoding="utf-8")], TinyPhiConfig(max_position_embeddings=2048))
    with RunningServer(ChatService(LocalGenerator(wide), OfflineCritic())) as endpoint:
        critic = LLMCritic(LLMCriticConfig(base_url=endpoint.base_url, model="wide", max_retries=0, max_tokens=32))
        record = critic.critique(QUESTION, LEARNED_ANSWER)
    assert record.status == "unscored" and record.reason in ("junk output", "refusal"), record


def test_server_default_loop_setting(generator: LocalGenerator) -> None:
    config = replace(ServerConfig(), critic_loop=True, threshold=10.0, max_attempts=1)
    with RunningServer(ChatService(generator, OfflineCritic(), config)) as looping:
        with openai.OpenAI(base_url=looping.base_url, api_key="k", max_retries=0) as c:
            silent = c.chat.completions.create(model=MODEL, messages=USER)
            plain = c.chat.completions.create(model=MODEL, messages=USER, temperature=0, extra_body={"satsang": {"critic_loop": False}})
    assert silent.choices[0].message.content == "" and silent.satsang["silent"] is True
    assert plain.choices[0].message.content == LEARNED_ANSWER


def test_health(server: RunningServer) -> None:
    assert httpx.get(server.base_url.removesuffix("/v1") + "/health").json() == {"status": "ok", "model": MODEL}


def test_serve_a_checkpoint_directory(tmp_path_factory: pytest.TempPathFactory) -> None:
    from inference.server import start_server

    checkpoint: Path = ensure_trained_checkpoint(tmp_path_factory.getbasetemp() / "inference-tiny")
    running = start_server(checkpoint, merge=True)
    try:
        with openai.OpenAI(base_url=running.base_url, api_key="k", max_retries=0) as c:
            assert c.chat.completions.create(model=MODEL, messages=USER, temperature=0).choices[0].message.content == LEARNED_ANSWER
    finally:
        running.stop()
