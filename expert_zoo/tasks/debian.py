"""Everyday tasks from labelled data inside Debian packages (``.deb``), read with the standard
library only (``ar`` + ``tar``; never installed, never from a hub).

Each package is fetched once with ``apt-get download <package>=<version>`` (Debian 12
"bookworm") into :func:`archives.packages_dir` and checked against a pinned sha256. A ``.deb``
is an ``ar`` archive; its ``data.tar.xz`` member holds the files that would be installed. Every
pinned package uses xz; gzip, bzip2 and plain tar are read too, zstd is refused (Python 3.11 has
no zstd module).

- ``wordnet-base`` 1:3.0-37: the WordNet 3.0 database. ``data.adj``'s antonym pointers (``!``)
  give adjective -> antonym, kept where a word has one antonym over all its senses. WordNet
  licence (permissive); our own reader of the ``data.*`` format (wndb(5WN)), no NLTK.
- ``fortunes`` 1:1.99.1-7.3: the fortune(6) category files. Debian splits them: ``fortunes``
  holds ~40 topic files (art ... zippy), ``fortunes-min`` only fortunes / literature / riddles,
  ``fortunes-de``, ``-es``, ``-it`` ... other languages (bookworm has no ``fortunes-off``).
  Quote -> one of eight clear topics. BSD (fortune-mod).
- ``dict-freedict-eng-XXX`` 2022: FreeDict English -> X dictionaries in dictd format
  (``.index`` + gzip ``.dict.dz``), each its own dataset and family. English word -> its first
  translation, for single-word headwords with one entry and one sense. (``dict-de-en`` is the
  same Ding data as ``eng-deu``: not used.)

As in :mod:`packaged`, each :class:`Source` is one dataset and one family (never split); its
task id is ``<debian package>:<family>`` and the held-out rule applies to the family name.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import random
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .archives import cached_file
from .base import Example, Task
from .corpora import MAX_INPUT_CHARS
from .packaged import Source, find_source, load_source, select_sources
from .pypi_fetch import sha256_of

logger = logging.getLogger(__name__)

MAX_WORDS = 3000
"""Cap on a word list's examples: a fixed random sample (as :func:`corpora._syllables`)."""
FORTUNE_TOPICS = ("computers", "education", "food", "law", "love", "politics", "science", "sports")
"""Fortune files named by a clear topic with 130+ quotes of at most ``MAX_INPUT_CHARS``."""
MAX_PER_TOPIC = 200
"""Cap per fortune topic (computers has 946 quotes, sports 133): the topics stay balanced."""


@dataclass(frozen=True)
class DebArchive:
    """One pinned Debian binary package."""

    package: str
    version: str
    """Debian version, epoch included (``apt-get download <package>=<version>``)."""
    filename: str
    """The file name ``apt-get download`` writes (the epoch's ``:`` as ``%3a``)."""
    sha256: str


FREEDICT_DEBS = {  # language code: (Debian version, sha256)
    "deu": ("2022.04.21-1", "e85da1519a4d5efdbd7a5a169e828b97920f91e899f45d56fd5b2266a05b5906"),
    "fra": ("2022.04.21-1", "b8db6774b640ae8a372bee119b4304d88e6fd471a283d1326d7ec0abcc8b930e"),
    "ita": ("2022.04.21-1", "aef18ac10bd7582f99b819f634edad0dc0060e59a06f3f041a40203c53e9bb22"),
    "nld": ("2022.04.21-1", "82bc479217e728e95d61aedc4dfb8472b4a9db23412e9754b8f24a9a2d50e943"),
    "por": ("2022.04.21-1", "ef942ae345dda5f504b256a9df131993350737f70a1e55c58f49e4ae3196ec3f"),
    "spa": ("2022.04.21-1", "1b6a624048eddad805dcf0473a74e53420fbe391e7f2638090bddf625e9ad2b6"),
    "swh": ("2022.04.21-1", "ad003a94afad9b5b70951d287f7a2d28f8c27b9d9108d999f682eca85d26f0d7"),
    "jpn": ("2022.12.07-2", "3d06a55a8fa16a529b9f95b8d2fe3f7163700cea03aa7ee5b53c40dcdd6c6868"),
}
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
        *(
            DebArchive(f"dict-freedict-eng-{lang}", v, f"dict-freedict-eng-{lang}_{v}_all.deb", h)
            for lang, (v, h) in FREEDICT_DEBS.items()
        ),
    )
}


def ensure_deb(package: str, cache_dir: Path | None = None, download: bool = True) -> Path:
    """The cached ``.deb`` of ``package``, downloaded with apt (hash-checked) when missing."""
    spec = DEBIAN_ARCHIVES[package]
    origin = f"(`apt-get download {package}={spec.version}` on Debian 12, sha256 {spec.sha256})"
    return cached_file(
        spec.filename, cache_dir, download, origin, lambda folder: _apt_download(spec, folder)
    )


