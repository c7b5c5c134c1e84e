"""The committed state of an expert zoo, write side: the commit of a new generation and the
collection of old index files (the format itself and its reading are
:mod:`hypergen.zoo_format`'s).

A writer (holding the zoo lock) writes ``index-<g+1>.faiss`` and fsyncs it, then writes the
manifest to a temporary file, fsyncs it and ``os.replace``-s it over ``manifest.json``: that one
rename is the commit. Readers take no lock; they read the manifest, then the index file it
names, so they see generation ``g`` or ``g+1``, never a mix. Index files of older generations are
deleted after the commit (the previous one is kept for slow readers).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import faiss
import numpy as np

from hypergen.errors import LayoutError
from hypergen.layout import LoraLayout
from hypergen.zoo_format import (  # the read side of the format: one owner, shared with the bank
    FORMAT,
    MANIFEST,
    MAX_ID_CHARS,
    Snapshot,
    ZooError,
    best_per_expert,
    check_index,
    id_problem,
    parse_manifest,
    read_index,
    read_manifest_bytes,
    read_snapshot,
    record_problem,
    repair_hint,
)
from hypergen.zoo_format.folder import _INDEX_NAME, _MANIFEST_TMP

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "MANIFEST",
    "MAX_ID_CHARS",
    "Snapshot",
    "ZooError",
    "check_index",
    "id_problem",
    "parse_manifest",
    "read_index",
    "read_manifest_bytes",
    "read_snapshot",
    "record_problem",
    "repair_hint",
]


class ManifestReader:
    """Lock-free reader of a zoo's current generation, caching the parsed manifest and index.

    Every call re-reads the manifest bytes (small) and re-parses only when they changed; the
    index is loaded once per generation. If the index named by the manifest vanished (a writer
    committed and collected it in between), the manifest is read again.
    """

    def __init__(self, root: Path):
        self.root = root
        self._bytes = b""
        self._snap = Snapshot()
        self._index: faiss.Index | None = None

    def snapshot(self) -> Snapshot:
        data = read_manifest_bytes(self.root)
        if data != self._bytes:
            self._snap, self._bytes, self._index = parse_manifest(data, self.root), data, None
        return self._snap

    def current(self) -> tuple[Snapshot, faiss.Index | None]:
        """The current snapshot and its index (``None`` for an empty zoo)."""
        for _ in range(5):
            snap = self.snapshot()
            if snap.index_name is None or self._index is not None:
                return snap, self._index
            try:
                index = read_index(self.root, snap.index_name)
            except ZooError:
                if read_manifest_bytes(self.root) != self._bytes:
                    continue  # a newer generation replaced it: read that one
                raise
            check_index(index, snap, self.root)
            self._index = index
            return snap, index
        raise ZooError(f"the manifest of {self.root} keeps changing; try again")


# --- the index ----------------------------------------------------------------------------------
def new_index(dim: int) -> faiss.Index:
    """An empty cosine-similarity index for unit-norm ``dim``-d rows."""
    return faiss.IndexFlatIP(dim)


def write_index(index: faiss.Index, path: Path) -> None:
    """Write ``index`` to ``path`` and flush it to disk."""
    _write_synced(path, faiss.serialize_index(index).tobytes())


def index_rows(index: faiss.Index) -> np.ndarray:
    """All rows of a flat index, float32 ``(ntotal, dim)``."""
    if index.ntotal == 0:
        return np.zeros((0, index.d), dtype=np.float32)
    return index.reconstruct_n(0, index.ntotal)


def remove_rows(index: faiss.Index, start: int, stop: int) -> None:
    """Delete rows ``start:stop``; later rows move up (a flat index stays dense)."""
    removed = index.remove_ids(faiss.IDSelectorRange(start, stop))
    if removed != stop - start:
        raise ZooError(f"index removed {removed} rows, expected {stop - start}")


def next_generation(root: Path, snap: Snapshot) -> int:
    """A generation number no index file in ``root`` has used (names are never reused)."""
    used = [int(m.group(1)) for p in root.iterdir() if (m := _INDEX_NAME.match(p.name))]
    return max([snap.generation, *used]) + 1


# --- the commit ---------------------------------------------------------------------------------
def commit(
    root: Path, index: faiss.Index | None, header: dict | None, records: list[dict]
) -> Snapshot:
    """Write a new generation (index file, then manifest by one rename); return it.

    The caller holds the zoo lock. ``index`` must hold exactly the rows of ``records``, in order.
    """
    snap = Snapshot(0, None, header if records else None, tuple(records))
    if records and (index is None or index.ntotal != snap.num_rows):
        found = None if index is None else index.ntotal
        raise ZooError(f"internal: index has {found} rows, records need {snap.num_rows}")
    previous = read_snapshot_or_empty(root)
    generation = next_generation(root, previous)
    name = f"index-{generation}.faiss" if records else None
    if name is not None:
        write_index(index, root / name)
    data = {
        "format": FORMAT,
        "generation": generation,
        "index": name,
        "header": snap.header,
        "experts": records,
    }
    publish_manifest(root, json.dumps(data, indent=1, sort_keys=True).encode())
    collect_garbage(root, keep={previous.index_name, name})
    return Snapshot(generation, name, snap.header, tuple(records))


def read_snapshot_or_empty(root: Path) -> Snapshot:
    try:
        return read_snapshot(root)
    except ZooError:
        return Snapshot()


def publish_manifest(root: Path, payload: bytes) -> None:
    """Replace ``manifest.json`` by ``payload`` atomically (temp file, fsync, rename, fsync dir)."""
    fd, tmp = tempfile.mkstemp(prefix=_MANIFEST_TMP, dir=root)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(root)


def collect_garbage(root: Path, keep: set[str | None]) -> None:
    """Delete index files not in ``keep`` and leftover manifest temp files (caller holds the lock).

    Failures are logged, not raised: the commit has already happened.
    """
    for path in root.iterdir():
        stale_index = _INDEX_NAME.match(path.name) is not None and path.name not in keep
        if stale_index or path.name.startswith(_MANIFEST_TMP):
            try:
                path.unlink()
            except OSError as exc:
                logger.warning("could not delete %s: %s", path, exc)


def _write_synced(path: Path, payload: bytes) -> None:
    with open(path, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- search -------------------------------------------------------------------------------------
def header_of(record: dict, dim: int) -> dict:
    """The zoo header an expert implies: what every expert of one zoo must share."""
    keys = ("encoder", "base_model", "layout")
    return {**{k: record.get(k) for k in keys}, "dim": int(dim)}


def check_header(expected: dict | None, found: dict, expert_id: str) -> None:
    """Raise :class:`ZooError` naming the first field where a new expert differs from the zoo."""
    if expected is None:
        return
    for key in ("encoder", "base_model", "dim"):
        if expected[key] != found[key]:
            raise ZooError(
                f"expert {expert_id} has {key} {found[key]!r}, but this zoo holds experts with "
                f"{key} {expected[key]!r}: use another zoo folder for it"
            )
    try:
        LoraLayout.from_dict(expected["layout"]).check_matches(
            LoraLayout.from_dict(found["layout"]), what=f"expert {expert_id}"
        )
    except LayoutError as exc:
        raise ZooError(f"{exc}: this zoo holds experts of another LoRA layout") from exc


def search(
    snap: Snapshot, index: faiss.Index, query: np.ndarray, k: int, exclude: set[str]
) -> list[tuple[str, str, float]]:
    """Top-``k`` experts by their best description row, as (id, description, cosine), best first.

    Fetches more rows than ``k`` (doubling until ``k`` distinct experts not in ``exclude`` are
    found or every row was seen), since one expert owns several rows.
    """
    q = _unit_query(query, index.d)
    want = min(k, len(set(snap.by_id) - exclude))
    fetch = min(index.ntotal, max(4 * k, 16))
    while True:
        sims, rows = index.search(q, fetch)
        found = best_per_expert(snap.row_owner, rows[0], sims[0], k, snap.indices(exclude))
        hits = [(*snap.row_description(row), sim) for _, sim, row in found]
        if len(hits) >= want or fetch >= index.ntotal:
            return hits[:k]
        fetch = min(index.ntotal, 2 * fetch)


def _unit_query(query: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(query, dtype=np.float32)
    if q.shape not in ((dim,), (1, dim)):
        raise ZooError(f"expected a query embedding of shape ({dim},), got {q.shape}")
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm == 0:
        raise ZooError("the query embedding is zero or not finite")
    return (q / norm).reshape(1, dim)
