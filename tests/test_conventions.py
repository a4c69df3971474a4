"""The dialogue parser on books of conventions it was not built on, hand-made from new text, and on CRLF files.

Each fixture in tests/data/conventions/ is a short book written for these tests, with
its pairs written out by hand in <name>.expected.json. The parser runs with
`--convention auto` (the default) and must find the hand-made pairs, no others, with
no turn the contamination judge objects to.
"""

import json
import os
from pathlib import Path

import pytest

from curation.dialogue import DialogueConfig, detect_convention, parse_dialogue
from curation.quality import contamination_reasons, parse_agreement, turn_contamination
from curation.spans import join_spans

DATA = Path(__file__).parent / "data"
CONVENTIONS = DATA / "conventions"
SOURCE_ID = "c" * 64
BOOKS = {
    "numbered-paragraphs": "qa",
    "interview": "qa_dot",
    "questioner-maharaj": "named",
    "play-script": "play",
    "narrative": "named",
}


def assert_spans_slice_back(text: str, items: list[dict]) -> None:
    for item in items:
        assert join_spans(text, item["question_spans"]) == item["question"]
        assert join_spans(text, item["context_spans"]) == item["context"]
        if not item["is_silence"]:
            assert join_spans(text, item["answer_spans"]) == item["answer"]


@pytest.mark.parametrize("name", sorted(BOOKS))
def test_each_convention_gives_the_hand_made_pairs(name):
    text = (CONVENTIONS / f"{name}.txt").read_text(encoding="utf-8")
    expected = json.loads((CONVENTIONS / f"{name}.expected.json").read_text(encoding="utf-8"))
    result = parse_dialogue(text, SOURCE_ID, title=name)
    assert result.convention == BOOKS[name]
    agreement = parse_agreement(result.items, expected)
    assert agreement["recall"] >= 0.9, agreement["missed"]
    assert agreement["precision"] >= 0.9
    assert agreement["contamination"] == 0.0, turn_contamination(result.items).examples
    assert_spans_slice_back(text, result.items)


def test_numbered_paragraphs_end_answers_and_artefacts_stay_out():
    text = (CONVENTIONS / "numbered-paragraphs.txt").read_text(encoding="utf-8")
    items = parse_dialogue(text, SOURCE_ID).items
    first = items[0]
    assert first["refs"] == ["(1-3)"]
    # The answer stops at the next numbered paragraph; exposition after it is no part of it.
    assert "Stillness" not in first["answer"] and "(1-4)" not in first["answer"]
    teacher = next(i for i in items if i["question"].startswith("Is a teacher necessary"))
    assert teacher["answer"].startswith("One who has truly seen")  # "? 39 A:" is a page number, then a marker
    assert not any("QUIET MIND" in i["answer"] or "foot_" in i["answer"] for i in items)


def test_play_script_names_in_capitals_are_speakers_in_every_form():
    text = (CONVENTIONS / "play-script.txt").read_text(encoding="utf-8")
    assert detect_convention(text) == "play"
    items = parse_dialogue(text, SOURCE_ID).items
    assert {(i["question_speaker"], i["answer_speaker"]) for i in items} == {("DISCIPLE", "MASTER")}
    # "DISCIPLE:" in capitals is the built-in label "Disciple", and "MASTER" alone on a line is no heading.
    assert parse_dialogue("DISCIPLE: Who am I?\nMASTER: Find out.\n", SOURCE_ID).items[0]["answer"] == "Find out."


def test_quotations_inside_an_answer_stay_in_the_answer():
    text = (
        "D.: Is the world real? M.: Sri Krishna said: \"There was never a time when I was not.\" "
        "The Gita says: \"The unreal has no being.\" So the question is who asks.\nD.: Then who? M.: Find out.\n"
    )
    items = parse_dialogue(text, SOURCE_ID).items
    assert [i["question"] for i in items] == ["Is the world real?", "Then who?"]
    assert "Sri Krishna said" in items[0]["answer"] and items[0]["answer"].endswith("who asks.")


def test_split_appositive_and_new_speech_verb_markers():
    text = (
        "Talk 1.\nD.\n: What is the mind? M.: A bundle of thoughts.\n"
        "Miss Merston, an English lady visitor: How to hold the I? M.: Hold it and see.\n"
        "A young man cut in: And if it slips? M.: Hold it again.\n"
    )
    items = parse_dialogue(text, SOURCE_ID).items
    assert [(i["question_speaker"], i["question"]) for i in items] == [
        ("D.", "What is the mind?"), ("Miss Merston", "How to hold the I?"), ("A young man", "And if it slips?"),
    ]


def test_an_empty_question_marker_ends_the_answer_before_it():
    text = "D.: Why not? M.: Samadhi alone can reveal it.\nD.:\nM.: There will only be the feeling 'I am'.\n"
    result = parse_dialogue(text, SOURCE_ID)
    assert [i["answer"] for i in result.items] == ["Samadhi alone can reveal it."]
    assert result.report["empty_turns"] == 1 and result.report["unpaired_answers"] == 1


