"""The aliveness critics: the LLM critic over real HTTP on loopback, the offline critic, the stage.

The LLM tests run the real openai client against tests/openai_test_server.py, a
real HTTP server on 127.0.0.1 that returns scripted completions and injects
faults. Timeouts are short (0.5 s) so the whole file runs in seconds.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from critic.base import FLAGS, RUBRIC, CriticError, CritiqueInput, CritiqueRecord
from critic.llm import CritiqueCache, CritiqueParseError, LLMCritic, LLMCriticConfig, parse_critique
from critic.offline import OfflineCritic
from critic.stage import CACHE_PATH, CRITIC_COLUMNS, critic_from_settings, run_critique
from curation.workspace import init_workspace
from openai_test_server import MODEL, OpenAITestServer, Reply
from satsang.render.stages import render_critique_report

DATA = Path(__file__).parent / "data"
SECRET = "sk-test-7f3a9c1e-NEVER-WRITE-ME-42"

LOST = "I feel lost in my practice. What should I do?"
ALIVE = "Who is it that feels lost?"
TIPS = "Here are 5 tips: 1. Meditate daily 2. Keep a journal 3. Find a teacher 4. Be patient 5. Read scripture. I hope this helps!"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # loopback must never go through a proxy
    with OpenAITestServer() as test_server:
        yield test_server


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("SATSANG_CRITIC_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return SECRET


def llm_critic(server: OpenAITestServer, cache: CritiqueCache | None = None, **overrides) -> LLMCritic:
    settings = dict(timeout_s=0.5, max_retries=1, backoff_s=0.01, backoff_max_s=0.05, concurrency=4)
    settings.update(overrides)
    return LLMCritic(LLMCriticConfig(base_url=server.base_url, model=MODEL, **settings), cache=cache)


def dialogue_workspace(tmp_path: Path, *books: str, prose: str | None = None):
    workspace = init_workspace(tmp_path / "ws")
    workspace.ingest([DATA / book for book in books], "dialogue")
    if prose is not None:
        workspace.ingest([DATA / prose], "prose")
    return workspace


# ---- LLM critic over HTTP ---------------------------------------------------------------


def test_llm_critic_parses_a_good_score_and_sends_the_key(server, api_key):
    server.default = Reply.ok(score=9, rationale="Turns the seeker back.", flags=["closure_reflex", "not-a-flag", "Prescriptive language"])
    record = llm_critic(server).critique(LOST, ALIVE)

    assert record.status == "scored" and record.reason == ""
    assert record.score == 9.0
    assert record.rationale == "Turns the seeker back."
    assert record.flags == ("closure_reflex", "prescriptive")  # unknown dropped, aliases mapped, FLAGS order
    assert record.agent["kind"] == "llm" and record.agent["model"] == MODEL
    assert record.agent["rubric_version"]
    (request,) = server.completions()
    assert request.authorization == f"Bearer {SECRET}"
    assert request.body["model"] == MODEL and request.body["temperature"] == 0.0
    assert request.body["messages"][0]["content"].startswith(RUBRIC)
    assert LOST in request.user_message and ALIVE in request.user_message


def test_each_fault_marks_only_its_item_unscored_and_the_run_goes_on(server, api_key):
    faults = {
        "F-TIMEOUT": (Reply.slow(3.0), "timeout"),
        "F-500": (Reply.error(500), "server error 5xx"),
        "F-503": (Reply.error(503), "server error 5xx"),
        "F-400": (Reply.error(400, "bad request"), "client error"),
        "F-JUNK-BODY": (Reply.junk_body(), "junk output"),
        "F-JUNK-TEXT": (Reply.completion("lorem ipsum dolor sit amet"), "junk output"),
        "F-MALFORMED": (Reply.completion('{"score": seven, "rationale": '), "junk output"),
        "F-OUT-OF-RANGE": (Reply.ok(score=42), "junk output"),
        "F-REFUSAL-TEXT": (Reply.refusal_text(), "refusal"),
        "F-REFUSAL-FIELD": (Reply.refusal_field(), "refusal"),
        "F-FILTER": (Reply.completion(None, finish_reason="content_filter"), "refusal"),
    }
    for marker, (reply, _) in faults.items():
        server.script(marker, reply)
    server.script("GOOD-LAST", Reply.ok(score=8))
    items = [("Q before", "GOOD-FIRST")] + [(f"Q {m}", f"answer {m}") for m in faults] + [("Q after", "GOOD-LAST")]

    records = llm_critic(server, timeout_s=0.5).critique_many(items)

    assert len(records) == len(items)
    assert records[0].status == "scored" and records[0].score == 7.0  # the default reply
    assert records[-1].status == "scored" and records[-1].score == 8.0
    for (marker, (_, reason)), record in zip(faults.items(), records[1:-1]):
        assert (marker, record.status, record.reason) == (marker, "unscored", reason)
        assert record.score is None and record.rationale  # the detail says what happened
    # Transient faults (timeout, 5xx) were retried once; the rest were not.
    assert len(server.completions("F-500")) == 2
    assert len(server.completions("F-TIMEOUT")) == 2
    assert len(server.completions("F-400")) == 1
    assert len(server.completions("F-JUNK-TEXT")) == 1
    assert len(server.completions("F-REFUSAL-TEXT")) == 1


def test_retries_back_off_then_succeed(server, api_key):
    server.script("FLAKY", Reply.error(503), Reply.error(500), Reply.ok(score=6))
    critic = llm_critic(server, max_retries=3, backoff_s=0.1, backoff_max_s=1.0)
    started = time.monotonic()
    record = critic.critique(LOST, "FLAKY answer")

    assert record.status == "scored" and record.score == 6.0
    attempts = server.completions("FLAKY")
    assert len(attempts) == 3
    gaps = [b.started_at - a.started_at for a, b in zip(attempts, attempts[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # 0.1 s, then doubled
    assert time.monotonic() - started >= 0.3
    assert critic.requests_made == 3


def test_a_timeout_then_success_is_scored(server, api_key):
    server.script("SLOW-ONCE", Reply.slow(2.0), Reply.ok(score=5))
    record = llm_critic(server, timeout_s=0.5).critique(LOST, "SLOW-ONCE")
    assert record.status == "scored" and record.score == 5.0
    assert len(server.completions("SLOW-ONCE")) == 2


def test_retry_after_header_is_honoured_and_exhausted_retries_say_so(server, api_key):
    server.script("RATE", Reply.error(429, retry_after_s=0.2))
    started = time.monotonic()
    record = llm_critic(server, max_retries=1, backoff_s=0.01, backoff_max_s=1.0).critique(LOST, "RATE")
    assert record.reason == "rate limited"
    assert "after 2 attempts" in record.rationale
    assert time.monotonic() - started >= 0.2


def test_concurrency_is_bounded(server, api_key):
    server.latency_s = 0.1
    items = [(f"question {i}", f"answer {i}") for i in range(12)]
    records = llm_critic(server, concurrency=3).critique_many(items)

    assert all(r.status == "scored" for r in records)
    assert len(server.completions()) == 12
    assert server.max_in_flight == 3  # never more than asked; with 12 slow requests, reached


def test_results_come_back_in_input_order_and_duplicates_cost_one_request(server, api_key):
    server.latency_s = 0.02
    server.script("A-FIRST", Reply.slow(0.2, Reply.ok(score=1)))
    server.script("B-SECOND", Reply.ok(score=2))
    items = [("q", "A-FIRST"), ("q", "B-SECOND"), ("q", "A-FIRST")]
    records = llm_critic(server).critique_many(items)
    assert [r.score for r in records] == [1.0, 2.0, 1.0]
    assert len(server.completions("A-FIRST")) == 1


def test_cache_hit_makes_no_request_and_a_new_config_asks_again(server, api_key, tmp_path):
    cache = CritiqueCache(tmp_path / "critic.sqlite")
    server.script("BROKEN", Reply.error(503))
    items = [(LOST, ALIVE), (LOST, TIPS), ("q", "BROKEN")]

    first = llm_critic(server, cache=cache).critique_many(items)
    n_first = len(server.completions())
    again = llm_critic(server, cache=cache)
    second = again.critique_many(items)

    assert [r.score for r in second[:2]] == [r.score for r in first[:2]]
    assert second[:2] == first[:2]
    # Only the unscored item was asked again: faults are not cached.
    assert len(server.completions()) - n_first == 2  # the 503 item again, with its one retry
    assert len(server.completions("BROKEN")) == 4
    assert again.cache_hits == 2
    assert len(cache) == 2

    # Operational settings (timeout, concurrency) do not change the identity; the model does.
    before = len(server.completions())
    llm_critic(server, cache=cache, timeout_s=0.4, concurrency=1).critique_many(items[:2])
    assert len(server.completions()) == before
    LLMCritic(LLMCriticConfig(base_url=server.base_url, model="another-model", timeout_s=0.5), cache=cache).critique_many(items[:2])
    assert len(server.completions()) == before + 2


def test_api_key_is_never_written_to_records_cache_workspace_or_logs(server, api_key, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)  # openai, httpx and critic loggers included
    # A hostile server that echoes the Authorization header into its 401 error message.
    server.script("Solitude", Reply.error(401, echo_authorization=True))
    server.script("silence", Reply.error(503))
    workspace = dialogue_workspace(tmp_path, "talks-19-24.txt")

    progress: list[tuple[int, int]] = []
    report = run_critique(workspace, llm_critic(server), progress=lambda done, total: progress.append((done, total)))
    done, total = progress[-1]  # the library reports progress; the CLI draws it
    assert done == total and 0 < total <= report.n_pairs

    assert report.unscored_by_reason.get("client error")
    assert all(r.authorization == f"Bearer {SECRET}" for r in server.completions())  # it was sent...
    # ...and written nowhere: not in records or agents, logs, output, the items table or any file.
    for record in report.records:
        assert SECRET not in json.dumps(record.to_dict())
    assert SECRET not in caplog.text
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    items = workspace.items()
    for column in ("critic_rationale", "critic_agent", "critic_unscored_reason"):
        assert not items[column].str.contains(SECRET, literal=True).any()
    files = [path for path in workspace.root.rglob("*") if path.is_file()]
    assert any(path.name == "critic.sqlite" for path in files)
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    assert "[redacted]" in " ".join(r.rationale for r in report.records if r.reason == "client error")


def test_a_key_echoed_in_a_successful_reply_is_written_nowhere(server, api_key, tmp_path):
    """Redaction is on every path, not only on errors: a scored record's rationale is cut too."""
    server.default = Reply.ok(score=8, echo_authorization=True)
    workspace = dialogue_workspace(tmp_path, "talks-19-24.txt")
    cache = CritiqueCache(workspace.root / CACHE_PATH)

    report = run_critique(workspace, llm_critic(server, cache=cache))

    assert report.n_scored and all(r.authorization == f"Bearer {SECRET}" for r in server.completions())
    assert all(SECRET not in r.rationale for r in report.records)
    assert any("[redacted]" in r.rationale for r in report.records if r.is_scored)
    assert not workspace.items()["critic_rationale"].str.contains(SECRET, literal=True).any()
    for path in (p for p in workspace.root.rglob("*") if p.is_file()):
        assert SECRET.encode() not in path.read_bytes(), path


