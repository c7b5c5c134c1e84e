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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from expert_zoo._index import Snapshot, ZooError
from hypergen.adapter_io import LoraAdapter

FORMAT = "hypergen-expert-zoo-export/1"


@dataclass
class ZooExport:
    """The content of an export file."""

    header: dict
    """``{"encoder", "base_model", "dim", "layout"}`` of the zoo."""
    records: list[dict]
    """Expert records (``ExpertRecord.to_dict()``), in expert order."""
    weights: dict[str, torch.Tensor]
    """``"<module>.A"`` -> ``(E, L, r, in)`` and ``"<module>.B"`` -> ``(E, L, out, r)``, fp16."""
    embeddings: np.ndarray
    """``(R, dim)`` float32 description embeddings."""
    row_expert: np.ndarray
    """``(R,)`` int64: the expert of each row."""
    row_description: np.ndarray
    """``(R,)`` int64: the description of each row."""


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
    """Read an export file written by :func:`write` (``ExpertZoo.export``)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types on corrupt files
        raise ZooError(f"{path} is not a readable safetensors file: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise ZooError(f"{path} is not a {FORMAT} file (format {meta.get('format')!r})")
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
