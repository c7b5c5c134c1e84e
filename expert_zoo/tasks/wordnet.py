"""WordNet 3.0 tasks, read from the ``wordnet-base`` Debian package by our own parser of its
``index.*``, ``data.*`` and ``*.exc`` files (wndb(5WN), morphy(7WN); no NLTK).

One dataset, one family (``wordnet``), nine tasks: adjective -> antonym, noun -> hypernym,
word -> part of speech, definition -> word, word -> synonym, noun -> its kind (animal, food...),
part -> whole, irregular verb form -> base form, verb -> derived noun. The sources themselves are declared with the other
Debian ones in :mod:`expert_zoo.tasks.debian`.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .base import Example
from .corpora import MAX_INPUT_CHARS
from .deb_archive import deb_file, deb_files

MAX_WORDS = 3000
"""Cap on a word list's examples: a fixed random sample (as :func:`corpora._syllables`)."""


def sample_words(examples: list[Example]) -> list[Example]:
    """A fixed random sample of at most ``MAX_WORDS`` examples."""
    return random.Random(0).sample(examples, min(len(examples), MAX_WORDS))


WORDNET = "usr/share/wordnet/"
WORD = re.compile(r"[a-z]+(-[a-z]+)*")
WORDNET_POS = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}
"""The suffix of each part of speech's ``index.*`` / ``data.*`` files -> its name as an answer."""
PARTS_OF_SPEECH = tuple(WORDNET_POS.values())


@dataclass(frozen=True)
class Synset:
    """One line of a ``data.*`` file (wndb(5WN))."""

    words: tuple[str, ...]
    """Its words as written (``Tuesday``, ``motor_vehicle``), adjective markers (``(a)``,
    ``(p)``) dropped."""
    pointers: tuple[tuple[str, ...], ...]
    """``(symbol, offset, pos, source/target)``: ``@`` hypernym, ``!`` antonym, ..."""
    gloss: str
    """The definition, then any example sentences in quotes (``expel air; "Exhale when..."``)."""
    lexfile: int = -1
    """Its lexicographer file's number (lexnames(5WN)): 5 ``noun.animal``, 13 ``noun.food``..."""


@dataclass(frozen=True)
class Lemma:
    """One line of an ``index.*`` file: a word (lower case, ``_`` for spaces) in one part of
    speech."""

    senses: tuple[str, ...]
    """The offsets of its synsets, most frequent sense first."""
    tagged: int
    """How many of its senses occur in the sense-tagged SemCor corpus (0: a rare word)."""


def _wordnet_synsets(text: str) -> dict[str, Synset]:
    """offset -> :class:`Synset` of a ``data.*`` file."""
    synsets = {}
    for line in text.splitlines():
        if line.startswith("  ") or not line.strip():  # the licence header
            continue
        head, _, gloss = line.partition(" | ")
        fields = head.split()
        n_words = int(fields[3], 16)
        words = [re.sub(r"\([a-z]+\)$", "", w) for w in fields[4 : 4 + 2 * n_words : 2]]
        at = 4 + 2 * n_words
        n_pointers = int(fields[at])
        pointers = (tuple(fields[at + 1 + 4 * k : at + 5 + 4 * k]) for k in range(n_pointers))
        synsets[fields[0]] = Synset(tuple(words), tuple(pointers), gloss.strip(), int(fields[1]))
    return synsets


def _wordnet_index(text: str) -> dict[str, Lemma]:
    """word -> :class:`Lemma` of an ``index.*`` file (``lemma pos synset_cnt p_cnt [ptr...]
    sense_cnt tagsense_cnt offset...``)."""
    lemmas = {}
    for line in text.splitlines():
        if line.startswith("  ") or not line.strip():
            continue
        fields = line.split()
        n_senses, n_pointers = int(fields[2]), int(fields[3])
        tagged = int(fields[5 + n_pointers])
        lemmas[fields[0]] = Lemma(tuple(fields[6 + n_pointers : 6 + n_pointers + n_senses]), tagged)
    return lemmas