def test_the_timeout_bounds_the_whole_request_not_each_read(server, api_key):
    """A server dripping one byte at a time answers every read in time; the request must still end."""
    server.default = Reply.drip(0.05)  # ~150 bytes: 7 s for the whole reply, each read in 0.05 s
    critic = llm_critic(server, timeout_s=0.5, max_retries=0)
    started = time.monotonic()
    [record] = critic.critique_many([CritiqueInput(LOST, ALIVE)])
    elapsed = time.monotonic() - started
    assert record.reason == "timeout", record
    assert elapsed < 1.5, f"the request took {elapsed:.1f}s under a 0.5s timeout"


def test_a_run_where_every_request_fails_commits_nothing(server, api_key, tmp_path):
    workspace = dialogue_workspace(tmp_path, "talks-19-24.txt")
    run_critique(workspace, llm_critic(server), use_cache=False)
    before_generation, before = workspace.generation, workspace.items()
    assert (before["critic_status"] == "scored").sum() > 0

    server.default = Reply.error(503)
    with pytest.raises(CriticError, match=r"scored none of \d+ pairs \(\d+ server error 5xx\); nothing committed"):
        run_critique(workspace, llm_critic(server), use_cache=False)
    assert workspace.generation == before_generation
    assert workspace.items().equals(before)


