"""Training data for the generator: one item per (expert, description) row of a zoo, with its
neighbours retrieved leave-one-out.

While an expert is the target, it never retrieves itself (or the model learns to copy its
input). With ``exclude_same_family`` (the default) it does not retrieve its family's siblings
either, which mimics the held-out split (docs/design.md, "The held-out rule"), where a whole
family is unseen. Validation experts are never retrieved by anyone (the zoo a validation task
sees is the training zoo), so validation measures generation for tasks that are not in the zoo.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hypergen.bank import ExpertBank

logger = logging.getLogger(__name__)


def load_bank(zoo: str | Path | ExpertBank) -> ExpertBank:
    """An :class:`ExpertBank` from a bank, a zoo folder or a zoo export file."""
    return zoo if isinstance(zoo, ExpertBank) else ExpertBank.load(Path(zoo).expanduser())


def split_experts(
    num_experts: int,
    val_fraction: float,
    seed: int,
    families: Sequence[str] | None = None,
    eligible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic ``(train, val)`` expert indices, sorted; at least one of each when
    ``val_fraction > 0`` (none for validation when it is 0, or by family when there is one).

    With ``families`` (one name per expert; an empty name is a family of one) whole families go
    to validation, drawn in a seeded order until they hold at least ``val_fraction`` of the
    experts, so that no validation expert has a sibling among the training ones: that is the
    held-out rule's split (docs/design.md), under which a benchmark task's family is unseen.
    Split by expert, a validation task's siblings (the same dataset in another language or
    subtask) are trained on, and the validation loss overstates what carries to new families.

    With ``eligible`` (a boolean mask: the experts a run trains and validates on, the others
    being neighbours only), the validation share and the draw count eligible experts alone:
    only families with an eligible member are drawn, whole (a drawn family's other members go
    to validation too, so that none of them is retrieved)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    mask = np.ones(num_experts, bool) if eligible is None else np.asarray(eligible, bool)
    if mask.shape != (num_experts,) or not mask.any():
        raise ValueError(f"eligible must mark some of the {num_experts} experts")
    n_eligible = int(mask.sum())
    n_val = (
        0 if val_fraction == 0 else min(n_eligible - 1, max(1, round(val_fraction * n_eligible)))
    )
    rng = np.random.default_rng(seed)
    if families is None:
        pool = np.flatnonzero(mask)
        order = (
            pool[rng.permutation(len(pool))]
            if eligible is not None
            else rng.permutation(num_experts)
        )
        val_idx = np.sort(order[:n_val])
        return np.setdiff1d(np.arange(num_experts), val_idx), val_idx
    if len(families) != num_experts:
        raise ValueError(f"{len(families)} family names for {num_experts} experts")
    groups: dict[str, list[int]] = {}
    for i, family in enumerate(families):
        groups.setdefault(family or f"\0{i}", []).append(i)
    names = sorted(n for n, members in groups.items() if mask[members].any())
    val: list[int] = []
    for g in rng.permutation(len(names)):
        taken = int(mask[val].sum()) if val else 0
        if taken >= n_val:
            break
        members = groups[names[g]]
        if taken + int(mask[members].sum()) < n_eligible:  # always a family left to train on
            val.extend(members)
    val_idx = np.sort(np.asarray(val, dtype=np.int64))
    return np.setdiff1d(np.arange(num_experts), val_idx), val_idx


def exclusions(bank: ExpertBank, val: np.ndarray, same_family: bool) -> list[set[int]]:
    """Per expert, the experts it may not retrieve: itself, every validation expert and (with
    ``same_family``) experts of its own family (an empty family name is a family of one)."""
    by_family: dict[str, set[int]] = {}
    for i, family in enumerate(bank.families):
        by_family.setdefault(family or f"\0{i}", set()).add(i)
    out = []
    for i, family in enumerate(bank.families):
        siblings = by_family[family or f"\0{i}"] if same_family else set()
        out.append({i, *siblings, *val.tolist()})
    return out


def retrieve(bank: ExpertBank, k: int, excluded: list[set[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(idx, sims)`` of shape ``(R, k)``: leave-one-out neighbours of every description row."""
    rows = [excluded[e] for e in bank.row_expert]
    most = max(len(e) for e in rows)
    if len(bank) - most < k:
        raise ValueError(
            f"k={k} neighbours, but only {len(bank) - most} of {len(bank)} experts remain for some "
            "target after leaving out itself, the validation experts and its family: lower k, "
            "val_fraction, or turn off exclude_same_family"
        )
    return bank.search(bank.embeddings, k, rows)


