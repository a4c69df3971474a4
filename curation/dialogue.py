"""Parse speaker-marked dialogue books into (question, answer) pairs.

The rules, in the order a reader would apply them:

1. Structure, never speech. Section headers (`Talk 435.`) start a new section
   and a new conversation; dates (`29th December, 1937`, also split over lines)
   are section metadata: a date applies to the sections that follow it. Running
   page headers (the book's title, repeated mid-sentence by PDF extraction),
   standalone page-number lines, standalone ALL-CAPS heading lines and footnote
   markers are noise. None of them ever appear in a turn.
2. Speaker markers: a label and a colon at the start of a line or after the end
   of a sentence: `D.:`/`M.:`, `Q:`/`A:`, `Q.:`, answerer names (`Maharshi:`,
   `Sri Bhagavan:`, `Bhagavan:`, `The Master:`), named visitors (`Mr. G. Duff:`,
   `Maj. Chadwick:`, `A visitor:`), and reported speech (`A visitor asked:`,
   `Sri Bhagavan said:`). A marker may stand on its own line, away from its
   speech. In the `qa` convention `Q.`/`A.` without a colon are markers too.
   `auto` picks the convention by counting which markers a book uses.
3. Roles: answerer names and answer labels (`M.`, `A.`) speak the answer;
   every other speaker speaks the question.
4. Turns: consecutive question turns (several questions before one answer)
   join into one human turn; consecutive answer turns join into one answer.
   A pair is emitted when a question turn is followed by an answer turn and
   then by anything that ends it (a new question, a section, the end).
5. Context: narrative text in a section before a question (and the lead-in
   sentence of reported speech, "A visitor asked:") is the pair's context.
6. Silence: a note like `(No answer.)` after a question is the answer: the
   pair is kept with answer "" and `is_silence` true.
7. Numbered references like `(63-4)` are taken out of turns into `refs`.
8. Not emitted, but counted in the report: answers with no question before
   them (the master speaking unprompted) and questions left without answer
   or silence at the end of a section.
9. Units besides speakers (curation/layout.py): headings, scene breaks and the
   numbered paragraphs of a book that numbers them end whatever was being said;
   so does a line where the narrator speaks of a speaker in the third person
   ("Sri Bhagavan then read out...", "Mr. X came in."): the teacher does not
   begin a line of his own answer that way. An empty question marker between
   two answers ends the first. Page furniture (page numbers, running headers,
   footnotes, stage notes, line-end hyphens) is never in a turn.
10. Quotations: inside an answer, a lead-in that quotes ("The Gita says:", "As
   Kabir put it:", "Sri Krishna said:", naming a scripture or a figure the
   teacher cites, or in the present tense) stays in the answer: it starts no turn.
11. Play scripts: names in capitals that start lines three or more times, as
   `NAME.`, `NAME:` or alone on a line, are the book's speakers (`play` convention).
12. Dialogue reported in narrative (curation/narrative.py): `X asked Bhagavan,
   "...?" Bhagavan replied, "..."` is a pair, the narrative its context.

Turn text is the turn's spans, each whitespace-collapsed, joined by one space;
quotation marks enclosing a whole turn are dropped from its span.
"""

from __future__ import annotations

import bisect
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field

from curation import layout as book_layout
from curation import narrative, schema, speakers
from curation.speakers import frequent_speaker_labels, play_script_names, with_detected_labels
from curation.quality import flag_suspicious_items
from curation.spans import join_spans

PARSER_VERSION = "dialogue-2"

MONTHS = book_layout.MONTHS
PREPOSITIONS = {"to", "with", "before", "near", "from", "by", "of", "for", "about", "at", "towards", "unto", "on", "upon", "asked", "told"}
QUOTE_CHARS = "\"'“”‘’"
# Verbs in the present tense quote a text ("The Gita says:"): a report of this conversation is in the past.
QUOTING_VERBS = {"says", "declares", "states", "teaches", "tells", "sings", "writes", "proclaims", "puts"}


class NoSpeakerMarkers(ValueError):
    """The text has no speaker markers of any convention this parser knows."""


class NoPairs(NoSpeakerMarkers):
    """Speakers were found, but no question was ever followed by an answer."""


