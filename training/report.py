"""Summaries and outputs of the quality benchmark: means, the share of the oracle's gain each
method recovers, the spread over paraphrased descriptions, and ``results.json`` / ``results.md``
/ ``results.png``.

``results`` is the dict :mod:`training.evaluate` builds; each entry of ``results["tasks"]`` has
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
"""Oracle-selected (best sample on the eval set itself): an upper bound, shown apart."""
UPPER_BOUNDS = (BEST_OF_N, "oracle")
"""Columns that are not zero-shot methods (no gain share is reported for them)."""


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
    }


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
    lines += ["", *_notes(results), *_spread_table(summary["spread"]), *_timings(results)]
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


def _resumed(results: dict) -> str:
    n = results.get("resumed_tasks", 0)
    if not n:
        return ""
    return (
        f" ({n} tasks read back from a stopped run's progress.jsonl: the seconds above are this "
        "run's, the per-method seconds below include theirs)"
    )


def _notes(results: dict) -> list[str]:
    notes = [f"- {m}: {text}" for m, text in results["method_notes"].items()]
    if BEST_OF_N in results["methods"]:
        notes.append(
            f"- † {BEST_OF_N} is an oracle-selected upper bound: the best of "
            f"{results['config']['best_of_n']} samples chosen on the eval examples themselves; it "
            "is not a zero-shot method and never counts as hypergen."
        )
    return ["Methods:", "", *notes, ""]


def _spread_table(spreads: dict) -> list[str]:
    if not spreads:
        return []
    width = max(len(s["mean_by_description"]) for s in spreads.values())
    heads = ["original", *[f"paraphrase {i}" for i in range(1, width)]]
    lines = [
        "Spread over descriptions (mean score per description; per-task range and std, averaged):",
        "",
        "| method | " + " | ".join(heads) + " | mean range | mean std | worst range |",
        "|---|" + "---:|" * (len(heads) + 3),
    ]
    for m, s in spreads.items():
        cells = [_fmt(x) for x in s["mean_by_description"]]
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
