"""Issue 14's fault suite: tampering and faults, each held (detected or refused) with state intact.

Each case reproduces what an adversarial tester did: a forged copy of a dataset version, a version
left writable, a checkpoint whose files changed, review responses for items that do not exist, a
full disk, a damaged workspace, bad settings and unreadable inputs. A fault is one red line on
stderr naming the file, exit status 1, and nothing stored lost. Database cases run on SQLite and
on a real PostgreSQL (tests/postgres.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from postgres import Database, database, postgres_server, with_search_path  # noqa: F401  (fixtures)

from curation.dedup import run_dedup
from curation.export import ExportConfig, export_version
from curation.versions import (
    CHECKSUMS_NAME,
    DATASET_DIR,
    MANIFEST_NAME,
    SEED_NAME,
    list_versions,
    manifest_bytes,
    verify_version,
    write_checksums,
)
from curation.workspace import PAUSE_ENV, Workspace

DATA = Path(__file__).parent / "data"
TALKS = DATA / "talks-19-24.txt"
NAN_YAR = DATA / "nan-yar-excerpt.txt"
REPO = Path(__file__).resolve().parents[1]
ALL_UNREVIEWED = ExportConfig(name="talks", include_unreviewed=True)
FORGED_ANSWER = "Here are five tips for a calmer practice."


@pytest.fixture(scope="module")
def built(new_workspace) -> Path:
    workspace = new_workspace("faults")
    workspace.ingest([TALKS], "dialogue", title="Talks", licence="published freely")
    workspace.ingest([NAN_YAR], "prose", title="Nan Yar?", licence="published freely")
    run_dedup(workspace, progress=False)
    return workspace.root


@pytest.fixture
def filled(built: Path, tmp_path: Path) -> Workspace:
    return Workspace.open(shutil.copytree(built, tmp_path / "ws"))


@pytest.fixture(autouse=True)
def offline_datasets(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def modes_of(root: Path) -> set[int]:
    return {stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


# ---- 14.2: every copy of a version is checked against the manifest, the manifest against the id ----


def forge_saved_dataset(version: Path) -> None:
    """Change the first answer in dataset/*.arrow, the copy training loads."""
    import pyarrow as pa

    [arrow] = sorted((version / DATASET_DIR).glob("*.arrow"))
    with pa.memory_map(str(arrow)) as source:
        table = pa.ipc.open_stream(source).read_all()
    rows = table.to_pylist()
    rows[0]["messages"][1]["content"] = FORGED_ANSWER
    forged = pa.Table.from_pylist(rows, schema=table.schema)
    with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_stream(sink, forged.schema) as writer:
        writer.write_table(forged)


def forge_seed(version: Path) -> None:
    lines = (version / SEED_NAME).read_text(encoding="utf-8").splitlines(keepends=True)
    first = json.loads(lines[0])
    first["messages"][1]["content"] = FORGED_ANSWER
    lines[0] = json.dumps(first, ensure_ascii=False) + "\n"
    (version / SEED_NAME).write_text("".join(lines), encoding="utf-8")


@pytest.mark.parametrize("forge", [forge_saved_dataset, forge_seed], ids=["dataset-arrow", "seed-jsonl"])
def test_a_forged_training_copy_with_recomputed_checksums_fails_verify(filled: Workspace, forge):
    result = export_version(filled, ALL_UNREVIEWED)
    assert verify_version(filled, result.version_id) == []
    forge(result.path)
    (result.path / CHECKSUMS_NAME).unlink()
    write_checksums(result.path)  # anyone can recompute these lines

    problems = [p for p in verify_version(filled, result.version_id) if not p.startswith("modes: ")]
    copy = f"{DATASET_DIR}/" if forge is forge_saved_dataset else SEED_NAME
    assert problems and all(p.startswith(copy) for p in problems), problems
    assert any("does not match its exported hash" in p for p in problems), problems


def test_both_copies_and_the_manifest_forged_together_fail_on_the_version_id(filled: Workspace):
    """Forge the rows of every copy and the manifest's hash for them: the manifest no longer hashes to its id."""
    from curation import schema

    result = export_version(filled, ALL_UNREVIEWED)
    forge_saved_dataset(result.path)
    forge_seed(result.path)
    import pyarrow.parquet as pq

    [shard] = sorted((result.path / "data").glob("*.parquet"))
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[0]["messages"][1]["content"] = FORGED_ANSWER
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), shard)
    manifest = json.loads((result.path / MANIFEST_NAME).read_text(encoding="utf-8"))
    [record] = [r for r in manifest["items"] if r["row"] == 0 and r["turn"] == 0]
    record["exported_hash"] = schema.content_hash(
        "pair", question=rows[0]["messages"][0]["content"], answer=FORGED_ANSWER, context=rows[0]["contexts"][0]
    )
    (result.path / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))
    (result.path / CHECKSUMS_NAME).unlink()
    write_checksums(result.path)

    problems = [p for p in verify_version(filled, result.version_id) if not p.startswith("modes: ")]
    assert problems == [f"{MANIFEST_NAME}: its config and items hash to talks-{problems[0].split('talks-')[1][:12]}, not to this version's id"], problems


def test_a_manifest_made_by_another_satsang_is_still_checked_against_its_id(filled: Workspace):
    result = export_version(filled, ALL_UNREVIEWED)
    manifest = json.loads((result.path / MANIFEST_NAME).read_text(encoding="utf-8"))
    manifest["tool"]["satsang"] = "0.0.1"  # an older release: its id cannot be the one it claims
    (result.path / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))
    (result.path / CHECKSUMS_NAME).unlink()
    write_checksums(result.path)
    problems = [p for p in verify_version(filled, result.version_id) if not p.startswith("modes: ")]
    assert len(problems) == 1 and "not to this version's id" in problems[0], problems


# ---- 14.3: a version cannot stay writable -----------------------------------------------------------


def test_verify_reports_a_writable_version_and_makes_it_read_only(filled: Workspace):
    result = export_version(filled, ALL_UNREVIEWED)
    assert modes_of(result.path) == {0o444, 0o555}
    for path in [result.path, *result.path.rglob("*")]:
        os.chmod(path, 0o777)
    [line] = verify_version(filled, result.version_id)
    assert line.startswith("modes: ") and "0777" in line and line.endswith("made read-only again"), line
    assert modes_of(result.path) == {0o444, 0o555}
    assert verify_version(filled, result.version_id) == []


EXPORT_SCRIPT = """
import sys
from curation.dedup import run_dedup
from curation.export import ExportConfig, export_version
from curation.workspace import Workspace
export_version(Workspace.open(sys.argv[1]), ExportConfig(name="talks", include_unreviewed=True))
"""


def test_an_export_killed_between_rename_and_chmod_is_made_read_only_by_the_next_export(filled: Workspace):
    env = {**os.environ, "PYTHONPATH": str(REPO), PAUSE_ENV: "export-after-rename"}
    process = subprocess.Popen([sys.executable, "-c", EXPORT_SCRIPT, str(filled.root)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr.readline().strip() == "paused at export-after-rename"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    [info] = list_versions(filled)
    assert modes_of(info.path) - {0o444, 0o555}, "the kill should have left it writable"
    again = export_version(filled, ALL_UNREVIEWED)
    assert again.status == "already exists" and again.version_id == info.version_id
    assert modes_of(info.path) == {0o444, 0o555}
    assert verify_version(filled, info.version_id) == []


# ---- 14.4: audit, diagnose, --fix, generate check every file of a checkpoint and its base ----------


@pytest.fixture(scope="module")
def trained(built: Path, tiny: Path, tmp_path_factory: pytest.TempPathFactory):
    """A two-step LoRA pretrain on a copy of the tiny base, with its own hash cache."""
    from training.config import PretrainConfig
    from training.pretrain import train_pretrain

    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SATSANG_CACHE_DIR", str(root / "cache"))
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv("HF_HUB_OFFLINE", "1")
        workspace = Workspace.open(shutil.copytree(built, root / "ws"))
        version = export_version(workspace, ExportConfig(name="prose", kind="pretrain", include_unreviewed=True))
        base = shutil.copytree(tiny, root / "base")
        config = PretrainConfig(lora_rank=4, lora_alpha=8, max_seq_len=64, batch_size=2, per_device_batch_size=2, max_steps=2, save_steps=100, logging_steps=1)
        result = train_pretrain(config, version.path, base, root / "run")
    return result.output_dir, base, version.path


@pytest.fixture
def checkpoint(trained, tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("SATSANG_CACHE_DIR", str(tmp_path / "cache"))
    return Path(shutil.copytree(trained[0], tmp_path / "checkpoint"))


def test_an_untouched_checkpoint_audits_clean_and_its_lineage_records_its_files(checkpoint: Path):
    from training.audit import audit_checkpoint
    from training.lineage import read_lineage

    report = audit_checkpoint(checkpoint)
    assert report.ok, report.problems
    files = read_lineage(checkpoint)["checkpoint"]["files"]
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= set(files)
    assert read_lineage(checkpoint)["base_model"]["weights_sha256"]


def test_a_flipped_byte_in_the_versions_data_fails_audit(checkpoint: Path, trained, tmp_path: Path):
    from training.audit import audit_checkpoint
    from training.lineage import read_lineage, write_lineage

    version = shutil.copytree(trained[2], tmp_path / "moved" / trained[2].name)
    lineage = read_lineage(checkpoint)
    lineage["dataset"]["path"] = str(version)
    write_lineage(checkpoint, lineage)
    assert audit_checkpoint(checkpoint).ok
    [shard] = sorted((version / "data").glob("*.parquet"))
    os.chmod(shard, 0o644)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))

    report = audit_checkpoint(checkpoint)
    assert not report.ok and report.stages[0]["dataset"]["status"] == "changed"
    assert any("data/" in p for p in report.problems), report.problems


def set_lora_alpha(checkpoint: Path, alpha: int) -> None:
    path = checkpoint / "adapter_config.json"
    config = json.loads(path.read_text())
    config["lora_alpha"] = alpha
    path.write_text(json.dumps(config))


def test_a_changed_lora_alpha_fails_audit_diagnose_fix_and_loading(checkpoint: Path):
    from training.audit import audit_checkpoint
    from training.checkpoint import CheckpointError, diagnose_checkpoint, fix_checkpoint, load_checkpoint

    set_lora_alpha(checkpoint, 1024)
    report = audit_checkpoint(checkpoint)
    assert any("adapter_config.json" in p and "changed since its lineage" in p for p in report.problems), report.problems
    assert any("lora_alpha is 1024" in p for p in report.problems), report.problems
    assert any("lora_alpha is 1024" in p for p in diagnose_checkpoint(checkpoint).problems)
    with pytest.raises(CheckpointError, match="adapter_config.json"):
        load_checkpoint(checkpoint)
    with pytest.raises(CheckpointError, match="would vouch for it"):
        fix_checkpoint(checkpoint)
    assert not (checkpoint.parent / f"{checkpoint.name}-fixed").exists()


def test_a_lineage_from_before_files_were_recorded_still_catches_lora_alpha(checkpoint: Path):
    from training.audit import audit_checkpoint
    from training.lineage import LINEAGE_NAME

    lineage = json.loads((checkpoint / LINEAGE_NAME).read_text())
    del lineage["checkpoint"]["files"]
    (checkpoint / LINEAGE_NAME).write_text(json.dumps(lineage))  # as an older satsang wrote it
    assert audit_checkpoint(checkpoint).ok
    set_lora_alpha(checkpoint, 1024)
    assert any("lora_alpha is 1024, the lineage says 8" in p for p in audit_checkpoint(checkpoint).problems)


def test_a_changed_tokenizer_fails_audit(checkpoint: Path):
    from training.audit import audit_checkpoint

    path = checkpoint / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["chat_template"] = "{{ messages[0]['content'] }}"
    path.write_text(json.dumps(config))
    assert any("tokenizer_config.json: changed since its lineage" in p for p in audit_checkpoint(checkpoint).problems)


def test_a_changed_adapter_is_not_re_approved_by_fix(checkpoint: Path):
    from safetensors.torch import load_file, save_file

    from training.checkpoint import CheckpointError, fix_checkpoint

    path = checkpoint / "adapter_model.safetensors"
    state = load_file(str(path))
    key = sorted(state)[0]
    state[key] = state[key] * 3
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="adapter_model.safetensors: changed since its lineage"):
        fix_checkpoint(checkpoint)


def test_a_different_base_fails_audit_and_loading_and_an_explicit_one_warns(checkpoint: Path, trained, tmp_path: Path):
    from safetensors.torch import load_file, save_file

    from training.audit import audit_checkpoint
    from training.checkpoint import CheckpointError, load_checkpoint
    from training.lineage import read_lineage, write_lineage

    other = shutil.copytree(trained[1], tmp_path / "other-base")
    [weights] = sorted(other.glob("*.safetensors"))
    state = load_file(str(weights))
    key = sorted(state)[0]
    state[key] = state[key] + 1.0
    save_file(state, str(weights), metadata={"format": "pt"})
    lineage = read_lineage(checkpoint)
    lineage["base_model"]["path"] = str(other)  # the base at the recorded path is now another model
    write_lineage(checkpoint, lineage)

    report = audit_checkpoint(checkpoint)
    assert any("a different base" in p for p in report.problems), report.problems
    with pytest.raises(CheckpointError, match="a different base"):
        load_checkpoint(checkpoint)
    with pytest.warns(UserWarning, match="a different base"):
        load_checkpoint(checkpoint, base_model=str(other))
    load_checkpoint(checkpoint, base_model=str(trained[1]))  # the base it was trained on: no warning, no error


def test_the_base_models_hash_is_cached_by_path_size_and_times(tmp_path: Path, monkeypatch):
    from curation.files import SHA256_CACHE_NAME, sha256_file, sha256_file_cached

    monkeypatch.setenv("SATSANG_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights " * 1000)
    digest = sha256_file_cached(weights)
    assert digest == sha256_file(weights)
    cache = tmp_path / "cache" / SHA256_CACHE_NAME
    [(key, value)] = json.loads(cache.read_text()).items()
    cache.write_text(json.dumps({key: "remembered"}))
    assert sha256_file_cached(weights) == "remembered"  # not read again
    info = weights.stat()
    weights.write_bytes(b"WEIGHTS " * 1000)  # same size, mtime set back: ctime still moves
    os.utime(weights, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert sha256_file_cached(weights) == sha256_file(weights) != digest


# ---- 14.10: decisions only on the workspace's items ---------------------------------------------------

def test_a_decision_on_an_item_the_workspace_lacks_is_refused_and_nothing_is_written(database: Database, filled: Workspace):
    from curation.responses import InvalidResponse
    from curation.review import record_decisions

    items = filled.items()
    real = items.row(0, named=True)
    ghost = "f" * 32
    with database.open() as store:
        batch = [
            {"item_id": real["item_id"], "content_hash": real["content_hash"], "reviewer": "ana", "decision": "accept"},
            {"item_id": ghost, "content_hash": "0" * 32, "reviewer": "ana", "decision": "accept"},
        ]
        with pytest.raises(InvalidResponse, match=f"item {ghost}: not an item of this workspace"):
            record_decisions(store, batch, items["item_id"])
        assert store.state().height == 0 and store.responses().height == 0
        [written] = record_decisions(store, batch[:1], items["item_id"])
        assert written.item_id == real["item_id"]
        assert store.state()["item_id"].to_list() == [real["item_id"]]


# ---- 14.1 on both backends: every way to rewrite the log is refused, or found --------------------------

ITEM, HASH = "a" * 32, "1" * 32


def rewrite_statements(database: Database, response_id: int) -> list[tuple[str, tuple]]:
    columns = "(id, item_id, content_hash, reviewer, decision, created_at)"
    values = (response_id, ITEM, HASH, "mallory", "accept", "2020-01-01T00:00:00+00:00")
    link = (response_id, "0" * 64)
    if database.backend == "sqlite":
        return [
            (f"REPLACE INTO responses {columns} VALUES (?, ?, ?, ?, ?, ?)", values),
            (f"INSERT INTO responses {columns} VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET reviewer = excluded.reviewer", values),
            ("UPDATE responses SET reviewer = 'mallory'", ()),
            ("DELETE FROM responses", ()),
            ("REPLACE INTO response_chain (id, chain) VALUES (?, ?)", link),
            ("INSERT INTO response_chain (id, chain) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET chain = excluded.chain", link),
            ("UPDATE response_chain SET chain = 'x'", ()),
            ("DELETE FROM response_chain", ()),
        ]
    return [
        (f"INSERT INTO responses {columns} OVERRIDING SYSTEM VALUE VALUES (%s, %s, %s, %s, %s, %s)"
         " ON CONFLICT (id) DO UPDATE SET reviewer = excluded.reviewer", values),
        ("UPDATE responses SET reviewer = 'mallory'", ()),
        ("DELETE FROM responses", ()),
        ("TRUNCATE responses", ()),
        ("TRUNCATE responses, response_chain", ()),
        ("TRUNCATE responses CASCADE", ()),
        ("INSERT INTO response_chain (id, chain) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET chain = excluded.chain", link),
        ("UPDATE response_chain SET chain = 'x'", ()),
        ("DELETE FROM response_chain", ()),
        ("TRUNCATE response_chain", ()),
    ]


def test_every_rewrite_statement_is_refused_on_both_log_tables(database: Database):
    with database.open() as store:
        first = store.record(ITEM, HASH, "ana", "accept")
    connection = database.connect()
    try:
        for statement, values in rewrite_statements(database, first.id):
            with pytest.raises(Exception, match="append-only"):
                connection.execute(statement, values)
    finally:
        connection.close()
    with database.open() as store:
        assert [(r.reviewer, r.decision) for r in store.history(ITEM)] == [("ana", "accept")]
        assert store.integrity_check() == []


@pytest.mark.parametrize("tamper", ["disable", "drop-trigger", "drop-table", "alter-column"])
def test_schema_changes_by_the_owner_are_found_by_integrity_check(database: Database, tamper: str):
    """The role that owns the tables can change them; integrity_check names what changed."""
    with database.open() as store:
        store.record(ITEM, HASH, "ana", "accept")
    sqlite = database.backend == "sqlite"
    statements = {
        "disable": ["DROP TRIGGER responses_no_update"] if sqlite else ["ALTER TABLE responses DISABLE TRIGGER responses_no_update_or_delete"],
        "drop-trigger": ["DROP TRIGGER response_chain_no_delete"] if sqlite else ["DROP TRIGGER response_chain_no_truncate ON response_chain"],
        "drop-table": ["DROP TABLE response_chain"],
        "alter-column": ["ALTER TABLE responses RENAME COLUMN note TO note_old"],
    }[tamper]
    connection = database.connect()
    try:
        for statement in statements:
            connection.execute(statement)
    finally:
        connection.close()
    from curation.responses import ResponseStoreError

    try:
        with database.open() as store:
            problems = store.integrity_check()
    except ResponseStoreError as error:  # a store that cannot even open says why, in one line
        problems = [str(error)]
    assert problems, f"{tamper} went unnoticed"


def test_a_reviewer_role_that_does_not_own_the_log_cannot_rewrite_or_drop_it(database: Database, postgres_server):
    """PostgreSQL: the tables owned by one role, the app connecting as another, granted only what appending needs."""
    if database.backend != "postgresql":
        pytest.skip("roles are PostgreSQL's")
    import uuid

    import psycopg

    from curation.responses import ResponseStore, reviewer_grants

    with database.open() as store:
        store.record(ITEM, HASH, "ana", "accept")
    schema = dict(parse_qsl(urlsplit(database.url).query))["options"].removeprefix("-c search_path=")
    role = f"reviewer_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        for statement in reviewer_grants(role, schema):
            admin.execute(statement)
    parts = urlsplit(postgres_server.url)
    netloc = parts.netloc.split("@", 1)[-1]
    url = with_search_path(parts._replace(netloc=f"{role}@{netloc}").geturl(), schema)
    try:
        with ResponseStore.open(database.root, url=url) as store:
            store.record(ITEM, HASH, "ben", "reject", reason="duplicate")
            assert [r.reviewer for r in store.history(ITEM)] == ["ana", "ben"]
        with psycopg.connect(url, autocommit=True) as app:
            for statement in (
                "DROP TABLE responses", "DROP TABLE response_chain", "ALTER TABLE responses DISABLE TRIGGER USER",
                "ALTER TABLE responses RENAME COLUMN note TO n", "TRUNCATE responses", "DELETE FROM responses",
                "UPDATE responses SET reviewer = 'mallory'", "DROP TRIGGER responses_no_truncate ON responses",
            ):
                with pytest.raises(psycopg.Error, match="must be owner|permission denied|append-only"):
                    app.execute(statement)
        with database.open() as store:
            assert [r.reviewer for r in store.history(ITEM)] == ["ana", "ben"] and store.integrity_check() == []
    finally:
        with psycopg.connect(postgres_server.url, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


# ---- faults: one red line on stderr, exit status 1, state intact ----------------------------------------


def cli(*args):
    from typer.testing import CliRunner

    from satsang.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def one_red_line(result, *words: str) -> str:
    """The result of a command that failed as a fault should: exit 1, no traceback, one line on stderr."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def state_of(workspace: Workspace) -> tuple:
    _, items, sources = workspace.snapshot()
    return workspace.generation, items.sort("item_id").to_dicts(), sources.sort("source_id").to_dicts(), sorted(p.name for p in (workspace.root / "sources").iterdir())


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".tmp-*"))


def fill(disk: Path, leave: int) -> Path:
    """A filler file taking all but `leave` bytes of the disk."""
    free = shutil.disk_usage(disk).free
    filler = disk / "filler"
    with open(filler, "wb") as file:
        file.truncate(0)
        file.write(b"\0" * max(0, free - leave))
    return filler


def prose_book(path: Path, paragraphs: int, seed: int) -> Path:
    import random

    rng = random.Random(seed)
    words = "who am i the self is silence awareness mind thought seeker practice abide still".split()
    path.write_text("\n\n".join(" ".join(rng.choice(words) for _ in range(80)) + "." for _ in range(paragraphs)), encoding="utf-8")
    return path


@pytest.mark.parametrize("stage", ["items", "source"])
def test_disk_full_during_ingest_is_one_line_and_leaves_nothing(small_disk: Path, tmp_path: Path, stage: str):
    from curation.workspace import init_workspace

    workspace = init_workspace(small_disk / "ws")
    workspace.ingest([TALKS], "dialogue")
    before = state_of(workspace)
    book = prose_book(tmp_path / "book.txt", 2000, seed=1)  # ~900 KB
    # The items are staged first (as the book is parsed), then the source is stored and the generation
    # linked: room for neither, or for the staged items and half the source.
    scratch = init_workspace(tmp_path / "scratch")
    scratch.ingest([book], "prose")
    staged = sum(part.path.stat().st_size for part in scratch.item_parts()[1])
    filler = fill(small_disk, 20_000 if stage == "items" else staged + book.stat().st_size // 2)
    line = one_red_line(cli("ingest", book, "--kind", "prose", "-w", workspace.root), "disk full", "nothing was committed")
    assert ("/staging/" in line, "/sources/" in line) == (stage == "items", stage == "source"), line
    assert state_of(workspace) == before and leftovers(workspace.root) == []
    assert not any((workspace.root / "staging").iterdir())
    filler.unlink()
    assert cli("ingest", book, "--kind", "prose", "-w", workspace.root).exit_code == 0  # room again: it goes in


def test_disk_full_during_an_export_is_one_line_and_leaves_nothing(small_disk: Path):
    from curation.workspace import init_workspace

    workspace = init_workspace(small_disk / "ws")
    workspace.ingest([TALKS], "dialogue")
    run_dedup(workspace, progress=False)
    filler = fill(small_disk, 60_000)
    one_red_line(cli("export", "--name", "talks", "--include-unreviewed", "-w", workspace.root), "disk full", "nothing was exported")
    assert list_versions(workspace) == [] and leftovers(workspace.root) == []
    filler.unlink()
    assert cli("export", "--name", "talks", "--include-unreviewed", "-w", workspace.root).exit_code == 0


def test_a_truncated_current_table_names_it_and_the_way_back(filled: Workspace):
    filled.update_items(lambda items: items.sample(fraction=1.0, shuffle=True, seed=1))  # one more generation, so one to go back to
    head = json.loads((filled.root / "HEAD").read_text())
    table = filled.root / "tables" / f"{head['generation']:06d}" / "items" / "part-00000.parquet"
    table.write_bytes(table.read_bytes()[:1000])
    for command in (("status",), ("dedup",), ("export", "--name", "x", "--include-unreviewed")):
        line = one_red_line(cli(*command, "-w", filled.root), str(table), "damaged", f"previous generation {head['previous']}", "to roll back")
    instruction = line.split("write ", 1)[1].split(" into ")[0]
    (filled.root / "HEAD").write_text(instruction + "\n")  # what the line says to do
    result = cli("status", "-w", filled.root)
    assert result.exit_code == 0, result.output


def test_a_head_naming_a_generation_as_a_string_that_is_not_there(filled: Workspace):
    before = (filled.root / "HEAD").read_bytes()
    (filled.root / "HEAD").write_text('{"generation": "5", "previous": 0}')
    one_red_line(cli("status", "-w", filled.root), "generation 5")
    one_red_line(cli("dedup", "-w", filled.root), "generation 5")
    (filled.root / "HEAD").write_bytes(before)
    assert cli("status", "-w", filled.root).exit_code == 0


def test_a_lock_path_that_is_a_directory(filled: Workspace):
    before = state_of(filled)
    lock = filled.root / "lock"
    lock.unlink()
    lock.mkdir()
    one_red_line(cli("dedup", "-w", filled.root), str(lock), "is a directory")
    lock.rmdir()
    assert state_of(filled) == before


@pytest.mark.parametrize("option, value, words", [("--threshold", "5", "threshold"), ("--num-perm", "0", "num_perm"), ("--shingle-size", "-1", "shingle_size")])
def test_bad_dedup_settings(filled: Workspace, option: str, value: str, words: str):
    before = state_of(filled)
    one_red_line(cli("dedup", option, value, "-w", filled.root), words)
    assert state_of(filled) == before


def test_a_scoring_model_that_is_not_there(filled: Workspace):
    before = state_of(filled)
    one_red_line(cli("score", "--model", "/nonexistent", "-w", filled.root), "/nonexistent", "no such model")
    assert state_of(filled) == before


def test_show_html_into_a_missing_directory(filled: Workspace, tmp_path: Path):
    export_version(filled, ALL_UNREVIEWED)
    one_red_line(cli("show", "talks", "--html", tmp_path / "missing" / "card.html", "-w", filled.root), "no directory")
    assert not (tmp_path / "missing").exists()


def unreadable_file(tmp_path: Path) -> Path:
    """A file this process cannot read: mode 000, or, for root (which reads anything), one the kernel refuses."""
    path = tmp_path / "locked.txt"
    path.write_text("Some prose.\n")
    path.chmod(0)
    if os.access(path, os.R_OK):
        return Path("/proc/self/mem")  # exists, is a file, and read() from its start fails with EIO
    return path


@pytest.mark.parametrize("make, words", [
    (unreadable_file, ("cannot read",)),
    (lambda d: (d / "u16.txt").write_bytes("Who am I?\nThe Self.\n".encode("utf-16")) and d / "u16.txt", ("UTF-16", "iconv -f UTF-16 -t UTF-8")),
    (lambda d: (d / "u16le.txt").write_bytes("Who am I?\nThe Self.\n".encode("utf-16-le")) and d / "u16le.txt", ("UTF-16LE", "iconv")),
    (lambda d: ((d / "a").symlink_to(d / "b"), (d / "b").symlink_to(d / "a"), d / "a")[-1], ("symbolic link loop",)),
], ids=["unreadable", "utf-16", "utf-16le-no-bom", "symlink-loop"])
def test_a_file_that_cannot_be_a_source(filled: Workspace, tmp_path: Path, make, words):
    before = state_of(filled)
    path = make(tmp_path)
    one_red_line(cli("ingest", path, "--kind", "prose", "-w", filled.root), str(path), *words)
    assert state_of(filled) == before and leftovers(filled.root) == []
