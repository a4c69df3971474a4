"""The workspace: layout, ingest, idempotence, rejected input, crash safety, status."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from curation.dialogue import DialogueConfig, parse_dialogue
from curation.schema import ITEM_SCHEMA, SCHEMA_VERSION, SOURCE_SCHEMA
from curation.sources import IngestError
from curation.workspace import (
    PAUSE_ENV,
    Workspace,
    WorkspaceError,
    default_workspace_path,
    init_workspace,
)

DATA = Path(__file__).parent / "data"
TALKS = DATA / "talks-19-24.txt"  # talks 19-24 of Talks with Sri Ramana Maharshi: D.:/M.: dialogue
NAN_YAR = DATA / "nan-yar-excerpt.txt"  # the opening paragraphs of Nan Yar?: prose


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path, with its bytes: 'unchanged' means equal trees."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def committed_state(root: Path) -> dict[str, bytes]:
    """HEAD and the tables it points to: what a reader sees."""
    generation = json.loads((root / "HEAD").read_text())["generation"]
    tables = root / "tables" / f"{generation:06d}"
    files = sorted(p for p in tables.rglob("*") if p.is_file())
    return {"HEAD": (root / "HEAD").read_bytes(), **{str(p.relative_to(tables)): p.read_bytes() for p in files}}


@pytest.fixture
def filled(workspace: Workspace) -> Workspace:
    workspace.ingest([TALKS], "dialogue", title="Talks with Sri Ramana Maharshi")
    workspace.ingest([NAN_YAR], "prose")
    return workspace


# ---- layout --------------------------------------------------------------------------


def test_init_creates_an_empty_workspace_with_the_fixed_schemas(tmp_path: Path):
    root = tmp_path / "new"
    init_workspace(root)

    manifest = json.loads((root / "workspace.json").read_text())
    assert manifest["format_version"] == SCHEMA_VERSION
    assert manifest["created_at"].endswith("+00:00")
    assert json.loads((root / "HEAD").read_text()) == {"generation": 0, "previous": None}
    assert sorted(tree(root)) == [
        "HEAD",
        "lock",
        "tables/000000/sources.parquet",  # and an empty items/ directory: no parts yet
        "workspace.json",
    ]
    opened = Workspace.open(root)
    assert opened.items().schema == pl.Schema(ITEM_SCHEMA)
    assert opened.sources().schema == pl.Schema(SOURCE_SCHEMA)
    assert opened.items().height == 0


def test_init_refuses_an_existing_workspace(workspace: Workspace):
    before = tree(workspace.root)
    with pytest.raises(WorkspaceError, match="already a satsang workspace"):
        init_workspace(workspace.root)
    assert tree(workspace.root) == before


def test_open_names_a_directory_that_is_not_a_workspace(tmp_path: Path):
    with pytest.raises(WorkspaceError, match=f"{tmp_path}: not a satsang workspace"):
        Workspace.open(tmp_path)


def test_open_refuses_another_format_version(workspace: Workspace):
    manifest = workspace.root / "workspace.json"
    manifest.write_text(json.dumps({"format_version": SCHEMA_VERSION + 1, "created_at": "x"}))
    with pytest.raises(WorkspaceError, match=f"format version {SCHEMA_VERSION + 1}"):
        Workspace.open(workspace.root)


def test_default_location_is_the_environment_variable_else_the_current_directory(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("SATSANG_WORKSPACE", raising=False)
    assert default_workspace_path() == Path("satsang-workspace")
    monkeypatch.setenv("SATSANG_WORKSPACE", str(tmp_path / "elsewhere"))
    assert default_workspace_path() == tmp_path / "elsewhere"
    init_workspace()
    assert Workspace.open().root == tmp_path / "elsewhere"


# ---- ingest ---------------------------------------------------------------------------


def test_ingest_keeps_the_sources_byte_for_byte_and_their_items(filled: Workspace):
    sources = filled.sources()
    assert sources.schema == pl.Schema(SOURCE_SCHEMA)
    assert sources["kind"].to_list() == ["dialogue", "prose"]
    for row, path in zip(sources.iter_rows(named=True), (TALKS, NAN_YAR)):
        original = path.read_bytes()
        assert row["source_id"] == hashlib.sha256(original).hexdigest()
        assert (filled.root / row["stored_path"]).read_bytes() == original
        assert row["stored_path"] == f"sources/{row['source_id']}.txt"
        assert row["original_path"] == str(path.resolve())
        assert (row["n_bytes"], row["n_chars"]) == (len(original), len(original.decode()))
        assert json.loads(row["parser_config"])  # the config that shaped the items is kept
    assert sources["parser_version"].to_list() == filled.items()["parser_version"].unique(maintain_order=True).to_list()
    assert sources["title"].to_list() == ["Talks with Sri Ramana Maharshi", "nan-yar-excerpt"]
    assert sources["convention"].to_list() == ["dm", ""]

    items = filled.items()
    assert items.schema == pl.Schema(ITEM_SCHEMA)
    counts = dict(items.group_by("kind").len().iter_rows())
    assert counts["pair"] > 5 and counts["passage"] > 3
    assert sources["n_items"].to_list() == [counts["pair"], counts["passage"]]
    assert items.select("source_id", "item_id").is_unique().all()
    pair = items.filter(pl.col("kind") == "pair").row(0, named=True)
    assert pair["question"] and pair["answer"] and pair["section"].startswith("Talk ")


def test_ingest_matches_the_parser_and_reports_its_counts(workspace: Workspace):
    report = workspace.ingest([TALKS], "dialogue", title="Talks with Sri Ramana Maharshi")
    parsed = parse_dialogue(TALKS.read_text(), report.files[0].source_id, DialogueConfig(), "Talks with Sri Ramana Maharshi")

    (file,) = report.files
    assert (file.status, file.convention, report.generation) == ("ingested", "dm", 1)
    assert file.n_items == len(parsed.items) == report.n_new_items
    assert file.parse_report == parsed.report
    assert workspace.items()["item_id"].to_list() == [item["item_id"] for item in parsed.items]


def test_reingest_adds_nothing_and_changes_no_id(filled: Workspace, tmp_path: Path):
    before = tree(filled.root)
    ids = filled.items()["item_id"].to_list()
    renamed_copy = tmp_path / "same-bytes-other-name.txt"
    renamed_copy.write_bytes(TALKS.read_bytes())

    report = filled.ingest([TALKS, renamed_copy], "dialogue")

    assert [f.status for f in report.files] == ["already ingested", "already ingested"]
    assert report.generation is None and report.n_new_items == 0
    assert tree(filled.root) == before
    assert filled.items()["item_id"].to_list() == ids


def test_the_same_file_twice_in_one_batch_is_ingested_once(workspace: Workspace):
    report = workspace.ingest([NAN_YAR, NAN_YAR], "prose")
    assert [f.status for f in report.files] == ["ingested", "already ingested"]
    assert workspace.sources().height == 1


def test_a_source_that_yields_an_item_id_twice_keeps_the_first(workspace: Workspace, tmp_path: Path):
    # The same talks twice over: every exchange of the second copy repeats one of the first.
    doubled = tmp_path / "talks-twice.txt"
    doubled.write_text(TALKS.read_text() + "\n" + TALKS.read_text())
    source_id = hashlib.sha256(doubled.read_bytes()).hexdigest()
    parsed = parse_dialogue(doubled.read_text(), source_id).items
    first_start = {}
    for item in parsed:
        first_start.setdefault(item["item_id"], item["start"])
    assert len(first_start) < len(parsed)

    (file,) = workspace.ingest([doubled], "dialogue").files

    items = workspace.items()
    assert file.n_items == len(first_start) == items.height
    assert file.n_duplicate_item_ids == len(parsed) - len(first_start)
    assert dict(zip(items["item_id"], items["start"])) == first_start


def test_commits_keep_head_and_the_generation_before_it(workspace: Workspace, tmp_path: Path):
    for i in range(3):
        extra = tmp_path / f"prose-{i}.txt"
        extra.write_text(NAN_YAR.read_text() + f"\nA closing line, number {i}.\n")
        workspace.ingest([extra], "prose")
    assert workspace.generation == 3
    assert sorted(p.name for p in (workspace.root / "tables").iterdir()) == ["000002", "000003"]
    assert workspace.sources().height == 3


# ---- rejected input -------------------------------------------------------------------

BAD_INPUTS = {
    # name: (kind, bytes to write (None: leave the path missing), expected message, expected line)
    "empty.txt": ("prose", b"", "empty file", None),
    "blank.txt": ("prose", b"  \n\n\t\n", "file holds only whitespace", None),
    "binary.txt": ("prose", b"line one\nline two\nthree\x00\x01\x02\n", r"binary file \(NUL byte at byte offset 23\)", 3),
    "latin1.txt": ("prose", "Who am I?\nThe Self is n\u00e9ither\n".encode("latin-1"), r"not UTF-8 text \(invalid byte 0xe9 at byte offset 23\)", 2),
    # Prose given as dialogue (its first paragraph: the whole excerpt is already in the workspace).
    "nan-yar-as-dialogue.txt": ("dialogue", NAN_YAR.read_text().split("\n\n")[0].encode(), "no speaker markers", None),
    "missing.txt": ("prose", None, "no such file", None),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_file_and_changes_nothing(filled: Workspace, tmp_path: Path, name: str):
    kind, content, message, line = BAD_INPUTS[name]
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    before = tree(filled.root)

    with pytest.raises(IngestError) as caught:
        filled.ingest([path], kind)

    error = caught.value
    assert (error.path, error.line) == (str(path), line)
    where = str(path) if line is None else f"{path}:{line}"
    assert str(error).startswith(f"{where}: ")
    assert "\n" not in str(error)
    assert re.search(message, str(error))
    assert tree(filled.root) == before


def test_a_directory_is_rejected(filled: Workspace, tmp_path: Path):
    before = tree(filled.root)
    with pytest.raises(IngestError, match=f"^{tmp_path}: is a directory"):
        filled.ingest([tmp_path], "prose")
    assert tree(filled.root) == before


def test_one_bad_file_among_good_ones_commits_nothing(workspace: Workspace, tmp_path: Path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    before = tree(workspace.root)
    with pytest.raises(IngestError, match="empty.txt: empty file"):
        workspace.ingest([NAN_YAR, empty], "prose")
    assert tree(workspace.root) == before
    assert workspace.sources().height == 0


@pytest.mark.parametrize(
    "meddle, message",
    [
        (lambda book: book.write_text(TALKS.read_text(encoding="utf-8").replace("Maharshi", "Maharishi"), encoding="utf-8"),
         "file changed while it was being ingested; nothing was committed"),
        # The commit copies the file block by block (never holding it whole): one gone by then is named as the reader names it.
        (lambda book: book.unlink(), "no such file"),
    ],
    ids=["changed", "removed"],
)
def test_a_file_changed_between_its_parse_and_the_commit_commits_nothing(workspace: Workspace, tmp_path: Path, meddle, message):
    # Files are parsed outside the writer lock (on any executor); the commit re-checks their bytes.
    book = tmp_path / "talks.txt"
    book.write_bytes(TALKS.read_bytes())
    before = tree(workspace.root)

    def meddle_after_parse(path, phase):
        if phase == "parsed" and path == book:
            meddle(book)

    with pytest.raises(IngestError) as caught:
        workspace.ingest([DATA / "talks-excerpt.txt", book], "dialogue", progress=meddle_after_parse)
    assert str(caught.value) == f"{book}: {message}"
    assert tree(workspace.root) == before  # the first file's source, stored before the check failed, is gone
    # left as it is now (put back if removed), the same call commits
    if not book.exists():
        book.write_bytes(TALKS.read_bytes())
    assert workspace.ingest([book], "dialogue").n_new_sources == 1


def test_a_stored_source_is_the_file_byte_for_byte_across_copy_blocks(workspace: Workspace, tmp_path: Path, monkeypatch):
    import curation.sources

    monkeypatch.setattr(curation.sources, "COPY_BLOCK", 1000)  # many blocks, and a last partial one
    report = workspace.ingest([TALKS], "dialogue")
    stored = workspace.root / workspace.sources()["stored_path"][0]
    assert stored.read_bytes() == TALKS.read_bytes() and report.files[0].source_id == workspace.sources()["source_id"][0]


def test_a_pdf_changed_between_its_parse_and_the_commit_commits_nothing(workspace: Workspace, tmp_path: Path):
    sys.path.insert(0, str(Path(__file__).parent))
    from pdf_writer import write_pdf

    pages = [["D.: Who am I?", "M.: Find out who asks."], ["D.: How?", "M.: By enquiry into the source of the I."]]
    pdf = write_pdf(tmp_path / "talks.pdf", pages)
    before = tree(workspace.root)

    def rewrite_after_parse(path, phase):
        if phase == "parsed":
            write_pdf(pdf, [*pages, ["D.: And then?", "M.: Then there is no one left to ask."]])

    with pytest.raises(IngestError, match="file changed while it was being ingested"):
        workspace.ingest([pdf], "dialogue", progress=rewrite_after_parse)
    assert tree(workspace.root) == before
    report = workspace.ingest([pdf], "dialogue")
    assert report.n_new_sources == 1 and report.files[0].parse_report["extraction"]["pages"] == 3


# ---- crash safety and locking ---------------------------------------------------------


def start_paused_ingest(workspace: Workspace, path: Path) -> subprocess.Popen:
    """`satsang ingest` in a subprocess, stopped after writing everything but HEAD."""
    command = [sys.executable, "-m", "satsang.cli", "ingest", str(path), "--kind", "dialogue", "-w", str(workspace.root)]
    process = subprocess.Popen(command, env={**os.environ, PAUSE_ENV: "before-head"}, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    assert line.strip() == "paused at before-head", line
    return process


def test_an_ingest_killed_before_its_commit_leaves_the_workspace_as_it_was(workspace: Workspace):
    workspace.ingest([NAN_YAR], "prose")
    before_tree, before_state, before_items = tree(workspace.root), committed_state(workspace.root), workspace.items()

    process = start_paused_ingest(workspace, TALKS)
    assert len(tree(workspace.root)) > len(before_tree)  # it had written its generation and source
    process.send_signal(signal.SIGKILL)
    process.wait()

    reopened = Workspace.open(workspace.root)
    assert committed_state(workspace.root) == before_state
    assert reopened.items().equals(before_items)
    # The next writer sweeps what the killed one left, back to the exact tree.
    reopened.ingest([NAN_YAR], "prose")
    assert tree(workspace.root) == before_tree
    # And the killed ingest can simply be run again.
    assert reopened.ingest([TALKS], "dialogue").n_new_sources == 1


def test_a_second_writer_waits_for_the_lock_and_gives_up_clearly(workspace: Workspace):
    process = start_paused_ingest(workspace, TALKS)
    try:
        workspace.lock_timeout_s = 0.3
        with pytest.raises(WorkspaceError, match="another satsang command is writing"):
            workspace.ingest([NAN_YAR], "prose")
    finally:
        process.kill()
        process.wait()


# ---- status ---------------------------------------------------------------------------


def test_status_counts_items_per_source_kind_and_stage(filled: Workspace):
    status = filled.status()
    n_pairs, n_passages = filled.sources()["n_items"].to_list()

    assert (status.n_sources, status.n_items, status.generation) == (2, n_pairs + n_passages, 2)
    assert status.counts.select("title", "source_kind", "kind", "stage", "n_items").rows() == [
        ("Talks with Sri Ramana Maharshi", "dialogue", "pair", "ingested", n_pairs),
        ("nan-yar-excerpt", "prose", "passage", "ingested", n_passages),
    ]
    assert status.items_per_stage() == {
        "ingested": n_pairs + n_passages, "dedup": 0, "scored": 0, "critiqued": 0, "reviewed": 0,
    }


def test_status_counts_a_later_stage_by_its_marker_column(filled: Workspace, tmp_path: Path):
    # What a dedup stage will do: add its column; items it has seen get a value.
    filled.update_items(
        lambda items: items.with_columns(
            pl.when(pl.col("kind") == "pair").then(pl.col("item_id")).otherwise(None).alias("dedup_cluster")
        )
    )
    n_pairs, n_passages = filled.sources()["n_items"].to_list()
    assert filled.status().items_per_stage() == {
        "ingested": n_passages, "dedup": n_pairs, "scored": 0, "critiqued": 0, "reviewed": 0,
    }
    # Items ingested afterwards have no value in the column yet: they count as just ingested.
    more = tmp_path / "more-prose.txt"
    more.write_text(NAN_YAR.read_text() + "\nOne more closing line.\n")
    n_more = filled.ingest([more], "prose").n_new_items
    assert filled.status().items_per_stage()["ingested"] == n_passages + n_more
    assert filled.items()["dedup_cluster"].null_count() == n_passages + n_more


def test_update_items_refuses_to_break_the_fixed_schema(filled: Workspace):
    before = tree(filled.root)
    with pytest.raises(WorkspaceError, match=r"\['text'\]"):
        filled.update_items(lambda items: items.drop("text"))
    assert tree(filled.root) == before


def test_status_lists_a_source_that_yielded_no_items(workspace: Workspace, tmp_path: Path):
    # Prose that is nothing but page numbers: valid text, and no passage in it.
    numbers = tmp_path / "page-numbers.txt"
    numbers.write_text("12\n\n13\n")
    workspace.ingest([numbers], "prose")
    assert workspace.status().counts.select("kind", "stage", "n_items").rows() == [("", "ingested", 0)]
