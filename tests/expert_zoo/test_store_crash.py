"""Zoo store under crashes, concurrent writers and damage: nothing lost, nothing half-added.

Multi-process tests run their writers from a forkserver that preloads ``expert_zoo.store``, so
each writer starts in milliseconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from expert_zoo import _index
from expert_zoo.store import (
    ExpertZoo,
    ZooError,
)
from tests.conftest import random_adapter
from tests.expert_zoo.helpers import (
    DIM,
    _crash,
    check_readable,
    ids,
    make_expert,
    rows_by_expert,
    start_writer,
    unit_rows,
    wait_ready,
)


# --- crash safety -------------------------------------------------------------------------------
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


# --- several processes --------------------------------------------------------------------------
def test_concurrent_adds_from_several_processes(tmp_path, layout):
    root = tmp_path / "zoo"
    reader = ExpertZoo(root)
    procs = [start_writer(root, layout, f"p{n}", 4, tmp_path / f"done{n}") for n in range(3)]
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
    proc = start_writer(filled.root, layout, "killed", 1, tmp_path / "log", kill_at=kill_at)
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    assert ids(filled) == sorted(before + ["killed_0"] * committed)
    problems = filled.verify()
    assert [p.split(":")[0] for p in problems] == ["orphan"] * (published and not committed)
    check_readable(filled)
    filled.repair()
    assert filled.verify() == []
    assert ids(filled) == sorted(before + ["killed_0"] * published)
    assert not [p for p in (filled.root / "experts").iterdir() if p.name.startswith(".")]


def test_sigkill_during_adds_loses_and_duplicates_nothing(tmp_path, layout):
    root, rng = tmp_path / "zoo", random.Random(0)
    zoo, done, in_flight = ExpertZoo(root), set(), set()
    for round_ in range(4):
        log = tmp_path / f"done{round_}"
        proc = start_writer(root, layout, f"k{round_}", 10_000, log)
        wait_ready(log)
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
        check_readable(zoo)
        zoo.repair()
        assert zoo.verify() == []
        assert done <= set(ids(zoo)) <= done | in_flight
        check_readable(zoo)


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
    check_readable(filled)


def test_add_refuses_a_zoo_whose_index_is_gone(filled, layout):
    _current_index(filled.root).unlink()
    with pytest.raises(ZooError, match="missing.*repair"):
        filled.add(*make_expert(layout, 9))
    assert not [p for p in filled.verify() if not p.startswith("index:")]  # no orphan either
    filled.repair()
    filled.add(*make_expert(layout, 9))
    assert len(filled) == 5 and filled.verify() == []