MORPHY_SUFFIXES = {
    "noun": "s: ses:s xes:x zes:z ches:ch shes:sh men:man ies:y",
    "verb": "s: ies:y es:e es: ed:e ed: ing:e ing:",
    "adj": "er: est: er:e est:e",
    "adv": "",
}
"""The detachment rules of morphy(7WN), ``ending:base``: ``ies:y`` takes ``cities`` to ``city``."""


@dataclass(frozen=True)
class WordNet:
    """The parts of WordNet the tasks read, by part of speech (``noun``, ``verb``, ``adj``,
    ``adv``)."""

    index: dict[str, dict[str, Lemma]]
    synsets: dict[str, dict[str, Synset]]
    exceptions: dict[str, dict[str, list[str]]]
    """The ``*.exc`` files: an irregular form -> its base forms (``abetted`` -> ``abet``)."""

    def is_inflected(self, word: str, pos: str) -> bool:
        """Whether ``word`` is an inflected form of a ``pos`` word (``engraved``: ``engrave``)."""
        rules = (rule.split(":") for rule in MORPHY_SUFFIXES[pos].split())
        bases = [word[: -len(end)] + base for end, base in rules if word.endswith(end)]
        bases += self.exceptions[pos].get(word, [])
        return any(b != word and b in self.index[pos] for b in bases)


def _wordnet(archive: Path) -> WordNet:
    """The ``index.*``, ``data.*`` and ``*.exc`` files of each part of speech, parsed."""
    names = [
        WORDNET + f.format(pos) for f in ("index.{}", "data.{}", "{}.exc") for pos in WORDNET_POS
    ]
    files = {name: raw.decode("utf-8") for name, raw in deb_files(archive, names).items()}
    return WordNet(
        {pos: _wordnet_index(files[f"{WORDNET}index.{pos}"]) for pos in WORDNET_POS},
        {pos: _wordnet_synsets(files[f"{WORDNET}data.{pos}"]) for pos in WORDNET_POS},
        {
            pos: {
                form: bases
                for form, *bases in map(str.split, files[f"{WORDNET}{pos}.exc"].splitlines())
            }
            for pos in WORDNET_POS
        },
    )


def _everyday_words(wordnet: WordNet) -> dict[str, str]:
    """word -> its part of speech, for everyday words of one part of speech only: one word
    (``WORD``), seen in SemCor, written in lower case in one of its synsets (not only a name:
    ``tuesday`` is ``Tuesday``), listed under no other part of speech and no inflected form of
    a word that is (``offensive`` is a noun and an adjective, ``engraved`` the adjective is also
    the past of the verb ``engrave``: both dropped). So the input's part of speech is plain."""
    parts: dict[str, list[str]] = defaultdict(list)
    for pos, lemmas in wordnet.index.items():
        for word in lemmas:
            parts[word].append(pos)
    everyday = {}
    for word, (pos, *others) in parts.items():
        lemma = wordnet.index[pos][word]
        if others or not WORD.fullmatch(word) or not lemma.tagged:
            continue
        if any(wordnet.is_inflected(word, other) for other in WORDNET_POS if other != pos):
            continue
        if any(word in wordnet.synsets[pos][offset].words for offset in lemma.senses):
            everyday[word] = pos
    return everyday


def _lexical_pairs(
    synsets: dict[str, Synset], synset: Synset, symbol: str, pos: str | None = None
) -> Iterator[tuple[str, str]]:
    """``(word, target word)`` of ``synset``'s lexical ``symbol`` pointers (a source/target
    ``0000`` is a semantic pointer: skipped) into ``synsets``, only those into part of speech
    ``pos`` when it is given (``n``, ``v``, ``a``, ``r``)."""
    for sym, target, target_pos, source_target in synset.pointers:
        source, other = int(source_target[:2], 16), int(source_target[2:], 16)
        if sym == symbol and (pos is None or target_pos == pos) and source and other:
            if target in synsets:
                yield synset.words[source - 1], synsets[target].words[other - 1]


