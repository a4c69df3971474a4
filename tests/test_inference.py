"""Inference: generation from a trained tiny checkpoint, the critic loop, evaluation.

The checkpoint is real: a tiny Phi model (training/tiny.py) with a LoRA adapter
trained here for 60 steps on question/answer text from the bundled sample, in the
plain prompt format (Instruct:/Output:), until it answers "I feel lost in my practice." with "Who is
it that feels lost?". It is built once per session and shared with test_server.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from critic.base import Critic, CritiqueRecord, agent_dict
from critic.offline import OfflineCritic
from inference.eval import DEFAULT_PROMPTS, MARKERS, EvalError, closure_markers, evaluate, load_prompts
from inference.generate import (
    PLAIN_CHAT_TEMPLATE,
    GenerationConfig,
    GenerationError,
    LocalGenerator,
    PromptTooLong,
    format_prompt,
    quantization_problem,
)
from inference.loop import OUTCOME_ACCEPTED, OUTCOME_FALLBACK_SILENCE, OUTCOME_MODEL_SILENCE, ContemplativeGenerator, LoopSettings, is_silence
from satsang.render.inference import render_eval_report

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "satsang" / "samples" / "talks-sample.txt"
QUESTION = "I feel lost in my practice."
LEARNED_ANSWER = "Who is it that feels lost?"
GREEDY = GenerationConfig(temperature=0.0, max_new_tokens=24)


def ensure_trained_checkpoint(root: Path) -> Path:
    """Build (once) root/base, a tiny Phi model, and root/checkpoint, a LoRA adapter trained on it.

    The checkpoint directory is what the training issue writes: adapter_config.json naming
    the base, adapter_model.safetensors, the tokenizer, and satsang_lineage.json.
    """
    checkpoint = root / "checkpoint"
    if (checkpoint / "satsang_lineage.json").is_file():
        return checkpoint
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curation.dialogue import parse_dialogue
    from training.lineage import write_lineage
    from training.tiny import build_tiny_phi

    text = SAMPLE.read_text(encoding="utf-8")
    base = build_tiny_phi(root / "base", [text])
    tokenizer = AutoTokenizer.from_pretrained(base)
    pairs = [(i["question"], i["answer"]) for i in parse_dialogue(text, "sample").items if i["kind"] == "pair" and 0 < len(i["answer"]) < 300]
    conversations = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in [(QUESTION, LEARNED_ANSWER)] * 8 + pairs[:24]]
    # The same template the generator prompts with, so the training text and the prompt agree.
    texts = [tokenizer.apply_chat_template(c, chat_template=PLAIN_CHAT_TEMPLATE, tokenize=False) for c in conversations]

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"])
    model = get_peft_model(model, lora)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    order = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(60):
        batch = tokenizer([texts[i] for i in torch.randint(len(texts), (8,), generator=order)], return_tensors="pt", padding=True, truncation=True, max_length=128)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    write_lineage(checkpoint, {"format": 1, "stage": "sft", "base_model": {"id": str(base), "path": str(base)}, "hyperparameters": {"steps": 60, "lr": 1e-2, "lora_r": 16}, "parent": None})
    return checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_trained_checkpoint(tmp_path_factory.getbasetemp() / "inference-tiny")


@pytest.fixture(scope="module")
def generator(checkpoint: Path) -> LocalGenerator:
    return LocalGenerator(checkpoint)


class RuleCritic(Critic):
    """A deterministic critic: an answer that asks something back scores `asks`, anything else `otherwise`."""

    kind = "rule"

    def __init__(self, asks: float, otherwise: float):
        self.asks = asks
        self.otherwise = otherwise
        self.seen: list[tuple[str, str]] = []

    @property
    def agent(self) -> dict:
        return agent_dict("rule", "asks-back", {"asks": self.asks, "otherwise": self.otherwise})

    def critique(self, question: str, answer: str, concept_score: float | None = None) -> CritiqueRecord:
        self.seen.append((question, answer))
        asks = answer.rstrip().endswith("?")
        score = self.asks if asks else self.otherwise
        return CritiqueRecord(score, "asks the questioner back" if asks else "does not ask back", () if asks else ("closure_reflex",), self.agent)


class BrokenCritic(Critic):
    kind = "broken"

    @property
    def agent(self) -> dict:
        return agent_dict("broken", "raises")

    def critique(self, question: str, answer: str, concept_score: float | None = None) -> CritiqueRecord:
        raise ConnectionError("critic endpoint unreachable")


class ScriptedGenerator:
    """Answers from a list in order: for the loop's rules about silence, which the tiny model cannot be made to say on cue."""

    def __init__(self, answers: list[str]):
        self.name = "scripted"
        self.answers = list(answers)
        self.configs: list[GenerationConfig] = []

    def generate(self, prompt, config: GenerationConfig) -> str:
        self.configs.append(config)
        return self.answers[min(len(self.configs) - 1, len(self.answers) - 1)]


