"""Tests of the expert zoo store: round trips, search, crash safety, concurrency, repair, export.

Experts are random adapters for the tiny Llama of ``tests/conftest.py`` with random unit
embeddings (dim 8); nothing loads a real model. Multi-process tests run their writers from a
forkserver that preloads ``expert_zoo.store``, so each writer starts in milliseconds.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from safetensors import safe_open

from expert_zoo import _index
from expert_zoo.store import (
    ExpertRecord,
    ExpertZoo,
    ZooError,
    check_expert_id,
    expert_id_for,
    read_export,
)
from hypergen.adapter_io import LoraAdapter
from hypergen.layout import LoraLayout, delta_weights
from tests.conftest import random_adapter, tiny_llama

DIM = 8
ENCODER = "test-encoder"


@pytest.fixture(scope="module")
def layout() -> LoraLayout:
    return LoraLayout.for_model(tiny_llama())


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


@pytest.fixture
def zoo(tmp_path) -> ExpertZoo:
    return ExpertZoo(tmp_path / "zoo")


@pytest.fixture(scope="module")
def template(tmp_path_factory, layout) -> Path:
    """A zoo of four experts with 1, 2, 3 and 1 descriptions, built once per module."""
    zoo = ExpertZoo(tmp_path_factory.mktemp("template") / "zoo")
    for i, n in enumerate((1, 2, 3, 1)):
        zoo.add(*make_expert(layout, i, n))
    return zoo.root


@pytest.fixture
def filled(template, tmp_path) -> ExpertZoo:
    """A fresh copy of the template zoo (a zoo folder does not depend on where it lies)."""
    return ExpertZoo(shutil.copytree(template, tmp_path / "zoo"))


def ids(zoo: ExpertZoo) -> list[str]:
    return [r.expert_id for r in zoo.records()]


def rows_by_expert(zoo: ExpertZoo) -> dict[str, np.ndarray]:
    emb, rows = zoo.embeddings()
    out: dict[str, list] = {}
    for row, (expert_id, _) in zip(emb, rows, strict=True):
        out.setdefault(expert_id, []).append(row)
    return {k: np.stack(v) for k, v in out.items()}


# --- ids ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "task_id, expected",
    [
        ("bigbench:multiemo/all_sentence_en", "bigbench__multiemo__all_sentence_en"),
        ("user:my-task.v2", "user__my-task.v2"),
        ("bigbench:a b/c", "bigbench__a_b__c-121f75e0"),
        ("../../etc/passwd", "__.__etc__passwd-3754d6cb"),
        ("no_source/x", "no_source__x-6166e269"),
    ],
)
def test_expert_id_for_is_safe_and_pinned(task_id, expected):
    assert expert_id_for(task_id) == expected
    assert check_expert_id(expected) == expected


def test_expert_id_for_keeps_distinct_tasks_distinct():
    tasks = ["u:a b", "u:a_b", "u:a/b", "u/a:b", "u:a__b", "u_:a", "u:_a", "u:a..b", "u:a.b"]
    tasks += ["x" * 300, "x" * 301, ":::", "é:é", "u:a/b/c", "u:a/b__c", "u:a__b/c"]
    made = [expert_id_for(t) for t in tasks]
    assert len(set(made)) == len(tasks)
    assert all(len(m) <= 200 and check_expert_id(m) for m in made)
    with pytest.raises(ZooError):
        expert_id_for("  ")


@pytest.mark.parametrize(
    "bad", ["../x", "a/b", "/abs", "", "..", ".hidden", "a\\b", "x..y", "a" * 201, None]
)
def test_unsafe_ids_are_rejected(bad, filled, layout):
    with pytest.raises(ZooError, match="expert id"):
        check_expert_id(bad)
    with pytest.raises(ZooError):
        make_expert(layout, 9, expert_id=bad)
    with pytest.raises(ZooError):
        filled.get(bad)
    with pytest.raises(ZooError):
        filled.remove(bad)
    assert bad not in filled


# --- add, read, remove --------------------------------------------------------------------------
def test_add_round_trip(zoo, layout):
    record, adapter, emb = make_expert(layout, 1, 3)
    stored = zoo.add(record, adapter, emb)
    assert len(zoo) == 1 and record.expert_id in zoo and "other" not in zoo
    assert stored == zoo.get(record.expert_id) == zoo.records()[0]
    assert len(stored.content_hash) == 64 and stored.created.endswith("+00:00")
    assert stored.metrics == {"gain": 0.1, "steps": 10}
    assert (zoo.encoder, zoo.base_model, zoo.dim) == (ENCODER, "tiny-llama", DIM)
    assert zoo.layout == layout

    folder = zoo.root / "experts" / record.expert_id
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    loaded = zoo.load_adapter(record.expert_id)
    assert loaded.weights["q_proj.A"].dtype == torch.float32
    canon = adapter.canonical().to(torch.float16).to(torch.float32)
    for k, w in canon.weights.items():
        assert torch.equal(loaded.weights[k], w)
    for m, dw in delta_weights(layout, adapter.weights).items():
        torch.testing.assert_close(
            delta_weights(layout, loaded.weights)[m], dw, atol=2e-2, rtol=1e-2
        )
    assert LoraAdapter.from_pretrained(folder, layout=layout).base_model == "tiny-llama"

    all_rows, rows = zoo.embeddings()
    np.testing.assert_array_equal(all_rows, emb)
    assert rows == [(record.expert_id, 0), (record.expert_id, 1), (record.expert_id, 2)]
    assert zoo.verify() == []


def test_records_are_sorted_and_rows_follow_add_order(zoo, layout):
    for i in (3, 1, 2):
        zoo.add(*make_expert(layout, i, 1))
    assert ids(zoo) == sorted(ids(zoo))
    assert [e for e, _ in zoo.embeddings()[1]] == [
        make_expert(layout, i)[0].expert_id for i in (3, 1, 2)
    ]


def test_existing_id_is_refused_unless_replace(filled, layout):
    record, adapter, _ = make_expert(layout, 1)
    with pytest.raises(ZooError, match="replace=True"):
        filled.add(record, adapter, unit_rows(2, 1))
    new = dataclasses.replace(record, descriptions=["new a", "new b", "new c"])
    filled.add(new, random_adapter(layout, seed=77), unit_rows(3, 77), replace=True)
    assert filled.get(record.expert_id).descriptions == ["new a", "new b", "new c"]
    np.testing.assert_array_equal(rows_by_expert(filled)[record.expert_id], unit_rows(3, 77))
    assert len(filled) == 4 and filled.embeddings()[0].shape == (1 + 3 + 3 + 1, DIM)
    assert filled.verify() == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"encoder": "other-encoder"}, "encoder 'other-encoder'.*'test-encoder'"),
        ({"base_model": "other-model"}, "base model"),
        ({"dim": 4}, "dim 4.*dim 8"),
        ({"rank": 4}, "layout mismatch in rank: expected 8, found 4"),
        ({"norm": 2.0}, "unit norm"),
        ({"rows": 3}, r"shape \(2, dim\)"),
    ],
)
def test_add_checks_consistency_with_the_zoo(filled, layout, change, message):
    record, adapter, emb = make_expert(layout, 8)
    if "encoder" in change:
        record = dataclasses.replace(record, encoder=change["encoder"])
    if "base_model" in change:
        record = dataclasses.replace(record, base_model="other-model")
    if "dim" in change:
        emb = unit_rows(2, 8, dim=4)
    if "rank" in change:
        other = LoraLayout.for_model(tiny_llama(), rank=4)
        record, adapter = dataclasses.replace(record, layout=other.to_dict()), random_adapter(other)
    if "norm" in change:
        emb = 2 * emb
    if "rows" in change:
        emb = unit_rows(3, 8)
    before = sorted(os.listdir(filled.root / "experts"))
    with pytest.raises(ZooError, match=message):
        filled.add(record, adapter, emb)
    assert sorted(os.listdir(filled.root / "experts")) == before
    assert filled.verify() == []


def test_remove(filled, layout):
    before = rows_by_expert(filled)
    victim = make_expert(layout, 2)[0].expert_id
    filled.remove(victim)
    assert victim not in filled and len(filled) == 3
    assert not (filled.root / "experts" / victim).exists()
    after = rows_by_expert(filled)
    assert set(after) == set(before) - {victim}
    for expert_id, rows in after.items():
        np.testing.assert_array_equal(rows, before[expert_id])
    assert victim not in [e for e, _, _ in filled.search(before[victim][0], k=10)]
    assert filled.verify() == []
    with pytest.raises(ZooError, match="no expert"):
        filled.remove(victim)
    for expert_id in ids(filled):
        filled.remove(expert_id)
    assert len(filled) == 0 and filled.dim is None and filled.embeddings()[1] == []
    assert filled.search(unit_rows(1, 0)[0]) == [] and filled.verify() == []


# --- search -------------------------------------------------------------------------------------
def test_search_matches_brute_force(zoo, layout):
    for i in range(8):
        zoo.add(*make_expert(layout, i, n_desc=1 + i % 3))
    emb, rows = zoo.embeddings()
    query = unit_rows(1, 123)[0]
    best: dict[str, tuple[float, int]] = {}
    for sim, (expert_id, d) in zip(emb @ query, rows, strict=True):
        best[expert_id] = max(best.get(expert_id, (-2.0, 0)), (float(sim), d))
    ranked = sorted(best.items(), key=lambda kv: -kv[1][0])
    hits = zoo.search(query, k=3)
    assert [h[0] for h in hits] == [e for e, _ in ranked[:3]]
    for (expert_id, description, sim), (_, (want, d)) in zip(hits, ranked, strict=False):
        assert description == zoo.get(expert_id).descriptions[d]
        assert sim == pytest.approx(want, abs=1e-5)
    every = zoo.search(2 * query.reshape(1, -1), k=50)  # any scale, (1, dim) shape
    assert [h[0] for h in every] == [e for e, _ in ranked] and len({h[0] for h in every}) == 8
    top = ranked[0][0]
    loo = zoo.search(query, k=3, exclude={top})
    assert [h[0] for h in loo] == [e for e, _ in ranked[1:4]]
    own = zoo.search(emb[4], k=1)[0]
    assert own[0] == rows[4][0] and own[2] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ZooError, match="shape"):
        zoo.search(np.ones(DIM + 1, np.float32))


# --- incremental index ------------------------------------------------------------------------
def test_add_appends_to_the_index_without_rebuilding(filled, layout, monkeypatch):
    before, _ = filled.embeddings()
    generation = _index.read_snapshot(filled.root).generation

    def forbidden(*args, **kwargs):
        raise AssertionError("add must not rebuild the index or re-read stored embeddings")

    monkeypatch.setattr("expert_zoo._index.new_index", forbidden)
    monkeypatch.setattr("expert_zoo._folder.read_embeddings", forbidden)
    record, adapter, emb = make_expert(layout, 9, 2)
    filled.add(record, adapter, emb)
    after, rows = filled.embeddings()
    np.testing.assert_array_equal(after, np.concatenate([before, emb]))
    assert rows[-2:] == [(record.expert_id, 0), (record.expert_id, 1)]
    snap = _index.read_snapshot(filled.root)
    assert snap.generation == generation + 1 and snap.index_name == f"index-{generation + 1}.faiss"
    assert sorted(p.name for p in filled.root.glob("index-*.faiss")) == [
        f"index-{generation}.faiss",
        f"index-{generation + 1}.faiss",
    ]


# --- crash safety -------------------------------------------------------------------------------
def _crash(*args, **kwargs):
    raise RuntimeError("injected crash")


def _crash_on_replace_into(name: str, monkeypatch) -> None:
    real, calls = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == name and not calls:  # fails once
            calls.append(dst)
            raise RuntimeError("injected crash")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


CRASH_POINTS = {  # step -> whether the expert folder was already published
    "writing the expert folder": False,
    "publishing the expert folder": False,
    "writing the new index": True,
    "renaming the manifest": True,
}


@pytest.mark.parametrize("then", ["add again", "repair"])
@pytest.mark.parametrize("step", list(CRASH_POINTS))
def test_a_crash_at_any_step_leaves_the_old_zoo(filled, layout, monkeypatch, step, then):
    record, adapter, emb = make_expert(layout, 7)
    before_ids, before_rows = ids(filled), filled.embeddings()[0]
    with monkeypatch.context() as m:
        if step == "writing the expert folder":
            m.setattr("expert_zoo._folder.save_embeddings", _crash)
        elif step == "publishing the expert folder":
            _crash_on_replace_into(record.expert_id, m)
        elif step == "writing the new index":
            m.setattr("expert_zoo._index.write_index", _crash)
        else:
            _crash_on_replace_into("manifest.json", m)
        with pytest.raises(RuntimeError, match="injected crash"):
            filled.add(record, adapter, emb)
    assert ids(filled) == before_ids and record.expert_id not in filled
    np.testing.assert_array_equal(filled.embeddings()[0], before_rows)
    assert filled.search(emb[0], k=2)
    problems = filled.verify()
    if CRASH_POINTS[step]:
        assert (
            len(problems) == 1
            and problems[0].startswith("orphan:")
            and record.expert_id in problems[0]
        )
    else:
        assert problems == []
    if then == "add again":
        filled.add(record, adapter, emb)  # an orphan of this id does not make it fail
    else:
        actions = filled.repair()
        assert any(f"adopted orphan {record.expert_id}" in a for a in actions) == CRASH_POINTS[step]
    assert (record.expert_id in filled) == (then == "add again" or CRASH_POINTS[step])
    assert filled.verify() == []
    assert not [p for p in (filled.root / "experts").iterdir() if p.name.startswith(".")]


def test_a_crash_while_collecting_garbage_keeps_the_commit(filled, layout, monkeypatch):
    monkeypatch.setattr(Path, "unlink", _crash_oserror)
    record, adapter, emb = make_expert(layout, 7)
    filled.add(record, adapter, emb)
    assert record.expert_id in filled and filled.verify() == []


def _crash_oserror(*args, **kwargs):
    raise OSError("injected")


def test_an_interrupted_replace_is_reported_stale_and_repaired(filled, layout, monkeypatch):
    record, _, _ = make_expert(layout, 1)
    new = dataclasses.replace(record, descriptions=["replaced"])
    monkeypatch.setattr("expert_zoo._index.write_index", _crash)
    with pytest.raises(RuntimeError):
        filled.add(new, random_adapter(layout, seed=50), unit_rows(1, 50), replace=True)
    monkeypatch.undo()
    problems = filled.verify()
    assert len(problems) == 1 and problems[0].startswith("stale:")
    assert any("updated the manifest entry" in a for a in filled.repair())
    assert filled.get(record.expert_id).descriptions == ["replaced"]
    np.testing.assert_array_equal(rows_by_expert(filled)[record.expert_id], unit_rows(1, 50))
    assert filled.verify() == []


@pytest.mark.parametrize("how", ["exception", "crash"])
def test_a_replace_stopped_between_its_two_renames_keeps_the_old_expert(
    filled, layout, monkeypatch, how
):
    record, _, _ = make_expert(layout, 2)
    folder = filled.root / "experts" / record.expert_id
    before = (filled.get(record.expert_id), rows_by_expert(filled))
    if how == "exception":  # add() puts the old folder back itself
        _crash_on_replace_into(record.expert_id, monkeypatch)
        with pytest.raises(RuntimeError):
            filled.add(record, random_adapter(layout, seed=60), unit_rows(2, 60), replace=True)
        monkeypatch.undo()
    else:  # the state a SIGKILL between the renames leaves; repair puts the old folder back
        (folder.parent / f".{folder.name}.old-abc123").mkdir()
        os.replace(folder, folder.parent / f".{folder.name}.old-abc123" / "x")
        assert [p.split(":")[0] for p in filled.verify()] == ["missing"]
        assert any(line.startswith("restored") for line in filled.repair())
    assert filled.verify() == []
    assert filled.get(record.expert_id) == before[0]
    np.testing.assert_array_equal(
        rows_by_expert(filled)[record.expert_id], before[1][record.expert_id]
    )
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


# --- readers ------------------------------------------------------------------------------------
class _NoLock:
    def __enter__(self):
        raise AssertionError("a reader took the zoo lock")

    def __exit__(self, *exc):
        return False


def test_readers_take_no_lock(filled):
    filled._lock = _NoLock()
    expert_id = ids(filled)[0]
    emb, _ = filled.embeddings()
    assert filled.search(emb[0], k=2) and len(filled) == 4 and expert_id in filled
    assert filled.get(expert_id) == filled.records()[0]
    assert filled.load_adapter(expert_id).layout == filled.layout


def test_a_reader_follows_a_commit_that_removed_its_index(filled, layout, monkeypatch):
    reader, writer = ExpertZoo(filled.root), ExpertZoo(filled.root)
    real_read, calls = _index.read_index, []

    def read_index(root, name):
        calls.append(name)
        if len(calls) == 1:  # between the reader's manifest read and its index read, two commits
            monkeypatch.setattr("expert_zoo._index.read_index", real_read)
            writer.add(*make_expert(layout, 10))
            writer.add(*make_expert(layout, 11))
            monkeypatch.setattr("expert_zoo._index.read_index", read_index)
        return real_read(root, name)

    monkeypatch.setattr("expert_zoo._index.read_index", read_index)
    hits = reader.search(unit_rows(1, 0)[0], k=10)
    assert len(hits) == 6 and len(calls) == 2 and calls[0] != calls[1]


# --- several processes --------------------------------------------------------------------------
WORKER = """
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


