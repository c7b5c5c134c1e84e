"""Handlers of the Zoo tab: browse and search the generator's experts and see them in 2-D.

Plain functions over the generator's :class:`~hypergen.bank.ExpertBank` (ids, families,
descriptions, embeddings) and, when given, an :class:`~expert_zoo.store.ExpertZoo` for each
expert's eval gain. No gradio here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app import plots
from app.handlers import MAX_DESCRIPTION_CHARS, check_text


@dataclass
class ZooView:
    """The generator's zoo as the Zoo tab shows it (computed once per app)."""

    ids: list[str]
    families: list[str]
    descriptions: list[list[str]]
    gains: list[float | None]
    """Eval gain of each expert over the base model, when the zoo's records are at hand."""
    points: np.ndarray
    """``(E, dim)`` unit mean of each expert's description embeddings."""
    coords: np.ndarray
    """``(E, 2)`` PCA coordinates of ``points``."""
    mean: np.ndarray
    axes: np.ndarray


def zoo_view(generator, zoo=None) -> ZooView:
    """Read the generator's bank (and, if given, the ``ExpertZoo``'s records for the gains)."""
    bank = generator.bank
    points = np.zeros((len(bank), bank.dim), dtype=np.float32)
    np.add.at(points, bank.row_expert, bank.embeddings)
    points /= np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
    coords, mean, axes = plots.pca_2d(points)
    gain = {r.expert_id: r.metrics.get("gain") for r in zoo.records()} if zoo is not None else {}
    gains = [gain.get(i) for i in bank.expert_ids]
    return ZooView(
        list(bank.expert_ids),
        list(bank.families),
        [list(d) for d in bank.descriptions],
        [float(g) if isinstance(g, (int, float)) else None for g in gains],
        points,
        coords,
        mean,
        axes,
    )


def encode(generator, text: str) -> np.ndarray:
    """``(dim,)`` unit embedding of ``text`` by the generator's task encoder."""
    return np.asarray(generator.encoder.encode([text]), dtype=np.float32)[0]


def expert_similarities(bank, query: np.ndarray) -> np.ndarray:
    """``(E,)`` cosine similarity of ``query`` ``(dim,)`` to each expert's best description."""
    sims = np.full(len(bank), -1.0, dtype=np.float32)
    np.maximum.at(sims, bank.row_expert, bank.embeddings @ query)
    return sims


def zoo_rows(
    view: ZooView, query: str = "", sims: np.ndarray | None = None, limit: int = 500
) -> list[list]:
    """``[expert id, family, description, gain, similarity]`` rows matching ``query``.

    ``query`` filters case-insensitively on id, family and every description; rows are sorted
    by similarity to the marked description when ``sims`` is given, else by id.
    """
    needle = (query or "").strip().lower()[:MAX_DESCRIPTION_CHARS]
    order = np.argsort(-sims, kind="stable") if sims is not None else np.argsort(view.ids)
    rows = []
    for e in order.tolist():
        hay = " ".join([view.ids[e], view.families[e], *view.descriptions[e]]).lower()
        if needle and needle not in hay:
            continue
        gain = None if view.gains[e] is None else round(view.gains[e], 4)
        sim = None if sims is None else round(float(sims[e]), 4)
        row = [view.ids[e], view.families[e], view.descriptions[e][0], gain, sim]
        rows.append(row)
        if len(rows) == limit:
            break
    return rows


def zoo_tab(generator, view: ZooView, query: str = "", description: str = ""):
    """Rows and the 2-D figure of the Zoo tab, with ``description`` (if any) marked.

    Returns:
        ``(rows, figure, status)``.
    """
    marked, sims, highlight = None, None, []
    if description and description.strip():
        text = check_text(description, "task description", MAX_DESCRIPTION_CHARS)
        query_point = encode(generator, text)
        sims = expert_similarities(generator.bank, query_point)
        marked = (query_point - view.mean) @ view.axes.T
        highlight = np.argsort(-sims)[:5].tolist()
    rows = zoo_rows(view, query, sims)
    figure = plots.zoo_figure(view.coords, view.ids, marked, description or "", highlight)
    status = f"{len(rows)} of {len(view.ids)} experts shown."
    return rows, figure, status