# ---- generation ---------------------------------------------------------------------------


def test_trained_checkpoint_answers_what_it_learned(generator: LocalGenerator, checkpoint: Path) -> None:
    completion = generator.complete(QUESTION, GREEDY)
    assert completion.text == LEARNED_ANSWER
    assert completion.finish_reason == "stop"
    assert 0 < completion.completion_tokens < GREEDY.max_new_tokens
    assert generator.lineage["hyperparameters"]["steps"] == 60
    assert generator.name == "checkpoint"

    # The adapter is what learned it: the base model alone says something else.
    base = LocalGenerator(checkpoint.parent / "base")
    assert base.generate(QUESTION, GREEDY) != LEARNED_ANSWER


def test_messages_and_a_string_prompt_are_the_same_prompt(generator: LocalGenerator) -> None:
    as_messages = generator.generate([{"role": "user", "content": QUESTION}], GREEDY)
    assert as_messages == generator.generate(QUESTION, GREEDY) == LEARNED_ANSWER


def test_seeded_sampling_is_reproducible_and_streaming_joins_to_the_same_text(generator: LocalGenerator) -> None:
    config = GenerationConfig(temperature=1.0, top_p=0.95, max_new_tokens=30, seed=7)
    first = generator.generate("What is the Self?", config)
    assert first == generator.generate("What is the Self?", config)
    assert first != generator.generate("What is the Self?", GenerationConfig(temperature=1.0, top_p=0.95, max_new_tokens=30, seed=8))
    pieces = list(generator.stream("What is the Self?", config))
    assert len(pieces) > 1
    assert "".join(pieces) == first
    assert "".join(generator.stream(QUESTION, GREEDY)) == LEARNED_ANSWER


def test_a_stream_closed_early_frees_the_model(generator: LocalGenerator) -> None:
    stream = generator.stream("What is the Self?", GenerationConfig(temperature=1.0, max_new_tokens=200, seed=1))
    next(stream)
    stream.close()
    assert generator.generate(QUESTION, GREEDY) == LEARNED_ANSWER  # the lock was released


def test_merged_adapter_gives_the_same_text(checkpoint: Path, generator: LocalGenerator) -> None:
    merged = LocalGenerator(checkpoint, merge=True)
    assert type(merged.model).__name__ == "PhiForCausalLM"  # no PEFT wrapper left
    assert merged.generate(QUESTION, GREEDY) == LEARNED_ANSWER
    config = GenerationConfig(temperature=0.8, max_new_tokens=20, seed=3)
    assert merged.generate("How to overcome the mental habits?", config) == generator.generate("How to overcome the mental habits?", config)


def test_plain_prompt_format_and_stop_at_the_next_question(generator: LocalGenerator) -> None:
    text, stops = format_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who am I?"}], generator.tokenizer)
    assert text == "Be brief.\n\nInstruct: Who am I?\nOutput:"
    assert stops == ("\nInstruct:",)
    multi = [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "B."}, {"role": "user", "content": "C?"}]
    assert format_prompt(multi, generator.tokenizer)[0] == "Instruct: A?\nOutput: B.<|endoftext|>Instruct: C?\nOutput:"
    # A user stop string ends the answer before it.
    assert generator.generate(QUESTION, GenerationConfig(temperature=0.0, max_new_tokens=24, stop=(" that",))) == "Who is it"


