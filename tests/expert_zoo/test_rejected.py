"""Experts a build does not keep: rejected.json, the build's skip rule, reject-flagged, stats."""

from __future__ import annotations

import dataclasses
import json

import pytest

from expert_zoo import build as build_mod
from expert_zoo import rejected
from expert_zoo.build import build
from expert_zoo.cli import main
from expert_zoo.store import ExpertZoo, ZooError, expert_id_for
from expert_zoo.tasks import is_held_out, synthetic_tasks
from expert_zoo.train import ExpertTrainConfig
from tests.conftest import random_adapter
from tests.expert_zoo.helpers import ENCODER, make_expert, unit_rows


class _Encoder:
    name = ENCODER

    def encode(self, texts, truncate=False):
        return unit_rows(len(texts), len(texts[0]))


class _Base:
    name = "tiny-llama"


@pytest.fixture
def fake_training(monkeypatch, layout):
    """``train_expert`` replaced by one whose gain per task the test sets; counts the calls."""
    gains, calls = {}, []

    def train(base, task, config, progress=True):
        calls.append(task.task_id)
        gain = gains[task.task_id]
        metrics = {"metric": "mc_accuracy", "before": 0.5, "after": 0.5 + gain, "gain": gain}
        metrics.update(steps=config.steps, recipe=config.record(), beats_base=gain > 0)
        return random_adapter(layout, seed=len(calls)), metrics

    monkeypatch.setattr(build_mod, "train_expert", train)
    return gains, calls


def test_a_build_that_drops_flagged_experts_records_them_and_does_not_retrain_them(
    tmp_path, layout, fake_training
):
    gains, calls = fake_training
    tasks = [t for t in synthetic_tasks() if not is_held_out(t.family)][:3]
    a, b, c = (t.task_id for t in tasks)
    zoo = ExpertZoo(tmp_path / "zoo")
    old, adapter, emb = make_expert(layout, 0)  # an old flagged expert of task a
    old = dataclasses.replace(
        old, expert_id=expert_id_for(a), task_id=a, flagged=True, metrics={"recipe": {"steps": 1}}
    )
    zoo.add(old, adapter, emb)
    config = ExpertTrainConfig(steps=3)
    gains.update({a: -0.1, b: 0.2, c: 0.0})

    report = build(
        zoo, _Base(), _Encoder(), tasks, config, keep_flagged=False, retrain_flagged=True
    )
    assert report.dropped == [a, c] and report.added == [b]
    assert [r.task_id for r in zoo.records()] == [b]  # the old flagged expert left with it
    entries = {e["task_id"]: e for e in rejected.read_rejected(zoo.root)}
    assert set(entries) == {a, c} and entries[a]["metrics"]["gain"] == -0.1
    assert entries[c]["metrics"]["recipe"] == config.record()
    assert zoo.strays() == [] and zoo.verify() == []

    calls.clear()  # a resumed build with the same recipe trains nothing again
    report = build(zoo, _Base(), _Encoder(), tasks, config, keep_flagged=False)
    assert calls == [] and sorted(report.skipped) == sorted([a, b, c])

    bf16 = dataclasses.replace(config, base_dtype="bfloat16")  # precision alone: same recipe
    report = build(zoo, _Base(), _Encoder(), tasks, bf16, keep_flagged=False)
    assert calls == [] and sorted(report.skipped) == sorted([a, b, c])

    gains[c] = 0.1  # another recipe tries the rejected tasks again
    report = build(zoo, _Base(), _Encoder(), tasks, ExpertTrainConfig(steps=4), keep_flagged=False)
    assert sorted(calls) == sorted([a, c]) and report.added == [c] and report.dropped == [a]
    assert [e["task_id"] for e in rejected.read_rejected(zoo.root)] == [a]
    assert rejected.read_rejected(zoo.root)[0]["metrics"]["steps"] == 4