def test_a_failed_attempt_keeps_the_earlier_judgement(server, api_key, tmp_path):
    workspace = dialogue_workspace(tmp_path, "talks-19-24.txt")
    run_critique(workspace, llm_critic(server), use_cache=False)
    first = workspace.items().filter(pl.col("critic_status") == "scored")
    failing = first["question"][0][:40]

    server.default = Reply.ok(score=3, rationale="a second opinion")
    server.script(failing, Reply.error(503))
    report = run_critique(workspace, llm_critic(server), use_cache=False)

    assert report.n_kept_earlier == 1
    after = workspace.items().filter(pl.col("critic_status") == "scored")
    kept = after.filter(pl.col("question").str.starts_with(failing))
    assert kept["critic_score"].to_list() == first.filter(pl.col("question").str.starts_with(failing))["critic_score"].to_list()
    assert set(after.filter(~pl.col("question").str.starts_with(failing))["critic_score"].to_list()) == {3.0}


@pytest.mark.parametrize("damage", [b"this is not a database, just bytes" * 100, b""])
def test_a_corrupt_critic_cache_is_one_clear_error(server, api_key, tmp_path, damage):
    workspace = dialogue_workspace(tmp_path, "talks-19-24.txt")
    cache = workspace.root / CACHE_PATH
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(damage or b"SQLite format 3\x00" + b"\xff" * 4000)  # garbage, or a header over garbage
    generation = workspace.generation
    with pytest.raises(CriticError, match=r"critic\.sqlite: the critic cache cannot be used .*move it away"):
        run_critique(workspace, llm_critic(server))
    assert workspace.generation == generation