def test_a_tokenizer_with_a_chat_template_is_prompted_with_it(generator: LocalGenerator) -> None:
    tokenizer = generator.tokenizer
    saved = tokenizer.chat_template
    try:
        tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
        assert format_prompt([{"role": "user", "content": "Hi"}], tokenizer) == ("<user>Hi<assistant>", ())
    finally:
        tokenizer.chat_template = saved


def test_bad_prompts_and_settings_are_refused(generator: LocalGenerator, tmp_path: Path) -> None:
    with pytest.raises(PromptTooLong, match="context of 512 tokens"):
        generator.generate("why " * 600, GREEDY)
    with pytest.raises(ValueError, match="role"):
        generator.generate([{"role": "wizard", "content": "x"}], GREEDY)
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(top_p=0)
    with pytest.raises(GenerationError, match="no checkpoint directory"):
        LocalGenerator(tmp_path / "missing")


def test_quantized_loading_without_bitsandbytes_or_a_gpu_says_what_is_missing(checkpoint: Path) -> None:
    problem = quantization_problem(load_in_4bit=True, load_in_8bit=False)
    if problem is None:
        pytest.skip("bitsandbytes and a CUDA GPU are both present here")
    with pytest.raises(GenerationError) as raised:
        LocalGenerator(checkpoint, load_in_4bit=True)
    message = str(raised.value)
    assert message.startswith("4-bit loading needs bitsandbytes and a CUDA GPU")
    assert ("bitsandbytes is not installed" in message) or ("no CUDA GPU" in message)
    with pytest.raises(GenerationError, match="8-bit"):
        LocalGenerator(checkpoint, load_in_8bit=True)
    assert quantization_problem(True, True) == "choose 4-bit or 8-bit loading, not both"


# ---- the critic loop ----------------------------------------------------------------------


def test_loop_regenerates_warmer_then_falls_silent_when_nothing_passes(generator: LocalGenerator) -> None:
    # The offline critic gives "Who is it that feels lost?" 8.5; a threshold of 10 is passed by nothing it says.
    loop = ContemplativeGenerator(generator, OfflineCritic(), threshold=10.0, max_attempts=3, config=GenerationConfig(max_new_tokens=24, seed=0))
    result = loop.respond(QUESTION)
    assert result.silent and result.response == ""
    assert result.chosen_index is None and result.outcome == OUTCOME_FALLBACK_SILENCE
    assert [a.temperature for a in result.attempts] == [0.7, 0.9, 1.1]
    assert [a.seed for a in result.attempts] == [0, 1, 2]
    for attempt in result.attempts:
        assert attempt.text and attempt.status == "scored"
        assert attempt.score is not None and attempt.score < 10.0
        assert attempt.rationale.startswith(("base 3.0", "degenerate output: "))  # why, in the offline critic's words
    # Reproducible: the same seed gives the same attempts.
    assert loop.respond(QUESTION).attempts == result.attempts
    assert loop.generate(QUESTION) == ""
    json.dumps(result.to_dict())


def test_loop_takes_the_first_attempt_that_passes(generator: LocalGenerator) -> None:
    critic = RuleCritic(asks=9.0, otherwise=2.0)
    loop = ContemplativeGenerator(generator, critic, threshold=7.0, max_attempts=3, temperatures=(0.0, 1.0))
    result = loop.respond(QUESTION)
    assert result.outcome == OUTCOME_ACCEPTED and not result.silent
    assert result.response == LEARNED_ANSWER and result.chosen_index == 0 and len(result.attempts) == 1
    assert result.score == 9.0 and result.chosen.rationale == "asks the questioner back"
    assert critic.seen == [(QUESTION, LEARNED_ANSWER)]


