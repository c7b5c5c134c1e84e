"""The two-level paired bootstrap against cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation.intervals import paired_bootstrap


def test_a_constant_difference_has_a_zero_width_interval():
    a = [[1, 1, 0, 1], [0, 1, 1]]
    b = [[0, 0, -1, 0], [-1, 0, 0]]  # a − b = 1 on every example
    r = paired_bootstrap(a, b)
    assert r["diff"] == r["low"] == r["high"] == 1.0
    assert r["excludes_zero"] and r["better"] == 2 and r["worse"] == 0 and r["tasks"] == 2


def test_one_task_matches_the_normal_interval_of_a_mean():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, 400).astype(float)
    b = rng.integers(0, 2, 400).astype(float)
    d = a - b
    r = paired_bootstrap([a], [b], draws=8000)
    half = 1.96 * d.std() / np.sqrt(d.size)  # one task: only the examples vary
    assert r["diff"] == pytest.approx(d.mean())
    assert r["low"] == pytest.approx(d.mean() - half, abs=0.25 * half)
    assert r["high"] == pytest.approx(d.mean() + half, abs=0.25 * half)


def test_task_to_task_variation_widens_the_interval():
    # every example agrees within a task, tasks disagree: the spread comes from the tasks alone
    means = [0.3, -0.1, 0.5, 0.0, 0.2, -0.2, 0.4, 0.1]
    a = [[m] * 50 for m in means]
    b = [[0.0] * 50 for _ in means]
    r = paired_bootstrap(a, b, draws=8000, seed=1)
    half = 1.96 * np.std(means) / np.sqrt(len(means))
    assert r["diff"] == pytest.approx(np.mean(means))
    assert r["high"] - r["low"] == pytest.approx(2 * half, rel=0.3)
    assert r["low"] < 0.15 < r["high"]


def test_identical_methods_do_not_exclude_zero_and_inputs_are_checked():
    a = [[1, 0, 1, 0], [0, 1]]
    r = paired_bootstrap(a, a)
    assert r["diff"] == 0 and not r["excludes_zero"]
    assert paired_bootstrap(a, a, seed=5) == paired_bootstrap(a, a, seed=5)
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap([[1, 0]], [[1]])
    with pytest.raises(ValueError, match="same tasks"):
        paired_bootstrap([[1]], [])