# ---- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "score", "flags"),
    [
        ('{"score": 8, "rationale": "alive", "flags": ["verbosity"]}', 8.0, ("verbosity",)),
        ('```json\n{"score": "7/10", "rationale": "mostly alive", "flags": []}\n```', 7.0, ()),
        ('Here is my judgement:\n{"score": "6", "rationale": "mixed", "flags": "closure reflex, performing"}\nThanks.', 6.0, ("closure_reflex", "performing_wisdom")),
        ('{"critique": {"score": 3, "rationale": "stale"}}', 3.0, ()),
        ('{"score": "4 out of 5", "rationale": "rescaled"}', 8.0, ()),
        ('{"score": 2.5, "rationale": "x", "flags": {"prescriptive": true, "verbosity": false}}', 2.5, ("prescriptive",)),
        ("Score: 9/10. The answer turns the seeker back; no prescriptive tone.", 9.0, ("prescriptive",)),
        ('{"score": 8, "rationale": "Points back to the one who', 8.0, ()),  # truncated JSON: score salvaged
    ],
)
def test_parse_critique_reads_wrapped_and_sloppy_output(content, score, flags):
    parsed = parse_critique(content)
    assert parsed.score == score
    assert parsed.flags == flags
    assert parsed.rationale


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "junk output"),
        ("lorem ipsum", "junk output"),
        ('{"score": "high", "rationale": "?"}', "junk output"),
        ('{"score": 11, "rationale": "off the scale"}', "junk output"),
        ('{"score": -1, "rationale": "off the scale"}', "junk output"),
        ("I'm sorry, but I can't help with that.", "refusal"),
        ("As an AI, I cannot evaluate spiritual content.", "refusal"),
    ],
)
def test_parse_critique_rejects_junk_and_refusals(content, reason):
    with pytest.raises(CritiqueParseError) as caught:
        parse_critique(content)
    assert caught.value.reason == reason


