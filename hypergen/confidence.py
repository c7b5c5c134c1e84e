"""How sure the generator can be about an adapter: how close the zoo's experts are to the
description, and how much the experts it draws on (and its own samples) agree.

The adapter is built from the retrieved neighbours, so when no expert is near the description
the adapter is a guess. The threshold below which the shipped system stops helping is measured
on the held-out benchmark (``hypergen/assets/confidence.json``, written from a
``hypergen-eval`` run with ``python -m training.evaluation.calibrate``) and never tuned by hand.

Agreement between two updates is the cosine of their ΔW over all layers and modules, computed
from the LoRA factors without forming ΔW: ``<B1 A1, B2 A2>_F = sum((B1ᵀ B2) ∘ (A1 A2ᵀ))``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from hypergen.layout import LoraLayout

CALIBRATION = Path(__file__).resolve().parent / "assets" / "confidence.json"
WARNING = (
    "no zoo expert is close to this task (nearest similarity {sim:.2f}, below {threshold:.2f}); "
    "the adapter may not help. Add 50+ examples with Grow or `expert-zoo add` to train an "
    "expert for it in a few minutes."
)


@dataclass(frozen=True)
class Confidence:
    """What an adapter's confidence rests on (all cosines, in [-1, 1]).

    ``agreement`` and ``sample_spread`` are computed when first read (a few ms of matmuls
    that ``generate()`` callers who never look at them do not pay)."""

    nearest: float
    """Similarity of the description to the nearest zoo expert."""
    weighted: float
    """The neighbours' similarities averaged with the generator's merge weights."""
    threshold: float | None
    """The calibrated nearest similarity below which the adapter did not help (None: none)."""
    layout: LoraLayout | None = field(default=None, repr=False, compare=False)
    bank: object | None = field(default=None, repr=False, compare=False)
    neighbours: torch.Tensor | None = field(default=None, repr=False, compare=False)
    """The neighbours' indices in ``bank`` (``agreement`` reads their weights when asked)."""
    samples: dict | None = field(default=None, repr=False, compare=False)
    """The samples' stacked weights when they can differ (``sample_spread``)."""

    @cached_property
    def agreement(self) -> float | None:
        """Mean pairwise ΔW cosine of the neighbours (1: they are the same update)."""
        if self.neighbours is None or self.layout is None or self.bank is None:
            return None
        return agreement(self.layout, self.bank.gather(self.neighbours))

    @cached_property
    def sample_spread(self) -> float | None:
        """Mean ΔW distance of the samples from their mean, relative to its norm (None: one
        sample, or samples that cannot differ)."""
        if self.samples is None or self.layout is None:
            return None
        return sample_spread(self.layout, self.samples)

    @property
    def low(self) -> bool:
        """True when the nearest expert is below the calibrated threshold."""
        return self.threshold is not None and self.nearest < self.threshold

    @property
    def warning(self) -> str | None:
        """The message to show when :attr:`low`, else None."""
        if not self.low:
            return None
        return WARNING.format(sim=self.nearest, threshold=self.threshold)

    @property
    def level(self) -> float:
        """A 0..1 gauge: the nearest similarity relative to the threshold (0.5 at it)."""
        t = self.threshold if self.threshold is not None else 0.5
        return float(min(1.0, max(0.0, 0.5 * self.nearest / t if t > 0 else self.nearest)))

    def to_dict(self) -> dict:
        return {
            "nearest": self.nearest,
            "weighted": self.weighted,
            "agreement": self.agreement,
            "sample_spread": self.sample_spread,
            "threshold": self.threshold,
            "low": self.low,
        }


def load_threshold(path: Path = CALIBRATION) -> float | None:
    """The calibrated similarity threshold, or None when no calibration is shipped."""
    try:
        return float(json.loads(path.read_text())["threshold"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def gram(
    layout: LoraLayout, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]
) -> torch.Tensor:
    """``(n, m)`` Frobenius inner products of the ΔW of ``n`` updates with those of ``m``,
    summed over layers and modules. ``a``/``b``: ``{"q.A": (n, L, r, in), "q.B": (n, L, out, r)}``.

    Per layer, two batched matmuls of the stacked factors give every pair's ``Bᵢᵀ Bⱼ`` and
    ``Aᵢ Aⱼᵀ`` at once."""
    total = None
    for m in layout.modules:
        ba, bb = _stack_b(a[f"{m}.B"]), _stack_b(b[f"{m}.B"])  # (L, out, n·r), (L, out, m·r)
        aa, ab = _stack_a(a[f"{m}.A"]), _stack_a(b[f"{m}.A"])  # (L, n·r, in), (L, m·r, in)
        n, k, r = a[f"{m}.B"].shape[0], b[f"{m}.B"].shape[0], a[f"{m}.B"].shape[-1]
        prod = (ba.transpose(1, 2) @ bb) * (aa @ ab.transpose(1, 2))  # (L, n·r, m·r)
        part = prod.reshape(-1, n, r, k, r).sum((0, 2, 4))
        total = part if total is None else total + part
    return total.double() * layout.scaling**2


def _stack_b(b: torch.Tensor) -> torch.Tensor:
    n, layers, out, r = b.shape
    return b.float().permute(1, 2, 0, 3).reshape(layers, out, n * r)


def _stack_a(a: torch.Tensor) -> torch.Tensor:
    n, layers, r, width = a.shape
    return a.float().permute(1, 0, 2, 3).reshape(layers, n * r, width)


def agreement(layout: LoraLayout, weights: dict[str, torch.Tensor]) -> float | None:
    """Mean pairwise ΔW cosine of ``k`` updates (None for fewer than 2, or all zero)."""
    k = next(iter(weights.values())).shape[0]
    if k < 2:
        return None
    g = gram(layout, weights, weights)
    norms = g.diagonal().clamp(min=0).sqrt()
    if (norms == 0).any():
        return None
    cos = g / (norms[:, None] * norms[None, :])
    off = ~torch.eye(k, dtype=torch.bool)
    return float(cos[off].mean())


def sample_spread(layout: LoraLayout, weights: dict[str, torch.Tensor]) -> float | None:
    """Mean ‖ΔW_s − ΔW̄‖ / ‖ΔW̄‖ over ``s`` samples (``weights`` stacked over samples)."""
    s = next(iter(weights.values())).shape[0]
    if s < 2:
        return None
    g = gram(layout, weights, weights)  # (s, s)
    mean_sq = g.mean()  # ‖mean‖² = (1/s²) Σ_ij <i, j>
    dist_sq = g.diagonal() - 2 * g.mean(1) + mean_sq
    if mean_sq <= 0:
        return None
    return float(dist_sq.clamp(min=0).sqrt().mean() / mean_sq.sqrt())
