"""The on-disk format of an expert zoo, read side: the one owner of ``manifest.json`` and the
FAISS index it names, used by the zoo store (:mod:`expert_zoo`), the bank the generator
retrieves from (:mod:`hypergen.bank`), the benchmark and the app.

``<root>/manifest.json`` lists the zoo's records in index row order (expert ``i`` owns
``len(descriptions)`` consecutive rows) and names the current index file::

    {"format": "hypergen-expert-zoo/1", "generation": 7, "index": "index-7.faiss",
     "header": {"encoder": ..., "base_model": ..., "dim": 384, "layout": {...}},
     "experts": [<ExpertRecord as a dict>, ...]}

The index is a ``faiss.IndexFlatIP`` over unit-norm description embeddings, so inner product is
cosine similarity. The write side (the commit by one rename, garbage collection) is
:mod:`expert_zoo._index`; see docs/design.md, "The zoo on disk".
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np
import torch
from safetensors import safe_open

from hypergen.adapter_io import LoraAdapter
from hypergen.errors import HypergenError
from hypergen.layout import LoraLayout, Weights

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


def zoo_records(path: str | Path) -> list[dict]:
    """The expert records of a zoo folder (its validated manifest) or of a zoo export file (its
    metadata), without reading any weights."""
    path = Path(path)
    if path.is_dir():
        return list(read_snapshot(path).records)
    return read_zoo_export(path, weights=False).records


# --- folders and export files, read into memory ------------------------------------------
EXPORT_FORMAT = "hypergen-expert-zoo-export/1"


class BankError(HypergenError, ValueError):
    """A zoo export file is missing, unreadable or malformed."""


@dataclass
class ZooExport:
    """The raw content of an export file."""

    header: dict
    """``{"encoder", "base_model", "dim", "layout"}`` of the zoo."""
    records: list[dict]
    """Expert records (``ExpertRecord.to_dict()``), in expert order."""
    weights: dict[str, torch.Tensor]
    """``"<module>.A"`` -> ``(E, L, r, in)`` and ``"<module>.B"`` -> ``(E, L, out, r)``."""
    embeddings: np.ndarray
    """``(R, dim)`` float32 description embeddings."""
    row_expert: np.ndarray
    """``(R,)`` int64: the expert of each row."""
    row_description: np.ndarray
    """``(R,)`` int64: the description of each row."""
    index: faiss.Index | None = None
    """The zoo folder's committed FAISS index over ``embeddings`` (``None``: build one)."""


