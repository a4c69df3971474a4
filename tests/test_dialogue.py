"""The dialogue parser on each convention it must handle, and on the hand-made Talks fixture."""

import json
from pathlib import Path

import pytest

from curation.dialogue import DialogueConfig, NoPairs, NoSpeakerMarkers, detect_convention, parse_dialogue
from curation.quality import turn_contamination
from curation.spans import join_spans

DATA = Path(__file__).parent / "data"
SOURCE_ID = "f" * 64


def joined(text: str, spans: list[list[int]]) -> str:
    return join_spans(text, spans)  # the one rule (curation/spans.py): spaces, except across a line-end hyphen


def assert_spans_slice_back(text: str, items: list[dict]) -> None:
    for item in items:
        assert joined(text, item["question_spans"]) == item["question"]
        assert joined(text, item["context_spans"]) == item["context"]
        if not item["is_silence"]:
            assert joined(text, item["answer_spans"]) == item["answer"]
        assert item["start"] <= item["question_spans"][0][0] < item["answer_spans"][-1][1] <= item["end"]


def qa(items):
    return [(i["question"], i["answer"]) for i in items]


def test_inline_and_split_markers():
    text = (
        "Talk 233.\n\nD.:\nWhat is the result of \"Rama Japa\"? M.: 'Ra' is Reality, 'Ma' is the mind.\n"
        "Talk 234.\nA Muslim visitor asked about asana (physical posture).\n\nM.:\nAbidance in God is the only true posture.\n"
    )
    result = parse_dialogue(text, SOURCE_ID)
    assert qa(result.items) == [('What is the result of "Rama Japa"?', "'Ra' is Reality, 'Ma' is the mind.")]
    assert result.items[0]["section"] == "Talk 233"
    assert result.report["unpaired_answers"] == 1  # the master speaking unprompted is not a pair
    assert_spans_slice_back(text, result.items)


def test_dates_and_headers_are_section_metadata_never_speech():
    text = (
        "D.: Is not 'I am' a thought? M.: The egoless 'I am' is not thought. 4th July, 1936 Talk 227.\n"
        "D.: How to get peace? M.: That is the natural state.\n29th\nAugust, 1936\nTalk 228. D.: Who am I? M.: Find out.\n"
    )
    items = parse_dialogue(text, SOURCE_ID).items
    assert [(i["section"], i["section_date"]) for i in items] == [
        ("", ""), ("Talk 227", "4th July, 1936"), ("Talk 228", "29th August, 1936")
    ]
    assert items[0]["answer"] == "The egoless 'I am' is not thought."
    assert items[1]["answer"] == "That is the natural state."


def test_running_header_page_numbers_and_footnotes_are_removed():
    text = (
        "Talk 40.\nD.: What is mouna? M.: Mouna is not closing the mouth. It is eternal\n"
        "17\n"
        "speech. Twelve years' forced mouna brings about Talks with Sri Ramana Maharshi absolute mouna.* "
        "D.: How to achieve it? M.: Hold some concept firmly.\n"
    )
    items = parse_dialogue(text, SOURCE_ID, title="Talks with Sri Ramana Maharshi").items
    assert items[0]["answer"] == (
        "Mouna is not closing the mouth. It is eternal speech. Twelve years' forced mouna brings about absolute mouna."
    )
    assert_spans_slice_back(text, items)


def test_several_questions_join_and_silence_is_an_answer():
    text = (
        "Talk 439.\nD.: Karma, bhakti, yoga and jnana only confuse the mind. D.: What should I hold? Please tell me. "
        "(No answer.) Another visitor asked: Please tell me how to realise the Self. M.: Find out who asks."
    )
    items = parse_dialogue(text, SOURCE_ID).items
    assert items[0]["question"] == "Karma, bhakti, yoga and jnana only confuse the mind. What should I hold? Please tell me."
    assert items[0]["is_silence"] and items[0]["answer"] == "" and items[0]["answer_speaker"] == ""
    assert text[slice(*items[0]["answer_spans"][0])] == "(No answer.)"
    assert items[1]["context"] == "Another visitor asked:"
    assert items[1]["question_speaker"] == "Another visitor"
    assert items[1]["turn_index"] == 1 and items[1]["conversation_id"] == items[0]["conversation_id"]
    assert_spans_slice_back(text, items)


def test_narrative_lead_in_is_context_and_named_speakers():
    text = (
        "Talk 16.\nMr. Douglas Ainslie, an English gentleman, came with a letter of introduction.\n"
        "Mr. G. Duff: Is there a way to still the mind? Sri Bhagavan: There is the Self. "
        "The Master's attendant asked: \"How?\" The Master replied: By finding out whose the mind is."
    )
    items = parse_dialogue(text, SOURCE_ID).items
    assert qa(items) == [
        ("Is there a way to still the mind?", "There is the Self."),
        ("How?", "By finding out whose the mind is."),
    ]
    assert items[0]["context"] == "Mr. Douglas Ainslie, an English gentleman, came with a letter of introduction."
    assert (items[0]["question_speaker"], items[0]["answer_speaker"]) == ("Mr. G. Duff", "Sri Bhagavan")
    assert (items[1]["question_speaker"], items[1]["answer_speaker"]) == ("The Master's attendant", "The Master")
    assert items[1]["context"] == "The Master's attendant asked:"
    assert_spans_slice_back(text, items)


