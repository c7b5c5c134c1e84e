"""Zoo folders on disk: ``manifest.json`` and its validation, the FAISS index it names, and
the per-expert best-row search over index rows (the format is described in
:mod:`hypergen.zoo_format`)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np

from hypergen.errors import HypergenError

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

    @cached_property
    def row_owner(self) -> np.ndarray:
        """The expert (record index) of every index row, int64 ``(num_rows,)``."""
        counts = [len(r["descriptions"]) for r in self.records]
        return np.repeat(np.arange(len(self.records), dtype=np.int64), counts)

    def row_description(self, row: int) -> tuple[str, str]:
        """``(expert_id, description)`` of index row ``row``."""
        expert_id, i = self.rows[row]
        return expert_id, self.by_id[expert_id]["descriptions"][i]

    def indices(self, expert_ids: Iterable[str]) -> set[int]:
        """The record indices of ``expert_ids`` (unknown ids are ignored)."""
        position = {r["expert_id"]: i for i, r in enumerate(self.records)}
        return {position[e] for e in expert_ids if e in position}


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


def check_index(index: faiss.Index, snap: Snapshot, root: Path) -> None:
    """Raise :class:`ZooError` unless ``index`` has the rows and dimension ``snap`` expects."""
    name, dim = snap.index_name, (snap.header or {}).get("dim")
    if index.ntotal != snap.num_rows or (dim is not None and index.d != dim):
        raise ZooError(
            f"index {root / str(name)} holds {index.ntotal} rows of dimension {index.d}; the "
            f"manifest expects {snap.num_rows} rows of dimension {dim}: {repair_hint(root)}"
        )


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


def best_per_expert(
    row_owner: Sequence[int] | np.ndarray,
    rows: Iterable[int],
    sims: Iterable[float],
    k: int | None = None,
    exclude: set[int] | frozenset[int] = frozenset(),
) -> list[tuple[int, float, int]]:
    """``(owner, similarity, row)`` of the first ``k`` distinct owners (experts) met in
    ``rows`` (search results, best first; FAISS pads with -1), each by its best row, skipping
    the owners in ``exclude``: the top-k experts from a search over description rows."""
    seen: dict[int, tuple[float, int]] = {}
    for row, sim in zip(rows, sims, strict=True):
        if row < 0:
            continue
        owner = int(row_owner[row])
        if owner not in exclude and owner not in seen:
            seen[owner] = (float(sim), int(row))
            if k is not None and len(seen) == k:
                break
    return [(owner, sim, row) for owner, (sim, row) in seen.items()]