def _apt_download(spec: DebArchive, cache_dir: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".apt-", dir=cache_dir))
    command = ["apt-get", "download", f"{spec.package}={spec.version}"]
    try:
        try:
            done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        except FileNotFoundError as exc:
            raise RuntimeError(
                f"apt-get is not installed: put {spec.filename} (sha256 {spec.sha256}) from "
                f"Debian 12 into {cache_dir}"
            ) from exc
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed (an unknown package or version needs "
                f"`apt-get update` on Debian 12):\n{done.stderr[-2000:]}"
            )
        got = tmp / spec.filename
        if not got.is_file():
            names = sorted(p.name for p in tmp.iterdir())
            raise RuntimeError(f"{' '.join(command)} gave {names}, expected {spec.filename}")
        digest = sha256_of(got)
        if digest != spec.sha256:
            raise RuntimeError(f"{spec.filename}: sha256 {digest} does not match {spec.sha256}")
        os.replace(got, cache_dir / spec.filename)
        logger.info("downloaded %s into %s", spec.filename, cache_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- reading a .deb: an ar archive whose data.tar.* member is a tar --------------------------
AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60
"""name[16] mtime[12] uid[6] gid[6] mode[8] size[10] magic[2]; data padded to an even size."""


def ar_members(path: Path) -> dict[str, bytes]:
    """The members of the ``ar`` archive ``path`` by name (``debian-binary``, ``data.tar.xz``…)."""
    raw = Path(path).read_bytes()
    if not raw.startswith(AR_MAGIC):
        raise ValueError(f"{path} is not an ar archive (a .deb): it does not start with !<arch>")
    members, at = {}, len(AR_MAGIC)
    while at + AR_HEADER <= len(raw):
        header = raw[at : at + AR_HEADER]
        if header[58:60] != b"`\n":
            raise ValueError(f"{path}: bad ar member header at byte {at}")
        name = header[:16].decode("ascii").rstrip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        members[name] = raw[at + AR_HEADER : at + AR_HEADER + size]
        at += AR_HEADER + size + size % 2
    return members


def deb_files(path: Path, names: list[str]) -> dict[str, bytes]:
    """The installed files ``names`` (``usr/share/...``) read from the ``.deb`` ``path``."""
    members = ar_members(path)
    data = next((m for m in members if m.startswith("data.tar")), None)
    if data is None:
        raise ValueError(f"{path} has no data.tar member (members: {sorted(members)})")
    if data.endswith(".zst"):
        raise ValueError(f"{path}: {data} is zstd-compressed; Python 3.11's stdlib cannot read it")
    wanted, found = set(names), {}
    with tarfile.open(fileobj=io.BytesIO(members[data]), mode="r:*") as tar:
        for info in tar:
            name = info.name.removeprefix("./")
            if name in wanted and info.isfile():
                found[name] = tar.extractfile(info).read()
    missing = sorted(wanted - set(found))
    if missing:
        raise FileNotFoundError(f"{missing} not in {path}")
    return found


def deb_file(path: Path, name: str) -> bytes:
    """One installed file of a ``.deb``, e.g. ``usr/share/doc/<package>/copyright``."""
    return deb_files(path, [name])[name]


# --- WordNet ---------------------------------------------------------------------------------
WORDNET = "usr/share/wordnet/"
WORD = re.compile(r"[a-z]+(-[a-z]+)*")


def _wordnet_synsets(text: str) -> dict[str, tuple[list[str], list[list[str]]]]:
    """offset -> (words, pointers) of a ``data.*`` file; a pointer is ``[symbol, offset, pos,
    source/target]`` (wndb(5WN)). Adjective markers such as ``(a)``, ``(p)`` are dropped."""
    synsets = {}
    for line in text.splitlines():
        if line.startswith("  ") or not line.strip():  # the licence header
            continue
        fields = line.split(" | ")[0].split()
        n_words = int(fields[3], 16)
        words = [re.sub(r"\([a-z]+\)$", "", w) for w in fields[4 : 4 + 2 * n_words : 2]]
        at = 4 + 2 * n_words
        n_pointers = int(fields[at])
        pointers = [fields[at + 1 + 4 * k : at + 5 + 4 * k] for k in range(n_pointers)]
        synsets[fields[0]] = (words, pointers)
    return synsets


def _wordnet_antonyms(archive: Path) -> list[Example]:
    """Adjective -> antonym from ``data.adj``'s lexical ``!`` pointers, for words with exactly
    one antonym over all their senses (``cloudy`` -> ``clear``; ``active`` has six: dropped)."""
    synsets = _wordnet_synsets(deb_file(archive, WORDNET + "data.adj").decode("utf-8"))
    antonyms: dict[str, set[str]] = defaultdict(set)
    for words, pointers in synsets.values():
        for symbol, target, _pos, source_target in pointers:
            source, other = int(source_target[:2], 16), int(source_target[2:], 16)
            if symbol == "!" and source and other and target in synsets:
                antonyms[words[source - 1]].add(synsets[target][0][other - 1])
    return [
        Example(word, next(iter(opposite)))
        for word, opposite in antonyms.items()
        if len(opposite) == 1 and WORD.fullmatch(word) and WORD.fullmatch(next(iter(opposite)))
    ]


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


# --- FreeDict (dictd format) -----------------------------------------------------------------
DICTD = "usr/share/dictd/"
DICTD_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
"""dictd's base64 digits for an entry's offset and length in the ``.index`` file."""
DIGIT_VALUE = {digit: value for value, digit in enumerate(DICTD_B64)}
NUMBERED_SENSE = re.compile(r"^\s*\d+\.\s")
NOTES = re.compile(r"<[^>]*>|\[[^\]]*\]")
"""Grammar tags (``<fem>``, ``<adj>``) and field labels (``[bot.]``) after a translation."""


def _b64(digits: str) -> int:
    value = 0
    for digit in digits:
        value = value * 64 + DIGIT_VALUE[digit]
    return value


def _dictd_index(index: str) -> dict[str, list[tuple[int, int]]]:
    """headword -> the (offset, length) of each of its entries in the unzipped ``.dict``."""
    entries: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for line in index.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            entries[parts[0]].append((_b64(parts[1]), _b64(parts[2])))
    return entries


def _first_translation(headword: str, entry: str) -> str | None:
    """The first translation of a one-sense entry (``dog /dɔg/\\nchien, clébard``: ``chien``),
    or None: another headword on the entry's first line, numbered senses, a plural (``<pl>``),
    or a first translation longer than one word."""
    headline, *body = [line for line in entry.splitlines() if line.strip()]
    if headline.split(" ")[0] != headword or not body or any(map(NUMBERED_SENSE.match, body)):
        return None
    if "<pl>" in body[0]:
        return None
    first = NOTES.sub("", body[0]).split(",")[0].strip()
    if not first or " " in first or len(first) > 30 or re.search(r"[\d{}()/;:=]", first):
        return None
    return first


def _freedict(lang: str):
    def read(archive: Path) -> list[Example]:
        stem = f"{DICTD}freedict-eng-{lang}"
        files = deb_files(archive, [stem + ".index", stem + ".dict.dz"])
        index = _dictd_index(files[stem + ".index"].decode("utf-8"))
        data = gzip.decompress(files[stem + ".dict.dz"])  # dictzip is gzip with an extra field
        out = []
        for headword, places in index.items():
            if len(places) == 1 and headword.isalpha() and headword.islower():
                start, size = places[0]
                entry = data[start : start + size].decode("utf-8")
                translation = _first_translation(headword, entry)
                if translation:
                    out.append(Example(headword, translation))
        return random.Random(0).sample(out, min(len(out), MAX_WORDS))

    return read


FREEDICT = {
    "deu": ("German", "FreeDict eng-deu (Ding, Frank Richter, Einhard Leichtfuß): GPL-3+"),
    "fra": ("French", "FreeDict eng-fra (FreeDict contributors): GPL-2+"),
    "ita": ("Italian", "FreeDict eng-ita (FreeDict contributors): GPL-2+"),
    "nld": ("Dutch", "FreeDict eng-nld (FreeDict contributors): GPL-2+"),
    "por": ("Portuguese", "FreeDict eng-por (FreeDict contributors): GPL-2+"),
    "spa": ("Spanish", "FreeDict eng-spa (FreeDict contributors): GPL-2+"),
    "swh": ("Swahili", "FreeDict eng-swh (FreeDict contributors): GPL-2+"),
    "jpn": ("Japanese", "FreeDict eng-jpn (WikDict, from Wiktionary): CC-BY-SA-3.0"),
}

DEBIAN_SOURCES = (
    Source(
        "wordnet-base",
        "wordnet",
        "Give the antonym of an English adjective",
        _wordnet_antonyms,
        "WordNet 3.0 licence (Princeton University; use, copy, modify and distribute with the "
        "copyright notice); Debian packaging GPL-2+",
    ),
    Source(
        "fortunes",
        "fortunes",
        "Say which topic a fortune-cookie quote is about: " + ", ".join(FORTUNE_TOPICS),
        _fortune_topics,
        "fortune-mod: BSD (The Regents of the University of California, advertising clause "
        "deleted); quotes collected from Usenet and published sources",
    ),
    *(
        Source(
            f"dict-freedict-eng-{lang}",
            f"freedict_eng_{lang}",
            f"Translate an English word into {language}",
            _freedict(lang),
            licence,
        )
        for lang, (language, licence) in FREEDICT.items()
    ),
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
