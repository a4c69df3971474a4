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

Turn text is the turn's spans, each whitespace-collapsed, joined by one space;
quotation marks enclosing a whole turn are dropped from its span.
"""

from __future__ import annotations

import bisect
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace

from curation import schema

PARSER_VERSION = "dialogue-1"

MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
PREPOSITIONS = {"to", "with", "before", "near", "from", "by", "of", "for", "about", "at", "towards", "unto", "on", "upon", "asked", "told"}
QUOTE_CHARS = "\"'“”‘’"


class NoSpeakerMarkers(ValueError):
    """The text has no speaker markers of any convention this parser knows."""


class NoPairs(NoSpeakerMarkers):
    """Speakers were found, but no question was ever followed by an answer."""


@dataclass(frozen=True)
class DialogueConfig:
    """How a dialogue book marks its speakers and its structure."""

    # auto | dm (D.:/M.:) | qa (Q:/A:) | qa_dot (Q./A. without colons); named speakers work in all.
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
    )
    # Headers that start a section (and a conversation): the word, then a number.
    section_words: tuple[str, ...] = ("Talk", "Dialogue", "Conversation", "Chapter")
    # Notes that record a question met with silence.
    silence_pattern: str = r"\((?:No answer|No reply|No response|Silence|Bhagavan (?:was|remained|kept) silent|Sri Bhagavan (?:was|remained|kept) silent|Maharshi (?:was|remained|kept) silent)[^()\n]{0,40}\)"
    # Extra running-header patterns (regular expressions) beyond the title and auto-detection.
    running_headers: tuple[str, ...] = ()
    # Longest lead-in sentence (in words) accepted before "asked:" or "said:".
    max_lead_in_words: int = 45

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
    speaker: str = ""  # for markers: the speaker as written; for sections: the section name
    lead_in: bool = False  # reported speech: the marker spans its lead-in sentence, which is context


def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


class _Patterns:
    """The regular expressions of one config, compiled once."""

    def __init__(self, config: DialogueConfig, title: str):
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
        self.page_number_line = re.compile(r"(?m)^[ \t]*\d{1,4}[ \t]*$")
        # An ALL-CAPS heading run into the line just before a section header ("DROPS OF NECTAR Talk 314.").
        self.caps_heading = re.compile(
            rf"(?<![\w'’])(?:[A-Z][A-Z'’:-]*|-[IVX]+)(?:[ \t]+(?:[A-Z][A-Z'’:-]*|-[IVX]+))+(?=\s+(?:{_alternation(c.section_words)})\s+\d)"
        )
        self.caps_line = re.compile(r"(?m)^[ \t]*(?![A-Z]\.?\s?:)(?=[^a-z\n]*[A-Z]{2}[^a-z\n]*[A-Z])[^a-z\n]{4,80}$")
        # Footnote marks: symbols after a word, or digits glued to the end of a sentence ("mind.1 ").
        self.footnote = re.compile(r"(?<=[A-Za-z.,;:!?'\"”’)])[*†‡¹²³⁴⁵⁶⁷⁸⁹⁰]+|(?<=[a-z][.,;:!?\"”’)])\d{1,2}(?=\s)")
        headers = [h for h in c.running_headers]
        # The book's title is its running header. A title taken from a file name
        # ("talks-with-sri-ramana-maharshi-vol2") still matches: split on - and _, drop the volume.
        title_words = re.split(r"[\s_-]+", title.strip())
        while title_words and re.fullmatch(r"(?i)vol(?:ume)?\.?\d*|[IVX]+|\d+", title_words[-1]):
            title_words.pop()
        if len(title_words) >= 2:
            words = r"\s+".join(re.escape(w) for w in title_words)
            headers.append(rf"(?i:{words})(?:\s+(?:Vol(?:ume)?\.?\s*[IVX\d]+))?")
        self.running_header = re.compile("|".join(f"(?:{h})" for h in headers)) if headers else None

        names = _alternation(c.answerer_names)
        q_labels = _alternation(c.question_labels)
        a_labels = _alternation(c.answer_labels)
        honorifics = _alternation(c.honorifics)
        nouns = _alternation(c.speaker_nouns)
        # A titled name: initials and capitalised words, no possessives, optionally "from <Place>".
        person = (
            rf"(?:{honorifics})\.?(?:,?[ \t]+(?:[A-Z]\.|[A-Z][\w-]*(?![\w'’.]))){{1,5}}"
            rf"(?:,?[ \t]+(?:from|of)[ \t]+[A-Z][\w-]*(?:[ \t]+[A-Z][\w-]*)?)?"
        )
        role_noun = rf"(?:A|An|Another|The|One|Some|This|That|Our)\s+(?:[A-Za-z-]+\s+){{0,2}}?(?i:{nouns})s?"
        self.answerer = re.compile(rf"(?i:{names})\b(?!['’]s)")
        self.abbreviation = re.compile(rf"(?:{honorifics}|[A-Z]|St|Ch|No|Vol|viz|i\.e|e\.g)\.")
        # A label and its colon: "D.:", "Q:", "Sri Bhagavan:", "Mr. G. Duff:", "A visitor:".
        self.label = re.compile(
            rf"(?<![\w.])(?:(?P<a>{a_labels})\s?\.?|(?P<q>{q_labels})\s?\.?|(?P<name>{names})"
            rf"|(?P<person>{person})|(?P<noun>{role_noun})|(?P<pronoun>She|He))[ \t]*:"
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


def detect_convention(text: str) -> str:
    """Which label convention a book uses, by counting its markers."""
    counts = {
        "dm": len(re.findall(r"(?<![\w.])[DM]\s?\.\s?:", text)),
        "qa": len(re.findall(r"(?<![\w.])[QA]\s?\.?\s?:", text)),
        "qa_dot": len(re.findall(r"(?m)(?:^|(?<=[.?!] ))[ \t]*[QA]\.[ \t]+(?=[A-Z\"“'‘])", text)),
    }
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        return "named"
    # Q./A. without colons must clearly outnumber colon labels to be trusted: "A." is also an initial.
    if best == "qa_dot" and counts["qa_dot"] < 2 * max(counts["dm"], counts["qa"], 1):
        best = max(("dm", "qa"), key=counts.get) if max(counts["dm"], counts["qa"]) else "named"
    return best


# Words that stand before a colon at a line start without naming a speaker.
NOT_SPEAKERS = {
    "note", "notes", "example", "examples", "illustration", "footnote", "translation", "summary", "verse",
    "chapter", "talk", "contents", "introduction", "preface", "foreword", "n.b", "ps", "source", "see", "cf",
}
_LINE_LABEL = re.compile(r"(?m)^[ \t]*([A-Z][\w.'’-]*(?:[ \t]+[A-Z][\w.'’-]*){0,2})[ \t]*:(?=[ \t]*\S|[ \t]*\n)")


def frequent_speaker_labels(text: str, min_count: int = 3) -> Counter:
    """Labels that begin three or more lines before a colon ("SOCRATES:", "Questioner:"): a book's speakers."""
    counts = Counter(m.group(1) for m in _LINE_LABEL.finditer(text))
    return Counter({
        label: n for label, n in counts.items()
        if n >= min_count and label.rstrip(".").lower() not in NOT_SPEAKERS and not re.search(r"\d", label)
    })


