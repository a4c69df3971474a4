"""The critique stage: judge every pair in a workspace and commit the judgements as item columns.

Columns added (replaced on a re-run; null on passages, which are not judged):

    critic_score            Float64       0-10; null when unscored
    critic_rationale        String        why that score (for unscored: what went wrong)
    critic_flags            List(String)  subset of critic.base.FLAGS
    critic_status           String        "scored" | "unscored"
    critic_unscored_reason  String        "" when scored; else e.g. "timeout", "refusal", "silence"
    critic_agent            String        JSON: {"kind", "model", "rubric_version", "config"}

Silence: a pair whose answer is silence (the book's "(No answer.)") is not sent to
any critic. In this tradition silence is often the most alive answer there is,
but a text critic has no words to judge, and a number invented for it would
train the model on a guess. It is marked unscored with reason "silence", so the
curator decides, and the summary counts it.

Settings (environment, or the arguments of `critic_from_settings`):

    SATSANG_CRITIC_BASE_URL     OpenAI-compatible endpoint; unset means the offline critic
    SATSANG_CRITIC_MODEL        model name; unset means the endpoint's first listed model
    SATSANG_CRITIC_API_KEY      the key (OPENAI_API_KEY is tried when unset); never recorded
    SATSANG_CRITIC_CONCURRENCY  requests in flight (default 4)
    SATSANG_CRITIC_TIMEOUT_S    seconds per request (default 60)

Run as (library):

    from critic.stage import critic_from_settings, run_critique
    report = run_critique(Workspace.open("satsang-workspace"), critic_from_settings(), progress=print)

`satsang critique` shows the report with satsang.render.stages.render_critique_report and
draws the progress bar; this module only calls `progress(done, total)`.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from critic.base import (
    ATTEMPT_FAILURES,
    FLAGS,
    REASON_EMPTY,
    REASON_SILENCE,
    Critic,
    CriticError,
    CritiqueInput,
    CritiqueProgress,
    CritiqueRecord,
)
from critic.llm import API_KEY_ENV, FALLBACK_API_KEY_ENV, NO_KEY, CritiqueCache, LLMCritic, LLMCriticConfig
from curation.redaction import endpoint_name
from curation.schema import CRITIC_COLUMNS  # the columns this stage adds, with their types
from critic.offline import OfflineCritic

if TYPE_CHECKING:
    import polars as pl

    from curation.workspace import Workspace

BASE_URL_ENV = "SATSANG_CRITIC_BASE_URL"
MODEL_ENV = "SATSANG_CRITIC_MODEL"
CONCURRENCY_ENV = "SATSANG_CRITIC_CONCURRENCY"
TIMEOUT_ENV = "SATSANG_CRITIC_TIMEOUT_S"

# Inside the workspace directory; the workspace's own sweep leaves this folder alone.
CACHE_PATH = "cache/critic.sqlite"

DEFAULT_CONCEPT_COLUMN = "concept_score"



class CriticSettingsError(CriticError, ValueError):
    """The critic settings do not make a usable critic (e.g. no model and the endpoint lists none)."""


def critic_from_settings(
    base_url: str | None = None,
    model: str | None = None,
    *,
    concurrency: int | None = None,
    timeout_s: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> Critic:
    """The LLM critic when an endpoint is given (argument or $SATSANG_CRITIC_BASE_URL), else the offline one.

    With an endpoint but no model, asks the endpoint for its models and takes the
    first (a vLLM server serves one).
    """
    env = os.environ if environ is None else environ
    base_url = base_url or env.get(BASE_URL_ENV) or None
    if base_url is None:
        return OfflineCritic()
    settings: dict[str, Any] = {}
    concurrency = concurrency if concurrency is not None else _env_number(env, CONCURRENCY_ENV, int)
    timeout_s = timeout_s if timeout_s is not None else _env_number(env, TIMEOUT_ENV, float)
    if concurrency is not None:
        settings["concurrency"] = concurrency
    if timeout_s is not None:
        settings["timeout_s"] = timeout_s
    model = model or env.get(MODEL_ENV) or _first_served_model(base_url, timeout_s or 30.0, env)
    try:
        return LLMCritic(LLMCriticConfig(base_url=base_url, model=model, **settings))
    except ValueError as error:
        raise CriticSettingsError(str(error)) from None


def _env_number(env: Mapping[str, str], name: str, kind: type) -> Any:
    raw = env.get(name)
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise CriticSettingsError(f"${name} must be a number, not {raw!r}") from None


def _first_served_model(base_url: str, timeout_s: float, env: Mapping[str, str]) -> str:
    import openai

    api_key = env.get(API_KEY_ENV) or env.get(FALLBACK_API_KEY_ENV) or NO_KEY
    where = endpoint_name(base_url)
    try:
        with openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=1) as client:
            models = [model.id for model in client.models.list()]
    except openai.APIError as error:
        kind = type(error).__name__
        raise CriticSettingsError(f"no model given and {where} did not list its models ({kind}); set ${MODEL_ENV}") from None
    if not models:
        raise CriticSettingsError(f"no model given and {where} lists none; set ${MODEL_ENV}")
    return models[0]


@dataclass(frozen=True)
class CritiqueReport:
    """What one critique run did: counts, the score histogram, unscored items by reason."""

    agent: dict[str, Any]
    n_pairs: int  # pairs in the workspace, silence included
    n_scored: int
    histogram: tuple[int, ...]  # 11 bins: scores in [k, k+1) for k = 0..9, and exactly 10
    unscored_by_reason: dict[str, int]
    flag_counts: dict[str, int]
    n_passages_skipped: int
    generation: int | None  # the generation committed; None when there was nothing to commit
    n_requests: int | None = None  # LLM critic: HTTP attempts made (retries included)
    n_cache_hits: int | None = None
    mean_score: float | None = None
    records: tuple[CritiqueRecord, ...] = field(default=(), repr=False)
    n_kept_earlier: int = 0  # pairs whose attempt failed this run and that kept their earlier judgement

    @property
    def n_unscored(self) -> int:
        return sum(self.unscored_by_reason.values())


def run_critique(
    workspace: Workspace,
    critic: Critic,
    progress: CritiqueProgress | None = None,
    concept_column: str | None = DEFAULT_CONCEPT_COLUMN,
    use_cache: bool = True,
) -> CritiqueReport:
    """Judge every pair in the workspace and commit the critic columns in one new generation, part by part.

    Passages are skipped (their critic columns stay null); silent answers are
    marked unscored, reason "silence" (see the module docstring). The concept score
    is read from `concept_column` when the items have it (0-1; the offline critic
    weighs it in, the LLM critic does not see it). An LLM critic with no cache of
    its own gets the workspace's (cache/critic.sqlite), so a re-run costs no requests.
    Text columns are never touched. `progress(done, total)` is called as answers are judged.
    """
    import polars as pl

    if use_cache and isinstance(critic, LLMCritic) and critic.cache is None:
        critic = critic.with_cache(CritiqueCache(workspace.root / CACHE_PATH))

    # Only the pairs' columns that are needed are read (passages are never judged), a part at a time.
    scan = workspace.scan_items()
    wanted = ["item_id", "content_hash", "question", "answer", "is_silence", *CRITIC_COLUMNS, concept_column]
    pairs = (scan.filter(pl.col("kind") == "pair")
             .select([name for name in wanted if name in scan.collect_schema().names()]).collect())
    n_passages = scan.select(pl.len()).collect().item() - pairs.height
    has_concept = concept_column is not None and concept_column in pairs.columns
    concepts = pairs[concept_column].cast(pl.Float64, strict=False).to_list() if has_concept else [None] * pairs.height

    agent = critic.agent
    records: list[CritiqueRecord | None] = [None] * pairs.height
    to_judge: list[int] = []
    inputs: list[CritiqueInput] = []
    for index, row in enumerate(pairs.select("question", "answer", "is_silence").iter_rows(named=True)):
        answer = row["answer"] or ""
        if row["is_silence"]:
            records[index] = CritiqueRecord.unscored(
                REASON_SILENCE, "the answer is silence: no words for a text critic to judge; the curator decides", agent
            )
        elif not answer.strip():
            records[index] = CritiqueRecord.unscored(REASON_EMPTY, "the answer has no words to judge", agent)
        else:
            to_judge.append(index)
            inputs.append(CritiqueInput(row["question"] or "", answer, concepts[index]))

    requests_before = getattr(critic, "requests_made", None)
    hits_before = getattr(critic, "cache_hits", None)
    judged = critic.critique_many(inputs, progress=progress or None)  # False (no callback) reads as None
    counters = (
        (critic.requests_made - requests_before, critic.cache_hits - hits_before)
        if isinstance(critic, LLMCritic) and requests_before is not None and hits_before is not None
        else (None, None)
    )
    for index, record in zip(to_judge, judged):
        records[index] = record
    final: list[CritiqueRecord] = [record for record in records if record is not None]
    if judged and not any(record.is_scored for record in judged):
        # An endpoint that failed every request says nothing about the pairs: commit nothing.
        failures = Counter(record.reason for record in judged)
        summary = ", ".join(f"{n} {reason}" for reason, n in failures.most_common())
        raise CriticError(
            f"{workspace.root}: the critic scored none of {len(judged)} pairs ({summary});"
            " nothing committed, earlier judgements stand"
        )
    previous = _scored_before(pairs)
    n_kept = 0

    generation = None
    if pairs.height:
        results = pl.DataFrame(
            {
                "item_id": pairs["item_id"],
                "content_hash": pairs["content_hash"],
                "critic_score": [r.score for r in final],
                "critic_rationale": [r.rationale for r in final],
                "critic_flags": [list(r.flags) for r in final],
                "critic_status": [r.status for r in final],
                "critic_unscored_reason": [r.reason for r in final],
                "critic_agent": [json.dumps(dict(r.agent), sort_keys=True) for r in final],
            },
            schema={"item_id": pl.String, "content_hash": pl.String, **CRITIC_COLUMNS},
        ).unique(subset=["item_id", "content_hash"], keep="first", maintain_order=True)
        results, n_kept = _keep_earlier_judgements(results, previous)
        generation = workspace.map_items(lambda current, _part: _with_critic_columns(current, results))

    return _report(critic, final, n_passages, generation, *counters, n_kept_earlier=n_kept)


def _scored_before(pairs: pl.DataFrame) -> pl.DataFrame:
    """The pairs' standing scored judgements, by (item_id, content_hash): what a failed attempt must not erase."""
    import polars as pl

    if "critic_status" not in pairs.columns:
        return pl.DataFrame(schema={"item_id": pl.String, "content_hash": pl.String})
    return (
        pairs.filter(pl.col("critic_status") == "scored")
        .select("item_id", "content_hash", *CRITIC_COLUMNS)
        .unique(subset=["item_id", "content_hash"], keep="first", maintain_order=True)
    )


