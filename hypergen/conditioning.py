"""The generator's view of LoRA weights and of the zoo: chunks, and the condition inputs built
from retrieved neighbours (the SG-LoRA summary, see :mod:`hypergen.cvae`).

A *chunk* is one (layer, module) pair of a stacked adapter, ``concat(A[l].flatten(),
B[l].flatten())``: ``r·(in+out)`` numbers. The condition inputs of a query are its embedding, its
``k`` neighbours' similarities, their ``softmax(sims / tau)``-weighted mean description embedding
and, per module, the weighted mean and spread (std) of their chunks and their *merge*: the
rank-r canonical factors of ``Σ_j w_j B_j A_j``. Averaging canonical factors of different experts
shrinks the product towards zero (their singular vectors differ, so the factors cancel); the
merge keeps the size of the neighbours' updates, which is what the generator starts from.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from hypergen.canonical import balanced
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


def merge_pairs(
    a: Tensor, b: Tensor, w: Tensor, idx: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Rank-r canonical factors of the weighted sum of ``k`` LoRA updates, ``Σ_j w_j B_j A_j``.

    Args:
        a: ``(n, k, L, r, in)``; b: ``(n, k, L, out, r)``; w: ``(n, k)`` non-negative weights.
        idx: ``(n, k)`` expert indices: then ``a`` is ``(E, L, r, in)`` and ``b`` ``(E, L, out,
            r)``, and the neighbours are read from them straight into the stacked factors
            (the same as ``merge_pairs(a[idx], b[idx], w)`` without that copy).

    Returns:
        ``(A, B)`` of shapes ``(n, L, r, in)`` and ``(n, L, out, r)`` (float32): the best rank-r
        approximation of the sum, in canonical form (:func:`hypergen.canonical.balanced`), never
        forming ``out × in``.

    The sum is ``M = B_s A_s`` with the stacked rank-``K = k·r`` factors ``B_s = [√w_j B_j]``,
    ``A_s = [√w_j A_j]``. Its top singular pairs come from ``K × K`` matrices only: with the
    Cholesky factor ``G_A = A_s A_sᵀ = P Pᵀ`` and ``G_B = B_sᵀ B_s``, the eigenpairs ``(σ², x)``
    of ``C = Pᵀ G_B P`` give ``u = B_s P x / σ`` and ``vᵀ = xᵀ Pᵀ G_B A_s / σ²``. The factors
    are stacked unweighted in one copy each and the weights applied to the ``K × K`` Gram
    matrices instead. The tall products run in float32, ``G_A``'s Cholesky factor and ``C`` in
    float64, and the eigenpairs of ``C`` in float32 (the largest cost of a call: 5 ms for the 30
    layers of a q_proj merge on one thread, against 8 ms in float64); ``G_A`` gets a jitter of
    ``1e-6`` of its mean diagonal so that repeated or zero-weight neighbours (a singular
    ``G_A``) still factor; where rounding defeats the jitter, ``P = V√Λ`` from ``eigh(G_A)``.
    On the shipped zoo's experts (k = 8) the merged ΔW matches a dense truncated SVD of the sum
    to 3e-6 relative (4e-7 with a float64 eigensolver), far below the fp16 rounding of the
    zoo's weights; on one thread a q_proj merge takes 16 ms where the float64 eigensolver with
    two copies per factor took 19 ms.
    """
    a_s, b_s = _stacked(a, b, idx)
    r = a.shape[-2]
    root = w.float().clamp_min(0).sqrt().repeat_interleave(r, dim=-1)  # (n, K)
    outer = (root[:, :, None] * root[:, None, :])[:, None]  # (n, 1, K, K)
    g_a = ((a_s @ a_s.transpose(-1, -2)) * outer).double()
    g_b = ((b_s.transpose(-1, -2) @ b_s) * outer).double()
    p = _cholesky_factor(g_a)
    sigma2, x = torch.linalg.eigh((p.transpose(-1, -2) @ g_b @ p).float())  # ascending
    sigma2, x = sigma2.double().flip(-1)[..., :r].clamp_min(0), x.double().flip(-1)[..., :r]
    sigma = sigma2.sqrt()
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    px = p @ x  # (n, L, K, r)
    rs = root.double()[:, None, :, None]  # the weights of the unweighted stacks
    left = (b_s @ (rs * px).float()).double() / safe.unsqueeze(-2)
    right = ((rs * (g_b @ px)).transpose(-1, -2).float() @ a_s).double()
    a_top, b_top = balanced(left, sigma, right / (safe * safe).unsqueeze(-1))
    return a_top.float().contiguous(), b_top.float().contiguous()