@dataclass(frozen=True)
class DialogueConfig:
    """How a dialogue book marks its speakers and its structure."""

    # auto | dm (D.:/M.:) | qa (Q:/A:) | qa_dot (Q./A. without colons) | play (NAME. / NAME: in capitals);
    # named speakers work in all.
    convention: str = "auto"
    # Short labels that stand before a colon: questioner's and answerer's.
    question_labels: tuple[str, ...] = ("D", "Q", "Question", "Questioner", "Devotee", "Disciple", "Visitor", "Seeker")
    answer_labels: tuple[str, ...] = ("M", "A", "Answer")
    # Names of the one who answers; any other named speaker asks.
    answerer_names: tuple[str, ...] = (
        "Sri Ramana Maharshi", "Ramana Maharshi", "Sri Maharshi", "Maharshi", "Sri Ramana",
        "Sri Bhagavan", "Bhagavan", "The Master", "Master", "Maharaj", "Maharajji", "Ramana",
        "Swamiji", "Guru", "Teacher", "The Sage",
    )
    # Titles that begin a named visitor's marker ("Mr. G. Duff:").
    honorifics: tuple[str, ...] = (
        "Mr", "Mrs", "Miss", "Ms", "Dr", "Maj", "Major", "Prof", "Professor", "Col", "Colonel",
        "Capt", "Captain", "Swami", "Sri", "Srimathi", "Smt", "Lady", "Sir", "Pandit", "Rev",
        "Mme", "Madame", "Mlle", "Count", "Countess", "Rajah", "Raja", "Rani", "Maharani",
    )
    # Nouns that make "A visitor:", "The lady:", "Another visitor asked:" a questioner's marker.
    speaker_nouns: tuple[str, ...] = (
        "visitor", "devotee", "disciple", "questioner", "seeker", "lady", "gentleman", "man",
        "woman", "professor", "youth", "boy", "girl", "attendant", "sadhu", "monk", "pilgrim",
        "student", "doctor", "engineer", "lawyer", "friend", "brahmin", "American", "European",
    )
    # Verbs of reported speech: "<someone> asked:" starts a turn of <someone>.
    speech_verbs: tuple[str, ...] = (
        "asked", "enquired", "inquired", "queried", "questioned", "said", "says", "replied",
        "answered", "remarked", "observed", "continued", "added", "explained", "interposed",
        "interrupted", "pleaded", "requested", "retorted", "resumed", "rejoined", "began",
        "declared", "wrote", "spoke", "spoke out", "put in", "objected", "persisted", "urged",
        "intervened", "cut in", "broke in", "interjected", "responded", "countered", "protested",
    )
    # Scriptures and figures a teacher quotes: a lead-in naming one inside an answer is a quotation.
    quoted_authorities: tuple[str, ...] = (
        "Gita", "Upanishad", "Upanishads", "Veda", "Vedas", "Sruti", "Shruti", "scripture", "scriptures",
        "Sastra", "Sastras", "Shastra", "Shastras", "Bible", "Quran", "Koran", "Sutra", "Sutras", "Purana",
        "Krishna", "Arjuna", "Rama", "Vasishta", "Vasistha", "Sankara", "Shankara", "Buddha", "Christ",
        "Jesus", "Kabir", "the Lord", "the saint", "the sage", "the poet", "a saint", "a sage", "the verse",
        "the stanza", "the text", "the proverb", "the Psalmist", "Ashtavakra", "Janaka", "Tayumanavar",
        "Thayumanavar", "Avvaiyar", "Tukaram", "Mirabai", "Lao Tzu", "Chuang Tzu", "Rumi",
    )
    # Headers that start a section (and a conversation): the word, then a number.
    section_words: tuple[str, ...] = ("Talk", "Dialogue", "Conversation", "Chapter")
    # Notes that record a question met with silence.
    silence_pattern: str = r"\((?:No answer|No reply|No response|Silence|Bhagavan (?:was|remained|kept) silent|Sri Bhagavan (?:was|remained|kept) silent|Maharshi (?:was|remained|kept) silent)[^()\n]{0,40}\)"
    # Extra running-header patterns (regular expressions) beyond the title and auto-detection.
    running_headers: tuple[str, ...] = ()
    # Longest lead-in sentence (in words) accepted before "asked:" or "said:".
    max_lead_in_words: int = 45
    # Dialogue reported in narrative ("X asked Bhagavan, '...?' Bhagavan said, '...'"):
    # auto (found wherever no marked speech overlaps it) | off.
    narrative: str = "auto"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class DialogueParse:
    items: list[dict]
    convention: str
    report: dict = field(default_factory=dict)


# --- events: everything in the text that is not plain speech or narrative -------------------

NOISE, SECTION, DATE, SILENCE, MARKER, REF = "noise", "section", "date", "silence", "marker", "ref"
# Where two candidate events overlap, the one with the higher priority wins.
PRIORITY = {SECTION: 6, DATE: 5, SILENCE: 4, NOISE: 3, MARKER: 2, REF: 1}


