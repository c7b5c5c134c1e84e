"""Helpers shared by the zoo store tests: deterministic tiny experts and random unit rows."""

from __future__ import annotations

import dataclasses

import numpy as np

from expert_zoo.store import (
    ExpertRecord,
    ExpertZoo,
    expert_id_for,
)
from hypergen.layout import LoraLayout
from tests.conftest import random_adapter

DIM = 8
ENCODER = "test-encoder"


def unit_rows(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def make_expert(layout: LoraLayout, i: int, n_desc: int = 2, **changes):
    """``(record, adapter, embeddings)`` of expert ``i``, deterministic in ``i``."""
    task_id = f"synthetic:fam{i}/task{i}"
    record = ExpertRecord(
        expert_id=expert_id_for(task_id),
        task_id=task_id,
        family=f"fam{i}",
        descriptions=[f"description {i}.{j}" for j in range(n_desc)],
        encoder=ENCODER,
        base_model="tiny-llama",
        layout=layout.to_dict(),
        metrics={"gain": 0.1 * i, "steps": np.int64(10)},
    )
    return (
        dataclasses.replace(record, **changes),
        random_adapter(layout, seed=i),
        unit_rows(n_desc, i),
    )


def ids(zoo: ExpertZoo) -> list[str]:
    return [r.expert_id for r in zoo.records()]


def rows_by_expert(zoo: ExpertZoo) -> dict[str, np.ndarray]:
    emb, rows = zoo.embeddings()
    out: dict[str, list] = {}
    for row, (expert_id, _) in zip(emb, rows, strict=True):
        out.setdefault(expert_id, []).append(row)
    return {k: np.stack(v) for k, v in out.items()}


def _crash(*args, **kwargs):
    raise RuntimeError("injected crash")
