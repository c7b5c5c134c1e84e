"""Canonical form of LoRA weights: one representative per update ΔW = B·A.

B·A is unchanged by B → B·R, A → R⁻¹·A for any invertible r×r matrix R, so raw A/B of two
experts are not comparable and averaging or regressing them is meaningless. We map every
(layer, module) pair to the balanced factors of the thin SVD of its product::

    ΔW = B A = U S Vᵀ            (rank r, computed without forming the out×in matrix)
    B' = U √S,   A' = √S Vᵀ       (so B' A' = B A exactly, up to float error)

with the sign of each singular pair fixed so the largest-magnitude entry of each column of U is
positive. Two reparametrised copies of one update get the same canonical tensors (when the
singular values are distinct, which holds for trained adapters). The SVD is done in float64 on
the r×r core: QR(B) = Q_b R_b, QR(Aᵀ) = Q_a R_a, SVD(R_b R_aᵀ) = U₀ S V₀ᵀ, U = Q_b U₀, V = Q_a V₀.

The alternative (docs/design.md, "The canonical form of a LoRA"), training every expert from one
shared frozen A, constrains expert training; the SVD form works on any adapter, including ones
users bring.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hypergen.layout import LoraLayout, Weights


def canonical_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonicalise stacked LoRA factors.

    Args:
        a: ``(..., r, in)`` LoRA A.
        b: ``(..., out, r)`` LoRA B.

    Returns:
        ``(a', b')`` of the same shapes and dtype, with ``b' @ a' == b @ a``.
    """
    q_b, r_b = torch.linalg.qr(b.double())
    q_a, r_a = torch.linalg.qr(a.double().transpose(-1, -2))
    u0, s, v0h = torch.linalg.svd(r_b @ r_a.transpose(-1, -2), full_matrices=False)
    a_canon, b_canon = balanced(q_b @ u0, s, v0h @ q_a.transpose(-1, -2))
    return a_canon.to(a.dtype), b_canon.to(b.dtype)


def balanced(left: torch.Tensor, s: torch.Tensor, right: torch.Tensor) -> tuple[Tensor, Tensor]:
    """``(A', B') = (√S Vᵀ, U √S)`` from singular pairs ``U (..., out, r)``, ``S (..., r)``,
    ``Vᵀ (..., r, in)``, each pair's sign fixed so the largest-magnitude entry of U's column is
    positive."""
    pivot = left.abs().argmax(dim=-2, keepdim=True)
    sign = torch.sign(torch.gather(left, -2, pivot))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)  # (..., 1, r)
    root = s.clamp_min(0).sqrt()
    b_canon = left * sign * root.unsqueeze(-2)
    a_canon = right * sign.transpose(-1, -2) * root.unsqueeze(-1)
    return a_canon, b_canon


def canonicalize(layout: LoraLayout, weights: Weights) -> Weights:
    """Canonical form of every module of a stacked adapter (see the module docstring)."""
    layout.validate(weights)
    out: Weights = {}
    for m in layout.modules:
        out[f"{m}.A"], out[f"{m}.B"] = canonical_pair(weights[f"{m}.A"], weights[f"{m}.B"])
    return out
