"""A learned router over the retrieved experts: the description decides how much of each
neighbour goes into the adapter.

The top-k merge weighs its ``k`` neighbours by ``softmax(sim / tau)`` alone. The router scores
each (description, neighbour) pair instead::

    s_j = exp(beta) · sim_j / tau + f([q ⊙ e_j, sim_j, gain_j])
    w = exp(gamma) · softmax(s)
    ΔW = Σ_j w_j ΔW_j        (exact, as one LoRA of rank k·r)

with ``q`` the description's embedding, ``e_j`` the neighbour's mean description embedding,
``gain_j`` the neighbour's measured gain over the base model on its own task, ``f`` a small MLP
whose output layer starts at zero, and two scalars (``beta``: sharpness, ``gamma``: overall
size) that start at zero, so a fresh router *is* the top-k merge. It is trained end to end
through the frozen base model on the zoo tasks' answers (:mod:`training.router`).

Why a pairwise function: with a few dozen training tasks a decoder that maps one description
to one adapter learns one shared change for every task (generators v3–v7 here), while a
scorer of (description, expert) pairs sees ``tasks × k`` pairs per pass and can learn what
makes a neighbour useful for a description (LoraHub, Huang et al. 2023, arXiv:2307.13269,
learns such mixing weights per task from a few examples; here they come from the description,
zero-shot, as in SG-LoRA's similarity-weighted fusion, arXiv:2509.10535).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from hypergen._fs import atomic_dir

ROUTER_FORMAT = 1
CONFIG_NAME, WEIGHTS_NAME = "router.json", "router.safetensors"


class RouterError(ValueError):
    """A router folder that cannot be read as one."""


def record_gain(record: dict) -> float:
    """An expert record's measured gain over the base model on its own task (0 if unknown)."""
    return float((record.get("metrics") or {}).get("gain", 0.0))


class NeighbourRouter(nn.Module):
    """Scores ``k`` retrieved neighbours per description (see the module docstring).

    Args:
        embed_dim: the description encoder's dimension.
        k: neighbours per description.
        tau: the similarity temperature of the merge it starts from.
        hidden: width of the pair scorer.
    """

    def __init__(self, embed_dim: int, k: int = 8, tau: float = 0.1, hidden: int = 32):
        super().__init__()
        if k < 1 or tau <= 0 or hidden < 1 or embed_dim < 1:
            raise ValueError(
                f"need k, hidden, embed_dim >= 1 and tau > 0: {k}, {hidden}, {embed_dim}, {tau}"
            )
        self.embed_dim, self.k, self.tau, self.hidden = embed_dim, k, tau, hidden
        self.pair = nn.Sequential(nn.Linear(embed_dim + 2, hidden), nn.GELU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.pair[2].weight)
        nn.init.zeros_(self.pair[2].bias)
        self.beta = nn.Parameter(torch.zeros(()))
        self.gamma = nn.Parameter(torch.zeros(()))

    def logits(self, query: Tensor, neighbours: Tensor, sims: Tensor, gains: Tensor) -> Tensor:
        """``(n, k)`` scores from ``query (n, d)``, ``neighbours (n, k, d)``, ``sims (n, k)`` and
        ``gains (n, k)``."""
        feats = torch.cat(
            [query[:, None, :] * neighbours, sims[..., None], gains[..., None]], dim=-1
        )
        return self.beta.exp() * sims / self.tau + self.pair(feats.float()).squeeze(-1)

    def forward(
        self,
        query: Tensor,
        neighbours: Tensor,
        sims: Tensor,
        gains: Tensor,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``(n, k)`` non-negative merge weights (summing to ``exp(gamma)``). With
        ``temperature > 0`` the scores get Gumbel noise of that scale: a sample of another
        mixture of the same neighbours."""
        s = self.logits(query.float(), neighbours.float(), sims.float(), gains.float())
        if temperature > 0:
            u = torch.rand(s.shape, generator=generator).clamp(1e-9, 1 - 1e-9)
            s = s - temperature * torch.log(-torch.log(u))
        return self.gamma.exp() * torch.softmax(s, dim=-1)

    # --- files ----------------------------------------------------------------------------------
    def config(self) -> dict:
        return {
            "format": ROUTER_FORMAT,
            "embed_dim": self.embed_dim,
            "k": self.k,
            "tau": self.tau,
            "hidden": self.hidden,
        }

    def save_pretrained(self, folder: str | Path, extra: dict | None = None) -> None:
        """``router.json`` (architecture, and ``extra``: how it was trained) and
        ``router.safetensors``, written into place together."""
        with atomic_dir(Path(folder), overwrite=True) as tmp:
            state = {k: v.detach().cpu().float().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            meta = {**self.config(), "extra": extra or {}}
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=1))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> NeighbourRouter:
        folder = Path(folder)
        if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
            raise RouterError(
                f"{folder} is not a router folder (needs {CONFIG_NAME} and {WEIGHTS_NAME}; "
                "train one with python -m training.router)"
            )
        meta = json.loads((folder / CONFIG_NAME).read_text())
        if meta.get("format") != ROUTER_FORMAT:
            raise RouterError(f"{folder}: router format {meta.get('format')}, not {ROUTER_FORMAT}")
        router = cls(meta["embed_dim"], meta["k"], meta["tau"], meta["hidden"])
        try:
            router.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        except RuntimeError as err:
            raise RouterError(f"{folder}: weights do not match {CONFIG_NAME}: {err}") from err
        router.extra = meta.get("extra", {})
        return router.eval()
