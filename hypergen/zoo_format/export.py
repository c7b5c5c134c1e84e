"""Zoo export files (one safetensors file holding a whole zoo) and zoo folders read into
memory in the same form, plus the on-demand reader of an export's weights (the format is
described in :mod:`hypergen.zoo_format`)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from safetensors import safe_open

from hypergen.adapter_io import LoraAdapter
from hypergen.errors import HypergenError
from hypergen.layout import LoraLayout, Weights

from .folder import MANIFEST, ZooError, check_index, read_index, read_snapshot

logger = logging.getLogger(__name__)

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


def zoo_records(path: str | Path) -> list[dict]:
    """The expert records of a zoo folder (its validated manifest) or of a zoo export file (its
    metadata), without reading any weights."""
    path = Path(path)
    if path.is_dir():
        return list(read_snapshot(path).records)
    return read_zoo_export(path, weights=False).records


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
