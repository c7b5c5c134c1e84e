"""training.evaluation.compare: paired differences between methods of separate hypergen-eval runs."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from training.evaluation import compare


def _run(folder, entries, progress=False):
    folder.mkdir(parents=True)
    if progress:  # a run still going: key line, then one task a line
        lines = [json.dumps({"key": {}}), *map(json.dumps, entries)]
        (folder / "progress.jsonl").write_text("\n".join(lines) + "\n")
    else:
        (folder / "results.json").write_text(json.dumps({"tasks": entries}))
    return folder


def _entry(task, method, score, loss, choice=None):
    e = {"task_id": task, "scores": {method: score}, "losses": {method: loss}}
    if choice is not None:
        e["choice_losses"] = {method: choice}
    return e


def test_paired_differences_over_the_shared_tasks(tmp_path, capsys):
    a = _run(
        tmp_path / "a",
        [_entry("t1", "hypergen", 0.5, 2.0, 1.0), _entry("t2", "hypergen", 0.0, 4.0)]
        + [_entry("t3", "hypergen", 0.2, 3.0, 2.0), _entry("only-a", "hypergen", 1.0, 1.0)],
    )
    b = _run(
        tmp_path / "b",
        [_entry("t1", "new", 0.6, 1.5, 0.5), _entry("t2", "new", 0.0, 4.5)]
        + [_entry("t3", "new", 0.2, 2.0, 2.5)],
        progress=True,
    )
    out = tmp_path / "cmp.md"
    assert compare.main([f"old={a}:hypergen", f"new={b}:new", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text == out.read_text() and "only-a" not in text
    runs = [("old", compare.load_entries(a, "hypergen"), "hypergen")]
    runs.append(("new", compare.load_entries(b, "new"), "new"))
    result = compare.compare(runs)
    assert result["tasks"] == ["t1", "t2", "t3"]
    loss = result["measures"]["answer loss"]["runs"]["new"]
    diff = np.array([-0.5, 0.5, -1.0])
    assert loss["diff"] == pytest.approx(diff.mean())
    assert loss["se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(3))
    assert (loss["better"], loss["worse"]) == (2, 1)  # lower is better
    choice = result["measures"]["choice loss (multiple-choice tasks)"]
    assert choice["tasks"] == 2 and choice["runs"]["new"]["diff"] == pytest.approx(0.0)
    accuracy = result["measures"]["accuracy / exact match"]["runs"]["new"]
    assert (accuracy["better"], accuracy["worse"]) == (1, 0)  # higher is better
    assert "| answer loss, lower is better | 3 | 3.0000 | 2.6667 (-0.3333 ± 0.4410; 2/1) |" in text


def test_bad_runs_are_refused_with_a_reason(tmp_path):
    with pytest.raises(argparse.ArgumentTypeError, match="LABEL=FOLDER:METHOD"):
        compare.parse_run("no-label")
    with pytest.raises(SystemExit, match="no results.json"):
        compare.load_entries(tmp_path, "hypergen")
    old = _run(tmp_path / "old", [{"task_id": "t", "scores": {"hypergen": 0.1}}])
    with pytest.raises(SystemExit, match="before hypergen-eval recorded losses"):
        compare.load_entries(old, "hypergen")
    with pytest.raises(SystemExit, match="no task scored method 'base'"):
        compare.load_entries(old, "base")
    a = _run(tmp_path / "a", [_entry("t1", "m", 0.5, 2.0)])
    b = _run(tmp_path / "b", [_entry("t2", "m", 0.5, 2.0)])
    with pytest.raises(SystemExit, match="share no task"):
        compare.main([f"a={a}:m", f"b={b}:m"])
    with pytest.raises(SystemExit, match="its own label"):
        compare.main([f"a={a}:m", f"a={a}:m"])
