"""Concurrency: several processes add experts to one zoo while others read and search it, and
many threads ask one generator for adapters at once. All adds land, the index stays consistent,
readers never see a half-written state, and every request gets its own result."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from expert_zoo.store import ExpertZoo
from hypergen.layout import LoraLayout
from tests.conftest import tiny_llama
from tests.expert_zoo.helpers import DIM, check_readable, ids, start_process, start_writer

WRITERS, ADDS, READERS = 6, 5, 2

READER = """
import os, random
from collections import Counter
import torch
from expert_zoo.store import ExpertZoo

zoo, rng, checks, seen = ExpertZoo(ROOT), random.Random(SEED), 0, 0
while not os.path.exists(STOP) or checks == 0:
    records = zoo.records()
    assert len(records) >= seen  # the zoo only grows: no add is ever undone
    seen = len(records)
    emb, rows = zoo.embeddings()
    assert emb.shape[0] == len(rows), (emb.shape, len(rows))  # one generation, never a mix
    assert set(Counter(e for e, _ in rows).values()) <= {2}  # every expert has both its rows
    if rows:
        row = rng.randrange(len(rows))
        best = zoo.search(emb[row], k=3)
        assert best and abs(best[0][2] - 1.0) < 1e-4, best  # its own row is found
        expert_id = rng.choice(sorted({e for e, _ in rows}))
        adapter = zoo.load_adapter(expert_id, torch.float16)  # a listed expert is whole
        assert all(torch.isfinite(w).all() for w in adapter.weights.values())
    checks += 1
with open(DONE, "w") as f:
    f.write(str(checks))
"""


@pytest.mark.slow
def test_concurrent_writers_and_readers(tmp_path):
    root, layout = tmp_path / "zoo", LoraLayout.for_model(tiny_llama())
    ExpertZoo(root)
    stop = tmp_path / "stop"
    readers = [
        start_process(
            exec, READER, dict(ROOT=str(root), SEED=n, STOP=str(stop), DONE=str(tmp_path / f"r{n}"))
        )
        for n in range(READERS)
    ]
    writers = [
        start_writer(root, layout, f"w{n}", ADDS, tmp_path / f"w{n}.log") for n in range(WRITERS)
    ]
    for proc in writers:
        proc.join(300)
    stop.touch()
    for proc in readers:
        proc.join(120)
    assert [p.exitcode for p in writers + readers] == [0] * (WRITERS + READERS)
    zoo = ExpertZoo(root)
    assert ids(zoo) == sorted(f"w{n}_{i}" for n in range(WRITERS) for i in range(ADDS))
    emb, rows = zoo.embeddings()
    assert emb.shape == (2 * WRITERS * ADDS, DIM) and zoo.verify() == []
    for n in range(WRITERS):  # each expert's rows are its own embeddings, in its own place
        for i in range(ADDS):
            expected = np.random.default_rng(i).standard_normal((2, DIM)).astype(np.float32)
            expected /= np.linalg.norm(expected, axis=1, keepdims=True)
            mine = [k for k, (e, _) in enumerate(rows) if e == f"w{n}_{i}"]
            np.testing.assert_allclose(emb[mine], expected, rtol=0, atol=1e-6)
    check_readable(zoo)
    checks = [int((tmp_path / f"r{n}").read_text()) for n in range(READERS)]
    print(
        f"\nconcurrency: {WRITERS} writer processes, {WRITERS * ADDS} adds, all present; "
        f"{READERS} reader processes made {sum(checks)} consistent reads and searches"
    )


REQUESTS = [
    (f"{verb} the {thing} of a {what}", seed, temperature)
    for seed, (verb, thing, what) in enumerate(
        (v, t, w)
        for v in ("Reverse", "Count", "Classify", "Translate")
        for t in ("letters", "sentiment", "words", "vowels")
        for w in ("word", "review", "sentence", "tweet")
    )
    for temperature in (0.0, 0.7)
]


def test_many_threads_each_get_their_own_adapter(tiny_hypergen):
    def ask(request):
        description, seed, temperature = request
        return tiny_hypergen.generate(description, seed=seed, temperature=temperature)

    expected = [ask(r) for r in REQUESTS]  # one at a time
    order = random.Random(0).sample(range(len(REQUESTS)), len(REQUESTS))
    with ThreadPoolExecutor(max_workers=16) as pool:
        got = dict(zip(order, pool.map(ask, [REQUESTS[i] for i in order]), strict=True))
    assert len({float(e.adapter.weights["q_proj.B"].sum()) for e in expected}) > len(REQUESTS) // 2
    for i, want in enumerate(expected):
        assert got[i].description == want.description and got[i].neighbors == want.neighbors
        for key, value in want.adapter.weights.items():
            assert torch.equal(got[i].adapter.weights[key], value), (REQUESTS[i], key)
    print(f"\nconcurrency: {len(REQUESTS)} generate requests on 16 threads, each its own result")
