"""The book catalog: validation line by line, filters, the report, finding the books, ingesting them.

tests/data/catalog-sample.jsonl holds 13 real lines of the Gutenberg annotation
catalog and, between them, 7 deliberately bad ones (and a blank line):

    3  not JSON                 6  no id                 9  contemplative_depth 7
    12 corpus_relevance "essential"                      15 the id of line 1 again
    17 a JSON list, not an object                        19 a path escaping the corpus (../)

Books are made in each test from real prose in tests/data, under the paths the
catalog names or under file names that carry only the id.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from curation.catalog import (
    GUTENBERG_LICENCE,
    RELEVANCE_LEVELS,
    CatalogEntry,
    CatalogError,
    CatalogFilter,
    find_books,
    ingest_selection,
    load_catalog,
    plot_selection,
    select,
    vocabulary_warnings,
)
from curation.workspace import init_workspace
from satsang.render.stages import render_selection

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "catalog-sample.jsonl"
REAL_CATALOG = Path(__file__).resolve().parents[2] / "shared" / "data" / "catalog" / "gutenberg-annotations.jsonl"
GOOD_LINES = [1, 2, 4, 5, 7, 10, 11, 13, 14, 16, 18, 20, 21]
# Real prose, one file per synthetic book, so that every book has its own bytes.
PROSE = [DATA / name for name in ("nan-yar-excerpt.txt", "prose-talks-foreword.txt", "prose-ulladu-narpadu.txt",
                                  "prose-upadesa-undiyar.txt", "prose-nan-yar.txt")]


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(SAMPLE)


@pytest.fixture(scope="module")
def entries(catalog) -> dict[str, CatalogEntry]:
    return {entry.id: entry for entry in catalog.entries}


# ---- validation ------------------------------------------------------------------------------


def test_bad_lines_are_reported_with_their_numbers_and_the_rest_is_loaded(catalog):
    entries, problems = catalog  # unpacks as the pair
    assert [entry.line for entry in entries] == GOOD_LINES
    assert catalog.n_lines == 20  # the blank line 8 is not counted, nor reported
    messages = {problem.line: problem.message for problem in problems}
    assert sorted(messages) == [3, 6, 9, 12, 15, 17, 19]
    assert messages[3].startswith("not valid JSON")
    assert messages[6] == "missing id"
    assert messages[9] == "contemplative_depth must be 1, 2 or 3, got 7"
    assert messages[12] == "corpus_relevance must be one of core, useful, marginal, questionable, got 'essential'"
    assert messages[15] == "duplicate id 'PG71095' (first on line 1)"
    assert messages[17] == "not a JSON object but list"
    assert messages[19].startswith("path must be a relative path inside the corpus")
    assert str(problems[0]) == f"{SAMPLE}:3: {messages[3]}"


def test_entries_carry_every_field_and_the_annotator_warnings(entries):
    zen = entries["PG7015"]
    assert (zen.title, zen.author) == ("Buddhist Psalms translated from the Japanese of Shinran Shonin", "Shinran")
    assert (zen.tradition, zen.tradition_secondary, zen.orientation) == ("buddhist-zen", "buddhist-jodo-shin", "devotional-prayer")
    assert (zen.contemplative_depth, zen.corpus_relevance, zen.confidence, zen.era) == (3, "core", "high", "medieval")
    assert zen.tokens == 20696 and zen.accessibility in (1, 2, 3) and zen.original_language
    assert zen.path == "religion/PG7015_Shinran_Buddhist_Psalms_translated_from_the_Japanese_of_Sh.txt"
    assert zen.themes[:2] == ("surrender", "devotion")
    assert set(zen.warnings) == {"invalid tradition_secondary: buddhist-jodo-shin", "theme count 7, expected 2-5",
                                 "invalid theme: grace"}
    # off the vocabulary is a warning, not a rejection: the book stays selectable
    assert entries["PG12096"].tradition == "japanese-shinto"
    assert entries["PG12096"].warnings == ("invalid tradition: japanese-shinto",)
    assert entries["PG30216"].warnings == ()


def test_our_vocabulary_check_words_warnings_as_the_annotator_does(entries):
    for entry in entries.values():
        assert set(vocabulary_warnings(entry)) == set(entry.warnings), entry.id


def test_entry_construction_validates():
    good = dict(id="X1", title="T", path="a/X1.txt", tokens=10, tradition="taoist", orientation="poetry",
                contemplative_depth=2, themes=("stillness",), era="ancient", confidence="high", corpus_relevance="core")
    CatalogEntry(**good)
    for change, message in [
        ({"contemplative_depth": 0}, "contemplative_depth"),
        ({"tokens": -1}, "tokens"),
        ({"tokens": True}, "tokens"),
        ({"confidence": "certain"}, "confidence"),
        ({"path": "/abs/X1.txt"}, "path"),
        ({"path": "a/../../X1.txt"}, "path"),
        ({"title": " "}, "title"),
        ({"themes": ("ok", 3)}, "themes"),
    ]:
        with pytest.raises(ValueError, match=message):
            CatalogEntry(**{**good, **change})


def test_wrong_types_of_minor_fields_are_warnings(tmp_path):
    path = tmp_path / "catalog-minor.jsonl"
    record = json.loads(SAMPLE.read_text(encoding="utf-8").splitlines()[0])
    record.update(author=["two", "authors"], accessibility=9, notes=None)
    path.write_bytes(json.dumps(record).encode() + b"\n\xff\xfe broken bytes\n")
    entries, problems = load_catalog(path)
    assert len(entries) == 1 and entries[0].author == "" and entries[0].accessibility is None
    assert "author is not a string; dropped" in entries[0].warnings
    assert "accessibility must be 1-3, got 9; dropped" in entries[0].warnings
    assert [(p.line, p.message) for p in problems] == [(2, "not UTF-8 (invalid byte 0xff at column 1)")]


def test_an_unreadable_catalog_is_an_error(tmp_path):
    with pytest.raises(CatalogError, match="no such file"):
        load_catalog(tmp_path / "missing.jsonl")
    with pytest.raises(CatalogError, match="is a directory"):
        load_catalog(tmp_path)


@pytest.mark.skipif(not REAL_CATALOG.is_file(), reason="the catalog is not in ../shared/data/catalog")
def test_the_real_catalog_every_line_processed_problems_reported_not_raised():
    catalog = load_catalog(REAL_CATALOG)
    n_lines = sum(1 for line in REAL_CATALOG.read_bytes().split(b"\n") if line.strip())
    assert n_lines == catalog.n_lines == 3154
    assert len(catalog.entries) + len(catalog.problems) == 3154
    assert len({entry.id for entry in catalog.entries}) == len(catalog.entries)
    for problem in catalog.problems:  # whatever they are, each names its line
        assert str(problem).startswith(f"{REAL_CATALOG}:{problem.line}: ")
    # the annotator's own warnings are kept, and our vocabulary check finds exactly those
    raw = {json.loads(line)["id"]: json.loads(line).get("_warnings", []) for line in REAL_CATALOG.open(encoding="utf-8")}
    for entry in catalog.entries:
        assert set(entry.warnings) == set(raw[entry.id]) == set(vocabulary_warnings(entry)), entry.id
    core = select(catalog.entries, CatalogFilter(relevance=("core",)))
    assert 0 < len(core) < len(catalog.entries)
    assert all(entry.corpus_relevance == "core" for entry in core.entries)


# ---- filters ---------------------------------------------------------------------------------


def ids(selection) -> list[str]:
    return [entry.id for entry in selection.entries]


def test_filters(catalog):
    entries = catalog.entries
    assert len(select(entries)) == 13
    assert ids(select(entries, CatalogFilter(traditions=("buddhist-*",)))) == ["PG7015", "PG30216"]
    # secondary traditions only when asked: PG42290 (taoist) and PG12096 (japanese-shinto) have buddhist-zen second
    assert ids(select(entries, CatalogFilter(traditions=("buddhist-zen",), include_secondary=True))) == ["PG7015", "PG42290", "PG12096"]
    assert ids(select(entries, CatalogFilter(min_depth=3))) == ["PG71095", "PG7015", "PG1469", "PG42290"]
    assert ids(select(entries, CatalogFilter(max_depth=1))) == ["PG48153", "PG45540"]
    assert ids(select(entries, CatalogFilter(relevance=("questionable",)))) == ["PG45540"]
    assert ids(select(entries, CatalogFilter(confidence=("low",)))) == ["PG48153"]
    assert ids(select(entries, CatalogFilter(eras=("medieval",)))) == ["PG7015", "PG60316"]
    assert ids(select(entries, CatalogFilter(orientations=("dialogue", "poetry")))) == ["PG1469", "PG42290", "PG1181"]
    assert ids(select(entries, CatalogFilter(themes=("divine-love", "witness-awareness")))) == ["PG71095", "PG1469", "PG74250"]
    assert ids(select(entries, CatalogFilter(min_tokens=90_000, max_tokens=100_000))) == ["PG71095", "PG60316"]
    combined = CatalogFilter(relevance=("core", "useful"), min_depth=2, traditions=("hindu-*", "advaita-vedanta"))
    assert ids(select(entries, combined)) == ["PG71095", "PG74250"]
    assert combined.describe() == "tradition hindu-*|advaita-vedanta, depth 2-3, relevance core|useful"


def test_malformed_filters_are_errors():
    with pytest.raises(CatalogError, match="depth range"):
        CatalogFilter(min_depth=3, max_depth=2)
    with pytest.raises(CatalogError, match="relevance must be among"):
        CatalogFilter(relevance=("essential",))
    with pytest.raises(CatalogError, match="min_tokens 10 is above max_tokens 5"):
        CatalogFilter(min_tokens=10, max_tokens=5)


# ---- the report --------------------------------------------------------------------------------


def test_table_counts_books_and_tokens_by_tradition_and_relevance(catalog):
    selection = select(catalog.entries, CatalogFilter(min_depth=2))
    summary = selection.summary()
    assert summary["books"].sum() == len(selection) == 11
    assert summary["tokens"].sum() == selection.n_tokens == sum(e.tokens for e in selection.entries)
    # traditions by tokens, most first; within one, relevance best first
    assert summary.row(0, named=True) == {"tradition": "transcendentalist", "corpus_relevance": "core",
                                          "books": 1, "tokens": 120595}
    console = Console(record=True, width=160)
    console.print(render_selection(selection))
    text = console.export_text()
    assert "Selection: 11 of 13 books" in text and "depth 2-3" in text
    assert [level for level in RELEVANCE_LEVELS if f" {level} " in text] == ["core", "useful"]
    total_line = [line for line in text.splitlines() if line.strip("│ ").startswith("total")][0]
    # core: 120,595 + 96,216 + 43,156 + 20,696 + 14,192; useful: 92,131 + 81,962 + 44,638 + 43,491 + 29,685 + 28,841
    assert total_line.split("│")[2:5] == [" 5 / 295k ", " 6 / 321k ", " 11 / 616k "]
    taoist = [line for line in text.splitlines() if "taoist" in line][0]
    assert taoist.split("│")[2:5] == ["  1 / 43k ", "        - ", "   1 / 43k "]


def test_plot(tmp_path, catalog):
    path = plot_selection(select(catalog.entries), tmp_path / "plots" / "selection.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    empty = plot_selection(select(catalog.entries, CatalogFilter(traditions=("none",))), tmp_path / "empty.png")
    assert empty.is_file()


# ---- finding and ingesting the books ---------------------------------------------------------------


@pytest.fixture
def books_dir(tmp_path, entries) -> Path:
    """Some selected books at the catalog's path, some by id elsewhere, one empty, decoys, the rest absent."""
    root = tmp_path / "books"

    def put(relative: str, source: Path | None) -> None:
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source is None:
            target.write_bytes(b"")
        else:
            shutil.copyfile(source, target)

    put(entries["PG71095"].path, PROSE[0])  # at the catalog's path
    put(entries["PG1469"].path, PROSE[1])
    put("elsewhere/deeper/PG7015.txt", PROSE[2])  # by id only
    put("misc/PG30216_Catechism_renamed.txt", PROSE[3])  # by id and an underscore
    put("misc/PG70150_Not_This_One.txt", PROSE[4])  # decoys: other ids sharing a prefix
    put("misc/PG701.txt", PROSE[4])
    put("misc/PG30216.md", PROSE[4])  # not a .txt
    put(entries["PG60316"].path, None)  # found, but empty: the ingest rejects it
    return root


