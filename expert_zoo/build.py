"""Filling a zoo: train, score and add one expert per task, resumably and in shards.

An interrupted build continues where it stopped (experts already in the zoo are skipped); with
``shard=(i, n)`` several workers fill one zoo, each taking the tasks whose stable hash falls in
its shard, and the zoo's lock keeps their adds safe.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from expert_zoo import rejected
from expert_zoo.store import ExpertRecord, ExpertZoo, expert_id_for
from expert_zoo.tasks import Task
from expert_zoo.train import ExpertTrainConfig, train_expert
from hypergen.base_model import BaseModel
from hypergen.encoder import TaskEncoder

logger = logging.getLogger(__name__)


@dataclass
class BuildReport:
    """What one build run did."""

    added: list[str]
    skipped: list[str]
    dropped: list[str]
    seconds: float
    retrained: list[str] = field(default_factory=list)
    """Flagged experts of another recipe that were trained again (also in ``added``)."""


def in_shard(task_id: str, shard: tuple[int, int]) -> bool:
    """Stable assignment of a task to shard ``i`` of ``n`` (same in every process)."""
    i, n = shard
    if not 0 <= i < n:
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {i}/{n}")
    return int(hashlib.sha256(task_id.encode()).hexdigest()[:8], 16) % n == i


def add_task(
    zoo: ExpertZoo,
    base: BaseModel,
    encoder: TaskEncoder,
    task: Task,
    config: ExpertTrainConfig,
    keep_flagged: bool = True,
    progress: bool = True,
    replace: bool = False,
) -> ExpertRecord | None:
    """Train an expert on ``task`` and add it; returns None when it was dropped as flagged.

    ``replace`` replaces an expert of the same id (a retrained one). A dropped expert is
    written to the zoo's ``rejected.json`` (:mod:`expert_zoo.rejected`) with its numbers, and a
    flagged expert it was retraining leaves the zoo with it; an added one clears its task's
    rejection."""
    adapter, metrics = train_expert(base, task, config, progress=progress)
    record = ExpertRecord(
        expert_id=expert_id_for(task.task_id),
        task_id=task.task_id,
        family=task.family,
        descriptions=list(task.descriptions),
        encoder=encoder.name,
        base_model=base.name,
        layout=adapter.layout.to_dict(),
        metrics=metrics,
        flagged=not metrics["beats_base"],
    )
    if record.flagged and not keep_flagged:
        logger.warning(
            "dropping %s: gain %.3f does not beat the base model", task.task_id, metrics["gain"]
        )
        rejected.reject(zoo.root, record)
        if replace and record.expert_id in zoo and zoo.get(record.expert_id).flagged:
            zoo.remove(record.expert_id)
        return None
    embeddings = encoder.encode(list(task.descriptions), truncate=True)
    added = zoo.add(record, adapter, embeddings, replace=replace)
    rejected.forget(zoo.root, task.task_id)
    return added


def build(
    zoo: ExpertZoo,
    base: BaseModel,
    encoder: TaskEncoder,
    tasks: Iterable[Task],
    config: ExpertTrainConfig,
    shard: tuple[int, int] = (0, 1),
    keep_flagged: bool = True,
    progress: bool = True,
    retrain_flagged: bool = False,
) -> BuildReport:
    """Add an expert for every task of this shard that the zoo does not have yet (and that was
    not rejected with this recipe: see :mod:`expert_zoo.rejected`).

    With ``retrain_flagged``, flagged experts whose recipe is not ``config`` are trained again
    with it and replace the old ones (a resumed build skips those already retrained)."""
    start, report = time.perf_counter(), BuildReport([], [], [], 0.0)
    todo = _todo(zoo, tasks, shard, report, config.record(), retrain_flagged, keep_flagged)
    for task, again in todo:
        record = add_task(zoo, base, encoder, task, config, keep_flagged, progress, replace=again)
        (report.added if record else report.dropped).append(task.task_id)
        if again:
            report.retrained.append(task.task_id)
        logger.info("zoo %s: %d experts (%d added this run)", zoo.root, len(zoo), len(report.added))
    report.seconds = time.perf_counter() - start
    return report


def _todo(
    zoo: ExpertZoo,
    tasks: Iterable[Task],
    shard,
    report: BuildReport,
    recipe: dict,
    retrain: bool,
    keep_flagged: bool,
) -> Iterator[tuple[Task, bool]]:
    """``(task, replace)`` for every task to train: new ones (unless rejected with ``recipe``
    by a build that does not keep flagged experts), and with ``retrain`` the flagged experts of
    another recipe."""
    for task in tasks:
        if not in_shard(task.task_id, shard):
            continue
        expert_id = expert_id_for(task.task_id)
        if expert_id not in zoo:
            if keep_flagged or rejected.rejected_with(zoo.root, task.task_id, recipe) is None:
                yield task, False
            else:
                report.skipped.append(task.task_id)
            continue
        record = zoo.get(expert_id)
        if retrain and record.flagged and not keep_flagged:
            if rejected.rejected_with(zoo.root, task.task_id, recipe) is not None:
                zoo.remove(expert_id)  # a kill came between its rejection and its removal
                report.skipped.append(task.task_id)
                continue
        if not record.flagged:
            rejected.forget(zoo.root, task.task_id)  # a kill came between its add and this
        if retrain and record.flagged and record.metrics.get("recipe") != recipe:
            yield task, True
            continue
        report.skipped.append(task.task_id)
