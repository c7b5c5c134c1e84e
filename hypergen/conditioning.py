"""The generator's view of LoRA weights and of the zoo: chunks, and the condition inputs built
from retrieved neighbours (the SG-LoRA summary, see :mod:`hypergen.cvae`).

A *chunk* is one (layer, module) pair of a stacked adapter, ``concat(A[l].flatten(),
B[l].flatten())``: ``r·(in+out)`` numbers. The condition inputs of a query are its embedding, its
``k`` neighbours' similarities, their ``softmax(sims / tau)``-weighted mean description embedding
and, per module, the weighted mean and spread (std) of their chunks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from hypergen.layout import LoraLayout, Weights


def chunk_size(layout: LoraLayout, module: str) -> int:
    return layout.rank * sum(layout.shapes[module])


def to_chunks(weights: Weights, module: str) -> Tensor:
    """``(..., L, r, in)`` A and ``(..., L, out, r)`` B of ``module`` -> ``(..., L, chunk)``."""
    a, b = weights[f"{module}.A"], weights[f"{module}.B"]
    return torch.cat([a.flatten(-2), b.flatten(-2)], dim=-1)


def from_chunks(layout: LoraLayout, chunks: Tensor, module: str) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`to_chunks`: ``(..., L, chunk)`` -> ``(A, B)``."""
    (out, inp), r, lead = layout.shapes[module], layout.rank, chunks.shape[:-1]
    a = chunks[..., : r * inp].reshape(*lead, r, inp)
    return a, chunks[..., r * inp :].reshape(*lead, out, r)


def trace_product(x: Tensor, y: Tensor) -> Tensor:
    """``tr(x @ y)`` of batched square matrices."""
    return (x * y.transpose(-1, -2)).sum((-1, -2))


def dw_sq_error(a_hat: Tensor, b_hat: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """‖B̂Â − BA‖_F² per leading index, from r×r Gram matrices (no out×in matrix is formed):
    ``tr(ÂÂᵀ B̂ᵀB̂) − 2 tr(AÂᵀ B̂ᵀB) + tr(AAᵀ BᵀB)``."""
    t = a_hat.transpose(-1, -2)
    bh_t = b_hat.transpose(-1, -2)
    own = trace_product(a @ a.transpose(-1, -2), b.transpose(-1, -2) @ b)
    return (
        trace_product(a_hat @ t, bh_t @ b_hat) - 2 * trace_product(a @ t, bh_t @ b) + own
    ).clamp_min(0)


def expert_embeddings(bank) -> Tensor:
    """``(E, d)`` unit mean of each expert's description embeddings in ``bank`` (which caches it,
    see :attr:`hypergen.bank.ExpertBank.expert_embeddings`)."""
    return bank.expert_embeddings


def neighbour_inputs(
    layout: LoraLayout,
    weights: Weights,
    expert_emb: Tensor,
    query: Tensor,
    idx: Tensor,
    sims: Tensor,
    tau: float,
) -> dict[str, Tensor]:
    """Condition inputs of ``n`` queries from their retrieved neighbours (any one device).

    Args:
        weights: the zoo stacked over experts, ``{"m.A": (E, L, r, in), "m.B": (E, L, out, r)}``.
        expert_emb: ``(E, d)`` from :func:`expert_embeddings`; ``query``: ``(n, d)``.
        idx, sims: ``(n, k)`` neighbour expert indices and cosine similarities.

    Returns:
        ``embedding (n, d)``, ``neighbours (n, k)``, ``sims (n, k)``, ``neighbour_embedding
        (n, d)``, and per module the ``softmax(sims / tau)``-weighted mean and spread (std) of the
        neighbours' raw chunks: ``mean.<m>``, ``spread.<m>`` ``(n, L, chunk_m)``.
    """
    w = torch.softmax(sims.float() / tau, dim=-1)
    out = {"embedding": query.float(), "neighbours": idx, "sims": sims.float()}
    out["neighbour_embedding"] = (w[..., None] * expert_emb[idx]).sum(1)
    for m in layout.modules:
        a, b = weights[f"{m}.A"], weights[f"{m}.B"]
        nbr = [to_chunks({f"{m}.A": a[j], f"{m}.B": b[j]}, m).float() for j in idx.T]
        mean = sum(w[:, j, None, None] * x for j, x in enumerate(nbr))
        var = sum(w[:, j, None, None] * (x - mean) ** 2 for j, x in enumerate(nbr))
        out[f"mean.{m}"], out[f"spread.{m}"] = mean, var.sqrt()
    return out


def condition_inputs(
    bank, query_emb: np.ndarray, k: int, exclude: list[set[int]] | None = None, tau: float = 0.1
) -> dict[str, Tensor]:
    """Retrieve ``k`` neighbours per query from ``bank`` (an :class:`hypergen.bank.ExpertBank`)
    and return their :func:`neighbour_inputs` on the CPU.

    Args:
        query_emb: ``(n, d)`` unit description embeddings.
        exclude: per query, expert indices never retrieved (leave-one-out in training).
        tau: softmax temperature over similarities (use the model's ``config.tau``).
    """
    query = np.ascontiguousarray(np.atleast_2d(query_emb), dtype=np.float32)
    idx, sims = (torch.from_numpy(t) for t in bank.search(query, k, exclude))
    experts, local = torch.unique(idx, return_inverse=True)  # read only the neighbours' weights
    weights, emb = bank.gather(experts), bank.expert_embeddings[experts]
    out = neighbour_inputs(bank.layout, weights, emb, torch.from_numpy(query), local, sims, tau)
    out["neighbours"] = idx
    return out
