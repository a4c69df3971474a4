"""The LLM critic: any OpenAI-compatible chat endpoint (vLLM, a local server, a hosted API).

The openai client is built with `max_retries=0`: this module runs its own retry
loop, so that every fault is classified (timeout, 5xx, 4xx, junk, refusal) and
ends in an unscored record with its reason rather than an exception that would
stop the run.

The API key is read from the environment at call time and handed to the client
only; it is never kept on the config, written to a record, the cache or a log.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from critic.base import (
    FLAGS,
    REASON_CLIENT_ERROR,
    REASON_CONNECTION,
    REASON_CRITIC_ERROR,
    REASON_EMPTY,
    REASON_JUNK,
    REASON_RATE_LIMITED,
    REASON_REFUSAL,
    REASON_SERVER_ERROR,
    REASON_TIMEOUT,
    RUBRIC,
    RUBRIC_VERSION,
    Critic,
    CriticError,
    CritiqueInput,
    CritiqueProgress,
    CritiqueRecord,
    agent_dict,
    as_inputs,
    config_hash,
)
from curation.files import utc_now
from curation.redaction import endpoint_name, redact_secret

log = logging.getLogger(__name__)

API_KEY_ENV = "SATSANG_CRITIC_API_KEY"
FALLBACK_API_KEY_ENV = "OPENAI_API_KEY"
# What the client sends when no key is set: local servers (vLLM, llama.cpp) accept anything.
NO_KEY = "EMPTY"

PROMPT_VERSION = "aliveness-prompt-v1"

OUTPUT_INSTRUCTIONS = (
    "Reply with ONE JSON object and nothing else:\n"
    '{"score": <integer 0-10>, "rationale": "<one or two sentences>", "flags": [<zero or more of: '
    + ", ".join(f'"{flag}"' for flag in FLAGS)
    + ">]}"
)

SYSTEM_PROMPT = RUBRIC + "\n" + OUTPUT_INSTRUCTIONS

MAX_RATIONALE_CHARS = 600


@dataclass(frozen=True)
class LLMCriticConfig:
    """How to reach the endpoint and ask it. Holds the *name* of the key's variable, never the key.

    base_url: the OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1 (vLLM) or https://api.openai.com/v1.
    model: the model name the endpoint serves.
    api_key_env: environment variable holding the key; OPENAI_API_KEY is tried when it is unset.
    timeout_s: per request; a request that takes longer is a "timeout".
    max_retries: further attempts after a timeout, connection error, 429 or 5xx.
    backoff_s: wait before the first retry; doubles each retry (with up to 25% jitter), at most backoff_max_s.
    concurrency: requests in flight at once.
    temperature, max_tokens: sampling; temperature 0 so a judgement is repeatable.
    json_mode: send response_format={"type": "json_object"}; off by default since not every server has it.
    """

    base_url: str
    model: str
    api_key_env: str = API_KEY_ENV
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    concurrency: int = 4
    temperature: float = 0.0
    max_tokens: int = 400
    json_mode: bool = False

    def __post_init__(self) -> None:
        if not self.base_url:
            raise ValueError("base_url is required")
        if not self.model:
            raise ValueError("model is required")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.max_retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0:
            raise ValueError("max_retries and backoff_s must be >= 0, timeout_s > 0")

    def identity(self) -> dict[str, Any]:
        """The settings that shape a judgement: the cache key hashes these (not timeouts, retries, concurrency)."""
        return {
            "kind": "llm",
            "base_url": endpoint_name(self.base_url),
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "json_mode": self.json_mode,
            "rubric_version": RUBRIC_VERSION,
            "prompt_version": PROMPT_VERSION,
            "system_prompt_sha256": config_hash({"prompt": SYSTEM_PROMPT}),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- parsing a completion -------------------------------------------------------------


class CritiqueParseError(Exception):
    """The completion could not be read as a judgement; `reason` is REASON_JUNK or REASON_REFUSAL."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ParsedCritique:
    score: float
    rationale: str
    flags: tuple[str, ...]


