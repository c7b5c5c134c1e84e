"""Fetch the BIG-bench source distribution once and extract its JSON tasks into a cache.

BIG-bench's JSON tasks ship inside the ``bigbench==1.0.0`` sdist on PyPI (358 MB). It is
downloaded, sha256-checked, never installed or imported (see ``pypi_fetch.py`` for why not
plainly ``pip download``), into ``$HYPERGEN_HOME/bigbench``
(``HYPERGEN_HOME`` defaults to ``~/.cache/hypergen``). Only the ``task.json`` files under
``bigbench/benchmark_tasks/`` are then extracted, once, gzipped, into
``tasks-1.0.0/benchmark_tasks/<path>/task.json.gz``
beside a ``manifest.json`` that also lists the programmatic tasks (a ``task.py``, no
``task.json``). Both steps hold an inter-process lock (``fcntl``) and publish their result with
an atomic rename, so concurrent workers and crashed runs never see half-written files.
Stdlib only.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from .base import TaskError
from .pypi_fetch import fetch_sdist

logger = logging.getLogger(__name__)

BIGBENCH_VERSION = "1.0.0"
SDIST_NAME = f"bigbench-{BIGBENCH_VERSION}.tar.gz"
SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
TASKS_ROOT = "bigbench/benchmark_tasks"
"""Where the tasks sit inside the sdist (below its ``bigbench-1.0.0/`` top folder)."""
EXTRACTED_DIR = f"tasks-{BIGBENCH_VERSION}"
MANIFEST = "manifest.json"
STORED_NAME = "task.json.gz"
"""Extracted files are gzipped (level 1): 1.7 GB of JSON is stored in about 0.4 GB."""


def default_cache_dir() -> Path:
    """``$HYPERGEN_HOME/bigbench``; ``HYPERGEN_HOME`` defaults to ``~/.cache/hypergen``."""
    home = os.environ.get("HYPERGEN_HOME") or Path.home() / ".cache" / "hypergen"
    return Path(home).expanduser() / "bigbench"


@contextmanager
def cache_lock(cache_dir: Path) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``cache_dir`` (blocks until it is free)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def ensure_sdist(cache_dir: Path | None = None, download: bool = True) -> Path:
    """Return the path of the cached BIG-bench sdist, downloading it first when missing.

    Raises:
        FileNotFoundError: the sdist is not cached and ``download`` is False.
        TaskError: the download failed or gave a file with the wrong sha256 (the message says
            where to put the file by hand).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / SDIST_NAME
    if target.is_file():
        return target
    if not download:
        raise FileNotFoundError(
            f"{target} is missing: call with download=True, or put the {SDIST_NAME} sdist "
            f"from PyPI (sha256 {SDIST_SHA256}) there"
        )
    with cache_lock(cache_dir):
        if not target.is_file():  # another process may have fetched it while we waited
            _download_sdist(cache_dir, target)
    return target


def _download_sdist(cache_dir: Path, target: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
    try:
        logger.info("downloading the BIG-bench sdist (358 MB) into %s", cache_dir)
        try:
            fetched = fetch_sdist("bigbench", BIGBENCH_VERSION, SDIST_SHA256, tmp)
        except RuntimeError as exc:
            last = str(exc).strip().splitlines()[-1][:300]
            raise TaskError(
                f"the BIG-bench tasks need {SDIST_NAME}, and the package index did not give it "
                f"({last}). Copy the file (sha256 {SDIST_SHA256}) from a machine or pip cache "
                f"that has it to {target}, or leave the BIG-bench tasks out (expert-zoo build "
                "--only, hypergen-train --sft-only)"
            ) from exc
        os.replace(fetched, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_extracted(cache_dir: Path | None = None, download: bool = True) -> Path:
    """Return the folder holding the extracted tasks (``benchmark_tasks/`` + ``manifest.json``).

    The sdist is fetched first when needed (see :func:`ensure_sdist`).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / EXTRACTED_DIR
    if (target / MANIFEST).is_file():
        return target
    sdist = ensure_sdist(cache_dir, download=download)
    with cache_lock(cache_dir):
        if not (target / MANIFEST).is_file():
            _extract(sdist, target)
    return target


def _extract(sdist: Path, target: Path) -> None:
    start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
    try:
        task_jsons, task_pys = _extract_task_jsons(sdist, tmp / "benchmark_tasks")
        task_dirs = {str(PurePosixPath(p).parent) for p in task_jsons}
        manifest = {
            "sdist": sdist.name,
            "task_json": sorted(task_jsons),
            "programmatic": sorted({str(PurePosixPath(p).parent) for p in task_pys} - task_dirs),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if target.exists():  # a stale folder without a manifest: a crashed older layout
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "extracted %d task.json files from %s in %.1f s",
        len(task_jsons),
        sdist.name,
        time.monotonic() - start,
    )


def _extract_task_jsons(sdist: Path, dest: Path) -> tuple[list[str], list[str]]:
    """Stream through the tar once; write every ``task.json`` under ``dest``, gzipped.

    Returns the ``task.json`` and ``task.py`` paths relative to ``benchmark_tasks``.
    """
    task_jsons: list[str] = []
    task_pys: list[str] = []
    with tarfile.open(sdist, mode="r|gz") as archive:
        for member in archive:
            rel = _task_relpath(member.name)
            if rel is None or not member.isfile():
                continue
            if rel.name == "task.py":
                task_pys.append(str(rel))
            elif rel.name == "task.json":
                source = archive.extractfile(member)
                if source is None:
                    continue
                out = dest / rel.with_name(STORED_NAME)
                out.parent.mkdir(parents=True, exist_ok=True)
                with source, gzip.open(out, "wb", compresslevel=1) as sink:
                    shutil.copyfileobj(source, sink)
                task_jsons.append(str(rel))
    return task_jsons, task_pys


def _task_relpath(name: str) -> PurePosixPath | None:
    """The path of a tar member relative to ``benchmark_tasks``, or None if outside/unsafe."""
    parts = PurePosixPath(name).parts
    root = tuple(TASKS_ROOT.split("/"))
    if len(parts) < len(root) + 3 or tuple(parts[1 : 1 + len(root)]) != root:
        return None
    rel = parts[1 + len(root) :]
    if any(p in ("", ".", "..") or p.startswith("/") for p in rel):
        return None
    return PurePosixPath(*rel)


def read_manifest(extracted: Path) -> dict:
    """The manifest written by :func:`ensure_extracted`."""
    return json.loads((extracted / MANIFEST).read_text(encoding="utf-8"))


def read_task_json(extracted: Path, rel_dir: str) -> Any:
    """The parsed ``task.json`` of the task folder ``rel_dir`` (relative to benchmark_tasks).

    Raises:
        TaskError: the file is not valid UTF-8 JSON.
    """
    path = extracted / "benchmark_tasks" / rel_dir / STORED_NAME
    try:
        with gzip.open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TaskError(f"{rel_dir}/task.json: not valid JSON in UTF-8: {err}") from err
