"""Helpers shared by the zoo store tests (and tests/reliability): deterministic tiny experts,
random unit rows, and writer processes started from a forkserver that preloads the library, so
each one starts in milliseconds.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest
import torch

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


PRELOAD = ["expert_zoo.cli", "training.cli"]
"""What the forkserver imports once; every test's processes come from the same server."""


def start_process(target, *args) -> mp.Process:
    """Run ``target(*args)`` in a fresh process forked from a preloaded forkserver."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    proc = ctx.Process(target=target, args=args)
    proc.start()
    return proc


WRITER = """
import numpy as np, torch
from expert_zoo.store import ExpertRecord, ExpertZoo
from hypergen.adapter_io import LoraAdapter
from hypergen.layout import LoraLayout

layout, zoo = LoraLayout.from_dict(LAYOUT), ExpertZoo(ROOT)
with open(DONE, "a") as done:
    done.write("ready\\n")
    done.flush()
    for i in range(COUNT):
        expert_id = f"{PREFIX}_{i}"
        gen = torch.Generator().manual_seed(i)
        weights = {k: torch.randn(s, generator=gen) for k, s in layout.expected_shapes().items()}
        emb = np.random.default_rng(i).standard_normal((2, DIM)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        record = ExpertRecord(expert_id, "synthetic:" + expert_id, "synthetic",
                              ["a " + expert_id, "b " + expert_id], ENCODER, "tiny-llama", LAYOUT)
        zoo.add(record, LoraAdapter(layout, weights, "tiny-llama"), emb)
        done.write(expert_id + "\\n")
        done.flush()
"""


KILL_AT = """
import importlib, os, signal
setattr(importlib.import_module(MODULE), NAME, lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
"""


def start_writer(
    root: Path,
    layout: LoraLayout,
    prefix: str,
    count: int,
    done: Path,
    kill_at: str = "",
    wrap: str = "",
    **env,
) -> mp.Process:
    """A process adding ``count`` experts ``<prefix>_<i>``; it logs ``ready`` and each id added.

    ``kill_at="module.function"`` makes the process SIGKILL itself when that function is called.
    ``wrap`` is code run instead, with the writer's code in ``WRITER`` and ``env`` as globals.
    """
    module, _, name = kill_at.rpartition(".")
    code = (KILL_AT if kill_at else "") + WRITER
    env.update(ROOT=str(root), LAYOUT=layout.to_dict(), PREFIX=prefix, COUNT=count, DONE=str(done))
    env.update(DIM=DIM, ENCODER=ENCODER, MODULE=module, NAME=name, WRITER=code)
    return start_process(exec, wrap or code, env)


def wait_ready(done: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (done.exists() and done.read_text().startswith("ready")):
        assert time.monotonic() < deadline, "writer process did not start"
        time.sleep(0.01)


def check_readable(zoo: ExpertZoo) -> None:
    """Every listed expert loads, rows match records, and an expert's own row finds it."""
    records = zoo.records()
    emb, rows = zoo.embeddings()
    assert len({r.expert_id for r in records}) == len(records)
    assert emb.shape[0] == len(rows) == sum(len(r.descriptions) for r in records)
    for record in records:
        assert zoo.load_adapter(record.expert_id, torch.float16).base_model == record.base_model
    if records:
        assert zoo.search(emb[0], k=1)[0][2] == pytest.approx(1.0, abs=1e-5)