_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.S)
_SCORE_KEYS = ("score", "aliveness", "aliveness_score", "rating")
_NUMBER_WITH_SCALE = re.compile(
    r"(-?\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?)|out\s+of\s+(\d+(?:\.\d+)?))?", re.I
)
# "Score: 7/10", "score of 7", "Aliveness score - 8 out of 10", '"score": 6' in broken JSON
_PROSE_SCORE = re.compile(
    r"\b(?:score|rating|aliveness)\b[\"']?\s*(?:is|of|:|=|-|—)?\s*[\"']?\s*"
    r"(-?\d+(?:\.\d+)?\s*(?:/\s*\d+(?:\.\d+)?|out\s+of\s+\d+(?:\.\d+)?)?)",
    re.I,
)
_PROSE_RATIONALE = re.compile(r"[\"']?rationale[\"']?\s*[:=]\s*[\"']?(.*?)(?:[\"']\s*[,}]|$)", re.I | re.S)
_REFUSAL = re.compile(
    r"\b(?:I\s*(?:'|’)?\s*m\s+(?:sorry|unable|not able)"
    r"|I\s+am\s+(?:sorry|unable|not able)"
    r"|I\s+(?:can\s*(?:'|’)?\s*t|cannot|can\s+not|won\s*(?:'|’)?\s*t|will\s+not)\s+"
    r"(?:help|assist|comply|provide|do|evaluate|judge|rate|score|fulfil|fulfill|engage)"
    r"|as\s+an\s+AI\b)",
    re.I,
)
_FLAG_ALIASES = {
    "closure": "closure_reflex",
    "closure_reflex": "closure_reflex",
    "prescriptive": "prescriptive",
    "prescriptive_language": "prescriptive",
    "prescription": "prescriptive",
    "advice": "prescriptive",
    "mirroring": "mirroring_frame",
    "mirroring_frame": "mirroring_frame",
    "mirroring_the_questioner_s_frame": "mirroring_frame",
    "mirroring_the_questioners_frame": "mirroring_frame",
    "performing_wisdom": "performing_wisdom",
    "performing": "performing_wisdom",
    "performative_wisdom": "performing_wisdom",
    "verbosity": "verbosity",
    "verbose": "verbosity",
}


def parse_critique(text: str | None) -> ParsedCritique:
    """Read a judgement out of a completion, however it came wrapped.

    Accepts a bare JSON object, one inside a code fence or surrounded by prose, and
    failing that a plain-prose "Score: 7/10". Scores may be numbers or strings such
    as "7", "7/10", "3/5" (rescaled) or "8 out of 10"; a score outside 0-10 is junk,
    not clamped, since an out-of-scale number says the model ignored the rubric.
    Unknown flags are dropped. Raises CritiqueParseError (junk output or refusal).
    """
    if text is None or not text.strip():
        raise CritiqueParseError(REASON_JUNK, "empty completion")
    text = text.strip()
    for obj in _json_objects(text):
        found = _find_score_object(obj)
        if found is None:
            continue
        score = _score_value(found[0])
        if score is None:
            raise CritiqueParseError(REASON_JUNK, f"unreadable score {found[0]!r}")
        return ParsedCritique(score, _clean_rationale(found[1].get("rationale", found[1].get("reason", ""))), _flags(found[1].get("flags")))

    match = _PROSE_SCORE.search(text)
    if match is not None:
        score = _score_value(match.group(1))
        if score is not None:
            rationale_match = _PROSE_RATIONALE.search(text)
            rationale = rationale_match.group(1) if rationale_match else _PROSE_SCORE.sub("", text).strip(" .:;,-\n")
            return ParsedCritique(score, _clean_rationale(rationale), _flags(_flags_from_prose(text)))
    if _REFUSAL.search(text):
        raise CritiqueParseError(REASON_REFUSAL, f"the model declined: {_snippet(text)}")
    raise CritiqueParseError(REASON_JUNK, f"no score found in: {_snippet(text)}")