def test_loop_with_a_rule_that_nothing_meets_tries_max_attempts(generator: LocalGenerator) -> None:
    critic = RuleCritic(asks=3.0, otherwise=1.0)
    loop = ContemplativeGenerator(generator, critic, threshold=5.0, max_attempts=4, temperatures=(0.5, 1.0), config=GenerationConfig(max_new_tokens=16, seed=5))
    result = loop.respond(QUESTION)
    assert result.silent and len(result.attempts) == 4 == len(critic.seen)
    assert [a.temperature for a in result.attempts] == [0.5, 1.0, 1.0, 1.0]  # the last temperature repeats
    assert all(a.score in (1.0, 3.0) for a in result.attempts)


def test_a_critic_that_fails_counts_as_below_threshold(generator: LocalGenerator) -> None:
    loop = ContemplativeGenerator(generator, BrokenCritic(), threshold=0.0, max_attempts=2, temperatures=(0.0,))
    result = loop.respond(QUESTION)
    assert result.silent and result.outcome == OUTCOME_FALLBACK_SILENCE
    assert all(a.status == "unscored" and a.reason == "critic error" and "ConnectionError" in a.rationale for a in result.attempts)
    assert all(a.text == LEARNED_ANSWER for a in result.attempts)


def test_the_models_own_silence_is_accepted_without_asking_the_critic() -> None:
    critic = RuleCritic(asks=9.0, otherwise=9.0)
    result = ContemplativeGenerator(ScriptedGenerator(["(Silence.)"]), critic).respond(QUESTION)
    assert result.silent and result.outcome == OUTCOME_MODEL_SILENCE and result.chosen_index == 0
    assert result.attempts[0].reason == "silence" and critic.seen == []

    scripted = ScriptedGenerator(["", "Who asks?"])
    result = ContemplativeGenerator(scripted, critic, accept_model_silence=False).respond(QUESTION)
    assert result.response == "Who asks?" and result.chosen_index == 1
    assert [c.temperature for c in scripted.configs] == [0.7, 0.9]


def test_silence_markers() -> None:
    for text in ("", "  ", "...", "…", "(Silence.)", "[silence]", "(No answer.)", "Silence"):
        assert is_silence(text), text
    for text in ("Who?", "Silence is golden.", "No."):
        assert not is_silence(text), text


def test_loop_settings_are_validated(generator: LocalGenerator) -> None:
    with pytest.raises(ValueError, match="threshold"):
        ContemplativeGenerator(generator, OfflineCritic(), threshold=11)
    with pytest.raises(ValueError, match="max_attempts"):
        ContemplativeGenerator(generator, OfflineCritic(), max_attempts=0)
    with pytest.raises(ValueError, match="temperature"):
        ContemplativeGenerator(generator, OfflineCritic(), temperatures=(0.7, 9.0))


# ---- evaluation ---------------------------------------------------------------------------


def test_bundled_prompt_set() -> None:
    prompts = load_prompts()
    assert len(prompts) >= 40
    assert len({p.id for p in prompts}) == len(prompts)
    assert {"practice", "emotional", "existential", "philosophical", "practical", "provocative"} <= {p.category for p in prompts}
    assert prompts[0].question == QUESTION
    assert DEFAULT_PROMPTS.is_file()


def test_bad_prompt_files_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "Who am I?"}\n{"id": 3}\n', encoding="utf-8")
    with pytest.raises(EvalError, match=r"p\.jsonl:2: .*question"):
        load_prompts(path)
    path.write_text('{"question": "A?"}\nnot json\n', encoding="utf-8")
    with pytest.raises(EvalError, match=r"p\.jsonl:2: not JSON"):
        load_prompts(path)