def test_find_books_by_path_then_by_id(books_dir, catalog):
    selection = select(catalog.entries, CatalogFilter(relevance=("core", "useful"), min_depth=2))
    found, missing, outside = find_books(selection, books_dir)
    assert outside == []
    assert [(book.entry.id, book.how) for book in found] == [
        ("PG71095", "path"), ("PG7015", "id"), ("PG30216", "id"), ("PG1469", "path"), ("PG60316", "path")]
    assert found[1].path == books_dir / "elsewhere" / "deeper" / "PG7015.txt"
    assert found[2].path == books_dir / "misc" / "PG30216_Catechism_renamed.txt"
    assert [entry.id for entry in missing] == ["PG42290", "PG42865", "PG16643", "PG74250", "PG1181", "PG12096"]
    with pytest.raises(CatalogError, match="not a directory"):
        find_books(selection, books_dir / "nothing-here")


def test_files_that_resolve_outside_the_books_dir_are_refused(tmp_path, books_dir, entries):
    """A symlink found by id, or a linked subdirectory on the catalog path, must not pull in an outside file.

    ('..' in a catalog path is refused when the catalog is read.)
    """
    from dataclasses import replace

    outside_dir = tmp_path / "private"
    outside_dir.mkdir()
    secret = outside_dir / "PG74250.txt"
    secret.write_text("not a book of the corpus\n" * 20, encoding="utf-8")
    (books_dir / "links").mkdir()
    (books_dir / "links" / "PG74250.txt").symlink_to(secret)  # a linked file, found by id
    (books_dir / "linked-dir").symlink_to(outside_dir, target_is_directory=True)
    (outside_dir / "PG1181.txt").write_text("also outside\n" * 20, encoding="utf-8")
    wanted = [
        entries["PG74250"],
        replace(entries["PG1181"], path="linked-dir/PG1181.txt"),  # through a linked subdirectory
        entries["PG1469"],  # an ordinary book, found as before
    ]
    found, missing, outside = find_books(wanted, books_dir)
    assert [book.entry.id for book in found] == ["PG1469"]
    assert missing == []
    assert [(entry.id, path.resolve()) for entry, path in outside] == [
        ("PG74250", secret.resolve()), ("PG1181", (outside_dir / "PG1181.txt").resolve())]

    found, missing, outside = find_books(wanted, books_dir, follow_links=True)
    assert [book.entry.id for book in found] == ["PG74250", "PG1181", "PG1469"] and outside == []


