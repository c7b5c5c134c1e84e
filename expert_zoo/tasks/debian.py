"""Everyday tasks from labelled data inside Debian packages (``.deb``), read with the standard
library only (``ar`` + ``tar``; never installed, never from a hub).

Each package is fetched once with ``apt-get download <package>=<version>`` (Debian 12
"bookworm") into :func:`archives.packages_dir`, checked against a pinned sha256 and read by
:mod:`expert_zoo.tasks.deb_archive` (every pinned package uses xz).

- ``wordnet-base`` 1:3.0-37: the WordNet 3.0 database, one dataset (family ``wordnet``) read
  by our own parser of its ``index.*``, ``data.*`` and ``*.exc`` files (wndb(5WN), no NLTK;
  :mod:`expert_zoo.tasks.wordnet`).
  Four tasks: adjective -> antonym (``data.adj``'s ``!`` pointers, a word with one antonym over
  all its senses; task id ``wordnet-base:wordnet``); noun -> the first word of its hypernym
  (``wordnet_hypernyms``); word -> noun / verb / adjective / adverb (``wordnet_part_of_speech``);
  definition -> word (``wordnet_definitions``). The last three keep everyday words (seen in the
  SemCor sense-tagged corpus) of one part of speech, so each answer is plain. WordNet licence
  (permissive).
- ``fortunes`` 1:1.99.1-7.3: the fortune(6) category files. Debian splits them: ``fortunes``
  holds ~40 topic files (art ... zippy), ``fortunes-min`` only fortunes / literature / riddles,
  ``fortunes-de``, ``-es``, ``-it`` ... other languages (bookworm has no ``fortunes-off``).
  Quote -> one of eight clear topics. BSD (fortune-mod).
- ``dict-freedict-*`` 2022: the FreeDict dictionaries (English -> X, X -> English and 35
  between two other languages), pinned and read in :mod:`expert_zoo.tasks.freedict`; their
  archives and sources are part of this module's :data:`DEBIAN_ARCHIVES` and
  :data:`DEBIAN_SOURCES`.

As in :mod:`packaged`, each :class:`Source` is one task of one dataset, and a dataset is one
family (never split); its task id is ``<debian package>:<name or family>`` and the held-out rule
applies to the family name.
"""

from __future__ import annotations

import logging
import random
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from .archives import cached_file
from .base import Example, Task
from .corpora import MAX_INPUT_CHARS
from .deb_archive import DebArchive, apt_download, deb_files
from .freedict import FREEDICT_ARCHIVES, FREEDICT_SOURCES
from .packaged import Source, find_source, load_source, select_sources
from .wordnet import (
    NOUN_CATEGORIES,
    wordnet_antonyms,
    wordnet_definitions,
    wordnet_hypernyms,
    wordnet_irregular_verbs,
    wordnet_noun_categories,
    wordnet_part_of,
    wordnet_parts_of_speech,
    wordnet_synonyms,
    wordnet_verb_nouns,
)

logger = logging.getLogger(__name__)

FORTUNE_TOPICS = ("computers", "education", "food", "law", "love", "politics", "science", "sports")
"""Fortune files named by a clear topic with 130+ quotes of at most ``MAX_INPUT_CHARS``."""
MAX_PER_TOPIC = 200
"""Cap per fortune topic (computers has 946 quotes, sports 133): the topics stay balanced."""


DEBIAN_ARCHIVES = {
    a.package: a
    for a in (
        DebArchive(
            "wordnet-base",
            "1:3.0-37",
            "wordnet-base_1%3a3.0-37_all.deb",
            "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
        ),
        DebArchive(
            "fortunes",
            "1:1.99.1-7.3",
            "fortunes_1%3a1.99.1-7.3_all.deb",
            "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
        ),
        *FREEDICT_ARCHIVES,
    )
}


def ensure_deb(package: str, cache_dir: Path | None = None, download: bool = True) -> Path:
    """The cached ``.deb`` of ``package``, downloaded with apt (hash-checked) when missing."""
    spec = DEBIAN_ARCHIVES[package]
    origin = f"(`apt-get download {package}={spec.version}` on Debian 12, sha256 {spec.sha256})"
    return cached_file(
        spec.filename, cache_dir, download, origin, lambda folder: apt_download(spec, folder)
    )


# --- fortunes --------------------------------------------------------------------------------
FORTUNES = "usr/share/games/fortunes/"
OVERSTRIKE = re.compile("[^\x08]\x08")
"""A character struck over by the next one (a backspace between them)."""