def test_closure_markers_use_the_offline_detectors() -> None:
    stale = (
        "It's completely normal to feel this way. You should try to meditate daily. Here are some tips:\n"
        "1. Sit quietly\n2. Breathe deeply\n3. Be gentle with yourself\nWould you like more tips?"
    )
    assert set(closure_markers(stale, QUESTION)) == {"advice_list", "you_should", "prescriptive", "reassurance", "service_question"}
    assert closure_markers(LEARNED_ANSWER, QUESTION) == ("turns_back",)
    jargon = "Your sacred journey is unfolding beautifully; embrace the divine energy of the universe."
    assert "performing_wisdom" in closure_markers(jargon, QUESTION)
    assert set(MARKERS) >= {"advice_list", "you_should", "reassurance"}


def test_evaluate_two_checkpoints_side_by_side(checkpoint: Path, generator: LocalGenerator, tmp_path: Path) -> None:
    from rich.console import Console

    prompts = load_prompts()[:5]
    base = LocalGenerator(checkpoint.parent / "base")
    progress: list[tuple[str, int, int]] = []
    report = evaluate({"trained": generator, "base": base}, prompts, OfflineCritic(), GenerationConfig(temperature=0.7, max_new_tokens=24, seed=0), progress=lambda *p: progress.append(p))
    assert list(report.summaries) == ["trained", "base"]
    assert progress[-1] == ("base", 5, 5)
    trained = report.summaries["trained"]
    assert trained.n_prompts == 5 == len(report.samples["trained"])
    assert trained.n_scored + trained.n_silent + trained.n_unscored == 5
    assert sum(trained.histogram) == trained.n_scored == sum(trained.bands.values())
    first = report.samples["trained"][0]
    assert first.question == QUESTION and first.rationale.startswith(("base 3.0", "degenerate output: ")) and first.score is not None
    assert trained.mean_words is not None and trained.mean_words > 0
    assert set(trained.marker_counts) == set(MARKERS)

    console = Console(width=160, record=True)
    console.print(render_eval_report(report))
    rendered = console.export_text()
    assert "trained" in rendered and "base" in rendered
    for label in ("silence rate", "mean length (words)", "critic score: mean", "advice list", "reassurance"):
        assert label in rendered

    paths = report.write(tmp_path / "eval")
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(paths["summary"].read_text())
    assert set(summary["models"]) == {"trained", "base"} and summary["config"]["n_prompts"] == 5
    assert len(paths["samples"].read_text().splitlines()) == 10


def test_evaluate_through_the_loop_counts_fallback_silence(generator: LocalGenerator) -> None:
    report = evaluate(
        {"trained": generator}, [QUESTION, "Who am I?"], OfflineCritic(), GenerationConfig(max_new_tokens=16, seed=0), loop=LoopSettings(threshold=10.0, max_attempts=2)
    )
    summary = report.summaries["trained"]
    assert summary.n_silent == 2 and summary.silence_rate == 1.0 and summary.mean_attempts == 2.0
    assert summary.n_scored == 0 and summary.mean_score is None
    assert all(s.rationale == OUTCOME_FALLBACK_SILENCE for s in report.samples["trained"])
    assert re.search(r"100% \(2/2\)", _render(report))


def _render(report) -> str:
    from rich.console import Console

    console = Console(width=160, record=True)
    console.print(render_eval_report(report))
    return console.export_text()


def test_plain_format_renders_as_the_sft_trainer_writes(generator: LocalGenerator) -> None:
    try:
        from training.sft import DEFAULT_CHAT_TEMPLATE
    except ImportError:
        pytest.skip("training/sft.py (the SFT trainer) is not in this tree")
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who am I?"},
        {"role": "assistant", "content": "Who asks?"},
        {"role": "user", "content": QUESTION},
    ]
    for add_generation_prompt in (True, False):
        ours = generator.tokenizer.apply_chat_template(conversation, chat_template=PLAIN_CHAT_TEMPLATE, tokenize=False, add_generation_prompt=add_generation_prompt)
        theirs = generator.tokenizer.apply_chat_template(conversation, chat_template=DEFAULT_CHAT_TEMPLATE, tokenize=False, add_generation_prompt=add_generation_prompt)
        assert ours == theirs
