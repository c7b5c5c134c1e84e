"""The end-to-end stage's extra tasks (``--sft-extra``): catalogue training tasks without an
expert in the zoo, selected by fnmatch pattern (:func:`extra_tasks`) and laid out as description
rows that follow the bank's (:class:`ExtraTasks`), trained on beside the zoo's tasks by
:class:`training.e2e.EndToEnd`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from expert_zoo.cli import matches
from expert_zoo.tasks import Task
from hypergen.bank import ExpertBank
from training.data import GeneratorDataModule
from training.e2e_tasks import task_ids


def catalogue_ids() -> list[str]:
    """The ids of the task catalogue's training tasks (every source's tasks of families outside
    the held-out rule: packaged, Debian, npm and synthetic), sorted."""
    from expert_zoo.tasks.base import is_held_out
    from expert_zoo.tasks.debian import DEBIAN_SOURCES
    from expert_zoo.tasks.npm import NPM_SOURCES
    from expert_zoo.tasks.packaged import SOURCES, select_sources
    from expert_zoo.tasks.synthetic import synthetic_tasks

    packaged = select_sources([*SOURCES, *DEBIAN_SOURCES, *NPM_SOURCES], "train")
    synthetic = [t.task_id for t in synthetic_tasks(1, 0) if not is_held_out(t.family)]
    return sorted({*(s.task_id for s in packaged), *synthetic})


def extra_tasks(zoo, bank: ExpertBank, patterns: Sequence[str]) -> list[Task]:
    """The catalogue's training tasks (:func:`catalogue_ids`) whose id matches one of the fnmatch
    ``patterns`` and that no expert of ``bank`` was trained on, loaded, in id order.

    Raises:
        ValueError: no such task (every match already has an expert, or nothing matches).
    """
    from expert_zoo.tasks.by_id import load_tasks

    held = set(task_ids(zoo, bank))
    matched = [t for t in catalogue_ids() if matches(t, list(patterns))]
    wanted = [t for t in matched if t not in held]
    if not wanted:
        why = f"all {len(matched)} that match have an expert" if matched else "none matches"
        raise ValueError(
            f"--sft-extra {list(patterns)}: no catalogue training task without an expert ({why}); "
            "task ids look like 'dict-freedict-eng-deu:freedict_eng_deu'"
        )
    return load_tasks(wanted)


@dataclass
class ExtraTasks:
    """Training tasks without an expert in the zoo, as description rows that follow the bank's:
    task ``j`` is expert number ``len(bank) + j`` of the stage (it has no weights and is never
    retrieved), its descriptions' rows come after the bank's rows, and each row's neighbours are
    the zoo's training experts outside the task's family (as a training expert's are, see
    :mod:`training.data`)."""

    tasks: list[Task]
    row_task: np.ndarray
    """``(n,)`` the task (index into ``tasks``) of each row."""
    embeddings: np.ndarray
    """``(n, d)`` the rows' description embeddings (unit norm)."""
    idx: np.ndarray
    sims: np.ndarray
    dropped: list[str]
    """Task ids left out because their family is a validation family (training on them would
    leak the family the validation loss measures as unseen)."""

    @classmethod
    def build(
        cls,
        tasks: Sequence[Task],
        bank: ExpertBank,
        data: GeneratorDataModule,
        encoder=None,
    ) -> ExtraTasks:
        """Embed ``tasks``' descriptions with ``encoder`` (default: the shipped encoder; it must be
        the one the zoo was embedded with) and retrieve each row's ``data.k`` neighbours from
        ``bank`` (never a validation expert, never one of the task's family when
        ``data.exclude_same_family``)."""
        from hypergen.encoder import TaskEncoder

        data.setup()
        val_families = {bank.families[int(e)] for e in data.val_experts} - {""}
        kept = [t for t in tasks if t.family not in val_families]
        dropped = [t.task_id for t in tasks if t.family in val_families]
        empty = [t.task_id for t in kept if not t.train]
        if empty:
            raise ValueError(f"extra tasks without training examples: {empty[:5]}")
        d = bank.embeddings.shape[1]
        if not kept:
            none = np.zeros(0, np.int64)
            return cls(
                [],
                none,
                np.zeros((0, d), np.float32),
                none.reshape(0, data.k),
                np.zeros((0, data.k), np.float32),
                dropped,
            )
        encoder = encoder or TaskEncoder()
        if getattr(encoder, "name", bank.encoder) != bank.encoder:
            raise ValueError(
                f"the zoo's descriptions were embedded with {bank.encoder!r}, not {encoder.name!r}"
            )
        texts = [text for t in kept for text in t.descriptions]
        row_task = np.repeat(np.arange(len(kept)), [len(t.descriptions) for t in kept])
        embeddings = encoder.encode(texts, truncate=True).reshape(len(texts), d)
        val = set(data.val_experts.tolist())
        by_family: dict[str, set[int]] = {}
        for i, family in enumerate(bank.families):
            by_family.setdefault(family, set()).add(i)
        excluded = [  # an empty family name is a family of one, as in training.data
            val
            | (
                by_family.get(kept[j].family, set())
                if data.exclude_same_family and kept[j].family
                else set()
            )
            for j in row_task.tolist()
        ]
        idx, sims = bank.search(embeddings, data.k, excluded)
        return cls(kept, row_task, embeddings.astype(np.float32), idx, sims, dropped)
