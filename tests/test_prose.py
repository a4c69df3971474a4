"""Prose splitting on real text: excerpts of the books in tests/data/prose-*.txt."""

import re
from pathlib import Path

import polars as pl
import pytest

from curation import schema
from curation.prose import PARSER_VERSION, ProseConfig, count_tokens, sentence_splitter, split_prose

DATA = Path(__file__).parent / "data"
BOOKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "books"
SOURCE_ID = "0123456789ab" + "f" * 52
FIXTURES = ["nan-yar", "ulladu-narpadu", "upadesa-undiyar", "talks-foreword", "talks-header"]
TALKS_TITLE = "Talks with Sri Ramana Maharshi"


def read(name: str) -> str:
    return (DATA / f"prose-{name}.txt").read_text(encoding="utf-8")


def joined_spans(text: str, spans: list[list[int]]) -> str:
    return " ".join(" ".join(text[start:end].split()) for start, end in spans)


def blank_line_blocks(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\S(?:.|\n(?!\s*\n))*", text)]


@pytest.mark.parametrize("name", FIXTURES)
def test_spans_slice_back_exactly_to_passage_text(name):
    text = read(name)
    passages = split_prose(text, SOURCE_ID, title=TALKS_TITLE)
    assert passages
    for passage in passages:
        assert joined_spans(text, passage["text_spans"]) == passage["text"]
        assert passage["start"] == passage["text_spans"][0][0]
        assert passage["end"] == passage["text_spans"][-1][1]
    # passages follow each other through the text without overlapping
    starts_and_ends = [offset for p in passages for span in p["text_spans"] for offset in span]
    assert starts_and_ends == sorted(starts_and_ends)


@pytest.mark.parametrize("name", FIXTURES)
def test_rows_have_the_item_schema(name):
    passages = split_prose(read(name), SOURCE_ID, title=TALKS_TITLE)
    frame = pl.DataFrame(passages, schema=schema.ITEM_SCHEMA)
    assert frame.height == len(passages)
    first = passages[0]
    assert set(first) == set(schema.ITEM_SCHEMA)
    assert (first["kind"], first["parser"], first["parser_version"]) == ("passage", "prose", PARSER_VERSION)
    assert first["conversation_id"] == f"{SOURCE_ID[:12]}:{first['section']}"
    assert first["n_words"] == len(first["text"].split())


@pytest.mark.parametrize(
    "config", [ProseConfig(), ProseConfig(target_tokens=40, max_tokens=50, min_tokens=10), ProseConfig(5, 8, 2)]
)
def test_no_passage_exceeds_max_tokens(config):
    text = read("nan-yar")
    passages = split_prose(text, SOURCE_ID, config)
    assert max(count_tokens(p["text"]) for p in passages) <= config.max_tokens
    # nothing is lost when long sentences are cut: every word of the text is in some passage
    assert " ".join(p["text"] for p in passages).split() == text.split()


def test_passages_respect_paragraph_boundaries():
    text = read("nan-yar")
    blocks = blank_line_blocks(text)
    assert len(blocks) == 5
    for passage in split_prose(text, SOURCE_ID, ProseConfig(target_tokens=100)):
        assert any(start <= passage["start"] and passage["end"] <= end for start, end in blocks)


def test_short_paragraphs_are_grouped_within_a_section():
    text = read("upadesa-undiyar")  # one paragraph a line, under dashed section banners
    lines = [m.span() for m in re.finditer(r"[^\n]+", text) if not m.group().startswith("---")]
    banners = [m.start() for m in re.finditer(r"^---", text, re.MULTILINE)]
    passages = split_prose(text, SOURCE_ID, ProseConfig(min_tokens=30))
    grouped = 0
    for passage in passages:
        covered = [(s, e) for s, e in lines if s < passage["end"] and passage["start"] < e]
        grouped += len(covered) > 1
        # only paragraphs too short to stand alone are grouped, so at most one long one in a passage
        assert sum(count_tokens(text, s, e) >= 30 for s, e in covered) <= 1
        assert not any(passage["start"] < banner < passage["end"] for banner in banners)  # nor a section
    assert grouped
    assert len(passages) < len(split_prose(text, SOURCE_ID, ProseConfig(min_tokens=5)))


def test_target_length_changes_the_number_of_passages():
    text = read("nan-yar")
    counts = [len(split_prose(text, SOURCE_ID, ProseConfig(target_tokens=t))) for t in (50, 100, 200)]
    assert counts[0] > counts[1] > counts[2]


def test_a_short_passage_takes_the_next_sentence_past_the_target():
    # "Who am I?" opens a paragraph whose next sentence alone is past the target
    passages = split_prose(read("nan-yar"), SOURCE_ID)
    assert min(count_tokens(p["text"]) for p in passages) >= ProseConfig().min_tokens
    assert any(p["text"].startswith("Who am I? The sthūla dēha") for p in passages)


def test_sentences_are_not_cut_in_the_middle():
    text = read("nan-yar")
    sentences = [s.text for s in sentence_splitter()(" ".join(text.split())).sents]
    config = ProseConfig(target_tokens=60, max_tokens=80, min_tokens=10)
    passages = [p["text"] for p in split_prose(text, SOURCE_ID, config)]
    short = [s for s in sentences if count_tokens(s) <= config.max_tokens]
    assert len(short) > 10
    assert all(any(sentence in passage for passage in passages) for sentence in short)
    # the over-long sentences are the only ones cut, and they are cut at spaces
    long = [s for s in sentences if count_tokens(s) > config.max_tokens]
    assert long and all(not any(sentence in passage for passage in passages) for sentence in long)
    assert set(" ".join(passages).split()) == set(" ".join(sentences).split())


def test_ids_are_stable_and_follow_the_words():
    text = read("nan-yar")
    first, again = split_prose(text, SOURCE_ID), split_prose(text, SOURCE_ID)
    assert [p["item_id"] for p in first] == [p["item_id"] for p in again]
    assert [p["content_hash"] for p in first] == [p["content_hash"] for p in again]

    edited = split_prose(text.replace("spider spins", "spider weaves"), SOURCE_ID)
    changed = [a["text"] for a, b in zip(first, edited) if a["item_id"] != b["item_id"]]
    assert len(first) == len(edited) and len(changed) == 1 and "spider spins" in changed[0]

    # identity ignores case and spacing; the content hash does not
    recased = split_prose(text.replace("Who am I?", "who am I?").replace("  ", " "), SOURCE_ID)
    assert [p["item_id"] for p in recased] == [p["item_id"] for p in first]
    assert [p["content_hash"] for p in recased] != [p["content_hash"] for p in first]


def test_pdf_lines_join_mid_sentence_and_page_numbers_are_excluded():
    text = read("talks-foreword")
    page_number = text.index("\n1939\n") + 1
    passages = split_prose(text, SOURCE_ID)
    assert not any(s <= page_number < e for p in passages for s, e in p["text_spans"])
    # the line broken before the page number goes on after it, in the same passage
    assert any("from 1935 to It is not all" in p["text"] for p in passages)
    # an ALL-CAPS heading line starts a section and is no passage's text
    assert [p["section"] for p in passages][-1] == "FOREWORD"
    assert not any("FOREWORD" in p["text"] for p in passages)
    # a line that ends a sentence ends its paragraph
    ends = [p["text"][-12:] for p in passages]
    assert any(end.endswith('undermined."') for end in ends)


def test_running_headers_are_cut_out():
    text = read("talks-header")
    assert TALKS_TITLE in text
    passages = split_prose(text, SOURCE_ID, title=TALKS_TITLE)
    assert not any(TALKS_TITLE in p["text"] for p in passages)
    assert any('brought him here." Quite so! The intensity' in p["text"] for p in passages)
    assert any(TALKS_TITLE in p["text"] for p in split_prose(text, SOURCE_ID))


def test_headings_make_sections():
    upadesa = split_prose(read("upadesa-undiyar"), SOURCE_ID)
    assert [p["section"] for p in upadesa][0] == "Preface"
    assert {p["section"] for p in upadesa} == {"Preface", "Text", "PostScript"}
    assert not any("---" in p["text"] for p in upadesa)
    text_section = [p for p in upadesa if p["section"] == "Text"]
    assert [p["turn_index"] for p in text_section] == list(range(len(text_section)))

    # a verse label opens its line: a new section, and its words stay in the text
    ulladu = split_prose(read("ulladu-narpadu"), SOURCE_ID)
    assert [p["section"] for p in ulladu] == ["Maṅgalam verse 1", "Maṅgalam verse 2"] + [f"Verse {n}" for n in range(1, 7)]
    assert ulladu[2]["text"].startswith("Verse 1: because we see the world")
    assert all(p["conversation_id"].endswith(p["section"]) for p in ulladu)


@pytest.mark.parametrize("text", ["", "   ", "\n\n \t\n", "12\n\n13\n"])
def test_empty_input_yields_no_passages(text):
    assert split_prose(text, SOURCE_ID) == []


def test_config_is_recorded_as_sorted_json_and_checked():
    assert ProseConfig().to_json() == '{"max_tokens": 400, "min_tokens": 20, "target_tokens": 200}'
    with pytest.raises(ValueError):
        ProseConfig(target_tokens=500, max_tokens=400)


@pytest.mark.skipif(not BOOKS.is_dir(), reason="the full books live in ../shared/data")
@pytest.mark.parametrize("book", ["nan-yar", "ulladu-narpadu", "upadesa-undiyar", "talks-with-sri-ramana-maharshi"])
def test_whole_books(book):
    # Speed is measured in bench/ingest.py, not asserted here.
    text = (BOOKS / f"{book}.txt").read_text(encoding="utf-8")
    passages = split_prose(text, SOURCE_ID, title=TALKS_TITLE)
    assert passages
    for passage in passages:
        assert joined_spans(text, passage["text_spans"]) == passage["text"]
        assert count_tokens(passage["text"]) <= ProseConfig().max_tokens
