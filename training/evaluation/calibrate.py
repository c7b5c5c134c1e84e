"""``python -m training.evaluation.calibrate``: the similarity threshold of the confidence warning, measured
on a ``hypergen-eval`` run over held-out tasks.

For each task the run records the similarity of the description to its nearest zoo expert (the
``topk-merge`` method's first similarity: the same retrieval hypergen uses) and the accuracies of
``hypergen`` (the adapter on the bare input, what the app's adapted answer is) and
``base+description`` (what a user would do without hypergen). The threshold is the observed
similarity ``s`` that best separates the tasks where the adapter helps from those where it does
not: it maximises ``Σ_{sim < s} −gain + Σ_{sim ≥ s} gain`` (the warning is right where hypergen
loses, silent where it wins); ties go to the smaller ``s``. When the best split leaves no task
below it, there is no threshold (nothing to warn about, and the file says so). It is written to ``hypergen/assets/confidence.json`` with the
tasks it rests on; :mod:`hypergen.confidence` reads it.

Example::

    python -m training.evaluation.calibrate results/quality
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hypergen.confidence import CALIBRATION


def task_points(results: dict) -> list[dict]:
    """``{"task_id", "similarity", "gain"}`` per task: the nearest similarity and hypergen's
    accuracy minus base+description's."""
    points = []
    for t in results["tasks"]:
        details, scores = t["details"], t["scores"]
        if not {"topk-merge", "hypergen", "base+description"} <= set(scores):
            continue
        points.append(
            {
                "task_id": t["task_id"],
                "similarity": float(details["topk-merge"]["similarities"][0]),
                "gain": float(scores["hypergen"] - scores["base+description"]),
            }
        )
    return points


def threshold(points: list[dict]) -> float | None:
    """The similarity that best separates helped from not helped tasks (see the module
    docstring); None when the best split leaves no task below it."""
    sims = sorted({p["similarity"] for p in points})

    def score(s: float) -> float:
        return sum(p["gain"] if p["similarity"] >= s else -p["gain"] for p in points)

    best = max(sims, key=lambda s: (score(s), -s))
    return None if best == sims[0] else best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluation.calibrate", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("run", type=Path, help="a hypergen-eval results folder (with results.json)")
    p.add_argument(
        "--out", type=Path, default=CALIBRATION, help="where to write (default: %(default)s)"
    )
    args = p.parse_args(argv)
    try:
        results = json.loads((args.run / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"calibrate: cannot read {args.run}/results.json: {exc}", file=sys.stderr)
        return 2
    points = task_points(results)
    if not points:
        print(
            "calibrate: the run has no task with topk-merge, hypergen and base+description",
            file=sys.stderr,
        )
        return 2
    value = threshold(points)
    record = {
        "threshold": value,
        "how": "smallest nearest-expert similarity above which hypergen (bare input) beats "
        "base+description on average and below which it does not (training/evaluation/calibrate.py)",
        "run": str(args.run),
        "command": results.get("command"),
        "tasks": sorted(points, key=lambda p: p["similarity"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    shown = "none (no similarity splits the tasks)" if value is None else f"{value:.3f}"
    print(f"threshold {shown} from {len(points)} tasks; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