@dataclass
class Event:
    kind: str
    start: int
    end: int
    role: str = ""  # for markers: "q" or "a"
    speaker: str = ""  # for markers: the speaker as written; for sections: the section name; for noise: why
    lead_in: bool = False  # reported speech: the marker spans its lead-in sentence, which is context
    quotes: bool = False  # a lead-in that quotes a text or a cited figure: inside an answer it starts no turn
    ends_at: int = -1  # narrative speech: where the quotation closes (the turn ends there)


# Who a narrator names at a line start ("The visitor left."), and the adverbs between subject and verb.
NARRATED_VISITORS = ("visitor", "visitors", "devotee", "devotees", "disciple", "questioner", "seeker", "lady",
                     "gentleman", "attendant", "sadhu", "pilgrim", "party", "group")
NARRATIVE_ADVERBS = ("then", "later", "also", "again", "now", "once", "thereupon", "further", "next", "finally",
                     "afterwards", "himself", "herself", "smilingly", "quietly", "kindly", "soon", "at once")


def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


class _Patterns:
    """The regular expressions of one config, compiled once."""

    def __init__(self, config: DialogueConfig, play_names: dict[str, str]):
        c = config
        self.config = config
        self.section = re.compile(
            rf"\b(?P<word>{_alternation(c.section_words)})[ \t]*\n?[ \t]*(?P<num>\d{{1,4}})\b(?:[ \t]*\.)?"
        )
        self.date = re.compile(
            rf"(?:\b\d{{1,2}}(?:st|nd|rd|th)?\s+)?\b(?:{MONTHS})\s*[,.]?\s+\d{{4}}\b"
        )
        self.silence = re.compile(c.silence_pattern, re.IGNORECASE)
        self.ref = re.compile(r"\(\d{1,4}\s*[-–]\s*\d{1,4}\)")
        # An ALL-CAPS heading run into the line just before a section header ("DROPS OF NECTAR Talk 314.").
        self.caps_heading = re.compile(
            rf"(?<![\w'’])(?:[A-Z][A-Z'’:-]*|-[IVX]+)(?:[ \t]+(?:[A-Z][A-Z'’:-]*|-[IVX]+))+(?=\s+(?:{_alternation(c.section_words)})\s+\d)"
        )
        names = _alternation(c.answerer_names)
        # One- and two-letter labels ("D", "Q") keep their case: "a:" is no speaker. Words ("Disciple") need not.
        short = [label for label in c.question_labels if len(label) <= 2]
        long = [label for label in c.question_labels if len(label) > 2]
        q_labels = "|".join(filter(None, [_alternation(short), long and f"(?i:{_alternation(long)})"]))
        a_short = [label for label in c.answer_labels if len(label) <= 2]
        a_long = [label for label in c.answer_labels if len(label) > 2]
        a_labels = "|".join(filter(None, [_alternation(a_short), a_long and f"(?i:{_alternation(a_long)})"]))
        honorifics = _alternation(c.honorifics)
        nouns = _alternation(c.speaker_nouns)
        # A titled name: initials and capitalised words, no possessives, optionally "from <Place>".
        person = (
            rf"(?:{honorifics})\.?(?:,?[ \t]+(?:[A-Z]\.|[A-Z][\w-]*(?![\w'’.]))){{1,5}}"
            rf"(?:,?[ \t]+(?:from|of)[ \t]+[A-Z][\w-]*(?:[ \t]+[A-Z][\w-]*)?)?"
        )
        self.person = re.compile(person)
        role_noun = rf"(?:A|An|Another|The|One|Some|This|That|Our)\s+(?:[A-Za-z-]+\s+){{0,2}}?(?i:{nouns})s?"
        self.answerer = re.compile(rf"(?i:{names})\b(?!['’]s)")
        self.abbreviation = re.compile(rf"(?:{honorifics}|[A-Z]|St|Ch|No|Vol|viz|i\.e|e\.g)\.")
        # A label and its colon: "D.:", "Q:", "Sri Bhagavan:", "Mr. G. Duff:", "A visitor:"; the colon may
        # be on the next line ("D.⏎:"), and a named speaker may carry an appositive ("Miss M., an English lady:").
        self.label = re.compile(
            rf"(?<![\w.])(?:(?P<a>{a_labels})\s?\.?|(?P<q>{q_labels})\s?\.?|(?P<name>{names})|(?P<name_cased>(?i:{names}))"
            rf"|(?P<person>{person})(?P<appositive>,[ \t]+(?:an?|the|another)[ \t]+[\w'’-]+(?:[ \t]+[\w'’-]+){{0,5}})?"
            rf"|(?P<noun>{role_noun})|(?P<pronoun>She|He))[ \t]*(?:\n[ \t]*)?:"
        )
        # Q./A. without a colon, for books of that convention only.
        # ("A. W. Chadwick" is a name: an initial followed by another initial is no marker.)
        self.dot_label = re.compile(r"(?<![\w.])(?P<label>Q|A)\.(?=[ \t\n])(?![ \t]+[A-Z]\.)")
        verbs = _alternation(c.speech_verbs)
        # "<someone> asked:", "He said to Sri Bhagavan:": a verb, at most four words, a colon.
        self.reported = re.compile(rf"\b(?P<verb>{verbs})\b(?P<tail>(?:[ \t]+[\w'’-]+){{0,4}})[ \t]*:")
        self.passive = re.compile(r"\b(?:is|was|are|were|be|been|being)\s*$", re.IGNORECASE)
        self.someone_else = re.compile(rf"\b(?:(?i:he|she|they|we|{nouns})|I)\b|{person}")
        # A verb before "and asked:" is not part of the speaker: "One of them kneeled and".
        self.trailing_clause = re.compile(r"\s+[a-z]+ed(?:\s+(?:up|down|out|back|again))?\s+and$")
        self.sentence_end = re.compile(r"(?:[.?!…]|[.?!][\"'”’)\]])\s+|\n\s*\n")
        self.leading_adverb = re.compile(
            r"^(?:(?:Then|Later|Again|Afterwards|Finally|Now|So|And|But|Here|Still later|Subsequently|At last|Next)\b,?\s+)+"
        )
        self.authority = re.compile(rf"(?i:\b(?:{_alternation(c.quoted_authorities)})\b)")
        self.play = (
            re.compile(rf"(?m)^[ \t]*(?P<name>{_alternation(play_names)})(?:\.[ \t]+(?=\S)|[ \t]*[.:]?[ \t]*\n)")
            if play_names else None
        )
        # The narrator's line: a visitor named in the third person, then a verb in the past within three
        # words ("Mr. Evans-Wentz began to ask", "The lady was then told", "The visitor left"). Not the
        # one who answers: "Sri Bhagavan later referred to..." goes on to his own words.
        visitors = _alternation(NARRATED_VISITORS)
        self.narrator_line = re.compile(
            rf"(?m)^[ \t]*(?!(?i:{names})\b)(?:{person}|(?:A|An|Another|The|This|That)[ \t]+(?:[A-Za-z-]+[ \t]+)?(?i:{visitors}))"
            rf"(?![\w'’])(?:,?[ \t]+(?:{_alternation(NARRATIVE_ADVERBS)})){{0,2}}[ \t]+"
            rf"(?:[a-z]+ed|said|came|went|left|sat|told|took|gave|began|spoke|read|wrote|saw|was|had|sang|got|kept|made)\b"
        )


