"""Download one pinned package archive (sdist or wheel) with pip, hash-checked, never installed.

``pip download --no-deps`` of ``bigbench==1.0.0`` fails on recent pip (26.x): pip prepares the
sdist's metadata, finds its direct-URL dependency (``bleurt @ file://...``) and refuses it
("Distributions from PyPI cannot declare direct URL dependencies"). pip 23.2.1 does not check
this, so when the environment's pip refuses, the pip 23.2.1 wheel is itself downloaded (with
pip, by name) and run from the wheel file, which pip supports (``python pip.whl/pip ...``).
Either way the file must match the pinned sha256.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

FALLBACK_PIP = "pip==23.2.1"
CHUNK_BYTES = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed:\n{done.stderr[-2000:]}")


def _pip_download(
    requirement: str,
    dest_dir: Path,
    pip: list[str] | None = None,
    binary: bool = False,
    platform: tuple[str, str] | None = None,
) -> None:
    pip = pip or [sys.executable, "-m", "pip"]
    kind = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    if platform is not None:  # one wheel file for every machine: the pinned hash holds anywhere
        kind += ["--platform", platform[0], "--python-version", platform[1]]
    _run([*pip, "download", "--no-deps", *kind, requirement, "-d", str(dest_dir)])


def _fallback_pip(work_dir: Path) -> list[str]:
    """A command running pip 23.2.1 straight from its wheel."""
    _run([sys.executable, "-m", "pip", "download", "--no-deps", FALLBACK_PIP, "-d", str(work_dir)])
    wheel = next(work_dir.glob("pip-*.whl"))
    return [sys.executable, str(wheel / "pip")]


def fetch_sdist(project: str, version: str, sha256: str, dest_dir: Path) -> Path:
    """Download ``<project>-<version>.tar.gz`` into ``dest_dir`` and check its sha256.

    Raises:
        RuntimeError: pip could not fetch it, or the file does not have the pinned hash.
    """
    return fetch_archive(project, version, sha256, dest_dir, binary=False)


def fetch_archive(
    project: str,
    version: str,
    sha256: str,
    dest_dir: Path,
    binary: bool,
    platform: tuple[str, str] | None = None,
) -> Path:
    """Download the sdist (``binary=False``) or the wheel of ``project==version`` into
    ``dest_dir`` and check its sha256; returns the file's path.

    Raises:
        RuntimeError: pip could not fetch it, or the file does not have the pinned hash.
    """
    requirement = f"{project}=={version}"
    dest_dir.mkdir(parents=True, exist_ok=True)
    before = set(dest_dir.iterdir())
    start = time.monotonic()
    try:
        if binary:
            _pip_download(requirement, dest_dir, binary=True, platform=platform)
        else:
            _pip_download(requirement, dest_dir)
    except RuntimeError as err:
        if binary:
            raise
        logger.warning(
            "pip download %s failed (%s); retrying with %s",
            requirement,
            str(err).splitlines()[-1][:200],
            FALLBACK_PIP,
        )
        with tempfile.TemporaryDirectory() as work:
            _pip_download(requirement, dest_dir, pip=_fallback_pip(Path(work)))
    new = sorted(set(dest_dir.iterdir()) - before)
    prefix = f"{project.replace('-', '_')}-{version}"
    wanted = [p for p in new if p.name.replace("-", "_").startswith(prefix.replace("-", "_"))]
    if len(wanted) != 1:
        raise RuntimeError(f"pip download {requirement} gave {[p.name for p in new]} in {dest_dir}")
    dest = wanted[0]
    got = sha256_of(dest)
    if got != sha256:
        dest.unlink()
        raise RuntimeError(f"{dest.name}: sha256 {got} does not match the pinned {sha256}")
    logger.info("downloaded %s in %.1f s", dest.name, time.monotonic() - start)
    return dest