def _stacked(a: Tensor, b: Tensor, idx: Tensor | None) -> tuple[Tensor, Tensor]:
    """The unweighted stacks ``(n, L, K, in)`` and ``(n, L, out, K)`` (float32, neighbour-major:
    ``K = k·r``, index ``j·r + i``), each written in one copy (see :func:`merge_pairs`)."""
    (n, k), (layers, r, inp) = (a.shape[:2] if idx is None else idx.shape), a.shape[-3:]
    a_s = torch.empty((n, layers, k, r, inp), dtype=torch.float32, device=a.device)
    b_s = torch.empty((n, layers, b.shape[-2], k, r), dtype=torch.float32, device=b.device)
    if idx is None:
        a_s.copy_(a.transpose(1, 2))
        b_s.copy_(b.permute(0, 2, 3, 1, 4))
    else:  # one slice per neighbour: fewer passes than a[idx] and a transposing copy
        for i, row in enumerate(idx.tolist()):
            for j, e in enumerate(row):
                a_s[i, :, j].copy_(a[e])
                b_s[i, :, :, j].copy_(b[e])
    return a_s.flatten(2, 3), b_s.flatten(3, 4)


def _cholesky_factor(g_a: Tensor) -> Tensor:
    """``P`` with ``P Pᵀ = G_A`` (``(..., K, K)`` float64): Cholesky with a jitter of ``1e-6`` of
    the mean diagonal, or ``V√Λ`` from ``eigh`` where rounding defeats the jitter."""
    jitter = 1e-6 * g_a.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)
    eye = torch.eye(g_a.shape[-1], dtype=g_a.dtype, device=g_a.device)
    p, info = torch.linalg.cholesky_ex(g_a + jitter[..., None, None] * eye)
    failed = info != 0  # float32 rounding pushed a (near-)singular G_A below the jitter
    if failed.any():  # any P with P Pᵀ = G_A will do: V·√Λ from its eigenpairs
        lam, vec = torch.linalg.eigh(g_a[failed])
        p[failed] = vec * lam.clamp_min(0).sqrt().unsqueeze(-2)
    return p


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
    merges: dict[str, Tensor] | None = None,
    summary: bool = True,
) -> dict[str, Tensor]:
    """Condition inputs of ``n`` queries from their retrieved neighbours (any one device).

    Args:
        weights: the zoo stacked over experts, ``{"m.A": (E, L, r, in), "m.B": (E, L, out, r)}``.
        expert_emb: ``(E, d)`` from :func:`expert_embeddings`; ``query``: ``(n, d)``.
        idx, sims: ``(n, k)`` neighbour expert indices and cosine similarities.
        merges: ``merge.<m>`` already computed for these queries (training caches them per
            description row: a row's neighbours never change, and the merge's small batched
            QR/SVD calls are the slowest part of this function on a CPU).
        summary: also compute ``mean.<m>`` and ``spread.<m>`` (only a decoder with
            ``summary_in_decoder`` reads the spread; on big layouts they cost real time).

    Returns:
        ``embedding (n, d)``, ``neighbours (n, k)``, ``sims (n, k)``, ``neighbour_embedding
        (n, d)``, and per module the ``softmax(sims / tau)``-weighted mean and spread (std) of the
        neighbours' raw chunks: ``mean.<m>``, ``spread.<m>`` (with ``summary``), and the chunks of their
        :func:`merge_pairs`: ``merge.<m>``, each ``(n, L, chunk_m)``.
    """
    w = torch.softmax(sims.float() / tau, dim=-1)
    out = {"embedding": query.float(), "neighbours": idx, "sims": sims.float()}
    out["neighbour_embedding"] = (w[..., None] * expert_emb[idx]).sum(1)
    for m in layout.modules:
        a, b = weights[f"{m}.A"], weights[f"{m}.B"]
        if summary:
            nbr = [to_chunks({f"{m}.A": a[j], f"{m}.B": b[j]}, m).float() for j in idx.T]
            mean = sum(w[:, j, None, None] * x for j, x in enumerate(nbr))
            var = sum(w[:, j, None, None] * (x - mean) ** 2 for j, x in enumerate(nbr))
            out[f"mean.{m}"], out[f"spread.{m}"] = mean, var.sqrt()
        if merges is not None:
            out[f"merge.{m}"] = merges[f"merge.{m}"]
            continue
        merged_a, merged_b = merge_pairs(a, b, w, idx)
        out[f"merge.{m}"] = to_chunks({f"{m}.A": merged_a, f"{m}.B": merged_b}, m)
    return out


