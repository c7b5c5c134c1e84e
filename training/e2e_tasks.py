"""The zoo's tasks of the end-to-end stage (:mod:`training.e2e`): each expert's ``task_id`` from
its record, the experts an ``--sft-only`` pattern selects, and their tasks re-loaded with the
zoo's training recipe."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from expert_zoo.cli import matches
from expert_zoo.tasks import Task
from expert_zoo.train import ExpertTrainConfig
from hypergen.bank import ExpertBank
from training.evaluation.baselines import load_zoo_tasks, zoo_recipe, zoo_records


def task_ids(zoo, bank: ExpertBank) -> list[str]:
    """The ``task_id`` of each expert of ``bank``, from its record in ``zoo``.

    Raises:
        ValueError: an expert's record lacks it (a zoo built before task ids were kept).
    """
    records = {r["expert_id"]: r for r in zoo_records(zoo)}
    missing = [e for e in bank.expert_ids if "task_id" not in records.get(e, {})]
    if missing:
        raise ValueError(
            f"the end-to-end stage (--sft-steps) needs each expert's task_id; missing for {missing[:5]}"
        )
    return [records[e]["task_id"] for e in bank.expert_ids]


def matching(zoo, bank: ExpertBank, only: Sequence[str] = ()) -> np.ndarray:
    """Boolean mask of the experts whose task id matches one of the fnmatch patterns ``only``
    (every expert when it is empty).

    Raises:
        ValueError: no task id matches.
    """
    ids = task_ids(zoo, bank)
    mask = np.array([matches(t, list(only)) for t in ids])
    if not mask.any():
        raise ValueError(
            f"no expert's task id matches --sft-only {list(only)} (ids look like {ids[0]!r}; "
            "see expert-zoo list)"
        )
    return mask


def zoo_tasks(
    zoo, bank: ExpertBank, only: Sequence[str] = ()
) -> tuple[list[Task | None], ExpertTrainConfig]:
    """Each expert's task of ``bank`` (re-loaded by the ``task_id`` its record in ``zoo`` keeps),
    in expert order, and the zoo's training recipe. With ``only`` (:func:`matching`), the tasks
    of the other experts are not loaded: ``None`` in their place."""
    ids, wanted = task_ids(zoo, bank), matching(zoo, bank, only)
    loaded = iter(load_zoo_tasks([t for t, w in zip(ids, wanted, strict=True) if w]))
    tasks = [next(loaded) if w else None for w in wanted]
    return tasks, zoo_recipe(list(zoo_records(zoo)))
