"""Debian binary packages (``.deb``): fetching a pinned one with apt and reading its files
with the standard library only (``ar`` + ``tar``; never installed).

A ``.deb`` is an ``ar`` archive; its ``data.tar.*`` member holds the files that would be
installed. xz, gzip, bzip2 and plain tar are read; zstd is refused (Python 3.11 has no zstd
module). The pinned packages and the tasks read from them are in :mod:`expert_zoo.tasks.debian`.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .pypi_fetch import sha256_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DebArchive:
    """One pinned Debian binary package."""

    package: str
    version: str
    """Debian version, epoch included (``apt-get download <package>=<version>``)."""
    filename: str
    """The file name ``apt-get download`` writes (the epoch's ``:`` as ``%3a``)."""
    sha256: str


def apt_download(spec: DebArchive, cache_dir: Path) -> None:
    """Download ``spec`` with ``apt-get download`` into ``cache_dir``, checked against its sha256;
    nothing is left behind when it fails."""
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
