"""Summaries and outputs of the quality benchmark: means, the share of the oracle's gain each
method recovers, the spread over paraphrased descriptions, and ``results.json`` / ``results.md``
/ ``results.png``.

``results`` is the dict :mod:`training.evaluation.evaluate` builds; each entry of ``results["tasks"]`` has
``"scores": {method: score}`` (the score with the task's original description),
``"losses": {method: answer loss}``, on multiple-choice tasks ``"choice_losses": {method: choice
loss}`` (both from :func:`expert_zoo.scoring.score_examples`, same description) and
``"details": {method: {...}}`` (per-description scores, retrieved experts, samples, ...).
"""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

BEST_OF_N = "hypergen-best-of-n"
"""The best of n samples, chosen on 5 training examples of the task (not the scored ones)."""
UPPER_BOUNDS = ("oracle",)
"""Columns that are not zero-shot methods (no gain share is reported for them)."""
LIKE_PAIRS = (
    ("hypergen+description", "base+description"),
    ("hypergen-user", "base"),
    ("hypergen-user+description", "base+user-description"),
    ("hypergen-user", "hypergen-random"),
    ("hypergen-user", "hypergen-other"),
    ("hypergen", "hypergen-user"),
)
"""Paired comparisons besides hypergen against every method: each with its like (the same
prompt), and the user descriptions against the controls."""


