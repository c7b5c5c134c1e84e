"""Paired comparisons of two methods scored on the same examples of the same tasks.

The benchmark's question is whether method A beats method B on held-out tasks in general, not
on these examples only, so both sources of chance are resampled: a two-level (hierarchical)
bootstrap draws tasks with replacement and, within each drawn task, its examples with
replacement, and the statistic is the unweighted mean over tasks of the per-task mean
difference (each task counts once, as in the benchmark's means). The 95% interval is the 2.5th
to 97.5th percentile of the resampled statistic (Efron & Tibshirani 1993, ch. 13; the two-stage
scheme for clustered data follows Davison & Hinkley 1997, §3.8).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DRAWS = 4000


def paired_bootstrap(
    a: Sequence[Sequence[float]],
    b: Sequence[Sequence[float]],
    draws: int = DRAWS,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Mean over tasks of ``mean(a[t] − b[t])`` with its two-level bootstrap interval.

    Args:
        a, b: per task, the per-example scores of the two methods on the same examples (equal
            lengths within a task; tasks may differ in length).
        draws: bootstrap resamples.
        seed: seeds the resampling (the same inputs and seed give the same interval).
        level: coverage of the interval.

    Returns:
        ``{"diff", "low", "high", "excludes_zero", "better", "worse", "tasks"}``: ``better`` /
        ``worse`` count the tasks whose mean difference is above / below 0.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"need the same tasks (at least one) for both methods: {len(a)}, {len(b)}")
    diffs = []
    for x, y in zip(a, b, strict=True):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1 or x.size == 0:
            raise ValueError(
                f"per-task scores must be paired, non-empty vectors: {x.shape}, {y.shape}"
            )
        diffs.append(x - y)
    rng = np.random.default_rng(seed)
    # per task, `draws` resampled means of its examples' differences: (tasks, draws)
    inner = np.stack([d[rng.integers(0, d.size, (draws, d.size))].mean(1) for d in diffs])
    picks = rng.integers(0, len(diffs), (draws, len(diffs)))
    stats = inner[picks, np.arange(draws)[:, None]].mean(1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    means = np.array([d.mean() for d in diffs])
    return {
        "diff": float(means.mean()),
        "low": float(low),
        "high": float(high),
        "excludes_zero": bool(low > 0 or high < 0),
        "better": int((means > 0).sum()),
        "worse": int((means < 0).sum()),
        "tasks": len(diffs),
    }