def _json_objects(text: str) -> Iterable[Any]:
    """Every JSON object in the text: fenced blocks first, then the whole text, then each '{' onwards."""
    decoder = json.JSONDecoder()
    candidates = [m.group(1).strip() for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        try:
            yield json.loads(candidate)
            continue
        except ValueError:
            pass
        start = candidate.find("{")
        while start >= 0:
            try:
                obj, _ = decoder.raw_decode(candidate, start)
                yield obj
            except ValueError:
                pass
            start = candidate.find("{", start + 1)


def _find_score_object(obj: Any, depth: int = 0) -> tuple[Any, Mapping[str, Any]] | None:
    """(score value, the object holding it), looking one level into wrappers like {"critique": {...}}."""
    if not isinstance(obj, Mapping):
        return None
    lowered = {str(k).lower(): v for k, v in obj.items()}
    for key in _SCORE_KEYS:
        if key in lowered:
            return lowered[key], lowered
    if depth == 0:
        for value in obj.values():
            found = _find_score_object(value, depth + 1)
            if found is not None:
                return found
    return None


def _score_value(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number, scale = float(value), 10.0
    elif isinstance(value, str):
        match = _NUMBER_WITH_SCALE.search(value)
        if match is None:
            return None
        number = float(match.group(1))
        scale = float(match.group(2) or match.group(3) or 10.0)
    else:
        return None
    if not math.isfinite(number) or scale <= 0:
        return None
    if scale != 10.0:
        number = number * 10.0 / scale
    if not 0.0 <= number <= 10.0:
        raise CritiqueParseError(REASON_JUNK, f"score {value!r} is outside 0-10")
    return round(number, 2)


def _flags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = re.split(r"[,;|]", value)
    if isinstance(value, Mapping):  # {"prescriptive": true, ...}
        value = [k for k, v in value.items() if v]
    if not isinstance(value, (list, tuple)):
        return ()
    found = set()
    for raw in value:
        if not isinstance(raw, str):
            continue
        key = re.sub(r"[^a-z]+", "_", raw.strip().lower()).strip("_")
        flag = _FLAG_ALIASES.get(key)
        if flag is not None:
            found.add(flag)
    return tuple(flag for flag in FLAGS if flag in found)


def _flags_from_prose(text: str) -> list[str]:
    lowered = re.sub(r"[^a-z]+", "_", text.lower())
    return [flag for flag in FLAGS if flag in lowered]


def _clean_rationale(value: Any) -> str:
    text = " ".join(str(value or "").split())
    if len(text) > MAX_RATIONALE_CHARS:
        text = text[: MAX_RATIONALE_CHARS - 1].rstrip() + "…"
    return text


def _snippet(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- the cache ------------------------------------------------------------------------


class CritiqueCache:
    """Scored records keyed by (sha256 of the pair's words, sha256 of the critic's identity).

    SQLite in WAL mode, so a second run (or a reader) does not block on a writer.
    Only scored records are kept: an unscored one (a timeout, a 503) is asked again
    next run, which is the point of marking it unscored.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._usable(), self._connect() as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS critique_cache ("
                " content_key TEXT NOT NULL, config_key TEXT NOT NULL, record TEXT NOT NULL, created_at TEXT NOT NULL,"
                " PRIMARY KEY (content_key, config_key))"
            )
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30.0)
        connection.execute("PRAGMA busy_timeout=30000")
        return connection

    @contextmanager
    def _usable(self) -> Iterator[None]:
        """A damaged or foreign cache file is one clear error, never a traceback; the file is left as it is."""
        try:
            yield
        except sqlite3.Error as error:
            raise CriticError(
                f"{self.path}: the critic cache cannot be used ({error}); it holds only cached judgements:"
                " move it away to start a fresh one"
            ) from None

    def get_many(self, content_keys: Sequence[str], config_key: str) -> dict[str, CritiqueRecord]:
        found: dict[str, CritiqueRecord] = {}
        unique = sorted(set(content_keys))
        with self._usable():
            return self._get_many(unique, config_key)

    def _get_many(self, unique: list[str], config_key: str) -> dict[str, CritiqueRecord]:
        found: dict[str, CritiqueRecord] = {}
        connection = self._connect()
        try:
            for start in range(0, len(unique), 500):  # stay under SQLite's bound-variable limit
                chunk = unique[start : start + 500]
                rows = connection.execute(
                    f"SELECT content_key, record FROM critique_cache WHERE config_key = ? AND content_key IN ({','.join('?' * len(chunk))})",
                    [config_key, *chunk],
                ).fetchall()
                for content_key, record in rows:
                    try:
                        found[content_key] = CritiqueRecord.from_dict(json.loads(record))
                    except (ValueError, KeyError, TypeError):
                        continue  # a damaged row is a miss, not a failure
        finally:
            connection.close()
        return found

    def put(self, content_key: str, config_key: str, record: CritiqueRecord) -> None:
        if not record.is_scored:
            return
        payload = json.dumps(record.to_dict(), sort_keys=True)
        with self._lock, self._usable():
            connection = self._connect()
            try:
                with connection:
                    connection.execute(
                        "INSERT OR REPLACE INTO critique_cache VALUES (?, ?, ?, ?)",
                        (content_key, config_key, payload, utc_now()),
                    )
            finally:
                connection.close()

    def __len__(self) -> int:
        with self._usable():
            connection = self._connect()
            try:
                return int(connection.execute("SELECT count(*) FROM critique_cache").fetchone()[0])
            finally:
                connection.close()


# ---- the critic -----------------------------------------------------------------------


class _Fault(Exception):
    def __init__(self, reason: str, detail: str, retryable: bool, retry_after_s: float | None = None):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class LLMCritic(Critic):
    """Asks an OpenAI-compatible chat endpoint to judge each pair by the rubric.

    critic = LLMCritic(LLMCriticConfig(base_url="http://127.0.0.1:8000/v1", model="qwen2.5-7b-instruct"))
    records = critic.critique_many([("I feel lost in my practice", "Who is it that feels lost?")])

    With a cache, a pair already judged under the same identity (model, prompt,
    rubric, sampling) costs no request.
    """

    kind = "llm"

    def __init__(self, config: LLMCriticConfig, cache: CritiqueCache | None = None):
        self.config = config
        self.cache = cache
        self.config_key = config_hash(config.identity())
        self.requests_made = 0  # HTTP attempts this critic has sent (retries included)
        self.cache_hits = 0
        self._count_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LLMCritic(model={self.config.model!r}, base_url={endpoint_name(self.config.base_url)!r})"

    def with_cache(self, cache: CritiqueCache | None) -> LLMCritic:
        return LLMCritic(self.config, cache)

    def with_config(self, **changes: Any) -> LLMCritic:
        return LLMCritic(replace(self.config, **changes), self.cache)

    @property
    def agent(self) -> dict[str, Any]:
        identity = self.config.identity()
        return agent_dict(
            "llm",
            self.config.model,
            {key: identity[key] for key in ("base_url", "temperature", "max_tokens", "json_mode", "prompt_version")},
        )

    def critique(self, question: str, answer: str, concept_score: float | None = None) -> CritiqueRecord:
        return self.critique_many([CritiqueInput(question, answer, concept_score)])[0]

    def critique_many(
        self,
        items: Iterable[CritiqueInput | Sequence[Any] | Mapping[str, Any]],
        progress: CritiqueProgress | None = None,
    ) -> list[CritiqueRecord]:
        """Judge every item, `concurrency` requests at a time; cached and repeated pairs cost nothing."""
        inputs = as_inputs(items)
        keys = [item.content_key for item in inputs]
        results: dict[str, CritiqueRecord] = {}
        if self.cache is not None and keys:
            results.update(self.cache.get_many(keys, self.config_key))
            self.cache_hits += sum(key in results for key in keys)

        # One request per distinct pair not in the cache; duplicates share its record.
        to_ask: dict[str, CritiqueInput] = {}
        for key, item in zip(keys, inputs):
            if key in results or key in to_ask:
                continue
            if not item.answer.strip():  # nothing to judge: no request
                results[key] = CritiqueRecord.unscored(REASON_EMPTY, "the answer has no words to judge", self.agent)
            else:
                to_ask[key] = item

        total = len(inputs)
        waiting: dict[str, int] = {}
        for key in keys:
            waiting[key] = waiting.get(key, 0) + 1
        done = total - sum(waiting[key] for key in to_ask)
        if progress is not None and done:
            progress(done, total)

        if to_ask:
            client = self._client()
            try:
                with ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="critic") as pool:
                    futures: dict[Future[CritiqueRecord], str] = {
                        pool.submit(self._judge, client, item): key for key, item in to_ask.items()
                    }
                    for future in as_completed(futures):
                        key = futures[future]
                        record = future.result()  # _judge never raises
                        results[key] = record
                        if self.cache is not None:
                            self.cache.put(key, self.config_key, record)
                        done += waiting[key]
                        if progress is not None:
                            progress(done, total)
            finally:
                client.close()
        return [results[key] for key in keys]

    # ---- one pair -----------------------------------------------------------------

    def _client(self):  # -> openai.OpenAI
        import openai

        # The key lives only in the client object; read now, so a rotated key is picked up.
        api_key = os.environ.get(self.config.api_key_env) or os.environ.get(FALLBACK_API_KEY_ENV) or NO_KEY
        return openai.OpenAI(
            base_url=self.config.base_url,
            api_key=api_key,
            timeout=self.config.timeout_s,
            max_retries=0,
            http_client=deadline_http_client(self.config.timeout_s),
        )

    def _judge(self, client: Any, item: CritiqueInput) -> CritiqueRecord:
        try:
            return self._judge_with_retries(client, item)
        except Exception as error:  # a bug or surprise in one item must not stop the run
            detail = redact_secret(f"{type(error).__name__}: {error}", _secret_of(client))
            log.warning("critic: unexpected error, item unscored: %s", detail)
            return CritiqueRecord.unscored(REASON_CRITIC_ERROR, detail, self.agent)

    def _judge_with_retries(self, client: Any, item: CritiqueInput) -> CritiqueRecord:
        attempts = self.config.max_retries + 1
        for attempt in range(attempts):
            try:
                content = self._ask(client, item)
            except _Fault as fault:
                detail = redact_secret(fault.detail, _secret_of(client))
                if fault.retryable and attempt + 1 < attempts:
                    wait = self._backoff(attempt, fault.retry_after_s)
                    log.info("critic: %s (%s); retry %d/%d in %.2fs", fault.reason, detail, attempt + 1, attempts - 1, wait)
                    time.sleep(wait)
                    continue
                tries = f" after {attempt + 1} attempt{'s' if attempt else ''}"
                log.warning("critic: item unscored, %s: %s%s", fault.reason, detail, tries)
                return CritiqueRecord.unscored(fault.reason, detail + tries, self.agent)
            try:
                parsed = parse_critique(content)
            except CritiqueParseError as error:
                # Not retried: at temperature 0 the same prompt gives the same junk or refusal.
                detail = redact_secret(error.detail, _secret_of(client))
                log.warning("critic: item unscored, %s: %s", error.reason, detail)
                return CritiqueRecord.unscored(error.reason, detail, self.agent)
            # Every path redacts, success too: a server may echo the key into a judgement it returns.
            return CritiqueRecord(parsed.score, redact_secret(parsed.rationale, _secret_of(client)), parsed.flags, self.agent)
        raise AssertionError("unreachable: the last attempt returns")

    def _ask(self, client: Any, item: CritiqueInput) -> str | None:
        """One request; the completion's text, or a _Fault saying what went wrong."""
        import openai

        request: dict[str, Any] = {
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": f"QUESTION:\n{item.question}\n\nANSWER:\n{item.answer}"},
            ],
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        if self.config.json_mode:
            request["response_format"] = {"type": "json_object"}
        with self._count_lock:
            self.requests_made += 1
        try:
            response = client.chat.completions.create(**request)
        except openai.APITimeoutError:
            raise _Fault(REASON_TIMEOUT, f"no response within {self.config.timeout_s:g}s", retryable=True) from None
        except openai.APIConnectionError as error:
            raise _Fault(REASON_CONNECTION, f"cannot reach {endpoint_name(self.config.base_url)}: {error}", retryable=True) from None
        except openai.APIStatusError as error:
            raise _status_fault(error) from None
        except (openai.APIResponseValidationError, ValueError) as error:
            raise _Fault(REASON_JUNK, f"response is not a chat completion: {_snippet(str(error))}", retryable=False) from None

        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise _Fault(REASON_JUNK, f"response is not a chat completion: {_snippet(str(response))}", retryable=False)
        choice = choices[0]
        message = getattr(choice, "message", None)
        refusal = getattr(message, "refusal", None)
        if refusal:
            raise _Fault(REASON_REFUSAL, f"the model declined: {_snippet(str(refusal))}", retryable=False)
        if getattr(choice, "finish_reason", None) == "content_filter":
            raise _Fault(REASON_REFUSAL, "the endpoint's content filter stopped the completion", retryable=False)
        content = getattr(message, "content", None)
        if content is not None and not isinstance(content, str):
            raise _Fault(REASON_JUNK, f"message content is not text: {_snippet(repr(content))}", retryable=False)
        return content

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        wait = min(self.config.backoff_s * (2**attempt), self.config.backoff_max_s)
        wait *= 1.0 + 0.25 * random.random()  # jitter, so concurrent retries do not arrive together
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self.config.backoff_max_s))
        return wait


def _status_fault(error: Any) -> _Fault:
    status = int(getattr(error, "status_code", 0) or 0)
    body = _snippet(str(getattr(error, "message", "") or error))
    retry_after = _retry_after(getattr(error, "response", None))
    if status >= 500:
        return _Fault(REASON_SERVER_ERROR, f"HTTP {status}: {body}", retryable=True, retry_after_s=retry_after)
    if status == 429:
        return _Fault(REASON_RATE_LIMITED, f"HTTP 429: {body}", retryable=True, retry_after_s=retry_after)
    if status == 408:
        return _Fault(REASON_TIMEOUT, f"HTTP 408: {body}", retryable=True, retry_after_s=retry_after)
    return _Fault(REASON_CLIENT_ERROR, f"HTTP {status}: {body}", retryable=False)


def _retry_after(response: Any) -> float | None:
    try:
        value = response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def _secret_of(client: Any) -> str | None:
    """The client's API key, when it is a real one (the placeholder for "no key" is no secret)."""
    return None if client.api_key == NO_KEY else client.api_key


# ---- a timeout for the whole request ----------------------------------------------------


def deadline_http_client(timeout_s: float):  # -> httpx.Client
    """An httpx client whose requests each end within about `timeout_s`, however the server stalls.

    httpx's timeouts bound each operation (connect, one read, one write), so a server that
    sends a byte every half second holds a request for as long as it likes. Here every
    response's body is read against one deadline per request: the request ends at the first
    byte after it (so at most one read timeout later), as an httpx timeout, which the
    openai client reports as APITimeoutError.
    """
    import httpx

    class DeadlineStream(httpx.SyncByteStream):
        def __init__(self, stream: httpx.SyncByteStream, deadline: float, request: httpx.Request):
            self._stream, self._deadline, self._request = stream, deadline, request

        def __iter__(self):
            for chunk in self._stream:
                if time.monotonic() > self._deadline:
                    raise httpx.ReadTimeout(f"no whole reply within {timeout_s:g}s", request=self._request)
                yield chunk

        def close(self) -> None:
            self._stream.close()

    class DeadlineTransport(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            deadline = time.monotonic() + timeout_s
            response = super().handle_request(request)
            response.stream = DeadlineStream(response.stream, deadline, request)
            return response

    return httpx.Client(transport=DeadlineTransport(), timeout=timeout_s)