class RowDataset(Dataset):
    """Description rows as dicts of ``row``, ``expert``, ``embedding (d,)``, ``neighbours (k,)``,
    ``sims (k,)``.

    The rows are ``bank``'s description rows, or with ``row_expert`` and ``embeddings`` a table
    that extends them (rows of tasks without an expert, numbered after the bank's experts; see
    :class:`training.e2e_extra.ExtraTasks`)."""

    def __init__(
        self,
        rows: np.ndarray,
        bank: ExpertBank,
        idx: np.ndarray,
        sims: np.ndarray,
        row_expert: np.ndarray | None = None,
        embeddings: np.ndarray | None = None,
    ):
        self.rows = torch.as_tensor(rows, dtype=torch.int64)
        row_expert = bank.row_expert if row_expert is None else row_expert
        embeddings = bank.embeddings if embeddings is None else embeddings
        if not len(row_expert) == len(embeddings) == len(idx) == len(sims):
            raise ValueError(
                f"one expert, embedding and neighbour list per row: {len(row_expert)}, "
                f"{len(embeddings)}, {len(idx)}, {len(sims)}"
            )
        self.expert = torch.as_tensor(row_expert, dtype=torch.int64)
        self.embeddings = torch.as_tensor(embeddings)
        self.idx, self.sims = torch.as_tensor(idx), torch.as_tensor(sims)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r = self.rows[i]
        return {
            "row": r,
            "expert": self.expert[r],
            "embedding": self.embeddings[r],
            "neighbours": self.idx[r],
            "sims": self.sims[r],
        }


class GeneratorDataModule(L.LightningDataModule):
    """Description rows of a zoo, split by expert (or by family) into train and validation.

    Args:
        zoo: an :class:`ExpertBank`, a zoo export file or a zoo folder.
        k: neighbours retrieved per row.
        batch_size: rows per batch.
        val_fraction: share of experts held out for validation (0: train on all).
        seed: seed of the split and of the shuffling.
        exclude_same_family: a target does not retrieve experts of its own family either.
        split_by_family: validation takes whole families (see :func:`split_experts`).
        eligible: boolean mask of the experts trained and validated on (see
            :func:`split_experts`); ``None``: every expert.
        num_workers: DataLoader workers (the items are tiny; 0 is usually best).
    """

    def __init__(
        self,
        zoo: str | Path | ExpertBank,
        k: int = 4,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        seed: int = 0,
        exclude_same_family: bool = True,
        num_workers: int = 0,
        split_by_family: bool = False,
        eligible: np.ndarray | None = None,
    ):
        super().__init__()
        self.bank = load_bank(zoo)
        self.k, self.batch_size, self.seed, self.num_workers = k, batch_size, seed, num_workers
        self.exclude_same_family = exclude_same_family
        self.train_experts, self.val_experts = split_experts(
            len(self.bank),
            val_fraction,
            seed,
            self.bank.families if split_by_family else None,
            eligible,
        )
        self.idx: np.ndarray | None = None
        self.sims: np.ndarray | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.idx is not None:
            return
        excluded = exclusions(self.bank, self.val_experts, self.exclude_same_family)
        self.idx, self.sims = retrieve(self.bank, self.k, excluded)
        logger.info(
            "%d experts (%d train, %d val), %d description rows, k=%d",
            len(self.bank),
            len(self.train_experts),
            len(self.val_experts),
            len(self.bank.row_expert),
            self.k,
        )

    def _rows(self, experts: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.isin(self.bank.row_expert, experts))

    def _loader(self, experts: np.ndarray, shuffle: bool) -> DataLoader:
        self.setup()
        dataset = RowDataset(self._rows(experts), self.bank, self.idx, self.sims)
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=gen if shuffle else None,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_experts, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_experts, shuffle=False) if len(self.val_experts) else []