def test_q_a_colon_convention():
    text = "Q: How shall I find the Self?\nA: Who is it that wants to find it?\nQ: I, of course.\nA: Find that I.\n"
    result = parse_dialogue(text, SOURCE_ID)
    assert result.convention == "qa"
    assert qa(result.items) == [("How shall I find the Self?", "Who is it that wants to find it?"), ("I, of course.", "Find that I.")]


def test_q_a_dot_convention_with_numbered_references():
    text = (
        "Q. (63-4) Is the world real?\nA. It is real as the Self, unreal as the world.\n"
        "Q. Then what is Maya?\nA. Maya is that which is not. A. W. Chadwick asked this too.\n"
    )
    assert detect_convention(text) == "qa_dot"
    items = parse_dialogue(text, SOURCE_ID).items
    assert qa(items) == [
        ("Is the world real?", "It is real as the Self, unreal as the world."),
        ("Then what is Maya?", "Maya is that which is not. A. W. Chadwick asked this too."),
    ]
    assert items[0]["refs"] == ["(63-4)"]
    assert_spans_slice_back(text, items)


def test_configured_marker_sets():
    text = "Questioner: Who am I?\nMaharaj: Find out.\nSeeker: How?\nTeacher: By looking.\n"
    items = parse_dialogue(text, SOURCE_ID).items
    assert qa(items)[0] == ("Who am I?", "Find out.")
    config = DialogueConfig(answer_labels=("Teacher",), question_labels=("Seeker",), answerer_names=())
    assert qa(parse_dialogue(text, SOURCE_ID, config).items) == [("How?", "By looking.")]


def test_no_markers_is_a_clear_error():
    with pytest.raises(NoSpeakerMarkers, match="no speaker markers"):
        parse_dialogue("The Self alone is real. The world is an appearance in it.\n" * 20, SOURCE_ID)


def test_ids_are_stable_and_follow_content():
    text = "D.: Who am I? M.: Find out.\nD.: How? M.: By looking within.\n"
    first, again = parse_dialogue(text, SOURCE_ID).items, parse_dialogue(text, SOURCE_ID).items
    assert [i["item_id"] for i in first] == [i["item_id"] for i in again]
    reflowed = parse_dialogue(text.replace(" M.:", "\nM.:  "), SOURCE_ID).items
    assert [i["item_id"] for i in reflowed] == [i["item_id"] for i in first]
    changed = parse_dialogue(text.replace("Find out", "Seek"), SOURCE_ID).items
    assert changed[0]["item_id"] != first[0]["item_id"] and changed[1]["item_id"] == first[1]["item_id"]


@pytest.mark.skipif(not (DATA / "talks-excerpt.expected.json").exists(), reason="fixture not written yet")
def test_hand_made_talks_fixture():
    text = (DATA / "talks-excerpt.txt").read_text(encoding="utf-8")
    expected = json.loads((DATA / "talks-excerpt.expected.json").read_text(encoding="utf-8"))
    items = parse_dialogue(text, SOURCE_ID, title="Talks with Sri Ramana Maharshi").items
    keys = ["section", "section_date", "question", "answer", "context", "is_silence", "question_speaker", "answer_speaker"]
    got = [{k: i[k] for k in keys} for i in items]
    assert got == [{k: e[k] for k in keys} for e in expected]
    assert len({i["section"] for i in items}) >= 20
    assert_spans_slice_back(text, items)
    assert turn_contamination(items).contaminated == 0


SHARED_BOOKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "books"


@pytest.mark.skipif(not SHARED_BOOKS.exists(), reason="../shared/data is not beside the project")
@pytest.mark.parametrize("book", ["talks-with-sri-ramana-maharshi.txt", "talks-with-sri-ramana-maharshi-vol2.txt"])
def test_full_books_contamination_below_goal(book):
    text = (SHARED_BOOKS / book).read_text(encoding="utf-8")
    result = parse_dialogue(text, SOURCE_ID, title="Talks with Sri Ramana Maharshi")
    assert result.report["pairs"] > 600
    assert turn_contamination(result.items).rate <= 0.003
    assert_spans_slice_back(text, result.items)


def test_a_books_own_speaker_labels_are_detected_and_the_answerer_can_be_named():
    text = (
        "SOCRATES: What is justice, then?\nGLAUCON: I do not know, Socrates.\n"
        "SOCRATES: And who is it that does not know?\nGLAUCON: I myself.\n"
        "SOCRATES: Then look at that one.\nGLAUCON: I am looking.\nSOCRATES: And what do you see?\n"
    )
    with pytest.raises(NoPairs, match=r"SOCRATES \(4\), GLAUCON \(3\).*--answerer"):
        parse_dialogue(text, SOURCE_ID)  # nobody is known to answer: say who speaks, and how to fix it
    items = parse_dialogue(text, SOURCE_ID, DialogueConfig(answerer_names=("SOCRATES",))).items
    assert qa(items) == [
        ("I do not know, Socrates.", "And who is it that does not know?"),
        ("I myself.", "Then look at that one."),
        ("I am looking.", "And what do you see?"),
    ]
    assert (items[0]["question_speaker"], items[0]["answer_speaker"]) == ("GLAUCON", "SOCRATES")
