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

import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np
import torch

from hypergen.layout import LoraLayout, Weights
from hypergen.zoo_format import (  # the zoo's files are read there; re-exported for callers
    EXPORT_FORMAT,
    BankError,
    ExportWeights,
    ZooExport,
    best_per_expert,
    read_zoo_export,
    read_zoo_folder,
)

__all__ = [
    "EXPORT_FORMAT",
    "BankError",
    "ExpertBank",
    "ExportWeights",
    "ZooExport",
    "read_zoo_export",
    "read_zoo_folder",
]

logger = logging.getLogger(__name__)

APPROXIMATE_ABOVE = 4096
"""Banks with more experts than this search in two stages (:meth:`ExpertBank.search`)."""
SHORTLIST = 128
"""Experts the first stage keeps for the exact second stage."""


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
        self.index = export.index
        if self.index is None or self.index.ntotal != len(self.embeddings):
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

    @property
    def resident(self) -> Weights | None:
        """:attr:`weights` if they are in memory (a zoo folder, or an export file once read
        whole), else ``None``: then only :meth:`gather` reads experts."""
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
        found = best_per_expert(self.row_expert, rows.tolist(), row_sims.tolist(), k, exclude)
        return [(expert, sim) for expert, sim, _ in found]