def test_reject_flagged_moves_flagged_experts_out_and_stats_lists_them(tmp_path, layout, capsys):
    zoo = ExpertZoo(tmp_path / "zoo")
    for i in range(3):
        record, adapter, emb = make_expert(layout, i)
        metrics = {"metric": "exact_match", "before": 0.2, "after": 0.2 + 0.1 * (i - 1)}
        metrics.update(gain=0.1 * (i - 1), steps=8)
        zoo.add(dataclasses.replace(record, flagged=i < 2, metrics=metrics), adapter, emb)
    assert main(["--zoo", str(zoo.root), "reject-flagged"]) == 0
    assert "moved 2 flagged experts" in capsys.readouterr().out
    assert len(ExpertZoo(zoo.root)) == 1
    assert main(["--zoo", str(zoo.root), "stats", "--by-source"]) == 0
    out = capsys.readouterr().out
    assert "rejected (trained, not kept: no gain over the base model): 2" in out
    assert "| `synthetic:fam0/task0` | exact_match | 0.200 | 0.100 | -0.100 | 8 |" in out
    assert main(["--zoo", str(zoo.root), "verify"]) == 0


def test_a_damaged_rejected_file_is_an_error_that_says_what_to_do(tmp_path):
    (tmp_path / rejected.REJECTED).write_text("{not json")
    with pytest.raises(ZooError, match="delete it"):
        rejected.read_rejected(tmp_path)
    (tmp_path / rejected.REJECTED).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ZooError, match="not a hypergen-expert-zoo-rejected/1 file"):
        rejected.read_rejected(tmp_path)
    assert rejected.read_rejected(tmp_path / "nowhere") == []


def test_a_flagged_expert_retrained_with_this_recipe_is_not_retrained_on_resume(
    tmp_path, layout, fake_training
):
    gains, calls = fake_training
    task = next(t for t in synthetic_tasks() if not is_held_out(t.family))
    zoo = ExpertZoo(tmp_path / "zoo")
    old, adapter, emb = make_expert(layout, 0)
    old = dataclasses.replace(
        old, expert_id=expert_id_for(task.task_id), task_id=task.task_id, flagged=True
    )
    zoo.add(dataclasses.replace(old, metrics={"recipe": {"steps": 1}}), adapter, emb)
    gains[task.task_id] = -0.1
    config = ExpertTrainConfig(steps=3)
    for _ in range(2):  # kept flagged: the second run finds it made with this recipe (read back)
        build(zoo, _Base(), _Encoder(), [task], config, retrain_flagged=True)
    assert calls == [task.task_id] and zoo.get(old.expert_id).flagged


def test_a_kill_between_the_steps_of_a_rejection_or_an_add_is_put_right(
    tmp_path, layout, fake_training
):
    gains, calls = fake_training
    a, b = [t for t in synthetic_tasks() if not is_held_out(t.family)][:2]
    zoo = ExpertZoo(tmp_path / "zoo")
    config = ExpertTrainConfig(steps=3)
    for task, flagged in ((a, True), (b, False)):
        record, adapter, emb = make_expert(layout, int(flagged))
        record = dataclasses.replace(
            record, expert_id=expert_id_for(task.task_id), task_id=task.task_id, flagged=flagged
        )
        zoo.add(record, adapter, emb)
        # a rejection with this recipe already written: a was killed before its removal, b
        # after its add and before its rejection was forgotten
        rejected.reject(zoo.root, dataclasses.replace(record, metrics={"recipe": config.record()}))
    (zoo.root / f"{rejected.TMP_PREFIX}left").write_text("{}")  # a killed rewrite's file
    assert zoo.strays() == []
    report = build(
        zoo, _Base(), _Encoder(), [a, b], config, keep_flagged=False, retrain_flagged=True
    )
    assert calls == [] and sorted(report.skipped) == sorted([a.task_id, b.task_id])
    assert [r.task_id for r in zoo.records()] == [b.task_id]
    assert [e["task_id"] for e in rejected.read_rejected(zoo.root)] == [a.task_id]
    assert not list(zoo.root.glob(f"{rejected.TMP_PREFIX}*"))  # the rewrite cleared it


def test_stats_of_a_zoo_whose_experts_were_all_rejected_lists_them(tmp_path, capsys):
    zoo = ExpertZoo(tmp_path / "zoo")
    zoo.root.mkdir(parents=True, exist_ok=True)
    (zoo.root / rejected.REJECTED).write_text(
        json.dumps(
            {
                "format": rejected.FORMAT,
                "experts": [{"task_id": "synthetic:x", "metrics": {"gain": None}}],
            }
        )
    )
    assert main(["--zoo", str(zoo.root), "stats", "--by-source"]) == 0
    out = capsys.readouterr().out
    assert "empty zoo; 1 rejected experts" in out and "| `synthetic:x` | ? | ? | ? | ? | ? |" in out
