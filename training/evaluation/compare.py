"""``python -m training.evaluation.compare``: paired comparison of methods across ``hypergen-eval`` runs.

Two generators (or a generator and a baseline) scored in separate runs on the same tasks, the
same eval examples (same ``--seed`` and ``--eval-examples``) can be compared task by task: the
per-task difference cancels what makes one task hard for every method, so its standard error is
far smaller than that of either mean. For each of accuracy, answer loss and (on multiple-choice
tasks) choice loss this prints every run's mean over the tasks all runs share and, against the
first run, the mean paired difference, its standard error and on how many tasks it is better.

Example::

    python -m training.evaluation.compare shipped=results/a:hypergen topk=results/a:topk-merge \\
        new=results/b:hypergen --out comparison.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

MEASURES = (
    ("scores", "accuracy / exact match", 1),
    ("losses", "answer loss", -1),
    ("choice_losses", "choice loss (multiple-choice tasks)", -1),
)
"""(task entry key, name, +1 when higher is better / -1 when lower is better)."""


def parse_run(text: str) -> tuple[str, Path, str]:
    """``label=folder:method`` -> ``(label, folder, method)``."""
    label, sep, rest = text.partition("=")
    folder, sep2, method = rest.rpartition(":")
    if not (sep and sep2 and label and folder and method):
        raise argparse.ArgumentTypeError(f"expected LABEL=FOLDER:METHOD, got {text!r}")
    return label, Path(folder), method


def load_entries(folder: Path, method: str) -> dict[str, dict]:
    """``{task_id: entry}`` of a run's ``results.json`` (or, for a run still going, its
    ``progress.jsonl``), keeping the tasks where ``method`` was scored."""
    results, progress = folder / "results.json", folder / "progress.jsonl"
    if results.is_file():
        entries = json.loads(results.read_text())["tasks"]
    elif progress.is_file():
        entries = [json.loads(x) for x in progress.read_text().splitlines()[1:] if x.strip()]
    else:
        raise SystemExit(f"{folder} has no results.json or progress.jsonl of hypergen-eval")
    kept = {e["task_id"]: e for e in entries if method in e.get("scores", {})}
    if not kept:
        raise SystemExit(f"{folder}: no task scored method {method!r}")
    if "losses" not in next(iter(kept.values())):
        raise SystemExit(f"{folder} was written before hypergen-eval recorded losses: rerun it")
    return kept


def compare(runs: list[tuple[str, dict[str, dict], str]]) -> dict:
    """Means and paired differences (against ``runs[0]``) over the tasks every run has."""
    common = sorted(set.intersection(*(set(entries) for _, entries, _ in runs)))
    if not common:
        raise SystemExit("the runs share no task")
    out = {"tasks": common, "measures": {}}
    for key, name, sign in MEASURES:
        tasks = [t for t in common if all(key in entries[t] for _, entries, _ in runs)]
        if not tasks:
            continue
        values = {label: np.array([e[t][key][m] for t in tasks]) for label, e, m in runs}
        ref = values[runs[0][0]]
        rows = {}
        for label, v in values.items():
            diff = v - ref
            se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None
            rows[label] = {
                "mean": float(v.mean()),
                "diff": float(diff.mean()),
                "se": se,
                "better": int((sign * diff > 0).sum()),
                "worse": int((sign * diff < 0).sum()),
            }
        out["measures"][name] = {"tasks": len(tasks), "lower_is_better": sign < 0, "runs": rows}
    return out


def markdown(runs: list[tuple[str, dict[str, dict], str]], result: dict) -> str:
    labels = [label for label, _, _ in runs]
    lines = [
        f"Paired comparison on {len(result['tasks'])} tasks; differences against "
        f"**{labels[0]}** (per-task difference, mean ± standard error; better/worse: tasks).",
        "",
        "| measure | tasks | " + " | ".join(labels) + " |",
        "|---|---:|" + "---:|" * len(labels),
    ]
    for name, m in result["measures"].items():
        cells = []
        for label in labels:
            r = m["runs"][label]
            cell = f"{r['mean']:.4f}"
            if label != labels[0]:
                se = "n/a" if r["se"] is None else f"{r['se']:.4f}"
                cell += f" ({r['diff']:+.4f} ± {se}; {r['better']}/{r['worse']})"
            cells.append(cell)
        arrow = "lower is better" if m["lower_is_better"] else "higher is better"
        lines.append(f"| {name}, {arrow} | {m['tasks']} | " + " | ".join(cells) + " |")
    lines += ["", "| task | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for t in result["tasks"]:
        cells = []
        for _, entries, method in runs:
            e = entries[t]
            cell = f"{e['scores'][method]:.2f} / {e['losses'][method]:.3f}"
            if "choice_losses" in e:
                cell += f" / {e['choice_losses'][method]:.3f}"
            cells.append(cell)
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: score / answer loss / choice loss (multiple-choice tasks only)."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluation.compare",
        description="Compare methods scored in hypergen-eval runs, task by task.",
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "runs",
        nargs="+",
        type=parse_run,
        metavar="LABEL=FOLDER:METHOD",
        help="a method of one hypergen-eval --out folder; the first is the reference",
    )
    p.add_argument("--out", type=Path, help="also write the markdown to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs = [(label, load_entries(folder, m), m) for label, folder, m in args.runs]
    if len({label for label, _, _ in runs}) < len(runs):
        raise SystemExit("give every run its own label")
    text = markdown(runs, compare(runs))
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
