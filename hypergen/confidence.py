"""How sure the generator can be about an adapter: how close the zoo's experts are to the
description, and how much the experts it draws on (and its own samples) agree.

The adapter is built from the retrieved neighbours, so when no expert is near the description
the adapter is a guess. The threshold below which the shipped system stops helping is measured
on the held-out benchmark (``hypergen/assets/confidence.json``, written from a
``hypergen-eval`` run with ``python -m training.calibrate``) and never tuned by hand.

Agreement between two updates is the cosine of their ΔW over all layers and modules, computed
from the LoRA factors without forming ΔW: ``<B1 A1, B2 A2>_F = sum((B1ᵀ B2) ∘ (A1 A2ᵀ))``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
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
    """What an adapter's confidence rests on (all cosines, in [-1, 1])."""

    nearest: float
    """Similarity of the description to the nearest zoo expert."""
    weighted: float
    """The neighbours' similarities averaged with the generator's merge weights."""
    agreement: float | None
    """Mean pairwise ΔW cosine of the neighbours (1: they are the same update)."""
    sample_spread: float | None
    """Mean ΔW distance of the samples from their mean, relative to its norm (None: one
    sample, or samples that cannot differ)."""
    threshold: float | None
    """The calibrated nearest similarity below which the adapter did not help (None: none)."""

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
        return {**asdict(self), "low": self.low}


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
    summed over layers and modules. ``a``/``b``: ``{"q.A": (n, L, r, in), "q.B": (n, L, out, r)}``."""
    total = None
    for m in layout.modules:
        bb = torch.einsum("nlor,mlos->nmlrs", a[f"{m}.B"].float(), b[f"{m}.B"].float())
        aa = torch.einsum("nlri,mlsi->nmlrs", a[f"{m}.A"].float(), b[f"{m}.A"].float())
        part = (bb * aa).sum((-1, -2, -3))
        total = part if total is None else total + part
    return total.double() * layout.scaling**2


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
