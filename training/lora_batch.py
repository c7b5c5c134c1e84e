"""A different LoRA for every sequence of a batch through a frozen model, and the geometry of
LoRA updates computed from their factors (used by the end-to-end stage, :mod:`training.e2e`)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor

from hypergen.layout import LoraLayout, Weights


class BatchedLora:
    """Adds a different LoRA update to every sequence of a batch, through forward hooks on the
    target linears of a frozen model: ``y += scaling · (x Aᵀ) Bᵀ`` with ``A, B`` of the
    sequence's adapter (PEFT's LoRA forward without dropout, but differentiable in ``A, B``).

    Use as a context manager; between :meth:`set` and :meth:`clear` every forward of the model
    uses the adapters set.
    """

    def __init__(self, model: torch.nn.Module, layout: LoraLayout):
        self.layout = layout
        self.weights: Weights | None = None
        self.rows: Tensor | None = None
        self._handles = [
            model.get_submodule(layout.paths[m].format(layer=layer)).register_forward_hook(
                partial(self._hook, m, layer)
            )
            for m in layout.modules
            for layer in range(layout.num_layers)
        ]

    def set(self, weights: Weights, rows: Tensor) -> None:
        """``weights``: stacked ``{"m.A": (n, L, r, in), "m.B": (n, L, out, r)}``; ``rows``:
        ``(S,)`` the adapter (0..n-1) of each of the S sequences of the next forwards."""
        self.weights, self.rows = weights, rows

    def clear(self) -> None:
        self.weights = self.rows = None

    def _hook(self, module: str, layer: int, _mod, args, output: Tensor) -> Tensor:
        if self.weights is None:
            return output
        a = self.weights[f"{module}.A"][:, layer][self.rows]  # (S, r, in)
        b = self.weights[f"{module}.B"][:, layer][self.rows]  # (S, out, r)
        low = torch.einsum("sti,sri->str", args[0].to(a.dtype), a)
        update = torch.einsum("str,sor->sto", low, b) * self.layout.scaling
        return output + update.to(output.dtype)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> BatchedLora:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def dw_inner(x: Weights, y: Weights, modules: Sequence[str]) -> Tensor:
    """``Σ_{layer, module} ⟨B_x A_x, B_y A_y⟩_F`` per leading index ``(n,)``, from ``r × r``
    products of the factors (no ``out × in`` matrix is formed)."""
    total = 0
    for m in modules:
        bb = x[f"{m}.B"].transpose(-1, -2) @ y[f"{m}.B"]  # (n, L, r, r)
        aa = x[f"{m}.A"] @ y[f"{m}.A"].transpose(-1, -2)
        total = total + (bb * aa).sum((-1, -2)).sum(-1)
    return total


def geometry(generated: Weights, merge: Weights, modules: Sequence[str]) -> dict:
    """‖ΔW_gen‖ / ‖ΔW_merge‖ and cos(ΔW_gen, ΔW_merge) (all layers and modules as one vector):
    their means over rows (``norm_ratio``, ``cos_merge``) and per row (``…_by_task``)."""
    gg, mm = dw_inner(generated, generated, modules), dw_inner(merge, merge, modules)
    gm = dw_inner(generated, merge, modules)
    ratio = (gg / mm.clamp_min(1e-30)).sqrt()
    cos = gm / (gg * mm).sqrt().clamp_min(1e-30)
    out = {
        "norm_ratio": float(ratio.mean()),
        "cos_merge": float(cos.mean()),
        "norm_ratio_by_task": [round(float(x), 4) for x in ratio],
        "cos_merge_by_task": [round(float(x), 4) for x in cos],
    }
    if len(gg) > 1:
        out["change_cos"] = change_cos(generated, merge, modules)
    return out


def sample_spread(one: Weights, two: Weights, mean: Weights, modules: Sequence[str]) -> float:
    """``‖ΔW_one − ΔW_two‖ / ‖ΔW_mean‖`` of two samples per row, averaged over rows (all layers
    and modules as one vector): how different two draws of the same description are."""
    diff = (
        dw_inner(one, one, modules) + dw_inner(two, two, modules) - 2 * dw_inner(one, two, modules)
    )
    own = dw_inner(mean, mean, modules).clamp_min(1e-30)
    return float((diff.clamp_min(0) / own).sqrt().mean())


def change_cos(generated: Weights, merge: Weights, modules: Sequence[str]) -> float:
    """Mean cosine, over pairs of rows, between the rows' changes ``ΔW_gen − ΔW_merge`` (all
    layers and modules as one vector): near 1 the generator adds one shared offset to every
    task's merge (a multitask update, whatever the description), near 0 a change of its own."""
    n = len(next(iter(generated.values())))
    i, j = torch.triu_indices(n, n, offset=1).unbind(0)
    if len(i) == 0:
        return float("nan")

    def pick(w: Weights, rows: Tensor) -> Weights:
        return {k: v[rows] for k, v in w.items()}

    def inner(a: Tensor, b: Tensor) -> Tensor:  # ⟨G_a − M_a, G_b − M_b⟩ per pair
        ga, ma, gb, mb = pick(generated, a), pick(merge, a), pick(generated, b), pick(merge, b)
        return (
            dw_inner(ga, gb, modules)
            - dw_inner(ga, mb, modules)
            - dw_inner(ma, gb, modules)
            + dw_inner(ma, mb, modules)
        )

    cos = inner(i, j) / (inner(i, i) * inner(j, j)).clamp_min(1e-30).sqrt()
    return float(cos.mean())
