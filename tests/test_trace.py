"""`satsang trace`: a text traced to the training items it repeats, across a checkpoint's lineage.

A tiny model (training.tiny) is pretrained briefly on a prose version, then overfit by SFT on a
version of three talks (tests/data/trace-three-talks.txt, taken from the Talks); it reproduces
an answer greedily, and the trace names that answer's item first, with its stage, version,
source, talk and offsets. The index is also checked against a brute-force search.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from inference.trace import INDEX_NGRAM, TraceError, Tracer, build_index, lineage_versions, trace_checkpoint, version_parts, words_of

DATA = Path(__file__).resolve().parent / "data"
MOUNA = "What is mouna (silence)?"
MOUNA_ANSWER = "Mouna is not closing the mouth. It is eternal speech."
SMALL = dict(lora_rank=16, lora_alpha=32, lora_dropout=0.0, max_seq_len=128, learning_rate=1e-2, lr_scheduler="constant",
             warmup_ratio=0.0, save_steps=10_000, logging_steps=50, gradient_checkpointing=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(new_workspace, tiny, tmp_path_factory):
    from curation.dedup import run_dedup
    from curation.export import export_version
    from curation.selection import ExportConfig
    from training.config import PretrainConfig, SFTConfig
    from training.pretrain import train_pretrain
    from training.sft import train_sft

    workspace = new_workspace("trace")
    workspace.ingest([DATA / "trace-three-talks.txt"], kind="dialogue", title="Three talks")
    workspace.ingest([DATA / "prose-nan-yar.txt"], kind="prose", title="Nan Yar")
    run_dedup(workspace)
    sft = export_version(workspace, ExportConfig(name="three", include_unreviewed=True, multi_turn=False))
    prose = export_version(workspace, ExportConfig(name="prose", kind="pretrain", include_unreviewed=True))
    runs = tmp_path_factory.mktemp("runs")
    pretrained = train_pretrain(PretrainConfig(**SMALL, batch_size=4, per_device_batch_size=4, max_steps=4), prose.path, tiny, runs / "prose")
    # Overfit: three conversations, every step sees all of them.
    train_sft(SFTConfig(**SMALL, batch_size=3, per_device_batch_size=3, max_steps=150), sft.path, runs / "sft", from_checkpoint=pretrained.output_dir)
    return SimpleNamespace(workspace=workspace, sft=sft.path, prose=prose.path, checkpoint=runs / "sft", pretrain_checkpoint=pretrained.output_dir)


@pytest.fixture(scope="module")
def reproduced(trained):
    from inference.generate import GenerationConfig, LocalGenerator

    return LocalGenerator(trained.checkpoint).generate(MOUNA, GenerationConfig(temperature=0.0, max_new_tokens=40))


def item_id_of(workspace, answer: str) -> str:
    items = workspace.items()
    return items.filter(items["answer"] == answer)["item_id"].item()


def test_an_overfit_model_reproduces_an_answer_and_trace_names_its_item_first(trained, reproduced):
    assert MOUNA_ANSWER in reproduced, reproduced  # the model learned the answer word for word
    result = trace_checkpoint(trained.checkpoint, reproduced)
    first = result.items[0]
    assert first.item_id == item_id_of(trained.workspace, MOUNA_ANSWER)
    assert (first.part, first.section, first.source_title, first.stages) == ("answer", "Talk 231", "Three talks", ("sft",))
    assert first.longest_words == len(words_of(MOUNA_ANSWER)) == result.spans[0].n_words
    assert first.version_id == trained.sft.name
    # Offsets: the span in the item's answer, and the answer in the source file as stored.
    source = (trained.workspace.root / "sources" / f"{first.source_id}.txt").read_text(encoding="utf-8")
    assert source[first.source_start : first.source_end] == MOUNA_ANSWER
    assert MOUNA_ANSWER.startswith(first.span) and first.part_start == 0
    assert reproduced[first.text_start : first.text_end] == first.span
    # Both stages' versions were searched, root first, each with the stage that trained on it.
    assert [(v.version_id, v.stages) for v in result.versions] == [(trained.prose.name, ("pretrain",)), (trained.sft.name, ("sft",))]


def test_a_pretraining_passage_is_traced_to_the_pretrain_stage(trained):
    passage = version_parts(trained.prose)["text"][1]
    sentence = " ".join(passage.split()[5:25])
    result = trace_checkpoint(trained.checkpoint, f"As it is said, {sentence}, and so on.")
    first = result.items[0]
    assert first.stages == ("pretrain",) and first.part == "passage" and first.source_title == "Nan Yar"
    assert first.longest_words == len(words_of(sentence))
    assert result.coverage > 0.7


def test_text_the_training_data_never_had_traces_to_nothing(trained):
    result = trace_checkpoint(trained.checkpoint, "The quick brown fox jumps over the lazy dog near the river bank today.")
    assert result.spans == [] and result.items == [] and result.coverage == 0.0
    with pytest.raises(TraceError, match="at least 6"):
        Tracer(trained.checkpoint).trace(MOUNA_ANSWER, min_words=3)


def test_spans_are_exactly_the_maximal_verbatim_runs(trained):
    """Against a brute-force search over every part of every version."""
    tracer = Tracer(trained.checkpoint)
    parts = [[w for w, _, _ in words_of(t)] for v in (trained.prose, trained.sft) for t in version_parts(v)["text"].to_list()]

    def occurs(run: list[str]) -> bool:
        return any(part[i : i + len(run)] == run for part in parts for i in range(len(part) - len(run) + 1))

    source = (DATA / "prose-nan-yar.txt").read_text(encoding="utf-8").split()
    text = " ".join(source[40:70]) + " and then " + MOUNA_ANSWER + " " + " ".join(source[300:320])
    result = tracer.trace(text)
    words = [w for w, _, _ in words_of(text)]
    assert result.spans
    for span in result.spans:
        run = [w for w, _, _ in words_of(span.text)]
        i = next(k for k in range(len(words)) if words[k : k + len(run)] == run)
        assert occurs(run)
        assert i == 0 or not occurs(words[i - 1 : i + len(run)])  # not extendable left ...
        assert i + len(run) == len(words) or not occurs(words[i : i + len(run) + 1])  # ... nor right
    # Every run of INDEX_NGRAM words that occurs is inside some span.
    for i in range(len(words) - INDEX_NGRAM + 1):
        if occurs(words[i : i + INDEX_NGRAM]):
            start = words_of(text)[i][1]
            assert any(s.start <= start < s.end for s in result.spans), " ".join(words[i : i + INDEX_NGRAM])


def test_the_index_is_built_once_in_the_workspace_cache_and_outside_a_workspace_in_xdg(trained, tmp_path, monkeypatch):
    index = build_index(trained.sft)
    assert index.parent == trained.workspace.root / "cache" / "trace"
    stamp = (index / "meta.json").stat().st_mtime_ns
    assert build_index(trained.sft) == index and (index / "meta.json").stat().st_mtime_ns == stamp
    meta = json.loads((index / "meta.json").read_text())
    assert meta["version_id"] == trained.sft.name and meta["n_items"] == 3
    import shutil

    moved = tmp_path / "elsewhere" / trained.sft.name
    shutil.copytree(trained.sft, moved)
    # Outside a workspace: satsang's cache directory, $SATSANG_CACHE_DIR, else $XDG_CACHE_HOME/satsang.
    monkeypatch.delenv("SATSANG_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert build_index(moved).parent == tmp_path / "xdg" / "satsang" / "trace"
    monkeypatch.setenv("SATSANG_CACHE_DIR", str(tmp_path / "cache"))
    assert build_index(moved).parent == tmp_path / "cache" / "trace"


def test_a_checkpoint_without_lineage_or_with_a_lost_version_says_which_file(trained, tmp_path):
    with pytest.raises(TraceError, match=re.escape(str(tmp_path)) + ".*no satsang_lineage.json"):
        lineage_versions(tmp_path)
    lineage = json.loads((trained.checkpoint / "satsang_lineage.json").read_text())
    lineage["dataset"]["path"] = str(tmp_path / "gone")
    lineage["dataset"]["version_id"] = "gone-000000000000"
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "satsang_lineage.json").write_text(json.dumps(lineage))
    with pytest.raises(TraceError, match="satsang_lineage.json: dataset version gone-000000000000 not found"):
        lineage_versions(tmp_path / "ck")


def satsang(*args):
    from typer.testing import CliRunner

    from satsang.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})


def test_cli_trace_shows_and_prints_json(trained, reproduced, tmp_path):
    result = satsang("trace", trained.checkpoint, reproduced, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["items"][0]["item_id"] == item_id_of(trained.workspace, MOUNA_ANSWER)
    shown = satsang("trace", trained.checkpoint, reproduced)
    assert shown.exit_code == 0 and "Talk 231" in shown.stdout and "training items this text echoes" in shown.stdout
    missing = satsang("trace", tmp_path, "some text")
    assert missing.exit_code == 1 and "no satsang_lineage.json" in missing.output


def test_eval_trace_writes_traces_for_each_answer(trained, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "mouna", "question": MOUNA}) + "\n" + json.dumps({"id": "self", "question": "How to know the Self?"}) + "\n")
    result = satsang("eval", "--checkpoint", trained.checkpoint, "--prompts", prompts, "--temperature", "0", "--max-new-tokens", "40", "--out", tmp_path / "out", "--trace")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "out" / "traces.jsonl").read_text().splitlines()]
    assert [r["prompt_id"] for r in rows] == ["mouna", "self"]
    assert rows[0]["trace"]["top_item"]["item_id"] == item_id_of(trained.workspace, MOUNA_ANSWER)
    assert "eval --trace" in result.stdout


def test_serve_adds_the_trace_on_request(trained):
    from inference.server import RunningServer, build_service

    def ask(running, body):
        request = urllib.request.Request(f"{running.base_url}/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    service = build_service(trained.checkpoint)
    with RunningServer(service) as running:
        body = {"model": service.model_name, "messages": [{"role": "user", "content": MOUNA}], "temperature": 0, "max_tokens": 40}
        status, plain = ask(running, body)
        assert status == 200 and "trace" not in plain["satsang"]
        status, traced = ask(running, {**body, "satsang": {"trace": True}})
        assert status == 200, traced
        assert traced["satsang"]["trace"]["top_item"]["item_id"] == item_id_of(trained.workspace, MOUNA_ANSWER)
        streamed = urllib.request.Request(
            f"{running.base_url}/chat/completions", data=json.dumps({**body, "stream": True, "satsang": {"trace": True}}).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(streamed, timeout=120) as response:
            events = [json.loads(line[6:]) for line in response.read().decode().splitlines() if line.startswith("data: {")]
        assert events[-1]["satsang"]["trace"] == traced["satsang"]["trace"]  # the last chunk carries it, the same as whole
        status, bad = ask(running, {**body, "satsang": {"trace": "yes"}})
        assert status == 400 and bad["error"]["param"] == "satsang.trace"


def test_nearest_items_by_embedding_find_a_paraphrase(trained):
    """No verbatim span, but the embedding model (the project's, offline) places the paraphrase's item first."""
    paraphrase = "Keeping quiet is not shutting your lips; silence is a speech that never ends."
    result = Tracer(trained.checkpoint).trace(paraphrase, nearest=2)
    assert result.spans == []
    assert result.nearest[0].item_id == item_id_of(trained.workspace, MOUNA_ANSWER)
    assert result.nearest[0].similarity > result.nearest[1].similarity
    assert result.nearest[0].span == MOUNA_ANSWER and result.nearest[0].stages == ("sft",)