def spread(scores: Sequence[float]) -> dict[str, float]:
    """``{"min", "max", "range", "std"}`` of one task's scores across its descriptions."""
    a = np.asarray(scores, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    return {"min": lo, "max": hi, "range": hi - lo, "std": float(a.std())}


def gain_share(
    scores: Sequence[Mapping[str, float]], method: str, base: str = "base", oracle: str = "oracle"
) -> dict:
    """Mean of ``(method − base) / (oracle − base)`` over the tasks where ``oracle > base``.

    Args:
        scores: per task, ``{method: score}`` holding ``method``, ``base`` and ``oracle``.

    Returns:
        ``{"value": float | None, "tasks": n}``; ``value`` is None when the oracle beats the base
        on no task (the share is undefined).
    """
    shares = [(s[method] - s[base]) / (s[oracle] - s[base]) for s in scores if s[oracle] > s[base]]
    return {"value": float(np.mean(shares)) if shares else None, "tasks": len(shares)}


def summarise(tasks: Sequence[dict], methods: Sequence[str]) -> dict:
    """Unweighted means, gain shares (when base and oracle were run) and description spreads."""
    scores = [t["scores"] for t in tasks]
    means = {m: float(np.mean([s[m] for s in scores])) for m in methods}
    shares = {}
    if "base" in methods and "oracle" in methods:
        shares = {m: gain_share(scores, m) for m in methods if m not in UPPER_BOUNDS}
    spreads = {}
    for m in methods:
        per_task = [t["details"][m]["spread"] for t in tasks if "spread" in t["details"][m]]
        if per_task:
            by_desc = np.array([t["details"][m]["by_description"] for t in tasks], dtype=float)
            if by_desc.shape[1] < 2:  # one text per task (the controls): nothing spreads
                continue
            spreads[m] = {
                "mean_by_description": by_desc.mean(0).tolist(),
                "mean_range": float(np.mean([p["range"] for p in per_task])),
                "mean_std": float(np.mean([p["std"] for p in per_task])),
                "worst_range": float(np.max([p["range"] for p in per_task])),
            }
    return {
        "means": means,
        "gain_share": shares,
        "spread": spreads,
        "losses": losses(tasks, methods),
        "choice_losses": losses(tasks, methods, "choice_losses"),
        "generation": generation(tasks, methods),
        "paired": paired(tasks, methods),
    }


def generation(tasks: Sequence[dict], methods: Sequence[str]) -> dict:
    """Per method, the mean greedy-answer accuracy and in-format rate over the multiple-choice
    tasks that recorded them: ``{m: {"gen_accuracy", "in_format", "tasks"}}``."""
    per_task = [t["generation"] for t in tasks if "generation" in t]
    out = {}
    for m in methods:
        rows = [g[m] for g in per_task if m in g]
        if rows:
            out[m] = {
                "gen_accuracy": float(np.mean([r["gen_accuracy"] for r in rows])),
                "in_format": float(np.mean([r["in_format"] for r in rows])),
                "tasks": len(rows),
            }
    return out


def comparison_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """hypergen against every other method, then :data:`LIKE_PAIRS` (those that were run)."""
    pairs = [("hypergen", m) for m in methods if m != "hypergen"] if "hypergen" in methods else []
    return pairs + [p for p in LIKE_PAIRS if p[0] in methods and p[1] in methods and p not in pairs]


def paired(tasks: Sequence[dict], methods: Sequence[str]) -> list[dict]:
    """Paired per-example differences with 95% two-level bootstrap intervals
    (:func:`training.evaluation.intervals.paired_bootstrap`) for :func:`comparison_pairs`; tasks without
    per-example results (older runs) are left out and counted."""
    from training.evaluation.intervals import paired_bootstrap

    out = []
    for a, b in comparison_pairs(methods):
        rows = [
            (t["details"][a]["correct"], t["details"][b]["correct"])
            for t in tasks
            if "correct" in t["details"].get(a, {}) and "correct" in t["details"].get(b, {})
        ]
        if rows:
            stats = paired_bootstrap([x for x, _ in rows], [y for _, y in rows])
            out.append({"a": a, "b": b, **stats, "missing": len(tasks) - len(rows)})
    return out


def losses(tasks: Sequence[dict], methods: Sequence[str], key: str = "losses") -> dict:
    """Per method, the mean of ``task[key][method]`` over the tasks that have ``key`` and,
    against ``base`` when it was run, on how many of them the method's loss is lower:
    ``{m: {"mean", "tasks", "below_base"}}``; empty when no task has ``key``."""
    per_task = [t[key] for t in tasks if key in t]
    out = {}
    for m in methods if per_task else ():
        entry = {"mean": float(np.mean([x[m] for x in per_task])), "tasks": len(per_task)}
        if "base" in methods and m != "base":
            entry["below_base"] = sum(x[m] < x["base"] for x in per_task)
        out[m] = entry
    return out


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _label(method: str) -> str:
    return f"{method}†" if method == BEST_OF_N else method


def markdown(results: dict) -> str:
    """The report: command, setup, tasks × methods table with means and gain share, spreads."""
    methods, summary = results["methods"], results["summary"]
    setup = results["models"]
    lines = [
        "# hypergen quality benchmark",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Base model `{setup['base_model']}`, zoo `{setup['zoo']}` ({setup['zoo_experts']} experts), "
        f"generator `{setup['generator']}`, encoder `{setup['encoder']}`; "
        f"{results['config']['eval_examples']} eval examples per task (seed {results['config']['seed']}, "
        f"the same examples for every method); {len(results['tasks'])} tasks; "
        f"{results['seconds']:.0f} s in all" + _resumed(results) + ".",
        "",
        "| task | metric | n | " + " | ".join(_label(m) for m in methods) + " |",
        "|---|---|---:|" + "---:|" * len(methods),
    ]
    for t in results["tasks"]:
        cells = " | ".join(_fmt(t["scores"][m]) for m in methods)
        lines.append(f"| {t['task_id']} | {t['metric']} | {t['n']} | {cells} |")
    lines.append(
        "| **mean** | | | " + " | ".join(f"**{_fmt(summary['means'][m])}**" for m in methods) + " |"
    )
    if summary["gain_share"]:
        cells = " | ".join(
            _fmt(summary["gain_share"][m]["value"]) if m in summary["gain_share"] else "–"
            for m in methods
        )
        n = next(iter(summary["gain_share"].values()))["tasks"]
        lines.append(f"| **share of oracle gain** ({n} tasks with oracle > base) | | | {cells} |")
    lines += _loss_rows(results, "losses", "answer loss (per-token NLL of the gold answer)")
    lines += _loss_rows(results, "choice_losses", "choice loss (NLL of the gold option)")
    lines += _generation_rows(results)
    lines += ["", *_paired_table(summary.get("paired", []))]
    lines += [*_notes(results), *_spread_table(summary["spread"]), *_timings(results)]
    return "\n".join(lines) + "\n"


def _loss_rows(results: dict, key: str, what: str) -> list[str]:
    """Rows of the mean loss and, with base, of the tasks where each method is below base."""
    methods, summary = results["methods"], results["summary"].get(key)
    if not summary:
        return []
    n = next(iter(summary.values()))["tasks"]
    cells = " | ".join(_fmt(summary[m]["mean"]) for m in methods)
    lines = [f"| **mean {what}, lower is better** ({n} tasks) | | | {cells} |"]
    if "base" in methods:
        below = " | ".join(
            "–" if m == "base" else f"{summary[m]['below_base']}/{n}" for m in methods
        )
        lines.append(f"| **tasks where the {what.split(' (')[0]} is below base** | | | {below} |")
    return lines


def _generation_rows(results: dict) -> list[str]:
    gen, methods = results["summary"].get("generation"), results["methods"]
    if not gen:
        return []
    n = max(g["tasks"] for g in gen.values())
    row = []
    for key, what in (
        ("gen_accuracy", "greedy answer is the gold option"),
        ("in_format", "greedy answer is one of the options"),
    ):
        cells = " | ".join(_fmt(gen[m][key]) if m in gen else "–" for m in methods)
        row.append(f"| **{what}** ({n} multiple-choice tasks) | | | {cells} |")
    return row


def _paired_table(rows: Sequence[dict]) -> list[str]:
    if not rows:
        return []
    lines = [
        "Paired differences in accuracy, A − B, on the same examples: mean over tasks, 95% "
        "interval from a two-level bootstrap (tasks, then examples within tasks; "
        "`training/evaluation/intervals.py`):",
        "",
        "| A | B | A − B | 95% interval | excludes 0 | tasks A better / worse |",
        "|---|---|---:|---|---|---:|",
    ]
    for r in rows:
        verdict = (
            ("**yes**: A better" if r["low"] > 0 else "**yes**: A worse")
            if r["excludes_zero"]
            else "no"
        )
        lines.append(
            f"| {r['a']} | {r['b']} | {r['diff']:+.3f} | [{r['low']:+.3f}, {r['high']:+.3f}] | "
            f"{verdict} | {r['better']} / {r['worse']} of {r['tasks']} |"
        )
    return [*lines, ""]


def _resumed(results: dict) -> str:
    n = results.get("resumed_tasks", 0)
    if n:
        return (
            f" ({n} tasks read back from a stopped run's progress.jsonl: the seconds above are "
            "this run's, the per-method seconds below include theirs)"
        )
    cached = sum(
        bool(t["details"][m].get("cached")) for t in results["tasks"] for m in results["methods"]
    )
    if cached:
        total = len(results["tasks"]) * len(results["methods"])
        return (
            f" ({cached} of the {total} method results read from method-cache/, as earlier runs "
            "left them: the seconds above are this run's, the per-method seconds below are the "
            "runs' that made them)"
        )
    return ""


def _notes(results: dict) -> list[str]:
    notes = [f"- {m}: {text}" for m, text in results["method_notes"].items()]
    if BEST_OF_N in results["methods"]:
        notes.append(
            f"- † {BEST_OF_N}: the best of {results['config']['best_of_n']} samples, chosen on 5 "
            "of the task's training examples (never the scored ones); it needs those 5 labelled "
            "examples, so it is not zero-shot and never counts as hypergen."
        )
    return ["Methods:", "", *notes, ""]


def _spread_table(spreads: dict) -> list[str]:
    if not spreads:
        return []
    width = max(len(s["mean_by_description"]) for s in spreads.values())
    heads = [f"description {i}" for i in range(1, width + 1)]
    lines = [
        "Spread over descriptions (mean score per description; per-task range and std, averaged;"
        " hypergen-user: the task's user descriptions in their file's order, each scored on its"
        " share of the examples, so its spread also holds the examples' differences):",
        "",
        "| method | " + " | ".join(heads) + " | mean range | mean std | worst range |",
        "|---|" + "---:|" * (len(heads) + 3),
    ]
    for m, s in spreads.items():
        cells = [_fmt(x) for x in s["mean_by_description"]]
        cells += ["–"] * (width - len(cells))
        cells += [_fmt(s[k]) for k in ("mean_range", "mean_std", "worst_range")]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _timings(results: dict) -> list[str]:
    lines = ["Seconds per method (adapter making, training and scoring, all tasks):", ""]
    lines += ["| method | seconds |", "|---|---:|"]
    lines += [f"| {m} | {s:.1f} |" for m, s in results["timings"].items()]
    return lines


def plot(results: dict, path: Path) -> Path:
    """A methods × tasks heatmap of scores (with a mean column), written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods, tasks = results["methods"], results["tasks"]
    grid = np.array([[t["scores"][m] for t in tasks] for m in methods], dtype=float)
    grid = np.concatenate([grid, grid.mean(1, keepdims=True)], axis=1)
    names = [t["task_id"].split(":", 1)[-1] for t in tasks] + ["MEAN"]
    size = (min(40, max(7, 3 + 0.45 * len(names))), 2.5 + 0.45 * len(methods))
    fig, ax = plt.subplots(figsize=size)
    image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(methods)), [_label(m) for m in methods], fontsize=8)
    if len(names) <= 40:
        for (i, j), value in np.ndenumerate(grid):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01)
    ax.set_title(textwrap.fill(results["command"], 150), fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(results: dict, out: Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "results.png"}
    paths["json"].write_text(json.dumps(results, indent=1, default=jsonable) + "\n")
    paths["md"].write_text(markdown(results))
    plot(results, paths["png"])
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths


def jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, tuple, set)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