def _with_detected_labels(config: DialogueConfig, labels: Counter) -> DialogueConfig:
    """Auto mode: the book's own speaker labels join the config (as askers, unless they name the answerer)."""
    known = {name.lower() for name in config.answerer_names + config.answer_labels + config.question_labels}
    answerers = {name.lower() for name in config.answerer_names + config.answer_labels}
    new = [label for label in labels if label.rstrip(".").lower() not in known and label.lower() not in known]
    askers = tuple(label.rstrip(".") for label in new if label.rstrip(".").lower() not in answerers)
    return replace(config, question_labels=config.question_labels + askers) if askers else config


def _repeated_header_lines(text: str) -> list[str]:
    """Short lines repeated three or more times, with no sentence punctuation: running headers."""
    lines = Counter(line.strip() for line in text.splitlines())
    return [
        line for line, n in lines.items()
        if n >= 3 and 2 <= len(line.split()) <= 12 and not re.search(r"[.?!:,;]$", line)
        and not re.match(r"^(?:Talk|Chapter)\b", line) and not re.search(MONTHS, line)
    ]


class _Parser:
    def __init__(self, text: str, config: DialogueConfig, title: str):
        self.text = text
        self.speaker_labels = frequent_speaker_labels(text)
        if config.convention == "auto":
            config = _with_detected_labels(config, self.speaker_labels)
        self.config = config
        self.p = _Patterns(config, title)
        self.convention = detect_convention(text) if config.convention == "auto" else config.convention

    # -- finding events ---------------------------------------------------------------------

    def _at_boundary(self, pos: int, structure_ends: set[int]) -> bool:
        """Does a marker at `pos` begin a line, a sentence, or follow a header?"""
        i = pos
        while i > 0 and self.text[i - 1] in " \t":
            i -= 1
        if i == 0 or self.text[i - 1] == "\n" or i in structure_ends:
            return True
        return self.text[i - 1] in ".?!\"'”’)]:;…*"

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
        noise_patterns = [p.page_number_line, p.caps_line, p.caps_heading, p.footnote]
        if p.running_header is not None:
            noise_patterns.append(p.running_header)
        for line in _repeated_header_lines(t):
            noise_patterns.append(re.compile(rf"(?m)^[ \t]*{re.escape(line)}[ \t]*$"))
        for pattern in noise_patterns:
            for m in pattern.finditer(t):
                if m.end() > m.start():
                    found.append(Event(NOISE, m.start(), m.end()))
        structure = self._resolve(found)
        structure_ends = {e.end for e in structure}
        # A section header ends with its period or stands at a boundary: "Talk 5 of" is speech.
        structure = [
            e for e in structure
            if e.kind != SECTION or self.text[e.end - 1] == "." or self._at_boundary(e.start, structure_ends)
        ]
        structure_ends = {e.end for e in structure}
        return self._resolve(structure + self._markers(structure_ends))

    def _markers(self, structure_ends: set[int]) -> list[Event]:
        t, p = self.text, self.p
        markers = []
        pos = 0
        while (m := p.label.search(t, pos)) is not None:
            pos = m.end()
            short = m["a"] or m["q"]
            # "D.:", titled names and the answerer's names are unmistakable anywhere; other labels must begin a line or
            # a sentence. A rejected match may hide a real marker inside it: search on from within.
            unmistakable = m["person"] or m["name"] or (short and t[m.start():m.end()].rstrip(": \t").endswith("."))
            if not unmistakable and not self._at_boundary(m.start(), structure_ends):
                pos = m.start() + 1
                continue
            if m["a"] or m["name"]:
                role = "a"
            else:
                role = "q"
            speaker = " ".join(m.group(0).rstrip(":").split())
            if short and not speaker.endswith(".") and t[m.start():m.end()].find(".") >= 0:
                speaker += "."
            markers.append(Event(MARKER, m.start(), m.end(), role=role, speaker=speaker))
        if self.convention == "qa_dot":
            for m in p.dot_label.finditer(t):
                if self._at_boundary(m.start(), structure_ends):
                    role = "a" if m["label"] == "A" else "q"
                    markers.append(Event(MARKER, m.start(), m.end(), role=role, speaker=m["label"] + "."))
        label_starts = {e.start for e in markers}
        for m in p.reported.finditer(t):
            start = self._sentence_start(m.start(), 0)
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
            markers.append(Event(MARKER, start, m.end(), role=role, speaker=speaker, lead_in=True))
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
        return " ".join(" ".join(self.text[s:e].split()) for s, e in spans)

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

    def parse(self, source_id: str) -> DialogueParse:
        events = self.events()
        self._cuts = [e for e in events if e.kind in (NOISE, SECTION, DATE, REF)]
        self._cut_ends = [e.end for e in self._cuts]
        refs = [e for e in events if e.kind == REF]
        n_markers = sum(e.kind == MARKER for e in events)
        if n_markers == 0:
            raise NoSpeakerMarkers(
                "no speaker markers found (looked for D.:/M.:, Q:/A:, named speakers and "
                "'<someone> asked:'); is this a dialogue book? Try --kind prose"
            )

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
        counts = Counter()
        seen_conversations: Counter = Counter()
        for name, date, sec_start, sec_end, speech in sections:
            seen_conversations[name] += 1
            conversation = f"{source_id[:12]}:{name}" + (
                f"#{seen_conversations[name]}" if seen_conversations[name] > 1 else ""
            )
            pairs = self._section_pairs(sec_start, sec_end, speech, counts)
            if name and pairs:
                counts["sections_with_pairs"] += 1
            for turn_index, (ctx, q, a, silent) in enumerate(pairs):
                items.append(self._item(source_id, name, date, conversation, turn_index, ctx, q, a, silent, refs))
        if not items:
            speakers = ", ".join(f"{label} ({n})" for label, n in self.speaker_labels.most_common(6)) or "none by name"
            raise NoPairs(
                f"speaker markers found but no question is followed by an answer "
                f"({counts['unpaired_answers']} answers with no question, {counts['unanswered_questions']} "
                f"questions with no answer; speakers: {speakers}); name the one who answers with --answerer"
            )
        counts["sections"] = sum(1 for s in sections if s[0])
        counts["pairs"] = len(items)
        counts["silences"] = sum(i["is_silence"] for i in items)
        return DialogueParse(items=items, convention=self.convention, report=dict(counts))

    def _section_pairs(self, sec_start, sec_end, speech, counts):
        """Walk one section's markers and silences, pairing question turns with answers."""
        pairs = []
        ctx_start = sec_start
        question = answer = None  # each: dict(event=, spans=, context_end=, context_start=)
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
            spans = self._text_spans(ev.end, nxt)
            if not spans:
                continue  # an empty turn: as if its marker were not there
            if ev.role == "q":
                if answer:
                    pairs.append((question, question, answer, False))
                    question = answer = None
                    ctx_start = ev.start
                if question is None:
                    context_end = ev.end if ev.lead_in else ev.start
                    question = {"event": ev, "spans": spans, "context": (ctx_start, context_end)}
                else:
                    question["spans"].extend(spans)
            elif question is None:
                counts["unpaired_answers"] += 1
            elif answer is None:
                answer = {"event": ev, "spans": spans}
            else:
                answer["spans"].extend(spans)
        if question and answer:
            pairs.append((question, question, answer, False))
        elif question:
            counts["unanswered_questions"] += 1
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
            "refs": [self.text[r.start:r.end] for r in refs if q["event"].start <= r.start < end],
            "start": start,
            "end": end,
            "context_spans": context_spans,
            "question_spans": question_spans,
            "answer_spans": answer_spans,
            "text_spans": [],
            "n_words": len(text.split()) + len(context.split()),
            "parser": "dialogue",
            "parser_version": PARSER_VERSION,
        }


def parse_dialogue(text: str, source_id: str, config: DialogueConfig = DialogueConfig(), title: str = "") -> DialogueParse:
    """Parse a dialogue book's text into pair items (see the module docstring for the rules)."""
    return _Parser(text, config, title).parse(source_id)
