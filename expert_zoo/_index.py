"""The committed state of an expert zoo: ``manifest.json`` and the FAISS index it names.

``<root>/manifest.json`` lists the zoo's records in index row order (expert ``i`` owns
``len(descriptions)`` consecutive rows) and names the current index file::

    {"format": "hypergen-expert-zoo/1", "generation": 7, "index": "index-7.faiss",
     "header": {"encoder": ..., "base_model": ..., "dim": 384, "layout": {...}},
     "experts": [<ExpertRecord as a dict>, ...]}

The index is a ``faiss.IndexFlatIP`` over unit-norm description embeddings, so inner product is
cosine similarity. A writer (holding the zoo lock) writes ``index-<g+1>.faiss`` and fsyncs it,
then writes the manifest to a temporary file, fsyncs it and ``os.replace``-s it over
``manifest.json``: that one rename is the commit. Readers take no lock; they read the manifest,
then the index file it names, so they see generation ``g`` or ``g+1``, never a mix. Index files of
older generations are deleted after the commit (the previous one is kept for slow readers).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np

from hypergen.errors import HypergenError, LayoutError
from hypergen.layout import LoraLayout

logger = logging.getLogger(__name__)

FORMAT = "hypergen-expert-zoo/1"
MANIFEST = "manifest.json"
_INDEX_NAME = re.compile(r"^index-(\d+)\.faiss$")
_MANIFEST_TMP = ".manifest.json.tmp-"


MAX_ID_CHARS = 200
_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_RECORD_KEYS = ("expert_id", "task_id", "descriptions", "encoder", "base_model", "layout")


class ZooError(HypergenError, ValueError):
    """An expert zoo is asked something it cannot do, or its files are missing or damaged."""


def id_problem(expert_id: object) -> str:
    """Why ``expert_id`` cannot name a folder under ``experts/`` ("" when it can)."""
    if not isinstance(expert_id, str) or not expert_id:
        return "an expert id must be a non-empty str"
    if len(expert_id) > MAX_ID_CHARS:
        return f"an expert id has at most {MAX_ID_CHARS} characters, got {len(expert_id)}"
    if not _SAFE_ID.match(expert_id) or ".." in expert_id:
        return (
            "an expert id uses only [A-Za-z0-9_.-], starts with a letter, digit or '_' and has "
            "no '..'; derive one from a task id with expert_id_for()"
        )
    return ""


def record_problem(record: object) -> str:
    """Why a record dict read from disk cannot be part of a zoo ("" when it can)."""
    if not isinstance(record, dict):
        return f"a record must be a JSON object, found {type(record).__name__}"
    missing = [k for k in _RECORD_KEYS if k not in record]
    if missing:
        return f"record lacks {missing}"
    descriptions = record["descriptions"]
    if not isinstance(descriptions, list) or not descriptions:
        return "descriptions must be a non-empty list"
    return id_problem(record["expert_id"])


@dataclass(frozen=True)
class Snapshot:
    """One committed generation of a zoo: its header, records (row order) and index file."""

    generation: int = 0
    index_name: str | None = None
    header: dict | None = None
    """``{"encoder", "base_model", "dim", "layout"}`` fixed by the first expert; ``None`` if empty."""
    records: tuple[dict, ...] = ()
    """Record dicts in index row order."""

    @cached_property
    def by_id(self) -> dict[str, dict]:
        return {r["expert_id"]: r for r in self.records}

    @cached_property
    def spans(self) -> dict[str, tuple[int, int]]:
        """``expert_id -> (first row, end row)`` in the index."""
        spans, row = {}, 0
        for rec in self.records:
            spans[rec["expert_id"]] = (row, row + len(rec["descriptions"]))
            row += len(rec["descriptions"])
        return spans

    @cached_property
    def rows(self) -> list[tuple[str, int]]:
        """``(expert_id, description index)`` of every index row."""
        return [(r["expert_id"], i) for r in self.records for i in range(len(r["descriptions"]))]

    @property
    def num_rows(self) -> int:
        return len(self.rows)


def repair_hint(root: Path) -> str:
    return f"run `expert-zoo --zoo {root} repair` (or ExpertZoo(root).repair())"


def parse_manifest(data: bytes, root: Path) -> Snapshot:
    """Parse the bytes of ``manifest.json``; empty bytes (no manifest) are an empty zoo."""
    if not data:
        return Snapshot()
    path = root / MANIFEST
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ZooError(f"{path} is not valid JSON ({exc}); {repair_hint(root)}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ZooError(f"{path} is not a {FORMAT} manifest; {repair_hint(root)}")
    try:
        snap = Snapshot(int(raw["generation"]), raw["index"], raw["header"], tuple(raw["experts"]))
        problem = next(filter(None, map(record_problem, snap.records)), "")
        if problem or len(snap.by_id) != len(snap.records):
            raise ValueError(problem or "an expert id is listed twice")
        if snap.index_name is not None and not _INDEX_NAME.match(snap.index_name):
            raise ValueError(f"bad index file name {snap.index_name!r}")
        return snap
    except (KeyError, TypeError, ValueError) as exc:
        raise ZooError(f"{path} is malformed ({exc!r}); {repair_hint(root)}") from exc


def read_manifest_bytes(root: Path) -> bytes:
    try:
        return (root / MANIFEST).read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise ZooError(f"{root / MANIFEST} is unreadable: {exc}") from exc


def read_snapshot(root: Path) -> Snapshot:
    """Read ``manifest.json``; a missing manifest is an empty zoo."""
    return parse_manifest(read_manifest_bytes(root), root)


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


def check_index(index: faiss.Index, snap: Snapshot, root: Path) -> None:
    """Raise :class:`ZooError` unless ``index`` has the rows and dimension ``snap`` expects."""
    name, dim = snap.index_name, (snap.header or {}).get("dim")
    if index.ntotal != snap.num_rows or (dim is not None and index.d != dim):
        raise ZooError(
            f"index {root / str(name)} holds {index.ntotal} rows of dimension {index.d}; the "
            f"manifest expects {snap.num_rows} rows of dimension {dim}: {repair_hint(root)}"
        )


# --- the index ----------------------------------------------------------------------------------
def new_index(dim: int) -> faiss.Index:
    """An empty cosine-similarity index for unit-norm ``dim``-d rows."""
    return faiss.IndexFlatIP(dim)


def read_index(root: Path, name: str) -> faiss.Index:
    """Load ``<root>/<name>``; raise :class:`ZooError` if it is missing or unreadable."""
    path = root / name
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise ZooError(
            f"index {path} named by the manifest is missing: {repair_hint(root)}"
        ) from exc
    except OSError as exc:
        raise ZooError(f"index {path} is unreadable: {exc}") from exc
    try:
        return faiss.deserialize_index(data)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise ZooError(f"index {path} is corrupt ({first}): {repair_hint(root)}") from exc


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
        hits = _best_per_expert(snap, rows[0], sims[0], exclude)
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


def _best_per_expert(
    snap: Snapshot, rows: np.ndarray, sims: np.ndarray, exclude: set[str]
) -> list[tuple[str, str, float]]:
    hits, seen = [], set(exclude)
    for row, sim in zip(rows.tolist(), sims.tolist(), strict=True):
        if row < 0:
            break
        expert_id, i = snap.rows[row]
        if expert_id not in seen:
            seen.add(expert_id)
            hits.append((expert_id, snap.by_id[expert_id]["descriptions"][i], float(sim)))
    return hits
