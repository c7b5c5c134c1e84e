"""The confidence threshold's calibration on a hand-made run."""

from __future__ import annotations

import json

from hypergen.confidence import load_threshold
from training.evaluation import calibrate


def _run(tmp_path, rows):
    tasks = [
        {
            "task_id": f"t{i}",
            "scores": {"hypergen": h, "base+description": b, "topk-merge": 0.0},
            "details": {"topk-merge": {"similarities": [sim, sim - 0.1]}},
        }
        for i, (sim, h, b) in enumerate(rows)
    ]
    (tmp_path / "results.json").write_text(json.dumps({"tasks": tasks, "command": "x"}))
    return tmp_path


def test_the_threshold_splits_where_hypergen_starts_to_help(tmp_path):
    run = _run(tmp_path, [(0.2, 0.1, 0.3), (0.3, 0.2, 0.3), (0.5, 0.6, 0.4), (0.7, 0.8, 0.5)])
    out = tmp_path / "confidence.json"
    assert calibrate.main([str(run), "--out", str(out)]) == 0
    assert load_threshold(out) == 0.5
    assert [t["task_id"] for t in json.loads(out.read_text())["tasks"]] == ["t0", "t1", "t2", "t3"]


def test_no_split_means_no_threshold(tmp_path):
    run = _run(tmp_path, [(0.2, 0.5, 0.3), (0.6, 0.1, 0.3)])  # helps far away, hurts up close
    assert (
        calibrate.threshold(calibrate.task_points(json.loads((run / "results.json").read_text())))
        is None
    )
    out = tmp_path / "c.json"
    assert calibrate.main([str(run), "--out", str(out)]) == 0 and load_threshold(out) is None
    assert calibrate.main([str(tmp_path / "nowhere")]) == 2