def test_narrated_dialogue_is_precise_and_can_be_turned_off():
    text = (CONVENTIONS / "narrative.txt").read_text(encoding="utf-8")
    result = parse_dialogue(text, SOURCE_ID)
    assert result.report["narrative_pairs"] == 3
    assert not any("son come back" in i["question"] for i in result.items)  # asked, never answered: no pair
    assert result.items[0]["context"].endswith("The student asked Bhagavan,")
    with pytest.raises(ValueError, match="no speaker markers"):
        parse_dialogue(text, SOURCE_ID, DialogueConfig(narrative="off"))


@pytest.mark.parametrize("name", sorted(BOOKS) + ["talks-excerpt"])
def test_a_crlf_book_gives_the_items_of_its_lf_copy(name):
    path = DATA / "talks-excerpt.txt" if name == "talks-excerpt" else CONVENTIONS / f"{name}.txt"
    lf = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    crlf = lf.replace("\n", "\r\n")
    title = "Talks with Sri Ramana Maharshi" if name == "talks-excerpt" else name
    lf_items = parse_dialogue(lf, SOURCE_ID, title=title).items
    crlf_items = parse_dialogue(crlf, SOURCE_ID, title=title).items
    keys = ["item_id", "question", "answer", "context", "section", "section_date", "question_speaker", "answer_speaker"]
    assert [{k: i[k] for k in keys} for i in crlf_items] == [{k: i[k] for k in keys} for i in lf_items]
    assert_spans_slice_back(crlf, crlf_items)  # offsets are true for the CRLF source itself


def test_a_talk_header_split_over_crlf_lines_starts_its_talk():
    text = "Talk 1.\r\nD.: Who am I? M.: Find out.\r\nTalk\r\n2.\r\nD.: How? M.: By looking.\r\n"
    items = parse_dialogue(text, SOURCE_ID).items
    assert [(i["section"], i["answer"]) for i in items] == [("Talk 1", "Find out."), ("Talk 2", "By looking.")]


@pytest.mark.parametrize(("turn", "reason"), [
    ("The practice of medi- tation is simple.", "hyphenation"),
    ("It is so.foot_2 Go on.", "footnote"),
    ("It is the Self.* * Originally written for the First Edition.", "footnote"),
    ("Look within. 17 BEYOND YOGA The rest follows.", "heading"),
    ("Look within. THE QUIET MIND RETURNS now.", "heading"),
    ("Stay as you are. [7] Nothing more.", "page number"),
    ("Stay as you are. 39 Nothing more.", "page number"),
    ("Stay. Questioner: And then?", "speaker marker"),
    ("Be still. MASTER. That is all.", "speaker marker"),
    ("It is said so. Chapter 3. The Mind", "section header"),
])
def test_the_judge_sees_each_kind_of_leftover(turn, reason):
    assert reason in contamination_reasons(turn)


@pytest.mark.parametrize("turn", [
    "Two- or three-fold practice is not needed.",
    "The Gita, Chapter 18, Verse 17, says the same.",
    "Yoga Vasishta, V. Ch. 20 Thus you see.",
    "A. W. Chadwick asked this too.",
    "I AM THAT I AM is the name.",
    "He was 39 years old when he came.",
])
def test_the_judge_leaves_plain_speech_alone(turn):
    assert contamination_reasons(turn) == []


def test_the_report_says_where_to_look():
    answer = " ".join(["The Self alone is."] * 60)
    text = "".join(f"D.: Question {n}? M.: Short answer {n}.\n" for n in range(12)) + f"D.: A long one? M.: {answer}\n"
    result = parse_dialogue(text, SOURCE_ID)
    long = result.items[-1]
    assert long["parse_warning"].startswith("answer: long")
    assert all(i["parse_warning"] == "" for i in result.items[:-1])
    report = result.report
    assert report["suspicious"]["items"] == 1 and report["suspicious"]["by_reason"] == {"answer: long": 1}
    assert report["markers"]["found"] == {"D.": 13, "M.": 13} and report["markers"]["used"] == {"D.": 13, "M.": 13}
    json.dumps(report)  # stored with the source as JSON


SHARED = Path(os.environ.get("SATSANG_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / "books"


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside the project (or set SATSANG_SHARED)")
@pytest.mark.parametrize(("book", "pairs_before"), [
    ("talks-with-sri-ramana-maharshi.txt", 1668), ("talks-with-sri-ramana-maharshi-vol2.txt", 698),
])
def test_full_books_keep_their_pairs_with_no_contamination(book, pairs_before):
    text = (SHARED / book).read_text(encoding="utf-8")
    result = parse_dialogue(text, SOURCE_ID, title="Talks with Sri Ramana Maharshi")
    assert result.report["pairs"] >= pairs_before
    assert turn_contamination(result.items).contaminated == 0
    assert_spans_slice_back(text, result.items)
