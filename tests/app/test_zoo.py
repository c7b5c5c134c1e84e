"""The Zoo tab's handlers: the experts' table (search, gains) and the 2-D plot."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from app import handlers, plots
from app import zoo as zoo_handlers


@pytest.fixture(scope="module")
def view(fake_generator, fake_zoo):
    return zoo_handlers.zoo_view(fake_generator, fake_zoo)


def test_view_reads_ids_families_and_gains(view, fake_generator):
    assert view.ids == fake_generator.bank.expert_ids
    assert view.families[:2] == ["f0", "f1"]
    assert view.gains[3] == pytest.approx(0.15)
    assert view.coords.shape == (8, 2)
    assert np.allclose(np.linalg.norm(view.points, axis=1), 1.0, atol=1e-5)


def test_view_without_zoo_records_has_no_gains(fake_generator):
    assert zoo_handlers.zoo_view(fake_generator).gains == [None] * 8


def test_rows_search_and_sort(view, fake_generator):
    rows = zoo_handlers.zoo_rows(view)
    assert [r[0] for r in rows] == sorted(view.ids) and rows[0][4] is None
    assert [r[0] for r in zoo_handlers.zoo_rows(view, "VOWELS")] == ["t__5"]
    assert [r[0] for r in zoo_handlers.zoo_rows(view, "task: add two")] == ["t__1"]  # paraphrase
    assert zoo_handlers.zoo_rows(view, "no such words") == []
    query = zoo_handlers.encode(fake_generator, "count the vowels")
    sims = zoo_handlers.expert_similarities(fake_generator.bank, query)
    rows = zoo_handlers.zoo_rows(view, sims=sims)
    assert rows[0][0] == "t__5" and rows[0][4] >= rows[1][4]


def test_tab_marks_the_description(view, fake_generator):
    rows, figure, status = zoo_handlers.zoo_tab(fake_generator, view, "", "count the vowels")
    assert isinstance(figure, Figure) and status == "8 of 8 experts shown."
    assert rows[0][0] == "t__5"
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert labels == ["zoo experts (8)", "your task"]
    _, plain, _ = zoo_handlers.zoo_tab(fake_generator, view, "numbers")
    assert plain.axes[0].get_legend_handles_labels()[1] == ["zoo experts (8)"]
    with pytest.raises(handlers.AppError, match="limit is 2,000"):
        zoo_handlers.zoo_tab(fake_generator, view, "", "z" * 200_000)


def test_pca_projects_new_points_like_old_ones():
    points = np.random.default_rng(0).normal(size=(10, 5)).astype(np.float32)
    coords, mean, axes = plots.pca_2d(points)
    np.testing.assert_allclose((points[3] - mean) @ axes.T, coords[3], atol=1e-5)
    assert coords[:, 0].var() >= coords[:, 1].var()
