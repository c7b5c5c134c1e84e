"""The expert bank: a zoo's canonical weights and description embeddings, read from a zoo folder
or one zoo export file, with a FAISS index for retrieval.

This is what the generator conditions on at request time (the nearest known skills, as in
SG-LoRA). The export format is written by ``expert-zoo export`` (``ExpertZoo.export``)::

    "weights.<module>.A"  (E, L, r, in)       "weights.<module>.B"  (E, L, out, r)   fp16
    "embeddings"          (R, dim) float32    unit rows
    "row_expert"          (R,) int64          expert (0..E-1) of each description row
    "row_description"     (R,) int64          which of its descriptions

with ``{"format": EXPORT_FORMAT, "zoo": JSON {"header": ..., "experts": [records]}}`` in the
safetensors header. Nothing is unpickled.

A bank read from an export file keeps its weights on disk and reads only the experts a request
retrieves (:meth:`ExpertBank.gather`, one positioned read per expert and tensor), so a zoo of
10,000 experts (~9 GB of fp16 weights) costs its description embeddings and index in memory, not
its weights. A
zoo folder is read whole (its weights in memory as float32): fine for hundreds of experts; export
bigger zoos with ``expert-zoo export`` and serve the file.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
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

EXPORT_FORMAT = "hypergen-expert-zoo-export/1"
APPROXIMATE_ABOVE = 4096
"""Banks with more experts than this search in two stages (:meth:`ExpertBank.search`)."""
SHORTLIST = 128
"""Experts the first stage keeps for the exact second stage."""
ZOO_MANIFEST = "manifest.json"


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
    try:
        manifest = json.loads((root / ZOO_MANIFEST).read_text())
        records, header = manifest["experts"], manifest["header"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise BankError(
            f"{root} is not a readable zoo folder ({exc}): run `expert-zoo verify`"
        ) from exc
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
        embeddings.append(emb)
        row_expert += [i] * len(emb)
        row_description += list(range(len(emb)))
    return ZooExport(
        header=header,
        records=records,
        weights={k: torch.stack(v) for k, v in weights.items()},
        embeddings=np.concatenate(embeddings).astype(np.float32),
        row_expert=np.asarray(row_expert, dtype=np.int64),
        row_description=np.asarray(row_description, dtype=np.int64),
    )


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


def _row_numbers(row_expert: np.ndarray) -> np.ndarray:
    """Which description of its expert each row is (rows of one expert are contiguous)."""
    out = np.zeros(len(row_expert), dtype=np.int64)
    for i in range(1, len(row_expert)):
        out[i] = out[i - 1] + 1 if row_expert[i] == row_expert[i - 1] else 0
    return out


class ExpertBank:
    """Experts' canonical weights and a FAISS index over their descriptions.

    Args:
        export: the zoo's records, embeddings and (unless ``weights`` is given) weights.
        name: what to call the zoo in messages.
        weights: read the weights from here on demand instead of holding ``export.weights``.
    """

    def __init__(self, export: ZooExport, name: str = "zoo", weights: ExportWeights | None = None):
        self.name = name
        self.layout = LoraLayout.from_dict(export.header["layout"])
        self.encoder = export.header.get("encoder", "")
        self.base_model = export.header.get("base_model", "")
        self._source = weights
        self._weights = None if weights else {k: v.float() for k, v in export.weights.items()}
        self.expert_ids = [r["expert_id"] for r in export.records]
        self.families = [r.get("family", "") for r in export.records]
        self.descriptions = [list(r["descriptions"]) for r in export.records]
        self.embeddings = np.ascontiguousarray(export.embeddings, dtype=np.float32)
        self.row_expert = export.row_expert.astype(np.int64)
        stored = weights.num_experts if weights else len(next(iter(self._weights.values()), ()))
        if len(self.row_expert) != len(self.embeddings) or not self.expert_ids:
            raise BankError(
                f"bank {name}: {len(self.embeddings)} embeddings for "
                f"{len(self.row_expert)} rows and {len(self.expert_ids)} experts"
            )
        if stored != len(self.expert_ids):
            raise BankError(f"bank {name}: weights of {stored} experts for {len(self)} records")
        self.layout.validate({k: v[0] for k, v in self.gather(torch.tensor([0])).items()})
        self._rows_per_expert = int(np.bincount(self.row_expert).max())
        self.index = faiss.IndexFlatIP(self.embeddings.shape[1])
        self.index.add(self.embeddings)
        self.approximate_above, self.shortlist = APPROXIMATE_ABOVE, SHORTLIST
        self.sources = [name] * len(self.expert_ids)
        """The zoo each expert comes from (several for a combined bank)."""

    @property
    def weights(self) -> Weights:
        """Every expert's weights, float32 ``{"m.A": (E, L, r, in), "m.B": (E, L, out, r)}``.

        A bank read from an export file reads them all into memory on first use (for training);
        requests use :meth:`gather` instead.
        """
        if self._weights is None:
            logger.info("reading the weights of all %d experts of %s", len(self), self.name)
            self._weights = {k: v.float() for k, v in self._source.all().items()}
        return self._weights

    def gather(self, experts: torch.Tensor) -> Weights:
        """float32 weights of ``experts`` (int64 indices of any shape ``s``): ``{"m.A": (*s, L, r,
        in), "m.B": (*s, L, out, r)}``; only these experts are read."""
        if self._weights is not None:
            return {k: v[experts] for k, v in self._weights.items()}
        flat = experts.reshape(-1).tolist()
        return {
            k: v.float().reshape(*experts.shape, *v.shape[1:])
            for k, v in self._source.gather(flat).items()
        }

    @cached_property
    def expert_embeddings(self) -> torch.Tensor:
        """``(E, d)`` unit mean of each expert's description embeddings (computed once)."""
        emb = torch.from_numpy(self.embeddings)
        rows = torch.from_numpy(self.row_expert)
        sums = torch.zeros(len(self), emb.shape[1]).index_add_(0, rows, emb)
        return torch.nn.functional.normalize(sums, dim=-1)

    @cached_property
    def _centroid_index(self) -> faiss.Index:
        index = faiss.IndexFlatIP(self.dim)
        index.add(np.ascontiguousarray(self.expert_embeddings.numpy()))
        return index

    @cached_property
    def _rows_by_expert(self) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers grouped by expert, and where each expert's group starts."""
        order = np.argsort(self.row_expert, kind="stable")
        starts = np.concatenate([[0], np.cumsum(np.bincount(self.row_expert, minlength=len(self)))])
        return order, starts

    @classmethod
    def from_export(cls, path: str | Path) -> ExpertBank:
        """Read an export file's records and embeddings; its weights stay on disk until asked for."""
        export = read_zoo_export(path, weights=False)
        return cls(export, name=Path(path).stem, weights=ExportWeights(path))

    @classmethod
    def from_zoo_folder(cls, root: str | Path) -> ExpertBank:
        """Read a zoo folder (``manifest.json`` + ``experts/<id>/``, as ``expert-zoo`` writes it).

        Read-only and lock-free: the manifest names the committed experts, each of which is
        validated as it is read.
        """
        return cls(read_zoo_folder(root), name=Path(root).name)

    @classmethod
    def load(cls, path: str | Path | Sequence[str | Path]) -> ExpertBank:
        """A zoo folder or an export file, whichever ``path`` is; several (a list) are served
        as one bank (:meth:`combine`)."""
        if isinstance(path, (list, tuple)):
            if not path:
                raise BankError("no zoo given: pass a zoo folder or export file")
            banks = [cls.load(p) for p in path]
            return banks[0] if len(banks) == 1 else cls.combine(banks)
        path = Path(path)
        if not path.exists():
            raise BankError(
                f"zoo {path} does not exist: pass a zoo folder (with manifest.json, as "
                "`expert-zoo build` writes it) or a zoo export file (`expert-zoo export`)"
            )
        return cls.from_zoo_folder(path) if path.is_dir() else cls.from_export(path)

    @classmethod
    def combine(cls, banks: Sequence[ExpertBank]) -> ExpertBank:
        """One bank over several zoos' experts (in order), e.g. the shipped zoo and a user's.

        The zoos must share the LoRA layout, the encoder and the base model, and no expert id
        may be in two of them; anything else raises :class:`BankError` naming the two zoos.
        Weights are held in memory (an export file's are read whole).
        """
        first = banks[0]
        seen: dict[str, str] = {}
        for bank in banks:
            for what, a, b in (
                ("LoRA layout", first.layout.to_dict(), bank.layout.to_dict()),
                ("encoder", first.encoder, bank.encoder),
                ("base model", first.base_model, bank.base_model),
            ):
                if a != b:
                    raise BankError(
                        f"zoos {first.name} and {bank.name} differ in their {what} ({a} vs {b}): "
                        "zoos served together must share layout, encoder and base model"
                    )
            for expert_id in bank.expert_ids:
                if expert_id in seen:
                    raise BankError(
                        f"expert {expert_id} is in both zoo {seen[expert_id]} and zoo "
                        f"{bank.name}: remove one (`expert-zoo remove`) to serve them together"
                    )
                seen[expert_id] = bank.name
        offsets = np.cumsum([0] + [len(b) for b in banks[:-1]])
        export = ZooExport(
            header={
                "layout": first.layout.to_dict(),
                "encoder": first.encoder,
                "base_model": first.base_model,
                "dim": first.dim,
            },
            records=[
                {"expert_id": e, "family": f, "descriptions": d}
                for b in banks
                for e, f, d in zip(b.expert_ids, b.families, b.descriptions, strict=True)
            ],
            weights={k: torch.cat([b.weights[k] for b in banks]) for k in first.weights},
            embeddings=np.concatenate([b.embeddings for b in banks]),
            row_expert=np.concatenate(
                [b.row_expert + o for b, o in zip(banks, offsets, strict=True)]
            ),
            row_description=np.concatenate([_row_numbers(b.row_expert) for b in banks]),
        )
        bank = cls(export, name="+".join(b.name for b in banks))
        bank.sources = [b.name for b in banks for _ in b.expert_ids]
        return bank

    def __len__(self) -> int:
        return len(self.expert_ids)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def search(
        self, queries: np.ndarray, k: int, exclude: list[set[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest experts of each query (an expert counts once, by its best row).

        Exact for banks of up to ``approximate_above`` experts (4,096). Bigger banks search in two
        stages, as an inverted file does: the ``shortlist`` (128) experts whose unit-mean
        description embedding is nearest, then every description row of those experts exactly
        (the flat scan of all rows reads 60 MB per query at 10,000 experts × 4 descriptions; the
        first stage reads a quarter of that). An expert outside the shortlist can be missed:
        ``hypergen-bench`` prints the recall against exact search on its synthetic zoos.

        Args:
            queries: ``(n, dim)`` unit-norm embeddings.
            k: experts per query; must leave at least ``k`` experts after exclusion.
            exclude: per query, expert indices never returned (leave-one-out retrieval).

        Returns:
            ``(idx, sims)``: ``(n, k)`` int64 expert indices and float32 cosine similarities,
            best first.
        """
        queries, exclude = self._check_search(queries, k, exclude)
        if len(self) > self.approximate_above:
            return self._search_shortlist(queries, k, exclude)
        return self.search_exact(queries, k, exclude)

    def _check_search(
        self, queries: np.ndarray, k: int, exclude: list[set[int]] | None
    ) -> tuple[np.ndarray, list[set[int]]]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        exclude = exclude or [set()] * len(queries)
        most = max((len(e) for e in exclude), default=0)
        if k < 1 or k > len(self) - most:
            raise BankError(
                f"cannot return {k} neighbours from {len(self)} experts with {most} excluded"
            )
        return queries, exclude

    def search_exact(
        self, queries: np.ndarray, k: int, exclude: list[set[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` over every description row, whatever the bank's size."""
        queries, exclude = self._check_search(queries, k, exclude)
        most = max((len(e) for e in exclude), default=0)
        idx = np.zeros((len(queries), k), dtype=np.int64)
        sims = np.zeros((len(queries), k), dtype=np.float32)
        depth = min(len(self.embeddings), (k + most) * self._rows_per_expert)
        while True:
            row_sims, rows = self.index.search(queries, depth)
            done = [
                self._best_experts(r, s, k, ex)
                for r, s, ex in zip(rows, row_sims, exclude, strict=True)
            ]
            if all(len(d) == k for d in done) or depth == len(self.embeddings):
                break
            depth = min(len(self.embeddings), depth * 2)
        for i, found in enumerate(done):
            idx[i], sims[i] = [e for e, _ in found], [s for _, s in found]
        return idx, sims

    def _search_shortlist(
        self, queries: np.ndarray, k: int, exclude: list[set[int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        most = max((len(e) for e in exclude), default=0)
        _, shortlists = self._centroid_index.search(queries, min(len(self), self.shortlist + most))
        order, starts = self._rows_by_expert
        idx = np.zeros((len(queries), k), dtype=np.int64)
        sims = np.zeros((len(queries), k), dtype=np.float32)
        for i, (query, shortlist) in enumerate(zip(queries, shortlists, strict=True)):
            experts = np.array([e for e in shortlist if e >= 0 and e not in exclude[i]], np.int64)
            if len(experts) < k:  # exclusions ate the shortlist: scan every row for this one
                idx[i : i + 1], sims[i : i + 1] = self.search_exact(query, k, [exclude[i]])
                continue
            counts = starts[experts + 1] - starts[experts]
            first = np.cumsum(counts) - counts  # where each expert's rows begin in `rows`
            rows = order[np.repeat(starts[experts] - first, counts) + np.arange(counts.sum())]
            best = np.maximum.reduceat(self.embeddings[rows] @ query, first)
            top = np.argsort(-best, kind="stable")[:k]
            idx[i], sims[i] = experts[top], best[top]
        return idx, sims

    def _best_experts(self, rows, row_sims, k: int, exclude: set[int]) -> list[tuple[int, float]]:
        seen: dict[int, float] = {}
        for row, sim in zip(rows, row_sims, strict=True):
            if row < 0:
                continue
            expert = int(self.row_expert[row])
            if expert not in exclude and expert not in seen:
                seen[expert] = float(sim)
                if len(seen) == k:
                    break
        return list(seen.items())
