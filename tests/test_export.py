"""Dataset versions from a real workspace: talks 19-24 of *Talks with Sri Ramana Maharshi* (dialogue) and an
excerpt of *Nan Yar?* (prose), deduplicated and critiqued offline; review decisions through the real
SQLite response store.

What is checked: the round trip (export, load with `datasets`, compare with the workspace item by
item), determinism (same id, byte-identical files), the no-op re-export, the clear error for an empty
selection, `verify` catching a one-byte change in any file, SIGKILLed exports leaving nothing visible,
diffs after reject and edit decisions, the pretrain kind, the seed JSONL shape and silence.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from critic.offline import OfflineCritic
from critic.stage import run_critique
from curation.dedup import run_dedup
from curation.export import ExportConfig, export_version
from curation.versions import (
    CHECKSUMS_NAME,
    VERSIONS_DIR,
    ExportError,
    diff_versions,
    list_versions,
    load_manifest,
    resolve_version,
    verify_version,
)
from curation.workspace import PAUSE_ENV, Workspace, init_workspace
from satsang.render.versions import render_diff, render_export_result, render_manifest, render_verify, render_versions

DATA = Path(__file__).parent / "data"
TALKS = DATA / "talks-19-24.txt"
NAN_YAR = DATA / "nan-yar-excerpt.txt"
TALKS_EXCERPT = DATA / "talks-excerpt.txt"  # talks 439-440 hold two silent answers
REPO = Path(__file__).resolve().parents[1]

ALL_UNREVIEWED = ExportConfig(name="talks", include_unreviewed=True)


@pytest.fixture(scope="module")
def built(new_workspace) -> Path:
    workspace = new_workspace("built")
    root = workspace.root
    workspace.ingest([TALKS], "dialogue", title="Talks with Sri Ramana Maharshi", licence="published freely by its publisher")
    workspace.ingest([NAN_YAR], "prose", title="Nan Yar?", licence="published freely by its publisher")
    run_dedup(workspace, progress=False)
    run_critique(workspace, OfflineCritic(), progress=False)
    return root


@pytest.fixture
def workspace(built: Path, tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    shutil.copytree(built, root)
    return Workspace.open(root)


@pytest.fixture(autouse=True)
def quiet_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def pairs(workspace: Workspace) -> pl.DataFrame:
    return workspace.items().filter(pl.col("kind") == "pair")


def response_store(workspace: Workspace):
    return pytest.importorskip("curation.responses").ResponseStore.open(workspace.root)


def decide(workspace: Workspace, item: dict, decision: str, reviewer: str = "ana", **fields) -> None:
    with response_store(workspace) as store:
        store.record(item["item_id"], item["content_hash"], reviewer, decision, **fields)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def visible_entries(workspace: Workspace) -> list[str]:
    versions = workspace.root / VERSIONS_DIR
    return sorted(p.name for p in versions.iterdir() if not p.name.startswith(".")) if versions.exists() else []


def make_writable(path: Path) -> None:
    for root, dirs, files in os.walk(path):
        os.chmod(root, stat.S_IRWXU)
        for name in files:
            os.chmod(Path(root) / name, stat.S_IRUSR | stat.S_IWUSR)


def load_both(path: Path, cache: Path):
    from datasets import load_dataset, load_from_disk

    via_parquet = load_dataset(str(path), split="train", cache_dir=str(cache))
    via_disk = load_from_disk(str(path / "dataset"))
    return via_parquet, via_disk


# ---- round trip ------------------------------------------------------------------------------


def test_round_trip_sft_matches_the_workspace_item_by_item(workspace: Workspace, tmp_path: Path):
    rows = pairs(workspace).sort("start").to_dicts()
    rejected, edited, accepted = rows[1], rows[3], rows[5]
    decide(workspace, rejected, "reject", reason="parse error")
    decide(workspace, edited, "edit", edited_answer="Who is it that asks?")
    decide(workspace, accepted, "accept", reviewer="ben")

    result = export_version(workspace, ALL_UNREVIEWED)
    assert result.status == "created"
    via_parquet, via_disk = load_both(result.path, tmp_path / "cache")
    assert via_parquet.to_list() == via_disk.to_list()

    items = {row["item_id"]: row for row in workspace.items().iter_rows(named=True)}
    expected = {
        row["item_id"]
        for row in rows
        if row["dedup_is_representative"] and not row["is_silence"] and row["item_id"] != rejected["item_id"]
    }
    seen = []
    for row in via_parquet:
        assert len(row["messages"]) == 2 * len(row["item_ids"])
        previous = None
        for turn, item_id in enumerate(row["item_ids"]):
            item = items[item_id]
            answer = "Who is it that asks?" if item_id == edited["item_id"] else item["answer"]
            assert row["messages"][2 * turn] == {"role": "user", "content": item["question"]}
            assert row["messages"][2 * turn + 1] == {"role": "assistant", "content": answer}
            assert row["contexts"][turn] == item["context"]
            assert row["source_id"] == item["source_id"] and row["section"] == item["section"]
            if previous is not None:  # a multi-turn conversation is consecutive turns of one talk
                assert item["conversation_id"] == previous["conversation_id"]
                assert item["turn_index"] == previous["turn_index"] + 1
            previous = item
            seen.append(item_id)
        decisions = {edited["item_id"]: "edit", accepted["item_id"]: "accept"}
        assert row["decisions"] == [decisions.get(i, "unreviewed") for i in row["item_ids"]]
    assert sorted(seen) == sorted(expected)
    # The rejected pair splits its talk: no conversation runs across it.
    assert any(len(row["item_ids"]) > 1 for row in via_parquet)

    manifest = load_manifest(workspace, result.version_id)
    by_id = {r["item_id"]: r for r in manifest["items"]}
    assert set(by_id) == expected
    assert by_id[edited["item_id"]]["decision"] == "edit"
    assert by_id[edited["item_id"]]["exported_hash"] != edited["content_hash"]
    assert by_id[edited["item_id"]]["content_hash"] == edited["content_hash"]
    assert by_id[accepted["item_id"]]["reviewer"] == "ben"
    assert manifest["agents"]["dedup"] and manifest["agents"]["critic"]
    assert all(r["agents"]["dedup"] == 0 and r["source_id"] == rows[0]["source_id"] for r in manifest["items"])
    steps = {s["name"]: s["set_aside"] for s in manifest["steps"]}
    assert steps["review"] == {"rejected: parse error": 1}
    assert steps["kind"] == {"passage items are not part of this sft dataset": 10}
    assert manifest["parent"] is None and manifest["tool"]["satsang"]


def test_pretrain_kind_is_passages_and_optionally_answers(workspace: Workspace, tmp_path: Path):
    items = workspace.items()
    passages = items.filter(pl.col("kind") == "passage").sort("start")
    result = export_version(workspace, ExportConfig(name="prose", kind="pretrain", include_unreviewed=True))
    via_parquet, via_disk = load_both(result.path, tmp_path / "cache")
    assert via_parquet.to_list() == via_disk.to_list()
    assert [row["text"] for row in via_parquet] == passages["text"].to_list()
    assert [row["item_id"] for row in via_parquet] == passages["item_id"].to_list()
    assert {row["text_kind"] for row in via_parquet} == {"passage"}
    assert not (result.path / "seed.jsonl").exists()

    with_answers = export_version(workspace, ExportConfig(name="prose", kind="pretrain", include_unreviewed=True, include_answers_in_pretrain=True))
    rows, _ = load_both(with_answers.path, tmp_path / "cache2")
    answers = {r["item_id"]: r["answer"] for r in items.filter(pl.col("kind") == "pair").iter_rows(named=True)}
    texts = {row["item_id"]: row["text"] for row in rows if row["text_kind"] == "answer"}
    assert texts == answers
    assert len(rows) == passages.height + len(answers)
    assert load_manifest(workspace, with_answers.version_id)["parent"] == result.version_id


def test_seed_jsonl_has_the_seed_shape_and_the_same_conversations(workspace: Workspace, tmp_path: Path):
    result = export_version(workspace, ALL_UNREVIEWED)
    lines = (result.path / "seed.jsonl").read_text(encoding="utf-8").splitlines()
    rows, _ = load_both(result.path, tmp_path / "cache")
    assert len(lines) == len(rows)
    for line, row in zip(lines, rows):
        record = json.loads(line)
        assert list(record) == ["id", "messages"]
        assert record["id"] == row["id"]
        roles = [m["role"] for m in record["messages"]]
        assert roles == ["human", "assistant"] * (len(roles) // 2) and roles
        assert all(set(m) == {"role", "content"} and m["content"].strip() for m in record["messages"])
        assert [m["content"] for m in record["messages"]] == [m["content"] for m in row["messages"]]


def test_single_turn_gives_one_conversation_per_pair(workspace: Workspace, tmp_path: Path):
    result = export_version(workspace, ExportConfig(name="single", include_unreviewed=True, multi_turn=False))
    rows, _ = load_both(result.path, tmp_path / "cache")
    assert all(len(row["item_ids"]) == 1 and row["id"] == row["item_ids"][0] for row in rows)
    assert len(rows) == pairs(workspace).height


def test_silent_answers_are_left_out_or_given_the_silence_text(tmp_path: Path):
    workspace = init_workspace(tmp_path / "ws")
    workspace.ingest([TALKS_EXCERPT], "dialogue")
    run_dedup(workspace, progress=False)
    silent = workspace.items().filter(pl.col("is_silence"))
    assert silent.height == 2

    without = export_version(workspace, ExportConfig(name="talks", include_unreviewed=True))
    manifest = load_manifest(workspace, without.version_id)
    assert not set(silent["item_id"]) & {r["item_id"] for r in manifest["items"]}
    assert {s["name"]: s["set_aside"] for s in manifest["steps"]}["content"] == {"silent answer (no silence_text given)": 2}

    marked = export_version(workspace, ExportConfig(name="talks", include_unreviewed=True, silence_text="…"))
    rows, _ = load_both(marked.path, tmp_path / "cache")
    talk_440 = [row for row in rows if row["section"] == "Talk 440"]
    assert len(talk_440) == 1 and len(talk_440[0]["item_ids"]) == 3  # the silence no longer splits the talk
    assert talk_440[0]["messages"][3] == {"role": "assistant", "content": "…"}
    assert verify_version(workspace, marked.version_id) == []
    assert "`…`" in (marked.path / "README.md").read_text(encoding="utf-8")


# ---- identity, determinism, no-op ---------------------------------------------------------------


def test_two_exports_of_unchanged_inputs_are_byte_identical(workspace: Workspace, tmp_path: Path):
    decide(workspace, pairs(workspace).row(0, named=True), "accept")
    twin = Workspace.open(shutil.copytree(workspace.root, tmp_path / "twin"))

    first = export_version(workspace, ALL_UNREVIEWED)
    second = export_version(twin, ALL_UNREVIEWED)
    assert first.version_id == second.version_id
    assert tree_bytes(first.path) == tree_bytes(second.path)

    # And again in the same workspace, after the version is removed.
    before = tree_bytes(first.path)
    make_writable(first.path)
    shutil.rmtree(first.path)
    again = export_version(workspace, ALL_UNREVIEWED)
    assert again.status == "created" and tree_bytes(again.path) == before


def test_the_order_items_are_stored_in_changes_nothing(workspace: Workspace, tmp_path: Path):
    twin = Workspace.open(shutil.copytree(workspace.root, tmp_path / "twin"))
    twin.update_items(lambda items: items.sample(fraction=1.0, shuffle=True, seed=3))
    assert twin.items()["item_id"].to_list() != workspace.items()["item_id"].to_list()
    first, second = export_version(workspace, ALL_UNREVIEWED), export_version(twin, ALL_UNREVIEWED)
    assert first.version_id == second.version_id
    assert tree_bytes(first.path) == tree_bytes(second.path)


def test_exporting_again_is_a_no_op_that_says_so(workspace: Workspace):
    first = export_version(workspace, ALL_UNREVIEWED)
    stamp = {p: p.stat().st_mtime_ns for p in first.path.rglob("*")}
    again = export_version(workspace, ALL_UNREVIEWED)
    assert (again.status, again.version_id, again.created) == ("already exists", first.version_id, False)
    assert {p: p.stat().st_mtime_ns for p in first.path.rglob("*")} == stamp
    assert len(list_versions(workspace)) == 1
    assert "already exists" in _plain(render_export_result(again))


def test_the_id_follows_content_and_configuration(workspace: Workspace):
    base = export_version(workspace, ALL_UNREVIEWED).version_id
    # The same selection spelled differently (id prefix or title, list or tuple, kinds implied) is one version.
    source = workspace.sources()["source_id"][0]
    named = export_version(workspace, ExportConfig(name="talks", include_unreviewed=True, item_kinds=["pair"], sources=[source[:10], "Nan Yar?"]))
    respelled = export_version(workspace, ExportConfig(name="talks", include_unreviewed=True, sources=("Talks with Sri Ramana Maharshi", source[-64:], "Nan Yar?")))
    assert named.status == "created" and named.version_id != base  # naming the sources is another configuration
    assert (respelled.status, respelled.version_id) == ("already exists", named.version_id)
    # A decision changes the content, and so the id; the name is part of it.
    decide(workspace, pairs(workspace).row(0, named=True), "edit", edited_question="Who asks?")
    assert export_version(workspace, ALL_UNREVIEWED).version_id not in (base, named.version_id)
    assert export_version(workspace, ExportConfig(name="other", include_unreviewed=True)).version_id.startswith("other-")


def test_an_empty_selection_is_a_clear_error(workspace: Workspace):
    with pytest.raises(ExportError, match=r"nothing to export: .*unreviewed.*include_unreviewed"):
        export_version(workspace, ExportConfig(name="talks"))
    with pytest.raises(ExportError, match="nothing to export: .*rejected: duplicate"):
        for row in pairs(workspace).iter_rows(named=True):
            decide(workspace, row, "reject", reason="duplicate")
        export_version(workspace, ExportConfig(name="talks", include_unreviewed=True))
    with pytest.raises(ExportError, match="source 'no such book'"):
        export_version(workspace, ExportConfig(name="talks", include_unreviewed=True, sources=("no such book",)))
    assert visible_entries(workspace) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "has space"}, "version name"),
        ({"name": ".hidden"}, "version name"),
        ({"name": "x", "kind": "chat"}, "dataset kind"),
        ({"name": "x", "item_kinds": ("passage",)}, "sft datasets are made of pairs"),
        ({"name": "x", "kind": "pretrain", "item_kinds": ("pair",)}, "include_answers_in_pretrain"),
        ({"name": "x", "min_concept_score": 1.5}, "min_concept_score"),
        ({"name": "x", "min_critic_score": 11}, "min_critic_score"),
        ({"name": "x", "silence_text": " "}, "silence_text"),
    ],
)
def test_a_config_that_cannot_be_met_is_refused(kwargs, message):
    with pytest.raises(ExportError, match=message):
        ExportConfig(**kwargs)


def test_thresholds_apply_to_unreviewed_items_only(workspace: Workspace):
    scores = pairs(workspace)["critic_score"].to_list()
    threshold = sorted(scores)[len(scores) // 2]
    low = pairs(workspace).filter(pl.col("critic_score") < threshold).row(0, named=True)
    decide(workspace, low, "accept")
    result = export_version(workspace, ExportConfig(name="talks", include_unreviewed=True, min_critic_score=threshold))
    manifest = load_manifest(workspace, result.version_id)
    kept = {r["item_id"] for r in manifest["items"]}
    n_low = sum(s < threshold for s in scores)
    assert low["item_id"] in kept  # a human accept outranks the score
    assert {s["name"]: s["set_aside"] for s in manifest["steps"]}["score"] == {f"unreviewed, critic score below {threshold:g}": n_low - 1}
    assert all(r["critic_score"] >= threshold or r["decision"] == "accept" for r in manifest["items"])


# ---- verify ---------------------------------------------------------------------------------


def test_verify_finds_a_one_byte_change_in_any_file(workspace: Workspace):
    result = export_version(workspace, ALL_UNREVIEWED)
    assert verify_version(workspace, result.version_id) == []
    assert "intact" in _plain(render_verify(result.version_id, []))
    files = sorted(p for p in result.path.rglob("*") if p.is_file())
    assert {p.relative_to(result.path).as_posix() for p in files} >= {
        "README.md", "manifest.json", "checksums.sha256", "seed.jsonl", "score_distributions.png",
        "items_per_source.png", "dataset/state.json", "dataset/dataset_info.json",
    }
    rng = random.Random(7)
    for path in files:
        rel = path.relative_to(result.path).as_posix()
        original = path.read_bytes()
        for offset in (0, len(original) // 2, len(original) - 1, rng.randrange(len(original))):
            changed = bytearray(original)
            changed[offset] ^= 0x01
            os.chmod(path, 0o644)
            path.write_bytes(bytes(changed))
            problems = verify_version(workspace, result.version_id)
            assert problems and any(p.startswith(rel) for p in problems), (rel, offset, problems)
            path.write_bytes(original)
            os.chmod(path, 0o444)
    assert verify_version(workspace, result.version_id) == []


def test_verify_finds_missing_and_added_files_and_a_consistent_forgery(workspace: Workspace):
    result = export_version(workspace, ALL_UNREVIEWED)
    make_writable(result.path)
    (result.path / "extra.txt").write_text("hello\n")
    modes, *others = verify_version(workspace, result.version_id)
    assert modes.startswith("modes: ") and others == ["extra.txt: not in checksums.sha256 (added after export)"]
    (result.path / "extra.txt").unlink()
    (result.path / "seed.jsonl").unlink()
    assert verify_version(workspace, result.version_id) == ["seed.jsonl: missing"]
    shutil.copy(_exported_again(workspace, result), result.path / "seed.jsonl")
    assert verify_version(workspace, result.version_id) == []

    # A forger who rewrites an answer in the data and updates every checksum is still caught:
    # the item's exported hash in the manifest (and so the version id) no longer matches the rows.
    from curation.versions import write_checksums

    import pyarrow.parquet as pq

    shard = next((result.path / "data").glob("*.parquet"))
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[0]["messages"][1]["content"] = "Here are five tips."
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    (result.path / CHECKSUMS_NAME).unlink()
    write_checksums(result.path)
    problems = verify_version(workspace, result.version_id)
    assert any("does not match its exported hash" in p for p in problems), problems


def _exported_again(workspace: Workspace, result) -> Path:
    twin = Workspace.open(shutil.copytree(workspace.root, workspace.root.parent / "twin", ignore=shutil.ignore_patterns(VERSIONS_DIR)))
    return export_version(twin, ALL_UNREVIEWED).path / "seed.jsonl"


# ---- killed exports -------------------------------------------------------------------------

EXPORT_SCRIPT = """
import sys, time
from curation.export import ExportConfig, export_version
from curation.workspace import Workspace
import datasets, matplotlib.pyplot, jinja2  # imported before "ready", so a kill after it lands in the export itself
print("ready", flush=True)
started = time.perf_counter()
version = export_version(Workspace.open(sys.argv[1]), ExportConfig(name="talks", include_unreviewed=True)).version_id
print(version, time.perf_counter() - started, flush=True)
"""


def start_export(workspace: Workspace, pause_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(PAUSE_ENV, None)
    if pause_at:
        env[PAUSE_ENV] = pause_at
    return subprocess.Popen(
        [sys.executable, "-c", EXPORT_SCRIPT, str(workspace.root)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.parametrize("pause_at", ["export-after-data", "export-before-rename"])
def test_an_export_killed_before_its_rename_leaves_no_version(workspace: Workspace, pause_at: str):
    process = start_export(workspace, pause_at)
    try:
        line = process.stderr.readline()
        assert line.strip() == f"paused at {pause_at}", line + process.stderr.read()
        assert any(p.name.startswith(".tmp-") for p in (workspace.root / VERSIONS_DIR).iterdir())
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert list_versions(workspace) == [] and visible_entries(workspace) == []

    result = export_version(workspace, ALL_UNREVIEWED)  # the next export sweeps the leftover
    assert result.status == "created" and verify_version(workspace, result.version_id) == []
    assert sorted(p.name for p in (workspace.root / VERSIONS_DIR).iterdir()) == [".lock", result.version_id]


def test_an_export_killed_after_its_rename_leaves_a_whole_version(workspace: Workspace):
    process = start_export(workspace, "export-after-rename")
    try:
        assert process.stderr.readline().strip() == "paused at export-after-rename"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    [info] = list_versions(workspace)
    [modes] = verify_version(workspace, info.version_id)  # killed before its chmod: writable, which verify says and repairs
    assert modes.startswith("modes: ") and modes.endswith("made read-only again"), modes
    assert verify_version(workspace, info.version_id) == []
    assert export_version(workspace, ALL_UNREVIEWED).status == "already exists"


def test_exports_killed_at_random_moments_leave_nothing_partial(workspace: Workspace):
    # Calibrate: how long the export itself takes in a subprocess, then kill at random moments of it.
    process = start_export(workspace)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    version_id, seconds = out.split()[-2], float(out.split()[-1])
    make_writable(workspace.root / VERSIONS_DIR / version_id)
    shutil.rmtree(workspace.root / VERSIONS_DIR / version_id)

    rng = random.Random(20)
    outcomes = []
    for _ in range(6):
        process = start_export(workspace)
        assert process.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 1.1 * seconds))
        process.send_signal(signal.SIGKILL)
        process.wait()
        visible = visible_entries(workspace)
        assert visible in ([], [version_id])
        for info in list_versions(workspace):  # a kill between the rename and the chmod leaves it writable: verify repairs that
            assert [p for p in verify_version(workspace, info.version_id) if not p.startswith("modes: ")] == []
            assert verify_version(workspace, info.version_id) == []
        outcomes.append(bool(visible))
        if visible:
            make_writable(workspace.root / VERSIONS_DIR / version_id)
            shutil.rmtree(workspace.root / VERSIONS_DIR / version_id)
    assert export_version(workspace, ALL_UNREVIEWED).version_id == version_id


# ---- versions, show, diff -------------------------------------------------------------------


def test_diff_reports_added_removed_and_edited_items_per_source(workspace: Workspace):
    rows = pairs(workspace).sort("start").to_dicts()
    first = export_version(workspace, ALL_UNREVIEWED)
    decide(workspace, rows[2], "reject", reason="not contemplative")
    decide(workspace, rows[4], "edit", edited_answer="Find out who wants to know.")
    second = export_version(workspace, ALL_UNREVIEWED)
    assert second.parent == first.version_id

    diff = diff_versions(workspace, first.version_id, second.version_id)
    assert [c.item_id for c in diff.removed] == [rows[2]["item_id"]]
    assert [c.item_id for c in diff.edited] == [rows[4]["item_id"]]
    assert diff.added == ()
    [edit] = diff.edited
    assert edit.before.endswith(rows[4]["answer"]) and edit.after.endswith("A: Find out who wants to know.")
    assert diff.removed[0].before.startswith("Q: " + rows[2]["question"]) and diff.removed[0].after is None
    [source] = diff.per_source
    assert (source["title"], source["removed"], source["edited"], source["added"]) == ("Talks with Sri Ramana Maharshi", 1, 1, 0)
    assert source["unchanged"] == len(rows) - 2 == diff.n_unchanged

    back = diff_versions(workspace, second.version_id, first.version_id)
    assert [c.item_id for c in back.added] == [rows[2]["item_id"]]
    assert diff_versions(workspace, first.version_id, first.version_id).is_empty
    text = _plain(render_diff(diff))
    assert "Find out who wants to know." in text and "removed" in text

    infos = list_versions(workspace)
    assert [i.version_id for i in infos] == [first.version_id, second.version_id]
    assert infos[1].parent == first.version_id and infos[1].n_items == len(rows) - 1
    assert resolve_version(workspace, "talks").name == second.version_id  # a name means its latest version
    assert resolve_version(workspace, first.version_id[:9]).name == first.version_id
    with pytest.raises(ExportError, match="no version"):
        resolve_version(workspace, "nothing-here")
    assert second.version_id in _plain(render_versions(infos))
    shown = _plain(render_manifest(load_manifest(workspace, "talks"), second.path))
    assert "rejected: not contemplative" in shown and first.version_id in shown


def test_review_statistics_and_the_card(workspace: Workspace):
    rows = pairs(workspace).sort("start").to_dicts()
    decide(workspace, rows[0], "accept", reviewer="ana")
    decide(workspace, rows[0], "accept", reviewer="ben")
    decide(workspace, rows[1], "accept", reviewer="ana")
    decide(workspace, rows[1], "reject", reviewer="ben", reason="incomplete")
    decide(workspace, rows[2], "reject", reviewer="ana", reason="parse error")
    with response_store(workspace) as store:
        store.undo(rows[2]["item_id"], "ana")  # undone: unreviewed again
    result = export_version(workspace, ALL_UNREVIEWED)
    card = result.card_path.read_text(encoding="utf-8")
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert {"pretty_name", "license", "language", "task_categories", "size_categories", "configs"} <= set(front)
    assert front["configs"][0]["data_files"][0]["path"] == "data/train-*.parquet"
    assert front["size_categories"] == ["n<1K"]
    assert "| Talks with Sri Ramana Maharshi | `" in card  # the sources table
    assert "| reject | incomplete | 1 |" in card
    assert "items were judged by two or more reviewers; on 50.0% of the 2 reviewer pairs" in card
    assert "| ana / ben | 2 | 50.0% |" in card
    for plot in ("score_distributions.png", "items_per_source.png"):
        assert f"]({plot})" in card
        assert (result.path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Known limitations" in card and "## Intended use" in card and "## Examples" in card

    from data_cards.render import card_html, write_card_html

    html = write_card_html(result.path, result.path.parent.parent / "card.html").read_text(encoding="utf-8")
    assert "<table>" in html and "<h2>Sources</h2>" in html
    assert html.count('<img src="data:image/png;base64,') == 2
    assert "<h1>" in card_html("# t\n")


def _plain(renderable) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=open(os.devnull, "w"))
    console.print(renderable)
    return console.export_text()


def test_the_items_per_source_plot_of_a_large_catalog_stays_readable(tmp_path):
    """A bar per source of a 900-book corpus would make a plot hundreds of inches tall: the largest
    sources get a bar each and the rest share one, whose counts add up."""
    import struct

    from data_cards.render import MAX_SOURCE_BARS, plot_items_per_source

    per_source = [{"title": f"Book {i}", "source_id": f"s{i}", "exported": i % 7, "set_aside": {"dedup": i % 3}}
                  for i in range(900)]
    path = tmp_path / "items_per_source.png"
    plot_items_per_source(path, per_source)
    width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the PNG header's size
    few = tmp_path / "few.png"
    plot_items_per_source(few, per_source[:MAX_SOURCE_BARS])
    assert height == struct.unpack(">II", few.read_bytes()[16:24])[1]  # as tall as MAX_SOURCE_BARS bars
    assert height < 3000
    from data_cards.render import _largest_sources, sum_row

    bars = _largest_sources(per_source, MAX_SOURCE_BARS)
    assert len(bars) == MAX_SOURCE_BARS and bars[-1]["title"] == f"{900 - MAX_SOURCE_BARS + 1} other sources"
    assert sum(sum_row(bar) for bar in bars) == sum(sum_row(entry) for entry in per_source)
    assert min(sum_row(bar) for bar in bars[:-1]) >= max(sum_row(e) for e in per_source if e not in bars)