def _neighbour_weights(bank, idx: Tensor) -> tuple[Weights, Tensor, Tensor | None]:
    """``(weights, local, experts)`` for merging the neighbours ``idx`` of ``bank``: a bank
    holding its weights in memory gives them all, read where they lie (``local`` is ``idx``,
    ``experts`` ``None``); one reading from disk gives only the neighbours' (``experts``, the
    distinct ones), with ``local`` indexing into them."""
    if bank.resident is not None:
        return bank.resident, idx, None
    experts, local = torch.unique(idx, return_inverse=True)
    return bank.gather(experts), local, experts


def condition_inputs(
    bank,
    query_emb: np.ndarray,
    k: int,
    exclude: list[set[int]] | None = None,
    tau: float = 0.1,
    summary: bool = True,
) -> dict[str, Tensor]:
    """Retrieve ``k`` neighbours per query from ``bank`` (an :class:`hypergen.bank.ExpertBank`)
    and return their :func:`neighbour_inputs` on the CPU.

    Args:
        query_emb: ``(n, d)`` unit description embeddings.
        exclude: per query, expert indices never retrieved (leave-one-out in training).
        tau: softmax temperature over similarities (use the model's ``config.tau``).
        summary: also return the neighbours' chunk ``mean`` and ``spread``.
    """
    query = np.ascontiguousarray(np.atleast_2d(query_emb), dtype=np.float32)
    idx, sims = (torch.from_numpy(t) for t in bank.search(query, k, exclude))
    weights, local, experts = _neighbour_weights(bank, idx)
    emb = bank.expert_embeddings if experts is None else bank.expert_embeddings[experts]
    query_t = torch.from_numpy(query)
    out = neighbour_inputs(bank.layout, weights, emb, query_t, local, sims, tau, summary=summary)
    out["neighbours"] = idx
    return out


def mixture_inputs(
    bank, cond: dict[str, Tensor], samples: int, tau: float, noise: float, generator=None
) -> dict[str, Tensor]:
    """The condition inputs of ``samples`` draws per query, each merging the query's neighbours
    with its own weights ``softmax(sims / tau + noise · g)``, ``g ~ N(0, I_k)`` (drawn with
    ``generator``): rows ``n · samples``, each query's draws together. Everything but the merges
    (embeddings, similarities, the neighbours' mean and spread) is the query's, repeated.

    Args:
        bank: the :class:`hypergen.bank.ExpertBank` that ``cond`` was retrieved from.
        cond: :func:`condition_inputs` of ``n`` queries (on the CPU).
    """
    idx, sims = cond["neighbours"], cond["sims"].float()
    n, k = idx.shape
    weights, local, _ = _neighbour_weights(bank, idx)
    g = torch.randn((n, samples, k), generator=generator)
    w = torch.softmax((sims / tau)[:, None] + noise * g, dim=-1).reshape(n * samples, k)
    local = local.repeat_interleave(samples, 0)
    out = {
        key: v.repeat_interleave(samples, 0)
        for key, v in cond.items()
        if not key.startswith("merge.")
    }
    for m in bank.layout.modules:
        merged_a, merged_b = merge_pairs(weights[f"{m}.A"], weights[f"{m}.B"], w, local)
        out[f"merge.{m}"] = to_chunks({f"{m}.A": merged_a, f"{m}.B": merged_b}, m)
    out["mixture"] = w
    return out