def wordnet_antonyms(archive: Path) -> list[Example]:
    """Adjective -> antonym from ``data.adj``'s lexical ``!`` pointers, for words with exactly
    one antonym over all their senses (``cloudy`` -> ``clear``; ``active`` has six: dropped)."""
    synsets = _wordnet_synsets(deb_file(archive, WORDNET + "data.adj").decode("utf-8"))
    antonyms: dict[str, set[str]] = defaultdict(set)
    for synset in synsets.values():
        for word, opposite in _lexical_pairs(synsets, synset, "!"):
            antonyms[word].add(opposite)
    return [
        Example(word, next(iter(opposite)))
        for word, opposite in antonyms.items()
        if len(opposite) == 1 and WORD.fullmatch(word) and WORD.fullmatch(next(iter(opposite)))
    ]


def wordnet_hypernyms(archive: Path) -> list[Example]:
    """Noun -> the first word of its one hypernym synset (``tadpole`` -> ``larva``,
    ``misdemeanor`` -> ``crime``), for everyday nouns with one sense. A hypernym of several
    words (``motor_vehicle``) or in capitals is dropped: the answer is one plain word."""
    wordnet = _wordnet(archive)
    nouns, out = wordnet.synsets["noun"], []
    for word, pos in _everyday_words(wordnet).items():
        senses = wordnet.index[pos][word].senses
        if pos != "noun" or len(senses) != 1:
            continue
        up = [offset for symbol, offset, *_ in nouns[senses[0]].pointers if symbol == "@"]
        if len(up) == 1 and WORD.fullmatch(hypernym := nouns[up[0]].words[0]) and hypernym != word:
            out.append(Example(word, hypernym))
    return sample_words(out)