def _fortune_quotes(text: str) -> list[str]:
    """The quotes of a fortune file (``%`` lines between them), overstrikes removed (``_\\bx``
    underlines, ``___\\b\\b\\bnot``), whitespace collapsed."""
    removed = 1
    while removed:
        text, removed = OVERSTRIKE.subn("", text)
    text = text.replace("\x08", "")
    quotes = (re.sub(r"\s+", " ", q).strip() for q in re.split(r"^%\n", text, flags=re.M))
    return [q for q in quotes if q and q != "%"]


def _fortune_topics(archive: Path) -> list[Example]:
    """Quote -> the name of its fortune file, for :data:`FORTUNE_TOPICS`. Quotes longer than
    ``MAX_INPUT_CHARS`` (a joke cut in half loses its point) or filed under two topics are
    dropped."""
    files = deb_files(archive, [FORTUNES + t for t in FORTUNE_TOPICS])
    quotes = {
        topic: [
            q
            for q in _fortune_quotes(files[FORTUNES + topic].decode("utf-8", errors="replace"))
            if len(q) <= MAX_INPUT_CHARS
        ]
        for topic in FORTUNE_TOPICS
    }
    topics_of: dict[str, set[str]] = defaultdict(set)
    for topic, texts in quotes.items():
        for text in texts:
            topics_of[text].add(topic)
    out = []
    for topic, texts in quotes.items():
        texts = sorted({t for t in texts if len(topics_of[t]) == 1})
        texts = random.Random(f"0:{topic}").sample(texts, min(len(texts), MAX_PER_TOPIC))
        out += [Example(text, topic, FORTUNE_TOPICS) for text in texts]
    return out


WORDNET_LICENCE = (
    "WordNet 3.0 licence (Princeton University; use, copy, modify and distribute with the "
    "copyright notice); Debian packaging GPL-2+"
)
DEBIAN_SOURCES = (
    Source(
        "wordnet-base",
        "wordnet",
        "Give the antonym of an English adjective",
        wordnet_antonyms,
        WORDNET_LICENCE,
    ),
    Source(
        "wordnet-base",
        "wordnet",
        "Name the more general kind of thing an English noun is (its WordNet hypernym)",
        wordnet_hypernyms,
        WORDNET_LICENCE,
        name="wordnet_hypernyms",
    ),
    Source(
        "wordnet-base",
        "wordnet",
        "Say whether an English word is a noun, verb, adjective or adverb",
        wordnet_parts_of_speech,
        WORDNET_LICENCE,
        name="wordnet_part_of_speech",
    ),
    Source(
        "wordnet-base",
        "wordnet",
        "Give the English word that a dictionary definition defines",
        wordnet_definitions,
        WORDNET_LICENCE,
        name="wordnet_definitions",
    ),
    *(
        Source("wordnet-base", "wordnet", description, read, WORDNET_LICENCE, name=name)
        for name, description, read in (
            ("wordnet_synonyms", "Give a synonym of an English word", wordnet_synonyms),
            (
                "wordnet_noun_category",
                "Say which kind of thing an English noun names: "
                + ", ".join(NOUN_CATEGORIES.values()),
                wordnet_noun_categories,
            ),
            (
                "wordnet_part_of",
                "Name the whole that an English noun is a part of",
                wordnet_part_of,
            ),
            (
                "wordnet_irregular_verbs",
                "Give the base form of an inflected English verb (went -> go)",
                wordnet_irregular_verbs,
            ),
            (
                "wordnet_verb_to_noun",
                "Give the noun formed from an English verb (decide -> decision)",
                wordnet_verb_nouns,
            ),
        )
    ),
    Source(
        "fortunes",
        "fortunes",
        "Say which topic a fortune-cookie quote is about: " + ", ".join(FORTUNE_TOPICS),
        _fortune_topics,
        "fortune-mod: BSD (The Regents of the University of California, advertising clause "
        "deleted); quotes collected from Usenet and published sources",
    ),
    *FREEDICT_SOURCES,
)


def debian_source_for(task_id: str) -> Source:
    """The :class:`Source` of a Debian task id (``<debian package>:<family>``)."""
    return find_source(DEBIAN_SOURCES, task_id, "Debian")


def load_debian_task(task_id: str, cache_dir: Path | None = None, download: bool = True) -> Task:
    """The :class:`Task` of a Debian task id, read from its (cached) package."""
    source = debian_source_for(task_id)
    return load_source(source, ensure_deb(source.package, cache_dir, download))


def iter_debian_tasks(
    split: str = "train",
    families: set[str] | None = None,
    cache_dir: Path | None = None,
    download: bool = True,
) -> Iterator[Task]:
    """The Debian tasks of ``split`` (``train``: not held out; ``held_out``; ``all``)."""
    for source in select_sources(DEBIAN_SOURCES, split, families):
        yield load_source(source, ensure_deb(source.package, cache_dir, download))
