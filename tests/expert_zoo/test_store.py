"""Zoo store: ids, round trips, search, the incremental index, lock-free readers, export.

Experts are random adapters for the tiny Llama of ``tests/conftest.py`` with random unit
embeddings (dim 8); nothing loads a real model.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from expert_zoo import _index
from expert_zoo.store import (
    ExpertZoo,
    ZooError,
    check_expert_id,
    expert_id_for,
    read_export,
)
from hypergen.adapter_io import LoraAdapter
from hypergen.layout import LoraLayout, delta_weights
from tests.conftest import random_adapter, tiny_llama
from tests.expert_zoo.helpers import (
    DIM,
    ENCODER,
    _crash,
    ids,
    make_expert,
    rows_by_expert,
    unit_rows,
)


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


def test_stray_files_are_reported_by_the_cli_and_deleted_by_repair(filled, capsys):
    from expert_zoo import cli

    assert filled.strays() == []  # the previous generation's index is kept on purpose
    old = filled.root / "index-1.faiss"
    old.write_bytes(b"left by a crashed writer")
    (filled.root / "notes.txt").write_text("not the zoo's")
    assert [p.name for p in filled.strays()] == ["index-1.faiss", "notes.txt"]
    assert filled.verify() == []  # readers are not harmed by them
    assert cli.main(["--zoo", str(filled.root), "verify"]) == 1
    assert "stray: " in capsys.readouterr().out
    done = filled.repair()
    assert sum(line.startswith("deleted stray") for line in done) == 2
    assert filled.strays() == [] and not old.exists()
    assert cli.main(["--zoo", str(filled.root), "verify"]) == 0


def test_describe_only_redescribes_the_matching_experts_without_loading_the_rest(
    filled, layout, monkeypatch, capsys
):
    """``describe --only``: the matching expert gets its source's descriptions; the others (here
    ids no source can re-load, as BIG-bench ids are without the sdist) are left untouched."""
    from expert_zoo import cli
    from expert_zoo.tasks.synthetic import synthetic_tasks
    from hypergen import encoder as encoder_module

    class Encoder:
        def __init__(self, folder=None):
            pass

        def encode(self, texts, truncate=False):
            return unit_rows(len(texts), seed=len(texts))

    monkeypatch.setattr(encoder_module, "TaskEncoder", Encoder)
    task = synthetic_tasks()[0]
    record, adapter, emb = make_expert(layout, 9, n_desc=1, task_id=task.task_id)
    filled.add(dataclasses.replace(record, expert_id=expert_id_for(task.task_id)), adapter, emb)
    before = {r.expert_id: r.descriptions for r in filled.records()}
    root = str(filled.root)

    assert cli.main(["--zoo", root, "describe"]) != 0  # without --only every id is re-loaded
    assert "unknown synthetic task 'synthetic:fam0/task0'" in capsys.readouterr().err
    assert cli.main(["--zoo", root, "describe", "--only", "synthetic:nothing*"]) == 2
    assert "no expert's task id matches" in capsys.readouterr().err

    assert cli.main(["--zoo", root, "describe", "--only", task.task_id]) == 0
    assert "redescribed 1 of 1" in capsys.readouterr().out
    zoo = ExpertZoo(filled.root)
    after = {r.expert_id: r.descriptions for r in zoo.records()}
    assert after[expert_id_for(task.task_id)] == list(task.descriptions) != ["description 9.0"]
    assert {k: v for k, v in after.items() if k != expert_id_for(task.task_id)} == {
        k: v for k, v in before.items() if k != expert_id_for(task.task_id)
    }
    assert zoo.verify() == []


def test_stats_by_source_counts_each_source(filled, capsys):
    from expert_zoo import cli

    assert cli.main(["--zoo", str(filled.root), "stats", "--by-source"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| synthetic ")]
    assert len(rows) == 1 and f"| synthetic | {len(filled)} |" in rows[0]


def test_source_table_names_each_sources_licence():
    """Package and Debian sources alike: the table shows the licence their Source records."""
    from types import SimpleNamespace

    from expert_zoo.cli import source_table
    from expert_zoo.tasks.debian import DEBIAN_SOURCES
    from expert_zoo.tasks.packaged import SOURCES

    chosen = (SOURCES[0], DEBIAN_SOURCES[-1])
    records = [
        SimpleNamespace(task_id=s.task_id, family=s.family, flagged=False, metrics={"gain": 0.1})
        for s in chosen
    ]
    table = "\n".join(source_table(records))
    for s in chosen:
        row = next(line for line in table.splitlines() if line.startswith(f"| {s.package} |"))
        assert row.endswith(f"| {s.licence} |")
    assert "see the task file" not in table