def detect_convention(text: str, config: DialogueConfig | None = None) -> str:
    """Which label convention a book uses, by counting its markers (curation/speakers.py)."""
    return speakers.detect_convention(text, config or DialogueConfig())


class _Parser:
    def __init__(self, text: str, config: DialogueConfig, title: str):
        self.source = text
        # Parse the LF view of the text: same length, so every offset is true for the source.
        self.text = book_layout.lf_view(text)
        self.speaker_labels = frequent_speaker_labels(self.text)
        if config.convention == "auto":
            config = with_detected_labels(config, self.speaker_labels)
        self.config = config
        self.play_names = play_script_names(self.text, config) if config.convention in ("auto", "play") else {}
        self.p = _Patterns(config, self.play_names)
        self.convention = detect_convention(self.text, config) if config.convention == "auto" else config.convention
        labels = {label.lower() for label in config.question_labels + config.answer_labels + config.answerer_names}
        labels |= {name.lower() for name in self.play_names} | {label.lower() for label in self.speaker_labels}
        self.layout = book_layout.find_layout(self.text, title, config.running_headers, frozenset(labels))

    # -- finding events ---------------------------------------------------------------------

    def _at_boundary(self, pos: int, structure_ends: set[int]) -> bool:
        """Does a marker at `pos` begin a line, a sentence, a bracket, or follow a header or page number?"""
        i = pos
        while i > 0 and self.text[i - 1] in " \t":
            i -= 1
        if i == 0 or self.text[i - 1] == "\n" or i in structure_ends:
            return True
        return self.text[i - 1] in ".?!\"'”’)]:;…*[("

    def _sentence_start(self, pos: int, floor: int) -> int:
        """Start of the sentence that contains `pos`, not before `floor`."""
        window_start = max(floor, pos - 600)
        start = window_start
        for m in self.p.sentence_end.finditer(self.text, window_start, pos):
            # "Mr. B. C. Das" is one sentence: a period after a title or an initial ends nothing.
            word = self.text[max(window_start, m.start() - 12):m.start() + 1].split()
            if word and self.p.abbreviation.fullmatch(word[-1]):
                continue
            start = m.end()
        return start

    def events(self) -> list[Event]:
        t, p = self.text, self.p
        found: list[Event] = []
        for m in p.section.finditer(t):
            found.append(Event(SECTION, m.start(), m.end(), speaker=f"{m['word']} {m['num']}"))
        for m in p.date.finditer(t):
            found.append(Event(DATE, m.start(), m.end()))
        for m in p.silence.finditer(t):
            # A note of silence stands as a sentence; "mouna (silence)" is a gloss.
            if self._at_boundary(m.start(), set()):
                found.append(Event(SILENCE, m.start(), m.end()))
        for m in p.ref.finditer(t):
            found.append(Event(REF, m.start(), m.end()))
        for start, end, why in self.layout.noise:
            found.append(Event(NOISE, start, end, speaker=why))
        for m in p.caps_heading.finditer(t):
            found.append(Event(NOISE, m.start(), m.end(), speaker="heading"))
        structure = self._resolve(found)
        structure_ends = {e.end for e in structure}
        # A section header ends with its period or stands at a boundary: "Talk 5 of" is speech.
        structure = [
            e for e in structure
            if e.kind != SECTION or self.text[e.end - 1] == "." or self._at_boundary(e.start, structure_ends)
        ]
        structure_ends = {e.end for e in structure}
        self._structure = structure
        events = self._resolve(structure + self._markers(structure_ends))
        if self.config.narrative != "off":
            events = self._with_narrative(events)
        return events

    def _with_narrative(self, events: list[Event]) -> list[Event]:
        """Exchanges reported in narrative, where no marked speech is: two markers each, closing at the quote."""
        markers = [e.start for e in events if e.kind in (MARKER, SILENCE, SECTION)]
        added = []
        for x in narrative.find_exchanges(self.text, self.config.answerer_names, self.config.honorifics):
            i = bisect.bisect_left(markers, x.start)
            if i < len(markers) and markers[i] < x.end:
                continue  # marked speech inside: the book's markers say who speaks there
            added += [
                Event(MARKER, x.start, x.question_start, role="q", speaker=x.asker, lead_in=True, ends_at=x.question_end),
                Event(MARKER, x.answer_lead_start, x.answer_start, role="a", speaker=x.answerer, ends_at=x.end),
            ]
            if x.end > x.answer_end:  # '"...," replied Bhagavan.': the attribution is no part of the answer
                added.append(Event(NOISE, x.answer_end, x.end, speaker="attribution"))
        if not added:
            return events
        self.layout.boundaries = sorted(set(self.layout.boundaries) | {e.ends_at for e in added if e.role == "a"})
        return self._resolve(events + added)

    def _markers(self, structure_ends: set[int]) -> list[Event]:
        t, p = self.text, self.p
        markers = []
        pos = 0
        while (m := p.label.search(t, pos)) is not None:
            pos = m.end()
            short = m["a"] or m["q"]
            # "D.:", titled names and the answerer's names as configured are unmistakable anywhere; other labels (and
            # those names in other cases: "MASTER:") must begin a line or a sentence. A rejected match may hide a real marker inside it: search on from within.
            unmistakable = m["person"] or m["name"] or (short and t[m.start():m.end()].rstrip(": \t\n").endswith("."))
            if not unmistakable and not self._at_boundary(m.start(), structure_ends):
                pos = m.start() + 1
                continue
            role = "a" if m["a"] or m["name"] or m["name_cased"] else "q"
            if m["appositive"]:
                speaker = " ".join(m["person"].split())
            else:
                speaker = " ".join(m.group(0).rstrip(":").split())
            if short and not speaker.endswith(".") and t[m.start():m.end()].find(".") >= 0:
                speaker += "."
            markers.append(Event(MARKER, m.start(), m.end(), role=role, speaker=speaker))
        if self.convention == "qa_dot":
            for m in p.dot_label.finditer(t):
                if self._at_boundary(m.start(), structure_ends):
                    role = "a" if m["label"] == "A" else "q"
                    markers.append(Event(MARKER, m.start(), m.end(), role=role, speaker=m["label"] + "."))
        if p.play is not None:
            for m in p.play.finditer(t):
                markers.append(Event(MARKER, m.start("name"), m.end(), role=self.play_names[m["name"]], speaker=m["name"]))
        label_starts = {e.start for e in markers}
        noise_ends = {e.start: e.end for e in self._structure if e.kind == NOISE}
        for m in p.reported.finditer(t):
            start = self._sentence_start(m.start(), 0)
            while start in noise_ends or (start < m.start() and t[start].isspace()):
                start = noise_ends.get(start, start + 1)  # a page number before the lead-in is no part of it
            lead_in = t[start:m.start()]
            words = lead_in.split()
            if not words or len(words) > self.config.max_lead_in_words or start in label_starts:
                continue
            if re.search(r"[\"“”]", lead_in) or not (words[0][0].isupper() or words[0][0] in "(\"'“"):
                continue  # inside a quotation, or not the start of a sentence: not a lead-in
            if p.passive.search(lead_in):
                continue  # "It is said in the Gita that ...:" reports no speaker
            subject = p.leading_adverb.sub("", " ".join(words)).rstrip(" ,")
            subject = p.trailing_clause.sub("", subject)  # "One of them kneeled and" -> "One of them"
            speaker = subject.split(",")[0].strip() if len(subject.split()) > 6 else subject
            named = self._answerer_subject(subject)
            role = "a" if named else "q"
            if named:
                speaker = named
            quotes = (
                m["verb"] in QUOTING_VERBS or words[0] == "As" or bool(p.authority.search(subject))
            ) and not named
            markers.append(Event(MARKER, start, m.end(), role=role, speaker=speaker, lead_in=True, quotes=quotes))
        return markers

    def _answerer_subject(self, subject: str) -> str:
        """The answerer's name if the answerer is who speaks in this lead-in, else "".

        That is the last mention of an answerer's name that is not possessive ("The Master's
        attendant"), not governed by a preposition ("said to Sri Bhagavan"), and not followed
        by another possible speaker ("Sri Bhagavan told him to go; the lady asked").
        """
        named = None
        for m in self.p.answerer.finditer(subject):
            before = subject[:m.start()].split()
            if before and before[-1].lower() in PREPOSITIONS:
                continue
            named = m
        if named is None or self.p.someone_else.search(subject, named.end()):
            return ""
        return named.group(0)

    @staticmethod
    def _resolve(events: list[Event]) -> list[Event]:
        """Keep a non-overlapping set of events, preferring higher priority, then earlier, then longer."""
        chosen: list[Event] = []
        starts: list[int] = []
        for e in sorted(events, key=lambda e: (-PRIORITY[e.kind], e.start, -(e.end - e.start))):
            i = bisect.bisect_left(starts, e.start)
            before = chosen[i - 1] if i > 0 else None
            after = chosen[i] if i < len(chosen) else None
            if (before and before.end > e.start) or (after and after.start < e.end):
                continue
            chosen.insert(i, e)
            starts.insert(i, e.start)
        return chosen

    # -- assembling pairs -------------------------------------------------------------------

    def _text_spans(self, start: int, end: int) -> list[list[int]]:
        """The spans of [start, end) outside structure and noise, each trimmed of whitespace."""
        spans, pos = [], start
        i = bisect.bisect_right(self._cut_ends, start)
        while pos < end:
            cut = self._cuts[i] if i < len(self._cuts) else None
            stop = min(end, cut.start) if cut and cut.start < end else end
            s, e = pos, max(pos, stop)
            while s < e and self.text[s].isspace():
                s += 1
            while e > s and self.text[e - 1].isspace():
                e -= 1
            if e > s:
                spans.append([s, e])
            if cut is None or cut.start >= end:
                break
            pos = max(pos, cut.end)
            i += 1
        return spans

    def _join(self, spans: list[list[int]]) -> str:
        return join_spans(self.text, spans)

    def _unquote(self, spans: list[list[int]]) -> list[list[int]]:
        """Drop quotation marks that enclose a whole turn."""
        if not spans:
            return spans
        first, last = spans[0], spans[-1]
        if self.text[first[0]] in QUOTE_CHARS and self.text[last[1] - 1] in QUOTE_CHARS and (
            len(spans) > 1 or last[1] - first[0] > 1
        ):
            spans = [list(s) for s in spans]
            spans[0][0] += 1
            spans[-1][1] -= 1
            # Re-trim whitespace uncovered by the quotes and drop spans left empty.
            trimmed = []
            for s, e in spans:
                while s < e and self.text[s].isspace():
                    s += 1
                while e > s and self.text[e - 1].isspace():
                    e -= 1
                if e > s:
                    trimmed.append([s, e])
            return trimmed
        return spans

    @staticmethod
    def _first_in(positions: list[int], lo: int, hi: int) -> int | None:
        """The first position p with lo <= p < hi."""
        i = bisect.bisect_left(positions, lo)
        return positions[i] if i < len(positions) and positions[i] < hi else None

    @staticmethod
    def _last_in(positions: list[int], lo: int, hi: int) -> int | None:
        """The last position p with lo <= p < hi."""
        i = bisect.bisect_left(positions, hi) - 1
        return positions[i] if i >= 0 and positions[i] >= lo else None

    def parse(self, source_id: str, page_starts: list[int] | None = None) -> DialogueParse:
        events = self.events()
        self._cuts = [e for e in events if e.kind in (NOISE, SECTION, DATE, REF)]
        self._cut_ends = [e.end for e in self._cuts]
        self._boundaries = self.layout.boundaries
        refs = [e for e in events if e.kind == REF]
        markers = [e for e in events if e.kind == MARKER]
        if not markers:
            raise NoSpeakerMarkers(
                "no speaker markers found (looked for D.:/M.:, Q:/A:, named speakers, NAME. in capitals and "
                "'<someone> asked:'); is this a dialogue book? Try --kind prose"
            )
        marker_starts = {e.start for e in markers}
        cut_starts = [e.start for e in self._cuts]
        self._narrator = []
        for m in self.p.narrator_line.finditer(self.text):
            at = m.start() + len(m.group(0)) - len(m.group(0).lstrip())
            i = bisect.bisect_right(cut_starts, at) - 1
            if at not in marker_starts and not (i >= 0 and self._cuts[i].end > at):
                self._narrator.append(at)

        # Split into sections; each gets the latest date seen before its header.
        sections: list[tuple[str, str, int, int, list[Event]]] = []
        name, date, pending_date, start, speech = "", "", "", 0, []
        for e in events:
            if e.kind == DATE:
                pending_date = " ".join(self.text[e.start:e.end].split())
            elif e.kind == SECTION:
                sections.append((name, date, start, e.start, speech))
                name, date, start, speech = e.speaker, pending_date, e.end, []
            elif e.kind in (MARKER, SILENCE):
                speech.append(e)
        sections.append((name, date, start, len(self.text), speech))

        items: list[dict] = []
        counts: Counter = Counter()
        self._unpaired: list[dict] = []
        seen_conversations: Counter = Counter()
        for name, date, sec_start, sec_end, speech in sections:
            seen_conversations[name] += 1
            conversation = f"{source_id[:12]}:{name}" + (
                f"#{seen_conversations[name]}" if seen_conversations[name] > 1 else ""
            )
            self._section = name
            pairs = self._section_pairs(sec_start, sec_end, speech, counts)
            if name and pairs:
                counts["sections_with_pairs"] += 1
            for turn_index, (ctx, q, a, silent) in enumerate(pairs):
                items.append(self._item(source_id, name, date, conversation, turn_index, ctx, q, a, silent, refs))
                counts["narrative_pairs"] += q["event"].ends_at >= 0
        if not items:
            speakers = Counter(self.speaker_labels) + Counter({n: 3 for n in self.play_names})
            names = ", ".join(f"{label} ({n})" for label, n in speakers.most_common(6)) or "none by name"
            raise NoPairs(
                f"speaker markers found but no question is followed by an answer "
                f"({counts['unpaired_answers']} answers with no question, {counts['unanswered_questions']} "
                f"questions with no answer; speakers: {names}); name the one who answers with --answerer"
            )
        for item in items:
            item["page"] = bisect.bisect_right(page_starts, item["start"]) if page_starts else None
        suspicious = flag_suspicious_items(items)
        counts["sections"] = sum(1 for s in sections if s[0])
        counts["pairs"] = len(items)
        counts["silences"] = sum(i["is_silence"] for i in items)
        report = dict(counts)
        report["markers"] = {
            "found": dict(Counter(e.speaker for e in markers).most_common(20)),
            "used": dict(Counter(s for i in items for s in (i["question_speaker"], i["answer_speaker"]) if s).most_common(20)),
        }
        report["noise"] = dict(Counter(e.speaker for e in events if e.kind == NOISE))
        report["boundaries"] = len(self._boundaries)
        report["unpaired"] = self._unpaired[:50]
        report["suspicious"] = suspicious
        return DialogueParse(items=items, convention=self.convention, report=report)

    def _note_unpaired(self, kind: str, ev: Event, counts: Counter) -> None:
        counts["unpaired_answers" if kind == "answer" else "unanswered_questions"] += 1
        excerpt = " ".join(self.text[ev.start:ev.start + 120].split())
        self._unpaired.append({"kind": kind, "section": self._section, "start": ev.start, "text": excerpt})

    def _section_pairs(self, sec_start, sec_end, speech, counts):
        """Walk one section's markers and silences, pairing question turns with answers."""
        pairs = []
        ctx_start = sec_start
        question = answer = None  # each: dict(event=, spans=, context=)
        for i, ev in enumerate(speech):
            nxt = speech[i + 1].start if i + 1 < len(speech) else sec_end
            if ev.kind == SILENCE:
                if question and not answer:
                    pairs.append((question, question, {"event": ev, "spans": [[ev.start, ev.end]]}, True))
                    question, ctx_start = None, ev.end
                    continue
                # A silence note inside an answer or narrative is just part of that text.
                spans = self._text_spans(ev.start, nxt)
                (answer or question or {"spans": []})["spans"].extend(spans)
                continue
            quoting = ev.quotes and (question is not None or answer is not None)
            in_answer = answer is not None if quoting else (ev.role == "a" and question is not None)
            # Where this turn stops: the next marker, or the first unit boundary before it (a heading, a
            # numbered unit, the close of a narrated quotation; for an answer also a narrator's line).
            stops = [self._first_in(self._boundaries, ev.end, nxt)]
            if in_answer:
                stops.append(self._first_in(self._narrator, ev.end, nxt))
            stop = min((s for s in stops if s is not None), default=None)
            turn_end = nxt if stop is None else stop
            spans = self._text_spans(ev.start if quoting else ev.end, turn_end)
            if quoting:
                (answer or question)["spans"].extend(spans)  # the quotation stays in the turn that quotes it
            elif not spans:
                if ev.role == "q" and answer is not None and not ev.lead_in:
                    # An empty question marker between two answers ends the first: they are two answers.
                    counts["empty_turns"] += 1
                    pairs.append((question, question, answer, False))
                    question = answer = None
                    ctx_start = ev.end
                if stop is None:
                    continue  # otherwise an empty turn: as if its marker were not there
            elif ev.role == "q":
                if answer:
                    pairs.append((question, question, answer, False))
                    question = answer = None
                    ctx_start = ev.start
                if question is None:
                    context_end = ev.end if ev.lead_in else ev.start
                    unit_start = self._last_in(self._boundaries, ctx_start, ev.start + 1)
                    context_start = max(ctx_start, unit_start if unit_start is not None else ctx_start)
                    question = {"event": ev, "spans": spans, "context": (context_start, context_end)}
                else:
                    question["spans"].extend(spans)
            elif question is None:
                self._note_unpaired("answer", ev, counts)
            elif answer is None:
                answer = {"event": ev, "spans": spans}
            else:
                answer["spans"].extend(spans)
            if stop is not None:
                # The unit ended: what follows until the next marker is narrative, the next question's context.
                if question and answer:
                    pairs.append((question, question, answer, False))
                elif question:
                    self._note_unpaired("question", question["event"], counts)
                question = answer = None
                ctx_start = max(stop, self._last_in(self._boundaries + self._narrator, stop, nxt) or stop)
        if question and answer:
            pairs.append((question, question, answer, False))
        elif question:
            self._note_unpaired("question", question["event"], counts)
        return [(q["context"], q, a, silent) for _, q, a, silent in pairs]

    def _item(self, source_id, section, date, conversation, turn_index, ctx, q, a, silent, refs) -> dict:
        context_spans = self._text_spans(*ctx)
        question_spans = self._unquote(q["spans"])
        answer_spans = a["spans"] if silent else self._unquote(a["spans"])
        question, context = self._join(question_spans), self._join(context_spans)
        answer = "" if silent else self._join(answer_spans)
        start = min(s[0] for s in context_spans + question_spans)
        end = max(s[1] for s in answer_spans + question_spans)
        text = f"{question}\n\n{answer}"
        return {
            "item_id": schema.item_id("pair", question=question, answer=answer, context=context),
            "content_hash": schema.content_hash("pair", question=question, answer=answer, context=context),
            "source_id": source_id,
            "kind": "pair",
            "text": text,
            "question": question,
            "answer": answer,
            "context": context,
            "is_silence": silent,
            "section": section,
            "section_date": date,
            "conversation_id": conversation,
            "turn_index": turn_index,
            "question_speaker": q["event"].speaker,
            "answer_speaker": "" if silent else a["event"].speaker,
            # The references in the item's stretch of the book, a numbered unit's own number included.
            "refs": [self.text[r.start:r.end] for r in refs if min(ctx[0], q["event"].start) <= r.start < end],
            "start": start,
            "end": end,
            "context_spans": context_spans,
            "question_spans": question_spans,
            "answer_spans": answer_spans,
            "text_spans": [],
            "n_words": len(text.split()) + len(context.split()),
            "parser": "dialogue",
            "parser_version": PARSER_VERSION,
            "page": None,
            "parse_warning": "",
        }


def parse_dialogue(
    text: str,
    source_id: str,
    config: DialogueConfig = DialogueConfig(),
    title: str = "",
    page_starts: list[int] | None = None,
) -> DialogueParse:
    """Parse a dialogue book's text into pair items (see the module docstring for the rules).

    `page_starts`: for text extracted from a PDF, the offset where each page begins
    (curation/pdf.py); each item then records the page its first character is on.
    """
    return _Parser(text, config, title).parse(source_id, page_starts)
