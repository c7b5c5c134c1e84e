"""A whole expert zoo as one ``.safetensors`` file, for shipping or for training the generator.

Tensors (E experts, R description rows; adapters in canonical form, fp16)::

    "weights.<module>.A"  (E, L, r, in)       "weights.<module>.B"  (E, L, out, r)
    "embeddings"          (R, dim) float32    unit rows, index row order
    "row_expert"          (R,) int64          which expert (0..E-1) each row describes
    "row_description"     (R,) int64          which of its descriptions

The safetensors header carries ``{"format": ..., "zoo": JSON {"header": ..., "experts": [...]}}``
with the zoo header (encoder, base model, dim, layout) and the records, in expert order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from expert_zoo._index import Snapshot, ZooError
from hypergen._untrusted import FLOAT_DTYPES, read_safetensors_header
from hypergen.adapter_io import LoraAdapter
from hypergen.zoo_format import EXPORT_FORMAT, BankError, ZooExport, read_zoo_export

FORMAT = EXPORT_FORMAT


def write(path: Path, snap: Snapshot, adapters: list[LoraAdapter], rows: np.ndarray) -> Path:
    """Write ``snap``'s experts (``adapters`` in record order, ``rows`` its index rows)."""
    ids = {r["expert_id"]: i for i, r in enumerate(snap.records)}
    tensors = {
        f"weights.{k}": torch.stack([a.weights[k] for a in adapters]).contiguous()
        for k in adapters[0].weights
    }
    tensors["embeddings"] = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    tensors["row_expert"] = torch.tensor([ids[e] for e, _ in snap.rows], dtype=torch.int64)
    tensors["row_description"] = torch.tensor([d for _, d in snap.rows], dtype=torch.int64)
    zoo = {"header": snap.header, "experts": list(snap.records)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "zoo": json.dumps(zoo)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read(path: Path) -> ZooExport:
    """Read an export file written by :func:`write` (``ExpertZoo.export``).

    Its header is checked first (size, known keys, dtypes, one expert axis), so a crafted file
    is refused before its tensors are read; records and values are checked on import.
    """
    if path.is_file():
        _check_header(path)
    try:
        return read_zoo_export(path)
    except BankError as exc:
        raise ZooError(str(exc)) from exc


_DTYPES = {"embeddings": {"F32"}, "row_expert": {"I64"}, "row_description": {"I64"}}


def _check_header(path: Path) -> None:
    tensors, _ = read_safetensors_header(path, ZooError)
    experts = {t.shape[0] for k, t in tensors.items() if k.startswith("weights.") and t.shape}
    for key, entry in tensors.items():
        allowed = _DTYPES.get(key, FLOAT_DTYPES if key.startswith("weights.") else set())
        if entry.dtype not in allowed:
            raise ZooError(f"{path}: unexpected tensor {key!r} ({entry.dtype} {entry.shape})")
    if len(experts) > 1:
        raise ZooError(f"{path}: weight tensors disagree on the number of experts: {experts}")
