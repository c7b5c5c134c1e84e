"""The on-disk format of an expert zoo, read side: the one owner of ``manifest.json`` and the
FAISS index it names, used by the zoo store (:mod:`expert_zoo`), the bank the generator
retrieves from (:mod:`hypergen.bank`), the benchmark and the app.

``<root>/manifest.json`` lists the zoo's records in index row order (expert ``i`` owns
``len(descriptions)`` consecutive rows) and names the current index file::

    {"format": "hypergen-expert-zoo/1", "generation": 7, "index": "index-7.faiss",
     "header": {"encoder": ..., "base_model": ..., "dim": 384, "layout": {...}},
     "experts": [<ExpertRecord as a dict>, ...]}

The index is a ``faiss.IndexFlatIP`` over unit-norm description embeddings, so inner product is
cosine similarity. An export file (``expert-zoo export``) is one safetensors file holding the same
records, the stacked weights and the embeddings. :mod:`.folder` reads folders, :mod:`.export`
export files; the write side (the commit by one rename, garbage collection) is
:mod:`expert_zoo._index`; see docs/design.md, "The zoo on disk".
"""

from __future__ import annotations

from .export import (
    EXPORT_FORMAT,
    BankError,
    ExportWeights,
    ZooExport,
    read_zoo_export,
    read_zoo_folder,
    zoo_records,
)
from .folder import (
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

__all__ = [
    "EXPORT_FORMAT",
    "FORMAT",
    "MANIFEST",
    "MAX_ID_CHARS",
    "BankError",
    "ExportWeights",
    "Snapshot",
    "ZooError",
    "ZooExport",
    "best_per_expert",
    "check_index",
    "id_problem",
    "parse_manifest",
    "read_index",
    "read_manifest_bytes",
    "read_snapshot",
    "read_zoo_export",
    "read_zoo_folder",
    "record_problem",
    "repair_hint",
    "zoo_records",
]
