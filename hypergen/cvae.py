"""The generator model: a conditional VAE over canonical LoRA weights, conditioned on retrieval.

References: SG-LoRA (Li et al., "Semantic-guided LoRA Parameters Generation", arXiv:2509.10535):
retrieve the zoo experts whose descriptions are nearest to the new task and condition a CVAE on
their similarity-weighted knowledge; ICM-LoRA (Shao et al., "In-Context Meta LoRA Generation",
IJCAI 2025, arXiv:2501.17635): a CVAE that maps a task representation to LoRA weights.

Data: for module ``m`` and layer ``l`` a *chunk* is ``concat(A[l].flatten(), B[l].flatten())``,
``r·(in+out)`` numbers (canonical form, :mod:`hypergen.canonical`), normalised per coordinate by
the zoo's mean and std (buffers ``(L, chunk_m)``, saved in the checkpoint).

Condition: ``c = MLP([e, Σ_j w_j e_j, sims])``, ``w = softmax(sims / tau)`` over the ``k``
retrieved neighbours, ``e_j`` their mean description embeddings. The neighbours' weights enter
per chunk as their *merge*, the rank-r canonical factors of ``Σ_j w_j B_j A_j`` (SG-LoRA's
similarity-weighted fusion, done in ΔW space so that unaligned factors do not cancel), and,
optionally, the ``w``-weighted spread (std) of their chunks.

Prior ``p(z|c)`` and posterior ``q(z|x,c)`` are diagonal Gaussians; the posterior mean-pools a
per-module projection (``chunk_m -> head_rank -> hidden``) of every target chunk plus its
layer/module embedding. The decoder runs one batched pass per module over ``batch × L`` rows:
``[z, c, layer_emb[l], module_emb[m]]`` (and, with ``summary_in_decoder``, the projected merge
and spread chunks) ``-> MLP -> h``; the output is ``(1 + gate_m(h)) · merge + head_m(h)``: the
neighbours' merge (normalised), scaled (e.g. shrunk to the zoo mean when the neighbours are far)
plus a residual through a ``hidden -> head_rank -> chunk_m`` bottleneck. A fresh decoder
outputs the merge itself. With ``max_deviation`` the change to the merge is bounded (a trust
radius relative to the merge's norm); with ``norm_to_merge`` each layer's ΔW is then rescaled to
the merge's norm, so what the decoder learns is a direction.

Size: the parameter count does not depend on the number of experts, and on depth only through
the ``L × pos_dim`` layer table; it grows with the chunk sizes ``r·(in+out)`` times
``head_rank``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypergen.conditioning import (
    chunk_size,
    condition_inputs,
    dw_sq_error,
    expert_embeddings,
    from_chunks,
    neighbour_inputs,
    to_chunks,
    trace_product,
)
from hypergen.layout import Weights

__all__ = [
    "CVAEConfig",
    "CheckpointError",
    "LoraCVAE",
    "chunk_size",
    "condition_inputs",
    "dw_sq_error",
    "expert_embeddings",
    "from_chunks",
    "neighbour_inputs",
    "to_chunks",
]

from hypergen.cvae_config import (  # the architecture record; re-exported
    Checkpoint,
    CheckpointError,
    CVAEConfig,
)

logger = logging.getLogger(__name__)

_STD_FLOOR = 0.05
"""Per-coordinate std is at least this fraction of the module's RMS (few experts: var ~ 0)."""


# --- the model ----------------------------------------------------------------------------------
def _mlp(inp: int, hidden: int, out: int, dropout: float = 0.0) -> nn.Sequential:
    layers = [nn.Linear(inp, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out)]
    return nn.Sequential(*layers)


def _bottleneck(inp: int, rank: int, out: int) -> nn.Sequential:
    """``inp -> rank -> out`` linear map (a low-rank ``inp × out`` matrix plus a bias)."""
    return nn.Sequential(nn.Linear(inp, rank, bias=False), nn.Linear(rank, out))