def _writer(
    root: Path, layout: LoraLayout, prefix: str, count: int, done: Path, kill_at: str = ""
) -> mp.Process:
    """A process adding ``count`` experts ``<prefix>_<i>``; it logs ``ready`` and each id added.

    ``kill_at="module.function"`` makes the process SIGKILL itself when that function is called.
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["expert_zoo.store"])
    env = dict(ROOT=str(root), LAYOUT=layout.to_dict(), PREFIX=prefix, COUNT=count, DONE=str(done))
    module, _, name = kill_at.rpartition(".")
    code = (KILL_AT if kill_at else "") + WORKER
    env.update(DIM=DIM, ENCODER=ENCODER, MODULE=module, NAME=name)
    proc = ctx.Process(target=exec, args=(code, env))
    proc.start()
    return proc


def _wait_ready(done: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (done.exists() and done.read_text().startswith("ready")):
        assert time.monotonic() < deadline, "writer process did not start"
        time.sleep(0.01)


def test_concurrent_adds_from_several_processes(tmp_path, layout):
    root = tmp_path / "zoo"
    reader = ExpertZoo(root)
    procs = [_writer(root, layout, f"p{n}", 4, tmp_path / f"done{n}") for n in range(3)]
    seen = 0
    while any(p.is_alive() for p in procs):  # readers never see a half-written state
        emb, rows = reader.embeddings()
        assert emb.shape[0] == len(rows) and len(rows) >= seen
        seen = len(rows)
        if rows:
            assert len(reader.search(emb[-1], k=3)) == min(3, len({e for e, _ in rows}))
        time.sleep(0.01)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert ids(reader) == sorted(f"p{n}_{i}" for n in range(3) for i in range(4))
    assert reader.embeddings()[0].shape == (24, DIM)
    assert reader.verify() == []


@pytest.mark.parametrize(
    "kill_at, published, committed",
    [
        ("expert_zoo._folder.save_embeddings", False, False),
        ("expert_zoo._index.write_index", True, False),
        ("expert_zoo._index.publish_manifest", True, False),
        ("expert_zoo._index.collect_garbage", True, True),
    ],
)
def test_sigkill_at_each_step_of_an_add(filled, tmp_path, layout, kill_at, published, committed):
    before = ids(filled)
    proc = _writer(filled.root, layout, "killed", 1, tmp_path / "log", kill_at=kill_at)
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    assert ids(filled) == sorted(before + ["killed_0"] * committed)
    problems = filled.verify()
    assert [p.split(":")[0] for p in problems] == ["orphan"] * (published and not committed)
    _check_readable(filled)
    filled.repair()
    assert filled.verify() == []
    assert ids(filled) == sorted(before + ["killed_0"] * published)
    assert not [p for p in (filled.root / "experts").iterdir() if p.name.startswith(".")]


def test_sigkill_during_adds_loses_and_duplicates_nothing(tmp_path, layout):
    root, rng = tmp_path / "zoo", random.Random(0)
    zoo, done, in_flight = ExpertZoo(root), set(), set()
    for round_ in range(4):
        log = tmp_path / f"done{round_}"
        proc = _writer(root, layout, f"k{round_}", 10_000, log)
        _wait_ready(log)
        time.sleep(rng.uniform(0.05, 0.5))
        proc.kill()
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        finished = log.read_text().split()[1:]
        done |= set(finished)
        in_flight.add(f"k{round_}_{len(finished)}")
        assert done <= set(ids(zoo))  # every add that returned survived
        problems = zoo.verify()
        assert len(problems) <= 1 and all(p.startswith("orphan:") for p in problems), problems
        _check_readable(zoo)
        zoo.repair()
        assert zoo.verify() == []
        assert done <= set(ids(zoo)) <= done | in_flight
        _check_readable(zoo)


def _check_readable(zoo: ExpertZoo) -> None:
    records = zoo.records()
    emb, rows = zoo.embeddings()
    assert len({r.expert_id for r in records}) == len(records)
    assert emb.shape[0] == len(rows) == sum(len(r.descriptions) for r in records)
    for record in records:
        assert zoo.load_adapter(record.expert_id, torch.float16).base_model == "tiny-llama"
    if records:
        assert zoo.search(emb[0], k=1)[0][2] == pytest.approx(1.0, abs=1e-5)


# --- verify and repair --------------------------------------------------------------------------
def _flip(path: Path, at: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _current_index(root: Path) -> Path:
    return root / _index.read_snapshot(root).index_name


def _garbage_index(root: Path, _: str) -> None:
    _current_index(root).write_bytes(b"not a faiss index")


def _wrong_rows(root: Path, _: str) -> None:
    snap = _index.read_snapshot(root)
    index = faiss.IndexFlatIP(DIM)
    index.add(unit_rows(snap.num_rows, 999))
    _index.write_index(index, _current_index(root))


def _traversal_in_manifest(root: Path, victim: str) -> None:
    data = json.loads((root / "manifest.json").read_text())
    for record in data["experts"]:
        if record["expert_id"] == victim:
            record["expert_id"] = "../../outside"
    (root / "manifest.json").write_text(json.dumps(data))


DAMAGE = {  # name -> (damage(root, victim), kind verify reports, victim still in the zoo after repair)
    "flipped adapter byte": (
        lambda r, v: _flip(r / "experts" / v / "adapter_model.safetensors"),
        "corrupt:",
        False,
    ),
    "truncated adapter": (
        lambda r, v: (r / "experts" / v / "adapter_model.safetensors").write_bytes(b"\0" * 8),
        "corrupt:",
        False,
    ),
    "flipped embedding byte": (
        lambda r, v: _flip(r / "experts" / v / "embeddings.safetensors", -2),
        "corrupt:",
        False,
    ),
    "deleted expert.json": (
        lambda r, v: (r / "experts" / v / "expert.json").unlink(),
        "corrupt:",
        True,
    ),
    "deleted expert folder": (
        lambda r, v: shutil.rmtree(r / "experts" / v),
        "missing:",
        False,
    ),
    "deleted index": (lambda r, v: _current_index(r).unlink(), "index:", True),
    "garbage index": (_garbage_index, "index:", True),
    "index rows differ": (_wrong_rows, "index:", True),
    "garbage manifest": (lambda r, v: (r / "manifest.json").write_text("{"), "manifest:", True),
    "deleted manifest": (lambda r, v: (r / "manifest.json").unlink(), "orphan:", True),
    "traversal id in manifest": (_traversal_in_manifest, "manifest:", True),
    "alien folder": (lambda r, v: (r / "experts" / "not an expert").mkdir(), "unknown:", True),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_verify_finds_damage_and_repair_fixes_it(filled, layout, damage):
    hurt, kind, kept = DAMAGE[damage]
    victim = make_expert(layout, 1)[0].expert_id
    before_rows, before_ids = rows_by_expert(filled), ids(filled)
    assert filled.repair() == []  # a sound zoo needs nothing
    hurt(filled.root, victim)
    problems = filled.verify()
    assert problems and any(p.startswith(kind) for p in problems), problems
    actions = filled.repair()
    assert actions and actions[-1].startswith("committed manifest generation")
    assert filled.verify() == []
    assert ids(filled) == [i for i in before_ids if kept or i != victim]
    for expert_id, rows in rows_by_expert(filled).items():  # stored embeddings, not re-encoded
        np.testing.assert_array_equal(rows, before_rows[expert_id])
    quarantined = [p.name for p in (filled.root / "quarantine").glob("*")]
    assert any(q.startswith(victim) for q in quarantined) == (kind == "corrupt:" and not kept)
    _check_readable(filled)


def test_add_refuses_a_zoo_whose_index_is_gone(filled, layout):
    _current_index(filled.root).unlink()
    with pytest.raises(ZooError, match="missing.*repair"):
        filled.add(*make_expert(layout, 9))
    assert not [p for p in filled.verify() if not p.startswith("index:")]  # no orphan either
    filled.repair()
    filled.add(*make_expert(layout, 9))
    assert len(filled) == 5 and filled.verify() == []


# --- export and pickle --------------------------------------------------------------------------
def test_export_and_import_round_trip(filled, tmp_path):
    path = filled.export(tmp_path / "zoo.safetensors")
    exported = read_export(path)
    n, rows = len(filled), filled.embeddings()
    assert exported.weights["q_proj.A"].shape == (n, 2, 8, 16)
    assert exported.weights["v_proj.B"].shape == (n, 2, 8, 8)
    assert exported.weights["q_proj.A"].dtype == torch.float16
    np.testing.assert_array_equal(exported.embeddings, rows[0])
    assert exported.header["dim"] == DIM and len(exported.records) == n

    copy = ExpertZoo.import_(path, tmp_path / "copy")
    assert ids(copy) == ids(filled) and copy.verify() == []
    for expert_id in ids(filled):
        original, imported = filled.get(expert_id), copy.get(expert_id)
        assert dataclasses.replace(imported, content_hash="") == dataclasses.replace(
            original, content_hash=""
        )
        a, b = filled.load_adapter(expert_id), copy.load_adapter(expert_id)
        assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    query = unit_rows(1, 5)[0]
    assert copy.search(query, k=3) == filled.search(query, k=3)
    with pytest.raises(ZooError, match="already in"):
        ExpertZoo.import_(path, tmp_path / "copy")


def test_nothing_is_loaded_with_pickle():
    package = Path(__file__).parents[2] / "expert_zoo"
    for name in ("store.py", "_index.py", "_folder.py", "_repair.py", "_export.py"):
        source = (package / name).read_text()
        assert not re.search(r"import pickle|pickle\.load|torch\.load|np\.load", source), name


def test_zoo_round_trip_runs_with_pickle_disabled(filled, tmp_path, monkeypatch):
    for target in ("pickle.load", "pickle.loads", "torch.load", "numpy.load"):
        monkeypatch.setattr(target, _crash)
    emb, _ = filled.embeddings()
    assert filled.search(emb[0], k=2) and filled.verify() == []
    copy = ExpertZoo.import_(filled.export(tmp_path / "z.safetensors"), tmp_path / "copy")
    assert [copy.load_adapter(i).base_model for i in ids(copy)] == ["tiny-llama"] * 4