def _keep_earlier_judgements(results: pl.DataFrame, previous: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """This run's results, where an attempt failed on a pair already judged: that judgement instead."""
    import polars as pl

    if previous.height == 0:
        return results, 0
    earlier = previous.rename({name: f"earlier_{name}" for name in CRITIC_COLUMNS})
    joined = results.join(earlier, on=["item_id", "content_hash"], how="left", maintain_order="left")
    keep = (pl.col("critic_unscored_reason").is_in(list(ATTEMPT_FAILURES)) & pl.col("earlier_critic_status").is_not_null())
    kept = joined.with_columns(
        [pl.when(keep).then(pl.col(f"earlier_{name}")).otherwise(pl.col(name)).alias(name) for name in CRITIC_COLUMNS]
    ).select(results.columns)
    return kept, int(joined.select(keep.sum()).item())


def _with_critic_columns(items: pl.DataFrame, results: pl.DataFrame) -> pl.DataFrame:
    """Items with this run's critic columns joined on (item_id, content_hash), order kept.

    Joined on both keys rather than by position: items ingested while the critic ran
    simply get nulls, and a pair whose words changed is not given a stale judgement.
    """
    base = items.drop([name for name in CRITIC_COLUMNS if name in items.columns])
    return base.join(results, on=["item_id", "content_hash"], how="left", maintain_order="left")


def _report(
    critic: Critic,
    records: list[CritiqueRecord],
    n_passages: int,
    generation: int | None,
    n_requests: int | None,
    n_cache_hits: int | None,
    n_kept_earlier: int = 0,
) -> CritiqueReport:
    histogram = [0] * 11
    scores = []
    for record in records:
        if record.score is not None:
            scores.append(record.score)
            histogram[min(10, int(math.floor(record.score)))] += 1
    unscored = Counter(record.reason for record in records if not record.is_scored)
    flags = Counter(flag for record in records for flag in record.flags)
    return CritiqueReport(
        agent=critic.agent,
        n_pairs=len(records),
        n_scored=len(scores),
        histogram=tuple(histogram),
        unscored_by_reason=dict(sorted(unscored.items(), key=lambda kv: (-kv[1], kv[0]))),
        flag_counts={flag: flags[flag] for flag in FLAGS if flags[flag]},
        n_passages_skipped=n_passages,
        generation=generation,
        n_requests=n_requests,
        n_cache_hits=n_cache_hits,
        mean_score=round(sum(scores) / len(scores), 2) if scores else None,
        records=tuple(records),
        n_kept_earlier=n_kept_earlier,
    )
