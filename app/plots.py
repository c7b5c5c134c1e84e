"""The app's figures, drawn with matplotlib's object API (no pyplot, so no global state and safe
from several threads): nearest experts, per-layer ‖ΔW‖ of an adapter, and the zoo in 2-D.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hypergen.layout import LoraLayout, delta_weights

_LABEL_CHARS = 48


def _short(text: str, limit: int = _LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def neighbours_figure(neighbors: list[tuple[str, str, float]]) -> Figure:
    """Horizontal bars of the cosine similarity of each nearest zoo expert, best on top.

    Args:
        neighbors: ``(expert id, description, similarity)`` as in ``GeneratedAdapter.neighbors``.
    """
    fig = Figure(figsize=(6.4, 0.5 + 0.42 * max(1, len(neighbors))), layout="constrained")
    ax = fig.add_subplot()
    labels = [_short(expert_id) for expert_id, _, _ in neighbors][::-1]
    sims = [sim for _, _, sim in neighbors][::-1]
    bars = ax.barh(labels, sims, color="#4c72b0")
    ax.bar_label(bars, fmt="%.3f", padding=3, fontsize=8)
    ax.set_xlim(min(0.0, *sims) if sims else 0.0, 1.0)
    ax.set_xlabel("cosine similarity of descriptions")
    ax.set_title("Nearest zoo experts", fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    return fig


def adapter_norms(layout: LoraLayout, weights: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """``module -> (L,)`` Frobenius norm of each layer's update ΔW (alpha / rank included)."""
    deltas = delta_weights(layout, {k: v.float() for k, v in weights.items()})
    return {m: torch.linalg.matrix_norm(d).numpy() for m, d in deltas.items()}


def expert_weights(bank, expert_id: str) -> dict[str, torch.Tensor]:
    """The stacked weights of one zoo expert, read from the generator's bank."""
    e = bank.expert_ids.index(expert_id)
    return {k: v[e] for k, v in bank.weights.items()}


def norms_figure(
    generated: dict[str, np.ndarray], nearest: dict[str, np.ndarray] | None, nearest_id: str = ""
) -> Figure:
    """Per-layer ‖ΔW‖_F, one panel per module: the generated adapter next to the nearest expert.

    Args:
        generated: ``module -> (L,)`` norms of the generated adapter.
        nearest: the same for the nearest zoo expert, or None.
        nearest_id: the nearest expert's id, for the legend.
    """
    modules = sorted(generated)
    fig = Figure(figsize=(6.4, 1.0 + 2.0 * len(modules)), layout="constrained")
    axes = fig.subplots(len(modules), 1, squeeze=False)[:, 0]
    width = 0.4 if nearest else 0.8
    for ax, m in zip(axes, modules, strict=True):
        layers = np.arange(len(generated[m]))
        ax.bar(layers - (width / 2 if nearest else 0), generated[m], width, label="generated")
        if nearest:
            label = f"nearest expert ({_short(nearest_id, 32)})"
            ax.bar(layers + width / 2, nearest[m], width, label=label, color="#dd8452")
        ax.set_title(f"{m}: ‖ΔW‖_F per layer", fontsize=10)
        ax.set_ylabel("‖ΔW‖_F")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(y=0.3)
        ax.legend(fontsize=7, loc="upper center", ncols=2, frameon=False)
    axes[-1].set_xlabel("layer")
    return fig


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first two principal axes of ``points`` ``(n, dim)``.

    Returns:
        ``(coords (n, 2), mean (dim,), axes (2, dim))``; project a new point ``x`` with
        ``(x - mean) @ axes.T``.
    """
    mean = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - mean, full_matrices=False)
    axes = np.zeros((2, points.shape[1]), dtype=points.dtype)
    axes[: min(2, len(vt))] = vt[:2]
    return (points - mean) @ axes.T, mean, axes


def zoo_figure(
    coords: np.ndarray,
    labels: list[str],
    marked: np.ndarray | None = None,
    marked_label: str = "",
    highlight: list[int] | None = None,
) -> Figure:
    """Scatter of the zoo's experts in 2-D, with the current description as a red star.

    Args:
        coords: ``(E, 2)`` expert positions.
        labels: expert id of each point.
        marked: ``(2,)`` position of the current description, or None.
        marked_label: text shown next to it.
        highlight: expert indices to name on the plot (e.g. the nearest ones).
    """
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(coords[:, 0], coords[:, 1], s=14, alpha=0.7, label=f"zoo experts ({len(coords)})")
    for i in highlight or []:
        ax.annotate(
            _short(labels[i], 32), coords[i], fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    if marked is not None:
        ax.scatter([marked[0]], [marked[1]], marker="*", s=220, color="crimson", label="your task")
        ax.annotate(
            _short(marked_label, 40),
            marked,
            fontsize=8,
            color="crimson",
            xytext=(5, -10),
            textcoords="offset points",
        )
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("Zoo: PCA of description embeddings", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    return fig
