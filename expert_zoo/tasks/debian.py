"""Everyday tasks from labelled data inside Debian packages (``.deb``), read with the standard
library only (``ar`` + ``tar``; never installed, never from a hub).

Each package is fetched once with ``apt-get download <package>=<version>`` (Debian 12
"bookworm") into :func:`archives.packages_dir` and checked against a pinned sha256. A ``.deb``
is an ``ar`` archive; its ``data.tar.xz`` member holds the files that would be installed. Every
pinned package uses xz; gzip, bzip2 and plain tar are read too, zstd is refused (Python 3.11 has
no zstd module).

- ``wordnet-base`` 1:3.0-37: the WordNet 3.0 database, one dataset (family ``wordnet``) read
  by our own parser of its ``index.*``, ``data.*`` and ``*.exc`` files (wndb(5WN), no NLTK).
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
- ``dict-freedict-eng-XXX`` 2022: FreeDict English -> X dictionaries in dictd format
  (``.index`` + gzip ``.dict.dz``), each its own dataset and family: German, French, Italian,
  Dutch, Portuguese, Spanish, Swahili, Japanese, Afrikaans, Czech, Welsh, Finnish, Irish,
  Croatian, Hungarian, Indonesian, Latin, Lithuanian, Norwegian, Polish, Swedish, Turkish (all
  but Japanese in Latin script; ``eng-dan`` is too small). English word -> its first translation, for
  single-word headwords with one entry and one sense. (``dict-de-en`` is the same Ding data as
  ``eng-deu``: not used.) GPL-2+ mostly; the WikDict ones (fin, ind, jpn, nor) CC-BY-SA-3.0.

As in :mod:`packaged`, each :class:`Source` is one task of one dataset, and a dataset is one
family (never split); its task id is ``<debian package>:<name or family>`` and the held-out rule
applies to the family name.
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
    "afr": ("2022.04.21-1", "d8ce4dcca0caaf7c399b1f4535635db2d7ea39cd73be75ae719c75737f69f3e5"),
    "ces": ("2022.04.21-1", "282e38a11aa8317f61a9f449f028357261b06aabdc35934c1fc04a954d4e5add"),
    "cym": ("2022.04.21-1", "bb954743b460b6033233b0d1b15cd51d1cbce913580076d13ddd9127d724d05a"),
    "fin": ("2022.12.07-2", "037351c22b6f803358517d0293bab9619f6bef964e22cab68f63a174b5d22ebe"),
    "gle": ("2022.04.21-1", "e91944fce8a445a4454dce0cf93839d4ed61f1ce362074152fbcd3b67ffdca50"),
    "hrv": ("2022.04.21-1", "f63ebe17becbcae416fd3ac0d8d949f03e1e876bc5ca51aeb9a1c601e7664897"),
    "hun": ("2022.04.21-1", "64eec7b44df8c8f2ce4c787a3070f90c56907b384e72618a9f7bdb9cd988bcb8"),
    "ind": ("2022.12.07-2", "d2929618bdbdfecf7f71bc46e038fe873d3e6a50ec29cecc1f60ef1c4e940070"),
    "lat": ("2022.04.21-1", "659c9f87b5f6198ef575e805c09100add95038045987e25af2a1442346983f5d"),
    "lit": ("2022.04.21-1", "c4f07e6f56e9e8ba2dfdbf746098c0644edec3497ba9d78962c020e7371f95e0"),
    "nor": ("2022.12.07-2", "cf0c56bd607b30ec0481fcc002b062b9f220e6870a0d6abcc2796bebb68b2097"),
    "pol": ("2022.04.21-1", "edfc15cb7d7decb09d4af7e502d7bf9df170523506fd7d5918d02d8f8a03c816"),
    "swe": ("2022.04.21-1", "55feb9aff9abcc0be412dd11d9d46bc25eec4a80900a7701e57e6ad10331140e"),
    "tur": ("2022.04.21-1", "dd18d6682827301cb7131fda95728dd4c5ec3d73da6dab1f98619310608fbd99"),
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
        synsets[fields[0]] = Synset(tuple(words), tuple(pointers), gloss.strip())
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


def _sample(examples: list[Example]) -> list[Example]:
    """A fixed random sample of at most ``MAX_WORDS`` examples."""
    return random.Random(0).sample(examples, min(len(examples), MAX_WORDS))


def _wordnet_antonyms(archive: Path) -> list[Example]:
    """Adjective -> antonym from ``data.adj``'s lexical ``!`` pointers, for words with exactly
    one antonym over all their senses (``cloudy`` -> ``clear``; ``active`` has six: dropped)."""
    synsets = _wordnet_synsets(deb_file(archive, WORDNET + "data.adj").decode("utf-8"))
    antonyms: dict[str, set[str]] = defaultdict(set)
    for synset in synsets.values():
        for symbol, target, _pos, source_target in synset.pointers:
            source, other = int(source_target[:2], 16), int(source_target[2:], 16)
            if symbol == "!" and source and other and target in synsets:
                antonyms[synset.words[source - 1]].add(synsets[target].words[other - 1])
    return [
        Example(word, next(iter(opposite)))
        for word, opposite in antonyms.items()
        if len(opposite) == 1 and WORD.fullmatch(word) and WORD.fullmatch(next(iter(opposite)))
    ]


def _wordnet_hypernyms(archive: Path) -> list[Example]:
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
    return _sample(out)


def _wordnet_parts_of_speech(archive: Path) -> list[Example]:
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


def _wordnet_definitions(archive: Path) -> list[Example]:
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
    return _sample([Example(d, next(iter(w))) for d, w in words_of.items() if len(w) == 1])


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


def _first_translation(headword: str, entry: str, numbers_every_sense: bool = False) -> str | None:
    """The first translation of a one-sense entry (``dog /dɔg/\\nchien, clébard``: ``chien``),
    or None: another headword on the entry's first line, numbered senses, a plural (``<pl>``),
    or a first translation longer than one word. In a dictionary that ``numbers_every_sense``
    an entry whose only line is ``1. ...`` has one sense, its number and final full stop
    dropped (eng-tur: ``acerb /ˈasɜːb/\\n1. acı, sert.``: ``acı``)."""
    headline, *body = [line for line in entry.splitlines() if line.strip()]
    if numbers_every_sense and len(body) == 1 and body[0].startswith("1. "):
        body = [body[0].removeprefix("1. ").rstrip().removesuffix(".")]
    if headline.split(" ")[0] != headword or not body or any(map(NUMBERED_SENSE.match, body)):
        return None
    if "<pl>" in body[0]:
        return None
    first = NOTES.sub("", body[0]).split(",")[0].strip()
    if not first or " " in first or len(first) > 30 or re.search(r"[\d{}()/;:=]", first):
        return None
    return first


NUMBERS_EVERY_SENSE = frozenset({"tur"})
"""Dictionaries that number a lone sense too. Elsewhere a lone ``1.`` entry stays dropped, as
before, so the older dictionaries give the examples their experts were trained on."""
RESPELL = {"hun": str.maketrans("ôûÔÛ", "őűŐŰ")}
"""Letters to put back: eng-hun went through Latin-1, which has no ``ő``/``ű``, and writes
``ô``/``û`` (``heringfüstölô``), letters Hungarian does not use."""


def _freedict(lang: str):
    """The reader of ``dict-freedict-eng-<lang>``: English word -> first translation, a fixed
    random sample of at most ``MAX_WORDS``."""

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
                translation = _first_translation(headword, entry, lang in NUMBERS_EVERY_SENSE)
                if translation:
                    out.append(Example(headword, translation.translate(RESPELL.get(lang, {}))))
        return _sample(out)

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
    "afr": ("Afrikaans", "FreeDict eng-afr (FreeDict contributors): GPL-2+"),
    "ces": ("Czech", "FreeDict eng-ces (FreeDict contributors): GPL-2+"),
    "cym": ("Welsh", "FreeDict eng-cym (FreeDict contributors): GPL-2+"),
    "fin": ("Finnish", "FreeDict eng-fin (WikDict, from Wiktionary): CC-BY-SA-3.0"),
    "gle": ("Irish", "FreeDict eng-gle (FreeDict contributors): GPL-2+"),
    "hrv": ("Croatian", "FreeDict eng-hrv (FreeDict contributors): GPL-2+"),
    "hun": ("Hungarian", "FreeDict eng-hun (Vony Attila, Bui Pol, FreeDict contributors): GPL-2"),
    "ind": ("Indonesian", "FreeDict eng-ind (WikDict, from Wiktionary): CC-BY-SA-3.0"),
    "lat": ("Latin", "FreeDict eng-lat (FreeDict contributors): GPL-2+"),
    "lit": ("Lithuanian", "FreeDict eng-lit (FreeDict contributors): GPL-2+"),
    "nor": ("Norwegian", "FreeDict eng-nor (WikDict, from Wiktionary): CC-BY-SA-3.0"),
    "pol": (
        "Polish",
        "FreeDict eng-pol (FreeDict contributors): GFDL-1.2+ (content), GPL-3+ (markup)",
    ),
    "swe": ("Swedish", "FreeDict eng-swe (FreeDict contributors): GPL-2+"),
    "tur": ("Turkish", "FreeDict eng-tur (FreeDict contributors): GPL-2+"),
}
"""Language and licence (the package's ``usr/share/doc/<package>/copyright``, its ``eng-XXX``
stanza). Dictionaries under 400 usable one-word entries are left out (``eng-dan``: 311)."""

WORDNET_LICENCE = (
    "WordNet 3.0 licence (Princeton University; use, copy, modify and distribute with the "
    "copyright notice); Debian packaging GPL-2+"
)
DEBIAN_SOURCES = (
    Source(
        "wordnet-base",
        "wordnet",
        "Give the antonym of an English adjective",
        _wordnet_antonyms,
        WORDNET_LICENCE,
    ),
    Source(
        "wordnet-base",
        "wordnet",
        "Name the more general kind of thing an English noun is (its WordNet hypernym)",
        _wordnet_hypernyms,
        WORDNET_LICENCE,
        name="wordnet_hypernyms",
    ),
    Source(
        "wordnet-base",
        "wordnet",
        "Say whether an English word is a noun, verb, adjective or adverb",
        _wordnet_parts_of_speech,
        WORDNET_LICENCE,
        name="wordnet_part_of_speech",
    ),
    Source(
        "wordnet-base",
        "wordnet",
        "Give the English word that a dictionary definition defines",
        _wordnet_definitions,
        WORDNET_LICENCE,
        name="wordnet_definitions",
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
