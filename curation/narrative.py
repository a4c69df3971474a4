"""Dialogue reported in narrative, as diaries and memoirs write it.

    Mr. Rao asked Bhagavan, "How is the mind to be stilled?" Bhagavan said, "Find whose mind it is."

is a pair: the question and the answer are the quoted speech, the lead-in
sentence is the narrative context. Precision over recall, so only this shape:

1. A question: a sentence whose subject (a few words, capitalised) asks
   (`asked`, `enquired`, `inquired`, `questioned`, `said to`, `put the question to`),
   optionally naming whom, then a quotation that ends with a question mark.
2. Straight after it, an answer by the one who answers: a sentence whose subject
   is an answerer's name (or "He"/"She" when the question was put to an answerer)
   and whose verb speaks (`said`, `replied`, `answered`…), then a quotation; or the
   quotation first and then the attribution (`"…," replied Bhagavan.`).

Anything else (indirect speech, a quotation with no one asking, an answer by
someone else) is left as narrative.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_OPEN, _CLOSE = "[“\"]", "[”\"]"
_ASKING = r"(?:asked|enquired|inquired|questioned|said to|put (?:the|a|this) question to|wanted to know from)"
_SPEAKING = r"(?:said|replied|answered|remarked|observed|explained|responded|rejoined|told \w+)"
_ADVERBS = r"(?:[ \t]+(?:then|at once|smilingly|quietly|gently|kindly|simply|softly|immediately|with a smile|after a pause|after a while))?"


@dataclass(frozen=True)
class Exchange:
    """One narrated question and answer; offsets into the text."""

    start: int  # the question's lead-in sentence (context)
    question_start: int  # the question's opening quotation mark
    question_end: int  # one past its closing mark
    answer_lead_start: int  # the answer's lead-in ("Bhagavan said,"), = answer_start when it comes after
    answer_start: int  # the answer's opening quotation mark
    answer_end: int  # one past the answer's closing mark
    end: int  # one past its attribution when that follows the quotation, else = answer_end
    asker: str
    answerer: str


@lru_cache(maxsize=8)
def _patterns(answerer_names: tuple[str, ...], honorifics: tuple[str, ...]):
    names = "|".join(re.escape(n) for n in sorted(answerer_names, key=len, reverse=True))
    titles = "|".join(re.escape(h) for h in sorted(honorifics, key=len, reverse=True))
    # The asker: a pronoun, a titled name, or up to six words starting with a capital, none of them a quote.
    asker = rf"(?P<asker>(?:He|She|(?:{titles})\.?(?:[ \t]+[A-Z][\w.'’-]*){{1,4}}|[A-Z][\w'’-]*(?:[ \t]+[\w'’.-]+){{0,5}}?))"
    question = re.compile(
        rf"(?:(?<=[.?!”\"’'])[ \t]+|(?<=\n)|^)[ \t]*{asker}{_ADVERBS}[ \t]+{_ASKING}"
        rf"(?P<addressee>[ \t]+(?:(?i:{names})|him|her))?[ \t]*[,:]?[ \t]*(?P<q>{_OPEN}[^“”\"\n]{{2,1500}}?\?{_CLOSE})"
    )
    answer_lead = re.compile(
        rf"[ \t]*(?:\n[ \t]*)?(?P<lead>(?P<who>(?i:{names})|He|She){_ADVERBS}[ \t]+{_SPEAKING}(?:[ \t]+[\w'’]+){{0,4}}?)"
        rf"[ \t]*[,:]?[ \t]*(?P<a>{_OPEN}[^“”\"]{{1,4000}}?{_CLOSE})"
    )
    answer_first = re.compile(
        rf"[ \t]*(?:\n[ \t]*)?(?P<a>{_OPEN}[^“”\"]{{1,4000}}?[,.!?]?{_CLOSE})[ \t]*"
        rf"(?P<by>(?:{_SPEAKING}[ \t]+(?P<who1>(?i:{names}))|(?P<who2>(?i:{names}))[ \t]+{_SPEAKING})\.)"
    )
    return question, answer_lead, answer_first, re.compile(rf"(?i:{names})")


def find_exchanges(text: str, answerer_names: tuple[str, ...], honorifics: tuple[str, ...]) -> list[Exchange]:
    """Every narrated exchange in `text` (LF line ends), in order."""
    question, answer_lead, answer_first, answerer = _patterns(tuple(answerer_names), tuple(honorifics))
    found: list[Exchange] = []
    for q in question.finditer(text):
        if answerer.fullmatch(q["asker"]) or (found and q.start() < found[-1].end):
            continue  # the one who answers does not ask; exchanges do not overlap
        put_to_answerer = bool(q["addressee"]) and bool(answerer.fullmatch(q["addressee"].strip()))
        a = answer_lead.match(text, q.end("q"))
        if a and (a["who"] not in ("He", "She") or put_to_answerer):
            who = a["who"] if a["who"] not in ("He", "She") else q["addressee"].strip()
            found.append(Exchange(q.start("asker"), q.start("q"), q.end("q"), a.start("lead"), a.start("a"), a.end("a"),
                                  a.end("a"), q["asker"], who))
            continue
        a = answer_first.match(text, q.end("q"))
        if a:
            found.append(Exchange(q.start("asker"), q.start("q"), q.end("q"), a.start("a"), a.start("a"), a.end("a"),
                                  a.end("by"), q["asker"], a["who1"] or a["who2"]))
    return found