def test_ingest_selection_as_prose_with_catalog_titles(tmp_path, books_dir, catalog):
    selection = select(catalog.entries, CatalogFilter(relevance=("core", "useful"), min_depth=2))
    found, _, _ = find_books(selection, books_dir)
    workspace = init_workspace(tmp_path / "ws")
    result = ingest_selection(workspace, found)
    assert [(book.entry.id, message) for book, message in result.rejected] == [("PG60316", "empty file")]
    assert result.report.n_new_sources == 4 and result.report.generation == workspace.generation == 1

    sources = workspace.sources()
    titles = {entry.id: entry.title for entry in selection.entries}
    assert sources["title"].to_list() == [titles[i] for i in ("PG71095", "PG7015", "PG30216", "PG1469")]
    assert set(sources["kind"]) == {"prose"} and set(sources["licence"]) == {GUTENBERG_LICENCE}
    assert sources["original_path"].to_list() == [str(book.path.resolve()) for book in found[:4]]
    items = workspace.items()
    assert set(items["kind"]) == {"passage"} and items.height > 20
    per_source = items.group_by("source_id").len()
    assert per_source.height == 4
    # each item's text is taken from its source, span by span
    for row in items.head(20).iter_rows(named=True):
        source = workspace.source_text(row["source_id"])
        assert row["text"] == " ".join(" ".join(source[s:e].split()) for s, e in row["text_spans"])

    again = ingest_selection(workspace, found)
    assert again.report.generation is None
    assert [f.status for f in again.report.files] == ["already ingested"] * 4


def test_a_licence_in_the_catalog_line_wins(tmp_path, books_dir, entries):
    from dataclasses import replace

    book = find_books([replace(entries["PG1469"], licence="CC0")], books_dir)[0][0]
    workspace = init_workspace(tmp_path / "ws")
    ingest_selection(workspace, [book])
    assert workspace.sources()["licence"].to_list() == ["CC0"]
    assert isinstance(workspace.items(), pl.DataFrame)