def test_record_validates_its_fields():
    agent = {"kind": "test", "model": "m", "rubric_version": "v"}
    with pytest.raises(ValueError):
        CritiqueRecord(11.0, "x", (), agent)
    with pytest.raises(ValueError):
        CritiqueRecord(5.0, "x", ("no_such_flag",), agent)
    with pytest.raises(ValueError):
        CritiqueRecord(None, "x", (), agent, status="unscored")  # no reason
    record = CritiqueRecord(5.0, "x", ("verbosity", "closure_reflex"), agent)
    assert record.flags == ("closure_reflex", "verbosity")
    assert CritiqueRecord.from_dict(record.to_dict()) == record


# ---- offline critic ---------------------------------------------------------------------


def test_offline_critic_ranks_turning_back_above_tips_and_names_its_signals():
    critic = OfflineCritic()
    alive = critic.critique(LOST, ALIVE)
    tips = critic.critique(LOST, TIPS)

    assert alive.score > tips.score
    assert alive.score >= 7 and tips.score <= 2
    assert "turns the question back (+2.0)" in alive.rationale
    assert "brief" in alive.rationale
    assert "advice list of 5 items (-2.0)" in tips.rationale
    assert '"I hope this helps"' in tips.rationale
    assert set(tips.flags) >= {"prescriptive", "closure_reflex"}
    assert alive.flags == ()
    assert alive.agent["kind"] == "offline" and alive.agent["config"]["turns_back"] == 2.0
    assert critic.critique(LOST, TIPS) == tips  # deterministic


def test_offline_critic_weighs_in_the_concept_score():
    critic = OfflineCritic()
    low = critic.critique(LOST, ALIVE, concept_score=0.1)
    high = critic.critique(LOST, ALIVE, concept_score=0.91)
    assert high.score > low.score
    assert "concept score 0.91 (+2.7)" in high.rationale
    assert "no concept score" in critic.critique(LOST, ALIVE).rationale


# A long answer that does not loop (one sentence repeated 25 times is a repetition loop: critic/degenerate.py).
LONG_LECTURE = " ".join((Path(__file__).parent / "data" / "prose-talks-foreword.txt").read_text(encoding="utf-8").split()[:200])


@pytest.mark.parametrize(
    ("answer", "flag"),
    [
        (
            "Feeling lost in your practice is completely normal, and you're not alone. Don't worry, it will pass.",
            "closure_reflex",
        ),
        (
            "Beloved, the journey is the destination. Embrace the sacred unfolding of your divine soul; "
            "the universe is guiding your beautiful awakening.",
            "performing_wisdom",
        ),
        (
            "Feeling lost in your practice happens; you should practice more and try to find your way.",
            "mirroring_frame",
        ),
        (LONG_LECTURE, "verbosity"),
    ],
)
def test_offline_critic_flags(answer, flag):
    record = OfflineCritic().critique(LOST, answer)
    assert flag in record.flags, record.rationale
    assert record.score < OfflineCritic().critique(LOST, ALIVE).score


def test_offline_critic_prefers_ramana_over_a_chatbot_on_the_same_question():
    question = 'What does Bhagavan think of the "lost soul" mentioned by Jesus Christ?'
    ramana = (
        "Think what there is to be lost. Is there anything to lose? What matters is only that which is natural. "
        "That which is born must die; that which is acquired must be lost. Were you born? You are ever existent. "
        "The Self can never be lost."
    )
    chatbot = (
        "Great question! The lost soul is a beautiful metaphor. It's important to remember that you're not alone. "
        "I recommend reading the parable and journaling about it. I hope this helps!"
    )
    critic = OfflineCritic()
    assert critic.critique(question, ramana).score > critic.critique(question, chatbot).score + 3


def test_critique_many_accepts_tuples_dicts_and_inputs():
    records = OfflineCritic().critique_many(
        [(LOST, ALIVE), {"question": LOST, "answer": TIPS}, CritiqueInput(LOST, ALIVE, 0.5)]
    )
    assert [r.status for r in records] == ["scored"] * 3
    assert records[0].score > records[1].score


# ---- settings ---------------------------------------------------------------------------


def test_offline_critic_is_the_default_without_an_endpoint():
    assert isinstance(critic_from_settings(environ={}), OfflineCritic)