def _kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(q || p) of diagonal Gaussians, summed over latent dims: ``(n,)``."""
    ratio = (logvar_q - logvar_p).exp() + (mu_q - mu_p) ** 2 / logvar_p.exp()
    return 0.5 * (ratio - 1 - logvar_q + logvar_p).sum(-1)


class LoraCVAE(Checkpoint, nn.Module):
    """Conditional VAE over canonical LoRA weights (see the module docstring)."""

    def __init__(self, config: CVAEConfig):
        super().__init__()
        self.config, self.layout = config, config.lora_layout
        c, lay, h, p, hr = config, self.layout, config.hidden_dim, config.pos_dim, config.head_rank
        chunk = {m: chunk_size(lay, m) for m in lay.modules}
        self.cond_net = _mlp(2 * c.embed_dim + c.k, h, c.cond_dim, c.dropout)
        self.prior_net = _mlp(c.cond_dim, h, 2 * c.latent_dim)
        self.post_net = _mlp(h + c.cond_dim, h, 2 * c.latent_dim)
        self.layer_emb = nn.Embedding(lay.num_layers, p)
        self.module_emb = nn.Embedding(len(lay.modules), p)
        self.pos_proj = nn.Linear(2 * p, h)
        self.chunk_proj = nn.ModuleDict({m: _bottleneck(n, hr, h) for m, n in chunk.items()})
        trunk_in = c.latent_dim + c.cond_dim + 2 * p
        if c.summary_in_decoder:
            self.spread_proj = nn.ModuleDict({m: _bottleneck(n, hr, h) for m, n in chunk.items()})
            trunk_in += 2 * h
        self.trunk = nn.Sequential(
            nn.LayerNorm(trunk_in), _mlp(trunk_in, h, h, c.dropout), nn.GELU()
        )
        self.heads = nn.ModuleDict({m: _bottleneck(h, hr, n) for m, n in chunk.items()})
        self.gates = nn.ModuleDict({m: nn.Linear(h, 1) for m in chunk})
        if c.layer_scales:
            self.layer_scales = nn.ParameterDict(
                {m: nn.Parameter(torch.zeros(lay.num_layers)) for m in chunk}
            )
        for layer in self._output_layers():  # a fresh decoder outputs the neighbours' merge
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for m, n in chunk.items():
            self.register_buffer(f"mean_{m}", torch.zeros(lay.num_layers, n))
            self.register_buffer(f"std_{m}", torch.ones(lay.num_layers, n))
            self.register_buffer(f"dw_scale_{m}", torch.ones(()))
        self.radius_reach: dict[str, Tensor] = {}
        """Set by each :meth:`decode` with ``max_deviation``: per module, ``|d| / r`` ``(n, L)``
        (no gradient), the decoder's change to the merge over the trust radius."""
        self.radius_excess: dict[str, Tensor] = {}
        """Set with :attr:`radius_reach`: per module, each row's mean over layers of
        ``max(0, |d| / r − 1)²``, how far the change reaches past the radius (where the bound
        saturates and the output stops following ``d``); differentiable."""

    def _output_layers(self) -> list[nn.Linear]:
        return [*(head[-1] for head in self.heads.values()), *self.gates.values()]

    @property
    def ignores_latent(self) -> bool:
        """True while the gates and the heads' output layers are all zero, as in a fresh
        (untrained) decoder: every latent then decodes to the neighbours' merge (times the
        layer scales, which do not depend on the latent), so samples at any temperature are
        identical."""
        return all(not p.any() for layer in self._output_layers() for p in layer.parameters())

    # --- normalisation --------------------------------------------------------------------------
    @torch.no_grad()
    def set_normalisation(self, weights: Weights) -> None:
        """Set per-coordinate mean/std (and the ΔW loss scale) from experts ``(E, L, ...)``."""
        for m in self.layout.modules:
            x = to_chunks(weights, m).float()
            var, rms = x.var(0, unbiased=False), x.pow(2).mean().sqrt()
            getattr(self, f"mean_{m}").copy_(x.mean(0))
            getattr(self, f"std_{m}").copy_((var + (_STD_FLOOR * rms) ** 2 + 1e-12).sqrt())
            a, b = weights[f"{m}.A"].float(), weights[f"{m}.B"].float()
            dw2 = trace_product(a @ a.transpose(-1, -2), b.transpose(-1, -2) @ b).mean()
            getattr(self, f"dw_scale_{m}").copy_(dw2.clamp_min(1e-12))

    def normalise(self, m: str, chunks: Tensor) -> Tensor:
        return (chunks - getattr(self, f"mean_{m}")) / getattr(self, f"std_{m}")

    def denormalise(self, m: str, chunks: Tensor) -> Tensor:
        return chunks * getattr(self, f"std_{m}") + getattr(self, f"mean_{m}")

    # --- parts ----------------------------------------------------------------------------------
    def condition(self, cond: dict[str, Tensor]) -> Tensor:
        """``(n, cond_dim)`` condition vector c."""
        feats = [cond["embedding"], cond["neighbour_embedding"], cond["sims"]]
        return self.cond_net(torch.cat([f.float() for f in feats], dim=-1))

    def _pos(self, i: int) -> Tensor:
        """``(L, 2·pos_dim)`` layer and module embeddings of module ``i``."""
        mod = self.module_emb.weight[i].expand(self.layout.num_layers, -1)
        return torch.cat([self.layer_emb.weight, mod], dim=-1)

    @staticmethod
    def _gaussian(net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = net(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-10, 10)

    def prior(self, c: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` of p(z | c), each ``(n, latent_dim)``."""
        return self._gaussian(self.prior_net, c)

    def posterior(self, x_norm: dict[str, Tensor], c: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` of q(z | x, c) from normalised target chunks ``(n, L, chunk_m)``."""
        feats = [
            F.gelu(self.chunk_proj[m](x_norm[m]) + self.pos_proj(self._pos(i)))
            for i, m in enumerate(self.layout.modules)
        ]
        return self._gaussian(self.post_net, torch.cat([torch.cat(feats, 1).mean(1), c], -1))

    def decode(self, z: Tensor, c: Tensor, cond: dict[str, Tensor]) -> dict[str, Tensor]:
        """Normalised chunks ``{m: (n, L, chunk_m)}`` for latents ``z (n, latent)``."""
        n, nl = z.shape[0], self.layout.num_layers
        zc = torch.cat([z, c], dim=-1)[:, None].expand(n, nl, -1)
        out = {}
        for i, m in enumerate(self.layout.modules):
            merge = self.normalise(m, cond[f"merge.{m}"].float())
            rows = [zc, self._pos(i)[None].expand(n, -1, -1)]
            if self.config.summary_in_decoder:
                spread = cond[f"spread.{m}"].float() / getattr(self, f"std_{m}")
                rows += [self.chunk_proj[m](merge), self.spread_proj[m](spread)]
            hidden = self.trunk(torch.cat(rows, -1))
            out[m] = (1 + self.gates[m](hidden)) * merge + self.heads[m](hidden)
            if self.config.max_deviation > 0:
                out[m] = self._within_radius(m, out[m], cond[f"merge.{m}"].float())
            if self.config.norm_to_merge:
                out[m] = self._to_norm_of(m, out[m], merge)
        return out

    def _within_radius(self, m: str, chunks: Tensor, merge: Tensor) -> Tensor:
        """Normalised ``chunks`` whose change to the (raw) ``merge`` chunks is bounded smoothly
        below ``max_deviation`` times the merge's norm, per row and layer (``CVAEConfig``)."""
        d = self.denormalise(m, chunks) - merge
        r2 = (self.config.max_deviation**2) * merge.pow(2).sum(-1, keepdim=True)
        d2 = d.pow(2).sum(-1, keepdim=True)
        ratio = ((d2 + 1e-30) / (r2 + 1e-30)).sqrt()[..., 0]
        self.radius_reach[m] = ratio.detach()
        self.radius_excess[m] = (ratio - 1).clamp_min(0).pow(2).mean(-1)
        shrink = ((r2 + 1e-30) / (d2 + r2 + 1e-30)).sqrt()
        return self.normalise(m, merge + d * shrink)

    def _to_norm_of(self, m: str, chunks: Tensor, reference: Tensor) -> Tensor:
        """Normalised ``chunks`` rescaled so that each ``(row, layer)`` ΔW = BA has the Frobenius
        norm of ``reference``'s (A and B each times the square root of the ratio)."""

        def dw_sq(x: Tensor) -> Tensor:
            a, b = from_chunks(self.layout, self.denormalise(m, x), m)
            return trace_product(a @ a.transpose(-1, -2), b.transpose(-1, -2) @ b)

        eps = 1e-30  # keeps the gradient finite where the merge's ΔW is exactly 0
        ratio = ((dw_sq(reference).clamp_min(0) + eps) / (dw_sq(chunks).clamp_min(0) + eps)) ** 0.25
        return self.normalise(m, self.denormalise(m, chunks) * ratio[..., None])

    def to_weights(self, chunks: dict[str, Tensor], scale: bool = True) -> Weights:
        """Normalised chunks -> stacked LoRA weights (float32); with ``scale`` (and
        ``config.layer_scales``) each layer's ΔW times ``exp(s[l, m])``, as ``A`` and ``B`` each
        times ``exp(s/2)`` so the factors stay balanced."""
        weights = {}
        for m, x in chunks.items():
            a, b = from_chunks(self.layout, self.denormalise(m, x), m)
            if scale and self.config.layer_scales:
                half = (self.layer_scales[m] / 2).exp()[:, None, None]  # (L, 1, 1)
                a, b = a * half, b * half
            weights[f"{m}.A"], weights[f"{m}.B"] = a, b
        return weights

    # --- training -------------------------------------------------------------------------------
    def forward(
        self,
        weights: Weights,
        cond: dict[str, Tensor],
        beta: float | None = None,
        dw_weight: float | None = None,
    ) -> dict[str, Tensor]:
        """Negative ELBO of target adapters given their condition inputs.

        Args:
            weights: targets, stacked ``{"m.A": (n, L, r, in), "m.B": (n, L, out, r)}``.
            cond: from :func:`condition_inputs` or :func:`neighbour_inputs`.
            beta: KL weight (annealed by the trainer); ``None`` uses ``config.beta``.
            dw_weight: weight of the ΔW loss; ``None`` uses ``config.dw_weight``.

        Returns:
            ``loss`` (``recon_weight · recon + beta · kl + dw_weight · dw``), ``recon`` (MSE in
            normalised space), ``kl`` (batch mean), ``dw`` (ΔW error
            over the zoo's mean ‖ΔW‖²) and ``chunks`` (normalised predictions). z is sampled
            from q in train mode and is q's mean in eval mode.
        """
        beta = self.config.beta if beta is None else beta
        dw_weight = self.config.dw_weight if dw_weight is None else dw_weight
        x = {m: self.normalise(m, to_chunks(weights, m).float()) for m in self.layout.modules}
        c = self.condition(cond)
        mu_q, logvar_q = self.posterior(x, c)
        z = mu_q + (0.5 * logvar_q).exp() * torch.randn_like(mu_q) if self.training else mu_q
        pred = self.decode(z, c, cond)
        recon = self.recon_error(pred, x)
        kl = _kl(mu_q, logvar_q, *self.prior(c)).mean()
        dw = self.dw_error(pred, weights) if dw_weight > 0 else recon.new_zeros(())
        loss = self.config.recon_weight * recon + beta * kl + dw_weight * dw
        return {"loss": loss, "recon": recon, "kl": kl, "dw": dw, "chunks": pred}

    @staticmethod
    def recon_error(pred: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
        """MSE over every coordinate of every module (normalised space)."""
        sse = sum(((pred[m] - target[m]) ** 2).sum() for m in target)
        return sse / sum(t.numel() for t in target.values())

    def dw_error(self, pred: dict[str, Tensor], weights: Weights) -> Tensor:
        """Mean ‖B̂Â − BA‖² per (sample, layer, module), over the zoo's mean ‖BA‖²."""
        hat, errs = self.to_weights(pred), []
        for m in self.layout.modules:
            a, b = weights[f"{m}.A"].float(), weights[f"{m}.B"].float()
            err = dw_sq_error(hat[f"{m}.A"], hat[f"{m}.B"], a, b)
            errs.append(err.mean() / getattr(self, f"dw_scale_{m}"))
        return torch.stack(errs).mean()

    # --- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        cond: dict[str, Tensor],
        num_samples: int = 1,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Weights:
        """Sample adapters from the prior p(z | c) (in eval mode: no dropout).

        Args:
            cond: condition inputs of ``B`` queries (:meth:`condition_inputs`).
            num_samples: adapters per query (S).
            temperature: 0 decodes the prior mean (one deterministic adapter); otherwise
                ``z = mu + temperature · sigma · eps``.
            generator: the ``torch.Generator`` drawing eps (same seed, same adapters).

        Returns:
            Stacked float32 weights with two leading dims ``(B, S)``: ``"m.A"``
            ``(B, S, L, r, in)`` and ``"m.B"`` ``(B, S, L, out, r)``.
        """
        if num_samples < 1 or temperature < 0:
            raise ValueError(
                f"need num_samples >= 1, temperature >= 0: {num_samples}, {temperature}"
            )
        was_training, device = self.training, self.layer_emb.weight.device
        self.eval()
        cond = {k: v.to(device) for k, v in cond.items()}
        n, s = cond["embedding"].shape[0], num_samples
        eps = None
        if temperature > 0:
            on = generator.device if generator is not None else device
            shape = (n, s, self.config.latent_dim)
            eps = torch.randn(shape, generator=generator, device=on).to(device).reshape(n * s, -1)
        chunks, _, _ = self.decode_prior(cond, temperature, eps, samples=s)
        self.train(was_training)
        return {k: v.reshape(n, s, *v.shape[1:]) for k, v in self.to_weights(chunks).items()}

    def decode_prior(
        self,
        cond: dict[str, Tensor],
        temperature: float = 0.0,
        eps: Tensor | None = None,
        samples: int = 1,
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """The one decode from the prior, used by inference and both training stages.

        Returns normalised chunks ``{m: (n·samples, L, chunk_m)}`` (each query's samples
        together) decoded from ``z = mu + temperature · sigma · eps``, and p(z | c)'s ``(mu,
        logvar)`` ``(n, latent)``. ``eps`` is ``(n·samples, latent)``, drawn with
        ``torch.randn`` when not given and ``temperature > 0``; ``temperature=0`` decodes the
        prior's mean. Differentiable. The condition runs once per query, so every sample of a
        query shares it exactly."""
        c = self.condition(cond)
        mu, logvar = self.prior(c)
        if samples > 1:
            c = c.repeat_interleave(samples, 0)
            cond = {k: v.repeat_interleave(samples, 0) for k, v in cond.items()}
        z, sigma = (
            mu.repeat_interleave(samples, 0),
            (0.5 * logvar).exp().repeat_interleave(samples, 0),
        )
        if temperature > 0:
            eps = torch.randn_like(z) if eps is None else eps
            z = z + temperature * sigma * eps
        return self.decode(z, c, cond), mu, logvar

    def decode_posterior(
        self,
        cond: dict[str, Tensor],
        weights: Weights,
        mask: Tensor,
        eps: Tensor | None = None,
        free_bits: float = 0.0,
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Decode rows ``mask`` from ``z ~ q(z | x, c)`` (reparameterised) and the others from
        the prior's mean, where ``x`` are the masked rows' target adapters ``weights`` (stacked,
        one per masked row, in row order).

        Returns normalised chunks ``{m: (n, L, chunk_m)}``, each row's ``KL(q(z|x,c) ‖ p(z|c))``
        and each row's KL term to minimise (both ``(n,)``, 0 for the unmasked rows). With
        ``free_bits = 0`` the term is the KL. With ``free_bits = λ > 0`` it is
        ``KL(sg(q) ‖ p) + max(KL(q ‖ sg(p)), λ)`` (sg: no gradient): the prior always moves
        toward the posterior, while the posterior pays nothing for its first λ nats, so it is not
        pushed onto the prior before the decoder has learned to read it (the posterior collapse
        of results/generator-v23; free bits after Kingma et al. 2016, "Improved Variational
        Inference with Inverse Autoregressive Flow", arXiv:1606.04934). Differentiable: the
        end-to-end stage's ELBO over the tasks' answers, whose posterior reads the task's
        expert (the CVAE of SG-LoRA and ICM-LoRA, trained through the base model instead of on
        weights)."""
        c = self.condition(cond)
        mu_p, logvar_p = self.prior(c)
        z, kl, term = mu_p, mu_p.new_zeros(mu_p.shape[0]), mu_p.new_zeros(mu_p.shape[0])
        if bool(mask.any()):
            x = {m: self.normalise(m, to_chunks(weights, m).float()) for m in self.layout.modules}
            mu_q, logvar_q = self.posterior(x, c[mask])
            eps = torch.randn_like(mu_q) if eps is None else eps
            z = z.clone()
            z[mask] = mu_q + (0.5 * logvar_q).exp() * eps
            kl, term = kl.clone(), term.clone()
            prior = (mu_p[mask], logvar_p[mask])
            kl[mask] = _kl(mu_q, logvar_q, *prior)
            if free_bits > 0:
                to_prior = _kl(mu_q.detach(), logvar_q.detach(), *prior)
                to_post = _kl(mu_q, logvar_q, *(t.detach() for t in prior))
                term[mask] = to_prior + to_post.clamp_min(free_bits)
            else:
                term[mask] = kl[mask]
        return self.decode(z, c, cond), kl, term

    def condition_inputs(self, bank, query_emb: np.ndarray, exclude=None) -> dict[str, Tensor]:
        """:func:`condition_inputs` with this model's ``k`` and ``tau``."""
        c = self.config
        return condition_inputs(bank, query_emb, c.k, exclude, c.tau, c.summary_in_decoder)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
