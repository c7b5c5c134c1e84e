"""The expert zoo store: expert LoRAs with their description embeddings and a FAISS index.

Example:
    >>> zoo = ExpertZoo("zoo")
    >>> zoo.add(record, adapter, encoder.encode(record.descriptions))
    >>> zoo.search(encoder.encode("Classify the sentiment of a review"), k=3)
    [("bigbench__multiemo__all_sentence_en", "Label the emotion ...", 0.71), ...]

On disk::

    <root>/experts/<id>/     adapter_config.json, adapter_model.safetensors  (canonical, fp16)
                             embeddings.safetensors (float32, one unit row per description)
                             expert.json (the ExpertRecord)
    <root>/manifest.json     the committed records in index row order (see expert_zoo._index)
    <root>/index-<gen>.faiss IndexFlatIP over the description embeddings (cosine similarity)
    <root>/quarantine/       folders that `repair` moved out of the zoo

An add writes the expert folder with ``atomic_dir`` (one rename), then commits manifest and index
with a second rename, both under an inter-process lock, so concurrent writers are safe and a crash
leaves the old zoo or the new one. A folder published without a manifest entry (a crash between
the two renames) is an *orphan*: readers do not see it, ``verify`` reports it, ``repair`` (or the
next add of that id) adopts it. Readers take no lock. Nothing is ever loaded with pickle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from expert_zoo import _export, _folder, _index, _repair
from expert_zoo._export import ZooExport
from expert_zoo._index import ZooError
from hypergen._fs import atomic_dir, path_lock
from hypergen.adapter_io import LoraAdapter
from hypergen.layout import LoraLayout

__all__ = [
    "ExpertRecord",
    "ExpertZoo",
    "ZooError",
    "ZooExport",
    "check_expert_id",
    "expert_id_for",
    "read_export",
]

logger = logging.getLogger(__name__)

EXPERTS = "experts"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_PART = r"[A-Za-z0-9.-]+(?:_[A-Za-z0-9.-]+)*"  # no "__", no "_" at either end
_REVERSIBLE = re.compile(rf"^{_PART}:{_PART}(?:/{_PART})*$")
"""Task ids ``source:path/to/task`` whose ``__``-joined form can be split back unambiguously."""


def check_expert_id(expert_id: object) -> str:
    """Return ``expert_id`` if it is a safe folder name, else raise :class:`ZooError`."""
    problem = _index.id_problem(expert_id)
    if problem:
        raise ZooError(f"bad expert id {expert_id!r}: {problem}")
    return expert_id


def expert_id_for(task_id: str) -> str:
    """A safe expert id for a task id: ``"bigbench:multiemo/all_sentence_en"`` ->
    ``"bigbench__multiemo__all_sentence_en"``.

    ``:`` and ``/`` become ``__``. When that is not reversible (other characters replaced, not
    ``source:path/...``, ``__``, ``..`` or a part starting or ending with ``_``, over 200
    characters), an 8-digit hash of the task id is appended so two task ids never share an id.
    """
    if not isinstance(task_id, str) or not task_id.strip():
        raise ZooError(f"a task id must be a non-empty str, got {task_id!r}")
    plain = task_id.replace(":", "__").replace("/", "__")
    safe = re.sub(r"\.{2,}", ".", _UNSAFE.sub("_", plain)).lstrip(".-")
    if not (_REVERSIBLE.match(task_id) and safe == plain and len(safe) <= _index.MAX_ID_CHARS):
        digest = hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        safe = f"{safe[: _index.MAX_ID_CHARS - 9] or 'task'}-{digest}"
    return check_expert_id(safe)


@dataclass
class ExpertRecord:
    """What the zoo knows about one expert; saved as ``expert.json`` in its folder."""

    expert_id: str
    """Folder name under ``experts/``: only ``[A-Za-z0-9_.-]`` (see :func:`expert_id_for`)."""
    task_id: str
    """The task the expert was trained on, e.g. ``bigbench:multiemo/all_sentence_en``."""
    family: str
    """Task family (first path component of a BIG-bench task), used for held-out splits."""
    descriptions: list[str]
    """The task description and its paraphrases; one embedding row each."""
    encoder: str
    """Name of the embedding model (``TaskEncoder.name``)."""
    base_model: str
    """Name of the base model the adapter is for (``BaseModel.name``)."""
    layout: dict
    """``LoraLayout.to_dict()`` of the adapter."""
    metrics: dict = field(default_factory=dict)
    """E.g. ``{"before": {...}, "after": {...}, "gain": 0.1, "train_loss": 0.5, ...}``."""
    flagged: bool = False
    """True when the expert did not beat the base model on its own eval split."""
    content_hash: str = ""
    """sha256 over the stored weights and embeddings files; set by the store."""
    created: str = ""
    """ISO time the expert was added; set by the store."""

    def __post_init__(self) -> None:
        check_expert_id(self.expert_id)
        if isinstance(self.descriptions, str):
            raise ZooError(
                f"expert {self.expert_id}: descriptions must be a list of str, not a str"
            )
        self.descriptions = list(self.descriptions)
        if not self.descriptions or not all(isinstance(d, str) and d for d in self.descriptions):
            raise ZooError(f"expert {self.expert_id}: descriptions must be non-empty strings")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ExpertRecord:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ZooError(f"unknown expert record fields {unknown}; expected {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ZooError(f"not an expert record: {exc}") from exc


class ExpertZoo:
    """A folder of expert LoRAs, searchable by task description (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise ZooError(f"{self.root} is a file, not a zoo folder")
        self.experts_dir.mkdir(parents=True, exist_ok=True)
        self._reader = _index.ManifestReader(self.root)
        self._lock = path_lock(self.root / _index.MANIFEST)

    @property
    def experts_dir(self) -> Path:
        return self.root / EXPERTS

    def __repr__(self) -> str:
        return f"ExpertZoo({str(self.root)!r}, {len(self)} experts)"

    # --- reading (no lock) ----------------------------------------------------------------------
    def _header(self, key: str):
        return (self._reader.snapshot().header or {}).get(key)

    @property
    def layout(self) -> LoraLayout | None:
        data = self._header("layout")
        return None if data is None else LoraLayout.from_dict(data)

    @property
    def encoder(self) -> str | None:
        return self._header("encoder")

    @property
    def base_model(self) -> str | None:
        return self._header("base_model")

    @property
    def dim(self) -> int | None:
        return self._header("dim")

    def __contains__(self, expert_id: object) -> bool:
        return isinstance(expert_id, str) and expert_id in self._reader.snapshot().by_id

    def __len__(self) -> int:
        return len(self._reader.snapshot().records)

    def get(self, expert_id: str) -> ExpertRecord:
        check_expert_id(expert_id)
        snap = self._reader.snapshot()
        if expert_id not in snap.by_id:
            raise ZooError(f"no expert {expert_id!r} in {self.root} ({len(snap.records)} experts)")
        return ExpertRecord.from_dict(snap.by_id[expert_id])

    def records(self) -> list[ExpertRecord]:
        """Every expert's record, sorted by id."""
        snap = self._reader.snapshot()
        return [ExpertRecord.from_dict(snap.by_id[i]) for i in sorted(snap.by_id)]

    def load_adapter(self, expert_id: str, dtype: torch.dtype = torch.float32) -> LoraAdapter:
        """The expert's adapter (canonical form) converted to ``dtype``."""
        record = self.get(expert_id)
        folder = self.experts_dir / expert_id
        if not folder.is_dir():
            raise ZooError(f"expert {expert_id} was removed, or its folder {folder} is missing")
        layout = LoraLayout.from_dict(record.layout)
        return LoraAdapter.from_pretrained(folder, layout=layout).to(dtype)

    def embeddings(self) -> tuple[np.ndarray, list[tuple[str, int]]]:
        """All description rows, float32 ``(rows, dim)``, and ``(expert_id, description index)``
        of each row (read from the index; nothing is re-encoded)."""
        snap, index = self._reader.current()
        if index is None:
            return np.zeros((0, snap.header["dim"] if snap.header else 0), np.float32), []
        return _index.index_rows(index), list(snap.rows)

    def search(
        self, query: np.ndarray, k: int = 5, exclude: set[str] | None = None
    ) -> list[tuple[str, str, float]]:
        """The ``k`` experts whose best description is closest to ``query``.

        Args:
            query: ``(dim,)`` or ``(1, dim)`` embedding of a task description.
            k: how many experts to return.
            exclude: expert ids to leave out (leave-one-out retrieval).

        Returns:
            ``(expert_id, best-matching description, cosine similarity)``, best first.
        """
        snap, index = self._reader.current()
        if index is None or k < 1:
            return []
        return _index.search(snap, index, query, k, set(exclude or ()))

    # --- writing (under the lock) ---------------------------------------------------------------
    def add(
        self,
        record: ExpertRecord,
        adapter: LoraAdapter,
        embeddings: np.ndarray,
        *,
        replace: bool = False,
    ) -> ExpertRecord:
        """Store an expert: its adapter in canonical form as fp16, its description embeddings.

        Args:
            record: the expert's record (``content_hash`` and ``created`` are set here).
            adapter: the trained adapter; its layout and base model must match the record's.
            embeddings: float32 ``(len(record.descriptions), dim)`` unit rows.
            replace: replace an expert of the same id instead of refusing it.

        Returns:
            The record as stored.
        """
        data, emb = _prepare(record, adapter, embeddings)
        stored = adapter.canonical().to(torch.float16)
        stored.metadata.update(expert_id=record.expert_id, task_id=record.task_id)
        data["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        return ExpertRecord.from_dict(self._add(data, stored, emb, replace))

    def redescribe(
        self, expert_id: str, descriptions: list[str], embeddings: np.ndarray
    ) -> ExpertRecord:
        """Replace an expert's descriptions and their embeddings (one unit row each); its
        adapter weights are kept as stored (the same fp16 numbers), its metrics and date too."""
        record = self.get(expert_id)
        stored = self.load_adapter(expert_id, dtype=torch.float16)
        new = ExpertRecord.from_dict({**record.to_dict(), "descriptions": list(descriptions)})
        data, emb = _prepare(new, stored, embeddings)
        data["created"] = record.created
        stored.metadata.update(expert_id=record.expert_id, task_id=record.task_id)
        return ExpertRecord.from_dict(self._add(data, stored, emb, replace=True))

    def _add(self, data: dict, stored: LoraAdapter, emb: np.ndarray, replace: bool) -> dict:
        expert_id = data["expert_id"]
        with self._lock:
            snap = _index.read_snapshot(self.root)
            _index.check_header(snap.header, _index.header_of(data, emb.shape[1]), expert_id)
            if expert_id in snap.by_id and not replace:
                raise ZooError(f"expert {expert_id} is already in {self.root}; pass replace=True")
            index = self._writable_index(snap, emb.shape[1])
            folder = self.experts_dir / expert_id
            if expert_id not in snap.by_id and folder.exists():
                logger.warning("replacing %s, left by an interrupted add", folder)
            try:
                with atomic_dir(folder, overwrite=True) as tmp:
                    data = _folder.write_expert(tmp, data, stored, emb)
            except BaseException:
                _repair.restore_interrupted_replace(self.experts_dir, expert_id)
                raise
            records = [r for r in snap.records if r["expert_id"] != expert_id]
            if expert_id in snap.spans:
                _index.remove_rows(index, *snap.spans[expert_id])
            index.add(emb)
            header = snap.header or _index.header_of(data, emb.shape[1])
            _index.commit(self.root, index, header, [*records, data])
        logger.info("added expert %s to %s", expert_id, self.root)
        return data

    def _writable_index(self, snap: _index.Snapshot, dim: int):
        if snap.index_name is None:
            return _index.new_index(dim)
        index = _index.read_index(self.root, snap.index_name)
        _index.check_index(index, snap, self.root)
        return index

    def remove(self, expert_id: str) -> None:
        """Drop an expert from the manifest and index, then delete its folder."""
        check_expert_id(expert_id)
        with self._lock:
            snap = _index.read_snapshot(self.root)
            if expert_id not in snap.by_id:
                raise ZooError(f"no expert {expert_id!r} in {self.root}")
            index = self._writable_index(snap, snap.header["dim"])
            _index.remove_rows(index, *snap.spans[expert_id])
            records = [r for r in snap.records if r["expert_id"] != expert_id]
            _index.commit(self.root, index if records else None, snap.header, records)
            _repair.discard(self.experts_dir / expert_id)
        logger.info("removed expert %s from %s", expert_id, self.root)

    # --- maintenance ----------------------------------------------------------------------------
    def verify(self) -> list[str]:
        """Problems found, one line each (empty: the zoo is sound). Each line starts with its
        kind: ``manifest:``, ``index:``, ``missing:``, ``corrupt:``, ``stale:``, ``orphan:`` or
        ``unknown:``."""
        with self._lock:
            return _repair.verify(self.root)

    def strays(self) -> list[Path]:
        """Files in the zoo folder that its manifest does not name (see :func:`_repair.strays`);
        :meth:`repair` deletes them."""
        with self._lock:
            return _repair.strays(self.root)

    def repair(self) -> list[str]:
        """Rebuild manifest and index from the expert folders (stored embeddings, no
        re-encoding); move damaged folders to ``<root>/quarantine/``; delete stray files.
        Returns what it did."""
        with self._lock:
            return _repair.repair(self.root)

    def export(self, path: str | Path) -> Path:
        """Write the whole zoo as one ``.safetensors`` file (see :mod:`expert_zoo._export`)."""
        snap, index = self._reader.current()
        if index is None:
            raise ZooError(f"{self.root} is empty: nothing to export")
        adapters = [self.load_adapter(r["expert_id"], torch.float16) for r in snap.records]
        return _export.write(Path(path), snap, adapters, _index.index_rows(index))

    @classmethod
    def import_(cls, path: str | Path, root: str | Path, *, replace: bool = False) -> ExpertZoo:
        """Add every expert of an :meth:`export` file to the zoo at ``root`` (created if needed)."""
        zoo, exported = cls(root), read_export(path)
        layout = LoraLayout.from_dict(exported.header["layout"])
        for i, data in enumerate(exported.records):
            record = ExpertRecord.from_dict({**data, "content_hash": ""})
            weights = {k: w[i] for k, w in exported.weights.items()}
            adapter = LoraAdapter(
                layout, weights, record.base_model, {"expert_id": record.expert_id}
            )
            emb = exported.embeddings[exported.row_expert == i]
            emb = _folder.check_embeddings(emb, len(record.descriptions), record.expert_id)
            zoo._add(record.to_dict(), adapter, emb, replace)
        return zoo


def read_export(path: str | Path) -> ZooExport:
    """Read a file written by :meth:`ExpertZoo.export` (stacked fp16 weights, embeddings, records)."""
    return _export.read(Path(path))


def _prepare(
    record: ExpertRecord, adapter: LoraAdapter, embeddings: np.ndarray
) -> tuple[dict, np.ndarray]:
    """Check a new expert; return its record as a JSON-ready dict and its embeddings."""
    if not isinstance(record, ExpertRecord) or not isinstance(adapter, LoraAdapter):
        raise ZooError("add() takes an ExpertRecord, a LoraAdapter and an embeddings array")
    data = record.to_dict()
    layout = json.loads(json.dumps(adapter.layout.to_dict()))
    if data["layout"] and json.loads(json.dumps(data["layout"])) != layout:
        raise ZooError(f"expert {record.expert_id}: record.layout differs from the adapter's")
    if data["base_model"] != adapter.base_model:
        raise ZooError(
            f"expert {record.expert_id}: record says base model {record.base_model!r}, "
            f"the adapter {adapter.base_model!r}"
        )
    data.update(layout=layout, content_hash="")
    try:
        data = json.loads(json.dumps(data, default=_plain))
    except (TypeError, ValueError) as exc:
        raise ZooError(
            f"expert {record.expert_id}: record is not JSON-serialisable: {exc}"
        ) from exc
    return data, _folder.check_embeddings(embeddings, len(record.descriptions), record.expert_id)


def _plain(value: object) -> object:
    """JSON fallback for numpy and torch scalars in metrics."""
    if isinstance(value, (np.generic, torch.Tensor)) and np.ndim(value) == 0:
        return value.item()
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serialisable")