def read_zoo_export(path: str | Path, weights: bool = True) -> ZooExport:
    """Read an export file; raises :class:`BankError` on anything but a well-formed one.

    With ``weights=False`` the (large) weight tensors are not read: ``weights`` is empty.
    """
    path = Path(path)
    if not path.is_file():
        raise BankError(f"zoo export {path} does not exist: write one with `expert-zoo export`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = [k for k in f.keys() if weights or not k.startswith("weights.")]
            tensors = {k: f.get_tensor(k) for k in keys}
    except Exception as exc:  # safetensors raises its own error types on corrupt files
        raise BankError(f"{path} is not a readable safetensors file: {exc}") from exc
    if meta.get("format") != EXPORT_FORMAT:
        raise BankError(f"{path} is not a {EXPORT_FORMAT} file (format {meta.get('format')!r})")
    try:
        zoo = json.loads(meta["zoo"])
        prefix = "weights."
        return ZooExport(
            header=zoo["header"],
            records=zoo["experts"],
            weights={k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
            embeddings=tensors["embeddings"].numpy(),
            row_expert=tensors["row_expert"].numpy(),
            row_description=tensors["row_description"].numpy(),
        )
    except (KeyError, json.JSONDecodeError, TypeError) as exc:
        raise BankError(f"{path}: malformed zoo export ({exc})") from exc


def read_zoo_folder(root: str | Path) -> ZooExport:
    """The content of a zoo folder, in the same form as an export file."""
    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise BankError(f"{root} is not a readable zoo folder (no {MANIFEST})")
    try:
        snap = read_snapshot(root)
    except ZooError as exc:
        raise BankError(f"{root} is not a readable zoo folder ({exc})") from exc
    records, header = list(snap.records), snap.header
    if not records:
        raise BankError(f"zoo {root} has no experts: build some with `expert-zoo build`")
    layout = LoraLayout.from_dict(header["layout"])
    weights: dict[str, list[torch.Tensor]] = {k: [] for k in layout.expected_shapes()}
    embeddings, row_expert, row_description = [], [], []
    for i, record in enumerate(records):
        folder = root / "experts" / Path(record["expert_id"]).name
        adapter = LoraAdapter.from_pretrained(folder, layout=layout)
        for key, value in adapter.weights.items():
            weights[key].append(value)
        try:
            with safe_open(str(folder / "embeddings.safetensors"), framework="np") as f:
                emb = f.get_tensor("embeddings")
        except Exception as exc:
            raise BankError(
                f"{folder}: unreadable embeddings ({exc}): run `expert-zoo repair`"
            ) from exc
        if len(emb) != len(record["descriptions"]):
            raise BankError(
                f"{folder}: {len(emb)} description embeddings for "
                f"{len(record['descriptions'])} descriptions: run `expert-zoo repair`"
            )
        embeddings.append(emb)
        row_expert += [i] * len(emb)
        row_description += list(range(len(emb)))
    return ZooExport(
        header=header,
        records=records,
        weights={k: torch.stack(v) for k, v in weights.items()},
        embeddings=(stacked := np.concatenate(embeddings).astype(np.float32)),
        row_expert=np.asarray(row_expert, dtype=np.int64),
        row_description=np.asarray(row_description, dtype=np.int64),
        index=_committed_index(root, snap, stacked),
    )


def _committed_index(root: Path, snap, embeddings: np.ndarray) -> faiss.Index | None:
    """The index the manifest names, if it holds exactly ``embeddings`` (the experts' files,
    row for row); ``None`` (the bank builds its own from the embeddings) when it is missing,
    does not fit, or differs, with a warning: retrieval must never pair rows with the wrong
    experts."""
    if snap.index_name is None:
        return None
    try:
        index = read_index(root, snap.index_name)
        check_index(index, snap, root)
    except ZooError as exc:
        logger.warning("%s; retrieving from an index built from the experts' embeddings", exc)
        return None
    if index.ntotal != len(embeddings) or not np.array_equal(
        index.reconstruct_n(0, index.ntotal), embeddings
    ):
        logger.warning(
            "index %s of %s differs from the experts' embeddings (a writer was committing?); "
            "retrieving from an index built from the embeddings",
            snap.index_name,
            root,
        )
        return None
    return index


class ExportWeights:
    """The stacked weights of an export file, read on demand: only the experts asked for.

    Expert ``e``'s slice of a ``(E, ...)`` tensor is one contiguous byte range of the file, read
    with one positioned read (no memory map, so nothing else of the file enters the process).
    """

    PREFIX = "weights."
    DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = open(self.path, "rb")  # kept open while the bank lives
        self._lock = threading.Lock()
        self._rows = self._read_layout()
        if not self._rows:
            raise BankError(f"{path}: the zoo export holds no weights")
        self.num_experts = {shape[0] for _, _, shape, _ in self._rows.values()}.pop()

    def _read_layout(self) -> dict[str, tuple[int, torch.dtype, tuple[int, ...], int]]:
        """``key -> (first byte, dtype, shape, bytes per expert)`` of every weight tensor."""
        try:
            size = int.from_bytes(self._file.read(8), "little")
            header = json.loads(self._file.read(size))
            rows = {}
            for name, entry in header.items():
                if not name.startswith(self.PREFIX):
                    continue
                dtype, shape = self.DTYPES[entry["dtype"]], tuple(entry["shape"])
                begin, end = entry["data_offsets"]
                step = dtype.itemsize * int(np.prod(shape[1:]))
                if end - begin != step * shape[0]:
                    raise ValueError(f"{name}: {end - begin} bytes for shape {shape}")
                rows[name[len(self.PREFIX) :]] = (8 + size + begin, dtype, shape, step)
            return rows
        except (KeyError, TypeError, ValueError) as exc:
            raise BankError(f"{self.path}: unreadable zoo export weights ({exc!r})") from exc

    def gather(self, experts: Sequence[int]) -> Weights:
        """``{"m.A": (n, L, r, in), "m.B": (n, L, out, r)}`` of ``experts``, as stored (fp16)."""
        out = {}
        with self._lock:
            for key, (begin, dtype, shape, step) in self._rows.items():
                buf = np.empty((len(experts), step), dtype=np.uint8)
                for i, e in enumerate(experts):
                    self._file.seek(begin + int(e) * step)
                    if self._file.readinto(buf[i]) != step:
                        raise BankError(f"{self.path} is truncated: re-export the zoo")
                out[key] = torch.from_numpy(buf).view(dtype).reshape(len(experts), *shape[1:])
        for key, value in out.items():  # read on demand, so checked on demand
            bad = ~torch.isfinite(value).flatten(1).all(1)
            if bad.any():
                which = [int(experts[i]) for i in torch.nonzero(bad).flatten().tolist()]
                raise BankError(
                    f"{self.path}: expert(s) {which} hold NaN or inf in {key!r}: "
                    "re-export the zoo from a verified zoo folder"
                )
        return out

    def all(self) -> Weights:
        return self.gather(range(self.num_experts))