def test_endpoint_from_environment_and_model_from_the_server(server):
    critic = critic_from_settings(environ={"SATSANG_CRITIC_BASE_URL": server.base_url, "SATSANG_CRITIC_CONCURRENCY": "2"})
    assert isinstance(critic, LLMCritic)
    assert critic.config.model == MODEL  # asked GET /v1/models
    assert critic.config.concurrency == 2
    assert any(r.path == "/v1/models" for r in server.requests)


def test_config_and_agent_hold_no_key_and_no_url_credentials(api_key):
    config = LLMCriticConfig(base_url="https://user:pw@api.example.com/v1?key=abc", model="m")
    critic = LLMCritic(config)
    assert SECRET not in repr(config) + repr(critic) + json.dumps(critic.agent)
    assert critic.agent["config"]["base_url"] == "https://api.example.com/v1"
    assert "pw" not in json.dumps(config.identity())


# ---- the stage on a real workspace ------------------------------------------------------


def test_run_critique_offline_adds_columns_and_leaves_text_untouched(tmp_path):
    workspace = dialogue_workspace(tmp_path, "talks-excerpt.txt", prose="prose-nan-yar.txt")
    before = workspace.items()

    report = run_critique(workspace, OfflineCritic())
    after = workspace.items()

    assert set(CRITIC_COLUMNS) <= set(after.columns)
    assert after.schema["critic_flags"] == pl.List(pl.String)
    assert after.schema["critic_score"] == pl.Float64
    assert after.select(before.columns).equals(before)  # every original column, text included, unchanged

    pairs = after.filter(pl.col("kind") == "pair")
    passages = after.filter(pl.col("kind") == "passage")
    assert passages.height > 0 and passages["critic_status"].is_null().all()
    assert report.n_passages_skipped == passages.height
    assert report.n_pairs == pairs.height
    silent = pairs.filter(pl.col("is_silence"))
    assert silent.height == 2
    assert silent["critic_status"].to_list() == ["unscored"] * 2
    assert silent["critic_unscored_reason"].to_list() == ["silence"] * 2
    scored = pairs.filter(pl.col("critic_status") == "scored")
    assert scored["critic_score"].is_between(0, 10).all()
    assert (scored["critic_unscored_reason"] == "").all()
    assert json.loads(scored["critic_agent"][0])["kind"] == "offline"
    assert sum(report.histogram) == report.n_scored == scored.height
    assert report.unscored_by_reason == {"silence": 2}
    assert all(set(flags) <= set(FLAGS) for flags in pairs["critic_flags"].drop_nulls().to_list())

    # A re-run replaces the columns rather than adding a second set.
    run_critique(workspace, OfflineCritic())
    assert workspace.items().columns == after.columns
    assert workspace.status().items_per_stage()["critiqued"] == scored.height

    console = Console(record=True, width=100)
    console.print(render_critique_report(report))
    text = console.export_text()
    assert "unscored" in text and "silence" in text and "passages skipped" in text


def test_run_critique_with_llm_uses_the_workspace_cache_on_a_rerun(server, api_key, tmp_path):
    workspace = dialogue_workspace(tmp_path, "talks-19-24.txt")
    n_pairs = workspace.items().filter(pl.col("kind") == "pair").height
    server.script("Solitude is in the mind", Reply.slow(2.0))

    first = run_critique(workspace, llm_critic(server, timeout_s=0.5, max_retries=0))
    assert (workspace.root / CACHE_PATH).is_file()
    assert first.n_scored == n_pairs - 1
    assert first.unscored_by_reason == {"timeout": 1}
    assert first.n_requests == n_pairs

    requests_before = len(server.completions())
    second = run_critique(workspace, llm_critic(server, timeout_s=0.5, max_retries=0))
    assert len(server.completions()) - requests_before == 1  # only the item that timed out is asked again
    assert second.n_cache_hits == n_pairs - 1 and second.n_requests == 1
    items = workspace.items()
    assert items.filter(pl.col("critic_status") == "unscored")["critic_unscored_reason"].to_list() == ["timeout"]
    assert json.loads(items["critic_agent"][0])["model"] == MODEL