def wordnet_parts_of_speech(archive: Path) -> list[Example]:
    """Word -> noun / verb / adjective / adverb (multiple choice), for everyday words listed
    under one part of speech only (``quickly``: adverb). Balanced: a fixed random sample of at
    most ``MAX_WORDS // 4`` words per part (WordNet has six everyday nouns per adverb)."""
    words: dict[str, list[str]] = defaultdict(list)
    for word, pos in _everyday_words(_wordnet(archive)).items():
        words[pos].append(word)
    out = []
    for pos, name in WORDNET_POS.items():
        chosen = random.Random(f"0:{name}").sample(words[pos], min(len(words[pos]), MAX_WORDS // 4))
        out += [Example(word, name, PARTS_OF_SPEECH) for word in chosen]
    return out


def wordnet_definitions(archive: Path) -> list[Example]:
    """Definition -> the word it defines (``accuse formally of a crime`` -> ``indict``), for
    everyday words with one sense, alone in their synset (no synonym is as right). The gloss's
    example sentences are dropped, and so is a definition that gives the word away (holds its
    first five letters) or that defines two words."""
    wordnet = _wordnet(archive)
    words_of: dict[str, set[str]] = defaultdict(set)
    for word, pos in _everyday_words(wordnet).items():
        senses = wordnet.index[pos][word].senses
        synset = wordnet.synsets[pos][senses[0]]
        if len(senses) != 1 or synset.words != (word,):
            continue
        definition = synset.gloss.split('"')[0].strip().rstrip(";").strip()
        if definition and word[:5] not in definition.lower() and len(definition) <= MAX_INPUT_CHARS:
            words_of[definition].add(word)
    return sample_words([Example(d, next(iter(w))) for d, w in words_of.items() if len(w) == 1])


def _one_sense_words(
    wordnet: WordNet, pos: str, first_sense: bool = False
) -> Iterator[tuple[str, Synset]]:
    """Everyday ``pos`` words (:func:`_everyday_words`) with one sense, and that sense; with
    ``first_sense``, every everyday ``pos`` word and its most frequent sense."""
    for word, part in _everyday_words(wordnet).items():
        senses = wordnet.index[part][word].senses
        if part == pos and (first_sense or len(senses) == 1):
            yield word, wordnet.synsets[pos][senses[0]]


def wordnet_synonyms(archive: Path) -> list[Example]:
    """Word -> its one synonym, for everyday words with one sense whose synset holds exactly
    one other plain word (``sofa`` -> ``couch``): the answer is unambiguous."""
    wordnet, out = _wordnet(archive), []
    for pos in WORDNET_POS:
        for word, synset in _one_sense_words(wordnet, pos):
            others = [w for w in synset.words if w.lower() != word]
            if len(others) == 1 and WORD.fullmatch(others[0]):
                out.append(Example(word, others[0]))
    return sample_words(out)


NOUN_CATEGORIES = {
    5: "animal",
    20: "plant",
    13: "food",
    8: "body part",
    18: "person",
    15: "place",
    6: "man-made object",
    27: "substance",
}
"""Lexicographer files of nouns (lexnames(5WN): ``noun.animal`` 5, ``noun.artifact`` 6, ``noun.body``
8, ``noun.food`` 13, ``noun.location`` 15, ``noun.person`` 18, ``noun.plant`` 20,
``noun.substance`` 27) -> the category as a user would say it."""


def wordnet_noun_categories(archive: Path) -> list[Example]:
    """Noun -> which of :data:`NOUN_CATEGORIES` it names (multiple choice), for everyday nouns
    with one sense filed under one of them (``tadpole``: animal, ``granite``: substance).
    Balanced: a fixed random sample of at most ``MAX_WORDS // 8`` nouns per category."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for word, synset in _one_sense_words(_wordnet(archive), "noun"):
        if synset.lexfile in NOUN_CATEGORIES:
            by_kind[NOUN_CATEGORIES[synset.lexfile]].append(word)
    options, out = tuple(NOUN_CATEGORIES.values()), []
    for kind in options:
        words = sorted(by_kind[kind])
        chosen = random.Random(f"0:{kind}").sample(words, min(len(words), MAX_WORDS // 8))
        out += [Example(word, kind, options) for word in chosen]
    return out


def wordnet_part_of(archive: Path) -> list[Example]:
    """Noun -> the whole it is a part of, the first word of the one part holonym (``#p``)
    synset of its most frequent sense (``eyelid`` -> ``eye``), for everyday nouns; a whole of
    several words (``human_body``) is dropped."""
    wordnet = _wordnet(archive)
    nouns, out = wordnet.synsets["noun"], []
    for word, synset in _one_sense_words(wordnet, "noun", first_sense=True):
        wholes = [offset for symbol, offset, *_ in synset.pointers if symbol == "#p"]
        whole = nouns[wholes[0]].words[0] if len(wholes) == 1 else ""
        if WORD.fullmatch(whole) and whole != word and len(word) > 2:  # not "hr" -> "day"
            out.append(Example(word, whole))
    return sample_words(out)


def wordnet_irregular_verbs(archive: Path) -> list[Example]:
    """Irregular verb form -> its base form, from ``verb.exc`` (``went`` -> ``go``), for forms
    with one base that is an everyday verb (seen in SemCor); forms that are also a base form
    of their own (``found``: ``find`` and ``found``) are dropped."""
    exceptions = deb_file(archive, WORDNET + "verb.exc").decode("utf-8")
    verbs = _wordnet_index(deb_file(archive, WORDNET + "index.verb").decode("utf-8"))
    out = []
    for form, *bases in map(str.split, exceptions.splitlines()):
        if len(bases) != 1 or form in verbs or not WORD.fullmatch(form):
            continue
        base = bases[0]
        if base != form and WORD.fullmatch(base) and base in verbs and verbs[base].tagged:
            out.append(Example(form, base))
    return sample_words(out)


AGENT_SUFFIXES = ("er", "or", "ist")
"""Endings of agent nouns (``roamer``, ``actor``, ``typist``), not asked for (``-ant`` and
``-ent`` would also take ``arrangement``)."""


def wordnet_verb_nouns(archive: Path) -> list[Example]:
    """Verb -> the noun derived from it: the one derivationally related (``+``) noun of its
    most frequent sense that is longer than the verb and not an agent noun (``decide`` ->
    ``decision``, ``arrive`` -> ``arrival``; ``run`` -> ``run`` and ``roam`` -> ``roamer`` are
    not asked), for everyday verbs."""
    wordnet = _wordnet(archive)
    nouns, out = wordnet.synsets["noun"], []
    for word, synset in _one_sense_words(wordnet, "verb", first_sense=True):
        derived = {
            d
            for source, d in _lexical_pairs(nouns, synset, "+", "n")
            if source == word
            and WORD.fullmatch(d)
            and len(d) > len(word)
            and not d.endswith(AGENT_SUFFIXES)
        }
        if len(derived) == 1:
            out.append(Example(word, derived.pop()))
    return sample_words(out)
